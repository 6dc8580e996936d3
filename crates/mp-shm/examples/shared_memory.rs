//! A child writes a pattern into a shared-memory segment; the parent reads it back.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! created a segment of 16 bytes
//! child wrote 16 bytes
//! parent reads: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121, 144, 169, 196, 225]
//! ```

use mp_process::Process;
use mp_shm::SharedMemory;

/// Writes i² (mod 256) into byte i.
fn write_squares(shm: SharedMemory) -> usize {
    let pattern: Vec<u8> = (0..shm.size()).map(|i| (i * i % 256) as u8).collect();
    shm.write_at(0, &pattern).expect("in bounds");
    pattern.len()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let shm = SharedMemory::create(16)?;
    println!("created a segment of {} bytes", shm.size());
    // The segment travels by name: the child attaches to the same memory.
    let mut child = Process::new(write_squares, shm.try_clone()?);
    child.start()?;
    println!("child wrote {} bytes", child.join()?);
    println!("parent reads: {:?}", shm.to_vec());
    shm.unlink()?;
    Ok(())
}
