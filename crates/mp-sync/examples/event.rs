//! Workers wait for an event that the main process sets.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! workers waiting: event set? false
//! main sets the event
//! 3 workers saw the event
//! ```

use std::time::Duration;

use mp_process::Process;
use mp_sync::Event;

fn wait_for_go(go: Event) -> bool {
    go.wait_timeout(Duration::from_secs(30))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let go = Event::new()?;
    let mut workers = Vec::new();
    for _ in 0..3 {
        let mut p = Process::new(wait_for_go, go.try_clone()?);
        p.start()?;
        workers.push(p);
    }
    println!("workers waiting: event set? {}", go.is_set());
    std::thread::sleep(Duration::from_millis(100));
    println!("main sets the event");
    go.set();
    let mut saw = 0;
    for mut p in workers {
        saw += usize::from(p.join()?);
    }
    println!("{saw} workers saw the event");
    Ok(())
}
