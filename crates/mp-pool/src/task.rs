//! Tasks as they travel to a worker: a function named by its trampoline, and its serialized input.
//!
//! A pool's functions are zero-sized function items (or closures without captures), so their *type* says
//! everything about them. A job carries the monomorphised trampoline for that type as an
//! [`FnOffset`](mp_process::offset::FnOffset), mp-process's one home for calling by offset; the worker,
//! running the same build of the program (mp-process checks the build before a worker runs), resolves it.
//! Jobs travel only over the pool's private queues between a parent and the workers it started, so no one
//! else can hand a worker an offset.

use mp_process::offset::{self, FnOffset};
use mp_process::{PanicInfo, Target};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A function a pool can run: a [`Target`] (a function item, or a closure without captures, taking its
/// arguments as `Process::new` does) whose result is a serde type. Implemented for every such function;
/// it only names the bounds that `map`, `apply`, `submit` and the rest share.
pub trait Task<M, A>: Target<M, A, Output = <Self as Task<M, A>>::Result> {
    /// What the function returns.
    type Result: Serialize + DeserializeOwned + Send + 'static;
}

impl<F, M, A> Task<M, A> for F
where
    F: Target<M, A>,
    F::Output: Serialize + DeserializeOwned + Send + 'static,
{
    type Result = F::Output;
}

/// A function call for a worker: which trampoline, and its input (or where to find it).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) entry: EntryOffset,
    pub(crate) input: Input,
    /// Its hard time limit (the worker tells the task through `current_task`).
    pub(crate) timeout: Option<std::time::Duration>,
}

/// A job's serialized input: inline, or (when large) in a shared-memory segment the worker reads and
/// unlinks, so that a job never streams through a queue whose reader might be gone.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Input {
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    Segment(String),
}

/// Why a job failed in the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Failure {
    Panicked(PanicInfo),
    ArgumentDecode(String),
    ResultEncode(String),
}

/// A trampoline: decode the input, call the function, encode the output.
pub(crate) type Entry = fn(&[u8]) -> Result<Vec<u8>, Failure>;

/// A trampoline as a job names it.
pub(crate) type EntryOffset = FnOffset<Entry>;

/// The trampoline that maps `F` over a chunk: `Vec<A>` in, `Vec<R>` out.
pub(crate) fn map_entry<F, M, A>(input: &[u8]) -> Result<Vec<u8>, Failure>
where
    F: Target<M, A>,
    F::Output: Serialize,
    A: DeserializeOwned,
{
    let items: Vec<A> = mp_process::codec::from_bytes(input).map_err(Failure::ArgumentDecode)?;
    let f: F = offset::conjure();
    let outputs = catch(|| items.into_iter().map(|a| f.call(a)).collect::<Vec<_>>())?;
    mp_process::codec::to_vec(&outputs).map_err(Failure::ResultEncode)
}

/// The trampoline that calls `F` once: `A` in, `R` out.
pub(crate) fn call_entry<F, M, A>(input: &[u8]) -> Result<Vec<u8>, Failure>
where
    F: Target<M, A>,
    F::Output: Serialize,
    A: DeserializeOwned,
{
    let args: A = mp_process::codec::from_bytes(input).map_err(Failure::ArgumentDecode)?;
    let f: F = offset::conjure();
    let output = catch(|| f.call(args))?;
    mp_process::codec::to_vec(&output).map_err(Failure::ResultEncode)
}

/// Runs `f`, turning a panic into [`Failure::Panicked`] (message, location, process name and pid).
fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Failure> {
    offset::catch_panic(f).map_err(Failure::Panicked)
}
