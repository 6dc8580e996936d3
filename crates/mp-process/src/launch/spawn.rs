//! The `spawn` start method: re-execute the program; [`init`](crate::init) sends it to the child runtime.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use super::{LaunchSpec, Launched, bootstrap_frame, child_argv, child_env, start_lock};
use crate::job::Job;
use crate::slots::{self, Slot};
use crate::wire::bootstrap::send_bootstrap;
use crate::wire::env;
use crate::{StartError, StartMethod, settings, sys};

pub(crate) fn launch(info: LaunchSpec, job: Box<dyn Job>, args: Vec<String>) -> Result<Arc<Launched>, StartError> {
    // Serialize first: a bad argument fails here, before any process exists.
    let (frame, fds) = bootstrap_frame(&info, job.as_ref(), StartMethod::Spawn)?;
    drop(job);
    let (ours, theirs) = sys::stream_pair()?;
    let mut extra = vec![(env::CHILD, theirs.as_raw_fd().to_string())];
    let mut keep = vec![theirs.as_raw_fd()];
    // The outcome goes into a slot of our memory file, which the child maps (see `run_from_socket`); over the
    // socket when every slot is taken.
    let slot = slots::memory_file().and_then(|file| {
        let slot = Slot::reserve(info.parent.pid)?;
        extra.push((env::SLOTS, file.as_raw_fd().to_string()));
        extra.push((env::SLOT, slot.index().to_string()));
        keep.push(file.as_raw_fd());
        Some(slot)
    });
    let env = child_env(&extra);
    let argv = child_argv(&args);
    let pid = {
        let _guard = start_lock();
        sys::spawn(&settings::executable(), &argv, &env, &keep)
    };
    let pid = match pid {
        Ok(pid) => pid,
        Err(e) => {
            if let Some(slot) = slot {
                slot.release();
            }
            return Err(e.into());
        }
    };
    drop(theirs);
    let child = Arc::new(Launched::direct(&info, Some(ours), slot));
    child.adopt(pid, sys::children_autoreaped())?;
    let sock = child.sock.as_ref().expect("a spawned child has a socket");
    if let Err(e) = send_bootstrap(sock.as_fd(), &frame, &fds) {
        let _ = child.signal(libc::SIGKILL);
        let _ = child.wait(None);
        return Err(e.into());
    }
    Ok(child)
}
