//! A producer puts 0..5 and then a sentinel; a consumer takes items until the sentinel.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! Consumed 0
//! Consumed 1
//! Consumed 2
//! Consumed 3
//! Consumed 4
//! ```

use mp_ipc::Queue;
use mp_process::Process;

fn producer(q: Queue<Option<u32>>) {
    for item in 0..5 {
        q.put(Some(item)).expect("put");
    }
    q.put(None).expect("put"); // the sentinel
}

fn consumer(q: Queue<Option<u32>>) {
    while let Some(item) = q.get().expect("get") {
        println!("Consumed {item}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let q = Queue::new()?;
    let mut p = Process::new(producer, q.clone());
    let mut c = Process::new(consumer, q);
    c.start()?;
    p.start()?;
    p.join()?;
    c.join()?;
    Ok(())
}
