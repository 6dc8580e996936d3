//! The program's side of the fork server: starting it, sending it requests, stopping it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use crate::job::Job;
use crate::launch::{LaunchSpec, Launched, bootstrap_frame, child_argv, child_env, start_lock};
use crate::settings;
use crate::slots::{self, Slot};
use crate::state::{self, ProcessLocal, lock, slot};
use crate::wire::bootstrap::send_bootstrap;
use crate::wire::{env, request};
use crate::{StartError, StartMethod, sys};

/// The running server, if any.
struct Server {
    pid: u32,
    requests: OwnedFd,
    /// It was handed the outcome slots.
    slots: bool,
}

impl Server {
    fn start(args: &[String]) -> io::Result<Server> {
        let (ours, theirs) = sys::seqpacket_pair()?;
        let mut extra = vec![(env::SERVER, theirs.as_raw_fd().to_string()), (env::PARENT, sys::pid().to_string())];
        let slots = slots::memory_file();
        let mut keep = vec![theirs.as_raw_fd()];
        if let Some(fd) = slots {
            extra.push((env::SLOTS, fd.as_raw_fd().to_string()));
            keep.push(fd.as_raw_fd());
        }
        // Resolve every dynamic symbol once in the server, so that its children do not each resolve (and
        // write copy-on-write pages for) the ones they use: this halves a served child's start-up.
        if std::env::var_os("LD_BIND_NOW").is_none() {
            extra.extend([("LD_BIND_NOW", "1".to_owned()), (env::BIND_NOW, "1".to_owned())]);
        }
        let env = child_env(&extra);
        let argv = child_argv(args);
        let pid = {
            let _guard = start_lock();
            sys::spawn(&settings::executable(), &argv, &env, &keep)?
        };
        SERVER_FD.store(ours.as_raw_fd(), Ordering::SeqCst);
        log::debug!("fork server started as pid {pid}");
        Ok(Server { pid, requests: ours, slots: slots.is_some() })
    }

    /// Whether the server has ended (it is reaped if so). A killed server's spare child may outlive it for a
    /// moment and still accept a request it will never serve: checking the server first avoids that.
    fn has_exited(&self) -> bool {
        !matches!(sys::wait_status(self.pid, false), Ok(None))
    }

    /// Closes the request socket (the server exits on seeing that) and reaps the server. A server that has
    /// not exited after [`STOP_GRACE`] is killed: the program's exit never waits on it unboundedly.
    fn stop(self) {
        SERVER_FD.store(-1, Ordering::SeqCst);
        drop(self.requests);
        // Our own child, not yet reaped: its pid still names it, so its pidfd is the server's.
        let ended = match sys::pidfd_open(self.pid) {
            Ok(pidfd) => sys::poll_readable(&[pidfd.as_fd()], Some(STOP_GRACE)).is_ok_and(|ready| ready[0]),
            Err(_) => true, // already gone (or no pidfds): the reap below does not wait long
        };
        if !ended {
            let _ = sys::send_signal(self.pid, libc::SIGKILL);
        }
        // Where the kernel reaps children itself, a blocking wait would last until every child has ended.
        let _ = sys::wait_status(self.pid, !sys::children_autoreaped());
    }
}

/// How long [`Server::stop`] gives the server to see its program go.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

static SERVER: ProcessLocal<Mutex<Option<Server>>> = ProcessLocal::new(slot::SERVER, || Mutex::new(None));
/// The request socket's number, for a forked child to close without touching `SERVER`'s lock.
static SERVER_FD: &AtomicI32 = &state::STATE.server_fd;

pub(crate) fn launch(info: LaunchSpec, job: Box<dyn Job>, args: Vec<String>) -> Result<Arc<Launched>, StartError> {
    let (frame, fds) = bootstrap_frame(&info, job.as_ref(), StartMethod::ForkServer)?;
    drop(job);
    let kill = info.kill_with_parent;
    let mut last_error = None;
    // A server that died since the last start is replaced once.
    for _attempt in 0..2 {
        let (status, server_status) = sys::pipe()?;
        let mut server = lock(SERVER.get());
        if server.as_ref().is_some_and(Server::has_exited) {
            log::debug!("the fork server has ended; starting a new one");
            server.take().expect("checked").stop();
        }
        if server.is_none() {
            *server = Some(Server::start(&args)?);
        }
        let current = server.as_ref().expect("server just started");
        let slot = if current.slots { Slot::reserve(info.parent.pid) } else { None };
        let result = match slot {
            Some(slot) => send_slot_request(&current.requests, kill, slot, &frame, &fds, server_status)
                .map(|(done, slot)| Launched::served_with_slot(&info, done, status, slot)),
            None => send_socket_request(&current.requests, kill, &frame, &fds, server_status)
                .map(|sock| Launched::served(&info, sock, status)),
        };
        drop(server);
        match result {
            Ok(child) => return Ok(Arc::new(child)),
            // A failure of our own (descriptors exhausted, say) fails this start alone: the server and the
            // children it runs are untouched.
            Err(e) if !server_gone(&e) && !lock(SERVER.get()).as_ref().is_some_and(Server::has_exited) => {
                return Err(StartError::Io(e));
            }
            Err(e) => {
                log::debug!("fork server request failed ({e}); restarting the server");
                if let Some(server) = lock(SERVER.get()).take() {
                    server.stop();
                }
                last_error = Some(e);
            }
        }
    }
    Err(StartError::Io(io::Error::other(format!(
        "the fork server failed to start the process: {}",
        last_error.map_or_else(|| "unknown error".to_owned(), |e| e.to_string())
    ))))
}

/// Whether a request failed because the server is gone (its end of the request socket is closed).
fn server_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET | libc::ECONNREFUSED | libc::ENOTCONN))
}

/// Sends a `REQ_SLOT` request; returns the read end of the child's done pipe (and the slot back).
fn send_slot_request(
    requests: &OwnedFd,
    kill: bool,
    slot: Slot,
    frame: &[u8],
    fds: &[OwnedFd],
    server_status: OwnedFd,
) -> io::Result<(OwnedFd, Slot)> {
    let (done, child_done) = sys::pipe()?;
    // Both ends of a pipe are one file: the child checks its end against this before its last write.
    let identity = sys::fd_identity(done.as_fd());
    let request = if frame.len() <= request::INLINE_FRAME {
        request::encode_slot(kill, slot.index(), identity, &request::Frame::Inline(frame))
    } else {
        let (offset, len) = match slots::spill(frame) {
            Ok(spilled) => spilled,
            Err(e) => {
                slot.release();
                return Err(e);
            }
        };
        request::encode_slot(kill, slot.index(), identity, &request::Frame::Spilled { offset, len })
    };
    let mut passed = vec![child_done.as_fd(), server_status.as_fd()];
    passed.extend(fds.iter().map(AsFd::as_fd));
    match sys::send_with_fds(requests.as_fd(), &request, &passed) {
        Ok(_) => Ok((done, slot)),
        Err(e) => {
            slot.release(); // no child can have the request
            Err(e)
        }
    }
}

/// Sends a `REQ_SOCKET` request, then the bootstrap on the child's socket; returns our end of it.
fn send_socket_request(
    requests: &OwnedFd,
    kill: bool,
    frame: &[u8],
    fds: &[OwnedFd],
    server_status: OwnedFd,
) -> io::Result<OwnedFd> {
    let (ours, theirs) = sys::stream_pair()?;
    sys::send_with_fds(requests.as_fd(), &request::encode_socket(kill), &[theirs.as_fd(), server_status.as_fd()])?;
    drop(theirs);
    // The pid (and later the exit code) arrive on `status`; `start` does not wait for them.
    send_bootstrap(ours.as_fd(), frame, fds)?;
    Ok(ours)
}

/// Lets the server go (at exit, after every child has been joined).
pub(crate) fn shutdown() {
    let Some(server) = SERVER.get_if_created() else { return };
    if let Some(server) = lock(server).take() {
        server.stop();
    }
}
