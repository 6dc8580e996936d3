//! The workloads behind `cargo xtask bench`: one JSON line per workload on stdout,
//! `{"workload": ..., "impl": "mp" | "floor", "value": ..., "unit": ...}`. CPython's figures come from
//! `cpython_bench.py` beside this crate, run by xtask in the same session.
//!
//! Architecture invariant: a leaf that measures; may use any mp crate, nothing uses it.

mod floor;
mod ipc;
mod log;
mod pool;
mod process;
mod sync;

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
    if wants("sync") {
        sync::run();
    }
    if wants("ipc") {
        ipc::run();
    }
    if wants("pool") {
        pool::run();
    }
    // Last: it installs mp's logger for the rest of the process.
    if wants("log") {
        log::run();
    }
}

/// Prints one result line.
pub(crate) fn report(workload: &str, implementation: &str, value: f64, unit: &str) {
    println!(r#"{{"workload": "{workload}", "impl": "{implementation}", "value": {value:.3}, "unit": "{unit}"}}"#);
}

/// A workload for [`interleaved`]: name, implementation, operations per round, the operation.
pub(crate) type Workload<'a> = (&'static str, &'static str, u32, Box<dyn FnMut() + 'a>);

/// Runs the workloads in alternating rounds (nine each, after one warm-up round), so that a noisy machine
/// slows all of them alike, and reports each one's median round as µs per operation.
pub(crate) fn interleaved(mut workloads: Vec<Workload<'_>>) {
    const ROUNDS: usize = 9;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    for round in 0..=ROUNDS {
        for (i, (_, _, n, op)) in workloads.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..*n {
                op();
            }
            if round > 0 {
                times[i].push(start.elapsed().as_secs_f64() * 1e6 / f64::from(*n));
            }
        }
    }
    for ((name, implementation, _, _), mut rounds) in workloads.into_iter().zip(times) {
        rounds.sort_by(f64::total_cmp);
        report(name, implementation, rounds[ROUNDS / 2], "us");
    }
}
