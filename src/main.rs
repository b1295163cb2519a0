//! The `corral` command line, in nginx's shape: `-c FILE`, `-t`,
//! `-T`, `-s stop|quit|reopen|reload`, `-V` (`-v`, `--version`).

use std::path::Path;
use std::process::ExitCode;

use clap::{Arg, ArgAction, Command};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use corral::config::{self, Config};
use corral::master;
use corral::os::pidfile;

const DEFAULT_CONFIG: &str = "corral.toml";

fn cli() -> Command {
    Command::new("corral")
        .about("event-driven web server and application process manager")
        .disable_version_flag(true)
        .arg(
            Arg::new("config")
                .short('c')
                .value_name("FILE")
                .help("use this config file (default: ./corral.toml if present, else built-in defaults)"),
        )
        .arg(
            Arg::new("test")
                .short('t')
                .action(ArgAction::SetTrue)
                .help("test the configuration and exit"),
        )
        .arg(
            Arg::new("signal")
                .short('s')
                .value_name("SIGNAL")
                .value_parser(["stop", "quit", "reopen", "reload"])
                .help("send a signal to the running master: stop, quit, reopen, reload"),
        )
        .arg(
            Arg::new("dump")
                .short('T')
                .action(ArgAction::SetTrue)
                .help("test the configuration, then print it (on stdout) and exit"),
        )
        .arg(
            Arg::new("version")
                .short('V')
                .short_alias('v')
                .long("version")
                .action(ArgAction::SetTrue)
                .help("print the version and exit"),
        )
}

/// The configuration file: `-c FILE`, else `./corral.toml` if present;
/// `None`: the built-in default.
fn config_file(explicit: Option<&String>) -> Option<&Path> {
    match explicit {
        Some(p) => Some(Path::new(p)),
        None => Some(Path::new(DEFAULT_CONFIG)).filter(|p| p.exists()),
    }
}

fn load(explicit: Option<&String>) -> Result<Config, config::ConfigError> {
    config_file(explicit).map_or_else(|| Ok(config::load_default()), config::load)
}

fn main() -> ExitCode {
    // Read argv before the process title overwrites it.
    let argv: Vec<String> = std::env::args().collect();
    let m = match cli().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if m.get_flag("version") {
        eprintln!(
            "corral version {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            env!("CORRAL_COMMIT")
        );
        return ExitCode::SUCCESS;
    }
    let explicit = m.get_one::<String>("config");
    let dump = m.get_flag("dump");
    let test = m.get_flag("test") || dump;
    if let Some(sig) = m.get_one::<String>("signal").filter(|_| !test) {
        // Only the pid file is needed: the file must parse, not validate.
        let pid = config_file(explicit).map_or_else(|| Ok(config::load_default().main.pid), config::pid_path);
        return match pid {
            Ok(pid) => send_signal(&pid, sig),
            Err(e) => {
                eprintln!("corral: [emerg] {e}");
                ExitCode::from(1)
            }
        };
    }
    let cfg = load(explicit);
    if test {
        return match cfg {
            Ok(c) => {
                eprintln!("corral: the configuration file {} syntax is ok", c.source());
                if let Some(w) = corral::master::log_files::lost_log_warning(&c) {
                    eprintln!("corral: [warn] {w}");
                }
                if let Err(e) = corral::master::log_files::open_all(&c, corral::master::log_files::Owner::Keep) {
                    eprintln!("corral: [emerg] {e}");
                    eprintln!("corral: configuration file {} test failed", c.source());
                    return ExitCode::from(1);
                }
                eprintln!("corral: configuration file {} test is successful", c.source());
                if dump {
                    return dump_config(&c);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("corral: [emerg] {e}");
                eprintln!("corral: configuration file {} test failed", e.file);
                ExitCode::from(1)
            }
        };
    }
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corral: [emerg] {e}");
            return ExitCode::from(1);
        }
    };
    // Resolved now: a binary upgrade starts this path again even after
    // the file was replaced.
    let exe = std::env::current_exe().unwrap_or_else(|_| argv[0].clone().into());
    ExitCode::from(master::run(cfg, master::Launch { argv, exe }) as u8)
}

/// `-T`: the file as it was tested, after nginx's `# configuration file PATH:` line.
fn dump_config(c: &Config) -> ExitCode {
    let Some(p) = &c.file else {
        println!("# no configuration file: the built-in default");
        return ExitCode::SUCCESS;
    };
    match std::fs::read_to_string(p) {
        Ok(text) => {
            println!("# configuration file {}:", p.display());
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("corral: [emerg] cannot read {}: {e}", p.display());
            ExitCode::from(1)
        }
    }
}

fn send_signal(pid_path: &Path, name: &str) -> ExitCode {
    let sig = match name {
        "stop" => Signal::SIGTERM,
        "quit" => Signal::SIGQUIT,
        "reopen" => Signal::SIGUSR1,
        _ => Signal::SIGHUP,
    };
    let pid = match pidfile::read(pid_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("corral: [error] cannot read pid file \"{}\": {e}", pid_path.display());
            return ExitCode::from(1);
        }
    };
    // A stale pid file may name an unrelated process by now: never signal it.
    if !pidfile::is_corral(pid) {
        eprintln!(
            "corral: [error] pid file \"{}\" names process {pid}, which is not a running corral master",
            pid_path.display()
        );
        return ExitCode::from(1);
    }
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral: [error] kill({pid}, {sig}) failed: {e}");
            ExitCode::from(1)
        }
    }
}
