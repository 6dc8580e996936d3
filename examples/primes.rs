//! The classic tutorial program: count the primes up to 100,000 in parallel, one process per CPU.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! Found 9592 primes up to 100,000
//! ```

use mp::{Process, cpu_count};

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

/// Counts the primes among `start, start + step, start + 2 * step, ... <= end`.
fn count_primes(start: u64, end: u64, step: u64) -> usize {
    (start..=end).step_by(step as usize).filter(|&n| is_prime(n)).count()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp::init();
    const N: u64 = 100_000;
    let workers = cpu_count() as u64;
    let mut processes: Vec<Process<usize>> =
        (0..workers).map(|i| Process::new(count_primes, (1 + i, N, workers))).collect();
    for p in &mut processes {
        p.start()?;
    }
    let mut found = 0;
    for p in &mut processes {
        found += p.join()?;
    }
    println!("Found {found} primes up to 100,000");
    Ok(())
}
