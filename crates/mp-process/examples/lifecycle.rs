//! A child goes through created, running and terminated; the main process prints its exit code.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! Process-1 created, alive: false
//! Process-1 running, alive: true
//! Process-1 says: working
//! Process-1 terminated, alive: false
//! exit code: 0
//! ```

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use mp_process::{Handle, Process, current_process};

/// Waits for the go-ahead byte, then reports.
fn work(go: Handle) {
    let mut byte = [0u8; 1];
    std::fs::File::from(go).read_exact(&mut byte).expect("go-ahead");
    println!("{} says: working", current_process().name());
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let (reader, mut writer) = std::io::pipe()?;
    let mut p = Process::new(work, Handle::from(OwnedFd::from(reader)));
    println!("{} created, alive: {}", p.name(), p.is_alive());
    p.start()?;
    println!("{} running, alive: {}", p.name(), p.is_alive());
    writer.write_all(b"!")?;
    p.join()?;
    println!("{} terminated, alive: {}", p.name(), p.is_alive());
    println!("exit code: {}", p.exitcode().expect("ended"));
    Ok(())
}
