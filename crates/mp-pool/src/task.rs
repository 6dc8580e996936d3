//! Tasks as they travel to a worker: a function named by its trampoline, and its serialized input.
//!
//! A pool's functions are zero-sized function items (or closures without captures), so their *type* says
//! everything about them. A job carries the offset of the monomorphised trampoline for that type from
//! [`anchor`]; the worker, running the same build of the program (mp-process checks the build before a
//! worker runs), adds its own `anchor` address back. Jobs travel only over the pool's private queues
//! between a parent and the workers it started, so no one else can hand a worker an offset.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};

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
    pub(crate) entry: i64,
    pub(crate) input: Input,
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

/// A fixed point in the executable that trampoline offsets are measured from.
#[inline(never)]
fn anchor() -> u64 {
    std::hint::black_box(0x6d70_2d70_6f6f_6c00)
}

fn anchor_address() -> i64 {
    anchor as fn() -> u64 as usize as i64
}

/// The offset of `entry` from the anchor, valid in every process running this same build.
pub(crate) fn offset(entry: Entry) -> i64 {
    (entry as usize as i64).wrapping_sub(anchor_address())
}

/// The trampoline at `offset`.
///
/// # Safety
///
/// `offset` must come from [`offset`] in a process running the same build of the executable.
pub(crate) unsafe fn entry_at(offset: i64) -> Entry {
    let address = anchor_address().wrapping_add(offset) as usize;
    // SAFETY: by the caller's guarantee this is the address of an `Entry` function in this image.
    unsafe { std::mem::transmute::<usize, Entry>(address) }
}

/// Makes the zero-sized function value `F`.
fn conjure<F: Copy>() -> F {
    const { assert!(size_of::<F>() == 0, "a pool function must be a fn item or a closure without captures") };
    // SAFETY: `F` has no bytes (asserted at compile time) and is a function item or capture-less closure,
    // whose only invariant is to exist: the parent held a value of it.
    unsafe { std::mem::zeroed() }
}

/// The trampoline that maps `F` over a chunk: `Vec<A>` in, `Vec<R>` out.
pub(crate) fn map_entry<F, M, A>(input: &[u8]) -> Result<Vec<u8>, Failure>
where
    F: Target<M, A>,
    F::Output: Serialize,
    A: DeserializeOwned,
{
    let items: Vec<A> = postcard::from_bytes(input).map_err(|e| Failure::ArgumentDecode(e.to_string()))?;
    let f: F = conjure();
    let outputs = catch(|| items.into_iter().map(|a| f.call(a)).collect::<Vec<_>>())?;
    postcard::to_stdvec(&outputs).map_err(|e| Failure::ResultEncode(e.to_string()))
}

/// The trampoline that calls `F` once: `A` in, `R` out.
pub(crate) fn call_entry<F, M, A>(input: &[u8]) -> Result<Vec<u8>, Failure>
where
    F: Target<M, A>,
    F::Output: Serialize,
    A: DeserializeOwned,
{
    let args: A = postcard::from_bytes(input).map_err(|e| Failure::ArgumentDecode(e.to_string()))?;
    let f: F = conjure();
    let output = catch(|| f.call(args))?;
    postcard::to_stdvec(&output).map_err(|e| Failure::ResultEncode(e.to_string()))
}

thread_local! {
    /// Where the last panic on this thread happened (recorded by the worker's panic hook).
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// In a worker: record panic locations, then let the previous hook print the panic as usual.
pub(crate) fn install_panic_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
        previous(info);
    }));
}

/// Runs `f`, turning a panic into [`Failure::Panicked`] with the message, location, process name and pid.
fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Failure> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".to_owned());
        let me = mp_process::current_process();
        Failure::Panicked(PanicInfo {
            message,
            location: PANIC_LOCATION.with(|slot| slot.borrow_mut().take()),
            process_name: me.name().to_owned(),
            pid: me.pid(),
        })
    })
}
