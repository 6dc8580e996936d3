//! Group `log`: records forwarded from a child to its parent's logger, and the cost of a filtered-out record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mp_process::Process;

use crate::report;

/// Records the parent's inner logger has counted.
static COUNTED: AtomicU64 = AtomicU64::new(0);

/// The parent's inner logger: counts.
struct Count;

impl ::log::Log for Count {
    fn enabled(&self, _: &::log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &::log::Record<'_>) {
        if record.target() != "mp" {
            COUNTED.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

/// How many records the throughput child logs.
const RECORDS: u64 = 200_000;

/// Logs `n` small records as fast as it can.
fn flood(n: u64) {
    for i in 0..n {
        ::log::info!("record {i}");
    }
}

/// ns per filtered-out `debug!` over `n` of them.
fn filtered(n: u64) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        ::log::debug!("filtered {}", std::hint::black_box(i));
    }
    start.elapsed().as_secs_f64() * 1e9 / n as f64
}

pub(crate) fn run() {
    // The plain program: no logger at all, `debug!` filtered by `log`'s level check alone.
    ::log::set_max_level(::log::LevelFilter::Info);
    let plain = (0..5).map(|_| filtered(20_000_000)).fold(f64::INFINITY, f64::min);
    ::log::set_max_level(::log::LevelFilter::Off);
    // A child waits for room rather than drop (bounded: one second), so that what is measured is delivery.
    let handle = mp_log::Builder::new()
        .level(::log::LevelFilter::Info)
        .send_wait(Duration::from_secs(1))
        .install(Count)
        .expect("install mp's logger");
    let mut rates = Vec::new();
    let mut dropped = 0;
    for _ in 0..3 {
        let before = COUNTED.load(Ordering::Relaxed);
        let dropped_before = handle.stats().dropped;
        let start = Instant::now();
        let mut p = Process::new(flood, RECORDS);
        p.start().expect("start");
        p.join().expect("join");
        while COUNTED.load(Ordering::Relaxed) - before + (handle.stats().dropped - dropped_before) < RECORDS {
            if start.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::yield_now();
        }
        let delivered = COUNTED.load(Ordering::Relaxed) - before;
        dropped += handle.stats().dropped - dropped_before;
        rates.push(delivered as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    report("log_forward_throughput", "mp", rates[1], "records/s");
    report("log_forward_dropped", "mp", dropped as f64, "records");
    let mut child_costs: Vec<f64> = (0..5)
        .map(|_| {
            let mut p = Process::new(filtered, 20_000_000);
            p.start().expect("start");
            p.join().expect("join")
        })
        .collect();
    child_costs.sort_by(f64::total_cmp);
    report("log_disabled_cost", "floor", plain, "ns");
    report("log_disabled_cost", "mp", child_costs[0], "ns");
    handle.stop();
}
