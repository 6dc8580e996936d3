//! Ten processes share a `Semaphore(3)`: never more than three are inside at once.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! most inside at once: 3
//! ```

use std::time::Duration;

use mp_process::Process;
use mp_shm::RawValue;
use mp_sync::Semaphore;

fn visit((sem, inside, most): (Semaphore, RawValue<u32>, RawValue<u32>)) {
    let _unit = sem.acquire();
    let now = inside.fetch_add(1) + 1;
    let mut seen = most.load();
    while now > seen {
        match most.compare_exchange(seen, now) {
            Ok(_) => break,
            Err(actual) => seen = actual,
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    inside.fetch_add(u32::MAX); // wrapping: minus one
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let sem = Semaphore::new(3)?;
    let inside = RawValue::new(0u32)?;
    let most = RawValue::new(0u32)?;
    let mut visitors = Vec::new();
    for _ in 0..10 {
        let mut p = Process::new(visit, (sem.try_clone()?, inside.try_clone()?, most.try_clone()?));
        p.start()?;
        visitors.push(p);
    }
    for mut p in visitors {
        p.join()?;
    }
    println!("most inside at once: {}", most.get());
    inside.unlink()?;
    most.unlink()?;
    Ok(())
}
