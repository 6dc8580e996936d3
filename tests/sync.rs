//! mp-sync across real processes, under the start method `cargo xtask test` selects.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use mp_process::{Handle, Process};
use mp_shm::RawValue;
use mp_sync::{
    Array, Barrier, BarrierAction, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, SyncError, Value,
};
use support::eventually;

fn main() {
    mp_process::init();
    support::run(support::cases![
        lock_excludes_across_processes,
        lock_misuse_is_an_error,
        dead_lock_holder_does_not_deadlock,
        dead_rlock_holder_does_not_deadlock,
        parked_waiter_learns_of_a_dead_holder,
        waiter_killed_while_parked_leaves_the_lock_working,
        timed_and_blocking_waiters_mixed_stay_exact,
        rlock_counts_and_rejects_other_owners,
        semaphore_limits_concurrency,
        bounded_semaphore_rejects_over_release,
        condition_wakes_waiters,
        condition_timeouts_and_predicates,
        event_across_processes,
        barrier_passes_and_indexes,
        barrier_breaks_on_timeout_abort_and_reset,
        value_counter_classics,
        array_of_squares,
        objects_of_the_wrong_kind_are_refused,
        extreme_timeouts,
        dropped_objects_free_their_memory,
        objects_in_transit_outlive_their_senders,
        raw_objects_names_and_shared_locks,
        a_party_that_dies_breaks_the_barrier,
        a_barriers_default_timeout_travels,
        a_notification_reaches_the_waiters_of_its_time,
        dead_and_refused_waiters_leave_no_count,
        a_childs_handles_keep_objects_alive_after_the_parent_drops_its_own,
    ]);
}

fn add_under_lock((lock, counter, n): (Lock, RawValue<u64>, u32)) {
    for _ in 0..n {
        let _guard = lock.acquire().unwrap();
        // Deliberately not atomic: only the lock keeps this exact.
        counter.set(counter.get() + 1);
    }
}

fn lock_excludes_across_processes() {
    let lock = Lock::new().unwrap();
    let counter = RawValue::new(0u64).unwrap();
    let mut workers: Vec<Process<()>> = (0..3)
        .map(|_| Process::new(add_under_lock, (lock.try_clone().unwrap(), counter.try_clone().unwrap(), 20_000)))
        .collect();
    for p in &mut workers {
        p.start().unwrap();
    }
    for p in &mut workers {
        p.join().unwrap();
    }
    assert_eq!(counter.get(), 60_000);
    counter.unlink().unwrap();
}

fn try_lock_elsewhere(lock: Lock) -> bool {
    lock.try_acquire().unwrap().is_some()
}

fn lock_misuse_is_an_error() {
    let lock = Lock::new().unwrap();
    assert!(matches!(lock.release(), Err(SyncError::NotHeld)));
    let guard = lock.acquire().unwrap();
    assert!(!guard.previous_owner_died());
    assert!(lock.is_held());
    assert!(matches!(lock.acquire(), Err(SyncError::WouldDeadlock)));
    assert!(lock.try_acquire().unwrap().is_none());
    let mut p = Process::new(try_lock_elsewhere, lock.try_clone().unwrap());
    p.start().unwrap();
    assert!(!p.join().unwrap(), "another process must not get a held lock");
    let start = Instant::now();
    let other = std::thread::scope(|s| {
        s.spawn(|| lock.acquire_timeout(Duration::from_millis(100)).unwrap().is_none()).join().unwrap()
    });
    assert!(other && start.elapsed() >= Duration::from_millis(100));
    guard.leak();
    lock.release().unwrap();
    assert!(matches!(lock.release(), Err(SyncError::NotHeld)));
    let mut p = Process::new(try_lock_elsewhere, lock.try_clone().unwrap());
    p.start().unwrap();
    assert!(p.join().unwrap());
}

/// Takes the lock, says so through the pipe, and sleeps holding it until killed.
fn hold_forever((lock, pipe): (Lock, Handle)) {
    lock.acquire().unwrap().leak();
    File::from(pipe).write_all(b"held").unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn hold_rlock_forever((lock, pipe): (RLock, Handle)) {
    lock.acquire().unwrap().leak();
    lock.acquire().unwrap().leak();
    File::from(pipe).write_all(b"held").unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn kill_after_signal<R>(mut p: Process<R>, mut reader: std::io::PipeReader)
where
    R: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    p.start().unwrap();
    let mut buf = [0u8; 4];
    reader.read_exact(&mut buf).unwrap();
    p.kill().unwrap();
    assert!(p.join().is_err());
}

fn dead_lock_holder_does_not_deadlock() {
    let lock = Lock::new().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    kill_after_signal(
        Process::new(hold_forever, (lock.try_clone().unwrap(), Handle::from(OwnedFd::from(writer)))),
        reader,
    );
    let guard = lock.acquire_timeout(Duration::from_secs(10)).unwrap().expect("the lock must come free");
    assert!(guard.previous_owner_died());
    drop(guard);
    let again = lock.acquire().unwrap();
    assert!(!again.previous_owner_died(), "the lock is healthy again");
}

fn dead_rlock_holder_does_not_deadlock() {
    let lock = RLock::new().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    kill_after_signal(
        Process::new(hold_rlock_forever, (lock.try_clone().unwrap(), Handle::from(OwnedFd::from(writer)))),
        reader,
    );
    let guard = lock.acquire_timeout(Duration::from_secs(10)).unwrap().expect("the lock must come free");
    assert!(guard.previous_owner_died());
    assert_eq!(lock.depth(), 1, "the dead owner's levels do not carry over");
    drop(guard);
    assert_eq!(lock.depth(), 0);
    assert!(lock.try_acquire().unwrap().is_some());
}

/// The waiter is asleep in `acquire_timeout` when the holder is killed: it must still be told, though the
/// kernel wakes nobody (mp's waiters do not sleep on glibc's "has waiters" value), by looking again itself.
fn parked_waiter_learns_of_a_dead_holder() {
    let lock = Lock::new().unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut holder = Process::new(hold_forever, (lock.try_clone().unwrap(), Handle::from(OwnedFd::from(writer))));
    holder.start().unwrap();
    reader.read_exact(&mut [0u8; 4]).unwrap();
    let pid = holder.pid().unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signals our own child, which `holder` has not reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    });
    let guard = lock.acquire_timeout(Duration::from_secs(20)).unwrap().expect("the lock must come free");
    assert!(guard.previous_owner_died());
    drop(guard);
    killer.join().unwrap();
    assert!(holder.join().is_err());
    assert!(!lock.acquire().unwrap().previous_owner_died());
}

fn acquire_and_report((lock, pipe): (Lock, Handle)) {
    File::from(pipe).write_all(b"wait").unwrap();
    drop(lock.acquire().unwrap());
}

/// A waiter killed while asleep leaves its registration behind; unlocks must go on working (and the lock
/// must stay exact) with it there.
fn waiter_killed_while_parked_leaves_the_lock_working() {
    let lock = Lock::new().unwrap();
    let counter = RawValue::new(0u64).unwrap();
    let guard = lock.acquire().unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut waiter = Process::new(acquire_and_report, (lock.try_clone().unwrap(), Handle::from(OwnedFd::from(writer))));
    waiter.start().unwrap();
    reader.read_exact(&mut [0u8; 4]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    waiter.kill().unwrap();
    assert!(waiter.join().is_err());
    drop(guard);
    // More unlocks than it takes to presume the dead registration stale, with live waiters coming and going.
    let mut workers: Vec<Process<()>> = (0..2)
        .map(|_| Process::new(add_under_lock, (lock.try_clone().unwrap(), counter.try_clone().unwrap(), 5_000)))
        .collect();
    for p in &mut workers {
        p.start().unwrap();
    }
    for _ in 0..5_000 {
        let _guard = lock.acquire().unwrap();
        counter.set(counter.get() + 1);
    }
    for p in &mut workers {
        p.join().unwrap();
    }
    assert_eq!(counter.get(), 15_000);
    assert!(!lock.acquire().unwrap().previous_owner_died());
    counter.unlink().unwrap();
}

/// Counts how many of `n` short timed attempts got the lock, adding one for each under it; the rest use `acquire`.
fn add_timed_or_blocking((lock, counter, n): (Lock, RawValue<u64>, u32)) -> u64 {
    let mut timed = 0;
    for i in 0..n {
        let guard = if i % 2 == 0 {
            match lock.acquire_timeout(Duration::from_micros(u64::from(i % 50))).unwrap() {
                Some(guard) => {
                    timed += 1;
                    guard
                }
                None => continue,
            }
        } else {
            lock.acquire().unwrap()
        };
        counter.set(counter.get() + 1);
        drop(guard);
    }
    timed + u64::from(n / 2)
}

/// Waiters that give up (timeouts down to zero) and waiters that sleep, four processes at once: every
/// increment made under the lock is counted, and none is lost.
fn timed_and_blocking_waiters_mixed_stay_exact() {
    let lock = Lock::new().unwrap();
    let counter = RawValue::new(0u64).unwrap();
    let mut workers: Vec<Process<u64>> = (0..4)
        .map(|_| Process::new(add_timed_or_blocking, (lock.try_clone().unwrap(), counter.try_clone().unwrap(), 20_000)))
        .collect();
    for p in &mut workers {
        p.start().unwrap();
    }
    let done: u64 = workers.iter_mut().map(|p| p.join().unwrap()).sum();
    assert!(done >= 4 * 10_000, "every blocking acquire succeeds");
    assert_eq!(counter.get(), done);
    counter.unlink().unwrap();
}

fn release_elsewhere(lock: RLock) -> String {
    format!("{:?}", lock.release())
}

fn rlock_counts_and_rejects_other_owners() {
    let lock = RLock::new().unwrap();
    let a = lock.acquire().unwrap();
    let b = lock.acquire().unwrap();
    assert_eq!(lock.depth(), 2);
    let mut p = Process::new(release_elsewhere, lock.try_clone().unwrap());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), "Err(NotHeld)");
    drop(b);
    assert_eq!(lock.depth(), 1);
    drop(a);
    assert_eq!(lock.depth(), 0);
    assert!(matches!(lock.release(), Err(SyncError::NotHeld)));
}

fn enter_room((sem, inside, most): (Semaphore, RawValue<u32>, RawValue<u32>)) {
    let _unit = sem.acquire();
    let now = inside.fetch_add(1) + 1;
    let mut seen = most.load();
    while now > seen {
        match most.compare_exchange(seen, now) {
            Ok(_) => break,
            Err(actual) => seen = actual,
        }
    }
    std::thread::sleep(Duration::from_millis(30));
    inside.fetch_add(u32::MAX); // minus one
}

fn semaphore_limits_concurrency() {
    let sem = Semaphore::new(3).unwrap();
    let inside = RawValue::new(0u32).unwrap();
    let most = RawValue::new(0u32).unwrap();
    let mut people: Vec<Process<()>> = (0..10)
        .map(|_| {
            Process::new(enter_room, (sem.try_clone().unwrap(), inside.try_clone().unwrap(), most.try_clone().unwrap()))
        })
        .collect();
    for p in &mut people {
        p.start().unwrap();
    }
    for p in &mut people {
        p.join().unwrap();
    }
    assert_eq!(most.get(), 3);
    assert_eq!(inside.get(), 0);
    assert_eq!(sem.get_value(), 3);
    let held: Vec<_> = (0..3).map(|_| sem.acquire()).collect();
    assert_eq!(sem.get_value(), 0);
    assert!(sem.acquire_timeout(Duration::from_millis(50)).is_none());
    drop(held);
    sem.release_n(2).unwrap();
    assert_eq!(sem.get_value(), 5);
    inside.unlink().unwrap();
    most.unlink().unwrap();
}

fn bounded_semaphore_rejects_over_release() {
    let sem = BoundedSemaphore::new(2).unwrap();
    assert!(matches!(sem.release(), Err(SyncError::TooManyReleases)));
    assert_eq!(sem.get_value(), 2);
    sem.acquire().leak();
    assert_eq!(sem.get_value(), 1);
    sem.release().unwrap();
    assert!(matches!(sem.release(), Err(SyncError::TooManyReleases)));
    assert_eq!(sem.get_value(), 2);
    assert!(matches!(Semaphore::open(sem.name()), Err(SyncError::WrongKind { .. })));
}

fn wait_for_flag((cond, flag, woken): (Condition, RawValue<u32>, RawValue<u32>)) -> bool {
    let mut guard = cond.acquire().unwrap();
    let ok = cond.wait_for(&mut guard, || flag.get() != 0, Some(Duration::from_secs(20))).unwrap();
    woken.fetch_add(1);
    ok
}

fn condition_wakes_waiters() {
    let cond = Condition::new().unwrap();
    let flag = RawValue::new(0u32).unwrap();
    let woken = RawValue::new(0u32).unwrap();
    let mut waiters: Vec<Process<bool>> = (0..3)
        .map(|_| {
            Process::new(
                wait_for_flag,
                (cond.try_clone().unwrap(), flag.try_clone().unwrap(), woken.try_clone().unwrap()),
            )
        })
        .collect();
    for p in &mut waiters {
        p.start().unwrap();
    }
    // Wait until all three are parked, then let exactly one through.
    std::thread::sleep(Duration::from_millis(300));
    {
        let guard = cond.acquire().unwrap();
        flag.set(1);
        cond.notify(&guard, 1).unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || woken.get() >= 1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(woken.get(), 1, "notify(1) wakes at most one waiter");
    {
        let guard = cond.acquire().unwrap();
        cond.notify_all(&guard).unwrap();
    }
    for p in &mut waiters {
        assert!(p.join().unwrap());
    }
    assert_eq!(woken.get(), 3);
    flag.unlink().unwrap();
    woken.unlink().unwrap();
}

fn condition_timeouts_and_predicates() {
    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let mut guard = cond.acquire().unwrap();
    let start = Instant::now();
    assert!(!cond.wait_timeout(&mut guard, Duration::from_millis(100)).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(cond.lock().is_held(), "the lock is held again after a timed-out wait");
    let mut calls = 0;
    assert!(
        !cond
            .wait_for(
                &mut guard,
                || {
                    calls += 1;
                    false
                },
                Some(Duration::from_millis(50))
            )
            .unwrap()
    );
    assert!(calls >= 2);
    assert!(cond.wait_for(&mut guard, || true, Some(Duration::ZERO)).unwrap());
    // A guard of another condition's lock is refused.
    let other = Condition::with_lock(Lock::new().unwrap()).unwrap();
    assert!(matches!(other.notify(&guard, 1), Err(SyncError::ForeignGuard)));
    assert!(matches!(other.wait_timeout(&mut guard, Duration::ZERO), Err(SyncError::ForeignGuard)));
    drop(guard);
    let guard = other.acquire().unwrap();
    other.notify_all(&guard).unwrap();
}

fn wait_for_event(event: Event) -> (bool, bool) {
    let first = event.wait_timeout(Duration::from_millis(20));
    (first, event.wait_timeout(Duration::from_secs(20)))
}

fn event_across_processes() {
    let event = Event::new().unwrap();
    assert!(!event.is_set());
    // Several sleepers: one `set` must wake them all.
    let mut waiters: Vec<Process<(bool, bool)>> =
        (0..3).map(|_| Process::new(wait_for_event, event.try_clone().unwrap())).collect();
    for p in &mut waiters {
        p.start().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    event.set();
    for p in &mut waiters {
        assert_eq!(p.join_timeout(Duration::from_secs(10)).unwrap(), Some((false, true)));
    }
    assert!(event.is_set());
    event.clear();
    assert!(!event.wait_timeout(Duration::from_millis(10)));
}

/// Counts passes in a shared counter whose name the test publishes as an inherited setting.
struct CountPasses;

impl BarrierAction for CountPasses {
    fn run() {
        let name = mp_process::inherited("test.passes").expect("published by the test");
        RawValue::<u32>::open(&name).unwrap().fetch_add(1);
    }
}

fn meet(barrier: Barrier<CountPasses>) -> (u32, u32) {
    let first = barrier.wait_timeout(Duration::from_secs(20)).unwrap();
    let second = barrier.wait_timeout(Duration::from_secs(20)).unwrap();
    (first, second)
}

fn barrier_passes_and_indexes() {
    let passes = RawValue::new(0u32).unwrap();
    mp_process::set_inherited("test.passes", Some(passes.name()));
    let barrier = Barrier::<CountPasses>::with_action(3).unwrap();
    let mut parties: Vec<Process<(u32, u32)>> =
        (0..2).map(|_| Process::new(meet, barrier.try_clone().unwrap())).collect();
    for p in &mut parties {
        p.start().unwrap();
    }
    let mine = (barrier.wait().unwrap(), barrier.wait().unwrap());
    let mut firsts = vec![mine.0];
    let mut seconds = vec![mine.1];
    for p in &mut parties {
        let (a, b) = p.join().unwrap();
        firsts.push(a);
        seconds.push(b);
    }
    firsts.sort();
    seconds.sort();
    assert_eq!(firsts, [0, 1, 2]);
    assert_eq!(seconds, [0, 1, 2]);
    assert_eq!(passes.get(), 2, "the action runs once per pass");
    assert_eq!(barrier.parties(), 3);
    assert_eq!(barrier.n_waiting(), 0);
    passes.unlink().unwrap();
}

fn wait_long(barrier: Barrier) -> String {
    format!("{:?}", barrier.wait_timeout(Duration::from_secs(20)))
}

fn barrier_breaks_on_timeout_abort_and_reset() {
    assert!(matches!(Barrier::new(0), Err(SyncError::ZeroParties)));
    let barrier = Barrier::new(2).unwrap();
    assert!(matches!(barrier.wait_timeout(Duration::from_millis(50)), Err(SyncError::BrokenBarrier)));
    assert!(barrier.broken());
    assert!(matches!(barrier.wait(), Err(SyncError::BrokenBarrier)));
    barrier.reset();
    assert!(!barrier.broken());
    // abort wakes a waiting party with BrokenBarrier.
    let mut p = Process::new(wait_long, barrier.try_clone().unwrap());
    p.start().unwrap();
    assert!(eventually(Duration::from_secs(10), || barrier.n_waiting() == 1));
    barrier.abort();
    assert_eq!(p.join().unwrap(), "Err(BrokenBarrier)");
    // reset while a party waits: it gets BrokenBarrier, and the barrier works again.
    barrier.reset();
    let mut p = Process::new(wait_long, barrier.try_clone().unwrap());
    p.start().unwrap();
    assert!(eventually(Duration::from_secs(10), || barrier.n_waiting() == 1));
    barrier.reset();
    assert_eq!(p.join().unwrap(), "Err(BrokenBarrier)");
    let mut p = Process::new(wait_long, barrier.try_clone().unwrap());
    p.start().unwrap();
    let index = barrier.wait_timeout(Duration::from_secs(20)).unwrap();
    let theirs = p.join().unwrap();
    assert!(theirs == "Ok(0)" || theirs == "Ok(1)");
    assert!(index <= 1);
}

fn increment_value((value, n): (Value<u64>, u32)) {
    for _ in 0..n {
        *value.get_lock().unwrap() += 1;
    }
}

fn value_counter_classics() {
    // The tutorial: 10 processes each add 1 under get_lock().
    let counter = Value::new(0u64).unwrap();
    let mut ps: Vec<Process<()>> =
        (0..10).map(|_| Process::new(increment_value, (counter.try_clone().unwrap(), 1))).collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &mut ps {
        p.join().unwrap();
    }
    assert_eq!(counter.value().unwrap(), 10);
    // 2 processes x 100 000 increments.
    counter.set_value(0).unwrap();
    let mut ps: Vec<Process<()>> =
        (0..2).map(|_| Process::new(increment_value, (counter.try_clone().unwrap(), 100_000))).collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &mut ps {
        p.join().unwrap();
    }
    assert_eq!(counter.value().unwrap(), 200_000);
}

fn square_in_place((array, index): (Array<i64>, usize)) {
    let locked = array.get_lock().unwrap();
    let v = locked.get(index).unwrap();
    locked.set(index, v * v).unwrap();
}

fn array_of_squares() {
    let array = Array::from_slice(&[0i64, 1, 2, 3, 4]).unwrap();
    let mut ps: Vec<Process<()>> =
        (0..5).map(|i| Process::new(square_in_place, (array.try_clone().unwrap(), i))).collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &mut ps {
        p.join().unwrap();
    }
    assert_eq!(array.to_vec().unwrap(), [0, 1, 4, 9, 16]);
    assert_eq!(array.get(5).unwrap(), None);
    assert!(matches!(array.set(5, 1), Err(SyncError::Shm(_))));
}

fn objects_of_the_wrong_kind_are_refused() {
    let sem = Semaphore::new(1).unwrap();
    let lock = Lock::new().unwrap();
    assert!(matches!(Lock::open(sem.name()), Err(SyncError::WrongKind { expected: "Lock", .. })));
    assert!(matches!(RLock::open(lock.name()), Err(SyncError::WrongKind { expected: "RLock", .. })));
    assert!(matches!(Event::open(lock.name()), Err(SyncError::WrongKind { .. })));
    assert!(matches!(Barrier::<mp_sync::NoAction>::open("mp_no_such_barrier"), Err(SyncError::Shm(_))));
    let plain = mp_shm::SharedMemory::create(128).unwrap();
    assert!(matches!(Lock::open(plain.name()), Err(SyncError::WrongKind { .. })));
    plain.unlink().unwrap();
}

fn extreme_timeouts() {
    let lock = Lock::new().unwrap();
    // An enormous timeout is no deadline, not an overflow.
    assert!(lock.acquire_timeout(Duration::MAX).unwrap().is_some());
    let guard = lock.acquire_timeout(Duration::ZERO).unwrap();
    assert!(guard.is_some(), "zero timeout still takes a free lock");
    drop(guard);
    // Nanosecond parts that overflow a second when added to now must not fail.
    for ns in [999_999_999u32, 1, 500_000_000] {
        assert!(lock.acquire_timeout(Duration::new(0, ns)).unwrap().is_some());
    }
    let event = Event::new().unwrap();
    assert!(!event.wait_timeout(Duration::ZERO));
    event.set();
    assert!(event.wait_timeout(Duration::MAX));
    let sem = Semaphore::new(0).unwrap();
    assert!(sem.acquire_timeout(Duration::ZERO).is_none());
    assert!(sem.acquire_timeout(Duration::new(0, 999_999_999)).is_none());
}

fn shm_entries() -> usize {
    std::fs::read_dir("/dev/shm").map(|d| d.count()).unwrap_or(0)
}

fn use_everything((lock, value, event, sem): (Lock, Value<u64>, Event, Semaphore)) -> u64 {
    drop(lock.acquire().unwrap());
    *value.get_lock().unwrap() += 1;
    event.set();
    drop(sem.acquire());
    value.value().unwrap()
}

/// A long-running program that makes and drops objects does not accumulate shared memory: the last handle,
/// in whichever process, removes the segment.
fn dropped_objects_free_their_memory() {
    let before = shm_entries();
    for round in 0..50u64 {
        let (lock, value, event, sem) =
            (Lock::new().unwrap(), Value::new(round).unwrap(), Event::new().unwrap(), Semaphore::new(1).unwrap());
        let _also =
            (RLock::new().unwrap(), Condition::new().unwrap(), Barrier::new(2).unwrap(), Array::<u8>::new(3).unwrap());
        if round % 10 == 0 {
            let mut p = Process::new(
                use_everything,
                (
                    lock.try_clone().unwrap(),
                    value.try_clone().unwrap(),
                    event.try_clone().unwrap(),
                    sem.try_clone().unwrap(),
                ),
            );
            p.start().unwrap();
            assert_eq!(p.join().unwrap(), round + 1);
        }
    }
    assert_eq!(shm_entries(), before, "every segment went with its last handle");
}

fn try_lock_and_bump((lock, value): (Lock, Value<u32>)) -> bool {
    std::thread::sleep(Duration::from_millis(100)); // the parent has dropped everything by now
    *value.get_lock().unwrap() += 1;
    lock.try_acquire().unwrap().is_some()
}

fn objects_in_transit_outlive_their_senders() {
    let before = shm_entries();
    let (lock, value) = (Lock::new().unwrap(), Value::new(41u32).unwrap());
    let name = value.try_clone().unwrap();
    let mut p = Process::new(try_lock_and_bump, (lock, value));
    p.start().unwrap(); // under spawn and forkserver the child attaches by name later: in transit until then
    assert!(p.join().unwrap());
    assert_eq!(name.value().unwrap(), 42);
    drop(name);
    assert_eq!(shm_entries(), before);
}

/// In the child: writes through the raw object (no lock), then reports what it sees and whether the shared
/// lock is the one it holds through the other value.
fn use_raw_and_shared((value, other, array): (Value<u32>, Value<u32>, Array<u16>)) -> (u32, bool, Vec<u16>, String) {
    value.get_obj().set(77);
    array.get_obj().set(1, 9).unwrap();
    let held = {
        let _guard = value.lock().acquire().unwrap();
        other.lock().is_held()
    };
    (other.value().unwrap(), held, array.to_vec().unwrap(), value.name().to_owned())
}

/// `get_obj` is the raw shared object (what the child writes through it, the parent reads), `name()` names the
/// segment the other side attaches to, and two values made on one lock share it in every process.
fn raw_objects_names_and_shared_locks() {
    let lock = RLock::new().unwrap();
    let value = Value::with_lock(1u32, lock.try_clone().unwrap()).unwrap();
    let other = Value::with_lock(5u32, lock).unwrap();
    let array = Array::<u16>::with_lock(3, RLock::new().unwrap()).unwrap();
    assert!(!value.name().is_empty() && value.name() != array.name());
    let name = value.name().to_owned();
    let mut p = Process::new(
        use_raw_and_shared,
        (value.try_clone().unwrap(), other.try_clone().unwrap(), array.try_clone().unwrap()),
    );
    p.start().unwrap();
    let (seen_other, held, seen_array, child_name) = p.join().unwrap();
    assert_eq!((seen_other, held), (5, true), "the two values share one lock in the child too");
    assert_eq!(seen_array, [0, 9, 0]);
    assert_eq!(child_name, name, "the child attached to the same segment");
    assert_eq!(value.value().unwrap(), 77, "written through get_obj in the child");
    assert_eq!(array.get(1).unwrap(), Some(9));
}

/// Waits on the barrier, reporting on `pipe` that it is about to; returns what the wait gave.
fn wait_and_report((barrier, pipe): (Barrier, Handle)) -> Result<u32, String> {
    File::from(pipe).write_all(b"w").unwrap();
    barrier.wait_timeout(Duration::from_secs(30)).map_err(|e| e.to_string())
}

/// Starts a party that waits on `barrier`; returns it once it is waiting.
fn waiting_party(barrier: &Barrier) -> Process<Result<u32, String>> {
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut p = Process::new(wait_and_report, (barrier.try_clone().unwrap(), Handle::from(OwnedFd::from(writer))));
    p.start().unwrap();
    let mut byte = [0u8; 1];
    reader.read_exact(&mut byte).unwrap();
    assert!(eventually(Duration::from_secs(5), || barrier.n_waiting() >= 1));
    p
}

/// A party killed while it waits breaks the barrier: the others waiting learn of it within a bounded time
/// (instead of their timeout, or never), and one arriving last does not pass one party short.
fn a_party_that_dies_breaks_the_barrier() {
    // Two wait, one is killed: the survivor is woken broken, well before its 30 s timeout.
    let barrier = Barrier::new(3).unwrap();
    let mut victim = waiting_party(&barrier);
    let mut survivor = waiting_party(&barrier);
    assert!(eventually(Duration::from_secs(5), || barrier.n_waiting() == 2));
    victim.kill().unwrap();
    let _ = victim.join();
    let started = Instant::now();
    let outcome = survivor.join_timeout(Duration::from_secs(10)).unwrap().expect("the survivor is not stranded");
    assert!(outcome.is_err_and(|e| e.contains("broken")), "the survivor was told the barrier broke");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(barrier.broken());
    assert_eq!(barrier.n_waiting(), 0, "0 while broken, as CPython's");
    // Barrier(2): the one waiting party is killed; the last to arrive does not pass alone.
    barrier.reset();
    let pair = Barrier::new(2).unwrap();
    let mut lone = waiting_party(&pair);
    lone.kill().unwrap();
    let _ = lone.join();
    assert!(matches!(pair.wait_timeout(Duration::from_secs(5)), Err(SyncError::BrokenBarrier)));
    // Once reset, it works again.
    pair.reset();
    let mut partner = waiting_party(&pair);
    assert_eq!(pair.wait_timeout(Duration::from_secs(10)).unwrap() + partner.join().unwrap().unwrap(), 1);
}

/// A default timeout given at creation is the child's too.
fn a_barriers_default_timeout_travels() {
    let barrier = Barrier::with_timeout(2, Duration::from_millis(200)).unwrap();
    assert_eq!(barrier.timeout(), Some(Duration::from_millis(200)));
    let mut p =
        Process::new(|b: Barrier| (b.timeout(), b.wait().map_err(|e| e.to_string())), barrier.try_clone().unwrap());
    let started = Instant::now();
    p.start().unwrap();
    let (timeout, outcome) = p.join().unwrap();
    assert_eq!(timeout, Some(Duration::from_millis(200)));
    assert!(outcome.is_err_and(|e| e.contains("broken")), "nobody else came: the default timeout broke it");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(barrier.broken());
}

/// Takes the condition's lock, says so on `pipe` (the lock is released only once the wait has begun), waits.
fn wait_on_condition((cond, pipe, timeout_ms): (Condition, Handle, u64)) -> bool {
    let mut guard = cond.acquire().unwrap();
    File::from(pipe).write_all(b"w").unwrap();
    cond.wait_timeout(&mut guard, Duration::from_millis(timeout_ms)).unwrap()
}

/// A child waiting on `cond`, once it is in its wait (the parent could take the lock).
fn waiter(cond: &Condition, timeout_ms: u64) -> Process<bool> {
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut p =
        Process::new(wait_on_condition, (cond.try_clone().unwrap(), Handle::from(OwnedFd::from(writer)), timeout_ms));
    p.start().unwrap();
    let mut byte = [0u8; 1];
    reader.read_exact(&mut byte).unwrap();
    drop(cond.acquire().unwrap()); // taken once the child's wait has released it
    p
}

fn signal(p: &Process<bool>, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(p.pid().unwrap() as i32, sig) };
}

/// `notify` is for the waiters waiting when it is called: a waiter paused (SIGSTOP) through the notification
/// still gets it, and the notifier's own wait right after does not take it.
fn a_notification_reaches_the_waiters_of_its_time() {
    let cond = Condition::new().unwrap();
    let mut w = waiter(&cond, 20_000);
    signal(&w, libc::SIGSTOP);
    {
        let mut guard = cond.acquire().unwrap();
        cond.notify(&guard, 1).unwrap();
        assert!(
            !cond.wait_timeout(&mut guard, Duration::from_millis(200)).unwrap(),
            "the notifier took the notification"
        );
    }
    signal(&w, libc::SIGCONT);
    assert_eq!(w.join_timeout(Duration::from_secs(10)).unwrap(), Some(true), "the paused waiter lost its wake-up");
}

/// A waiter killed while it waits, and a wait refused with `NotHeld`, leave no waiter counted: a later
/// `notify_all` gives the next waiter nothing, so its wait times out instead of returning "notified" at once.
fn dead_and_refused_waiters_leave_no_count() {
    let cond = Condition::new().unwrap();
    let mut dead = waiter(&cond, 20_000);
    dead.kill().unwrap();
    let _ = dead.join();
    {
        let mut guard = cond.acquire().unwrap();
        // A refused wait: the lock was released behind the guard's back.
        cond.lock().release().unwrap();
        assert!(matches!(cond.wait_timeout(&mut guard, Duration::from_millis(10)), Err(SyncError::NotHeld)));
        std::mem::forget(guard); // its lock is released already
    }
    let mut guard = cond.acquire().unwrap();
    cond.notify_all(&guard).unwrap();
    let started = Instant::now();
    assert!(!cond.wait_timeout(&mut guard, Duration::from_millis(200)).unwrap(), "a phantom waiter's wake-up");
    assert!(started.elapsed() >= Duration::from_millis(150));
    // And a live waiter is still woken by one notify.
    drop(guard);
    let mut w = waiter(&cond, 20_000);
    cond.notify(&cond.acquire().unwrap(), 1).unwrap();
    assert_eq!(w.join_timeout(Duration::from_secs(10)).unwrap(), Some(true));
}

fn segment_exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// In the child: waits until the parent has dropped its handles (`pipe`), then clones and uses its own.
fn use_after_parent_dropped((lock, value, raw, pipe): (Lock, Value<u64>, RawValue<u64>, Handle)) -> (u64, u64) {
    let mut byte = [0u8; 1];
    File::from(pipe).read_exact(&mut byte).unwrap();
    let lock = lock.try_clone().expect("the lock is still there");
    drop(lock.acquire().unwrap());
    *value.try_clone().expect("the value is still there").get_lock().unwrap() += 1;
    raw.set(raw.get() + 1);
    (value.value().unwrap(), raw.get())
}

/// A child's handles keep their objects alive under every start method, a forked child's in-memory copies
/// included: the parent may drop its own at once after `start`. Once the child has ended too, the objects
/// are gone (the child released what it still held).
fn a_childs_handles_keep_objects_alive_after_the_parent_drops_its_own() {
    let (lock, value, raw) = (Lock::new().unwrap(), Value::new(41u64).unwrap(), RawValue::new_for_tree(1u64).unwrap());
    let names = [lock.name().to_owned(), value.name().to_owned(), raw.name().to_owned()];
    let (reader, mut writer) = std::io::pipe().unwrap();
    let mut p = Process::new(use_after_parent_dropped, (lock, value, raw, Handle::from(OwnedFd::from(reader))));
    p.start().unwrap(); // the arguments (the parent's handles) are dropped by `start`, as in CPython
    writer.write_all(b"g").unwrap();
    assert_eq!(p.join().unwrap(), (42, 2));
    for name in &names {
        assert!(eventually(Duration::from_secs(5), || !segment_exists(name)), "{name} outlived every handle");
    }
}
