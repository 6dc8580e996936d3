//! Operating-system layer: every system call of the crate lives below this module.
//!
//! Items every platform provides: named segments ([`create`], [`open`], [`unlink`], [`map`]),
//! [`random_suffix`] for fresh names, and the resource tracker's plumbing ([`Listener`], [`connect`],
//! [`send`], [`recv`], [`ProcessWatch`], [`poll`]).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use self::linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("mp-shm supports Linux only for now (POSIX shared memory plus pidfd); other ports are planned");
