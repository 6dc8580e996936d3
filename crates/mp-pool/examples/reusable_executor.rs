//! One process-wide executor, reused (loky's `get_reusable_executor`): asked for another size it is resized in
//! place, and its workers exit when idle and come back with the next task.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! 2 workers: 1 + 1 = 2
//! the same executor, now 3 workers: 2 + 2 = 4
//! idle: the workers exited
//! back at work: 3 + 3 = 6
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

fn double(x: u64) -> u64 {
    x + x
}

fn worker_pid(_: ()) -> u32 {
    std::process::id()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let idle = Duration::from_millis(300);
    let executor = mp_pool::get_reusable_executor(2, idle)?;
    println!("2 workers: 1 + 1 = {}", executor.submit(double, 1)?.result()?);
    let again = mp_pool::get_reusable_executor(3, idle)?;
    assert!(Arc::ptr_eq(&executor, &again));
    println!("the same executor, now {} workers: 2 + 2 = {}", again.max_workers(), again.submit(double, 2)?.result()?);
    let pid = again.submit(worker_pid, ())?.result()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while mp_process::active_children().iter().any(|c| c.pid() == Some(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if mp_process::active_children().iter().all(|c| c.pid() != Some(pid)) {
        println!("idle: the workers exited");
    }
    println!("back at work: 3 + 3 = {}", mp_pool::get_reusable_executor(3, idle)?.submit(double, 3)?.result()?);
    Ok(())
}
