//! Process-local state: every piece of process-wide state of the crate lives in a [`ProcessLocal`], whose
//! pointer is in one block ([`STATE`]) that a forked child rewrites to forget its parent's state — without
//! touching the parent's copy, whose locks may be held by threads that do not exist in the child.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::sys;

/// Where every [`ProcessLocal`] keeps its pointer, and the fork server's request socket number: all that a
/// forked child writes to forget its parent's state, in one block that never straddles a page, so that the
/// child pays one copy-on-write fault for it, not one per variable.
#[repr(C, align(128))]
pub(crate) struct ProcessState {
    ptrs: [AtomicPtr<()>; 11],
    /// A re-executed child's [`Who`](crate::wire::bootstrap::Who), still encoded (see [`set_who`]); null elsewhere.
    who: AtomicPtr<u8>,
    who_len: AtomicUsize,
    /// The fork server's request socket (see `launch::forkserver`), -1 when there is none.
    pub(crate) server_fd: AtomicI32,
    /// The process-wide start method (see `settings`): a child inherits it on its way to the target.
    pub(crate) method: AtomicU8,
}

const _: () = assert!(std::mem::size_of::<ProcessState>() <= 128);

pub(crate) static STATE: ProcessState = ProcessState {
    ptrs: [const { AtomicPtr::new(std::ptr::null_mut()) }; 11],
    who: AtomicPtr::new(std::ptr::null_mut()),
    who_len: AtomicUsize::new(0),
    server_fd: AtomicI32::new(-1),
    method: AtomicU8::new(0),
};

/// Which entry of [`STATE`] each process-local value uses.
pub(crate) mod slot {
    pub(crate) const CHILDREN: usize = 0;
    pub(crate) const START_LOCK: usize = 1;
    pub(crate) const LAUNCHER: usize = 2;
    pub(crate) const SERVER: usize = 3;
    pub(crate) const INHERITED_VALUES: usize = 4;
    pub(crate) const INHERITED_WRITING: usize = 5;
    pub(crate) const ME: usize = 6;
    pub(crate) const ARENA: usize = 7;
    pub(crate) const READY: usize = 8;
    pub(crate) const SETUP_HOOKS: usize = 9;
    pub(crate) const EXIT_HOOKS: usize = 10;
}

/// Records who this re-executed child is, still encoded: [`ProcessLocal`]s whose value comes from it decode
/// it when first used. Set once, before the target runs. A forked child of this process keeps it, which is
/// right: what it inherits is what this process inherited.
pub(crate) fn set_who(bytes: &'static [u8]) {
    STATE.who_len.store(bytes.len(), Ordering::Relaxed);
    STATE.who.store(bytes.as_ptr().cast_mut(), Ordering::Release);
}

/// What [`set_who`] recorded.
pub(crate) fn who() -> Option<&'static [u8]> {
    let ptr = STATE.who.load(Ordering::Acquire);
    let len = STATE.who_len.load(Ordering::Relaxed);
    // SAFETY: a non-null pointer and its length were stored together by `set_who`, from a `&'static [u8]`
    // (the length first, the pointer with release ordering after it), and nothing ever writes through it.
    (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast_const(), len) })
}

/// A lazily created value that a forked child can swap for a fresh one. Its pointer lives in [`STATE`], at
/// the entry `slot` names (one per value).
pub(crate) struct ProcessLocal<T> {
    slot: usize,
    init: fn() -> T,
    _value: PhantomData<fn() -> T>,
}

impl<T> ProcessLocal<T> {
    pub(crate) const fn new(slot: usize, init: fn() -> T) -> Self {
        ProcessLocal { slot, init, _value: PhantomData }
    }

    fn ptr(&self) -> &AtomicPtr<T> {
        let raw: &AtomicPtr<()> = &STATE.ptrs[self.slot];
        // SAFETY: AtomicPtr<()> and AtomicPtr<T> have the same layout; each entry is used by one
        // `ProcessLocal` only (the `slot` constants are distinct), so it only ever holds pointers to `T`.
        unsafe { &*std::ptr::from_ref(raw).cast::<AtomicPtr<T>>() }
    }

    /// The current value, created on first use.
    pub(crate) fn get(&self) -> &T {
        let mut ptr = self.ptr().load(Ordering::Acquire);
        if ptr.is_null() {
            let fresh = Box::into_raw(Box::new((self.init)()));
            ptr = match self.ptr().compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => fresh,
                Err(existing) => {
                    // SAFETY: `fresh` came from Box::into_raw above and was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    existing
                }
            };
        }
        // SAFETY: the pointer came from Box::into_raw and is never freed (replaced values are leaked), so it
        // is valid for the rest of the program.
        unsafe { &*ptr }
    }

    /// The value, if it was ever created (in this process image).
    pub(crate) fn get_if_created(&self) -> Option<&T> {
        let ptr = self.ptr().load(Ordering::Acquire);
        // SAFETY: as in `get`: a non-null pointer came from Box::into_raw and is never freed.
        (!ptr.is_null()).then(|| unsafe { &*ptr })
    }

    /// Replaces the value (the old one is leaked: another thread may still hold a reference to it).
    pub(crate) fn set(&self, value: Box<T>) {
        self.ptr().store(Box::into_raw(value), Ordering::Release);
    }

    /// In a forked child: forget the inherited value (leaking it; its locks may be held by threads that do
    /// not exist here) and start afresh on next use.
    pub(crate) fn reset(&self) {
        // Only write when needed: in a forked child every page written is a copy-on-write fault.
        if !self.ptr().load(Ordering::Acquire).is_null() {
            self.ptr().store(std::ptr::null_mut(), Ordering::Release);
        }
    }
}

/// Locks a mutex, ignoring poisoning (every guarded value here stays consistent across a panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The values a forked child forgets (their locks may be held by threads it does not have): the children
/// table, the start lock, the launcher thread, the fork server handle, the inherited settings' writers' lock,
/// the exit hooks (they are the parent's). The rest it keeps (who it is is set anew; the outcome slots, the
/// settings, the setup hooks are shared).
const RESET_AFTER_FORK: [usize; 6] =
    [slot::CHILDREN, slot::START_LOCK, slot::LAUNCHER, slot::SERVER, slot::INHERITED_WRITING, slot::EXIT_HOOKS];

/// In a forked child: forget the parent's state that must not be shared (see [`RESET_AFTER_FORK`]), and
/// close the inherited fork-server request socket, so that the server still sees its program exit.
#[inline(always)] // the forked child's path: see `runtime`
pub(crate) fn reset_after_fork() {
    for slot in RESET_AFTER_FORK {
        // Only write when needed: in a forked child every page written is a copy-on-write fault.
        if !STATE.ptrs[slot].load(Ordering::Acquire).is_null() {
            STATE.ptrs[slot].store(std::ptr::null_mut(), Ordering::Release);
        }
    }
    // Read first, for the same reason.
    let fd = STATE.server_fd.load(Ordering::SeqCst);
    if fd >= 0 {
        STATE.server_fd.store(-1, Ordering::SeqCst);
        sys::close_raw(fd);
    }
}

/// What a process runs as it exits (normally, or as a child after its target): the process tree's
/// `shutdown_children`, which joins and terminates children. Set by [`init`](crate::init), which sits above
/// the tree, for the runtime below it to call (a forked child inherits it).
static EXIT_HANDLER: OnceLock<fn()> = OnceLock::new();

/// Sets the exit handler (once per program; later calls are ignored).
pub(crate) fn set_exit_handler(handler: fn()) {
    let _ = EXIT_HANDLER.set(handler);
}

/// Runs the exit handler, if one was set.
#[inline(always)] // the forked child's path: see `runtime`
pub(crate) fn run_exit_handler() {
    if let Some(handler) = EXIT_HANDLER.get() {
        handler();
    }
}

/// The `atexit` hook registered by the runtime: the exit handler, never unwinding into C.
pub(crate) extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(run_exit_handler);
}
