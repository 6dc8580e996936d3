//! CPython's first `Pool` example: square five numbers in a pool of workers.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! [1, 4, 9, 16, 25]
//! ```

use mp_pool::Pool;

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let pool = Pool::new(4)?;
    println!("{:?}", pool.map(square, [1, 2, 3, 4, 5])?);
    Ok(())
}
