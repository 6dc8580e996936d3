//! Children started under each start method log with `log::info!`; env_logger in the parent prints every
//! record, with the name of the process it came from (a key-value mp-log adds). mp-process's warning that
//! `fork` copies a multithreaded parent comes through too: mp-log's listener is a thread of the parent.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text sorted
//! INFO  MainProcess: starting one child per start method
//! WARN  MainProcess: this process (pid {n}) is multi-threaded ({n} threads); use of fork() may lead to deadlocks in the child (locks held by the other threads stay held there): prefer the forkserver or spawn start method
//! INFO  Process-1: hello from a child started with fork
//! INFO  Process-2: hello from a child started with spawn
//! INFO  Process-3: hello from a child started with forkserver
//! WARN  Process-3:1: and from its own child
//! ```

use std::io::Write;

use mp_process::{StartMethod, get_context};

fn hello(method: StartMethod) {
    log::info!("hello from a child started with {method}");
    if method == StartMethod::ForkServer {
        let mut p = mp_process::Process::new(|(): ()| log::warn!("and from its own child"), ());
        p.start().unwrap();
        p.join().unwrap();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let env_logger = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .target(env_logger::Target::Stdout)
        .format(|buf, record| {
            // The child's name for a forwarded record, this process's for its own.
            let name = mp_log::process_name(record);
            writeln!(buf, "{:<5} {name}: {}", record.level(), record.args())
        })
        .build();
    let level = env_logger.filter();
    let handle = mp_log::Builder::new().level(level).install(env_logger)?;
    log::info!("starting one child per start method");
    for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = get_context(method)?.process(hello, method);
        p.start()?;
        p.join()?;
    }
    handle.stop(); // every record the children sent has been printed
    Ok(())
}
