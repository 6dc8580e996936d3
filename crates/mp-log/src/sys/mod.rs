//! Operating-system layer: the sockets that carry records from children to the parent.
//!
//! - [`listen`] / [`accept`]: a `SOCK_SEQPACKET` socket bound at a Linux abstract address (nothing in the file
//!   system, gone with its process), the parent's end, and one connection per child process;
//! - [`connect`]: a child's non-blocking connection; [`send`] never blocks longer than asked and tells a full
//!   channel ([`Sent::Full`]) from a parent that is gone ([`Sent::Gone`]); [`send_fd`] / [`recv_hello`] hand
//!   over a child's ring ([`ring_memory`], [`map_ring`]); [`peer_gone`] looks whether the parent ended;
//! - [`recv_batch`]: the messages waiting, up to 16 with one system call (each record is one, kept whole), and
//!   [`wait_readable`].
//!
//! A connection per child, not one datagram socket for all: a Unix datagram socket that several peers send to
//! holds at most `net.unix.max_dgram_qlen` messages (10 here), so a parent a moment behind would see drops.
//!
//! Only Linux is implemented today; other targets fail at compile time with a readable message.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use self::linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("mp-log supports Linux only for now (it relies on abstract Unix sockets)");
