//! Python's `multiprocessing` pipes and connections for Rust: typed messages through serde, raw byte
//! messages framed exactly as CPython frames them.
//!
//! ```
//! use mp_ipc::{Connection, Direction, pipe};
//! use mp_process::Process;
//!
//! fn greet(mut conn: Connection) {
//!     conn.send("hello from the child").unwrap();
//!     let reply: String = conn.recv().unwrap();
//!     assert_eq!(reply, "hello back");
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     mp_process::init();
//!     let (mut ours, theirs) = pipe(Direction::Duplex)?;
//!     let mut child = Process::new(greet, theirs);
//!     child.start()?;
//!     let greeting: String = ours.recv()?;
//!     assert_eq!(greeting, "hello from the child");
//!     ours.send("hello back")?;
//!     child.join()?;
//!     Ok(())
//! }
//! ```
//!
//! Architecture invariant: uses mp-process (handles, `wait`) and mp-sync; nothing above.
//!
//! # Connections
//!
//! [`pipe`] makes a pair of [`Connection`]s. `send` / `recv` carry serde values (postcard); `send_bytes` /
//! `recv_bytes` carry bytes in CPython's framing. End of file at a message boundary
//! ([`RecvError::Eof`]) and in the middle of one ([`RecvError::Truncated`]) differ; sending to a closed
//! peer is [`SendError::BrokenPipe`], never a death by SIGPIPE; a header claiming more than the
//! connection's maximum message size is refused before anything is allocated.
//!
//! Connections work with [`mp_process::wait`] together with processes.

#![warn(missing_docs)]

mod auth;
mod connection;
mod error;
mod frame;
mod listener;
mod queue;
mod ring;
mod sys;

pub use crate::{
    connection::{Connection, DEFAULT_MAX_MESSAGE, Direction, pipe},
    error::{AuthenticationError, ConnectError, GetError, PutError, RecvError, SendError, TaskDoneError},
    listener::{Address, Client, DEFAULT_HANDSHAKE_TIMEOUT, Listener, ListenerBuilder},
    queue::{DEFAULT_QUEUE_CAPACITY, JoinableQueue, Queue, QueueBuilder, SimpleQueue},
};
