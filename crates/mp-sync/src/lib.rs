//! Python's `multiprocessing` synchronization for Rust: `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`,
//! `Condition`, `Event`, `Barrier`, and shared `Value` / `Array` with their own lock — robust where
//! CPython's are not: a process that dies holding a lock does not deadlock the others.
//!
//! ```
//! use mp_process::Process;
//! use mp_sync::Value;
//!
//! fn increment(counter: Value<u64>) {
//!     for _ in 0..1000 {
//!         *counter.get_lock().unwrap() += 1;
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     mp_process::init();
//!     let counter = Value::new(0u64)?;
//!     let mut workers = Vec::new();
//!     for _ in 0..4 {
//!         let mut p = Process::new(increment, counter.try_clone()?);
//!         p.start()?;
//!         workers.push(p);
//!     }
//!     for mut p in workers {
//!         p.join()?;
//!     }
//!     assert_eq!(counter.value()?, 4000);
//!     Ok(())
//! }
//! ```
//!
//! Architecture invariant: uses mp-shm (every object lives in a shared-memory segment, tracked for cleanup)
//! and mp-process; nothing above.
//!
//! # Locks
//!
//! [`Lock`] and [`RLock`] are robust, process-shared pthread mutexes. `acquire` returns a guard; when the
//! previous holder died inside its critical section (even by SIGKILL) the next acquirer gets the lock and
//! its guard says [`previous_owner_died`](LockGuard::previous_owner_died). A waiter parks on the owner it
//! saw rather than on glibc's "has waiters" value, so a holder that releases and re-acquires in a loop does
//! not pay a system call each time (the crate README explains how, and what it measured).
//!
//! # Semaphores, events, conditions, barriers
//!
//! [`Semaphore`] / [`BoundedSemaphore`] (with `get_value` on every platform), [`Event`], [`Condition`] and
//! [`Barrier`] wait on shared futexes with absolute deadlines, so a timeout is honoured exactly and a waiter
//! with a timeout is never stranded by a dead peer.
//!
//! # Shared values
//!
//! [`Value<T>`] and [`Array<T>`] pair an [`mp_shm::RawValue`] / [`mp_shm::RawArray`] with an [`RLock`].
//!
//! Every object can be passed into a child under every start method (it serializes as the name of its
//! segment) or attached with `open(name)`; `try_clone` gives a second handle.
//!
//! # Levels
//!
//! Each module uses only modules on lower levels (`cargo xtask tidy` checks it):
//!
//! | level | modules | what they hold |
//! |---|---|---|
//! | 0 | `sys`, `error` | robust mutexes and futexes; the error types |
//! | 1 | `segment` | the shared segment every object lives in, with its reference count |
//! | 2 | `lock`, `semaphore`, `event`, `barrier` | the primitives |
//! | 3 | `condition`, `value` | those built on a lock |

#![warn(missing_docs)]

mod barrier;
mod condition;
mod error;
mod event;
mod lock;
mod segment;
mod semaphore;
mod sys;
mod value;

pub use crate::{
    barrier::{Barrier, BarrierAction, NoAction},
    condition::{Condition, ConditionGuard, ConditionLock},
    error::SyncError,
    event::Event,
    lock::{Lock, LockGuard, RLock, RLockGuard},
    semaphore::{BoundedSemaphore, BoundedSemaphoreGuard, Semaphore, SemaphoreGuard},
    value::{Array, ArrayGuard, Value, ValueGuard},
};

#[doc(hidden)]
pub use crate::lock::SharedMutex as __SharedMutex;

/// Building blocks for shared-memory objects of other crates (mp-ipc's queues embed them in their own
/// segments): a robust process-shared mutex placed at a given address, futex waits on shared words, and
/// absolute deadlines on the monotonic clock.
pub mod raw {
    pub use crate::sys::{Deadline, Locked, MUTEX_SIZE, RobustMutex, futex_wait, futex_wake};
}
