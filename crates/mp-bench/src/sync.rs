//! Group `sync`: locks, locked counters and shared-memory bandwidth, for mp and on raw primitives.

use std::time::Instant;

use mp_process::{Process, StartMethod, get_context};
use mp_shm::SharedMemory;
use mp_sync::{Lock, Value};

use crate::{floor, report};

const UNCONTENDED: u32 = 5_000_000;
const CONTENDED: u32 = 1_000_000;
const SHM_BYTES: usize = 256 << 20;
/// Rounds per workload; contended figures swing by half between runs (unfair locks run long streaks), so
/// they take the median of more.
const ROUNDS: usize = 3;
const CONTENDED_ROUNDS: usize = 5;

fn median(mut rounds: Vec<f64>) -> f64 {
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn hammer((lock, n): (Lock, u32)) {
    for _ in 0..n {
        drop(lock.acquire().expect("lock"));
    }
}

fn increment((value, n): (Value<u64>, u32)) {
    for _ in 0..n {
        *value.get_lock().expect("lock") += 1;
    }
}

fn write_all(shm: SharedMemory) {
    let chunk = vec![0x5au8; 1 << 20];
    for offset in (0..shm.size()).step_by(chunk.len()) {
        shm.write_at(offset, &chunk).expect("in bounds");
    }
}

/// Runs `target(args)` in two children at once; returns the elapsed seconds.
fn two_children<F, A>(target: F, args: impl Fn() -> A) -> f64
where
    F: mp_process::Target<fn(A), A, Output = ()>,
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let ctx = get_context(StartMethod::Fork).expect("fork");
    let mut children: Vec<Process<()>> = (0..2).map(|_| ctx.process(target, args())).collect();
    let start = Instant::now();
    for p in &mut children {
        p.start().expect("start");
    }
    for p in &mut children {
        p.join().expect("join");
    }
    start.elapsed().as_secs_f64()
}

pub(crate) fn run() {
    // Uncontended: one process, acquire + release.
    let lock = Lock::new().expect("lock");
    let mp = median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..UNCONTENDED {
                    drop(lock.acquire().expect("lock"));
                }
                start.elapsed().as_secs_f64() * 1e9 / f64::from(UNCONTENDED)
            })
            .collect(),
    );
    report("lock_uncontended", "mp", mp, "ns");
    report(
        "pshared_mutex_uncontended",
        "floor",
        median((0..ROUNDS).map(|_| floor::mutex_uncontended(UNCONTENDED)).collect()),
        "ns",
    );

    // Contended: two processes hammering one lock; total operations per second.
    let ops = f64::from(2 * CONTENDED);
    let mp = median(
        (0..CONTENDED_ROUNDS)
            .map(|_| ops / two_children(hammer, || (lock.try_clone().expect("clone"), CONTENDED)))
            .collect(),
    );
    report("lock_contended", "mp", mp, "ops/s");
    report(
        "lock_contended",
        "floor",
        median((0..CONTENDED_ROUNDS).map(|_| ops / floor::mutex_contended(CONTENDED, false)).collect()),
        "ops/s",
    );

    // A locked counter incremented by two processes; the count must be exact.
    let value = Value::new(0u64).expect("value");
    let mp = median(
        (0..CONTENDED_ROUNDS)
            .map(|_| {
                value.set_value(0).expect("reset");
                let secs = two_children(increment, || (value.try_clone().expect("clone"), CONTENDED));
                assert_eq!(value.value().expect("read"), u64::from(2 * CONTENDED), "lost increments");
                ops / secs
            })
            .collect(),
    );
    report("value_incr_locked", "mp", mp, "ops/s");
    report(
        "counter_incr_locked",
        "floor",
        median((0..CONTENDED_ROUNDS).map(|_| ops / floor::mutex_contended(CONTENDED, true)).collect()),
        "ops/s",
    );

    // A child writes 256 MiB into a fresh segment, the parent reads it back.
    let mp = median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                let shm = SharedMemory::create(SHM_BYTES).expect("segment");
                let mut p =
                    get_context(StartMethod::Fork).expect("fork").process(write_all, shm.try_clone().expect("clone"));
                p.start().expect("start");
                p.join().expect("join");
                let mut back = vec![0u8; 1 << 20];
                let mut sum = 0u64;
                for offset in (0..SHM_BYTES).step_by(back.len()) {
                    shm.read_at(offset, &mut back).expect("in bounds");
                    sum += u64::from(back[offset % back.len()]);
                }
                std::hint::black_box(sum);
                shm.unlink().expect("unlink");
                SHM_BYTES as f64 / start.elapsed().as_secs_f64() / 1e9
            })
            .collect(),
    );
    report("shm_bw", "mp", mp, "GB/s");
    report("shm_bw", "floor", median((0..ROUNDS).map(|_| floor::shm_bw(SHM_BYTES)).collect()), "GB/s");
}
