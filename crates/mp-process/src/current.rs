//! The running process's own identity, its parent, its live children, and the CPU count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ProcessError;
use crate::popen::Child;
use crate::registry::{self, ProcessLocal};
use crate::sys;

/// Who this process is; set by the child runtime, `MainProcess` otherwise.
pub(crate) struct Me {
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) parent: Option<ParentLink>,
    /// Numbers the children this process creates (`Process-1`, `Process-2`, ...).
    pub(crate) counter: AtomicU32,
}

/// What a child knows of its parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ParentLink {
    pub(crate) pid: u32,
    pub(crate) name: String,
    /// True when a fork server, not the parent itself, created this process (so `getppid` is the server's).
    pub(crate) via_server: bool,
}

/// In a re-executed child, made from what its parent sent (on first use: see [`crate::popen::Bootstrap`]).
static ME: ProcessLocal<Me> = ProcessLocal::new(crate::registry::slot::ME, || match crate::popen::who() {
    Some(who) => Me {
        name: who.name,
        identity: who.identity,
        daemon: who.daemon,
        parent: Some(who.parent),
        counter: AtomicU32::new(0),
    },
    None => Me {
        name: "MainProcess".to_owned(),
        identity: Vec::new(),
        daemon: false,
        parent: None,
        counter: AtomicU32::new(0),
    },
});

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
    ProcessInfo { name: me.name.clone(), pid: sys::pid(), daemon: me.daemon, identity: me.identity.clone() }
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

    /// Whether the parent still runs. (A child reparented after its parent's death sees a different
    /// `getppid`; a fork-server child asks the kernel about the parent's pid.)
    pub fn is_alive(&self) -> bool {
        if self.link.via_server { sys::process_exists(self.link.pid) } else { sys::parent_pid() == self.link.pid }
    }
}

/// The parent of this process; `None` in the main process.
pub fn parent_process() -> Option<ParentProcess> {
    me().parent.clone().map(|link| ParentProcess { link })
}

/// A child of this process that is still running (see [`active_children`]).
#[derive(Debug, Clone)]
pub struct ActiveChild {
    child: Arc<Child>,
}

impl ActiveChild {
    /// The child's name.
    pub fn name(&self) -> &str {
        &self.child.name
    }

    /// The child's pid (`None` only if a fork server died before reporting it).
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Whether the child is a daemon.
    pub fn daemon(&self) -> bool {
        self.child.daemon
    }

    /// Whether the child still runs.
    pub fn is_alive(&self) -> bool {
        !self.child.wait(Some(Duration::ZERO)).unwrap_or(true)
    }

    /// Sends SIGTERM (nothing happens if it has ended).
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.child.signal(libc::SIGTERM).map_err(ProcessError::from)
    }

    /// Sends SIGKILL (nothing happens if it has ended).
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.child.signal(libc::SIGKILL).map_err(ProcessError::from)
    }

    /// Waits up to `timeout` (`None`: no limit) and returns the exit code once it has ended.
    pub fn join_timeout(&self, timeout: Option<Duration>) -> Result<Option<i32>, ProcessError> {
        self.child.wait(timeout)?;
        Ok(self.child.exitcode())
    }
}

/// The children of this process that are still running; ended ones are reaped as a side effect
/// (CPython's `multiprocessing.active_children()`).
pub fn active_children() -> Vec<ActiveChild> {
    registry::live_children().into_iter().map(|child| ActiveChild { child }).collect()
}

/// The number of CPUs this process may use: its CPU affinity mask, not the machine's total (CPython 3.13's
/// `os.process_cpu_count()`), at least 1.
pub fn cpu_count() -> usize {
    sys::affinity_count()
}
