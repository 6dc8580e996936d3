//! Python's `multiprocessing.Pool` and `concurrent.futures.ProcessPoolExecutor` for Rust: typed through
//! serde, fast, and never hanging when a worker dies.
//!
//! ```
//! use mp_pool::Pool;
//!
//! fn is_prime(n: u32) -> bool {
//!     n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     mp_process::init();
//!     let pool = Pool::new(4)?;
//!     let flags = pool.map(is_prime, 1..=100_000)?;
//!     assert_eq!(flags.iter().filter(|p| **p).count(), 9592);
//!     Ok(())
//! }
//! ```
//!
//! Architecture invariant: uses mp-process (workers, the function-by-type mechanism), mp-ipc (queues) and
//! mp-shm (large inputs); nothing above.
//!
//! # Pool
//!
//! [`Pool`] has CPython's `map` / `starmap` / `map_async`, lazy and bounded `imap` / `imap_unordered`,
//! `apply` / `apply_async` returning an [`AsyncResult`], and `close` / `terminate` / `join`. Options go
//! through [`PoolBuilder`]: processes, an initializer, `max_tasks_per_child`, the start method.
//!
//! # Executor
//!
//! [`ProcessPoolExecutor`] hands out [`TaskFuture`]s (also `std::future::Future`s; named so as not to shadow the prelude's `Future`
//! in a `use mp_pool::*` module), with `map`, `shutdown`,
//! [`as_completed`] and [`wait`].
//!
//! # Beyond CPython
//!
//! A hard time limit per task ([`PoolBuilder::task_timeout`], [`TaskOptions`]): a task still running at its
//! deadline has its worker killed and fails with [`TaskError::TimedOut`]; the task can watch its deadline with
//! [`current_task`] and stop first. [`TaskFuture::cancel_running`] stops a running task the same way.
//!
//! # When things go wrong
//!
//! A task that panics fails only its own result ([`TaskError::Panicked`]: message, location, worker name
//! and pid). A worker killed in the middle of a task fails only that task ([`TaskError::WorkerLost`], with
//! the pid and signal) within about 20 ms; its other tasks go to other workers and a new worker takes its
//! place. An initializer that panics stops the pool: every pending result gets [`TaskError::Initializer`],
//! and no worker is started again. A terminated pool's unfinished results become [`TaskError::Cancelled`].
//!
//! # Levels
//!
//! Each module uses only modules on lower levels (`cargo xtask tidy` checks it):
//!
//! | level | modules | what they hold |
//! |---|---|---|
//! | 0 | `task`, `options` | jobs as they travel, their trampolines (through mp-process's `offset`); per-task limits and `current_task` |
//! | 1 | `error` | the error types |
//! | 2 | `cell`, `worker` | a result waiting to be set; the worker process's loop |
//! | 3 | `core` | the engine: handler thread, workers, dispatch |
//! | 4 | `pool` | `Pool` and its results |
//! | 5 | `executor` | `ProcessPoolExecutor` and futures |

#![warn(missing_docs)]

mod cell;
mod core;
mod error;
mod executor;
mod options;
mod pool;
mod task;
mod worker;

pub use crate::{
    error::{PoolError, TaskError},
    executor::{
        AsCompleted, ExecutorBuilder, MapResults, ProcessPoolExecutor, ReturnWhen, TaskFuture, Waitable, as_completed,
        get_reusable_executor, wait,
    },
    options::{CurrentTask, TaskOptions, current_task},
    pool::{AsyncResult, Imap, Pool, PoolBuilder},
    task::Task,
};
