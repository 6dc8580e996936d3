//! Three processes meet at a barrier twice; the action runs once per pass, in the last to arrive.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! all three arrived
//! all three arrived
//! arrival indices of each pass: [0, 1, 2] and [0, 1, 2]
//! ```

use std::io::Write;

use mp_process::Process;
use mp_sync::{Barrier, BarrierAction};

struct Announce;

impl BarrierAction for Announce {
    fn run() {
        let mut out = std::io::stdout().lock();
        writeln!(out, "all three arrived").expect("stdout");
        out.flush().expect("stdout");
    }
}

fn meet(barrier: Barrier<Announce>) -> (u32, u32) {
    (barrier.wait().expect("first pass"), barrier.wait().expect("second pass"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let barrier = Barrier::<Announce>::with_action(3)?;
    let mut parties = Vec::new();
    for _ in 0..2 {
        let mut p = Process::new(meet, barrier.try_clone()?);
        p.start()?;
        parties.push(p);
    }
    let (mut first, mut second) = (vec![barrier.wait()?], vec![barrier.wait()?]);
    for mut p in parties {
        let (a, b) = p.join()?;
        first.push(a);
        second.push(b);
    }
    first.sort();
    second.sort();
    println!("arrival indices of each pass: {first:?} and {second:?}");
    Ok(())
}
