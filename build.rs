//! The build's commit, for `corral -V`: after a binary upgrade an operator
//! can tell which build runs (the version alone does not change). And the
//! library preloaded into `direct` pools' programs (crates/preload), built
//! with rustc alone and embedded in the binary (src/pool/preload.rs).
fn main() {
    preload();
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

fn preload() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let src = "crates/preload/src/lib.rs";
    for p in [
        src,
        "src/pool/record.rs",
        "src/pool/script_check.rs",
        "src/pool/watch.rs",
        "crates/fastcgi/src/lib.rs",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    let status = std::process::Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "cdylib",
            "--crate-name",
            "corral_preload",
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-o",
        ])
        .arg(out.join("libcorral_preload.so"))
        .arg(src)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cannot run rustc for crates/preload");
    assert!(status.success(), "building crates/preload failed");
}
