//! [`Process`]: a target function running in a child process, and its [`Builder`].

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::identity;
use crate::job::{ClosureJob, FnJob, Job};
use crate::launch::{self, LaunchSpec, Launched};
use crate::target::Target;
use crate::wait::{Sentinel, Waitable};
use crate::wire::bootstrap::ParentLink;
use crate::wire::outcome::Outcome;
use crate::{JoinError, ProcessError, StartError, StartMethod, runtime, settings, sys, tree};

/// Options for a [`Process`] (CPython's `Process(name=..., daemon=...)` keywords, plus a few of Rust's own).
///
/// ```
/// # mp_process::init();
/// use mp_process::{Builder, StartMethod};
///
/// fn greet(who: String) -> String { format!("hello, {who}") }
///
/// let mut p = Builder::new()
///     .name("greeter")
///     .start_method(StartMethod::Spawn)
///     .target(greet, "world".to_owned());
/// p.start()?;
/// assert_eq!(p.join()?, "hello, world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    daemon: Option<bool>,
    method: Option<StartMethod>,
    keep_alive_after_parent: bool,
    affinity: Option<Vec<usize>>,
    detached: bool,
    authkey: Option<Vec<u8>>,
}

impl Builder {
    /// Default options: name `Process-N`, daemon flag inherited, the default start method.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process name (default `Process-N`, `Process-1:N` for a child's children).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Daemon flag (default: the current process's). Daemons are terminated when their parent exits, and
    /// may not start children.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = Some(daemon);
        self
    }

    /// The start method (default: [`get_start_method`](crate::get_start_method) at `start`).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Opt out of dying with the parent. By default a child is killed (SIGKILL) when its parent dies,
    /// even by SIGKILL, where CPython leaves it running under pid 1. `true` restores CPython's behaviour.
    pub fn keep_alive_after_parent(mut self, keep: bool) -> Self {
        self.keep_alive_after_parent = keep;
        self
    }

    /// Restricts the child to these CPUs (Linux `sched_setaffinity`); an invalid set makes the child report
    /// a [`ChildError`](crate::ChildError).
    pub fn cpu_affinity(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        self.affinity = Some(cpus.into_iter().collect());
        self
    }

    /// A detached process: a service of the process tree rather than a child in CPython's sense (mp's
    /// shared-memory resource tracker is one). It is not listed by [`active_children`](crate::active_children),
    /// not joined or terminated when this process exits, does not die with it, and may be started from a
    /// daemon. Its handle still joins, signals and reports it.
    pub fn detached(mut self, detached: bool) -> Self {
        self.detached = detached;
        self
    }

    /// The child's authentication key (default: this process's, see
    /// [`ProcessInfo::authkey`](crate::ProcessInfo::authkey)); its own children inherit it in turn.
    pub fn authkey(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.authkey = Some(key.into());
        self
    }

    /// A process that will run `target(args)`. See [`Process::new`].
    pub fn target<F, M, A>(self, target: F, args: A) -> Process<F::Output>
    where
        F: Target<M, A>,
        F::Output: Serialize + DeserializeOwned + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        M: 'static,
    {
        const { assert!(std::mem::size_of::<F>() == 0, "the target must be a fn item or a closure without captures") };
        self.build(Box::new(FnJob { target, args: ManuallyDrop::new(args), _marker: PhantomData }))
    }

    /// A process that will run a closure. See [`Process::from_closure`].
    pub fn closure<C, R>(self, closure: C) -> Process<R>
    where
        C: FnOnce() -> R + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.build(Box::new(ClosureJob { closure: ManuallyDrop::new(closure) }))
    }

    fn build<R>(self, job: Box<dyn Job>) -> Process<R> {
        let (identity, default_name) = identity::next_child_identity();
        Process {
            name: self.name.unwrap_or(default_name),
            identity,
            daemon: self.daemon.unwrap_or_else(|| identity::me().daemon),
            method: self.method,
            kill_with_parent: !self.keep_alive_after_parent && !self.detached,
            affinity: self.affinity,
            detached: self.detached,
            authkey: self.authkey,
            job: Some(job),
            child: None,
            taken: false,
            _result: PhantomData,
        }
    }
}

/// A function running in a child process (CPython's `multiprocessing.Process`).
///
/// The target returns a value of type `R`, which comes back through [`join`](Process::join) as from
/// `std::thread::JoinHandle`. A panic comes back as [`JoinError::Panicked`] with its message and location.
///
/// ```
/// # mp_process::init();
/// use mp_process::Process;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let mut p = Process::new(square, 12);
/// p.start()?;
/// assert_eq!(p.join()?, 144);
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Process<R> {
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    method: Option<StartMethod>,
    kill_with_parent: bool,
    affinity: Option<Vec<usize>>,
    detached: bool,
    /// Set by the builder; `None`: this process's at `start`.
    authkey: Option<Vec<u8>>,
    job: Option<Box<dyn Job>>,
    child: Option<Arc<Launched>>,
    /// The result has been handed out by a join.
    taken: bool,
    _result: PhantomData<fn() -> R>,
}

impl<R: Serialize + DeserializeOwned + 'static> Process<R> {
    /// A process that will run `target(args)` with default options (see [`Builder`]).
    ///
    /// `args` is Python's `args=`: `()` for a target without parameters, the value itself for one, a tuple
    /// for several (see [`Target`]). `target` is a function item (`my_fn`) or a closure that captures nothing: a re-executed child finds it
    /// by its type, so it cannot carry captured state (that is checked at compile time). Pass state in `args`
    /// which must be serde-serializable; values holding OS resources, such as a
    /// [`Handle`](crate::Handle), arrive in the child referring to the same resource.
    pub fn new<F, M, A>(target: F, args: A) -> Self
    where
        F: Target<M, A, Output = R>,
        A: Serialize + DeserializeOwned + Send + 'static,
        M: 'static,
    {
        Builder::new().target(target, args)
    }

    /// A process that runs a closure, which may capture anything `Send`. Only the `Fork` start method can run
    /// it (the closure lives in the copied memory); `start` under another method is
    /// [`StartError::ClosureNeedsFork`].
    pub fn from_closure<C>(closure: C) -> Self
    where
        C: FnOnce() -> R + Send + 'static,
    {
        Builder::new().closure(closure)
    }
}

impl<R> Process<R> {
    /// The process name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a daemon process.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The child's pid; `None` before `start` (and if the fork server died before reporting it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.pid())
    }

    /// Starts the child. Errors leave nothing running: a second start, a missing [`init`](crate::init), a
    /// daemonic parent, an unsupported method, a closure under a non-fork method, arguments that fail to
    /// serialize (reported here, in the parent), or an OS failure.
    pub fn start(&mut self) -> Result<(), StartError> {
        if self.child.is_some() || self.job.is_none() {
            return Err(StartError::AlreadyStarted);
        }
        if !runtime::is_initialized() {
            return Err(StartError::NotInitialized);
        }
        if identity::me().daemon && !self.detached {
            return Err(StartError::DaemonicParent);
        }
        let method = self.method.unwrap_or_else(settings::get_start_method);
        if !method.is_supported() {
            return Err(StartError::Unsupported(method));
        }
        let job = self.job.as_ref().expect("checked above");
        if method != StartMethod::Fork && job.entry().is_none() {
            return Err(StartError::ClosureNeedsFork(method));
        }
        // Reap children that ended, as CPython's `start` does.
        tree::live_children();
        let me = identity::me();
        let info = LaunchSpec {
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            parent: ParentLink { pid: sys::pid(), name: me.name.clone(), via_server: false, started: 0 },
            kill_with_parent: self.kill_with_parent,
            affinity: self.affinity.clone(),
            // The method this child was started with becomes its own default (a child of a spawn context spawns).
            start_method: method,
            authkey: self.authkey.clone().unwrap_or_else(identity::authkey),
            inherited: if method == StartMethod::Fork { Default::default() } else { settings::snapshot() },
        };
        let job = self.job.take().expect("checked above");
        let args = runtime::child_args();
        let child = tree::on_launcher(move || launch::launch(method, info, job, args))??;
        if !self.detached {
            tree::add_child(child.clone());
        }
        self.method = Some(method);
        if log::log_enabled!(target: "mp", log::Level::Debug) {
            log::debug!(target: "mp", "started {} (pid {}) with {method}", self.name, child.pid().unwrap_or(0));
        }
        self.child = Some(child);
        Ok(())
    }

    /// The start method this process uses (or will use).
    pub fn start_method(&self) -> StartMethod {
        self.method.unwrap_or_else(settings::get_start_method)
    }

    /// Waits for the child to end and returns the target's value.
    ///
    /// The errors say how the child ended otherwise: [`JoinError::Panicked`], [`JoinError::Signaled`]
    /// (after `terminate` or `kill`), [`JoinError::Exited`] (`exit(n)` inside the target), and the rest. The
    /// value is handed out once; a later join is [`JoinError::AlreadyJoined`] (the exit code stays readable).
    pub fn join(&mut self) -> Result<R, JoinError>
    where
        R: DeserializeOwned,
    {
        self.join_timeout(None).map(|r| r.expect("no timeout"))
    }

    /// Like [`join`](Process::join), waiting at most `timeout` (`None`: no limit). `Ok(None)` means the child
    /// still runs, which is not an error (CPython's `join(timeout)` returns with the process alive).
    pub fn join_timeout(&mut self, timeout: impl Into<Option<Duration>>) -> Result<Option<R>, JoinError>
    where
        R: DeserializeOwned,
    {
        let child = self.child.clone().ok_or(JoinError::NotStarted)?;
        if !child.wait(timeout.into())? {
            return Ok(None);
        }
        if !self.detached {
            tree::remove_child(&child);
        }
        if std::mem::replace(&mut self.taken, true) {
            return Err(JoinError::AlreadyJoined);
        }
        let (outcome, server_lost) = child.outcome();
        log::debug!(target: "mp", "joined {} (exit code {})", self.name, child.exitcode().unwrap_or(255));
        let pid = child.pid().unwrap_or(0);
        let code = child.exitcode().unwrap_or(255);
        match outcome {
            Some(Outcome::Returned(bytes)) => {
                crate::codec::from_bytes(&bytes).map(Some).map_err(JoinError::ResultDecode)
            }
            Some(Outcome::Panicked(info)) => Err(JoinError::Panicked(info)),
            Some(Outcome::Failed(err)) => Err(JoinError::Child(err)),
            None if server_lost => Err(JoinError::ForkServerLost { pid }),
            None if code < 0 => Err(JoinError::Signaled { pid, signal: -code }),
            None => Err(JoinError::Exited { pid, code }),
        }
    }

    /// Whether the child has started and not yet ended.
    pub fn is_alive(&self) -> bool {
        self.child.as_ref().is_some_and(|c| c.exitcode().is_none())
    }

    /// The exit code once the child has ended: 0 after a return, 1 after a panic, `n` after `exit(n)`, `-N`
    /// after signal `N` (CPython's convention). `None` before start and while running.
    pub fn exitcode(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| c.exitcode())
    }

    /// Sends SIGTERM (CPython's `terminate`). Nothing happens if the child has already ended.
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL (CPython's `kill`). Nothing happens if the child has already ended.
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.signal(libc::SIGKILL)
    }

    fn signal(&self, sig: i32) -> Result<(), ProcessError> {
        log::debug!(target: "mp", "sending signal {sig} to {}", self.name);
        let child = self.child.as_ref().ok_or(ProcessError::NotStarted)?;
        child.signal(sig).map_err(ProcessError::from)
    }

    /// Releases the process's resources (CPython's `close`). Consuming `self` makes any later use a compile
    /// error. Closing a running child fails and hands the process back inside [`CloseError`].
    pub fn close(self) -> Result<(), CloseError<R>> {
        match &self.child {
            Some(child) if child.exitcode().is_none() => Err(CloseError { process: Box::new(self) }),
            Some(child) => {
                tree::remove_child(child);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl<R> Waitable for Process<R> {
    /// Ready once the child has ended; never ready before `start`.
    fn sentinel(&self) -> io::Result<Option<Sentinel<'_>>> {
        self.child.as_ref().map(|c| c.sentinel().map(Sentinel::new)).transpose()
    }

    /// A child known to have ended stays ready (a fork-server child's descriptor may not say so yet).
    fn ready_now(&self) -> bool {
        self.child.as_ref().is_some_and(|c| c.has_ended())
    }
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.child, self.exitcode()) {
            (None, _) => "initial".to_owned(),
            (Some(_), None) => "started".to_owned(),
            (Some(_), Some(code)) => format!("stopped exitcode={code}"),
        };
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .field("state", &state)
            .finish()
    }
}

/// [`Process::close`] on a running process: the process is handed back.
pub struct CloseError<R> {
    process: Box<Process<R>>,
}

impl<R> CloseError<R> {
    /// The process that could not be closed.
    pub fn into_inner(self) -> Process<R> {
        *self.process
    }
}

impl<R> fmt::Debug for CloseError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseError").field("process", &self.process).finish()
    }
}

impl<R> fmt::Display for CloseError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot close a process while it is still running; join or terminate it first")
    }
}

impl<R> std::error::Error for CloseError<R> {}
