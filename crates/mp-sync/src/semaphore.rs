//! [`Semaphore`] and [`BoundedSemaphore`]: counters shared between processes, on a futex.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::SyncError;
use crate::segment::{Kind, Segment};
use crate::sys::{self, Deadline};

/// State: the value (the futex word), the number of sleepers, and the bound (0: unbounded).
const VALUE: usize = 0;
const SLEEPERS: usize = 4;
const BOUND: usize = 8;
const SIZE: usize = 12;

struct Counter {
    segment: Segment,
}

impl Counter {
    fn create(value: u32, bound: u32) -> Result<Self, SyncError> {
        let segment = Segment::create(Kind::Semaphore, SIZE)?;
        segment.word(VALUE).store(value, Ordering::Release);
        segment.word(BOUND).store(bound, Ordering::Release);
        Ok(Counter { segment })
    }

    fn try_take(&self) -> bool {
        let value = self.segment.word(VALUE);
        let mut current = value.load(Ordering::Acquire);
        while current > 0 {
            match value.compare_exchange_weak(current, current - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }

    fn acquire(&self, deadline: Deadline) -> bool {
        // A short spin catches a release that is moments away without a sleep and a wake-up.
        for _ in 0..64 {
            if self.try_take() {
                return true;
            }
            std::hint::spin_loop();
        }
        loop {
            if self.try_take() {
                return true;
            }
            self.segment.word(SLEEPERS).fetch_add(1, Ordering::AcqRel);
            let woke = sys::futex_wait(self.segment.word(VALUE), 0, deadline);
            self.segment.word(SLEEPERS).fetch_sub(1, Ordering::AcqRel);
            if !woke || deadline.passed() {
                return self.try_take();
            }
        }
    }

    fn release(&self, n: u32) -> Result<(), SyncError> {
        let value = self.segment.word(VALUE);
        let bound = self.segment.word(BOUND).load(Ordering::Acquire);
        let mut current = value.load(Ordering::Acquire);
        loop {
            let next = current.checked_add(n).ok_or(SyncError::TooManyReleases)?;
            if bound != 0 && next > bound {
                return Err(SyncError::TooManyReleases);
            }
            match value.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        if self.segment.word(SLEEPERS).load(Ordering::Acquire) > 0 {
            sys::futex_wake(value, n);
        }
        Ok(())
    }
}

macro_rules! semaphore_type {
    ($(#[$doc:meta])* $name:ident, $guard:ident) => {
        $(#[$doc])*
        pub struct $name {
            inner: Counter,
        }

        impl $name {
            /// Attaches to the semaphore in segment `name` (what a child gets when one is passed to it).
            pub fn open(name: &str) -> Result<Self, SyncError> {
                Self::attach(name, false)
            }

            /// Attaches: counting a reference, or (`adopt`) taking over one counted in transit.
            fn attach(name: &str, adopt: bool) -> Result<Self, SyncError> {
                let segment =
                    if adopt { Segment::adopt(name, Kind::Semaphore)? } else { Segment::open(name, Kind::Semaphore)? };
                let inner = Counter { segment };
                let bounded = inner.segment.word(BOUND).load(Ordering::Acquire) != 0;
                if bounded != (stringify!($name) == "BoundedSemaphore") {
                    return Err(SyncError::WrongKind { name: name.to_owned(), expected: stringify!($name) });
                }
                Ok($name { inner })
            }

            /// Another handle to the same semaphore, to pass into a child.
            pub fn try_clone(&self) -> Result<Self, SyncError> {
                Self::open(self.name())
            }

            /// The shared-memory segment's name.
            pub fn name(&self) -> &str {
                self.inner.segment.name()
            }

            /// Blocks until the value is positive, then decrements it. The guard increments it again when
            /// dropped (use [`leak`]($guard::leak) and [`release`](Self::release) to pair them by hand).
            pub fn acquire(&self) -> $guard<'_> {
                self.inner.acquire(Deadline::after(None));
                $guard { semaphore: self }
            }

            /// Decrements the value if it is positive; `None` otherwise.
            pub fn try_acquire(&self) -> Option<$guard<'_>> {
                self.inner.try_take().then(|| $guard { semaphore: self })
            }

            /// Waits at most `timeout` for a positive value; `None` when the time ran out.
            pub fn acquire_timeout(&self, timeout: Duration) -> Option<$guard<'_>> {
                self.inner.acquire(Deadline::after(Some(timeout))).then(|| $guard { semaphore: self })
            }

            /// The current value (available on every platform, unlike CPython's on macOS).
            pub fn get_value(&self) -> u32 {
                self.inner.segment.word(VALUE).load(Ordering::Acquire)
            }

            pub(crate) fn raw_release(&self) -> Result<(), SyncError> {
                self.inner.release(1)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("name", &self.name()).field("value", &self.get_value()).finish()
            }
        }

        /// Travels by name; the receiver attaches to the same semaphore.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.inner.segment.in_transit();
                self.name().serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                Self::attach(&name, true).map_err(serde::de::Error::custom)
            }
        }

        /// One unit of the semaphore; dropping it releases the unit.
        #[must_use = "the unit is released as soon as the guard is dropped"]
        pub struct $guard<'a> {
            semaphore: &'a $name,
        }

        impl $guard<'_> {
            /// Keeps the unit past the guard (release it later with the semaphore's `release`).
            pub fn leak(self) {
                std::mem::forget(self);
            }
        }

        impl Drop for $guard<'_> {
            fn drop(&mut self) {
                if let Err(e) = self.semaphore.raw_release() {
                    // A bounded semaphore released past its bound elsewhere: only `Drop` sees it, so it is said.
                    log::error!("mp-sync: releasing a unit of {} failed: {e}", self.semaphore.name());
                }
            }
        }

        impl fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard)).field("semaphore", &self.semaphore.name()).finish()
            }
        }
    };
}

semaphore_type!(
    /// A counting semaphore shared between processes (CPython's `multiprocessing.Semaphore`).
    ///
    /// The value is a `u32`, so a negative initial value cannot be expressed. A process that dies holding
    /// a unit does not give it back (as in CPython); waits with a timeout are never stranded.
    ///
    /// ```
    /// # mp_process::init();
    /// let sem = mp_sync::Semaphore::new(2)?;
    /// let a = sem.acquire();
    /// let _b = sem.acquire();
    /// assert!(sem.try_acquire().is_none());
    /// drop(a);
    /// assert_eq!(sem.get_value(), 1);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    Semaphore,
    SemaphoreGuard
);

semaphore_type!(
    /// A semaphore that may not be released above its initial value (CPython's
    /// `multiprocessing.BoundedSemaphore`): such a release is [`SyncError::TooManyReleases`] and leaves the
    /// value unchanged.
    ///
    /// ```
    /// # mp_process::init();
    /// let sem = mp_sync::BoundedSemaphore::new(1)?;
    /// assert!(matches!(sem.release(), Err(mp_sync::SyncError::TooManyReleases)));
    /// assert_eq!(sem.get_value(), 1);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    BoundedSemaphore,
    BoundedSemaphoreGuard
);

impl Semaphore {
    /// A semaphore starting at `value` (CPython's default is 1).
    pub fn new(value: u32) -> Result<Self, SyncError> {
        Ok(Semaphore { inner: Counter::create(value, 0)? })
    }

    /// Increments the value by `n`, waking as many waiters (CPython 3.9+'s `release(n)`).
    pub fn release_n(&self, n: u32) -> Result<(), SyncError> {
        self.inner.release(n)
    }

    /// Increments the value by one (CPython's `release()`); an overflow of `u32` is
    /// [`SyncError::TooManyReleases`].
    pub fn release(&self) -> Result<(), SyncError> {
        self.inner.release(1)
    }
}

impl BoundedSemaphore {
    /// A bounded semaphore starting at, and bounded by, `value` (at least 1).
    pub fn new(value: u32) -> Result<Self, SyncError> {
        Ok(BoundedSemaphore { inner: Counter::create(value, value.max(1))? })
    }

    /// Increments the value by one; above the bound it is [`SyncError::TooManyReleases`].
    pub fn release(&self) -> Result<(), SyncError> {
        self.inner.release(1)
    }
}
