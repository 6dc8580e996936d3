//! A hard time limit per task: one task loops forever and is stopped at its limit (its worker is killed and
//! replaced); the others finish. A well-behaved task reads its deadline and stops itself first.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! task 0 -> 0
//! task 1 -> 1
//! task 2 -> stopped: it ran past its 200 ms limit
//! task 3 -> 9
//! task 4 -> 16
//! the careful task stopped itself with time to spare
//! ```

use std::time::Duration;

use mp_pool::{ExecutorBuilder, TaskError};

fn square_or_hang(x: u64) -> u64 {
    if x == 2 {
        loop {
            std::hint::spin_loop(); // a runaway: a solver that never converges, a parser stuck on bad input
        }
    }
    x * x
}

/// Works until 50 ms before its deadline (a soft limit), then returns what it has.
fn careful(_: ()) -> bool {
    let task = mp_pool::current_task().expect("runs in a pool worker");
    while task.time_left().is_some_and(|left| left > Duration::from_millis(50)) {
        std::hint::spin_loop();
    }
    task.time_left().is_some_and(|left| !left.is_zero())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let executor = ExecutorBuilder::new().max_workers(2).task_timeout(Duration::from_millis(200)).build()?;
    let futures = (0..5).map(|x| executor.submit(square_or_hang, x)).collect::<Result<Vec<_>, _>>()?;
    for (task, future) in futures.into_iter().enumerate() {
        match future.result() {
            Ok(value) => println!("task {task} -> {value}"),
            Err(TaskError::TimedOut { .. }) => println!("task {task} -> stopped: it ran past its 200 ms limit"),
            Err(e) => return Err(e.into()),
        }
    }
    if executor.submit(careful, ())?.result()? {
        println!("the careful task stopped itself with time to spare");
    }
    Ok(())
}
