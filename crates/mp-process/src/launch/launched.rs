//! [`Launched`]: the parent's handle on a process it launched — how it learns the pid, waits for the end,
//! signals, and collects the outcome.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::LaunchSpec;
use crate::slots;
use crate::state::lock;
use crate::sys;
use crate::wire::outcome::{IN_MEMFD, INLINE, Outcome};

/// How a child's exit status is learnt.
#[derive(Debug)]
enum Reaper {
    /// Our own child, reaped with `waitpid`. A plain join waits with `waitid(WNOWAIT)`; the pidfd (readable at
    /// exit) is opened when something needs a descriptor — a sentinel, a timed wait — or at once when the
    /// kernel reaps children itself, since only a pidfd names such a child safely.
    Direct { pidfd: OnceLock<OwnedFd> },
    /// The fork server's child: the server writes its pid, then its exit code, to this socket.
    Server { status: OwnedFd },
}

/// Which process the child is: known at once for our own children, read from the status socket on first
/// use for a fork server's child (so that `start` does not wait for the server's `fork`).
#[derive(Debug)]
struct Identity {
    pid: u32,
    /// A fork server's child's pidfd, for signals; `None` if it had already ended when we looked.
    pidfd: Option<OwnedFd>,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes of the outcome message read so far.
    buf: Vec<u8>,
    /// Descriptors that came with it (a memory file holding a large outcome).
    fds: Vec<OwnedFd>,
    /// The child's end of the socket is closed.
    eof: bool,
    exitcode: Option<i32>,
    /// The fork server died without reporting the exit status.
    server_lost: bool,
    /// The fork server's report on its child: pid and exit code.
    reported: Option<(u32, i32)>,
    /// Where a forked child writes its outcome, when it has a slot (read when it is reaped).
    slot: Option<slots::Slot>,
}

/// Values kept alive until a child is reaped.
struct Deferred(Option<Box<dyn Send>>);

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Deferred(..)" } else { "Deferred(None)" })
    }
}

/// The parent's handle on a started child.
#[derive(Debug)]
pub(crate) struct Launched {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// `None` inside: the fork server died before reporting the pid.
    identity: OnceLock<Option<Identity>>,
    /// Our end of the child's socket, where the outcome arrives; for a fork-server child reporting through a
    /// slot, the read end of the pipe on which it says it is done; `None` for a forked child with a slot.
    pub(crate) sock: Option<OwnedFd>,
    /// A fork-server child's slot, where it publishes its pid (read without the state lock).
    served_slot: Option<slots::Writer>,
    reaper: Reaper,
    state: Mutex<State>,
    /// Values whose drop is put off until the child has been reaped (see `keep_until_reaped`).
    deferred: Mutex<Deferred>,
}

impl Launched {
    /// Our own child (fork, spawn), before it exists; [`adopt`](Launched::adopt) completes it. Its outcome
    /// arrives on `sock` or in `slot`.
    pub(crate) fn direct(info: &LaunchSpec, sock: Option<OwnedFd>, slot: Option<slots::Slot>) -> Self {
        let child = Launched::with(info, OnceLock::new(), sock, Reaper::Direct { pidfd: OnceLock::new() });
        lock(&child.state).slot = slot;
        child
    }

    /// Records the pid of a just-created child of ours. If the kernel reaps our children itself, its pid may
    /// name another process as soon as it ends, so its pidfd is opened now; if that fails, the child is
    /// killed so that nothing is left behind.
    /// `autoreaped` is [`sys::children_autoreaped`], which the caller asked already.
    pub(crate) fn adopt(&self, pid: u32, autoreaped: bool) -> io::Result<()> {
        let _ = self.identity.set(Some(Identity { pid, pidfd: None }));
        if autoreaped {
            // Killed on failure; the kernel reaps it (a wait here would block until every child has ended).
            let pidfd = sys::pidfd_open(pid).inspect_err(|_| {
                let _ = sys::send_signal(pid, libc::SIGKILL);
            })?;
            if let Reaper::Direct { pidfd: slot } = &self.reaper {
                let _ = slot.set(pidfd);
            }
        }
        Ok(())
    }

    /// The pid of our own child (known from `adopt` on).
    fn direct_pid(&self) -> u32 {
        self.identity.get().and_then(Option::as_ref).map_or(0, |i| i.pid)
    }

    /// Keeps `value` alive until the child has been reaped. Freeing memory right after `fork` writes to
    /// pages the child still shares, each write a page copy; once the child is gone it costs nothing.
    pub(crate) fn keep_until_reaped(&self, value: Box<dyn Send>) {
        lock(&self.deferred).0 = Some(value);
    }

    /// A fork server's child, whose pid is still on its way.
    pub(crate) fn served(info: &LaunchSpec, sock: OwnedFd, status: OwnedFd) -> Self {
        Launched::with(info, OnceLock::new(), Some(sock), Reaper::Server { status })
    }

    /// A fork server's child reporting through `slot`: `done` becomes readable when its outcome is there
    /// (or at its end), `status` carries the server's report.
    pub(crate) fn served_with_slot(info: &LaunchSpec, done: OwnedFd, status: OwnedFd, slot: slots::Slot) -> Self {
        let mut child = Launched::with(info, OnceLock::new(), Some(done), Reaper::Server { status });
        child.served_slot = Some(slot.writer());
        lock(&child.state).slot = Some(slot);
        child
    }

    fn with(info: &LaunchSpec, identity: OnceLock<Option<Identity>>, sock: Option<OwnedFd>, reaper: Reaper) -> Self {
        Launched {
            name: info.name.clone(),
            daemon: info.daemon,
            identity,
            sock,
            served_slot: None,
            reaper,
            state: Mutex::new(State::default()),
            deferred: Mutex::new(Deferred(None)),
        }
    }

    /// The child's identity. A fork server's child writes its pid on its socket first thing; reading it
    /// may wait the moment that takes. If the child died before, the server's exit report names the pid.
    fn identity(&self) -> Option<&Identity> {
        self.identity
            .get_or_init(|| {
                if let Some(view) = self.served_slot {
                    return self.identity_from_slot(view);
                }
                let mut state = lock(&self.state);
                let sock = self.sock.as_ref().expect("a served child has a socket");
                while state.buf.len() < 4 && !state.eof {
                    let mut chunk = [0u8; 64];
                    match sys::recv_with_fds(sock.as_fd(), &mut chunk, &mut state.fds) {
                        Ok(0) | Err(_) => state.eof = true,
                        Ok(n) => state.buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if state.buf.len() < 4 {
                    return state.reported.map(|(pid, _)| Identity { pid, pidfd: None });
                }
                let pid = u32::from_le_bytes(state.buf[..4].try_into().expect("4 bytes"));
                state.buf.drain(..4);
                // A child that already ended has no pidfd.
                let pidfd = if state.exitcode.is_none() { sys::pidfd_open(pid).ok() } else { None };
                Some(Identity { pid, pidfd })
            })
            .as_ref()
    }

    /// A fork-server child with a slot publishes its pid there as soon as it takes the request; until then,
    /// waits for it, watching for the server's report (the child died first) or its loss.
    fn identity_from_slot(&self, view: slots::Writer) -> Option<Identity> {
        let Reaper::Server { status } = &self.reaper else { return None };
        loop {
            if let Some(pid) = view.pid(Duration::from_millis(10)) {
                let ended = lock(&self.state).exitcode.is_some();
                // A child that already ended has no pidfd.
                let pidfd = if ended { None } else { sys::pidfd_open(pid).ok() };
                return Some(Identity { pid, pidfd });
            }
            {
                let state = lock(&self.state);
                if let Some((pid, _)) = state.reported {
                    return Some(Identity { pid, pidfd: None });
                }
                if state.server_lost {
                    return None;
                }
            }
            if sys::poll_readable(&[status.as_fd()], Some(Duration::ZERO)).is_ok_and(|r| r[0]) {
                let _ = self.reap_served(status.as_fd());
            }
        }
    }

    /// The child's pid; `None` only if the fork server died before reporting it.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.identity().map(|i| i.pid)
    }

    /// The descriptor that becomes readable when the child has ended: the pidfd of our own child (opened
    /// now if need be), the status socket of a fork server's child (the server writes the exit code there,
    /// after the pid).
    pub(crate) fn sentinel(&self) -> io::Result<BorrowedFd<'_>> {
        let pidfd = match &self.reaper {
            Reaper::Server { status } => return Ok(status.as_fd()),
            Reaper::Direct { pidfd } => pidfd,
        };
        if let Some(fd) = pidfd.get() {
            return Ok(fd.as_fd());
        }
        // Under the state lock, so that the child cannot be reaped (and its pid reused) meanwhile.
        let state = lock(&self.state);
        if state.exitcode.is_some() {
            return always_ready();
        }
        let fd = sys::pidfd_open(self.direct_pid())?;
        drop(state);
        Ok(pidfd.get_or_init(|| fd).as_fd())
    }

    /// Waits up to `timeout` (`None`: no limit) for the child to end; returns whether it has ended (and was
    /// reaped). Only the exit is watched: the child never blocks on its outcome (see [`send_outcome`]), so
    /// one wake-up per child is all it costs.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        if lock(&self.state).exitcode.is_some() {
            return Ok(true);
        }
        let pidfd = match &self.reaper {
            Reaper::Server { status } => return self.wait_served(status.as_fd(), timeout),
            Reaper::Direct { pidfd } => pidfd.get(),
        };
        match (timeout, pidfd) {
            (Some(timeout), _) if timeout.is_zero() => return self.reap_direct(false),
            // Blocks without reaping, so that the state lock is not held meanwhile.
            (None, None) => match sys::wait_ended(self.direct_pid()) {
                Err(e) if e.raw_os_error() != Some(libc::ECHILD) => return Err(e),
                _ => {}
            },
            _ => {
                if !sys::poll_readable(&[self.sentinel()?], timeout)?[0] {
                    return Ok(false);
                }
            }
        }
        self.reap_direct(true)
    }

    /// Reaps our own child if it has ended (waiting for that when `block`), then collects its outcome.
    fn reap_direct(&self, block: bool) -> io::Result<bool> {
        let mut state = lock(&self.state);
        if state.exitcode.is_some() {
            return Ok(true);
        }
        let (code, reaped) = match sys::wait_status(self.direct_pid(), block) {
            Ok(Some(code)) => (Some(code), true),
            Ok(None) => return Ok(false),
            // Reaped by the kernel (SIGCHLD ignored): the pidfd, opened before the child could end, still
            // tells the status on Linux 6.15 and later; else the outcome does, if there is one.
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => (self.autoreaped_exit_code(), false),
            Err(e) => return Err(e),
        };
        self.collect(&mut state, code, reaped);
        Ok(true)
    }

    /// The exit code of our own child that the kernel reaped, from its pidfd (see [`sys::pidfd_exit_code`]).
    fn autoreaped_exit_code(&self) -> Option<i32> {
        match &self.reaper {
            Reaper::Direct { pidfd } => pidfd.get().and_then(|fd| sys::pidfd_exit_code(fd.as_fd())),
            Reaper::Server { .. } => None,
        }
    }

    /// Once the child is gone: everything it wrote is in the socket or its slot; records the exit code (when
    /// it is unknown, the outcome's, and 255 without one, as CPython reports a lost status).
    fn collect(&self, state: &mut State, code: Option<i32>, reaped: bool) {
        // First, so that the allocations below can reuse what this frees.
        drop(lock(&self.deferred).0.take());
        if self.served_slot.is_none() {
            self.drain(state);
        }
        self.take_slot(state, reaped);
        let code = code.or_else(|| complete_outcome(state).map(|o| o.exit_code())).unwrap_or(255);
        state.exitcode = Some(code);
    }

    /// Moves the outcome from the child's slot (if it has one, and wrote there) to `state.buf`; frees the slot.
    fn take_slot(&self, state: &mut State, reaped: bool) {
        let State { slot, buf, .. } = state;
        if let Some(slot) = slot.as_mut() {
            if slot.is_taken() {
                return;
            }
            buf.clear();
            buf.push(INLINE);
            if !slot.take(buf, reaped) {
                buf.clear();
            }
        }
    }

    /// A fork server's child: its outcome, the last thing it writes before `_exit`, settles the exit code
    /// (0 returned, 1 panicked or failed) without waiting for the server to reap it and report — one
    /// wake-up instead of two. A child that sends no outcome (a signal, `exit(n)`) waits for the report.
    fn wait_served(&self, status: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        loop {
            let left = match (timeout, deadline) {
                (None, _) | (Some(_), None) => None,
                (Some(_), Some(d)) => Some(d.saturating_duration_since(std::time::Instant::now())),
            };
            let sock = self.sock.as_ref().expect("a served child has a socket");
            let ready = sys::poll_readable(&[sock.as_fd(), status], left)?;
            if ready[1] {
                self.reap_served(status)?;
                return Ok(true);
            }
            if !ready[0] {
                return Ok(false);
            }
            let mut state = lock(&self.state);
            if self.served_slot.is_some() {
                // Its one byte says the outcome is in the slot; end of file alone, that it died without one.
                let mut byte = [0u8; 8];
                match sys::read_some(sock.as_fd(), &mut byte) {
                    Ok(n) if byte[..n].contains(&slots::DONE) => {
                        self.take_slot(&mut state, false);
                    }
                    Ok(0) | Err(_) => state.eof = true,
                    Ok(_) => {}
                }
            } else {
                drop(state);
                let _ = self.identity(); // the pid comes first on the socket
                state = lock(&self.state);
                self.drain(&mut state);
            }
            if let Some(code) = complete_outcome(&state).map(|o| o.exit_code()) {
                state.exitcode = Some(code);
                drop(lock(&self.deferred).0.take());
                return Ok(true);
            }
            if state.eof {
                // Gone without an outcome: the server's report has the exit code.
                drop(state);
                if !sys::poll_readable(&[status], left)?[0] {
                    return Ok(false);
                }
                self.reap_served(status)?;
                return Ok(true);
            }
        }
    }

    /// Reads whatever the socket holds without blocking.
    fn drain(&self, state: &mut State) {
        let Some(sock) = &self.sock else { return };
        // Small: a frame of 4 KiB or more would touch (probe) a fresh stack page, a copy-on-write fault while
        // a forked child lives. Outcomes are small, or come in a memory file.
        let mut chunk = [0u8; 1024];
        while !state.eof {
            match sys::try_recv_with_fds(sock.as_fd(), &mut chunk, &mut state.fds) {
                Ok(0) => state.eof = true,
                Ok(n) => state.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => state.eof = true,
            }
        }
    }

    /// Collects the exit status of a fork server's child, whose status socket is ready, then its outcome.
    fn reap_served(&self, status: BorrowedFd<'_>) -> io::Result<()> {
        {
            let mut state = lock(&self.state);
            if state.exitcode.is_some() {
                return Ok(());
            }
            if state.reported.is_none() && !state.server_lost {
                // The server's report: [pid u32][exit code i32].
                let mut bytes = [0u8; 8];
                match sys::read_exact(status, &mut bytes) {
                    Ok(()) => {
                        let pid = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
                        state.reported = Some((pid, i32::from_le_bytes(bytes[4..].try_into().expect("4"))));
                    }
                    // CPython reports 255 when the fork server vanished.
                    Err(_) => state.server_lost = true,
                }
            }
        }
        if self.served_slot.is_none() {
            let _ = self.identity(); // takes the pid off the front of the socket
        }
        let mut state = lock(&self.state);
        if state.exitcode.is_none() {
            let code = state.reported.map(|(_, code)| code);
            self.collect(&mut state, code, false);
        }
        Ok(())
    }

    /// Whether the child is known to have ended (no system call).
    pub(crate) fn has_ended(&self) -> bool {
        lock(&self.state).exitcode.is_some()
    }

    /// The exit code, once the child has ended (checks without blocking).
    pub(crate) fn exitcode(&self) -> Option<i32> {
        let _ = self.wait(Some(Duration::ZERO));
        lock(&self.state).exitcode
    }

    /// Sends a signal unless the child has already been reaped.
    pub(crate) fn signal(&self, sig: i32) -> io::Result<()> {
        // Before taking the state lock: learning a served child's identity takes it too.
        let pidfd = match &self.reaper {
            Reaper::Direct { pidfd } => pidfd.get(),
            Reaper::Server { .. } => self.identity().and_then(|i| i.pidfd.as_ref()),
        };
        let state = lock(&self.state);
        if state.exitcode.is_some() {
            // Ended already: nothing to signal, as in CPython.
            return Ok(());
        }
        match (pidfd, &self.reaper) {
            (Some(pidfd), _) => sys::pidfd_signal(pidfd.as_fd(), sig),
            // Our own unreaped child (a zombie at worst): its pid is still its own while we hold the lock.
            (None, Reaper::Direct { .. }) => match sys::send_signal(self.direct_pid(), sig) {
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                other => other,
            },
            // A served child that ended before we learnt of it.
            (None, Reaper::Server { .. }) => Ok(()),
        }
    }

    /// After the child has ended: its outcome, if it sent one, and whether the fork server was lost.
    pub(crate) fn outcome(&self) -> (Option<Outcome>, bool) {
        let mut state = lock(&self.state);
        let outcome = match state.buf.first() {
            Some(&INLINE) => Outcome::decode(&state.buf[1..]),
            Some(&IN_MEMFD) if state.buf.len() == 1 => {
                state.fds.pop().and_then(|fd| sys::memfd_contents(fd).ok()).and_then(|frame| Outcome::decode(&frame))
            }
            _ => None,
        };
        (outcome, state.server_lost)
    }
}

/// A descriptor that is always readable (a pipe whose write end is closed): the sentinel of a child that has
/// been reaped, whose pid may already name another process.
fn always_ready() -> io::Result<BorrowedFd<'static>> {
    static READY: crate::state::ProcessLocal<OnceLock<OwnedFd>> =
        crate::state::ProcessLocal::new(crate::state::slot::READY, OnceLock::new);
    let cell = READY.get();
    if let Some(fd) = cell.get() {
        return Ok(fd.as_fd());
    }
    let fd = sys::closed_pipe()?;
    Ok(cell.get_or_init(|| fd).as_fd())
}

/// The outcome, if the whole of it has arrived.
fn complete_outcome(state: &State) -> Option<Outcome> {
    match state.buf.first() {
        Some(&INLINE) => {
            let len = u64::from_le_bytes(state.buf.get(1..9)?.try_into().ok()?) as usize;
            (state.buf.len() >= 9 + len).then(|| Outcome::decode(&state.buf[1..])).flatten()
        }
        Some(&IN_MEMFD) => {
            let fd = state.fds.last()?.try_clone().ok()?;
            sys::memfd_contents(fd).ok().and_then(|frame| Outcome::decode(&frame))
        }
        _ => None,
    }
}
