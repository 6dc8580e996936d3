//! `imap` yields results as they arrive, in order: print progress while a pool works through a list.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! [1/5] slow_square(1) = 1
//! [2/5] slow_square(2) = 4
//! [3/5] slow_square(3) = 9
//! [4/5] slow_square(4) = 16
//! [5/5] slow_square(5) = 25
//! done
//! ```

use std::time::Duration;

use mp_pool::Pool;

fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(50 * (6 - x))); // later inputs finish first: imap keeps order
    x * x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let pool = Pool::new(3)?;
    let inputs = [1u64, 2, 3, 4, 5];
    for (i, result) in pool.imap(slow_square, inputs, 1)?.enumerate() {
        println!("[{}/{}] slow_square({}) = {}", i + 1, inputs.len(), inputs[i], result?);
    }
    println!("done");
    Ok(())
}
