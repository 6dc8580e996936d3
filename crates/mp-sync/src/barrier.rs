//! [`Barrier`]: a meeting point for a fixed number of processes.

use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::SyncError;
use crate::segment::{Kind, Segment};
use crate::sys::{self, Deadline, Locked, RobustMutex};

/// State: a mutex guarding the counters, then the counters. `EPOCH` (the futex word) moves on every pass,
/// break, abort and reset; `GENERATION` only on a pass, so a woken waiter can tell which it was.
const MUTEX: usize = 0;
const COUNT: usize = 64;
const GENERATION: usize = 68;
const EPOCH: usize = 72;
const BROKEN: usize = 76;
const PARTIES: usize = 80;
const SIZE: usize = 84;
const _: () = assert!(sys::MUTEX_SIZE <= COUNT, "the mutex must fit before the counters");

/// What a [`Barrier`] runs once per pass, in the process that arrives last (CPython's `action`). A type
/// rather than a closure, so that it means the same in every process the barrier is passed to.
///
/// ```
/// struct Announce;
/// impl mp_sync::BarrierAction for Announce {
///     fn run() {
///         println!("everyone is here");
///     }
/// }
/// # mp_process::init();
/// let barrier = mp_sync::Barrier::<Announce>::with_action(1)?;
/// barrier.wait()?; // prints "everyone is here"
/// # Ok::<(), mp_sync::SyncError>(())
/// ```
pub trait BarrierAction: 'static {
    /// The action.
    fn run();
}

/// No action (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAction;

impl BarrierAction for NoAction {
    fn run() {}
}

/// A barrier shared between processes (CPython's `multiprocessing.Barrier`).
///
/// `wait` returns the arrival index (exactly one party of each pass gets 0). A wait that times out, an
/// [`abort`](Self::abort), a [`reset`](Self::reset) while parties wait, or an action that panics breaks the
/// barrier: every waiter gets [`SyncError::BrokenBarrier`]. Waiters with a timeout are never stranded by a
/// dead party.
///
/// ```
/// # mp_process::init();
/// let barrier = mp_sync::Barrier::new(1)?;
/// assert_eq!(barrier.wait()?, 0);
/// barrier.abort();
/// assert!(barrier.broken());
/// # Ok::<(), mp_sync::SyncError>(())
/// ```
pub struct Barrier<A: BarrierAction = NoAction> {
    segment: Segment,
    mutex: RobustMutex,
    _action: PhantomData<fn() -> A>,
}

// SAFETY: the mutex is process-shared and thread-safe; the rest of the state is atomics.
unsafe impl<A: BarrierAction> Send for Barrier<A> {}
// SAFETY: as above.
unsafe impl<A: BarrierAction> Sync for Barrier<A> {}

impl Barrier<NoAction> {
    /// A barrier for `parties` processes (at least 1: [`SyncError::ZeroParties`]).
    pub fn new(parties: u32) -> Result<Self, SyncError> {
        Self::with_action(parties)
    }
}

impl<A: BarrierAction> Barrier<A> {
    /// A barrier for `parties` processes that runs `A::run()` once per pass.
    pub fn with_action(parties: u32) -> Result<Self, SyncError> {
        if parties == 0 {
            return Err(SyncError::ZeroParties);
        }
        let segment = Segment::create(Kind::Barrier, SIZE)?;
        // SAFETY: fresh zeroed shared memory, 64-aligned, living as long as `segment`.
        let mutex = unsafe { RobustMutex::init(segment.at(MUTEX), false)? };
        segment.word(PARTIES).store(parties, Ordering::Release);
        Ok(Barrier { segment, mutex, _action: PhantomData })
    }

    /// Attaches to barrier `name` (what a child gets when one is passed to it).
    pub fn open(name: &str) -> Result<Self, SyncError> {
        Self::attach(Segment::open(name, Kind::Barrier)?)
    }

    fn attach(segment: Segment) -> Result<Self, SyncError> {
        // SAFETY: the creator initialised the mutex in this segment (checked by its kind header).
        let mutex = unsafe { RobustMutex::attach(segment.at(MUTEX)) };
        Ok(Barrier { segment, mutex, _action: PhantomData })
    }

    /// Another handle to the same barrier, to pass into a child.
    pub fn try_clone(&self) -> Result<Self, SyncError> {
        Self::open(self.segment.name())
    }

    /// The shared-memory segment's name.
    pub fn name(&self) -> &str {
        self.segment.name()
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        self.segment.word(offset)
    }

    /// Runs `f` with the state mutex held. A party that died holding it leaves the state suspect: the barrier
    /// is broken then.
    fn locked<T>(&self, f: impl FnOnce() -> T) -> Result<T, SyncError> {
        match self.mutex.lock(Deadline::after(None))? {
            Locked::OwnerDied => self.break_now(),
            Locked::Yes => {}
            Locked::No | Locked::Deadlock => return Err(SyncError::WouldDeadlock),
        }
        let result = f();
        self.mutex.unlock();
        Ok(result)
    }

    /// Breaks the barrier and wakes everyone (mutex held).
    fn break_now(&self) {
        self.word(BROKEN).store(1, Ordering::Release);
        self.word(EPOCH).fetch_add(1, Ordering::AcqRel);
        sys::futex_wake(self.word(EPOCH), u32::MAX);
    }

    /// Waits until all parties have called `wait`; returns this party's arrival index.
    pub fn wait(&self) -> Result<u32, SyncError> {
        self.wait_until(Deadline::after(None))
    }

    /// Like [`wait`](Self::wait), for at most `timeout`; running out breaks the barrier (as in CPython).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, SyncError> {
        self.wait_until(Deadline::after(Some(timeout)))
    }

    fn wait_until(&self, deadline: Deadline) -> Result<u32, SyncError> {
        let arrival = self.locked(|| {
            if self.word(BROKEN).load(Ordering::Acquire) != 0 {
                return Err(SyncError::BrokenBarrier);
            }
            let index = self.word(COUNT).fetch_add(1, Ordering::AcqRel);
            if index + 1 < self.parties() {
                return Ok(Err((
                    index,
                    self.word(GENERATION).load(Ordering::Acquire),
                    self.word(EPOCH).load(Ordering::Acquire),
                )));
            }
            // The last to arrive runs the action and lets everyone go.
            if catch_unwind(AssertUnwindSafe(A::run)).is_err() {
                self.break_now();
                return Err(SyncError::BrokenBarrier);
            }
            self.word(COUNT).store(0, Ordering::Release);
            self.word(GENERATION).fetch_add(1, Ordering::AcqRel);
            self.word(EPOCH).fetch_add(1, Ordering::AcqRel);
            sys::futex_wake(self.word(EPOCH), u32::MAX);
            Ok(Ok(index))
        })??;
        let (index, generation, epoch) = match arrival {
            Ok(index) => return Ok(index),
            Err(waiting) => waiting,
        };
        while self.word(EPOCH).load(Ordering::Acquire) == epoch {
            if !sys::futex_wait(self.word(EPOCH), epoch, deadline) {
                self.locked(|| {
                    if self.word(EPOCH).load(Ordering::Acquire) == epoch {
                        self.break_now();
                    }
                })?;
            }
        }
        if self.word(GENERATION).load(Ordering::Acquire) != generation {
            Ok(index)
        } else {
            Err(SyncError::BrokenBarrier)
        }
    }

    /// Breaks the barrier: current and future waiters get [`SyncError::BrokenBarrier`] until a
    /// [`reset`](Self::reset).
    pub fn abort(&self) {
        let _ = self.locked(|| self.break_now());
    }

    /// Returns the barrier to its empty, unbroken state; parties waiting now get
    /// [`SyncError::BrokenBarrier`].
    pub fn reset(&self) {
        let _ = self.locked(|| {
            self.word(COUNT).store(0, Ordering::Release);
            self.word(BROKEN).store(0, Ordering::Release);
            self.word(EPOCH).fetch_add(1, Ordering::AcqRel);
            sys::futex_wake(self.word(EPOCH), u32::MAX);
        });
    }

    /// The number of parties it takes to pass.
    pub fn parties(&self) -> u32 {
        self.word(PARTIES).load(Ordering::Acquire)
    }

    /// How many parties are waiting now (0 while broken).
    pub fn n_waiting(&self) -> u32 {
        if self.broken() { 0 } else { self.word(COUNT).load(Ordering::Acquire) }
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> bool {
        self.word(BROKEN).load(Ordering::Acquire) != 0
    }
}

impl<A: BarrierAction> fmt::Debug for Barrier<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("name", &self.name())
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}

/// Travels by name; the receiver attaches to the same barrier (with the action its type names).
impl<A: BarrierAction> Serialize for Barrier<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.segment.in_transit();
        self.name().serialize(serializer)
    }
}

impl<'de, A: BarrierAction> Deserialize<'de> for Barrier<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Segment::adopt(&name, Kind::Barrier).and_then(Barrier::attach).map_err(serde::de::Error::custom)
    }
}
