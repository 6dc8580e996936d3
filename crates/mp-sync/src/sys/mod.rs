//! Operating-system layer: every system call of the crate lives below this module.
//!
//! Items every platform provides: [`RobustMutex`] (a process-shared mutex whose owner's death is reported
//! to the next locker), [`futex_wait`] / [`futex_wake`] on a shared 32-bit word, [`Deadline`] (an absolute
//! point on the monotonic clock) and [`thread_id`] (unique across processes).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use self::linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("mp-sync supports Linux only for now (robust pthread mutexes and shared futexes)");
