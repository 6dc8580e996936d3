//! The classic: ten processes each add one to a shared `Value` under its lock.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! Counter = 10
//! ```

use mp_process::Process;
use mp_sync::Value;

fn add_one(counter: Value<i32>) {
    // CPython: `with counter.get_lock(): counter.value += 1`
    *counter.get_lock().expect("lock") += 1;
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let counter = Value::new(0i32)?;
    let mut workers = Vec::new();
    for _ in 0..10 {
        let mut p = Process::new(add_one, counter.try_clone()?);
        p.start()?;
        workers.push(p);
    }
    for mut p in workers {
        p.join()?;
    }
    println!("Counter = {}", counter.value()?);
    Ok(())
}
