//! Linux: glibc's robust process-shared mutexes, shared futexes through rustix, the monotonic clock.

use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use rustix::thread::futex;

/// Where a [`RobustMutex`]'s parking word lies: right after glibc's mutex, in the same cache line.
const PARK: usize = size_of::<libc::pthread_mutex_t>().next_multiple_of(8);

/// The bytes a [`RobustMutex`] occupies in shared memory: glibc's mutex, then the parking word.
pub const MUTEX_SIZE: usize = PARK + size_of::<AtomicU64>();

/// The robust-futex protocol (kernel ABI) keeps the owner's thread id in the lock word's low 30 bits, and
/// marks a word whose owner died; glibc puts the word first in `pthread_mutex_t`.
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;

/// The parking word: bits 0–15 count the waiters registered to sleep, bits 16–31 how many of them have been
/// woken and are not back yet, bits 32–63 count registrations (and wrap).
const SLEEPER: u64 = 1;
const WOKEN: u64 = 1 << 16;
const REGISTERED: u64 = 1 << 32;

fn sleepers(park: u64) -> u64 {
    park & 0xffff
}

fn woken(park: u64) -> u64 {
    (park >> 16) & 0xffff
}

/// A parked waiter looks at the lock by itself at least this often. The kernel only wakes a dead owner's
/// waiters when the lock word says someone sleeps on it, and ours never does (see [`RobustMutex`]), so this
/// bounds how long a waiter can take to learn that its lock's holder died.
const SLICE: Duration = Duration::from_millis(10);

/// Wake-ups in a row that find nobody asleep, though some waiter is registered, before an unlocker presumes
/// the registration is a dead process's and drops it. A live waiter takes a microsecond or two to fall asleep
/// after registering, during which one or two such wake-ups are normal.
const FUTILE_LIMIT: u32 = 1024;

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

/// A robust, process-shared pthread mutex living in shared memory, with a parking word of our own.
///
/// Mutual exclusion and the dead-owner report (`EOWNERDEAD`) are glibc's: every acquisition is a
/// `pthread_mutex_trylock`. What is ours is how waiters sleep. glibc's own slow path waits on the lock word
/// for the exact value "held, with waiters", which the holder's next unlock and relock erase; against a
/// holder that takes the lock again at once, the waiter's sleep fails within a microsecond, over and over,
/// and every one of those attempts costs the holder a wake-up system call. Here a waiter registers in the
/// parking word and sleeps on the lock word for the plain owner value it saw, which survives the holder's
/// unlock-and-relock; an unlocker makes a system call only for a registered waiter that is not already on
/// its way back. Two processes hammering one lock made about 12 M acquisitions a second through glibc's
/// blocking path, and make about 30 M through this one.
#[derive(Debug)]
pub struct RobustMutex {
    ptr: *mut libc::pthread_mutex_t,
    /// Wake-ups in a row, from this handle, that found nobody asleep (see [`FUTILE_LIMIT`]).
    futile: AtomicU32,
}

impl RobustMutex {
    /// Initialises a mutex at `ptr` (fresh zeroed shared memory, [`MUTEX_SIZE`] bytes, 8-aligned).
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
        Ok(RobustMutex { ptr, futile: AtomicU32::new(0) })
    }

    /// A handle on a mutex that [`init`](Self::init) set up (in this or another process).
    ///
    /// # Safety
    ///
    /// `ptr` must point at an initialised mutex that outlives the handle.
    pub unsafe fn attach(ptr: *mut u8) -> Self {
        RobustMutex { ptr: ptr.cast(), futile: AtomicU32::new(0) }
    }

    /// glibc's lock word (`__data.__lock`, the first field).
    fn word(&self) -> &AtomicU32 {
        // SAFETY: the word is the first, 4-aligned `int` of a live mutex (constructor contract), and glibc
        // itself only ever accesses it atomically.
        unsafe { &*self.ptr.cast::<AtomicU32>() }
    }

    /// The parking word, after the mutex.
    fn park(&self) -> &AtomicU64 {
        // SAFETY: [`MUTEX_SIZE`] bytes belong to the mutex (constructor contract); `PARK` is 8-aligned from
        // an 8-aligned start; the word is only ever accessed atomically.
        unsafe { &*self.ptr.cast::<u8>().add(PARK).cast::<AtomicU64>() }
    }

    /// The id of the thread holding the mutex (0: none).
    pub fn owner(&self) -> u32 {
        self.word().load(Relaxed) & FUTEX_TID_MASK
    }

    /// How many times the holder holds a recursive mutex: glibc's `__data.__count`, which follows the lock
    /// word. Meaningful to the holder only.
    pub fn count(&self) -> u32 {
        // SAFETY: `__count` is the `unsigned int` right after the lock word in every glibc
        // `pthread_mutex_t` (`struct __pthread_mutex_s`, public layout), 4-aligned; only the holder writes it.
        unsafe { AtomicU32::from_ptr(self.ptr.cast::<u32>().add(1)) }.load(Relaxed)
    }

    #[inline]
    fn settle(&self, r: libc::c_int) -> io::Result<Locked> {
        match r {
            0 => Ok(Locked::Yes),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD grants it); marking it consistent keeps it usable.
                unsafe { libc::pthread_mutex_consistent(self.ptr) };
                Ok(Locked::OwnerDied)
            }
            libc::EBUSY => Ok(Locked::No),
            // glibc's trylock of a robust error-checking mutex its caller holds.
            libc::EDEADLK => Ok(Locked::Deadlock),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Locks, waiting until `deadline`.
    #[inline]
    pub fn lock(&self, deadline: Deadline) -> io::Result<Locked> {
        match self.try_lock()? {
            Locked::No => self.lock_slow(deadline),
            done => Ok(done),
        }
    }

    /// Parks until the lock comes free or `deadline` passes.
    #[cold]
    fn lock_slow(&self, deadline: Deadline) -> io::Result<Locked> {
        loop {
            let timeout = match deadline.remaining() {
                None => SLICE,
                Some(left) if left.is_zero() => return Ok(Locked::No),
                Some(left) => left.min(SLICE),
            };
            // Register, then read the owner: an unlock after the registration sees it and wakes us, and an
            // unlock before the read leaves a value the sleep below refuses to wait on.
            self.park().fetch_add(SLEEPER + REGISTERED, SeqCst);
            let seen = self.word().load(SeqCst);
            // Sleeps while the holder we saw holds it (or holds it again after letting go: then its next
            // unlock sees our registration).
            let woke = seen & FUTEX_TID_MASK != 0
                && seen & FUTEX_OWNER_DIED == 0
                && wait_for_change(self.word(), seen, timeout);
            self.unregister(if woke { SLEEPER + WOKEN } else { SLEEPER });
            match self.try_lock()? {
                Locked::No => {}
                done => return Ok(done),
            }
        }
    }

    /// Takes `amount` (sleepers and/or woken) off the parking word, never below zero: a registration dropped
    /// by [`FUTILE_LIMIT`] may come back to be removed by its owner after all.
    fn unregister(&self, amount: u64) {
        let _ = self.park().fetch_update(SeqCst, SeqCst, |mut park| {
            if amount & 0xffff != 0 && sleepers(park) > 0 {
                park -= SLEEPER;
            }
            if amount & (0xffff << 16) != 0 && woken(park) > 0 {
                park -= WOKEN;
            }
            Some(park)
        });
    }

    /// Locks if free.
    #[inline]
    pub fn try_lock(&self) -> io::Result<Locked> {
        // SAFETY: `self.ptr` is an initialised process-shared mutex (constructor contract).
        self.settle(unsafe { libc::pthread_mutex_trylock(self.ptr) })
    }

    /// Unlocks; `false` if the calling thread does not hold it (EPERM).
    #[inline]
    pub fn unlock(&self) -> bool {
        let park = self.park();
        let before = park.load(SeqCst);
        // Wake a sleeper while we still hold the lock: it cannot sneak in before it has gone to sleep.
        let missed = sleepers(before) > woken(before) && self.wake_one();
        // SAFETY: as in `try_lock`; an error-checking or recursive mutex reports a non-owner unlock as EPERM.
        if unsafe { libc::pthread_mutex_unlock(self.ptr) } != 0 {
            return false;
        }
        // A waiter that registered since `before`, or the one that `missed` found not yet asleep, may have
        // gone to sleep on the value we just cleared.
        if missed || park.load(SeqCst) / REGISTERED != before / REGISTERED {
            self.wake_one();
        }
        true
    }

    /// Wakes a registered waiter unless every one is already woken; `true` if the wake-up found nobody asleep.
    #[cold]
    fn wake_one(&self) -> bool {
        let park = self.park();
        let mut seen = park.load(SeqCst);
        loop {
            if sleepers(seen) <= woken(seen) {
                return false;
            }
            match park.compare_exchange_weak(seen, seen + WOKEN, SeqCst, SeqCst) {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
        if futex::wake(self.word(), futex::Flags::empty(), 1).unwrap_or(0) > 0 {
            self.futile.store(0, Relaxed);
            return false;
        }
        // The waiter is on its way to sleep (it will sleep on the owner value, and the next unlock wakes it),
        // or it died registered; after too many such misses in a row, presume the latter.
        self.unregister(WOKEN);
        if self.futile.fetch_add(1, Relaxed) >= FUTILE_LIMIT {
            self.futile.store(0, Relaxed);
            self.unregister(SLEEPER);
        }
        true
    }
}

/// Sleeps on a shared `word` while it holds `expected`, at most `timeout`; `true` if woken by a `FUTEX_WAKE`
/// (not by a timeout, a signal, or a changed value).
fn wait_for_change(word: &AtomicU32, expected: u32, timeout: Duration) -> bool {
    let timeout = futex::Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos().into() };
    futex::wait(word, futex::Flags::empty(), expected, Some(&timeout)).is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A mutex in a heap block of `MUTEX_SIZE` bytes, 8-aligned (as in a segment).
    fn mutex(recursive: bool) -> (Vec<u64>, RobustMutex) {
        let mut block = vec![0u64; MUTEX_SIZE.div_ceil(8)];
        // SAFETY: the block is MUTEX_SIZE bytes, 8-aligned, zeroed and outlives the handle (returned with it).
        let mutex = unsafe { RobustMutex::init(block.as_mut_ptr().cast(), recursive) }.unwrap();
        (block, mutex)
    }

    /// The two fields of glibc's `pthread_mutex_t` the mutex reads, where it reads them: the owner's thread id
    /// in the lock word at offset 0, the recursion count at offset 4.
    #[test]
    fn the_glibc_fields_are_where_they_are_read() {
        let (_block, m) = mutex(true);
        assert_eq!(m.owner(), 0);
        assert_eq!(m.try_lock().unwrap(), Locked::Yes);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        assert_eq!(m.owner(), tid, "the owner's tid in __lock");
        assert_eq!(m.count(), 1, "__count after one lock");
        assert_eq!(m.try_lock().unwrap(), Locked::Yes);
        assert_eq!(m.count(), 2, "__count after a second, recursive lock");
        assert!(m.unlock());
        assert!(m.unlock());
        assert_eq!(m.owner(), 0, "released");
    }
}
