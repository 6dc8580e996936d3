//! Operating-system layer: every raw system call of the crate lives below this module.
//!
//! Each platform module provides the same items:
//!
//! - process control: [`fork`], [`spawn`] (re-execute an executable keeping chosen descriptors open),
//!   [`wait_status`] (reap one child), [`send_signal`], [`exit_now`] (`_exit`), [`pid`], [`parent_pid`],
//!   [`is_main_thread`], [`set_parent_death_signal`], [`set_affinity`], [`affinity_count`];
//! - exit watching: [`pidfd_open`] (a descriptor that becomes readable when a process ends);
//! - sockets: [`stream_pair`], [`seqpacket_pair`], [`send_with_fds`], [`recv_with_fds`], [`write_all`],
//!   [`read_some`], [`poll_readable`], [`set_nonblocking`];
//! - the executable's build fingerprint ([`exe_fingerprint`]) and `atexit` registration ([`at_exit`]);
//! - the SIGCHLD signalfd the fork server waits on ([`SigChld`]).
//!
//! Only Linux is implemented today; other targets fail at compile time with a readable message.

#[cfg(target_os = "linux")]
mod unix;
#[cfg(target_os = "linux")]
pub(crate) use self::unix::*;

#[cfg(not(target_os = "linux"))]
compile_error!(
    "mp-process supports Linux only for now (it relies on pidfd, PR_SET_PDEATHSIG and SCM_RIGHTS); \
     macOS and Windows ports are planned"
);
