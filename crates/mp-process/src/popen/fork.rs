//! The `fork` start method: the child is a copy of this process and runs the target at once.

use std::io::Write;
use std::sync::Arc;

use super::arena::{Report, Slot};
use super::{Child, ChildInfo};
use crate::target::Job;
use crate::{StartError, child, registry, sys};

pub(crate) fn launch(info: ChildInfo, job: Box<dyn Job>) -> Result<Arc<Child>, StartError> {
    // The outcome goes into a slot of shared memory, or over a socket when every slot is taken.
    let (slot, ours, report) = match Slot::reserve(info.parent.pid) {
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
    // Built before the fork: after it, every heap page the parent writes is copied while the child lives.
    let child = Arc::new(Child::direct(&info, ours, slot));
    let mut info = info;
    let me = child::me_for(&mut info);
    let guard = registry::start_lock();
    let (pid, me) = child::fork_and_run(&info, me, &report, job)?;
    drop(guard);
    drop(report);
    child.adopt(pid)?;
    // Plain memory is freed once the child has ended, when its pages are no longer shared.
    child.keep_until_reaped(Box::new((me, info)));
    Ok(child)
}
