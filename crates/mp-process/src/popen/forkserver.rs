//! The `forkserver` start method.
//!
//! On first use the program re-executes itself as a server: single-threaded, it has run nothing but
//! [`init`](crate::init), so forking it is always safe. Each start sends the server one `SOCK_SEQPACKET`
//! request carrying two sockets: the child's socket (whose bootstrap the parent then writes directly) and a
//! status socket, on which the server answers the child's pid at once and its exit code when it ends. The
//! server exits when the program that started it closes the request socket (on exit, or when killed).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use super::{Child, ChildInfo, bootstrap_frame, child_argv, child_env, send_bootstrap};
use crate::registry::{self, ProcessLocal, lock};
use crate::target::Job;
use crate::{StartError, StartMethod, child, context, sys};

/// Environment variable that turns a re-executed program into the fork server (value: request socket).
pub(crate) const SERVER_ENV: &str = "MP_PROCESS_FORKSERVER";
/// The pid of the program the server serves.
pub(crate) const PARENT_ENV: &str = "MP_PROCESS_PARENT";

/// The running server, if any.
struct Server {
    pid: u32,
    requests: OwnedFd,
}

impl Server {
    fn start(args: &[String]) -> io::Result<Server> {
        let (ours, theirs) = sys::seqpacket_pair()?;
        let env = child_env(&[(SERVER_ENV, theirs.as_raw_fd().to_string()), (PARENT_ENV, sys::pid().to_string())]);
        let argv = child_argv(args);
        let pid = {
            let _guard = registry::start_lock();
            sys::spawn(&context::executable(), &argv, &env, &[theirs.as_raw_fd()])?
        };
        SERVER_FD.store(ours.as_raw_fd(), Ordering::SeqCst);
        log::debug!("fork server started as pid {pid}");
        Ok(Server { pid, requests: ours })
    }

    /// Closes the request socket (the server exits on seeing that) and reaps the server.
    fn stop(self) {
        SERVER_FD.store(-1, Ordering::SeqCst);
        drop(self.requests);
        let _ = sys::wait_status(self.pid, true);
    }
}

static SERVER: ProcessLocal<Mutex<Option<Server>>> = ProcessLocal::new(|| Mutex::new(None));
/// The request socket's number, for a forked child to close without touching `SERVER`'s lock.
static SERVER_FD: AtomicI32 = AtomicI32::new(-1);

pub(crate) fn launch(info: ChildInfo, job: Box<dyn Job>, args: Vec<String>) -> Result<Arc<Child>, StartError> {
    let (frame, fds) = bootstrap_frame(&info, job.as_ref(), StartMethod::ForkServer)?;
    drop(job);
    let mut last_error = None;
    // A server that died since the last start is replaced once.
    for _attempt in 0..2 {
        let (ours, theirs) = sys::stream_pair()?;
        let (status, server_status) = sys::stream_pair()?;
        let sent = {
            let mut server = lock(SERVER.get());
            if server.is_none() {
                *server = Some(Server::start(&args)?);
            }
            let requests = &server.as_ref().expect("server just started").requests;
            let request = [u8::from(info.kill_with_parent)];
            sys::send_with_fds(requests.as_fd(), &request, &[theirs.as_fd(), server_status.as_fd()])
        };
        drop((theirs, server_status));
        // The pid (and later the exit code) arrive on `status`; `start` does not wait for them.
        match sent.and_then(|_| send_bootstrap(ours.as_fd(), &frame, &fds)) {
            Ok(()) => return Ok(Arc::new(Child::served(&info, ours, status))),
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

/// Lets the server go (at exit, after every child has been joined).
pub(crate) fn shutdown() {
    let Some(server) = SERVER.get_if_created() else { return };
    if let Some(server) = lock(server).take() {
        server.stop();
    }
}

/// In a forked child: close the inherited request socket (so the server still sees its program exit) and
/// forget the parent's server.
pub(crate) fn reset_after_fork() {
    let fd = SERVER_FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        sys::close_raw(fd);
    }
    SERVER.reset();
}

/// The server loop: never returns.
pub(crate) fn serve(requests: OwnedFd, parent: u32) -> ! {
    // The server dies with its program; its children die with it (unless they opted out).
    if sys::set_parent_death_signal().is_err() || sys::parent_pid() != parent {
        sys::exit_now(0);
    }
    sys::ignore_sigint(true);
    let Ok(sigchld) = sys::SigChld::install() else { sys::exit_now(1) };
    let server_pid = sys::pid();
    let mut children: HashMap<u32, OwnedFd> = HashMap::new();
    loop {
        let Ok(ready) = sys::poll_readable(&[requests.as_fd(), sigchld.fd()], None) else { sys::exit_now(1) };
        if ready[1] {
            sigchld.drain();
            while let Some((pid, code)) = sys::reap_any() {
                if let Some(status) = children.remove(&pid) {
                    let _ = sys::write_all(status.as_fd(), &code.to_le_bytes());
                }
            }
        }
        if !ready[0] {
            continue;
        }
        let mut request = [0u8; 16];
        let mut fds = Vec::new();
        match sys::recv_with_fds(requests.as_fd(), &mut request, &mut fds) {
            Ok(0) | Err(_) => sys::exit_now(0),
            Ok(_) => {}
        }
        let (Some(status), Some(sock), true) = (fds.pop(), fds.pop(), fds.is_empty()) else {
            continue;
        };
        let kill_with_parent = request[0] != 0;
        // SAFETY: the server is single-threaded, so the child inherits no lock held by another thread.
        match unsafe { sys::fork() } {
            Ok(sys::Forked::Child) => {
                drop(requests);
                drop(children);
                drop(status);
                sigchld.forget_in_child();
                sys::ignore_sigint(false);
                if kill_with_parent && (sys::set_parent_death_signal().is_err() || sys::parent_pid() != server_pid) {
                    sys::exit_now(1);
                }
                child::run_from_socket(sock, true)
            }
            Ok(sys::Forked::Parent(pid)) => {
                drop(sock);
                if sys::write_all(status.as_fd(), &pid.to_le_bytes()).is_ok() {
                    children.insert(pid, status);
                }
            }
            // Dropping both sockets tells the client the start failed.
            Err(_) => {}
        }
    }
}
