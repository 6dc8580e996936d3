//! The main process and a child print their pid and parent pid; the child's parent is the main process.
//!
//! Expected output (checked by `cargo xtask test`; `{n}` stands for a number):
//! ```text
//! MainProcess: pid {n}, parent pid {n}
//! Process-1: pid {n}, parent pid {n}
//! the child's parent is the main process: true
//! ```

use mp_process::{Process, current_process, parent_process};

/// Prints this process's name, pid and parent pid; returns the parent pid.
fn info() -> u32 {
    let me = current_process();
    // In a child, the parent is the process that started it (with `forkserver` the OS parent is the server).
    let parent = parent_process().map_or_else(std::os::unix::process::parent_id, |p| p.pid());
    println!("{}: pid {}, parent pid {parent}", me.name(), me.pid());
    parent
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    info();
    let mut child = Process::new(info, ());
    child.start()?;
    let childs_parent = child.join()?;
    println!("the child's parent is the main process: {}", childs_parent == std::process::id());
    Ok(())
}
