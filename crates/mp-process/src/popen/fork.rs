//! The `fork` start method: the child is a copy of this process and runs the target at once.

use std::io::Write;
use std::sync::Arc;

use super::{Child, ChildInfo, adopt};
use crate::target::Job;
use crate::{StartError, child, registry, sys};

pub(crate) fn launch(info: ChildInfo, job: Box<dyn Job>) -> Result<Arc<Child>, StartError> {
    let (ours, theirs) = sys::stream_pair()?;
    // Unflushed output would otherwise be printed twice, once by each process.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let me = child::me_for(&info, false);
    let guard = registry::start_lock();
    // SAFETY: the child only runs `child::run_forked`, which resets this crate's locks before use; the
    // caller chose `Fork` knowing locks held by other threads stay held in the child (see `StartMethod`).
    let pid = match unsafe { sys::fork() }? {
        sys::Forked::Child => {
            drop(ours);
            child::run_forked(&info, me, theirs, job)
        }
        sys::Forked::Parent(pid) => pid,
    };
    drop(guard);
    drop((theirs, job, me));
    let pidfd = adopt(pid)?;
    Ok(Arc::new(Child::direct(pid, &info, pidfd, ours)))
}
