//! Python's `multiprocessing` pipes, queues and connections for Rust: typed messages through serde, raw
//! byte messages framed exactly as CPython frames them, and queues over shared memory.
//!
//! ```
//! use mp_ipc::{Connection, Direction, Queue, pipe};
//! use mp_process::Process;
//!
//! fn worker((mut conn, results): (Connection, Queue<u64>)) {
//!     conn.send("ready").unwrap();
//!     let n: u64 = conn.recv().unwrap();
//!     results.put(n * n).unwrap();
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     mp_process::init();
//!     let (mut ours, theirs) = pipe(Direction::Duplex)?;
//!     let results = Queue::new()?;
//!     let mut child = Process::new(worker, (theirs, results.clone()));
//!     child.start()?;
//!     assert_eq!(ours.recv::<String>()?, "ready");
//!     ours.send(&12u64)?;
//!     assert_eq!(results.get()?, 144);
//!     child.join()?;
//!     Ok(())
//! }
//! ```
//!
//! Architecture invariant: uses mp-process (handles, `wait`) and mp-sync (robust mutexes, futexes); nothing
//! above.
//!
//! # Connections
//!
//! [`pipe`] makes a pair of [`Connection`]s. `send` / `recv` carry serde values (postcard); `send_bytes` /
//! `recv_bytes` carry bytes in CPython's framing. End of file at a message boundary ([`RecvError::Eof`]) and
//! in the middle of one ([`RecvError::Truncated`]) differ; sending to a closed peer is
//! [`SendError::BrokenPipe`], never a death by SIGPIPE; a header claiming more than the connection's maximum
//! message size is refused before anything is allocated. Connections work with [`mp_process::wait`] together
//! with processes, and can be passed into children.
//!
//! # Listeners and clients
//!
//! [`Listener`] and [`Client`] connect processes that did not start one another, over a Unix socket, a Linux
//! abstract name or TCP ([`Address`]), with CPython's mutual HMAC authentication when given a key: a Python
//! `multiprocessing.connection.Client` can connect to an mp `Listener`, and the other way round.
//!
//! # Queues
//!
//! [`Queue`], [`SimpleQueue`] and [`JoinableQueue`] carry serde values between any number of producer and
//! consumer processes through a ring in shared memory, and past it a spill that grows as needed: `put` on
//! `Queue::new()` never waits for a consumer, and a producer may exit as soon as it has put its items. `put`
//! serializes inside the call (an error there, never a lost item); `empty` and `qsize` are exact; a process
//! killed in the middle of a `put` or `get` neither corrupts nor wedges the queue.
//!
//! # Levels
//!
//! Each module uses only modules on lower levels (`cargo xtask tidy` checks it):
//!
//! | level | modules | what they hold |
//! |---|---|---|
//! | 0 | `address` | where listeners listen |
//! | 1 | `sys`, `error` | sockets and descriptors; the error types |
//! | 2 | `frame`, `ring` | CPython's message framing; the shared-memory byte ring |
//! | 3 | `connection`, `queue` | `Connection` and `pipe`; the queues |
//! | 4 | `auth` | CPython's HMAC handshake |
//! | 5 | `listener` | `Listener` and `Client` |

#![warn(missing_docs)]

mod address;
mod auth;
mod connection;
mod error;
mod frame;
mod listener;
mod queue;
mod ring;
mod sys;

pub use crate::{
    address::Address,
    connection::{Connection, DEFAULT_MAX_MESSAGE, Direction, pipe},
    error::{AuthenticationError, ConnectError, GetError, PutError, RecvError, SendError, TaskDoneError},
    listener::{Client, DEFAULT_HANDSHAKE_TIMEOUT, Listener, ListenerBuilder},
    queue::{DEFAULT_QUEUE_CAPACITY, JoinableQueue, Queue, QueueBuilder, SimpleQueue},
};
