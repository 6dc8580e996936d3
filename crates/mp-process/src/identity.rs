//! The running process's own identity, its parent, its live children, and the CPU count.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::ProcessError;
use crate::state::{ProcessLocal, lock};
use crate::sys;
use crate::wire::bootstrap::ParentLink;

/// Who this process is; set by the child runtime, `MainProcess` otherwise.
pub(crate) struct Me {
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) parent: Option<ParentLink>,
    /// Numbers the children this process creates (`Process-1`, `Process-2`, ...).
    pub(crate) counter: AtomicU32,
    /// The process's authentication key (CPython's `current_process().authkey`).
    pub(crate) authkey: Mutex<Vec<u8>>,
}

/// In a re-executed child, made from what its parent sent (on first use: see [`crate::wire::bootstrap::Bootstrap`]).
static ME: ProcessLocal<Me> = ProcessLocal::new(crate::state::slot::ME, || match crate::wire::bootstrap::who() {
    Some(who) => Me {
        name: who.name,
        identity: who.identity,
        daemon: who.daemon,
        parent: Some(who.parent),
        counter: AtomicU32::new(0),
        authkey: Mutex::new(who.authkey),
    },
    None => Me {
        name: "MainProcess".to_owned(),
        identity: Vec::new(),
        daemon: false,
        parent: None,
        counter: AtomicU32::new(0),
        authkey: Mutex::new(random_authkey()),
    },
});

/// A fresh main process's key: 32 random bytes, as CPython's `os.urandom(32)`.
fn random_authkey() -> Vec<u8> {
    let mut key = vec![0u8; AUTHKEY_LEN];
    if let Err(e) = sys::random_bytes(&mut key) {
        // The kernel's generator does not fail on Linux 3.17 and later; never run with a guessable key.
        panic!("mp-process: no random bytes for the process authkey: {e}");
    }
    key
}

/// The length of a generated authkey.
const AUTHKEY_LEN: usize = 32;

/// This process's authkey (see [`ProcessInfo::authkey`]).
pub(crate) fn authkey() -> Vec<u8> {
    lock(&me().authkey).clone()
}

/// Sets this process's authentication key (CPython's `current_process().authkey = key`): children started
/// from now on inherit it, and it is the default key of mp's managers and listeners. An empty key is allowed,
/// as in CPython, and means no authentication where a key is optional.
///
/// ```
/// mp_process::set_authkey(b"secret-key".to_vec());
/// assert_eq!(mp_process::current_process().authkey(), b"secret-key");
/// ```
pub fn set_authkey(key: impl Into<Vec<u8>>) {
    *lock(&me().authkey) = key.into();
}

pub(crate) fn me() -> &'static Me {
    ME.get()
}

pub(crate) fn set_me(me: Box<Me>) {
    ME.set(me);
}

/// In a re-executed child: forget any identity inherited from the fork server, so that the child's is made
/// from its bootstrap on first use.
pub(crate) fn forget_me() {
    ME.reset();
}

/// The identity and name of the next child this process creates: `Process-N`, and `Process-1:N` in the
/// first child (CPython's `_identity` numbering).
pub(crate) fn next_child_identity() -> (Vec<u32>, String) {
    let me = me();
    let mut identity = me.identity.clone();
    identity.push(me.counter.fetch_add(1, Ordering::Relaxed) + 1);
    let parts: Vec<String> = identity.iter().map(u32::to_string).collect();
    let name = format!("Process-{}", parts.join(":"));
    (identity, name)
}

/// A snapshot of the running process (CPython's `multiprocessing.current_process()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
    daemon: bool,
    identity: Vec<u32>,
    authkey: Vec<u8>,
}

impl ProcessInfo {
    /// `MainProcess` in the main program, `Process-N` (or the name given) in a child.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether this process is a daemon (daemons may not start children).
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The position in the process tree: empty in the main process, `[1, 2]` in `Process-1:2`.
    pub fn identity(&self) -> &[u32] {
        &self.identity
    }

    /// The process's authentication key (CPython's `authkey`): 32 random bytes in the main process, inherited
    /// by every child under every start method unless [`Builder::authkey`](crate::Builder::authkey) gives the
    /// child its own, and changed with [`set_authkey`]. It is the default key of mp's managers and of
    /// listeners and clients that ask for the process's key.
    pub fn authkey(&self) -> &[u8] {
        &self.authkey
    }
}

/// The running process: `MainProcess` in the main program.
///
/// ```
/// let me = mp_process::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid(), std::process::id());
/// ```
pub fn current_process() -> ProcessInfo {
    let me = me();
    ProcessInfo {
        name: me.name.clone(),
        pid: sys::pid(),
        daemon: me.daemon,
        identity: me.identity.clone(),
        authkey: authkey(),
    }
}

/// The process that started this one (CPython's `multiprocessing.parent_process()`).
#[derive(Debug, Clone)]
pub struct ParentProcess {
    link: ParentLink,
}

impl ParentProcess {
    /// The parent's pid.
    pub fn pid(&self) -> u32 {
        self.link.pid
    }

    /// The parent's name.
    pub fn name(&self) -> &str {
        &self.link.name
    }

    /// Whether the parent still runs. A child reparented after its parent's death sees a different `getppid`;
    /// a fork-server child (whose `getppid` is the server) checks the parent's pid *and* start time, so a
    /// new process that reused the pid does not pass for the parent.
    pub fn is_alive(&self) -> bool {
        self.is_the_parent()
    }

    fn is_the_parent(&self) -> bool {
        if !self.link.via_server {
            return sys::parent_pid() == self.link.pid;
        }
        match sys::process_start_time(self.link.pid) {
            Some(started) => self.link.started == 0 || started == self.link.started,
            None => false,
        }
    }

    /// Waits for the parent to end (CPython's `parent_process().join()`).
    pub fn join(&self) -> Result<(), ProcessError> {
        self.join_timeout(None).map(drop)
    }

    /// Waits up to `timeout` (`None`: no limit) for the parent to end; returns whether it has ended (CPython's
    /// `join(timeout)`, after which one asks `is_alive()`).
    pub fn join_timeout(&self, timeout: impl Into<Option<Duration>>) -> Result<bool, ProcessError> {
        let pidfd = match sys::pidfd_open(self.link.pid) {
            Ok(pidfd) => pidfd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        // Checked after opening: if the process behind the pid is still the parent now, the pidfd is its.
        if !self.is_the_parent() {
            return Ok(true);
        }
        Ok(sys::poll_readable(&[std::os::fd::AsFd::as_fd(&pidfd)], timeout.into())?[0])
    }
}

/// The parent of this process; `None` in the main process.
pub fn parent_process() -> Option<ParentProcess> {
    me().parent.clone().map(|link| ParentProcess { link })
}

/// When the process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`); `None` if there is
/// no such live process (a zombie counts as ended). With the pid it names one process for good, where a pid
/// alone may be reused: what [`ParentProcess::is_alive`] checks, and how mp-shm's tracker names its segments.
///
/// ```
/// let me = std::process::id();
/// assert_eq!(mp_process::process_start_time(me), mp_process::process_start_time(me));
/// assert!(mp_process::process_start_time(me).is_some());
/// ```
pub fn process_start_time(pid: u32) -> Option<u64> {
    sys::process_start_time(pid)
}

/// The number of CPUs this process may use: its CPU affinity mask, not the machine's total (CPython 3.13's
/// `os.process_cpu_count()`), at least 1.
pub fn cpu_count() -> usize {
    sys::affinity_count()
}
