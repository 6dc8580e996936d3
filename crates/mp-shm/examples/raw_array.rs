//! Each child squares its own index in a shared `RawArray`.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! [0, 1, 4, 9, 16]
//! ```

use mp_process::Process;
use mp_shm::RawArray;

fn square_own_index((array, index): (RawArray<i64>, usize)) {
    let i = index as i64;
    array.set(index, i * i).expect("index in range");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let array = RawArray::<i64>::create(5)?;
    let mut children = Vec::new();
    for index in 0..array.len() {
        let mut p = Process::new(square_own_index, (array.try_clone()?, index));
        p.start()?;
        children.push(p);
    }
    for mut p in children {
        p.join()?;
    }
    println!("{:?}", array.to_vec());
    array.unlink()?;
    Ok(())
}
