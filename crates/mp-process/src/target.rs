//! Targets: how a function and its arguments are packed in the parent and run in the child.
//!
//! A target is a zero-sized function item or non-capturing closure, so its *type* says everything about it.
//! The parent sends the monomorphised trampoline [`entry::<F, A, R>`] as an [`FnOffset`](crate::offset::FnOffset);
//! the child, running the same build (checked by fingerprint first), resolves it (see [`crate::offset`]).
//! This is how `procspawn` and the test harnesses of `ipc-channel` find their way, without a registry of
//! target names.

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ChildError, ChildErrorKind, PanicInfo};
use crate::{StartError, handle};

/// The trampoline a re-executed child calls: decode the arguments, run the target, encode the outcome.
pub(crate) type Entry = fn(payload: &[u8], fds: Vec<OwnedFd>) -> Outcome;

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
    let args: A = match handle::from_bytes_with_handles(payload, fds) {
        Ok(args) => args,
        Err(e) => {
            return Outcome::Failed(ChildError { kind: ChildErrorKind::ArgumentDecode, message: e.to_string() });
        }
    };
    let target: F = crate::offset::conjure();
    run_target(move || target.call(args))
}

/// Runs `f`, catching a panic, and encodes what happened.
pub(crate) fn run_target<R: Serialize>(f: impl FnOnce() -> R) -> Outcome {
    match crate::offset::catch_panic(f) {
        Ok(value) => match postcard::to_stdvec(&value) {
            Ok(bytes) => Outcome::Returned(bytes),
            Err(e) => Outcome::Failed(ChildError { kind: ChildErrorKind::ResultEncode, message: e.to_string() }),
        },
        Err(info) => Outcome::Panicked(info),
    }
}
