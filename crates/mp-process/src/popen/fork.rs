//! The `fork` start method: the child is a copy of this process and runs the target at once.

use std::io::Write;
use std::sync::Arc;

use super::arena::{Report, Slot};
use super::{Child, ChildInfo};
use crate::target::Job;
use crate::{StartError, child, registry, sys};

pub(crate) fn launch(info: ChildInfo, job: Box<dyn Job>) -> Result<Arc<Child>, StartError> {
    // The outcome goes into a slot of shared memory, or over a socket when every slot is taken.
    let (slot, ours, report) = match Slot::reserve() {
        Some(slot) => {
            let writer = slot.writer();
            (Some(slot), None, Report::Slot(writer))
        }
        None => {
            let (ours, theirs) = sys::stream_pair()?;
            (None, Some(ours), Report::Socket(theirs))
        }
    };
    // Unflushed output would otherwise be printed twice, once by each process. (Rust's stderr is unbuffered.)
    let _ = std::io::stdout().flush();
    let me = child::me_for(&info, false);
    // Built before the fork too: after it, every heap page the parent writes is copied while the child lives.
    let mut child = Child::direct(&info, ours, slot);
    let guard = registry::start_lock();
    // SAFETY: the child only runs `child::run_forked`, which resets this crate's locks before use; the
    // caller chose `Fork` knowing locks held by other threads stay held in the child (see `StartMethod`).
    let pid = match unsafe { sys::fork() }? {
        sys::Forked::Child => child::run_forked(&info, me, report, job),
        sys::Forked::Parent(pid) => pid,
    };
    drop(guard);
    // The arguments go now, as in CPython: a handle among them must not stay open in the parent.
    drop((report, job));
    child.adopt(pid)?;
    // Plain memory is freed once the child has ended, when its pages are no longer shared.
    child.keep_until_reaped(Box::new((me, info)));
    Ok(Arc::new(child))
}
