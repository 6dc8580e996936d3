//! mp-pool across real processes, under the start method `cargo xtask test` selects.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mp_pool::{
    ExecutorBuilder, Pool, PoolBuilder, PoolError, ProcessPoolExecutor, ReturnWhen, TaskError, TaskOptions,
    as_completed, wait,
};
use serde::Serialize;

fn main() {
    mp_process::init();
    support::run(support::cases![
        map_starmap_apply_and_async,
        bad_arguments_are_errors,
        imap_is_lazy_ordered_and_unordered,
        panicking_task_fails_only_itself,
        killed_worker_fails_only_its_task,
        failing_initializer_stops_the_pool,
        workers_are_recycled_without_deadlock,
        close_join_and_terminate,
        unserializable_result_fails_only_its_task,
        large_inputs_and_results,
        executor_futures,
        executor_map_wait_and_as_completed,
        executor_dead_worker_fails_only_its_future,
        panicking_callback_does_not_stop_the_pool,
        one_pool_serves_many_threads,
        large_inputs_of_unfinished_tasks_are_freed,
        workers_print_in_a_program_without_standard_streams,
        timed_out_gets_can_be_tried_again,
        polling_wait_leaves_nothing_behind,
        imap_next_timeout_times_out_and_goes_on,
        callbacks_may_call_back_into_their_future_and_executor,
        a_worker_that_cannot_be_started_is_tried_again,
        a_worker_that_never_starts_breaks_the_pool,
        imap_yields_what_it_has_before_the_inputs_panic_and_never_truncates_silently,
        futures_of_different_types_are_waited_on_together,
        a_callback_may_submit_while_large_results_stream,
        executor_map_streams_in_order_and_stops_at_the_failing_item,
        no_job_waits_behind_a_long_one_while_a_worker_idles,
        undecodable_values_say_why,
        a_task_past_its_time_limit_is_stopped_and_the_others_finish,
        a_task_sees_its_deadline_and_stops_itself,
        cancel_running_stops_a_running_task_and_spares_the_others,
        time_limits_with_initializers_and_recycled_workers,
        a_worker_past_its_memory_size_is_recycled,
        a_worker_over_its_hard_memory_limit_fails_only_its_task,
        idle_workers_exit_and_come_back_with_work,
        an_executor_resizes_in_place,
        the_reusable_executor_is_one_per_process,
        a_time_limit_spares_the_job_queued_behind_and_yields_to_a_death,
    ]);
}

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn pid(_: u32) -> u32 {
    std::process::id()
}

fn new_pool(n: usize) -> Pool {
    PoolBuilder::new().processes(n).start_method(support::method()).build().unwrap()
}

fn map_starmap_apply_and_async() {
    let pool = new_pool(2);
    assert_eq!(pool.processes(), 2);
    assert_eq!(pool.map(square, 1..=5).unwrap(), [1, 4, 9, 16, 25]);
    assert_eq!(pool.map_chunked(square, 0..1000, 7).unwrap(), (0..1000).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(pool.starmap(add, [(1, 2), (10, 20)]).unwrap(), [3, 30]);
    assert_eq!(pool.map(square, Vec::<u64>::new()).unwrap(), Vec::<u64>::new(), "empty input, empty result");
    assert_eq!(pool.apply(add, (40, 2)).unwrap(), 42);
    let seen = Arc::new(Mutex::new(None));
    let result = pool
        .apply_async_with(square, 9, {
            let seen = seen.clone();
            move |r| *seen.lock().unwrap() = Some(*r.unwrap())
        })
        .unwrap();
    assert!(result.wait_timeout(Duration::from_secs(20)));
    assert!(result.ready());
    assert_eq!(result.successful(), Some(true));
    assert_eq!(result.get().unwrap(), 81);
    assert_eq!(*seen.lock().unwrap(), Some(81), "the callback ran");
    let all = pool.map_async(square, 0..100, None).unwrap();
    assert_eq!(all.get_timeout(Duration::from_secs(20)).unwrap().len(), 100);
    // The work really is spread over processes other than this one.
    let pids: BTreeSet<u32> = pool.map_chunked(pid, 0..64, 1).unwrap().into_iter().collect();
    assert!(!pids.contains(&std::process::id()));
}

fn bad_arguments_are_errors() {
    assert!(matches!(PoolBuilder::new().processes(0).build(), Err(PoolError::ZeroProcesses)));
    assert!(matches!(PoolBuilder::new().max_tasks_per_child(0).build(), Err(PoolError::ZeroMaxTasks)));
    assert!(matches!(ProcessPoolExecutor::new(0), Err(PoolError::ZeroProcesses)));
    let pool = new_pool(1);
    assert!(matches!(pool.map_chunked(square, 0..10, 0), Err(PoolError::ZeroChunksize)));
    assert!(matches!(pool.imap(square, 0..10, 0), Err(PoolError::ZeroChunksize)));
}

fn slow_identity(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis((x % 4) * 20));
    x
}

fn imap_is_lazy_ordered_and_unordered() {
    let pool = new_pool(2);
    // An endless input: only a bounded window is ever taken from it.
    let taken = Arc::new(Mutex::new(0u64));
    let counting = {
        let taken = taken.clone();
        (0u64..).inspect(move |_| *taken.lock().unwrap() += 1)
    };
    let first: Vec<u64> = pool.imap(square, counting, 1).unwrap().take(20).map(Result::unwrap).collect();
    assert_eq!(first, (0..20).map(|x| x * x).collect::<Vec<_>>());
    assert!(*taken.lock().unwrap() < 20 + 4 * 2 + 1, "imap took {} inputs", taken.lock().unwrap());
    let ordered: Vec<u64> = pool.imap(slow_identity, 0..16, 1).unwrap().map(Result::unwrap).collect();
    assert_eq!(ordered, (0..16).collect::<Vec<_>>());
    let mut unordered: Vec<u64> = pool.imap_unordered(slow_identity, 0..16, 2).unwrap().map(Result::unwrap).collect();
    unordered.sort();
    assert_eq!(unordered, (0..16).collect::<Vec<_>>());
    assert_eq!(pool.imap(square, Vec::<u64>::new(), 1).unwrap().count(), 0);
}

fn panic_on_three(x: u64) -> u64 {
    assert_ne!(x, 3, "three is not allowed");
    x
}

fn panicking_task_fails_only_itself() {
    let pool = new_pool(2);
    let results: Vec<_> = (0..6).map(|x| pool.apply_async(panic_on_three, x).unwrap()).collect();
    for (x, r) in results.into_iter().enumerate() {
        match (x, r.get()) {
            (3, Err(TaskError::Panicked(info))) => {
                assert!(info.message.contains("three is not allowed"), "{info:?}");
                assert!(info.location.as_deref().is_some_and(|l| l.contains("pool.rs")), "{info:?}");
                assert!(info.process_name.starts_with("PoolWorker-"), "{info:?}");
                assert_ne!(info.pid, std::process::id());
            }
            (x, Ok(v)) => assert_eq!(v, x as u64),
            (x, other) => panic!("task {x}: {other:?}"),
        }
    }
    // map reports the first failure, after every chunk has ended.
    assert!(matches!(pool.map_chunked(panic_on_three, 0..10, 1), Err(PoolError::Task(TaskError::Panicked(_)))));
    assert_eq!(pool.map(square, [2, 3]).unwrap(), [4, 9], "the pool goes on");
}

fn die_on_three(x: u64) -> u64 {
    if x == 3 {
        // SAFETY: raise has no memory-safety preconditions; the test wants the worker dead.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_millis(10));
    x
}

fn killed_worker_fails_only_its_task() {
    let pool = new_pool(2);
    let start = Instant::now();
    let results: Vec<_> = (0..12).map(|x| pool.apply_async(die_on_three, x).unwrap()).collect();
    for (x, r) in results.into_iter().enumerate() {
        match r.get_timeout(Duration::from_secs(20)) {
            Err(e @ TaskError::WorkerLost { .. }) => {
                assert_eq!(x, 3, "only the task on the dead worker fails");
                assert_eq!(e.signal(), Some(libc::SIGKILL));
            }
            Ok(v) => assert_eq!(v, x as u64),
            other => panic!("task {x}: {other:?}"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    // Alone on an idle pool, the lost task is reported promptly (the pool checks every 20 ms; the bound here
    // is generous, for a loaded machine: it catches a hang or a slow poll, not a few milliseconds).
    let start = Instant::now();
    assert!(matches!(pool.apply(die_on_three, 3), Err(PoolError::Task(TaskError::WorkerLost { .. }))));
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    // The pool keeps its size: both workers serve the next map.
    let pids: BTreeSet<u32> = pool.map_chunked(pid_after_nap, 0..20, 1).unwrap().into_iter().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    // map with a dead worker: an error, not a hang.
    assert!(matches!(pool.map_chunked(die_on_three, 0..8, 1), Err(PoolError::Task(TaskError::WorkerLost { .. }))));
}

fn pid_after_nap(_: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(20));
    std::process::id()
}

fn bad_init(_: ()) {
    panic!("cannot initialize");
}

fn failing_initializer_stops_the_pool() {
    let start = Instant::now();
    let pool =
        PoolBuilder::new().processes(2).initializer(bad_init, ()).start_method(support::method()).build().unwrap();
    let results: Vec<_> = (0..4).map(|x| pool.apply_async(square, x)).collect();
    for r in results {
        match r {
            Ok(r) => match r.get_timeout(Duration::from_secs(20)) {
                Err(TaskError::Initializer(e)) => assert!(e.to_string().contains("cannot initialize"), "{e}"),
                other => panic!("{other:?}"),
            },
            Err(PoolError::Broken(TaskError::Initializer(_))) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(matches!(pool.apply_async(square, 1), Err(PoolError::Broken(_))), "no new work, no respawn loop");
    assert!(start.elapsed() < Duration::from_secs(10));
    drop(pool);
}

fn workers_are_recycled_without_deadlock() {
    let pool = PoolBuilder::new().processes(2).max_tasks_per_child(2).start_method(support::method()).build().unwrap();
    let pids: Vec<u32> = pool.map_chunked(pid_after_nap, 0..20, 1).unwrap();
    let distinct: BTreeSet<u32> = pids.iter().copied().collect();
    assert!(distinct.len() >= 10, "each worker did at most 2 tasks: {} workers for 20 tasks", distinct.len());
    let executor =
        ExecutorBuilder::new().max_workers(2).max_tasks_per_child(1).start_method(support::method()).build().unwrap();
    let futures: Vec<_> = (0..10).map(|x| executor.submit(square, x).unwrap()).collect();
    let values: Vec<u64> = futures.into_iter().map(|f| f.result_timeout(Duration::from_secs(20)).unwrap()).collect();
    assert_eq!(values, (0..10).map(|x| x * x).collect::<Vec<_>>());
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn close_join_and_terminate() {
    let pool = new_pool(2);
    assert!(matches!(pool.join(), Err(PoolError::NotClosed)));
    let pending = pool.apply_async(nap, 100).unwrap();
    pool.close();
    assert!(matches!(pool.apply_async(square, 1), Err(PoolError::Closed)));
    assert!(matches!(pool.map(square, [1]), Err(PoolError::Closed)));
    pool.join().unwrap();
    assert_eq!(pending.get().unwrap(), 100, "close lets submitted work finish");
    // terminate with 10 000 queued tasks returns at once; their results are cancelled, not left hanging.
    let pool = new_pool(2);
    let queued = pool.map_async(nap, std::iter::repeat_n(1u64, 10_000), Some(1)).unwrap();
    let start = Instant::now();
    pool.terminate();
    pool.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    assert!(matches!(queued.get_timeout(Duration::from_secs(5)), Err(TaskError::Cancelled)));
}

#[derive(Debug)]
struct NoSerialize;

impl Serialize for NoSerialize {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("not today"))
    }
}

impl<'de> serde::Deserialize<'de> for NoSerialize {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(NoSerialize)
    }
}

fn make_unserializable(_: ()) -> NoSerialize {
    NoSerialize
}

fn unserializable_result_fails_only_its_task() {
    let pool = new_pool(1);
    // The serializer's own words (in the worker, then in the parent), not postcard's "Serde Serialization Error".
    let in_worker = pool.apply(make_unserializable, ());
    assert!(
        matches!(&in_worker, Err(PoolError::Task(TaskError::ResultEncode(m))) if m == "not today"),
        "{in_worker:?}"
    );
    let in_parent = pool.apply(takes_unserializable, NoSerialize);
    assert!(matches!(&in_parent, Err(PoolError::Serialize(m)) if m == "not today"), "{in_parent:?}");
    assert_eq!(pool.apply(square, 5).unwrap(), 25, "the pool stays healthy");
}

fn takes_unserializable(_: NoSerialize) -> u64 {
    1
}

fn byte_sum(data: Vec<u8>) -> (usize, u64, Vec<u8>) {
    (data.len(), data.iter().map(|&b| u64::from(b)).sum(), vec![7; data.len()])
}

fn large_inputs_and_results() {
    let pool = new_pool(2);
    // The last size is larger than the pool's inbox ring (4 MiB): the result streams through it.
    for size in [10, 300_000, 3 << 20, 6 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let expected: u64 = data.iter().map(|&b| u64::from(b)).sum();
        let (len, sum, echo) = pool.apply(byte_sum, data).unwrap();
        assert_eq!((len, sum, echo.len()), (size, expected, size));
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

fn executor_futures() {
    let executor = ExecutorBuilder::new().max_workers(1).start_method(support::method()).build().unwrap();
    let busy = executor.submit(nap, 300).unwrap();
    let queued = executor.submit(nap, 1).unwrap();
    let extra = executor.submit(nap, 2).unwrap();
    let called = Arc::new(Mutex::new(Vec::new()));
    busy.add_done_callback({
        let called = called.clone();
        move |r| called.lock().unwrap().push(*r.unwrap())
    });
    assert!(support::eventually(Duration::from_secs(10), || busy.running()));
    assert!(!busy.done());
    assert!(extra.cancel(), "a task no worker holds can be cancelled");
    assert!(extra.cancelled() && extra.done());
    assert!(matches!(extra.result(), Err(TaskError::Cancelled)));
    assert!(!busy.cancel(), "a running task cannot");
    assert_eq!(block_on(busy).unwrap(), 300, "a Future can be awaited");
    assert_eq!(*called.lock().unwrap(), [300]);
    assert_eq!(queued.result_timeout(Duration::from_secs(10)).unwrap(), 1);
    let late = executor.submit(nap, 5_000).unwrap();
    assert!(matches!(
        executor.submit(nap, 1).unwrap().result_timeout(Duration::from_millis(50)),
        Err(TaskError::Timeout)
    ));
    executor.shutdown(false, true);
    assert!(matches!(executor.submit(nap, 1), Err(PoolError::Closed)));
    drop(late);
}

fn executor_map_wait_and_as_completed() {
    let executor = ExecutorBuilder::new().max_workers(2).start_method(support::method()).build().unwrap();
    let values: Vec<u64> = executor.map(square, 0..50, 4).unwrap().map(Result::unwrap).collect();
    assert_eq!(values, (0..50).map(|x| x * x).collect::<Vec<_>>());
    // On an executor of its own: the timed-out task runs on there for two seconds.
    let slow = ExecutorBuilder::new().max_workers(1).start_method(support::method()).build().unwrap();
    let mut timed = slow.map_timeout(nap, [2_000u64], 1, Some(Duration::from_millis(100))).unwrap();
    assert!(matches!(timed.next(), Some(Err(TaskError::Timeout))));
    slow.shutdown(false, true);
    let futures: Vec<_> = [300u64, 10, 150].into_iter().map(|ms| executor.submit(nap, ms).unwrap()).collect();
    let order: Vec<usize> = as_completed(&futures, Some(Duration::from_secs(20))).map(Result::unwrap).collect();
    assert_eq!(order.len(), 3);
    assert_eq!(order[0], 1, "the quickest completes first: {order:?}");
    let futures: Vec<_> = [10u64, 3_000].into_iter().map(|ms| executor.submit(nap, ms).unwrap()).collect();
    let (done, not_done) = wait(&futures, Some(Duration::from_secs(20)), ReturnWhen::FirstCompleted);
    assert_eq!((done, not_done), (vec![0], vec![1]));
    let failing: Vec<_> = [3u64, 1].into_iter().map(|x| executor.submit(panic_on_three, x).unwrap()).collect();
    let (done, _) = wait(&failing, Some(Duration::from_secs(20)), ReturnWhen::FirstException);
    assert!(done.contains(&0));
    let (done, not_done) = wait(&failing, Some(Duration::from_secs(20)), ReturnWhen::AllCompleted);
    assert_eq!((done.len(), not_done.len()), (2, 0));
    executor.shutdown(false, true);
}

fn executor_dead_worker_fails_only_its_future() {
    let executor = ProcessPoolExecutor::builder().max_workers(2).start_method(support::method()).build().unwrap();
    let futures: Vec<_> = (0..10).map(|x| executor.submit(die_on_three, x).unwrap()).collect();
    for (x, f) in futures.into_iter().enumerate() {
        match f.result_timeout(Duration::from_secs(20)) {
            Ok(v) => assert_eq!(v, x as u64),
            Err(TaskError::WorkerLost { .. }) => assert_eq!(x, 3),
            Err(e) => panic!("{x}: {e:?}"),
        }
    }
    assert_eq!(executor.submit(square, 4).unwrap().result().unwrap(), 16, "the executor is not broken");
}

fn panicking_callback_does_not_stop_the_pool() {
    let pool = new_pool(1);
    let first = pool.apply_async_with(square, 3, |_| panic!("a careless callback")).unwrap();
    assert_eq!(first.get_timeout(Duration::from_secs(20)).unwrap(), 9, "the result still arrives");
    assert_eq!(pool.apply(square, 4).unwrap(), 16, "and the pool goes on");
    let executor = ExecutorBuilder::new().max_workers(1).start_method(support::method()).build().unwrap();
    let future = executor.submit(square, 5).unwrap();
    future.add_done_callback(|_| panic!("another careless callback"));
    assert_eq!(future.result_timeout(Duration::from_secs(20)).unwrap(), 25);
    assert_eq!(executor.submit(square, 6).unwrap().result_timeout(Duration::from_secs(20)).unwrap(), 36);
}

fn one_pool_serves_many_threads() {
    let pool = new_pool(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || pool.map_chunked(square, (0..500).map(|x| x + t * 1000), 3).unwrap())
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            let expected: Vec<u64> = (0..500u64).map(|x| (x + t as u64 * 1000).pow(2)).collect();
            assert_eq!(h.join().unwrap(), expected);
        }
    });
}

fn shm_entries() -> usize {
    std::fs::read_dir("/dev/shm").map(|d| d.count()).unwrap_or(0)
}

fn first_byte(data: Vec<u8>) -> u8 {
    std::thread::sleep(Duration::from_millis(200));
    data[0]
}

/// Inputs over 256 KiB travel in shared memory: however a task ends — done, cancelled, terminated, or
/// refused after close — its segment goes with it, not at the end of the program.
fn large_inputs_of_unfinished_tasks_are_freed() {
    let before = shm_entries();
    let big = || vec![7u8; 300_000];
    let executor = ExecutorBuilder::new().max_workers(1).start_method(support::method()).build().unwrap();
    let running: Vec<_> = (0..3).map(|_| executor.submit(first_byte, big()).unwrap()).collect();
    let queued = executor.submit(first_byte, big()).unwrap();
    assert!(queued.cancel(), "the fourth waits behind a window of two");
    assert_eq!(running.into_iter().map(|f| f.result().unwrap()).collect::<Vec<_>>(), [7, 7, 7]);
    let pool = new_pool(1);
    let pending: Vec<_> = (0..4).map(|_| pool.apply_async(first_byte, big()).unwrap()).collect();
    pool.terminate();
    pool.join().unwrap();
    assert!(pending.into_iter().all(|r| matches!(r.get(), Err(TaskError::Cancelled))));
    let pool = new_pool(1);
    pool.close();
    assert!(matches!(pool.apply_async(first_byte, big()), Err(PoolError::Closed)));
    assert_eq!(shm_entries(), before, "no input segment outlives its task");
}

/// Prints (to whatever descriptor 1 is in the worker), then squares.
fn loud_square(x: u64) -> u64 {
    println!("squaring {x} with a line long enough to matter to a ring if it landed in one");
    x * x
}

/// With descriptors 0–2 closed in the parent, the pool's queues and sockets must not take those numbers: a
/// worker's `println!` would then write into its task queue (under fork) or its outcome socket.
fn workers_print_in_a_program_without_standard_streams() {
    // SAFETY: dup/close/dup2 of the process's own standard descriptors, restored at the end.
    let saved: Vec<i32> = (0..3).map(|fd| unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) }).collect();
    for fd in 0..3 {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
    let result = std::panic::catch_unwind(|| {
        let pool = new_pool(2);
        let squares = pool.map(loud_square, 0..200u64).unwrap();
        let executor = mp_pool::ProcessPoolExecutor::new(2).unwrap();
        let one = executor.submit(loud_square, 12).unwrap().result().unwrap();
        (squares, one)
    });
    for (fd, saved) in saved.iter().enumerate() {
        // SAFETY: as above.
        unsafe { libc::dup2(*saved, fd as i32) };
        // SAFETY: as above.
        unsafe { libc::close(*saved) };
    }
    let (squares, one) = result.unwrap();
    assert_eq!(squares, (0..200u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(one, 144);
}

/// A `get_timeout` / `result_timeout` that times out leaves the result to be collected later (the task runs
/// on, as in CPython); once handed out, another call says so.
fn timed_out_gets_can_be_tried_again() {
    let pool = new_pool(1);
    let pending = pool.apply_async(nap, 300).unwrap();
    assert!(matches!(pending.get_timeout(Duration::from_millis(10)), Err(TaskError::Timeout)));
    assert_eq!(pending.get_timeout(Duration::from_secs(20)).unwrap(), 300);
    assert!(matches!(pending.get_timeout(Duration::from_secs(1)), Err(TaskError::AlreadyTaken)));
    let executor = mp_pool::ProcessPoolExecutor::new(1).unwrap();
    let future = executor.submit(nap, 300).unwrap();
    assert!(matches!(future.result_timeout(Duration::from_millis(10)), Err(TaskError::Timeout)));
    assert_eq!(future.result_timeout(Duration::from_secs(20)).unwrap(), 300);
    assert!(matches!(future.result_timeout(Duration::from_secs(1)), Err(TaskError::AlreadyTaken)));
}

/// Resident memory of this process, in bytes.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

/// `wait` and `as_completed` take back what they left on the futures when they return: a loop polling a
/// pending future does not grow (it grew ~700 bytes a call, ~140 MiB over 200,000 calls).
fn polling_wait_leaves_nothing_behind() {
    let executor = mp_pool::ProcessPoolExecutor::new(1).unwrap();
    let pending = [executor.submit(nap, 10_000).unwrap()];
    for _ in 0..1000 {
        let _ = mp_pool::wait(&pending, Some(Duration::ZERO), mp_pool::ReturnWhen::FirstCompleted);
    }
    let before = resident();
    for _ in 0..100_000 {
        let (done, _) = mp_pool::wait(&pending, Some(Duration::ZERO), mp_pool::ReturnWhen::FirstCompleted);
        assert!(done.is_empty());
        drop(mp_pool::as_completed(&pending, Some(Duration::ZERO)));
    }
    let grown = resident().saturating_sub(before);
    assert!(grown < 8 << 20, "grew {grown} bytes over 200,000 calls");
    assert!(pending[0].cancel() || !pending[0].done());
}

/// `Imap::next_timeout` (CPython's `next(timeout)`): a result that is late times out without being lost, and
/// the iterator goes on in order.
fn imap_next_timeout_times_out_and_goes_on() {
    let pool = new_pool(2);
    let mut results = pool.imap(nap, [400u64, 0, 0], 1).unwrap();
    assert!(matches!(results.next_timeout(Duration::from_millis(20)), Some(Err(TaskError::Timeout))));
    assert_eq!(results.next_timeout(Duration::from_secs(20)).unwrap().unwrap(), 400, "nothing was lost");
    assert_eq!(results.next_timeout(Duration::from_secs(20)).unwrap().unwrap(), 0);
    assert_eq!(results.next().unwrap().unwrap(), 0);
    assert!(results.next_timeout(Duration::ZERO).is_none(), "the end");
}

/// A done-callback may ask its own future anything (`done`, `cancelled`, `running`, another callback, even its
/// result: `InCallback`, since it holds it by reference) and submit more work, without deadlocking the
/// executor (callbacks ran under the result's lock: `done()` there hung every future, shutdown and drop).
fn callbacks_may_call_back_into_their_future_and_executor() {
    let executor = std::sync::Arc::new(mp_pool::ProcessPoolExecutor::new(2).unwrap());
    let future = std::sync::Arc::new(executor.submit(square, 7).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let (me, pool) = (future.clone(), executor.clone());
    future.add_done_callback(move |result| {
        let seen = (*result.unwrap(), me.done(), me.cancelled(), me.running());
        let again = matches!(me.result_timeout(Duration::from_secs(1)), Err(TaskError::InCallback));
        let tx2 = tx.clone();
        me.add_done_callback(move |inner| {
            let _ = tx2.send(("nested", *inner.unwrap()));
        });
        let next = pool.submit(square, 8).unwrap();
        let _ = tx.send(("first", seen.0));
        let _ = tx.send(("flags", u64::from(seen.1) * 100 + u64::from(seen.2) * 10 + u64::from(seen.3)));
        let _ = tx.send(("again", u64::from(again)));
        std::thread::spawn(move || {
            let _ = tx.send(("submitted", next.result_timeout(Duration::from_secs(20)).unwrap()));
        });
    });
    let mut got: Vec<(&str, u64)> = (0..5).map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap()).collect();
    got.sort();
    assert_eq!(got, [("again", 1), ("first", 49), ("flags", 100), ("nested", 49), ("submitted", 64)]);
    assert_eq!(future.result_timeout(Duration::from_secs(5)).unwrap(), 49, "the result is still there after");
}

fn nofile_limit(soft: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read or write one rlimit struct that lives on this stack.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let old = limit.rlim_cur;
        limit.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        old
    }
}

/// Kills a 1-worker pool's worker while no descriptor can be made in this process (limit 3: every new one is
/// EMFILE), so starting its replacement fails, and queues a task; returns the old limit, the worker, the task.
fn kill_the_worker_with_no_descriptors_left(pool: &Pool) -> (libc::rlim_t, u32, mp_pool::AsyncResult<u64>) {
    let worker = pool.apply(pid, 0).unwrap();
    let old = nofile_limit(3);
    // SAFETY: kill(2) with a pid and a signal number.
    assert_eq!(unsafe { libc::kill(worker as i32, libc::SIGKILL) }, 0);
    (old, worker, pool.apply_async(square, 7).unwrap())
}

fn a_worker_that_cannot_be_started_is_tried_again() {
    let pool = new_pool(1);
    let (old, worker, queued) = kill_the_worker_with_no_descriptors_left(&pool);
    // A transient failure: starts fail for about 200 ms.
    std::thread::sleep(Duration::from_millis(200));
    nofile_limit(old);
    // Before: the first failed start broke the pool for good (TaskError::WorkerStart).
    assert_eq!(queued.get_timeout(Duration::from_secs(20)).unwrap(), 49, "the queued task ran once a worker started");
    let replacement = pool.apply(pid, 0).unwrap();
    assert_ne!(replacement, worker);
    assert_eq!(pool.apply(square, 8).unwrap(), 64, "the pool is healthy");
}

fn a_worker_that_never_starts_breaks_the_pool() {
    let pool = new_pool(1);
    let (old, _, queued) = kill_the_worker_with_no_descriptors_left(&pool);
    // A persistent failure: eight starts in a row over about 2.5 s, then the pool is broken.
    let outcome = queued.get_timeout(Duration::from_secs(20));
    nofile_limit(old);
    match outcome {
        Err(TaskError::WorkerStart(message)) => assert!(message.contains("8 times in a row"), "{message}"),
        other => panic!("expected a broken pool, got {other:?}"),
    }
    assert!(matches!(pool.apply(square, 8), Err(PoolError::Broken(TaskError::WorkerStart(_)))));
}

fn imap_yields_what_it_has_before_the_inputs_panic_and_never_truncates_silently() {
    let pool = new_pool(2);
    // The input panics at its 10th item: the 9 results before it (the partial chunk's included) come first.
    for ordered in [true, false] {
        let input = (0u64..).map(|x| if x == 9 { panic!("input gave out at {x}") } else { x });
        let mut got = Vec::new();
        let raised = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let imap = if ordered { pool.imap(square, input, 2) } else { pool.imap_unordered(square, input, 2) };
            for r in imap.unwrap() {
                got.push(r.unwrap());
            }
        }));
        let payload = raised.expect_err("the input's panic is raised again");
        assert_eq!(payload.downcast_ref::<String>().map(String::as_str), Some("input gave out at 9"));
        got.sort();
        assert_eq!(got, (0..9).map(|x| x * x).collect::<Vec<_>>(), "ordered: {ordered}");
    }
    // close() while an ordered imap is half-way: what was submitted comes in order, then Cancelled for the
    // chunk that could not be submitted, then the end: never an out-of-place error, never a silent end.
    let mut imap = pool.imap(slow_identity, 0..100, 1).unwrap();
    let mut items = vec![imap.next().unwrap()];
    pool.close();
    items.extend(imap);
    let oks: Vec<u64> = items.iter().map_while(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(oks, (0..oks.len() as u64).collect::<Vec<_>>(), "in order");
    let rest = &items[oks.len()..];
    assert!(!rest.is_empty(), "the iterator says it was cut short ({} items)", items.len());
    assert!(rest.iter().all(|r| matches!(r, Err(TaskError::Cancelled))), "{rest:?}");
    pool.join().unwrap();
}

fn shout(text: String) -> String {
    std::thread::sleep(Duration::from_millis(100));
    text.to_uppercase()
}

fn futures_of_different_types_are_waited_on_together() {
    let executor = ExecutorBuilder::new().max_workers(2).start_method(support::method()).build().unwrap();
    let number = executor.submit(square, 9).unwrap();
    let text = executor.submit(shout, "mixed".to_string()).unwrap();
    let failing = executor.submit(panic_on_three, 3).unwrap();
    let all: [&dyn mp_pool::Waitable; 3] = [&number, &text, &failing];
    let order: Vec<usize> = mp_pool::as_completed(&all, Some(Duration::from_secs(20))).map(Result::unwrap).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 1, 2], "each index once: {order:?}");
    let (done, not_done) = mp_pool::wait(&all, Some(Duration::ZERO), mp_pool::ReturnWhen::FirstException);
    assert_eq!((done.len(), not_done.len()), (3, 0));
    assert!(all[2].is_failed() && !all[0].is_failed() && all[1].is_done());
    assert_eq!(number.result().unwrap(), 81);
    assert_eq!(text.result().unwrap(), "MIXED");
    assert!(matches!(failing.result(), Err(TaskError::Panicked(_))));
}

fn big_result(seed: u64) -> Vec<u8> {
    vec![seed as u8; 6 << 20]
}

/// Every callback submits more work while workers stream results larger than the pool's inbox: the handler,
/// the inbox's only reader, must never block putting a wake-up into its own inbox (it did: 9 of 20 done,
/// then nothing, ever).
fn a_callback_may_submit_while_large_results_stream() {
    let pool = std::sync::Arc::new(new_pool(2));
    let followers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let big: Vec<_> = (0..20u64)
        .map(|i| {
            let (pool, followers) = (pool.clone(), followers.clone());
            pool.clone()
                .apply_async_with(big_result, i, move |result| {
                    assert_eq!(result.unwrap().len(), 6 << 20);
                    let next = pool.apply_async(square, i).expect("submitting from a callback");
                    followers.lock().unwrap().push((i, next));
                })
                .unwrap()
        })
        .collect();
    for (i, result) in big.iter().enumerate() {
        let bytes = result.get_timeout(Duration::from_secs(30)).unwrap_or_else(|e| panic!("big result {i}: {e}"));
        assert!(bytes.iter().all(|b| *b == i as u8));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while followers.lock().unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "every callback ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    for (i, next) in followers.lock().unwrap().iter() {
        assert_eq!(next.get_timeout(Duration::from_secs(30)).unwrap(), i * i);
    }
}

/// `ProcessPoolExecutor::map` yields each result as soon as it and those before it are done, raises at the
/// failing item (after the results before it) and times out at the item that is late, then ends (it handed out
/// nothing until every task was done, one failure lost everything, and a timeout lost every result).
fn executor_map_streams_in_order_and_stops_at_the_failing_item() {
    let executor = ExecutorBuilder::new().max_workers(2).start_method(support::method()).build().unwrap();
    let started = Instant::now();
    let mut results = executor.map(nap, [10u64, 20, 3_000], 1).unwrap();
    assert_eq!(results.next().unwrap().unwrap(), 10);
    assert_eq!(results.next().unwrap().unwrap(), 20);
    let first_two = started.elapsed();
    assert!(first_two < Duration::from_millis(2_500), "the first results came before the slow one: {first_two:?}");
    assert_eq!(results.next().unwrap().unwrap(), 3_000);
    assert!(results.next().is_none());

    let mut results = executor.map(panic_on_three, [1u64, 2, 3, 4, 5], 1).unwrap();
    assert_eq!(results.next().unwrap().unwrap(), 1);
    assert_eq!(results.next().unwrap().unwrap(), 2);
    assert!(matches!(results.next(), Some(Err(TaskError::Panicked(_)))), "the failure, in its place");
    assert!(results.next().is_none(), "the iterator ends at the failure");
    // In chunks: the failing chunk fails whole, the chunks before it arrive.
    let got: Vec<_> = executor.map(panic_on_three, 0u64..10, 2).unwrap().collect();
    assert_eq!(got.len(), 3);
    assert!(got[0].as_ref().is_ok_and(|x| *x == 0) && got[1].as_ref().is_ok_and(|x| *x == 1));
    assert!(matches!(got[2], Err(TaskError::Panicked(_))));

    let mut timed = executor.map_timeout(nap, [10u64, 10, 3_000, 10], 1, Some(Duration::from_millis(1_000))).unwrap();
    assert_eq!(timed.next().unwrap().unwrap(), 10);
    assert_eq!(timed.next().unwrap().unwrap(), 10);
    assert!(matches!(timed.next(), Some(Err(TaskError::Timeout))), "the late item times out");
    assert!(timed.next().is_none());
    assert!(matches!(executor.map(square, [1u64], 0), Err(PoolError::ZeroChunksize)));
    assert_eq!(executor.map(square, Vec::<u64>::new(), 1).unwrap().count(), 0);
}

/// A worker holds the job it runs and the next; a short job handed to a worker busy with a long one must not wait
/// there while another worker idles (it waited the whole long job): it is taken back and run by the idle one.
fn no_job_waits_behind_a_long_one_while_a_worker_idles() {
    let executor = ExecutorBuilder::new().max_workers(2).start_method(support::method()).build().unwrap();
    executor.submit(nap, 0).unwrap().result().unwrap(); // both workers are up
    executor.submit(nap, 0).unwrap().result().unwrap();
    let started = Instant::now();
    let long = executor.submit(nap, 3_000).unwrap();
    let short: Vec<_> = (0..5).map(|_| executor.submit(nap, 20).unwrap()).collect();
    for (i, f) in short.iter().enumerate() {
        assert_eq!(f.result_timeout(Duration::from_secs(20)).unwrap(), 20, "short job {i}");
    }
    let took = started.elapsed();
    assert!(!long.done(), "the long job still runs");
    assert!(took < Duration::from_millis(2_000), "every short job ran beside the long one: {took:?}");
    assert_eq!(long.result_timeout(Duration::from_secs(20)).unwrap(), 3_000);
}

/// Serializes as a number; refuses to deserialize an odd one, saying so.
#[derive(Debug, Serialize)]
struct Even(u32);

impl<'de> serde::Deserialize<'de> for Even {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n % 2 == 1 { Err(serde::de::Error::custom(format!("{n} is odd"))) } else { Ok(Even(n)) }
    }
}

fn make_even(n: u32) -> Even {
    Even(n)
}

fn takes_even(e: Even) -> u32 {
    e.0
}

/// Arguments that fail to decode in the worker, and results that fail to decode in the parent, carry the
/// message the `Deserialize` impl raised (postcard alone says "Serde Deserialization Error").
fn undecodable_values_say_why() {
    let pool = new_pool(1);
    assert_eq!(pool.apply(make_even, 4).unwrap().0, 4);
    let result = pool.apply(make_even, 3);
    assert!(matches!(&result, Err(PoolError::Task(TaskError::ResultDecode(m))) if m == "3 is odd"), "{result:?}");
    let argument = pool.apply(takes_even, Even(5));
    assert!(matches!(&argument, Err(PoolError::Task(TaskError::ArgumentDecode(m))) if m == "5 is odd"), "{argument:?}");
    let mapped = pool.map(takes_even, [Even(2), Even(9)]);
    assert!(matches!(&mapped, Err(PoolError::Task(TaskError::ArgumentDecode(m))) if m == "9 is odd"), "{mapped:?}");
    assert_eq!(pool.apply(square, 5).unwrap(), 25, "the pool stays healthy");
}

fn spin(_: u64) -> u64 {
    loop {
        std::hint::spin_loop();
    }
}

/// A task past its hard time limit has its worker killed and fails with `TimedOut` soon after the deadline;
/// the other tasks finish, a new worker takes the slot, and one submission may set its own limit or none.
fn a_task_past_its_time_limit_is_stopped_and_the_others_finish() {
    let limit = Duration::from_millis(300);
    let executor =
        ExecutorBuilder::new().max_workers(2).task_timeout(limit).start_method(support::method()).build().unwrap();
    let started = Instant::now();
    let stuck = executor.submit(spin, 0).unwrap();
    let quick: Vec<_> = (0..6).map(|_| executor.submit(nap, 20).unwrap()).collect();
    for f in &quick {
        assert_eq!(f.result_timeout(Duration::from_secs(20)).unwrap(), 20);
    }
    let killed = match stuck.result_timeout(Duration::from_secs(20)) {
        Err(TaskError::TimedOut { elapsed, pid }) => {
            assert!(elapsed >= limit, "{elapsed:?}");
            let late = started.elapsed().saturating_sub(limit);
            assert!(late < Duration::from_millis(250), "the kill landed {late:?} after the deadline");
            pid
        }
        other => panic!("{other:?}"),
    };
    let pids: BTreeSet<u32> = (0..8).map(|_| executor.submit(pid_after_nap, 0).unwrap().result().unwrap()).collect();
    assert!(!pids.contains(&killed), "a new worker took the killed one's place: {pids:?}");
    // One submission's own limits: shorter, none, zero, and too large to represent.
    let short = executor.submit_with(nap, 2_000, TaskOptions::new().timeout(Duration::from_millis(100))).unwrap();
    assert!(matches!(short.result(), Err(TaskError::TimedOut { .. })));
    let unlimited = executor.submit_with(nap, 500, TaskOptions::new().no_timeout()).unwrap();
    assert_eq!(unlimited.result().unwrap(), 500, "no limit for this one, whatever the executor's");
    let zero = executor.submit_with(nap, 200, TaskOptions::new().timeout(Duration::ZERO)).unwrap();
    let zero = zero.result();
    assert!(matches!(zero, Err(TaskError::TimedOut { .. })), "{zero:?}");
    let huge = executor.submit_with(nap, 10, TaskOptions::new().timeout(Duration::MAX)).unwrap();
    assert_eq!(huge.result().unwrap(), 10);
    assert_eq!(executor.submit(square, 9).unwrap().result().unwrap(), 81, "the executor goes on");
    // A pool: the limit holds per chunk of a map.
    let pool = PoolBuilder::new()
        .processes(2)
        .task_timeout(Duration::from_millis(200))
        .start_method(support::method())
        .build()
        .unwrap();
    assert!(matches!(pool.map_chunked(spin, [1, 2, 3], 1), Err(PoolError::Task(TaskError::TimedOut { .. }))));
    let limited = pool.apply_async_options(nap, 1_000, TaskOptions::new().timeout(Duration::from_millis(50)), |_| {});
    assert!(matches!(limited.unwrap().get(), Err(TaskError::TimedOut { .. })));
    assert_eq!(pool.map(square, 1..=4).unwrap(), [1, 4, 9, 16]);
}

/// Works until 150 ms before its deadline, then reports how much time it had left (and `None` without one).
fn until_nearly_late(_: u64) -> Option<u64> {
    let task = mp_pool::current_task().expect("a pool task knows it is one");
    assert!(task.started() <= Instant::now());
    while task.time_left()? > Duration::from_millis(150) {
        std::hint::spin_loop();
    }
    Some(task.time_left()?.as_millis() as u64)
}

/// A well-behaved task sees its deadline (`current_task`) and stops before the hard limit fires.
fn a_task_sees_its_deadline_and_stops_itself() {
    assert!(mp_pool::current_task().is_none(), "not in a worker");
    let executor = ExecutorBuilder::new()
        .max_workers(1)
        .task_timeout(Duration::from_millis(600))
        .start_method(support::method())
        .build()
        .unwrap();
    let left = executor.submit(until_nearly_late, 0).unwrap().result().unwrap().unwrap();
    assert!(left <= 150, "{left}");
    let none = executor.submit_with(until_nearly_late, 0, TaskOptions::new().no_timeout()).unwrap();
    assert_eq!(none.result().unwrap(), None, "no deadline without a limit");
}

/// `cancel_running` kills a running task's worker (its other tasks go elsewhere), takes a queued one back
/// without harming the task before it, and racing completion there is exactly one outcome.
fn cancel_running_stops_a_running_task_and_spares_the_others() {
    let executor = ExecutorBuilder::new().max_workers(1).start_method(support::method()).build().unwrap();
    let running = executor.submit(spin, 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !running.running() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let cancelled_at = Instant::now();
    assert!(running.cancel_running());
    assert!(matches!(running.result_timeout(Duration::from_secs(10)), Err(TaskError::Cancelled)));
    assert!(cancelled_at.elapsed() < Duration::from_secs(2), "{:?}", cancelled_at.elapsed());
    assert!(running.cancelled());
    // Queued behind a running task (a worker holds two): only the queued one goes.
    let first = executor.submit(nap, 600).unwrap();
    let second = executor.submit(nap, 10).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(second.cancel_running());
    assert!(matches!(second.result_timeout(Duration::from_secs(10)), Err(TaskError::Cancelled)));
    assert_eq!(first.result_timeout(Duration::from_secs(10)).unwrap(), 600, "the task before it was spared");
    // Racing completion: one outcome, and `false` means it finished.
    for i in 0..20u64 {
        let f = executor.submit(nap, 2).unwrap();
        std::thread::sleep(Duration::from_millis(i % 5));
        let said = f.cancel_running();
        match f.result_timeout(Duration::from_secs(10)) {
            Ok(2) => {}
            Err(TaskError::Cancelled) => assert!(said, "cancelled though cancel_running said no"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(executor.submit(square, 4).unwrap().result().unwrap(), 16, "the executor goes on");
}

static INITIALIZED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn init_marker(_: ()) {
    INITIALIZED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether this worker ran the pool's initializer, and its pid.
fn initialized(_: u64) -> (bool, u32) {
    (INITIALIZED.load(std::sync::atomic::Ordering::SeqCst), std::process::id())
}

/// Time limits with an initializer (it runs again in the replacement) and `max_tasks_per_child`.
fn time_limits_with_initializers_and_recycled_workers() {
    let pool = PoolBuilder::new()
        .processes(2)
        .initializer(init_marker, ())
        .max_tasks_per_child(2)
        .task_timeout(Duration::from_millis(200))
        .start_method(support::method())
        .build()
        .unwrap();
    let stuck = pool.apply_async(spin, 0).unwrap();
    let quick: Vec<_> = (0..10).map(|x| pool.apply_async(square, x).unwrap()).collect();
    let killed = match stuck.get_timeout(Duration::from_secs(20)) {
        Err(TaskError::TimedOut { pid, .. }) => pid,
        other => panic!("{other:?}"),
    };
    for (x, r) in quick.iter().enumerate() {
        assert_eq!(r.get_timeout(Duration::from_secs(20)).unwrap(), (x * x) as u64);
    }
    // Every worker since, the killed one's replacement and the recycled ones, ran the initializer.
    for _ in 0..6 {
        let (ran, worker) = pool.apply(initialized, 0).unwrap();
        assert!(ran && worker != killed, "worker {worker} ran the initializer: {ran}");
    }
}

/// Keeps `mib` MiB alive (touched) for the rest of the worker's life; returns the worker's pid.
fn hog(mib: usize) -> u32 {
    let kept = vec![1u8; mib << 20];
    std::hint::black_box(&kept);
    std::mem::forget(kept);
    std::process::id()
}

/// billiard's `max_memory_per_child`: a worker whose resident memory a task left above the limit is replaced
/// after that task (whose result stands); one under it stays.
fn a_worker_past_its_memory_size_is_recycled() {
    let pool =
        PoolBuilder::new().processes(1).max_memory_per_child(96 << 20).start_method(support::method()).build().unwrap();
    let first = pool.apply(hog, 4).unwrap();
    assert_eq!(pool.apply(pid, 0).unwrap(), first, "under the limit, the worker stays");
    assert_eq!(pool.apply(hog, 128).unwrap(), first, "the task that crossed the limit keeps its result");
    let next = pool.apply(pid, 0).unwrap();
    assert_ne!(next, first, "then the worker was replaced");
    assert!(matches!(PoolBuilder::new().processes(1).max_memory_per_child(0).build(), Err(PoolError::ZeroMemory)));
}

/// A hard memory limit: a task that allocates past it fails with `MemoryExceeded` (its worker aborts on the
/// failed allocation) instead of taking the machine's memory; the pool goes on with a new worker.
fn a_worker_over_its_hard_memory_limit_fails_only_its_task() {
    let pool = PoolBuilder::new().processes(1).memory_limit(256 << 20).start_method(support::method()).build().unwrap();
    let worker = pool.apply(hog, 16).unwrap();
    match pool.apply(hog, 4096) {
        Err(PoolError::Task(TaskError::MemoryExceeded { limit, pid })) => {
            assert_eq!((limit, pid), (256 << 20, worker));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.apply(square, 3).unwrap(), 9, "a new worker takes the slot");
    assert_ne!(pool.apply(pid, 0).unwrap(), worker);
    assert!(matches!(PoolBuilder::new().processes(1).memory_limit(0).build(), Err(PoolError::ZeroMemory)));
}

/// The pids of this process's live children.
fn live_children() -> BTreeSet<u32> {
    mp_process::active_children().iter().filter_map(|c| c.pid()).collect()
}

/// Waits until `done()` holds, for at most ten seconds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// With an idle timeout, workers that wait that long for a task exit (an idle executor holds no process), and
/// the next submission starts them again.
fn idle_workers_exit_and_come_back_with_work() {
    let executor = ExecutorBuilder::new()
        .max_workers(2)
        .idle_timeout(Duration::from_millis(200))
        .start_method(support::method())
        .build()
        .unwrap();
    let futures: Vec<_> = (0..4).map(|_| executor.submit(pid_after_nap, 0).unwrap()).collect();
    let first: BTreeSet<u32> = futures.into_iter().map(|f| f.result().unwrap()).collect();
    assert!(first.iter().all(|p| live_children().contains(p)));
    eventually("idle workers exit", || first.iter().all(|p| !live_children().contains(p)));
    let futures: Vec<_> = (0..4).map(|x| executor.submit(square, x).unwrap()).collect();
    let results: Vec<u64> = futures.into_iter().map(|f| f.result_timeout(Duration::from_secs(20)).unwrap()).collect();
    assert_eq!(results, [0, 1, 4, 9], "work brings workers back");
    let again = executor.submit(pid, 0).unwrap().result().unwrap();
    assert!(!first.contains(&again), "a new worker");
    assert_eq!(executor.max_workers(), 2);
}

/// `resize` grows an executor at once and shrinks it as its surplus workers finish what they hold.
fn an_executor_resizes_in_place() {
    let executor = ExecutorBuilder::new().max_workers(1).start_method(support::method()).build().unwrap();
    let before = live_children().len();
    executor.resize(3).unwrap();
    assert_eq!(executor.max_workers(), 3);
    let futures: Vec<_> = (0..3).map(|_| executor.submit(nap_then_pid, 300).unwrap()).collect();
    let pids: BTreeSet<u32> = futures.into_iter().map(|f| f.result().unwrap()).collect();
    assert_eq!(pids.len(), 3, "three workers ran the three tasks side by side: {pids:?}");
    executor.resize(1).unwrap();
    eventually("the surplus workers exit", || live_children().len() <= before);
    let after: BTreeSet<u32> = (0..4).map(|_| executor.submit(pid, 0).unwrap().result().unwrap()).collect();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(matches!(executor.resize(0), Err(PoolError::ZeroProcesses)));
    executor.shutdown(true, false);
    assert!(matches!(executor.resize(2), Err(PoolError::Closed)));
}

fn nap_then_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// loky's `get_reusable_executor`: one per process, resized when asked for another size, replaced (without
/// blocking) when asked for another idle timeout.
fn the_reusable_executor_is_one_per_process() {
    let idle = Duration::from_secs(30);
    let a = mp_pool::get_reusable_executor(1, idle).unwrap();
    let b = mp_pool::get_reusable_executor(1, idle).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let c = mp_pool::get_reusable_executor(2, idle).unwrap();
    assert!(Arc::ptr_eq(&a, &c) && c.max_workers() == 2, "resized in place");
    let pending = a.submit(nap, 300).unwrap();
    let started = Instant::now();
    let d = mp_pool::get_reusable_executor(2, Duration::from_secs(5)).unwrap();
    assert!(!Arc::ptr_eq(&a, &d), "another idle timeout: a new executor");
    assert!(started.elapsed() < Duration::from_millis(250), "replacing did not wait for the old one");
    assert_eq!(pending.result().unwrap(), 300, "the old one finishes what it holds");
    assert_eq!(d.submit(square, 6).unwrap().result().unwrap(), 36);
    d.shutdown(true, false);
    let e = mp_pool::get_reusable_executor(2, Duration::from_secs(5)).unwrap();
    assert!(!Arc::ptr_eq(&d, &e), "after shutdown, a new one");
    assert_eq!(e.submit(square, 7).unwrap().result().unwrap(), 49);
}

/// The job queued behind a task that times out on the same worker is re-dispatched, not lost; and a worker that
/// dies on its own before the deadline reports `WorkerLost`, not a time-out.
fn a_time_limit_spares_the_job_queued_behind_and_yields_to_a_death() {
    let executor = ExecutorBuilder::new()
        .max_workers(1)
        .task_timeout(Duration::from_millis(300))
        .start_method(support::method())
        .build()
        .unwrap();
    let stuck = executor.submit(spin, 0).unwrap();
    let behind = executor.submit(nap, 10).unwrap(); // in the same worker's queue (it holds two)
    assert!(matches!(stuck.result_timeout(Duration::from_secs(20)), Err(TaskError::TimedOut { .. })));
    assert_eq!(behind.result_timeout(Duration::from_secs(20)).unwrap(), 10, "re-dispatched to the replacement");
    let worker = executor.submit(pid, 0).unwrap().result().unwrap();
    let dying = executor.submit(nap, 5_000).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: kill(2) with a pid and a signal number.
    assert_eq!(unsafe { libc::kill(worker as i32, libc::SIGKILL) }, 0);
    match dying.result_timeout(Duration::from_secs(20)) {
        Err(TaskError::WorkerLost { pid, .. }) => assert_eq!(pid, worker),
        other => panic!("{other:?}"),
    }
    assert_eq!(executor.submit(square, 2).unwrap().result().unwrap(), 4);
}
