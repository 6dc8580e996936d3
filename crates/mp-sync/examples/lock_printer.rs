//! Three processes print under a shared lock, so their lines never interleave.
//!
//! Expected output (checked by `cargo xtask test`; the order of the lines varies, so they are compared
//! sorted):
//! ```text sorted
//! Printing apple
//! Printing banana
//! Printing cherry
//! ```

use std::io::Write;

use mp_process::Process;
use mp_sync::Lock;

fn printer((lock, item): (Lock, String)) {
    let _guard = lock.acquire().expect("lock");
    // Written in pieces on purpose: only the lock keeps the line whole.
    let mut out = std::io::stdout().lock();
    for word in ["Printing", " ", &item, "\n"] {
        out.write_all(word.as_bytes()).expect("stdout");
        out.flush().expect("stdout");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let lock = Lock::new()?;
    let mut printers = Vec::new();
    for item in ["apple", "banana", "cherry"] {
        let mut p = Process::new(printer, (lock.try_clone()?, item.to_owned()));
        p.start()?;
        printers.push(p);
    }
    for mut p in printers {
        p.join()?;
    }
    Ok(())
}
