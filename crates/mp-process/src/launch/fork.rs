//! The `fork` start method: the child is a copy of this process and runs the target at once.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use std::sync::atomic::AtomicU32;

use super::{LaunchSpec, Launched, start_lock};
use crate::identity::Me;
use crate::job::Job;
use crate::runtime::{self, Start};
use crate::slots::{Report, Slot};
use crate::wire::bootstrap::ParentLink;
use crate::{StartError, sys};

pub(crate) fn launch(info: LaunchSpec, job: Box<dyn Job>) -> Result<Arc<Launched>, StartError> {
    warn_if_threaded();
    // Made now if need be, so that the child reads it without allocating.
    crate::settings::setup_hooks();
    crate::settings::run_before_fork();
    // The outcome goes into a slot of shared memory, or over a socket when every slot is taken.
    let (slot, ours, report) = match Slot::reserve(info.parent.pid) {
        Some(slot) => {
            let writer = slot.writer();
            (Some(slot), None, Report::Slot(writer))
        }
        None => {
            let (ours, theirs) = sys::stream_pair()?;
            let identity = sys::fd_identity(theirs.as_fd());
            (None, Some(ours), Report::Socket { sock: theirs, identity })
        }
    };
    // Unflushed output would otherwise be printed twice, once by each process. (Rust's stderr is unbuffered.)
    let _ = std::io::stdout().flush();
    // Built before the fork: after it, every heap page the parent writes is copied while the child lives.
    let child = Arc::new(Launched::direct(&info, ours, slot));
    let mut info = info;
    let me = me_for(&mut info);
    // Where the kernel reaps our children itself, the child waits until we hold its pidfd (see `adopt`).
    let autoreaped = sys::children_autoreaped();
    let gate = if autoreaped { Some(sys::pipe()?) } else { None };
    let raw_gate = gate.as_ref().map(|(read, write)| (read.as_raw_fd(), write.as_raw_fd()));
    let guard = start_lock();
    let start = Start {
        start_method: info.start_method,
        kill_with_parent: info.kill_with_parent,
        parent_pid: info.parent.pid,
        affinity: info.affinity.as_deref(),
        via_server: false,
    };
    let (pid, me) = runtime::fork_and_run(&start, me, &report, job, raw_gate)?;
    drop(guard);
    drop(report);
    let adopted = child.adopt(pid, autoreaped);
    if let Some((_, write)) = &gate {
        let _ = sys::write_fd_all(write.as_fd(), &[1]);
    }
    adopted?;
    // Plain memory is freed once the child has ended, when its pages are no longer shared.
    child.keep_until_reaped(Box::new((me, info)));
    Ok(child)
}

/// Who the forked child of `info` will be, moving the name, identity and parent's name out of `info`. A `fork`
/// start builds this before forking, so that the child allocates nothing (every page it writes is a
/// copy-on-write fault), and moves rather than clones: a start that keeps few small allocations alive stays in
/// the allocator's thread cache, whose shared state would otherwise be written (and copied) after every fork.
fn me_for(info: &mut LaunchSpec) -> Box<Me> {
    Box::new(Me {
        name: std::mem::take(&mut info.name),
        identity: std::mem::take(&mut info.identity),
        daemon: info.daemon,
        parent: Some(ParentLink {
            pid: info.parent.pid,
            name: std::mem::take(&mut info.parent.name),
            via_server: false,
            started: 0,
        }),
        counter: AtomicU32::new(0),
        authkey: std::sync::Mutex::new(std::mem::take(&mut info.authkey)),
    })
}

/// Warns once per process, through `log`, when `fork` copies a process that runs other threads (CPython 3.12+
/// warns the same way): locks they hold stay held in the child forever. Costs nothing while no logger
/// listens at warning level (the thread count is read only then).
fn warn_if_threaded() {
    use std::sync::atomic::{AtomicU32, Ordering};
    /// The pid that has warned (a forked child warns for itself).
    static WARNED: AtomicU32 = AtomicU32::new(0);
    if !log::log_enabled!(log::Level::Warn) || WARNED.load(Ordering::Relaxed) == sys::pid() {
        return;
    }
    let threads = sys::thread_count();
    if threads > 1 {
        WARNED.store(sys::pid(), Ordering::Relaxed);
        log::warn!(
            "this process (pid {}) is multi-threaded ({threads} threads); use of fork() may lead to deadlocks in \
             the child (locks held by the other threads stay held there): prefer the forkserver or spawn start \
             method",
            sys::pid()
        );
    }
}
