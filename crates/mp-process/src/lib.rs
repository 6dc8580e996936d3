//! Python's `multiprocessing.Process` for Rust: run a function in a child process under the `fork`, `spawn`
//! or `forkserver` start method, and get its return value (or its panic) back.
//!
//! ```
//! use mp_process::Process;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     mp_process::init(); // first thing in main: re-executed children are diverted here
//!     let mut p = Process::new(square, 7);
//!     p.start()?;
//!     assert_eq!(p.join()?, 49);
//!     assert_eq!(p.exitcode(), Some(0));
//!     Ok(())
//! }
//! ```
//!
//! Architecture invariant: the bottom of the mp stack; depends on no other mp crate.
//!
//! # Processes
//!
//! A [`Process`] runs a target — a function item, or a closure without captures — with serde-serializable
//! arguments. [`start`](Process::start), [`join`](Process::join) / [`join_timeout`](Process::join_timeout),
//! [`is_alive`](Process::is_alive), [`exitcode`](Process::exitcode) (0, 1 on panic, `n` on `exit(n)`, `-N`
//! on signal `N`), [`terminate`](Process::terminate), [`kill`](Process::kill) and [`close`](Process::close)
//! follow CPython. A panic in the child comes back as [`JoinError::Panicked`] with its [`PanicInfo`].
//! Options (name, daemon, start method, CPU affinity, dying with the parent) go through a [`Builder`].
//!
//! # Start methods and contexts
//!
//! [`StartMethod::ForkServer`] is the default on Linux (as in Python 3.14); [`StartMethod::Spawn`]
//! re-executes the program, and [`StartMethod::Fork`] copies it (only safe in a single-threaded parent, and
//! the only method that runs closures: [`Process::from_closure`]). [`set_start_method`],
//! [`get_start_method`], [`get_context`] and [`all_start_methods`] are CPython's. Re-executed programs must
//! call [`init`] first in `main`; a child from a different build of the executable refuses to run.
//!
//! # Handles
//!
//! A [`Handle`] (an owned file descriptor) inside a target's arguments arrives in the child as a descriptor
//! for the same pipe, socket or file, under every start method. Higher mp crates build their shareable
//! locks, queues and shared memory on it.
//!
//! # The process tree
//!
//! [`current_process`], [`parent_process`], [`active_children`] and [`cpu_count`] are CPython's. Daemonic
//! children are terminated and the others joined when `main` returns. Unlike CPython, a child dies with its
//! parent even when the parent is SIGKILLed (Linux `PR_SET_PDEATHSIG`), unless
//! [`Builder::keep_alive_after_parent`] says otherwise. [`wait`] watches several processes at once.

#![warn(missing_docs)]

mod child;
mod context;
mod current;
mod error;
mod handle;
mod inherit;
mod method;
pub mod offset;
mod popen;
mod process;
mod registry;
mod sys;
mod target;
mod wait;

pub(crate) use crate::popen::forkserver;

pub use crate::{
    child::init,
    context::{
        Context, all_start_methods, default_context, get_context, get_start_method, set_executable, set_start_method,
    },
    current::{
        ActiveChild, ParentProcess, ProcessInfo, active_children, cpu_count, current_process, parent_process,
        set_authkey,
    },
    error::{ChildError, ChildErrorKind, ContextError, JoinError, PanicInfo, ProcessError, StartError},
    handle::{CodecError, Handle, from_bytes_with_handles, to_bytes_with_handles},
    inherit::{inherited, register_child_setup, set_inherited},
    method::StartMethod,
    process::{Builder, CloseError, Process},
    target::Target,
    wait::{Sentinel, Waitable, wait},
};
