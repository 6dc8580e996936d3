//! Two processes each print `Hello, world!`; the main process joins both.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! Hello, world!
//! Hello, world!
//! ```

use mp_process::Process;

fn hello() {
    println!("Hello, world!");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let mut first = Process::new(hello, ());
    let mut second = Process::new(hello, ());
    first.start()?;
    second.start()?;
    first.join()?;
    second.join()?;
    Ok(())
}
