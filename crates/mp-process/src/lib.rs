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
//!
//! Every process has an authentication key ([`ProcessInfo::authkey`], [`set_authkey`], [`Builder::authkey`]):
//! 32 random bytes in the main process, inherited by its children under every start method, the default key of
//! mp's managers. [`register_child_setup`] runs a function in every child before its target, under every
//! start method (a spawned or fork-server child never runs `main`); [`set_inherited`] passes settings down
//! the tree.
//!
//! # Calling by offset
//!
//! [`offset`] is the one home of the machinery that names a function by its offset in the executable, which
//! mp's higher crates use to run functions in processes they start: [`offset::FnOffset`],
//! [`offset::conjure`], [`offset::catch_panic`] and [`offset::build_id`].
//!
//! # Levels
//!
//! Each module uses only modules on lower levels (`cargo xtask tidy` checks it), so a reader knows which room
//! a change belongs in and what it may touch:
//!
//! | level | modules | what they hold |
//! |---|---|---|
//! | 0 | `sys`, `method`, `target`, `codec` | system calls; `StartMethod`; the `Target` trait; encoding that keeps the serializer's message |
//! | 1 | `error`, `handle`, `wait`, `state`, `call` | error types; `Handle` and its codec; `wait`; process-local state; calling by offset and the build id |
//! | 2 | `wire/` | what crosses a process boundary: environment names, bootstrap, outcome, fork-server request |
//! | 3 | `settings`, `identity`, `slots` | inherited settings, start method, setup hooks; who this process is; outcome slots |
//! | 4 | `job` | a target with its arguments, its trampoline, panic capture |
//! | 5 | `runtime` | the child side, from creation to `_exit` (the forked child's rules are stated there) |
//! | 6 | `launch/` | one launcher per start method (`fork`, `spawn`, `forkserver/` client and server) and the parent's handle on what it launched |
//! | 7 | `tree` | this process's children, the launcher thread, the exit handler, `active_children` |
//! | 8 | `process`, `init` | `Process` and `Builder`; the entry call |
//! | 9 | `context` | `Context`, a factory of processes |

#![warn(missing_docs)]

mod call;
pub mod codec;
mod context;
mod error;
mod handle;
mod identity;
mod init;
mod job;
mod launch;
mod method;
mod process;
mod runtime;
mod settings;
mod slots;
mod state;
mod sys;
mod target;
mod tree;
mod wait;
mod wire;

pub mod offset {
    //! Calling a function by offset: the one audited home of the trampoline machinery that mp's crates share.
    //!
    //! A process that re-executes its own program (spawn, the fork server, a pool's workers, an MPI rank) cannot
    //! send a function pointer: the other process maps the program at another address. It sends the function's
    //! *offset* from a fixed [anchor](FnOffset) instead, and the other process adds its own anchor's address back.
    //! That is sound only when both run the same build of the program, which [`build_id`] tells: mp-process
    //! compares it before a re-executed child runs anything, and any other user of offsets must do the same
    //! (or, like mp-pool, receive offsets only from a parent whose child it is).
    //!
    //! The pieces:
    //!
    //! - [`FnOffset`]: a function pointer as an offset, serde-serializable; resolving one is `unsafe`, with the
    //!   contract stated there.
    //! - [`conjure`]: the value of a zero-sized function item or capture-less closure, from its type alone: what
    //!   a trampoline, monomorphised for one target type, calls.
    //! - [`catch_panic`]: runs a function, turning a panic into a [`PanicInfo`](crate::PanicInfo) (message, location, process name,
    //!   pid), as every child and worker reports one.
    //! - [`build_id`]: this build's identity (the ELF `NT_GNU_BUILD_ID` note, else a hash of the executable's
    //!   contents), equal in every copy of the binary and different across builds.
    //!
    //! ```
    //! use mp_process::offset::{FnOffset, build_id};
    //!
    //! fn double(x: u32) -> u32 { x * 2 }
    //!
    //! let offset = FnOffset::of(double as fn(u32) -> u32);
    //! // ... the offset and `build_id().fingerprint()` travel to a process running the same build ...
    //! assert_eq!(build_id(), build_id());
    //! // SAFETY: made by `FnOffset::of` for this very type in this very build.
    //! let f = unsafe { offset.resolve() };
    //! assert_eq!(f(21), 42);
    //! ```

    pub use crate::call::{BuildId, FnOffset, build_id, conjure};
    pub use crate::job::catch_panic;
}

pub use crate::{
    context::{Context, default_context, get_context},
    error::{ChildError, ChildErrorKind, ContextError, JoinError, PanicInfo, ProcessError, StartError},
    handle::{CodecError, Handle, from_bytes_with_handles, keep_off_stdio, to_bytes_with_handles},
    identity::{
        ParentProcess, ProcessInfo, cpu_count, current_process, parent_process, process_start_time, set_authkey,
    },
    init::init,
    method::StartMethod,
    process::{Builder, CloseError, Process},
    settings::{
        all_start_methods, get_start_method, inherited, register_before_fork, register_child_setup, set_executable,
        set_inherited, set_start_method,
    },
    target::Target,
    tree::{ActiveChild, active_children, register_at_exit},
    wait::{Sentinel, Waitable, wait},
};
