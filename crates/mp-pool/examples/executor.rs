//! A `ProcessPoolExecutor`: submit eight jobs, then print their results in submission order.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! job 0 -> 0
//! job 1 -> 1
//! job 2 -> 8
//! job 3 -> 27
//! job 4 -> 64
//! job 5 -> 125
//! job 6 -> 216
//! job 7 -> 343
//! ```

use mp_pool::ProcessPoolExecutor;

fn cube(x: u64) -> u64 {
    x * x * x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let executor = ProcessPoolExecutor::new(2)?;
    let futures = (0..8).map(|x| executor.submit(cube, x)).collect::<Result<Vec<_>, _>>()?;
    for (job, future) in futures.into_iter().enumerate() {
        println!("job {job} -> {}", future.result()?);
    }
    executor.shutdown(true, false);
    Ok(())
}
