//! The `Array` example from CPython's documentation: a child squares every element in place.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! Squared numbers are: [0, 1, 4, 9, 16]
//! ```

use mp_process::Process;
use mp_sync::Array;

fn square_all(numbers: Array<i32>) {
    let locked = numbers.get_lock().expect("lock");
    for i in 0..locked.len() {
        let n = locked.get(i).expect("in range");
        locked.set(i, n * n).expect("in range");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let numbers = Array::from_slice(&[0, 1, 2, 3, 4])?;
    let mut p = Process::new(square_all, numbers.try_clone()?);
    p.start()?;
    p.join()?;
    println!("Squared numbers are: {:?}", numbers.to_vec()?);
    Ok(())
}
