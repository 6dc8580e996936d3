//! [`Lock`] and [`RLock`]: process-shared mutexes that survive a dead holder.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::SyncError;
use crate::segment::{Kind, Segment};
use crate::sys::{self, Deadline, Locked, RobustMutex};

/// State layout: the mutex alone (glibc counts an `RLock`'s recursion in it).
const MUTEX: usize = 0;
const SIZE: usize = sys::MUTEX_SIZE;

/// The machinery `Lock` and `RLock` share (public only so that the sealed [`ConditionLock`](crate::ConditionLock)
/// can name it).
#[doc(hidden)]
#[derive(Debug)]
pub struct SharedMutex {
    segment: Segment,
    mutex: RobustMutex,
    recursive: bool,
}

// SAFETY: the pthread mutex is process-shared and thread-safe by design; its parking word is an atomic.
unsafe impl Send for SharedMutex {}
// SAFETY: as above.
unsafe impl Sync for SharedMutex {}

impl SharedMutex {
    pub(crate) fn create(recursive: bool) -> Result<Self, SyncError> {
        let kind = if recursive { Kind::RLock } else { Kind::Lock };
        let segment = Segment::create(kind, SIZE)?;
        // SAFETY: fresh zeroed shared memory, 64-aligned, that lives as long as `segment`.
        let mutex = unsafe { RobustMutex::init(segment.at(MUTEX), recursive)? };
        Ok(SharedMutex { segment, mutex, recursive })
    }

    /// Attaches to `name`: counting a reference, or (`adopt`) taking over one counted in transit.
    fn open(name: &str, recursive: bool, adopt: bool) -> Result<Self, SyncError> {
        let kind = if recursive { Kind::RLock } else { Kind::Lock };
        let segment = if adopt { Segment::adopt(name, kind)? } else { Segment::open(name, kind)? };
        // SAFETY: the creator initialised the mutex in this segment (checked by its kind header).
        let mutex = unsafe { RobustMutex::attach(segment.at(MUTEX)) };
        Ok(SharedMutex { segment, mutex, recursive })
    }

    fn owner(&self) -> u32 {
        self.mutex.owner()
    }

    fn held_by_me(&self) -> bool {
        self.owner() == sys::thread_id()
    }

    /// Levels held (asked by the holder).
    fn depth(&self) -> u32 {
        if self.recursive { self.mutex.count() } else { 1 }
    }

    /// Locks once; `Ok(Some(owner_died))` when acquired. `deadline: None` only tries.
    #[inline]
    fn lock(&self, deadline: Option<Deadline>) -> Result<Option<bool>, SyncError> {
        let outcome = match deadline {
            None => self.mutex.try_lock()?,
            Some(deadline) => self.mutex.lock(deadline)?,
        };
        let owner_died = match outcome {
            Locked::Yes => false,
            Locked::OwnerDied => {
                log::warn!("mp-sync: the previous holder of {} died holding it", self.segment.name());
                true
            }
            Locked::No => return Ok(None),
            Locked::Deadlock if deadline.is_none() => return Ok(None),
            Locked::Deadlock => return Err(SyncError::WouldDeadlock),
        };
        Ok(Some(owner_died))
    }

    #[inline]
    fn unlock(&self) -> Result<(), SyncError> {
        // Error-checking and recursive mutexes both refuse (EPERM) an unlock by anyone but their owner.
        if self.mutex.unlock() { Ok(()) } else { Err(SyncError::NotHeld) }
    }

    /// Locks one level, waiting until `deadline`; `Some(owner_died)` when acquired.
    pub(crate) fn lock_once(&self, deadline: Deadline) -> Result<Option<bool>, SyncError> {
        self.lock(Some(deadline))
    }

    /// Releases one level.
    pub(crate) fn unlock_once(&self) -> Result<(), SyncError> {
        self.unlock()
    }

    /// Releases every level held (for a condition wait); returns how many to restore.
    pub(crate) fn release_all(&self) -> Result<u32, SyncError> {
        if !self.held_by_me() {
            return Err(SyncError::NotHeld);
        }
        let depth = self.depth();
        for _ in 0..depth {
            self.unlock()?;
        }
        Ok(depth)
    }

    /// Re-acquires `depth` levels after a condition wait (no timeout, as in CPython).
    pub(crate) fn restore(&self, depth: u32) -> Result<bool, SyncError> {
        let mut died = false;
        for _ in 0..depth {
            died |= self.lock(Some(Deadline::after(None)))?.expect("no deadline");
        }
        Ok(died)
    }
}

macro_rules! lock_type {
    ($(#[$doc:meta])* $name:ident, $guard:ident, $recursive:expr, $kind:literal) => {
        $(#[$doc])*
        pub struct $name {
            inner: SharedMutex,
        }

        impl $name {
            /// A new, unlocked lock in a fresh shared-memory segment.
            pub fn new() -> Result<Self, SyncError> {
                Ok($name { inner: SharedMutex::create($recursive)? })
            }

            /// Attaches to the lock in segment `name` (what a child gets when one is passed to it).
            pub fn open(name: &str) -> Result<Self, SyncError> {
                Ok($name { inner: SharedMutex::open(name, $recursive, false)? })
            }

            /// Attaches taking over a reference counted in transit (deserialization).
            pub(crate) fn adopt(name: &str) -> Result<Self, SyncError> {
                Ok($name { inner: SharedMutex::open(name, $recursive, true)? })
            }

            /// Counts a reference for a copy about to travel to another process.
            pub(crate) fn in_transit(&self) {
                self.inner.segment.in_transit();
            }

            /// Another handle to the same lock, to pass into a child.
            pub fn try_clone(&self) -> Result<Self, SyncError> {
                Self::open(self.name())
            }

            /// The shared-memory segment's name.
            pub fn name(&self) -> &str {
                self.inner.segment.name()
            }

            /// Blocks until the lock is acquired.
            #[inline]
            pub fn acquire(&self) -> Result<$guard<'_>, SyncError> {
                Ok(self.acquire_until(Deadline::after(None))?.expect("no deadline"))
            }

            /// Acquires the lock if it is free; `None` if another holds it.
            #[inline]
            pub fn try_acquire(&self) -> Result<Option<$guard<'_>>, SyncError> {
                Ok(self.inner.lock(None)?.map(|owner_died| $guard { lock: self, owner_died, _not_send: PhantomData }))
            }

            /// Waits at most `timeout` for the lock; `None` when the time ran out (CPython's `False`).
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<$guard<'_>>, SyncError> {
                self.acquire_until(Deadline::after(Some(timeout)))
            }

            #[inline]
            fn acquire_until(&self, deadline: Deadline) -> Result<Option<$guard<'_>>, SyncError> {
                Ok(self.inner.lock(Some(deadline))?.map(|owner_died| $guard { lock: self, owner_died, _not_send: PhantomData }))
            }

            /// Releases a level of the lock held through a [leaked](`$guard::leak`) guard.
            /// [`SyncError::NotHeld`] if the calling thread does not hold it.
            pub fn release(&self) -> Result<(), SyncError> {
                self.inner.unlock()
            }

            /// Whether the calling thread holds the lock.
            pub fn is_held(&self) -> bool {
                self.inner.held_by_me()
            }

            pub(crate) fn mutex(&self) -> &SharedMutex {
                &self.inner
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("name", &self.name()).field("owner_tid", &self.inner.owner()).finish()
            }
        }

        /// Travels by name; the receiver attaches to the same lock.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.in_transit();
                self.name().serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                Self::adopt(&name).map_err(serde::de::Error::custom)
            }
        }

        /// Holds the lock (one level of it, for an `RLock`); dropping it releases.
        ///
        /// Not `Send`, as std's `MutexGuard`: the lock is the acquiring thread's, and only that thread can
        /// release it (a release from another thread would fail, leaving the lock held for good).
        ///
        /// ```compile_fail
        #[doc = concat!("let lock = mp_sync::", stringify!($name), "::new().unwrap();")]
        /// let guard = lock.acquire().unwrap();
        /// std::thread::scope(|s| { s.spawn(move || drop(guard)); }); // a guard cannot leave its thread
        /// ```
        #[must_use = "the lock is released as soon as the guard is dropped"]
        pub struct $guard<'a> {
            lock: &'a $name,
            owner_died: bool,
            _not_send: PhantomData<*const ()>,
        }

        impl $guard<'_> {
            /// Whether the previous holder died while holding the lock (a process killed inside its critical
            /// section). The data the lock protects may be half-updated; the lock itself works.
            pub fn previous_owner_died(&self) -> bool {
                self.owner_died
            }

            /// Keeps the lock held past the guard, for a later [`release`](`$name::release`) (CPython's
            /// manual `acquire()` / `release()` pairing).
            pub fn leak(self) {
                std::mem::forget(self);
            }
        }

        impl Drop for $guard<'_> {
            #[inline]
            fn drop(&mut self) {
                if let Err(e) = self.lock.inner.unlock() {
                    // Only `Drop` sees this: it is said, never silent.
                    log::error!("mp-sync: releasing {} failed: {e}", self.lock.name());
                }
            }
        }

        impl fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard)).field("lock", &self.lock.name()).field("previous_owner_died", &self.owner_died).finish()
            }
        }
    };
}

lock_type!(
    /// A lock shared between processes (CPython's `multiprocessing.Lock`).
    ///
    /// Robust: if its holder dies — even by SIGKILL — the next `acquire` succeeds and its guard reports
    /// [`previous_owner_died`](LockGuard::previous_owner_died), where CPython's lock stays locked forever.
    /// Unlike CPython's, only the holder may release it, and acquiring it twice from one thread is an error
    /// ([`SyncError::WouldDeadlock`]) instead of a hang.
    ///
    /// ```
    /// # mp_process::init();
    /// let lock = mp_sync::Lock::new()?;
    /// {
    ///     let _guard = lock.acquire()?;
    ///     assert!(lock.try_acquire()?.is_none());
    /// }
    /// assert!(lock.try_acquire()?.is_some());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    Lock,
    LockGuard,
    false,
    "Lock"
);

lock_type!(
    /// A re-entrant lock shared between processes (CPython's `multiprocessing.RLock`): the holder may
    /// acquire it again, and must release it as many times. Robust like [`Lock`]; releasing it from a thread
    /// that does not hold it is [`SyncError::NotHeld`].
    ///
    /// ```
    /// # mp_process::init();
    /// let lock = mp_sync::RLock::new()?;
    /// let outer = lock.acquire()?;
    /// let inner = lock.acquire()?;
    /// drop(inner);
    /// assert!(lock.is_held());
    /// drop(outer);
    /// assert!(!lock.is_held());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    RLock,
    RLockGuard,
    true,
    "RLock"
);

impl RLock {
    /// How many times the calling thread holds the lock (0 if it does not).
    pub fn depth(&self) -> u32 {
        if self.inner.held_by_me() { self.inner.depth() } else { 0 }
    }
}
