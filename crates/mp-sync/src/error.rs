//! The error type of synchronization operations.

use std::io;

use mp_shm::ShmError;

/// Why a synchronization operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// `release` of a lock the caller does not hold (CPython: "release unlocked lock" / "cannot release
    /// un-acquired lock").
    #[error("cannot release a lock this thread does not hold")]
    NotHeld,
    /// `acquire` of a `Lock` the calling thread already holds, which would block forever (CPython: a hang).
    #[error("this thread already holds the lock: acquiring it again would deadlock")]
    WouldDeadlock,
    /// A `BoundedSemaphore` released more times than acquired (CPython: "Semaphore released too many
    /// times"); the value is unchanged.
    #[error("semaphore released too many times")]
    TooManyReleases,
    /// A `Barrier` is broken (aborted, reset while waiting, a wait timed out, or its action panicked).
    #[error("the barrier is broken")]
    BrokenBarrier,
    /// A `Barrier` needs at least one party.
    #[error("a barrier needs at least one party")]
    ZeroParties,
    /// The condition was given a guard of another lock.
    #[error("the guard belongs to another lock than this condition's")]
    ForeignGuard,
    /// The named segment holds another kind of object (a `Semaphore` opened as a `Lock`, ...).
    #[error("{name:?} is not a {expected}")]
    WrongKind {
        /// The segment's name.
        name: String,
        /// What the caller asked for.
        expected: &'static str,
    },
    /// Creating or attaching the shared memory failed.
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// The operating system refused.
    #[error("synchronization failed: {0}")]
    Io(#[from] io::Error),
}
