//! The workloads behind `cargo xtask bench`: one JSON line per workload on stdout,
//! `{"workload": ..., "impl": "mp" | "floor", "value": ..., "unit": ...}`. CPython's figures come from
//! `cpython_bench.py` beside this crate, run by xtask in the same session.
//!
//! Architecture invariant: a leaf that measures; may use any mp crate, nothing uses it.

mod floor;
mod process;

use std::time::Instant;

/// Environment variable that makes this binary exit at once (the `posix_spawn_self` floor's child).
pub(crate) const EXIT_AT_ONCE: &str = "MP_BENCH_EXIT_AT_ONCE";

fn main() {
    if std::env::var_os(EXIT_AT_ONCE).is_some() {
        floor::exit_now();
    }
    mp_process::init();
    let groups: Vec<String> = std::env::args().skip(1).collect();
    let wants = |g: &str| groups.is_empty() || groups.iter().any(|x| x == g);
    if wants("process") {
        process::run();
    }
}

/// Prints one result line.
pub(crate) fn report(workload: &str, implementation: &str, value: f64, unit: &str) {
    println!(r#"{{"workload": "{workload}", "impl": "{implementation}", "value": {value:.3}, "unit": "{unit}"}}"#);
}

/// Runs `op` `n` times per round for three rounds; the median of the rounds' mean time per op, in µs.
pub(crate) fn micros_per_op(n: u32, mut op: impl FnMut()) -> f64 {
    op(); // warm up (the fork server, page faults, lazy statics)
    let mut rounds: Vec<f64> = (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                op();
            }
            start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[1]
}
