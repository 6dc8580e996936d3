//! A looping child is terminated after a short delay; `join` returns and the exit code is -15.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! started Process-1
//! terminating Process-1
//! joined: killed by signal 15
//! exit code: -15
//! ```

use std::time::Duration;

use mp_process::{JoinError, Process};

fn spin() {
    loop {
        std::hint::spin_loop();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let mut p = Process::new(spin, ());
    p.start()?;
    println!("started {}", p.name());
    std::thread::sleep(Duration::from_millis(100));
    println!("terminating {}", p.name());
    p.terminate()?;
    match p.join() {
        Err(JoinError::Signaled { signal, .. }) => println!("joined: killed by signal {signal}"),
        other => println!("joined: unexpected {other:?}"),
    }
    println!("exit code: {}", p.exitcode().expect("ended"));
    Ok(())
}
