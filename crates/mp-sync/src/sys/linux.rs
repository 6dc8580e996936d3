//! Linux: glibc's robust process-shared mutexes, shared futexes through rustix, the monotonic clock.

use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use rustix::thread::futex;

unsafe extern "C" {
    /// glibc ≥ 2.30: like `pthread_mutex_timedlock`, on a chosen clock (we use the monotonic one, so a
    /// wall-clock change cannot stretch or cut a timeout).
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// The bytes a [`RobustMutex`] occupies in shared memory.
pub const MUTEX_SIZE: usize = size_of::<libc::pthread_mutex_t>();

/// An absolute deadline on the monotonic clock. Built from a timeout once, so that retries after spurious
/// wake-ups never extend the total wait; an enormous timeout is no deadline at all rather than an overflow.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// The instant `timeout` from now (`None`, or a timeout too large to represent: no deadline).
    pub fn after(timeout: Option<Duration>) -> Self {
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// Time left: `None` without a deadline, `Some(ZERO)` once passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        self.remaining().is_some_and(|r| r.is_zero())
    }

    /// The deadline as a `CLOCK_MONOTONIC` timespec (normalised: nanoseconds always below one second).
    fn monotonic_timespec(&self) -> Option<libc::timespec> {
        let remaining = self.remaining()?;
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let mut sec = now.tv_sec.saturating_add(remaining.as_secs().min(i64::MAX as u64) as i64);
        let mut nsec = now.tv_nsec as i64 + i64::from(remaining.subsec_nanos());
        if nsec >= 1_000_000_000 {
            sec = sec.saturating_add(1);
            nsec -= 1_000_000_000;
        }
        Some(libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as libc::c_long })
    }
}

/// Bumped in every child right after `fork`, which invalidates the cached thread ids below.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

thread_local! {
    /// `(fork generation, tid)`: `gettid` is a system call, and locks need the id on every operation.
    static THREAD_ID: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((u32::MAX, 0)) };
}

/// The calling thread's id: unique across all processes of the system while the thread lives.
pub(crate) fn thread_id() -> u32 {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: the handler only increments an atomic, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    let generation = FORK_GENERATION.load(std::sync::atomic::Ordering::Relaxed);
    THREAD_ID.with(|cached| {
        let (cached_generation, tid) = cached.get();
        if cached_generation == generation {
            return tid;
        }
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        cached.set((generation, tid));
        tid
    })
}

/// What locking a [`RobustMutex`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Locked {
    /// Acquired.
    Yes,
    /// Acquired, but the previous owner died holding it (the mutex has been made consistent again).
    OwnerDied,
    /// Not acquired: held by someone else (try) or the deadline passed.
    No,
    /// The calling thread holds it already (a non-recursive mutex).
    Deadlock,
}

/// A robust, process-shared pthread mutex living in shared memory.
#[derive(Debug)]
pub struct RobustMutex {
    ptr: *mut libc::pthread_mutex_t,
}

impl RobustMutex {
    /// Initialises a mutex at `ptr` (fresh zeroed shared memory, [`MUTEX_SIZE`] bytes, suitably aligned).
    ///
    /// # Safety
    ///
    /// `ptr` must be valid, aligned, not in use by anyone yet, and outlive every `RobustMutex` made from it.
    pub unsafe fn init(ptr: *mut u8, recursive: bool) -> io::Result<Self> {
        let ptr = ptr.cast::<libc::pthread_mutex_t>();
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        let kind = if recursive { libc::PTHREAD_MUTEX_RECURSIVE } else { libc::PTHREAD_MUTEX_ERRORCHECK };
        // SAFETY: `attr` is initialised by pthread_mutexattr_init before use and destroyed after; `ptr` is
        // valid per the caller.
        let r = unsafe {
            let mut r = libc::pthread_mutexattr_init(attr.as_mut_ptr());
            if r == 0 {
                r = libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            }
            if r == 0 {
                r = libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
            }
            if r == 0 {
                r = libc::pthread_mutexattr_settype(attr.as_mut_ptr(), kind);
            }
            if r == 0 {
                r = libc::pthread_mutex_init(ptr, attr.as_ptr());
            }
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            r
        };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(RobustMutex { ptr })
    }

    /// A handle on a mutex that [`init`](Self::init) set up (in this or another process).
    ///
    /// # Safety
    ///
    /// `ptr` must point at an initialised mutex that outlives the handle.
    pub unsafe fn attach(ptr: *mut u8) -> Self {
        RobustMutex { ptr: ptr.cast() }
    }

    fn settle(&self, r: libc::c_int) -> io::Result<Locked> {
        match r {
            0 => Ok(Locked::Yes),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD grants it); marking it consistent keeps it usable.
                unsafe { libc::pthread_mutex_consistent(self.ptr) };
                Ok(Locked::OwnerDied)
            }
            libc::EBUSY | libc::ETIMEDOUT => Ok(Locked::No),
            libc::EDEADLK => Ok(Locked::Deadlock),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Locks, waiting until `deadline`.
    pub fn lock(&self, deadline: Deadline) -> io::Result<Locked> {
        let r = match deadline.monotonic_timespec() {
            // SAFETY: `self.ptr` is an initialised process-shared mutex (constructor contract).
            None => unsafe { libc::pthread_mutex_lock(self.ptr) },
            // SAFETY: as above; `ts` is a valid, normalised timespec on the stated clock.
            Some(ts) => unsafe { pthread_mutex_clocklock(self.ptr, libc::CLOCK_MONOTONIC, &ts) },
        };
        self.settle(r)
    }

    /// Locks if free.
    pub fn try_lock(&self) -> io::Result<Locked> {
        // SAFETY: as in `lock`.
        self.settle(unsafe { libc::pthread_mutex_trylock(self.ptr) })
    }

    /// Unlocks; `false` if the calling thread does not hold it (EPERM).
    pub fn unlock(&self) -> bool {
        // SAFETY: as in `lock`; an error-checking or recursive mutex reports a non-owner unlock as EPERM.
        unsafe { libc::pthread_mutex_unlock(self.ptr) == 0 }
    }
}

/// Waits while `*word == expected`, until woken or `deadline`. Returns `false` on timeout.
pub fn futex_wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> bool {
    let timeout = deadline
        .remaining()
        .map(|r| futex::Timespec { tv_sec: r.as_secs().min(i64::MAX as u64) as i64, tv_nsec: r.subsec_nanos().into() });
    if timeout.is_some_and(|t| t.tv_sec == 0 && t.tv_nsec == 0) {
        return false;
    }
    // Shared (not PRIVATE): the word lives in memory mapped by several processes.
    !matches!(futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref()), Err(rustix::io::Errno::TIMEDOUT))
}

/// Wakes up to `count` waiters on `word` (`u32::MAX`: all of them).
pub fn futex_wake(word: &AtomicU32, count: u32) {
    // The kernel reads the count as a signed int: u32::MAX would be -1, which wakes just one.
    let _ = futex::wake(word, futex::Flags::empty(), count.min(i32::MAX as u32));
}
