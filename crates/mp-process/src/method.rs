//! The start methods: how a child process comes to life.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a child process is created (CPython's start methods).
///
/// | method | what happens | closures | cost on Linux |
/// |---|---|---|---|
/// | [`Fork`](StartMethod::Fork) | `fork()`; the child runs the target at once | yes | lowest |
/// | [`Spawn`](StartMethod::Spawn) | re-execute this program; [`init`](crate::init) diverts it to the target | no | one `exec` |
/// | [`ForkServer`](StartMethod::ForkServer) | a clean server (started once, running nothing but `init`) forks each child | no | low |
///
/// The default is `ForkServer` on Linux (as in Python 3.14). `Fork` is opt-in: forking a multithreaded parent
/// copies only the calling thread, so a lock another thread held (inside `malloc`, `println!`, a `Mutex` of
/// yours) stays locked forever in the child. Python 3.12+ warns about exactly this; use `Fork` only in
/// programs that have not started threads, or whose child touches nothing those threads may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// `fork()` the current process.
    Fork,
    /// Re-execute the current executable.
    Spawn,
    /// Fork from a server process that has run nothing but [`init`](crate::init).
    ForkServer,
}

impl StartMethod {
    /// CPython's name: `"fork"`, `"spawn"` or `"forkserver"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }

    /// Whether this platform offers the method.
    pub fn is_supported(self) -> bool {
        cfg!(unix) || self == StartMethod::Spawn
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            StartMethod::Fork => 1,
            StartMethod::Spawn => 2,
            StartMethod::ForkServer => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(StartMethod::Fork),
            2 => Some(StartMethod::Spawn),
            3 => Some(StartMethod::ForkServer),
            _ => None,
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
