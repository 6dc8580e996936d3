//! The error types: one per family of operations (start, join, control, start-method configuration).

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::StartMethod;

/// Why [`Process::start`](crate::Process::start) failed. No child is left running after any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `start` was called a second time (CPython: "cannot start a process twice").
    #[error("cannot start a process twice")]
    AlreadyStarted,
    /// [`init`](crate::init) was not called at the top of `main` (or of the `#[test]`). Without it a re-executed
    /// child would run `main` again instead of its target (CPython's "bootstrapping phase" error).
    #[error("mp_process::init() must be called first in main before starting processes")]
    NotInitialized,
    /// A daemon process tried to start a child (CPython: "daemonic processes are not allowed to have children").
    #[error("daemonic processes are not allowed to have children")]
    DaemonicParent,
    /// The start method is not available on this platform (for example `Fork` on Windows).
    #[error("start method {0} is not available on this platform")]
    Unsupported(StartMethod),
    /// A closure target (see [`Process::from_closure`](crate::Process::from_closure)) can only run in a forked
    /// child: it cannot be sent to a re-executed program.
    #[error("a closure target needs the fork start method, not {0}")]
    ClosureNeedsFork(StartMethod),
    /// The arguments failed to serialize; nothing was started.
    #[error("failed to serialize the process arguments: {0}")]
    Serialize(String),
    /// The arguments hold more OS handles than one start can carry (253).
    #[error("too many handles in the process arguments ({0}; at most 253)")]
    TooManyHandles(usize),
    /// The operating system refused (fork, spawn, socket creation, or the fork server could not be reached).
    #[error("failed to start the process: {0}")]
    Io(#[from] io::Error),
}

/// A panic in a child, carried back to the parent as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicInfo {
    /// The panic message (`panic!("...")`'s text; `"Box<dyn Any>"` for a non-string payload).
    pub message: String,
    /// `file:line:column` of the panic, when known.
    pub location: Option<String>,
    /// The name of the process that panicked (`Process-1`, ...).
    pub process_name: String,
    /// The pid of the process that panicked.
    pub pid: u32,
}

impl fmt::Display for PanicInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} (pid {}) panicked", self.process_name, self.pid)?;
        if let Some(location) = &self.location {
            write!(f, " at {location}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What went wrong inside a child before or after its target ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChildErrorKind {
    /// The child is a different build of the executable than the parent, so it refused to run the target.
    BuildMismatch,
    /// The child could not decode its arguments.
    ArgumentDecode,
    /// The target's return value failed to serialize.
    ResultEncode,
    /// The child could not read its start-up message.
    Bootstrap,
}

/// An error reported by the child itself: the target did not run, or its result could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildError {
    /// What kind of failure.
    pub kind: ChildErrorKind,
    /// Details.
    pub message: String,
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ChildErrorKind::BuildMismatch => "the child is a different build of the executable",
            ChildErrorKind::ArgumentDecode => "the child could not decode its arguments",
            ChildErrorKind::ResultEncode => "the child could not serialize its result",
            ChildErrorKind::Bootstrap => "the child could not start",
        };
        write!(f, "{what}: {}", self.message)
    }
}

/// Why [`Process::join`](crate::Process::join) produced no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The process was never started.
    #[error("can only join a started process")]
    NotStarted,
    /// An earlier `join` already returned the result.
    #[error("the process result was already taken by an earlier join")]
    AlreadyJoined,
    /// The target panicked (exit code 1).
    #[error("{0}")]
    Panicked(PanicInfo),
    /// The child was killed by a signal (exit code `-signal`).
    #[error("process {pid} was killed by signal {signal}")]
    Signaled {
        /// The child's pid.
        pid: u32,
        /// The signal number (15 for `terminate`, 9 for `kill`).
        signal: i32,
    },
    /// The child exited with `code` without returning from its target (for example `std::process::exit(3)`).
    /// A code with no result may also mean the child never reached its target: is `mp_process::init()` the
    /// first call in `main`?
    #[error("process {pid} exited with code {code} without returning a result")]
    Exited {
        /// The child's pid.
        pid: u32,
        /// Its exit code.
        code: i32,
    },
    /// The child reported a failure of its own (different build, undecodable arguments, unserializable result).
    #[error("{0}")]
    Child(ChildError),
    /// The child's result arrived but could not be decoded as the expected type.
    #[error("failed to decode the process result: {0}")]
    ResultDecode(String),
    /// The fork server died before it could report how the child ended.
    #[error("the fork server died before reporting the exit status of process {pid}")]
    ForkServerLost {
        /// The child's pid.
        pid: u32,
    },
    /// Waiting on the child failed.
    #[error("failed to wait for the process: {0}")]
    Io(#[from] io::Error),
}

impl JoinError {
    /// The panic, when the target panicked.
    pub fn panic_info(&self) -> Option<&PanicInfo> {
        match self {
            JoinError::Panicked(info) => Some(info),
            _ => None,
        }
    }
}

/// Why a control operation (`terminate`, `kill`, `close`, `sentinel`) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The process was never started.
    #[error("the process has not been started")]
    NotStarted,
    /// `close` while the child still runs (CPython: "Cannot close a process while it is still running").
    #[error("cannot close a process while it is still running; join or terminate it first")]
    StillRunning,
    /// The operating system refused.
    #[error("process control failed: {0}")]
    Io(#[from] io::Error),
}

/// Why a start method could not be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// Not one of `fork`, `spawn`, `forkserver`.
    #[error("cannot find context for {0:?}")]
    UnknownStartMethod(String),
    /// The start method is not available on this platform.
    #[error("start method {0} is not available on this platform")]
    Unsupported(StartMethod),
    /// `set_start_method` was already called (or the default was already used); pass `force` to change it.
    #[error("context has already been set")]
    AlreadySet,
}

/// Parses CPython's names (next to [`ContextError`], which it returns for anything else).
impl FromStr for StartMethod {
    type Err = ContextError;

    /// Parses CPython's names; anything else is [`ContextError::UnknownStartMethod`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fork" => Ok(StartMethod::Fork),
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::ForkServer),
            other => Err(ContextError::UnknownStartMethod(other.to_owned())),
        }
    }
}
