//! Operating-system layer: every system call of the crate lives below this module.
//!
//! Items every platform provides: [`RobustMutex`] (a process-shared mutex whose owner's death is reported
//! to the next locker), [`futex_wait`] / [`futex_wake`] on a shared 32-bit word, [`Deadline`] (an absolute
//! point on the monotonic clock) and [`thread_id`] (unique across processes).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod linux;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub use self::linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("mp-sync supports Linux only for now (robust pthread mutexes and shared futexes)");

// The robust mutex reads two fields of glibc's `pthread_mutex_t` (the owner at offset 0, the recursion count at
// offset 4): another C library (musl) lays it out otherwise, and would silently misbehave.
#[cfg(all(target_os = "linux", not(target_env = "gnu")))]
compile_error!("mp-sync supports glibc only for now: its robust mutex reads glibc's pthread_mutex_t layout");
