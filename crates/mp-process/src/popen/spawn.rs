//! The `spawn` start method: re-execute the program; [`init`](crate::init) sends it to the child runtime.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use super::{Child, ChildInfo, bootstrap_frame, child_argv, child_env, send_bootstrap};
use crate::target::Job;
use crate::{StartError, StartMethod, child, context, registry, sys};

pub(crate) fn launch(info: ChildInfo, job: Box<dyn Job>, args: Vec<String>) -> Result<Arc<Child>, StartError> {
    // Serialize first: a bad argument fails here, before any process exists.
    let (frame, fds) = bootstrap_frame(&info, job.as_ref(), StartMethod::Spawn)?;
    drop(job);
    let (ours, theirs) = sys::stream_pair()?;
    let env = child_env(&[(child::CHILD_ENV, theirs.as_raw_fd().to_string())]);
    let argv = child_argv(&args);
    let pid = {
        let _guard = registry::start_lock();
        sys::spawn(&context::executable(), &argv, &env, &[theirs.as_raw_fd()])?
    };
    drop(theirs);
    let child = Arc::new(Child::direct(&info, Some(ours), None));
    child.adopt(pid)?;
    let sock = child.sock.as_ref().expect("a spawned child has a socket");
    if let Err(e) = send_bootstrap(sock.as_fd(), &frame, &fds) {
        let _ = child.signal(libc::SIGKILL);
        let _ = child.wait(None);
        return Err(e.into());
    }
    Ok(child)
}
