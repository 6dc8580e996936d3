//! Targets: how a function and its arguments are packed in the parent and run in the child.
//!
//! A target is a zero-sized function item or non-capturing closure, so its *type* says everything about it.
//! The parent sends the address of the monomorphised trampoline [`entry::<F, A, R>`] as an offset from
//! [`anchor`]; the child, running the same build (checked by fingerprint first), adds its own `anchor`
//! address back. This is how `procspawn` and the test harnesses of `ipc-channel` find their way, without a
//! registry of target names.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ChildError, ChildErrorKind, PanicInfo};
use crate::{StartError, handle};

/// The trampoline a re-executed child calls: decode the arguments, run the target, encode the outcome.
pub(crate) type Entry = fn(payload: &[u8], fds: Vec<OwnedFd>) -> Outcome;

/// A fixed point in the executable that target offsets are measured from.
#[inline(never)]
pub(crate) fn anchor() -> u64 {
    std::hint::black_box(0x6d70_5f61_6e63_686f)
}

fn anchor_address() -> i64 {
    anchor as fn() -> u64 as usize as i64
}

/// The offset of `entry` from [`anchor`], valid in any process running this same build.
pub(crate) fn entry_offset(entry: Entry) -> i64 {
    (entry as usize as i64).wrapping_sub(anchor_address())
}

/// The entry at `offset` from [`anchor`].
///
/// # Safety
///
/// `offset` must come from [`entry_offset`] in a process running the same build of the executable.
pub(crate) unsafe fn entry_at(offset: i64) -> Entry {
    let address = anchor_address().wrapping_add(offset) as usize;
    // SAFETY: by the caller's guarantee the address is that of an `Entry` function in this image.
    unsafe { std::mem::transmute::<usize, Entry>(address) }
}

/// How a child's run ended, as sent back to the parent.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The target returned; its value, postcard-encoded.
    Returned(Vec<u8>),
    /// The target panicked.
    Panicked(PanicInfo),
    /// The child could not run the target or send its result.
    Failed(ChildError),
}

impl Outcome {
    /// The exit code that goes with this outcome (CPython: 0 on return, 1 on an exception).
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Outcome::Returned(_) => 0,
            Outcome::Panicked(_) | Outcome::Failed(_) => 1,
        }
    }

    /// Hands `[u64 LE length][tag]` and the body of the frame to `send` (no copy of a returned value).
    // Inlined into the forked child's path: each code page it touches first is a page fault.
    #[inline(always)]
    pub(crate) fn with_frame<T>(&self, send: impl FnOnce([u8; 9], &[u8]) -> T) -> T {
        let encoded;
        let (tag, body) = match self {
            Outcome::Returned(bytes) => (0u8, bytes.as_slice()),
            Outcome::Panicked(info) => {
                encoded = postcard::to_stdvec(info).unwrap_or_default();
                (1, encoded.as_slice())
            }
            Outcome::Failed(err) => {
                encoded = postcard::to_stdvec(err).unwrap_or_default();
                (2, encoded.as_slice())
            }
        };
        let mut head = [0u8; 9];
        head[..8].copy_from_slice(&(body.len() as u64 + 1).to_le_bytes());
        head[8] = tag;
        send(head, body)
    }

    /// Decodes a complete frame; `None` when the bytes are missing or damaged.
    pub(crate) fn decode(frame: &[u8]) -> Option<Outcome> {
        let len = u64::from_le_bytes(frame.get(..8)?.try_into().ok()?) as usize;
        let rest = frame.get(8..)?;
        if rest.len() != len || len == 0 {
            return None;
        }
        let body = &rest[1..];
        match rest[0] {
            0 => Some(Outcome::Returned(body.to_vec())),
            1 => postcard::from_bytes(body).ok().map(Outcome::Panicked),
            2 => postcard::from_bytes(body).ok().map(Outcome::Failed),
            _ => None,
        }
    }
}

/// A function that can be a process target, called with an argument value `Args`.
///
/// Implemented for function items and closures without captures of up to five parameters. `Args` is the
/// single argument itself for one parameter, `()` for none, and a tuple for several — Python's `args=`:
///
/// | target | `args` |
/// |---|---|
/// | `fn hello()` | `()` |
/// | `fn square(x: u64) -> u64` | `7` |
/// | `fn add(a: i32, b: i32) -> i32` | `(1, 2)` |
///
/// `Marker` only tells the implementations apart; it is inferred.
pub trait Target<Marker, Args>: Copy + Send + 'static {
    /// The return type.
    type Output;
    /// Calls the target.
    fn call(self, args: Args) -> Self::Output;
}

impl<F, R> Target<fn() -> R, ()> for F
where
    F: FnOnce() -> R + Copy + Send + 'static,
{
    type Output = R;
    fn call(self, (): ()) -> R {
        self()
    }
}

impl<F, A, R> Target<fn(A) -> R, A> for F
where
    F: FnOnce(A) -> R + Copy + Send + 'static,
{
    type Output = R;
    fn call(self, a: A) -> R {
        self(a)
    }
}

macro_rules! tuple_targets {
    ($(($($name:ident),+)),+) => {$(
        impl<F, R, $($name),+> Target<fn($($name),+) -> R, ($($name,)+)> for F
        where
            F: FnOnce($($name),+) -> R + Copy + Send + 'static,
        {
            type Output = R;
            #[allow(non_snake_case, reason = "the type names double as variable names")]
            fn call(self, ($($name,)+): ($($name,)+)) -> R {
                self($($name),+)
            }
        }
    )+};
}

tuple_targets!((A, B), (A, B, C), (A, B, C, D), (A, B, C, D, E));

/// A target with its arguments, type-erased, waiting in the parent to be started.
pub(crate) trait Job: Send {
    /// The serialized arguments and the OS handles they carry (for re-executed children).
    fn encode(&self) -> Result<(Vec<u8>, Vec<OwnedFd>), StartError>;
    /// The trampoline a re-executed child calls; `None` for closures, which only a forked child can run.
    fn entry(&self) -> Option<Entry>;
    /// Runs the target in a forked child, which has the arguments in memory already. It moves them out
    /// without writing to the job, and the child never frees the job: every heap page written after `fork` is a
    /// copy-on-write fault.
    ///
    /// # Safety
    ///
    /// Called at most once, and the job is neither used nor dropped afterwards (the forked child `_exit`s).
    unsafe fn run_once(&mut self) -> Outcome;
}

/// A function item (or non-capturing closure) and its arguments.
pub(crate) struct FnJob<F, M, A> {
    pub(crate) target: F,
    /// Moved out by `run_once` (after which the job is never dropped); dropped by `Drop` otherwise.
    pub(crate) args: ManuallyDrop<A>,
    pub(crate) _marker: PhantomData<fn() -> M>,
}

impl<F, M, A> Job for FnJob<F, M, A>
where
    F: Target<M, A>,
    F::Output: Serialize,
    A: Serialize + DeserializeOwned + Send + 'static,
    M: 'static,
{
    fn encode(&self) -> Result<(Vec<u8>, Vec<OwnedFd>), StartError> {
        handle::to_bytes_with_handles(&*self.args).map_err(|e| StartError::Serialize(e.to_string()))
    }

    fn entry(&self) -> Option<Entry> {
        Some(entry::<F, M, A>)
    }

    unsafe fn run_once(&mut self) -> Outcome {
        // SAFETY: by the contract of `run_once`, the arguments are never touched again.
        let (target, args) = (self.target, unsafe { ManuallyDrop::take(&mut self.args) });
        run_target(move || target.call(args))
    }
}

impl<F, M, A> Drop for FnJob<F, M, A> {
    fn drop(&mut self) {
        // SAFETY: a job that ran is never dropped (see `run_once`), so the arguments are still here.
        unsafe { ManuallyDrop::drop(&mut self.args) }
    }
}

/// A closure target (fork only).
pub(crate) struct ClosureJob<C> {
    /// Moved out by `run_once` (after which the job is never dropped); dropped by `Drop` otherwise.
    pub(crate) closure: ManuallyDrop<C>,
}

impl<C> Drop for ClosureJob<C> {
    fn drop(&mut self) {
        // SAFETY: a job that ran is never dropped (see `run_once`), so the closure is still here.
        unsafe { ManuallyDrop::drop(&mut self.closure) }
    }
}

impl<C, R> Job for ClosureJob<C>
where
    C: FnOnce() -> R + Send + 'static,
    R: Serialize,
{
    fn encode(&self) -> Result<(Vec<u8>, Vec<OwnedFd>), StartError> {
        Ok((Vec::new(), Vec::new()))
    }

    fn entry(&self) -> Option<Entry> {
        None
    }

    unsafe fn run_once(&mut self) -> Outcome {
        // SAFETY: by the contract of `run_once`, the closure is never touched again.
        run_target(unsafe { ManuallyDrop::take(&mut self.closure) })
    }
}

/// The trampoline for target type `F`: decode `A`, conjure `F`, run, encode the result.
fn entry<F, M, A>(payload: &[u8], fds: Vec<OwnedFd>) -> Outcome
where
    F: Target<M, A>,
    F::Output: Serialize,
    A: DeserializeOwned,
{
    const { assert!(std::mem::size_of::<F>() == 0) };
    let args: A = match handle::from_bytes_with_handles(payload, fds) {
        Ok(args) => args,
        Err(e) => {
            return Outcome::Failed(ChildError { kind: ChildErrorKind::ArgumentDecode, message: e.to_string() });
        }
    };
    // SAFETY: `F` is zero-sized (asserted at compile time when the process was built) and is a function item
    // or a closure without captures, so it has no bytes and no invariant beyond existing; the parent held a
    // value of it.
    let target: F = unsafe { std::mem::zeroed() };
    run_target(move || target.call(args))
}

/// Registers this thread's panic-location slot now (see [`crate::handle::touch_tables`]).
pub(crate) fn touch_tables() {
    PANIC_LOCATION.with(|_| ());
}

thread_local! {
    /// Where the last panic on this thread happened (set by the hook, read after `catch_unwind`).
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process image: forked children inherit it) a panic hook that records the location,
/// then calls the previous hook (which prints the message, as CPython prints a child's traceback).
// Inlined: a forked child, which inherits the hook, only reads the flag (a code page it would touch first is a
// page fault).
#[inline(always)]
pub(crate) fn install_panic_hook() {
    if !PANIC_HOOK.is_completed() {
        PANIC_HOOK.call_once(install_panic_hook_now);
    }
}

static PANIC_HOOK: std::sync::Once = std::sync::Once::new();

fn install_panic_hook_now() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
        previous(info);
    }));
}

/// Runs `f`, catching a panic, and encodes what happened.
pub(crate) fn run_target<R: Serialize>(f: impl FnOnce() -> R) -> Outcome {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => match postcard::to_stdvec(&value) {
            Ok(bytes) => Outcome::Returned(bytes),
            Err(e) => Outcome::Failed(ChildError { kind: ChildErrorKind::ResultEncode, message: e.to_string() }),
        },
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".to_owned());
            let current = crate::current_process();
            Outcome::Panicked(PanicInfo {
                message,
                location: PANIC_LOCATION.with(|slot| slot.borrow_mut().take()),
                process_name: current.name().to_owned(),
                pid: current.pid(),
            })
        }
    }
}
