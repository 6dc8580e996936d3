//! Operating-system layer: every system call of the crate lives below this module.
//!
//! Items every platform provides: [`stream_pair`], [`send_parts`] (a header and a payload, never raising
//! SIGPIPE), [`recv_with_fds`] / [`send_with_fd`], [`poll_readable`], [`shutdown_write`] / [`shutdown_read`].

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use self::linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("mp-ipc supports Linux only for now");
