//! The project's task runner: `cargo xtask <command>`.

mod bench;
mod ci;
mod examples;
mod test;
mod tidy;

use std::process::{Command, ExitCode};

const HELP: &str = "\
cargo xtask <command>

commands:
  test [--start-method M]   the test suite once per start method (fork, spawn, forkserver), the doc tests,
                            then every example with its output checked; prints a summary table
  bench [GROUP...]          release-mode workloads (groups: process, sync, ipc, pool, log); one JSON line each, CPython and the
                            raw floor measured in the same run, then a table of ratios
  tidy                      the crate stack and every crate's module levels (see xtask/src/tidy.rs)
  ci                        cargo fmt --check, clippy -D warnings, rustdoc -D warnings, tidy, then `test`
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("tidy") => tidy::run(),
        Some("ci") => ci::run(),
        Some("help" | "--help" | "-h") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it). Taken from the `CARGO_MANIFEST_DIR` that `cargo run` sets,
/// and only failing that from the path compiled in: two checkouts sharing one target directory build xtask
/// under the same hash, so one checkout can run the xtask binary built in the other, which would then test
/// and bench the other checkout.
fn root() -> std::path::PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from);
    manifest_dir.parent().expect("workspace root").to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (relative to the workspace root), else `target/`.
fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

/// Runs a command in the workspace root; Err with a description when it fails.
fn run_cmd(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.current_dir(root()).status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{cmd:?} failed: {status}")) }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}
