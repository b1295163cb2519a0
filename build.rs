//! The build's commit, for `corral -V`: after a binary upgrade an operator
//! can tell which build runs (the version alone does not change).
fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CORRAL_COMMIT={commit}");
    // Run again when the commit changes; a path that does not exist (no
    // .git directory: a tarball, a worktree) would rerun it every build.
    println!("cargo:rerun-if-changed=build.rs");
    for p in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
