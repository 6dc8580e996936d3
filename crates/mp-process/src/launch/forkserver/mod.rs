//! The `forkserver` start method, in two halves: [`client`] (the program's side: start the server, send it
//! requests, stop it) and [`server`] (the server itself).
//!
//! On first use the program re-executes itself as a server: it has run nothing but [`init`](crate::init), so
//! forking it is safe (a libtest binary's server also has libtest's main thread, which waits for the test and
//! holds no lock a child takes). The server is handed the memory file of its program's outcome slots
//! ([`slots`](crate::slots)). Each start sends it one `SOCK_SEQPACKET` request ([`wire::request`](crate::wire::request)):
//! usually the slot the child reports into, the bootstrap, and two pipes — one on which the child says it is
//! done, one on which the server reports the child's pid and exit code when it ends.
//!
//! The server exits when the program that started it closes the request socket (on exit, or when killed).

mod client;
mod server;

pub(crate) use self::client::{launch, shutdown};
pub(crate) use self::server::serve;
