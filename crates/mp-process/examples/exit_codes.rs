//! Exit codes follow CPython: a return gives 0, a panic 1, `exit(3)` 3, and `terminate` -15.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! returns: exit code 0
//! panics: exit code 1 (process Process-2 panicked: something went wrong)
//! exits: exit code 3
//! terminated: exit code -15
//! ```

use std::time::Duration;

use mp_process::{JoinError, Process};

fn returns() {}

fn panics() {
    panic!("something went wrong");
}

fn exits() {
    std::process::exit(3);
}

fn sleeps() {
    std::thread::sleep(Duration::from_secs(60));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let mut children = [
        ("returns", Process::new(returns, ())),
        ("panics", Process::new(panics, ())),
        ("exits", Process::new(exits, ())),
        ("terminated", Process::new(sleeps, ())),
    ];
    for (_, p) in &mut children {
        p.start()?;
    }
    children[3].1.terminate()?;
    for (label, p) in &mut children {
        let detail = match p.join() {
            Err(JoinError::Panicked(info)) => {
                format!(" (process {} panicked: {})", info.process_name, info.message)
            }
            _ => String::new(),
        };
        println!("{label}: exit code {}{detail}", p.exitcode().expect("ended"));
    }
    Ok(())
}
