//! The fork server itself: a re-executed copy of the program that forks each child on request, keeping
//! spares forked ahead.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};

use crate::error::{ChildError, ChildErrorKind};
use crate::slots::{self, Writer};
use crate::wire::request::{self, REQUEST_MAX};
use crate::{runtime, sys};

/// The server's state. Spares (idle children forked ahead of the next request) wait on the request socket
/// themselves, so a request wakes one directly, without a hop through the server and without the server's
/// `fork()` on the start's critical path (Android's zygote keeps such children too). A spare that takes a
/// request sends its pid and the request's status pipe on the notify socket, and the server forks a
/// replacement while it runs.
///
/// The server learns that a child ended from the child's pidfd, never from SIGCHLD: the server may have
/// other threads (a libtest binary's main thread, when the program is a test), and a SIGCHLD taken by one
/// of them was a child never reported.
struct ServerLoop {
    requests: OwnedFd,
    /// The notify socket: the server reads the first end; every spare holds the second.
    notify: (OwnedFd, OwnedFd),
    /// One wait for the request and notify sockets and every child's pidfd (token: the pid).
    epoll: sys::Epoll,
    /// Whether the request socket is watched (only while there is no spare to take requests).
    serving: bool,
    /// Running children, by pid, with the pipe on which their exit is reported and their pidfd.
    children: HashMap<u32, Watched>,
    /// The spares, with their pidfds.
    spares: Vec<(u32, Option<OwnedFd>)>,
    /// Children whose pidfd could not be opened (descriptors exhausted): looked for by a timed sweep.
    unwatched: usize,
    /// Set when a spare ended without taking a request (its program is probably gone, or someone killed
    /// it): no new spares until the server has read the request socket itself, which tells an ended program
    /// (end of file: the server exits) from a lost spare (a request: spares resume). Forking replacements
    /// that die at once would otherwise spin forever.
    direct: bool,
    /// This server's pid, which its children check after asking to die with it.
    pid: u32,
    /// The signals the program ignored when it started the server (bit `sig - 1`), which its children get
    /// back as they were.
    ignored: u64,
}

/// A running child: its status pipe and its pidfd (`None` if it could not be opened).
struct Watched {
    status: OwnedFd,
    pidfd: Option<OwnedFd>,
}

/// How many spares the server keeps: two, so that a start arriving while the server still forks the
/// replacement of the last one taken finds one ready.
const SPARES: usize = 2;

/// Epoll tokens of the two sockets (a child's token is its pid, which is far smaller).
const REQUESTS: u64 = u64::MAX;
const NOTICES: u64 = u64::MAX - 1;

/// Signals from the terminal that the server ignores (a Ctrl-C or a hang-up is for the program, which the
/// server follows anyway); its children get the program's dispositions back.
const TERMINAL_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// How often the server sweeps for ended children it could not open a pidfd for.
const SWEEP: std::time::Duration = std::time::Duration::from_millis(20);

/// The server loop: never returns.
pub(crate) fn serve(requests: OwnedFd, parent: u32) -> ! {
    // The server dies with its program; its children die with it (unless they opted out).
    if sys::set_parent_death_signal().is_err() || sys::parent_pid() != parent {
        sys::exit_now(0);
    }
    let mut ignored = 0u64;
    for sig in TERMINAL_SIGNALS.into_iter().chain([libc::SIGCHLD]) {
        if sys::signal_ignored(sig) {
            ignored |= 1 << (sig - 1);
        }
    }
    for sig in TERMINAL_SIGNALS {
        sys::set_signal_ignored(sig, true);
    }
    // Ignored SIGCHLD (inherited from a program that ignores it) would have the kernel reap the server's
    // children itself, and their exit codes would be lost.
    sys::set_signal_ignored(libc::SIGCHLD, false);
    runtime::prepare_server();
    // Computed once here rather than by every child, which inherits it (it is the same image).
    crate::call::fingerprint();
    let (Ok(notify), Ok(epoll)) = (sys::seqpacket_pair(), sys::Epoll::new()) else { sys::exit_now(1) };
    if epoll.add(requests.as_fd(), REQUESTS).is_err() || epoll.add(notify.0.as_fd(), NOTICES).is_err() {
        sys::exit_now(1);
    }
    let mut server = ServerLoop {
        requests,
        notify,
        epoll,
        serving: true,
        children: HashMap::new(),
        spares: Vec::with_capacity(SPARES),
        unwatched: 0,
        direct: false,
        pid: sys::pid(),
        ignored,
    };
    server.top_up();
    let mut tokens = [0u64; 16];
    loop {
        // With spares waiting on the request socket, the server must leave requests to them.
        let serving = server.spares.is_empty();
        if serving != server.serving && server.epoll.watch(server.requests.as_fd(), REQUESTS, serving).is_ok() {
            server.serving = serving;
        }
        let timeout = (server.unwatched > 0).then_some(SWEEP);
        let Ok(n) = server.epoll.wait(&mut tokens, timeout) else { sys::exit_now(1) };
        if serving && tokens[..n].contains(&REQUESTS) {
            server.serve_one();
            server.direct = false;
        }
        // Always, before reaping: a spare's notice is queued before it can end.
        server.take_notices();
        for &token in &tokens[..n] {
            if token < NOTICES {
                server.reap(token as u32);
            }
        }
        if server.unwatched > 0 {
            server.sweep();
        }
        if !server.direct {
            server.top_up();
        }
    }
}

impl ServerLoop {
    /// Records the spares that took a request, each with its request's status pipe.
    fn take_notices(&mut self) {
        loop {
            let mut pid = [0u8; 4];
            let status = match sys::try_recv_one_fd(self.notify.0.as_fd(), &mut pid) {
                Ok((4, status)) => status,
                Ok(_) => continue, // not from a spare of ours
                Err(_) => return,  // nothing more (`WouldBlock`)
            };
            let pid = u32::from_le_bytes(pid);
            if let (Some(at), Some(status)) = (self.spares.iter().position(|(p, _)| *p == pid), status) {
                let (_, pidfd) = self.spares.swap_remove(at);
                self.children.insert(pid, Watched { status, pidfd });
            }
        }
    }

    /// Reaps `pid` if it has ended, reporting its exit code on its status pipe.
    fn reap(&mut self, pid: u32) {
        let Ok(Some(code)) = sys::wait_status(pid, false) else { return };
        self.ended(pid, code);
    }

    /// Reaps every ended child (for children without a pidfd).
    fn sweep(&mut self) {
        while let Some((pid, code)) = sys::reap_any() {
            self.ended(pid, code);
        }
    }

    /// `pid`, reaped with exit code `code`: reported to its parent, or (a spare) forgotten.
    fn ended(&mut self, pid: u32, code: i32) {
        if self.spares.iter().any(|(p, _)| *p == pid) {
            // A spare that took a request queued its notice before it could end, possibly after this
            // iteration's `take_notices`: read it now, or its child would pass for a lost spare.
            self.take_notices();
        }
        if let Some(child) = self.children.remove(&pid) {
            let mut report = [0u8; 8];
            report[..4].copy_from_slice(&pid.to_le_bytes());
            report[4..].copy_from_slice(&code.to_le_bytes());
            let _ = sys::write_fd_all(child.status.as_fd(), &report);
            self.forget(child.pidfd);
        }
        if let Some(at) = self.spares.iter().position(|(p, _)| *p == pid) {
            let (_, pidfd) = self.spares.swap_remove(at);
            self.forget(pidfd);
            self.direct = true;
        }
    }

    /// Stops watching a reaped child.
    fn forget(&mut self, pidfd: Option<OwnedFd>) {
        match pidfd {
            Some(pidfd) => self.epoll.delete(pidfd.as_fd()),
            None => self.unwatched = self.unwatched.saturating_sub(1),
        }
    }

    /// Watches a just-forked child through its pidfd (or, failing that, the sweep).
    fn watch(&mut self, pid: u32) -> Option<OwnedFd> {
        match sys::pidfd_open(pid) {
            Ok(pidfd) if self.epoll.add(pidfd.as_fd(), u64::from(pid)).is_ok() => Some(pidfd),
            _ => {
                self.unwatched += 1;
                None
            }
        }
    }

    /// Forks spares until there are [`SPARES`] (fewer if forking fails).
    fn top_up(&mut self) {
        while self.spares.len() < SPARES {
            match self.fork_spare() {
                Some(pid) => {
                    let pidfd = self.watch(pid);
                    self.spares.push((pid, pidfd));
                }
                None => break,
            }
        }
    }

    /// Reads one request from the request socket and forks a child for it (the path without a spare).
    fn serve_one(&mut self) {
        let mut fds = Received::new();
        // SAFETY: the server itself never keeps a request (its children do, after the fork).
        let n = match unsafe { REQUEST.receive(self.requests.as_fd(), &mut fds) } {
            Ok(0) => sys::exit_now(0), // the program is gone
            Ok(n) => n,
            // A failed receive (descriptors exhausted, say) fails that request alone: its descriptors were
            // closed by the kernel, which tells its client.
            Err(_) => return,
        };
        // Every request carries the status pipe second.
        let Some(status) = fds.take(1) else { return };
        // SAFETY: the child runs only the request (see `run_request`). Should the server have other threads
        // (a libtest main thread), they hold none of the locks a child takes: they wait for this thread.
        match unsafe { sys::fork() } {
            Ok(sys::Forked::Child) => {
                self.leave();
                sys::close_raw(self.requests.as_raw_fd());
                sys::close_raw(self.notify.1.as_raw_fd());
                sys::close_raw(status.into_raw_fd());
                // SAFETY: this child never returns to the server's loop, so it never receives again.
                run_request(unsafe { REQUEST.keep(n) }, fds)
            }
            Ok(sys::Forked::Parent(pid)) => {
                drop(fds);
                let pidfd = self.watch(pid);
                self.children.insert(pid, Watched { status, pidfd });
            }
            // Dropping the descriptors tells the client the start failed.
            Err(_) => {}
        }
    }

    /// Forks a spare child that takes the next request from the request socket.
    fn fork_spare(&self) -> Option<u32> {
        // SAFETY: as in `serve_one`.
        match unsafe { sys::fork() }.ok()? {
            sys::Forked::Child => self.run_spare(),
            sys::Forked::Parent(pid) => Some(pid),
        }
    }

    /// A spare's life: wait for a request, tell the server, run it. Kept out of [`Self::fork_spare`] so that
    /// the server's own stack frame stays small: every stack page the server writes after a fork is a
    /// copy-on-write fault.
    #[inline(never)]
    fn run_spare(&self) -> ! {
        self.leave();
        let mut fds = Received::new();
        // SAFETY: a spare receives one request, which it keeps from then on: it has kept none yet.
        unsafe { REQUEST.touch() };
        // SAFETY: as above.
        let n = match unsafe { REQUEST.receive(self.requests.as_fd(), &mut fds) } {
            Ok(n) if n > 0 => n,
            _ => sys::exit_now(0), // the program is gone
        };
        sys::close_raw(self.requests.as_raw_fd());
        // The server reports our exit on the status pipe; it gets it now, we keep nothing of it.
        let Some(status) = fds.take(1) else { sys::exit_now(1) };
        let notify = self.notify.1.as_fd();
        if sys::send_with_fds(notify, &sys::pid().to_le_bytes(), &[status.as_fd()]).is_err() {
            sys::exit_now(1);
        }
        sys::close_raw(notify.as_raw_fd());
        // Closed with the raw call (dropping it would call libc's `close`, a code page of its own).
        sys::close_raw(status.into_raw_fd());
        // SAFETY: received above, and never again.
        run_request(unsafe { REQUEST.keep(n) }, fds)
    }

    /// In a child just forked by the server: drop the server's descriptors (but the request socket and the
    /// spares' end of the notify socket, which the caller deals with) and give back the program's signal
    /// dispositions. The server's objects are never dropped in the child, which exits without returning, so
    /// closing by number is sound.
    fn leave(&self) {
        for child in self.children.values() {
            sys::close_raw(child.status.as_raw_fd());
            if let Some(pidfd) = &child.pidfd {
                sys::close_raw(pidfd.as_raw_fd());
            }
        }
        for pidfd in self.spares.iter().filter_map(|(_, pidfd)| pidfd.as_ref()) {
            sys::close_raw(pidfd.as_raw_fd());
        }
        sys::close_raw(self.notify.0.as_raw_fd());
        sys::close_raw(self.epoll.raw());
        for sig in TERMINAL_SIGNALS {
            if self.ignored & (1 << (sig - 1)) == 0 {
                sys::set_signal_ignored_raw(sig, false);
            }
        }
        if self.ignored & (1 << (libc::SIGCHLD - 1)) != 0 {
            sys::set_signal_ignored_raw(libc::SIGCHLD, true);
        }
        // Until told otherwise, a server's child dies with the server; checked after asking, so that a server
        // killed just before is not missed (its child would live on under pid 1).
        if sys::set_parent_death_signal().is_err() || sys::parent_pid() != self.pid {
            sys::exit_now(1);
        }
    }
}

/// Runs the child a request asks for (`fds`: the request's descriptors, the status pipe taken), dying with
/// the server unless the program opted out.
fn run_request(request: &'static [u8], mut fds: Received) -> ! {
    let Some((kind, kill)) = request::kind(request) else { sys::exit_now(1) };
    if !kill {
        let _ = sys::clear_parent_death_signal();
    }
    match (kind, fds.take(0)) {
        (request::SOCKET, Some(sock)) if fds.len() == 2 => runtime::run_from_socket(sock, true, None),
        (request::SLOT, Some(done)) => {
            let Some((slot, identity, frame)) = request::decode_slot(request) else { sys::exit_now(1) };
            // Without a slot to write to, the child can only end: its parent learns the exit code.
            let Some(writer) = Writer::for_index(slot) else { sys::exit_now(1) };
            let frame = match frame {
                request::Frame::Inline(frame) => Ok(frame),
                // Kept for the rest of the child's life, as the inline frame is.
                request::Frame::Spilled { offset, len } => {
                    slots::take_spilled(offset, len).map(|frame| &*frame.leak()).map_err(|e| ChildError {
                        kind: ChildErrorKind::Bootstrap,
                        message: format!("reading the start-up message: {e}"),
                    })
                }
            };
            runtime::run_served(frame, fds.rest(2), writer, done, identity)
        }
        _ => sys::exit_now(1),
    }
}

/// The descriptors that came with a request, held without allocating (a served child allocates nothing on
/// its way to the target: see [`Bootstrap`](super::Bootstrap)).
struct Received {
    fds: [Option<OwnedFd>; sys::MAX_FDS_PER_MESSAGE],
    len: usize,
}

impl Received {
    fn new() -> Self {
        Received { fds: [const { None }; sys::MAX_FDS_PER_MESSAGE], len: 0 }
    }

    /// How many arrived.
    fn len(&self) -> usize {
        self.len
    }

    /// Takes the `i`th.
    fn take(&mut self, i: usize) -> Option<OwnedFd> {
        self.fds.get_mut(i)?.take()
    }

    /// The ones from the `from`th on (without allocating when there are none).
    fn rest(&mut self, from: usize) -> Vec<OwnedFd> {
        self.fds[from.min(self.len)..self.len].iter_mut().filter_map(Option::take).collect()
    }
}

impl Extend<OwnedFd> for Received {
    fn extend<I: IntoIterator<Item = OwnedFd>>(&mut self, received: I) {
        for fd in received {
            // One message carries no more than there is room for; any beyond would be closed here.
            if let Some(slot) = self.fds.get_mut(self.len) {
                *slot = Some(fd);
                self.len += 1;
            }
        }
    }
}

/// Where requests are received: static memory, so that a served child decodes its bootstrap in place and
/// borrows from it for the rest of its life. One page.
#[repr(C, align(4096))]
struct RequestBuffer(UnsafeCell<[u8; REQUEST_MAX]>);

// SAFETY: only the thread that runs the fork server's loop, and the children it forks (which have that one
// thread alone, and never write the buffer once they keep their request), use it; no other thread of the
// server (a libtest main thread) touches it: see `receive` and `keep`.
unsafe impl Sync for RequestBuffer {}

static REQUEST: RequestBuffer = RequestBuffer(UnsafeCell::new([0; REQUEST_MAX]));

impl RequestBuffer {
    /// Receives a request into the buffer; returns its length.
    ///
    /// # Safety
    ///
    /// No borrow from [`keep`](Self::keep) exists in this process: it is the server (which never keeps a
    /// request), or a spare that has not kept one yet.
    unsafe fn receive(&'static self, sock: BorrowedFd<'_>, fds: &mut Received) -> io::Result<usize> {
        // SAFETY: by the caller's guarantee, nothing else borrows the buffer.
        let buf = unsafe { &mut *self.0.get() };
        sys::recv_with_fds(sock, buf, fds)
    }

    /// Brings the buffer's page in ahead of a request, so that a spare's receive does not fault on it.
    ///
    /// # Safety
    ///
    /// As for [`receive`](Self::receive).
    unsafe fn touch(&'static self) {
        // SAFETY: by the caller's guarantee, nothing else borrows the buffer; the pointer is to its first byte.
        unsafe { self.0.get().cast::<u8>().write_volatile(0) }
    }

    /// The first `n` bytes received, for the rest of the process's life.
    ///
    /// # Safety
    ///
    /// The caller, a child of the server, never receives into the buffer again.
    unsafe fn keep(&'static self, n: usize) -> &'static [u8] {
        // SAFETY: by the caller's guarantee, the buffer is never written again in this process.
        let buf: &'static [u8; REQUEST_MAX] = unsafe { &*self.0.get() };
        &buf[..n.min(REQUEST_MAX)]
    }
}
