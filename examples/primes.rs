//! The classic tutorial program: count the primes up to 100,000 with a pool of four worker processes
//! (CPython: `with Pool(processes=4) as pool: pool.map(is_prime, range(1, 100_001))`).
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! Found 9592 primes up to 100,000
//! ```

use mp::Pool;

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp::init();
    let pool = Pool::new(4)?;
    let flags = pool.map(is_prime, 1..=100_000u64)?;
    let found = flags.into_iter().filter(|&prime| prime).count();
    println!("Found {found} primes up to 100,000");
    Ok(())
}
