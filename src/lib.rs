//! Python's `multiprocessing`, rebuilt for Rust: this facade re-exports the mp crates under Python's names.
//! Depend on it for everything, or on one crate (`mp-process`, ...) for just that part.
//!
//! ```
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     mp::init();
//!     let mut p = mp::Process::new(square, 9);
//!     p.start()?;
//!     assert_eq!(p.join()?, 81);
//!     Ok(())
//! }
//! ```
//!
//! Architecture invariant: re-exports only; no code of its own.

#![warn(missing_docs)]

/// Pipes, connections, queues, listeners and clients (the `mp-ipc` crate; Python's
/// `multiprocessing.connection` and queues).
pub use mp_ipc as connection;
/// Logging from every child, forwarded to the parent (the `mp-log` crate; Python's `multiprocessing`
/// `get_logger` / `log_to_stderr`).
pub use mp_log as logging;
/// Pools of workers and the process pool executor (the `mp-pool` crate).
pub use mp_pool as pool;
/// Processes, start methods and contexts (the `mp-process` crate).
pub use mp_process as process;
/// Shared memory and typed raw values (the `mp-shm` crate).
pub use mp_shm as shm;
/// Locks and the other synchronization primitives (the `mp-sync` crate).
pub use mp_sync as sync;

pub use mp_ipc::{Client, Connection, Direction, JoinableQueue, Listener, Queue, SimpleQueue, pipe};
pub use mp_log::{get_logger, log_to_stderr};
pub use mp_pool::{AsyncResult, Pool, ProcessPoolExecutor};
pub use mp_process::{
    Process, StartMethod, active_children, cpu_count, current_process, get_context, get_start_method, init,
    parent_process, set_start_method,
};
pub use mp_shm::{RawArray, RawValue, SharedMemory};
pub use mp_sync::{Array, Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, Value};
