//! A daemonic child still running when `main` returns is terminated at exit; a normal child is joined.
//!
//! Expected output (checked by `cargo xtask test`, which also checks that no process is left behind):
//! ```text
//! daemon Process-1 started, alive: true
//! worker Process-2 finished
//! main returns; the exit handler terminates the daemon
//! ```

use std::time::Duration;

use mp_process::{Builder, Process, current_process};

fn serve_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn work() {
    std::thread::sleep(Duration::from_millis(100));
    println!("worker {} finished", current_process().name());
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let mut daemon = Builder::new().daemon(true).target(serve_forever, ());
    daemon.start()?;
    println!("daemon {} started, alive: {}", daemon.name(), daemon.is_alive());
    let mut worker = Process::new(work, ());
    worker.start()?;
    // No join for the worker: like CPython, the exit handler joins non-daemonic children.
    std::thread::sleep(Duration::from_millis(300));
    println!("main returns; the exit handler terminates the daemon");
    Ok(())
}
