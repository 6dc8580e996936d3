//! The same worker under every start method this platform offers.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! fork: worker says 6 * 7 = 42 from Process-1
//! spawn: worker says 6 * 7 = 42 from Process-2
//! forkserver: worker says 6 * 7 = 42 from Process-3
//! ```

use mp_process::{StartMethod, all_start_methods, current_process, get_context};

fn worker(a: u32, b: u32) -> String {
    format!("worker says {a} * {b} = {} from {}", a * b, current_process().name())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let mut methods = all_start_methods();
    methods
        .sort_by_key(|m| [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer].iter().position(|x| x == m));
    for method in methods {
        let mut p = get_context(method)?.process(worker, (6, 7));
        p.start()?;
        println!("{method}: {}", p.join()?);
    }
    Ok(())
}
