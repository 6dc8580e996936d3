//! One task kills its own worker (as the out-of-memory killer would): that task's result is an error
//! naming the worker and the signal, every other task completes, and the program ends promptly. (CPython's
//! `Pool.map` hangs forever here, gh-96062.)
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! task 0: 0
//! task 1: 10
//! task 2: 20
//! task 3: worker lost, killed by signal 9
//! task 4: 40
//! task 5: 50
//! task 6: 60
//! task 7: 70
//! ```

use mp_pool::{Pool, TaskError};

fn work(x: u64) -> u64 {
    if x == 3 {
        // SAFETY: raise has no memory-safety preconditions; this is the crash the example shows.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    x * 10
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let pool = Pool::new(2)?;
    let results: Vec<_> = (0..8).map(|x| pool.apply_async(work, x)).collect::<Result<_, _>>()?;
    for (task, result) in results.into_iter().enumerate() {
        match result.get() {
            Ok(value) => println!("task {task}: {value}"),
            Err(e @ TaskError::WorkerLost { .. }) => {
                println!("task {task}: worker lost, killed by signal {}", e.signal().unwrap_or(0))
            }
            Err(e) => println!("task {task}: {e}"),
        }
    }
    Ok(())
}
