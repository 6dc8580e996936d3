//! Jobs: a target with its arguments, packed in the parent and run in the child; and how a panic in it is
//! caught and reported.
//!
//! A target is a zero-sized function item or non-capturing closure, so its *type* says everything about it.
//! The parent sends the monomorphised trampoline [`entry::<F, A, R>`] as an [`FnOffset`](crate::call::FnOffset);
//! the child, running the same build (checked by fingerprint first), resolves it (see [`crate::offset`]).
//! This is how `procspawn` and the test harnesses of `ipc-channel` find their way, without a registry of
//! target names.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ChildError, ChildErrorKind, PanicInfo};
use crate::target::Target;
use crate::wire::bootstrap::Entry;
use crate::wire::outcome::Outcome;
use crate::{StartError, handle, sys};

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
    let target: F = crate::call::conjure();
    run_target(move || target.call(args))
}

/// Runs `f`, catching a panic, and encodes what happened.
pub(crate) fn run_target<R: Serialize>(f: impl FnOnce() -> R) -> Outcome {
    match crate::job::catch_panic(f) {
        Ok(value) => match crate::codec::to_vec(&value) {
            Ok(bytes) => Outcome::Returned(bytes),
            Err(message) => Outcome::Failed(ChildError { kind: ChildErrorKind::ResultEncode, message }),
        },
        Err(info) => Outcome::Panicked(info),
    }
}

thread_local! {
    /// Where the last panic on this thread happened (set by the hook, read after `catch_unwind`).
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Registers this thread's panic-location slot now, so that a forked child inherits the registration.
pub(crate) fn touch_tables() {
    PANIC_LOCATION.with(|_| ());
}

/// Installs (once per process image: forked children inherit it) the panic hook that records where a panic
/// happened for [`catch_panic`] and, in a child, prints `Process <name> (pid N):` before the usual message
/// (CPython prints `Process <name>:` before a child's traceback), then calls the previous hook.
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
        let me = crate::identity::me();
        if me.parent.is_some() {
            eprintln!("Process {} (pid {}):", me.name, sys::pid());
        }
        previous(info);
    }));
}

/// Runs `f`; a panic becomes a [`PanicInfo`] with the message, the location (when mp's panic hook is
/// installed, as it is in every process that called [`init`](crate::init)), and this process's name and pid.
pub fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, PanicInfo> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".to_owned());
        let me = crate::identity::me();
        PanicInfo {
            message,
            location: PANIC_LOCATION.with(|slot| slot.borrow_mut().take()),
            process_name: me.name.clone(),
            pid: sys::pid(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_as_data() {
        let info = catch_panic(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(info.message, "boom 7");
        assert_eq!(info.pid, std::process::id());
        assert_eq!(catch_panic(|| 5).unwrap(), 5);
    }
}
