//! The error types: what a pool operation refuses ([`PoolError`]) and why a task has no result
//! ([`TaskError`]).

use mp_process::PanicInfo;

use crate::task::Failure;

/// Why a pool or executor could not be built or could not take work.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// `processes(0)` (CPython: "Number of processes must be at least 1").
    #[error("number of processes must be at least 1")]
    ZeroProcesses,
    /// A chunk size of 0 (CPython: "Chunksize must be 1+").
    #[error("chunksize must be at least 1")]
    ZeroChunksize,
    /// `max_tasks_per_child(0)` (CPython: "maxtasksperchild must be a positive int or None").
    #[error("max_tasks_per_child must be at least 1")]
    ZeroMaxTasks,
    /// `max_memory_per_child(0)` or `memory_limit(0)`: no worker could run a task.
    #[error("a worker memory limit must be at least 1 byte")]
    ZeroMemory,
    /// Work submitted after `close`, `terminate` or `shutdown` (CPython: "Pool not running" /
    /// "cannot schedule new futures after shutdown").
    #[error("the pool is closed")]
    Closed,
    /// `join` before `close` or `terminate` (CPython: `ValueError`).
    #[error("join() needs close() or terminate() first")]
    NotClosed,
    /// The pool stopped because a worker's initializer failed (or workers kept dying before starting).
    #[error("the pool is broken: {0}")]
    Broken(TaskError),
    /// The arguments failed to serialize; nothing was submitted.
    #[error("failed to serialize the task arguments: {0}")]
    Serialize(String),
    /// A worker process could not be started.
    #[error("failed to start a worker: {0}")]
    Start(String),
    /// A task failed (from the blocking calls: `map`, `apply`, ...).
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The operating system refused (creating the pool's queues or shared memory).
    #[error("pool failure: {0}")]
    Io(String),
}

/// Why a task has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked in its worker: message, location, worker name and pid. The pool goes on.
    #[error("{0}")]
    Panicked(PanicInfo),
    /// The worker running the task died (SIGKILL, OOM, `exit`) before finishing it. Its other tasks go to
    /// other workers, and a new worker takes its place.
    #[error("worker {pid} running the task was lost ({})", describe_exit(*exitcode))]
    WorkerLost {
        /// The worker's pid.
        pid: u32,
        /// Its exit code (`-N`: killed by signal `N`).
        exitcode: i32,
    },
    /// A worker's initializer failed: the pool stopped, and every unfinished task got this error.
    #[error("the pool's initializer failed: {0}")]
    Initializer(Box<TaskError>),
    /// Workers could not be started (8 failed starts of one slot in a row, retried with backoff from 20 ms to
    /// 1 s, or 3 deaths in a row before starting): the pool stopped.
    #[error("workers could not be started: {0}")]
    WorkerStart(String),
    /// The pool was terminated, or the future cancelled (before the task ran, or while it ran with
    /// [`cancel_running`](crate::TaskFuture::cancel_running)).
    #[error("the task was cancelled")]
    Cancelled,
    /// The worker running the task aborted under the pool's hard memory limit
    /// ([`PoolBuilder::memory_limit`](crate::PoolBuilder::memory_limit)): an allocation failed. A new worker
    /// took its place.
    #[error("worker {pid} ran out of memory under its limit of {limit} bytes (an allocation failed)")]
    MemoryExceeded {
        /// The limit: how much the worker's address space could grow.
        limit: u64,
        /// The worker's pid.
        pid: u32,
    },
    /// The task ran past its hard time limit ([`PoolBuilder::task_timeout`](crate::PoolBuilder::task_timeout),
    /// [`TaskOptions::timeout`](crate::TaskOptions::timeout)): its worker was killed, and a new one took its
    /// place.
    #[error("the task was stopped after running {elapsed:?}, past its time limit (worker {pid} was killed)")]
    TimedOut {
        /// How long it had run when its worker was killed.
        elapsed: std::time::Duration,
        /// The worker's pid.
        pid: u32,
    },
    /// No result within the timeout.
    #[error("timed out waiting for the result")]
    Timeout,
    /// The result was taken already by an earlier `get_timeout` / `result_timeout` on this handle.
    #[error("the result was already taken")]
    AlreadyTaken,
    /// A done-callback asked for its own future's result, which it is being handed by reference.
    #[error("the result is being handed to this callback (by reference): it cannot also be taken here")]
    InCallback,
    /// The worker could not decode the arguments.
    #[error("the worker could not decode the arguments: {0}")]
    ArgumentDecode(String),
    /// The task's result failed to serialize in the worker (the pool goes on).
    #[error("the task's result failed to serialize: {0}")]
    ResultEncode(String),
    /// The result failed to decode here.
    #[error("the task's result failed to decode: {0}")]
    ResultDecode(String),
}

fn describe_exit(code: i32) -> String {
    if code < 0 { format!("killed by signal {}", -code) } else { format!("exit code {code}") }
}

impl TaskError {
    pub(crate) fn from_failure(failure: Failure) -> Self {
        match failure {
            Failure::Panicked(info) => TaskError::Panicked(info),
            Failure::ArgumentDecode(message) => TaskError::ArgumentDecode(message),
            Failure::ResultEncode(message) => TaskError::ResultEncode(message),
        }
    }

    /// The signal that killed the worker, for [`TaskError::WorkerLost`].
    pub fn signal(&self) -> Option<i32> {
        match self {
            TaskError::WorkerLost { exitcode, .. } if *exitcode < 0 => Some(-exitcode),
            _ => None,
        }
    }
}
