//! [`Condition`]: waiting for a state change announced by another process.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::lock::SharedMutex;
use crate::segment::{Kind, Segment};
use crate::sys::{self, Deadline};
use crate::{Lock, RLock, SyncError};

/// State: wake-up tokens (the futex word) and the waiters not yet given one.
const TOKENS: usize = 0;
const WAITING: usize = 4;

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Lock {}
    impl Sealed for crate::RLock {}
}

/// The locks a [`Condition`] can use: [`RLock`] (the default, as in CPython) or [`Lock`].
pub trait ConditionLock: sealed::Sealed + Sized {
    #[doc(hidden)]
    fn shared(&self) -> &SharedMutex;
    #[doc(hidden)]
    fn attach(name: &str) -> Result<Self, SyncError>;
    #[doc(hidden)]
    fn segment_name(&self) -> &str;
    #[doc(hidden)]
    fn adopt(name: &str) -> Result<Self, SyncError>;
    #[doc(hidden)]
    fn in_transit(&self);
}

impl ConditionLock for Lock {
    fn shared(&self) -> &SharedMutex {
        self.mutex()
    }
    fn attach(name: &str) -> Result<Self, SyncError> {
        Lock::open(name)
    }
    fn segment_name(&self) -> &str {
        self.name()
    }
    fn adopt(name: &str) -> Result<Self, SyncError> {
        Lock::adopt(name)
    }
    fn in_transit(&self) {
        Lock::in_transit(self);
    }
}

impl ConditionLock for RLock {
    fn shared(&self) -> &SharedMutex {
        self.mutex()
    }
    fn attach(name: &str) -> Result<Self, SyncError> {
        RLock::open(name)
    }
    fn segment_name(&self) -> &str {
        self.name()
    }
    fn adopt(name: &str) -> Result<Self, SyncError> {
        RLock::adopt(name)
    }
    fn in_transit(&self) {
        RLock::in_transit(self);
    }
}

/// A condition variable shared between processes (CPython's `multiprocessing.Condition`).
///
/// Waiting and notifying take the guard of the condition's lock, so doing either without holding the lock
/// is a compile error rather than CPython's `RuntimeError`. `notify(n)` wakes at most `n` waiters. A waiter
/// with a timeout is never stranded by a peer that died.
///
/// ```
/// # mp_process::init();
/// use std::time::Duration;
/// let cond = mp_sync::Condition::new()?;
/// let mut guard = cond.acquire()?;
/// assert!(!cond.wait_timeout(&mut guard, Duration::from_millis(10))?); // nobody notifies
/// cond.notify_all(&guard)?;
/// # Ok::<(), mp_sync::SyncError>(())
/// ```
pub struct Condition<L: ConditionLock = RLock> {
    lock: L,
    segment: Segment,
}

impl Condition<RLock> {
    /// A condition with a new [`RLock`].
    pub fn new() -> Result<Self, SyncError> {
        Condition::with_lock(RLock::new()?)
    }
}

impl<L: ConditionLock> Condition<L> {
    /// A condition over `lock`.
    pub fn with_lock(lock: L) -> Result<Self, SyncError> {
        Ok(Condition { lock, segment: Segment::create(Kind::Condition, 8)? })
    }

    /// Attaches to condition `name` over lock `lock_name` (what a child gets when one is passed to it).
    pub fn open(name: &str, lock_name: &str) -> Result<Self, SyncError> {
        Ok(Condition { lock: L::attach(lock_name)?, segment: Segment::open(name, Kind::Condition)? })
    }

    /// Another handle to the same condition, to pass into a child.
    pub fn try_clone(&self) -> Result<Self, SyncError> {
        Self::open(self.segment.name(), self.lock.segment_name())
    }

    /// The condition's lock.
    pub fn lock(&self) -> &L {
        &self.lock
    }

    /// The name of the condition's shared-memory segment (its lock has a segment of its own).
    pub fn name(&self) -> &str {
        self.segment.name()
    }

    /// Acquires the condition's lock.
    pub fn acquire(&self) -> Result<ConditionGuard<'_, L>, SyncError> {
        let owner_died = self.lock.shared().restore(1)?;
        Ok(ConditionGuard { condition: self, owner_died, _not_send: std::marker::PhantomData })
    }

    /// Acquires the condition's lock, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<ConditionGuard<'_, L>>, SyncError> {
        Ok(self.lock.shared().lock_once(Deadline::after(Some(timeout)))?.map(|owner_died| ConditionGuard {
            condition: self,
            owner_died,
            _not_send: std::marker::PhantomData,
        }))
    }

    fn check(&self, guard: &ConditionGuard<'_, L>) -> Result<(), SyncError> {
        if std::ptr::eq(guard.condition, self) { Ok(()) } else { Err(SyncError::ForeignGuard) }
    }

    fn try_take(&self) -> bool {
        let tokens = self.segment.word(TOKENS);
        let mut current = tokens.load(Ordering::Acquire);
        while current > 0 {
            match tokens.compare_exchange_weak(current, current - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }

    /// Releases the lock (every level of an `RLock`), waits for a notification, and re-acquires it.
    pub fn wait(&self, guard: &mut ConditionGuard<'_, L>) -> Result<(), SyncError> {
        self.wait_until(guard, Deadline::after(None)).map(drop)
    }

    /// Like [`wait`](Self::wait), for at most `timeout`; returns whether a notification came (CPython's
    /// `wait(timeout)`). The lock is re-acquired either way.
    pub fn wait_timeout(&self, guard: &mut ConditionGuard<'_, L>, timeout: Duration) -> Result<bool, SyncError> {
        self.wait_until(guard, Deadline::after(Some(timeout)))
    }

    /// Waits until `predicate` holds (checked with the lock held), for at most `timeout` in total (`None`:
    /// no limit); returns the predicate's last value (CPython's `wait_for`).
    pub fn wait_for(
        &self,
        guard: &mut ConditionGuard<'_, L>,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool, SyncError> {
        let deadline = Deadline::after(timeout);
        loop {
            if predicate() {
                return Ok(true);
            }
            if deadline.passed() {
                return Ok(false);
            }
            self.wait_until(guard, deadline)?;
        }
    }

    fn wait_until(&self, guard: &mut ConditionGuard<'_, L>, deadline: Deadline) -> Result<bool, SyncError> {
        self.check(guard)?;
        self.segment.word(WAITING).fetch_add(1, Ordering::AcqRel);
        let depth = self.lock.shared().release_all()?;
        let mut notified = false;
        loop {
            if self.try_take() {
                notified = true;
                break;
            }
            if !sys::futex_wait(self.segment.word(TOKENS), 0, deadline) {
                break;
            }
        }
        guard.owner_died |= self.lock.shared().restore(depth)?;
        if !notified {
            // Timed out: a token may have come at the last moment; otherwise withdraw from the waiters.
            notified = self.try_take();
            if !notified {
                let waiting = self.segment.word(WAITING);
                let _ = waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| w.checked_sub(1));
            }
        }
        Ok(notified)
    }

    /// Wakes at most `n` waiters.
    pub fn notify(&self, guard: &ConditionGuard<'_, L>, n: u32) -> Result<(), SyncError> {
        self.check(guard)?;
        let waiting = self.segment.word(WAITING);
        let k = n.min(waiting.load(Ordering::Acquire));
        if k > 0 {
            waiting.fetch_sub(k, Ordering::AcqRel);
            self.segment.word(TOKENS).fetch_add(k, Ordering::AcqRel);
            sys::futex_wake(self.segment.word(TOKENS), k);
        }
        Ok(())
    }

    /// Wakes every waiter.
    pub fn notify_all(&self, guard: &ConditionGuard<'_, L>) -> Result<(), SyncError> {
        self.notify(guard, u32::MAX)
    }
}

impl<L: ConditionLock> fmt::Debug for Condition<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("name", &self.segment.name())
            .field("lock", &self.lock.segment_name())
            .finish()
    }
}

/// Travels as its two names; the receiver attaches to the same condition and lock.
impl<L: ConditionLock> Serialize for Condition<L> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.segment.in_transit();
        self.lock.in_transit();
        (self.segment.name(), self.lock.segment_name()).serialize(serializer)
    }
}

impl<'de, L: ConditionLock> Deserialize<'de> for Condition<L> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, lock): (String, String) = Deserialize::deserialize(deserializer)?;
        let adopt = || {
            Ok::<_, SyncError>(Condition { lock: L::adopt(&lock)?, segment: Segment::adopt(&name, Kind::Condition)? })
        };
        adopt().map_err(serde::de::Error::custom)
    }
}

/// Holds a [`Condition`]'s lock; dropping it releases the lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
///
/// Not `Send`: the lock is the acquiring thread's, and only that thread can release it.
pub struct ConditionGuard<'a, L: ConditionLock> {
    condition: &'a Condition<L>,
    owner_died: bool,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl<L: ConditionLock> ConditionGuard<'_, L> {
    /// Whether a holder of the lock died holding it, since this guard was made.
    pub fn previous_owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<L: ConditionLock> Drop for ConditionGuard<'_, L> {
    fn drop(&mut self) {
        if let Err(e) = self.condition.lock.shared().unlock_once() {
            log::error!("mp-sync: releasing the lock of {} failed: {e}", self.condition.segment.name());
        }
    }
}

impl<L: ConditionLock> fmt::Debug for ConditionGuard<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").field("condition", &self.condition).finish()
    }
}
