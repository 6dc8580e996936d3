//! [`Condition`]: waiting for a state change announced by another process.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::lock::SharedMutex;
use crate::segment::{Kind, Segment};
use crate::sys::{self, Deadline, Locked, RobustMutex};
use crate::{Lock, RLock, SyncError};

/// State. Every waiter takes a slot (under the condition's lock): its state, the ticket that orders it among
/// the waiters, and a robust presence mutex it holds while it waits, which reports a waiter that died. A
/// notification marks the slots of the oldest waiters waiting when it is made — never one that starts waiting
/// later, the notifier's own next wait included — and moves `EPOCH` (the futex word every waiter sleeps on);
/// each waiter looks at its own slot. A waiter that times out, is refused, or dies frees its slot (a dead one's
/// is freed by the next notification that finds its mutex's owner dead), so no notification is spent on it.
/// Waiters beyond [`SLOTS`] at once wait the old way, for tokens (`TOKENS`, `OVERFLOW`) that notifications
/// hand out once the slotted waiters are served.
const EPOCH: usize = 0;
const NEXT: usize = 4;
const TOKENS: usize = 8;
const OVERFLOW: usize = 12;
const TABLE: usize = 64;
/// Waiters at once that a notification picks exactly.
const SLOTS: usize = 128;
const SLOT_SIZE: usize = 64;
/// In a slot: its state, then the ticket it holds, then the presence mutex.
const SLOT_STATE: usize = 0;
const SLOT_TICKET: usize = 4;
const SLOT_MUTEX: usize = 8;
const FREE: u32 = 0;
const WAITING: u32 = 1;
const NOTIFIED: u32 = 2;
const _: () = assert!(SLOT_MUTEX + sys::MUTEX_SIZE <= SLOT_SIZE, "the presence mutex must fit its slot");

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
/// is a compile error rather than CPython's `RuntimeError`. `notify(n)` wakes at most `n` of the waiters that
/// wait when it is called, oldest first: never a waiter that starts waiting afterwards (the notifier's own next
/// wait included), and never a waiter that has gone — timed out, refused, or killed while waiting — so a
/// notification is not wasted on one. A waiter with a timeout is never stranded by a peer that died.
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
        let segment = Segment::create(Kind::Condition, TABLE + SLOTS * SLOT_SIZE)?;
        for slot in 0..SLOTS {
            // SAFETY: fresh zeroed shared memory living as long as the segment; each slot's mutex has its room.
            unsafe { RobustMutex::init(segment.at(TABLE + slot * SLOT_SIZE + SLOT_MUTEX), false)? };
        }
        Ok(Condition { lock, segment })
    }

    fn slot_word(&self, slot: usize, field: usize) -> &AtomicU32 {
        self.segment.word(TABLE + slot * SLOT_SIZE + field)
    }

    fn presence(&self, slot: usize) -> RobustMutex {
        // SAFETY: `with_lock` initialised every slot's mutex; the segment outlives the handle (used for one call).
        unsafe { RobustMutex::attach(self.segment.at(TABLE + slot * SLOT_SIZE + SLOT_MUTEX)) }
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
        // The lock is held: slots change only under it (but for a waiter's own slot once notified).
        let ticket = self.segment.word(NEXT).fetch_add(1, Ordering::AcqRel);
        let slot = (0..SLOTS).find(|&slot| {
            self.slot_word(slot, SLOT_STATE).load(Ordering::Acquire) == FREE
                && matches!(self.presence(slot).try_lock(), Ok(Locked::Yes | Locked::OwnerDied))
        });
        match slot {
            Some(slot) => {
                self.slot_word(slot, SLOT_TICKET).store(ticket, Ordering::Release);
                self.slot_word(slot, SLOT_STATE).store(WAITING, Ordering::Release);
            }
            None => {
                self.segment.word(OVERFLOW).fetch_add(1, Ordering::AcqRel);
            }
        }
        let epoch_word = self.segment.word(EPOCH);
        let depth = match self.lock.shared().release_all() {
            Ok(depth) => depth,
            Err(e) => {
                // Refused (the lock is not ours after all): leave no waiter behind.
                self.leave(slot);
                return Err(e);
            }
        };
        loop {
            let epoch = epoch_word.load(Ordering::Acquire);
            let notified = match slot {
                Some(slot) => self.slot_word(slot, SLOT_STATE).load(Ordering::Acquire) == NOTIFIED,
                None => self.segment.word(TOKENS).load(Ordering::Acquire) > 0,
            };
            if notified || !sys::futex_wait(epoch_word, epoch, deadline) {
                break;
            }
        }
        guard.owner_died |= self.lock.shared().restore(depth)?;
        // Under the lock again: notified, or timed out (a notification made after this is for others).
        Ok(self.leave(slot))
    }

    /// A waiter leaves (lock held): whether it was notified. Its slot is free again.
    fn leave(&self, slot: Option<usize>) -> bool {
        match slot {
            Some(slot) => {
                let notified = self.slot_word(slot, SLOT_STATE).swap(FREE, Ordering::AcqRel) == NOTIFIED;
                self.presence(slot).unlock();
                notified
            }
            None => {
                // Withdraw from the overflow waiters, or take the token that came.
                let notified = self.take_token();
                if !notified {
                    let overflow = self.segment.word(OVERFLOW);
                    let _ = overflow.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| w.checked_sub(1));
                }
                notified
            }
        }
    }

    /// An overflow waiter takes a token, if there is one.
    fn take_token(&self) -> bool {
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

    /// Whether the waiter in `slot` (its state `WAITING`) is alive: its presence mutex is held. A dead one's
    /// slot is freed.
    fn alive(&self, slot: usize) -> bool {
        let presence = self.presence(slot);
        match presence.try_lock() {
            Ok(Locked::OwnerDied | Locked::Yes) => {
                self.slot_word(slot, SLOT_STATE).store(FREE, Ordering::Release);
                presence.unlock();
                false
            }
            _ => true,
        }
    }

    /// Wakes at most `n` of the waiters waiting now, oldest first: never one that starts waiting later (the
    /// notifier's own next wait included); waiters that have gone (timed out, refused, died) are not counted.
    pub fn notify(&self, guard: &ConditionGuard<'_, L>, n: u32) -> Result<(), SyncError> {
        self.check(guard)?;
        let mut waiting: Vec<(u32, usize)> = (0..SLOTS)
            .filter(|&slot| self.slot_word(slot, SLOT_STATE).load(Ordering::Acquire) == WAITING)
            .map(|slot| (self.slot_word(slot, SLOT_TICKET).load(Ordering::Acquire), slot))
            .collect();
        // Oldest first; tickets wrap around, so they are ordered by how far back from the next one they are.
        let next = self.segment.word(NEXT).load(Ordering::Acquire);
        waiting.sort_by_key(|&(ticket, _)| std::cmp::Reverse(next.wrapping_sub(ticket)));
        let mut woken = 0;
        for (_, slot) in waiting {
            if woken == n {
                break;
            }
            if self.alive(slot) {
                self.slot_word(slot, SLOT_STATE).store(NOTIFIED, Ordering::Release);
                woken += 1;
            }
        }
        let overflow = self.segment.word(OVERFLOW);
        let k = (n - woken).min(overflow.load(Ordering::Acquire));
        if k > 0 {
            overflow.fetch_sub(k, Ordering::AcqRel);
            self.segment.word(TOKENS).fetch_add(k, Ordering::AcqRel);
            woken += k;
        }
        if woken > 0 {
            self.segment.word(EPOCH).fetch_add(1, Ordering::AcqRel);
            sys::futex_wake(self.segment.word(EPOCH), u32::MAX);
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
