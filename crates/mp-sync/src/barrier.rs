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
/// break, abort and reset; `GENERATION` only on a pass, so a woken waiter can tell which it was. The default
/// timeout of `wait` is at `TIMEOUT_LO`/`TIMEOUT_HI` (nanoseconds; 0: none). From `PRESENCE` on, two rows of
/// one robust mutex per party: the party that arrives `i`th in a generation holds row `generation % 2`'s
/// mutex `i` while it waits, so that the others learn of its death (the mutex then reports its owner dead)
/// without trusting a pid that may have been reused.
const MUTEX: usize = 0;
const COUNT: usize = 64;
const GENERATION: usize = 68;
const EPOCH: usize = 72;
const BROKEN: usize = 76;
const PARTIES: usize = 80;
const TIMEOUT_LO: usize = 84;
const TIMEOUT_HI: usize = 88;
const PRESENCE: usize = 128;
/// The room of one presence mutex.
const PRESENCE_SIZE: usize = 64;
const _: () = assert!(sys::MUTEX_SIZE <= COUNT, "the mutex must fit before the counters");
const _: () = assert!(sys::MUTEX_SIZE <= PRESENCE_SIZE, "a presence mutex must fit its room");

/// How often a waiting party looks whether the parties it waits with are alive.
const LOOK: Duration = Duration::from_millis(10);

/// The segment size for `parties`.
fn size(parties: u32) -> Result<usize, SyncError> {
    (parties as usize)
        .checked_mul(2 * PRESENCE_SIZE)
        .and_then(|rows| rows.checked_add(PRESENCE))
        .filter(|size| *size <= 1 << 30)
        .ok_or(SyncError::ZeroParties)
}

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
/// [`abort`](Self::abort), a [`reset`](Self::reset) while parties wait, an action that panics, or a party that
/// dies while it waits (killed, say) breaks the barrier: every waiter gets [`SyncError::BrokenBarrier`] — the
/// others learn of a death within 10 ms, and a party arriving last after one never passes one short (CPython's
/// barrier stays counted short, then passes or hangs). [`with_timeout`](Barrier::with_timeout) gives `wait` a
/// default timeout (CPython's `Barrier(n, timeout=)`).
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

    /// A barrier whose [`wait`](Self::wait) gives up after `timeout`, breaking the barrier (CPython's
    /// `Barrier(parties, timeout=timeout)`; every process it is passed to uses the same default).
    ///
    /// ```
    /// # mp_process::init();
    /// let barrier = mp_sync::Barrier::with_timeout(2, std::time::Duration::from_millis(20))?;
    /// assert!(matches!(barrier.wait(), Err(mp_sync::SyncError::BrokenBarrier))); // nobody else came
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn with_timeout(parties: u32, timeout: Duration) -> Result<Self, SyncError> {
        Self::with_action_timeout(parties, timeout)
    }
}

impl<A: BarrierAction> Barrier<A> {
    /// A barrier for `parties` processes that runs `A::run()` once per pass.
    pub fn with_action(parties: u32) -> Result<Self, SyncError> {
        if parties == 0 {
            return Err(SyncError::ZeroParties);
        }
        let segment = Segment::create(Kind::Barrier, size(parties)?)?;
        // SAFETY: fresh zeroed shared memory, 64-aligned, living as long as `segment`.
        let mutex = unsafe { RobustMutex::init(segment.at(MUTEX), false)? };
        for slot in 0..2 * parties as usize {
            // SAFETY: as above; each presence mutex has a room of its own inside the segment (see `size`).
            unsafe { RobustMutex::init(segment.at(PRESENCE + slot * PRESENCE_SIZE), false)? };
        }
        segment.word(PARTIES).store(parties, Ordering::Release);
        Ok(Barrier { segment, mutex, _action: PhantomData })
    }

    /// [`with_action`](Self::with_action) with a default timeout for [`wait`](Self::wait) (see
    /// [`Barrier::with_timeout`]).
    pub fn with_action_timeout(parties: u32, timeout: Duration) -> Result<Self, SyncError> {
        let barrier = Self::with_action(parties)?;
        // Zero means none: a zero timeout is stored as one nanosecond.
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX).max(1);
        barrier.word(TIMEOUT_LO).store(nanos as u32, Ordering::Release);
        barrier.word(TIMEOUT_HI).store((nanos >> 32) as u32, Ordering::Release);
        Ok(barrier)
    }

    /// The default timeout of [`wait`](Self::wait), if the barrier has one.
    pub fn timeout(&self) -> Option<Duration> {
        let nanos = u64::from(self.word(TIMEOUT_LO).load(Ordering::Acquire))
            | u64::from(self.word(TIMEOUT_HI).load(Ordering::Acquire)) << 32;
        (nanos != 0).then(|| Duration::from_nanos(nanos))
    }

    /// The presence mutex of the party that arrived `index`th in a generation of parity `row`.
    fn presence(&self, row: u32, index: u32) -> RobustMutex {
        let slot = (row as usize % 2) * self.parties() as usize + index as usize;
        // SAFETY: the creator initialised 2 × parties presence mutexes from PRESENCE (see `with_action`), and
        // the segment outlives the handle, which lives only for one call.
        unsafe { RobustMutex::attach(self.segment.at(PRESENCE + slot * PRESENCE_SIZE)) }
    }

    /// Whether one of the parties that arrived before `upto` in this generation died waiting (mutex held).
    fn a_party_died(&self, generation: u32, upto: u32, me: Option<u32>) -> bool {
        (0..upto).filter(|i| Some(*i) != me).any(|i| {
            let presence = self.presence(generation, i);
            match presence.try_lock() {
                Ok(Locked::OwnerDied) => {
                    presence.unlock();
                    true
                }
                Ok(Locked::Yes) => {
                    // Free: that party holds none (it could not take it); nothing to tell.
                    presence.unlock();
                    false
                }
                _ => false,
            }
        })
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

    /// Waits until all parties have called `wait`; returns this party's arrival index. A barrier made
    /// [`with_timeout`](Barrier::with_timeout) waits at most that long.
    pub fn wait(&self) -> Result<u32, SyncError> {
        self.wait_until(Deadline::after(self.timeout()))
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
            let generation = self.word(GENERATION).load(Ordering::Acquire);
            let index = self.word(COUNT).load(Ordering::Acquire);
            // Counted short by a party that died waiting: the barrier is broken, never passed one short.
            if self.a_party_died(generation, index, None) {
                self.break_now();
                return Err(SyncError::BrokenBarrier);
            }
            self.word(COUNT).store(index + 1, Ordering::Release);
            if index + 1 < self.parties() {
                // Held while waiting, so that the others learn of this party's death.
                let presence = self.presence(generation, index);
                let present = matches!(presence.try_lock(), Ok(Locked::Yes | Locked::OwnerDied));
                return Ok(Err((index, generation, self.word(EPOCH).load(Ordering::Acquire), present)));
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
        let (index, generation, epoch, present) = match arrival {
            Ok(index) => return Ok(index),
            Err(waiting) => waiting,
        };
        let result = self.wait_for_pass(index, generation, epoch, deadline);
        if present {
            self.presence(generation, index).unlock();
        }
        result
    }

    /// A waiting party's wait: until the epoch moves, the deadline passes (which breaks the barrier), or a
    /// party it waits with is found dead (likewise).
    fn wait_for_pass(&self, index: u32, generation: u32, epoch: u32, deadline: Deadline) -> Result<u32, SyncError> {
        while self.word(EPOCH).load(Ordering::Acquire) == epoch {
            let slice = Deadline::after(Some(deadline.remaining().map_or(LOOK, |left| left.min(LOOK))));
            if sys::futex_wait(self.word(EPOCH), epoch, slice) || self.word(EPOCH).load(Ordering::Acquire) != epoch {
                continue;
            }
            let out_of_time = deadline.passed();
            self.locked(|| {
                if self.word(EPOCH).load(Ordering::Acquire) != epoch {
                    return;
                }
                let count = self.word(COUNT).load(Ordering::Acquire);
                if out_of_time || self.a_party_died(generation, count, Some(index)) {
                    self.break_now();
                }
            })?;
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

    /// How many parties are waiting now (0 while broken, as CPython's).
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
