//! Logging from every child process reaches the parent: Python's `multiprocessing` logging for Rust, with
//! nothing lost silently and nothing that can hang.
//!
//! ```
//! fn work(n: u32) -> u32 {
//!     log::info!("working on {n}");
//!     n * 2
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     mp_process::init();
//!     // Every process of the tree logs "[LEVEL/process-name] message" lines on this process's stderr.
//!     let logger = mp_log::log_to_stderr(log::LevelFilter::Info)?;
//!     logger.info("starting");
//!     let mut p = mp_process::Process::new(work, 21);
//!     p.start()?;
//!     assert_eq!(p.join()?, 42); // "[INFO/Process-1] working on 21", printed by the parent
//!     Ok(())
//! }
//! ```
//!
//! Architecture invariant: uses mp-process (its child-setup and exit hooks, inherited settings, who a process
//! is) and mp-ipc (the queues of [`QueueHandler`]); nothing above.
//!
//! # One logger for the whole tree
//!
//! [`install`] (or a [`Builder`]) makes mp's logger the `log` facade's global logger. In the process that
//! installed it, records go to the inner logger you give (env_logger, a file, anything `log::Log`). In every
//! child of the tree — under `fork`, `spawn` and `forkserver`, grandchildren included — records are forwarded
//! to that process and re-emitted through the inner logger with their level, target, module path, file, line
//! and key-values, plus the child's `process_name`, `pid` and `seq` (its per-process sequence number) as
//! key-values. Spawned and fork-server children never run `main`: mp-process's
//! [`register_child_setup`](mp_process::register_child_setup) hook sets them up before their target. A
//! forked child never calls the inner logger, so a handler lock it inherited held cannot deadlock it.
//!
//! # A transport that cannot hang
//!
//! Each child publishes its records in a ring of memory it shares with the parent's listener (one producer,
//! one consumer: no lock shared between processes, no feeder thread, no system call on a steady stream), and
//! keeps a connection to it (a `SOCK_SEQPACKET` socket at a Linux abstract address) for wake-ups and for the
//! news of either side's end. A child never waits on its parent: when its ring is full, it waits at most
//! [`Builder::send_wait`] (zero by default), then drops the record and counts it; the count rides on the next
//! record and on the child's last word as it exits, and the parent logs `Process-3 (pid N) dropped K records`.
//! A child whose parent is gone prints what the parent never read, then writes `[LEVEL/name] message` lines,
//! to its own stderr. A child killed in the middle of a record loses at most that record, and the parent never
//! waits for anyone: [`LogHandle::stop`] reads what was sent and returns.
//!
//! # CPython's API
//!
//! [`get_logger`] (mp's own records, target `mp`), [`log_to_stderr`], [`SUBDEBUG`] and [`SUBWARNING`];
//! [`QueueHandler`] and [`QueueListener`] over an mp queue, for CPython's explicit pattern.
//!
//! # `tracing`
//!
//! With the feature `tracing`, `LogLayer` turns `tracing` events into `log` records (forwarded from children
//! like any other, re-emitted in the parent through the inner `log` logger), and `forward_tracing()` gives
//! every child a subscriber with it.
//!
//! # Levels
//!
//! Each module uses only modules on lower levels (`cargo xtask tidy` checks it):
//!
//! | level | modules | what they hold |
//! |---|---|---|
//! | 0 | `sys`, `error` | the sockets; the error type |
//! | 1 | `record`, `ring` | a record as it travels; a child's shared-memory ring |
//! | 2 | `queue`, `listener` | queue handler and listener; the parent's listener thread |
//! | 3 | `forward` | the global logger, `install`, a child's side |
//! | 4 | `stderr`, `tracing_layer` | CPython's `log_to_stderr` and `get_logger`; the `tracing` layer (feature) |

#![warn(missing_docs)]

mod error;
mod forward;
mod listener;
mod queue;
mod record;
mod ring;
mod stderr;
mod sys;
#[cfg(feature = "tracing")]
mod tracing_layer;

#[cfg(feature = "tracing")]
pub use crate::tracing_layer::{LogLayer, forward_tracing};
pub use crate::{
    error::InstallError,
    forward::{Builder, DEFAULT_BUFFER, LogHandle, install, is_forwarding},
    listener::ListenerStats,
    queue::{QueueHandler, QueueListener, RecordQueue},
    record::{DEFAULT_RECORD_CAP, LogRecord, TRUNCATED_MARKER, level_name, process_name},
    stderr::{Logger, SUBDEBUG, SUBWARNING, StderrLogger, get_logger, log_to_stderr},
};
