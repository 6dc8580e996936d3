//! Group `pool`: pool start-up, `map` with default chunks and with chunks of one, executor submissions,
//! the classic primes program, and how a CPU-bound map scales from one worker to two.

use std::time::Instant;

use mp_pool::{Pool, ProcessPoolExecutor};

use crate::report;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spin(_: u64) -> u64 {
    loop {
        std::hint::spin_loop();
    }
}

fn square(x: u64) -> u64 {
    x * x
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

/// The README's program (`Pool::new(4).map(is_prime, 1..=limit)`, pool start and teardown included) against
/// the same loop in this process (`primes_seq_inproc`, and the limit for this machine: the loop ÷ cores) and
/// against rayon's `par_iter` on a thread pool of `cores` threads started for the run.
fn primes(limit: u64, expected: usize, workload: &str, rounds: usize) {
    let cores = mp_process::cpu_count().max(1);
    let sequential = median(
        (0..rounds)
            .map(|_| {
                seconds(|| {
                    let found = (1..=std::hint::black_box(limit)).filter(|&n| is_prime(n)).count();
                    assert_eq!(found, expected);
                }) * 1e3
            })
            .collect(),
    );
    let seq_name = if limit == 100_000 { "primes_seq_inproc".to_owned() } else { format!("{workload}_seq_inproc") };
    report(&seq_name, "floor", sequential, "ms");
    report(&format!("{workload}_limit"), "floor", sequential / cores as f64, "ms");
    let rayon = median(
        (0..rounds)
            .map(|_| {
                seconds(|| {
                    use rayon::prelude::*;
                    let threads = rayon::ThreadPoolBuilder::new().num_threads(cores).build().expect("rayon");
                    let found = threads.install(|| (1..=limit).into_par_iter().filter(|&n| is_prime(n)).count());
                    assert_eq!(found, expected);
                }) * 1e3
            })
            .collect(),
    );
    report(workload, "rayon", rayon, "ms");
    let mp = median(
        (0..rounds)
            .map(|_| {
                seconds(|| {
                    let pool = Pool::new(4).expect("pool");
                    let found = pool.map(is_prime, 1..=limit).expect("map").into_iter().filter(|&p| p).count();
                    assert_eq!(found, expected);
                }) * 1e3
            })
            .collect(),
    );
    report(workload, "mp", mp, "ms");
}

fn seconds(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

/// Counting the primes below this takes about a second in one process.
const SCALING_LIMIT: u64 = 6_000_000;
/// The scaling workload's task: the primes in one block of this many numbers.
const BLOCK: u64 = 20_000;

fn count_block(start: u64) -> u64 {
    (start..start + BLOCK).filter(|&n| is_prime(n)).count() as u64
}

pub(crate) fn run() {
    let startup = median(
        (0..5)
            .map(|_| {
                seconds(|| {
                    let pool = Pool::new(2).expect("pool");
                    pool.close();
                    pool.join().expect("join");
                }) * 1e3
            })
            .collect(),
    );
    report("pool_startup", "mp", startup, "ms");

    let pool = Pool::new(2).expect("pool");
    let small = median(
        (0..3)
            .map(|_| 200_000.0 / seconds(|| assert_eq!(pool.map(square, 0..200_000u64).expect("map").len(), 200_000)))
            .collect(),
    );
    report("pool_map_small", "mp", small, "items/s");
    let chunk1 = median(
        (0..3)
            .map(|_| {
                20_000.0 / seconds(|| assert_eq!(pool.map_chunked(square, 0..20_000u64, 1).expect("map").len(), 20_000))
            })
            .collect(),
    );
    report("pool_map_chunk1", "mp", chunk1, "items/s");
    drop(pool);

    // Submissions and results, one task each: plain, and with a generous time limit on every task (what
    // watching deadlines costs).
    let submit_rate = |executor: &ProcessPoolExecutor| {
        median(
            (0..3)
                .map(|_| {
                    20_000.0
                        / seconds(|| {
                            let futures: Vec<_> =
                                (0..20_000u64).map(|x| executor.submit(square, x).expect("submit")).collect();
                            for f in futures {
                                f.result().expect("result");
                            }
                        })
                })
                .collect(),
        )
    };
    let executor = ProcessPoolExecutor::new(2).expect("executor");
    let submit = submit_rate(&executor);
    report("executor_submit", "mp", submit, "tasks/s");
    drop(executor);
    let limited = ProcessPoolExecutor::builder()
        .max_workers(2)
        .task_timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("executor");
    let with_limit = submit_rate(&limited);
    report("pool_timeout_overhead", "mp", with_limit, "tasks/s");
    eprintln!("(pool_timeout_overhead: {:.1}% below executor_submit)", (1.0 - with_limit / submit) * 100.0);
    // How late a runaway task's kill lands after its deadline: from submission to its `TimedOut`, less the
    // limit, over 100 trials.
    let limit = std::time::Duration::from_millis(20);
    let mut late: Vec<f64> = (0..100)
        .map(|_| {
            let start = Instant::now();
            let f = limited.submit_with(spin, 0, mp_pool::TaskOptions::new().timeout(limit)).expect("submit");
            assert!(matches!(f.result(), Err(mp_pool::TaskError::TimedOut { .. })));
            (start.elapsed().saturating_sub(limit)).as_secs_f64() * 1e3
        })
        .collect();
    late.sort_by(f64::total_cmp);
    report("pool_kill_late_median", "mp", late[late.len() / 2], "ms");
    report("pool_kill_late_max", "mp", late[late.len() - 1], "ms");
    drop(limited);
    let executor = ProcessPoolExecutor::new(2).expect("executor");
    // Both workers up before the clock starts, as for the other executor workloads.
    let warm: Vec<_> = (0..4u64).map(|x| executor.submit(square, x).expect("submit")).collect();
    warm.into_iter().for_each(|f| drop(f.result()));
    // Time to the first result of a long map (20,000 items, chunks of 1): streaming hands it out at once.
    let first = median(
        (0..3)
            .map(|_| {
                let start = Instant::now();
                let mut results = executor.map(square, 0..20_000u64, 1).expect("map");
                assert_eq!(results.next().expect("first").expect("result"), 0);
                let ms = start.elapsed().as_secs_f64() * 1e3;
                assert_eq!(results.count(), 19_999);
                ms
            })
            .collect(),
    );
    report("executor_map_first_result", "mp", first, "ms");
    drop(executor);

    primes(100_000, 9_592, "primes_seed", 5);
    primes(10_000_000, 664_579, "primes_large", 3);

    let with = |workers: usize| {
        let pool = Pool::new(workers).expect("pool");
        pool.map_chunked(square, 0..8u64, 1).expect("warm up");
        seconds(|| {
            let blocks = (0..SCALING_LIMIT).step_by(BLOCK as usize);
            let n: u64 = pool.map_chunked(count_block, blocks, 1).expect("map").into_iter().sum();
            assert_eq!(n, 412_849, "primes below 6,000,000");
        })
    };
    let (one, two) = (median((0..3).map(|_| with(1)).collect()), median((0..3).map(|_| with(2)).collect()));
    report("primes_scaling", "mp", one / two, "x");
    eprintln!("(primes_scaling: one worker {one:.2} s, two workers {two:.2} s)");
}
