//! The process tree as this process sees it: the children it started and has not reaped, the launcher
//! thread that starts children for short-lived threads, and the exit handler that joins and terminates
//! children when the program (or a child's target) ends.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use crate::ProcessError;
use crate::launch::{self, Launched};
use crate::state::{ProcessLocal, lock, slot};
use crate::sys;

/// Children started by this process and not yet reaped.
static CHILDREN: ProcessLocal<Mutex<Vec<Arc<Launched>>>> = ProcessLocal::new(slot::CHILDREN, || Mutex::new(Vec::new()));

/// The launcher thread's queue (see [`on_launcher`]).
type Task = Box<dyn FnOnce() + Send>;
static LAUNCHER: ProcessLocal<Mutex<Option<mpsc::Sender<Task>>>> =
    ProcessLocal::new(slot::LAUNCHER, || Mutex::new(None));

pub(crate) fn add_child(child: Arc<Launched>) {
    lock(CHILDREN.get()).push(child);
}

pub(crate) fn remove_child(child: &Arc<Launched>) {
    lock(CHILDREN.get()).retain(|c| !Arc::ptr_eq(c, child));
}

/// Reaps children that have ended and returns the ones still running (CPython's `active_children`).
pub(crate) fn live_children() -> Vec<Arc<Launched>> {
    let snapshot = lock(CHILDREN.get()).clone();
    let ended: Vec<_> = snapshot.iter().filter(|c| c.wait(Some(Duration::ZERO)).unwrap_or(true)).cloned().collect();
    let mut children = lock(CHILDREN.get());
    children.retain(|c| !ended.iter().any(|e| Arc::ptr_eq(c, e)));
    children.clone()
}

/// Runs `f` on a thread that lives as long as the process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that created a child ends, not the process; a child started from
/// a short-lived thread would be killed when that thread returns. The main thread lives as long as the
/// process, so it starts children itself; any other thread hands the start to this launcher thread.
pub(crate) fn on_launcher<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    if sys::is_main_thread() {
        return Ok(f());
    }
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let task: Task = Box::new(move || {
        let _ = reply_tx.send(f());
    });
    let mut sender = lock(LAUNCHER.get());
    let queue = match sender.as_ref() {
        Some(queue) => queue.clone(),
        None => {
            let (tx, rx) = mpsc::channel::<Task>();
            std::thread::Builder::new().name("mp-process-launcher".into()).spawn(move || {
                for task in rx {
                    // A panicking task must not take the launcher down with it.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                }
            })?;
            *sender = Some(tx.clone());
            tx
        }
    };
    drop(sender);
    queue.send(task).map_err(|_| std::io::Error::other("the launcher thread is gone"))?;
    reply_rx.recv().map_err(|_| std::io::Error::other("the launcher thread failed to start the process"))
}

/// Hooks run as this process ends (see [`register_at_exit`]); a forked child starts without its parent's.
static EXIT_HOOKS: ProcessLocal<Mutex<Hooks>> = ProcessLocal::new(slot::EXIT_HOOKS, || Mutex::new(Vec::new()));

/// The exit hooks, in the order they were registered.
type Hooks = Vec<fn()>;

/// Registers `hook` to run when this process ends normally: when `main` returns (or `exit` is called) in the
/// main program, or, in a child, once its target has returned (or panicked) and its own children have been
/// joined, just before it reports to its parent. Hooks run after the children are joined, in the order they
/// were registered; the same function registered twice runs once. Not run for a process killed by a signal,
/// or a child that calls `exit(n)` itself. A forked child does not inherit its parent's hooks: register them
/// in a [`register_child_setup`](crate::register_child_setup) hook to have every child run one. CPython's
/// `multiprocessing.util.Finalize` with an exit priority plays this part.
///
/// ```
/// # mp_process::init();
/// fn flush() { /* e.g. send what a logger buffered */ }
/// mp_process::register_at_exit(flush);
/// ```
pub fn register_at_exit(hook: fn()) {
    let mut hooks = lock(EXIT_HOOKS.get());
    if !hooks.iter().any(|h| std::ptr::fn_addr_eq(*h, hook)) {
        hooks.push(hook);
    }
}

/// Runs the exit hooks (each once: they are taken from the list).
fn run_exit_hooks() {
    let Some(hooks) = EXIT_HOOKS.get_if_created() else { return };
    let hooks = std::mem::take(&mut *lock(hooks));
    for hook in hooks {
        // A hook that panics must not keep the others, or the process's report, from running.
        let _ = std::panic::catch_unwind(hook);
    }
}

/// CPython's `_exit_function` for children: terminate daemonic children, then join every child; then let the
/// fork server go; then run the exit hooks. Runs at normal exit of the main program (via `atexit`) and at the
/// end of every child.
pub(crate) fn shutdown_children() {
    log::debug!(target: "mp", "process shutting down");
    join_children();
    run_exit_hooks();
}

fn join_children() {
    if CHILDREN.get_if_created().is_none() {
        return; // never started a child: nothing to join, no fork server
    }
    let children = live_children();
    for child in children.iter().filter(|c| c.daemon) {
        let _ = child.signal(libc::SIGTERM);
    }
    for child in &children {
        let _ = child.wait(None);
    }
    lock(CHILDREN.get()).clear();
    launch::forkserver::shutdown();
}

/// A child of this process that is still running (see [`active_children`]).
#[derive(Debug, Clone)]
pub struct ActiveChild {
    child: Arc<Launched>,
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
    live_children().into_iter().map(|child| ActiveChild { child }).collect()
}
