//! Process-wide state: the children this process started, the start lock, the launcher thread, and the
//! exit handler that joins children when the program ends.
//!
//! Every piece of state lives in a [`ProcessLocal`], which a forked child replaces wholesale (without
//! touching the parent's copy, whose locks may be held by threads that do not exist in the child).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use crate::popen::Child;
use crate::{forkserver, sys};

/// Where every [`ProcessLocal`] keeps its pointer, and the fork server's request socket number: all that a
/// forked child writes to forget its parent's state, in one block that never straddles a page, so that the
/// child pays one copy-on-write fault for it, not one per variable.
#[repr(C, align(128))]
pub(crate) struct ProcessState {
    ptrs: [AtomicPtr<()>; 10],
    /// A re-executed child's [`Who`](crate::popen::Who), still encoded (see [`set_who`]); null elsewhere.
    who: AtomicPtr<u8>,
    who_len: AtomicUsize,
    /// The fork server's request socket (see `forkserver`), -1 when there is none.
    pub(crate) server_fd: AtomicI32,
    /// The process-wide start method (see `context`): a child inherits it on its way to the target.
    pub(crate) method: AtomicU8,
}

const _: () = assert!(std::mem::size_of::<ProcessState>() <= 128);

pub(crate) static STATE: ProcessState = ProcessState {
    ptrs: [const { AtomicPtr::new(std::ptr::null_mut()) }; 10],
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

/// Children started by this process and not yet reaped.
static CHILDREN: ProcessLocal<Mutex<Vec<Arc<Child>>>> = ProcessLocal::new(slot::CHILDREN, || Mutex::new(Vec::new()));

/// Held while a child is created, so that no sibling created at the same moment inherits its descriptors.
static START_LOCK: ProcessLocal<Mutex<()>> = ProcessLocal::new(slot::START_LOCK, || Mutex::new(()));

/// The launcher thread's queue (see [`on_launcher`]).
type Task = Box<dyn FnOnce() + Send>;
static LAUNCHER: ProcessLocal<Mutex<Option<mpsc::Sender<Task>>>> =
    ProcessLocal::new(slot::LAUNCHER, || Mutex::new(None));

pub(crate) fn start_lock() -> MutexGuard<'static, ()> {
    lock(START_LOCK.get())
}

pub(crate) fn add_child(child: Arc<Child>) {
    lock(CHILDREN.get()).push(child);
}

pub(crate) fn remove_child(child: &Arc<Child>) {
    lock(CHILDREN.get()).retain(|c| !Arc::ptr_eq(c, child));
}

/// Reaps children that have ended and returns the ones still running (CPython's `active_children`).
pub(crate) fn live_children() -> Vec<Arc<Child>> {
    let snapshot = lock(CHILDREN.get()).clone();
    let ended: Vec<_> = snapshot.iter().filter(|c| c.wait(Some(Duration::ZERO)).unwrap_or(true)).cloned().collect();
    let mut children = lock(CHILDREN.get());
    children.retain(|c| !ended.iter().any(|e| Arc::ptr_eq(c, e)));
    children.clone()
}

/// Runs `f` on a thread that lives as long as the process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that created a child ends, not the process; a child started from
/// a short-lived thread would be killed when that thread returns. The main thread lives as long as the
/// process, so it starts children itself; any other thread hands the start to this launcher thread.
pub(crate) fn on_launcher<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    if sys::is_main_thread() {
        return Ok(f());
    }
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let task: Task = Box::new(move || {
        let _ = reply_tx.send(f());
    });
    let mut sender = lock(LAUNCHER.get());
    let queue = match sender.as_ref() {
        Some(queue) => queue.clone(),
        None => {
            let (tx, rx) = mpsc::channel::<Task>();
            std::thread::Builder::new().name("mp-process-launcher".into()).spawn(move || {
                for task in rx {
                    // A panicking task must not take the launcher down with it.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                }
            })?;
            *sender = Some(tx.clone());
            tx
        }
    };
    drop(sender);
    queue.send(task).map_err(|_| std::io::Error::other("the launcher thread is gone"))?;
    reply_rx.recv().map_err(|_| std::io::Error::other("the launcher thread failed to start the process"))
}

/// CPython's `_exit_function` for children: terminate daemonic children, then join every child; then let the
/// fork server go. Runs at normal exit of the main program (via `atexit`) and at the end of every child.
pub(crate) fn shutdown_children() {
    if CHILDREN.get_if_created().is_none() {
        return; // never started a child: nothing to join, no fork server
    }
    let children = live_children();
    for child in children.iter().filter(|c| c.daemon) {
        let _ = child.signal(libc::SIGTERM);
    }
    for child in &children {
        let _ = child.wait(None);
    }
    lock(CHILDREN.get()).clear();
    forkserver::shutdown();
}

/// The `atexit` hook registered by [`init`](crate::init).
pub(crate) extern "C" fn exit_handler() {
    let _ = std::panic::catch_unwind(shutdown_children);
}

/// In a forked child: drop every inherited piece of state.
pub(crate) fn reset_after_fork() {
    CHILDREN.reset();
    START_LOCK.reset();
    LAUNCHER.reset();
    forkserver::reset_after_fork();
    crate::inherit::reset_after_fork();
}
