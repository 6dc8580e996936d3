//! The `forkserver` start method.
//!
//! On first use the program re-executes itself as a server: single-threaded, it has run nothing but
//! [`init`](crate::init), so forking it is always safe. The server is handed the memory file of its program's
//! outcome slots ([`arena`](super::arena)). Each start sends it one `SOCK_SEQPACKET` request:
//!
//! - usually `REQ_SLOT`: the slot the child reports into, the bootstrap itself (or where in the memory file it
//!   lies, when large), and two pipes — one on which the child says it is done, one on which the server
//!   reports the child's pid and exit code when it ends. The child publishes its pid in its slot. Only pipes
//!   travel: a Unix socket in flight makes every socket closed meanwhile, system-wide, schedule the kernel's
//!   garbage collector of in-flight sockets.
//! - `REQ_SOCKET` when no slot is free: the child's socket (whose bootstrap the parent then writes directly,
//!   and on which the child writes its pid, then its outcome) and the status pipe.
//!
//! The server exits when the program that started it closes the request socket (on exit, or when killed).

mod client;
mod server;

pub(crate) use self::client::{launch, shutdown};
pub(crate) use self::server::serve;
