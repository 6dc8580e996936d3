//! Process-wide settings that children inherit: the default start method and the program to re-execute,
//! a small key → value table under every start method, and the setup hooks every child runs before its
//! target. Higher crates keep their process-tree-wide settings here (the shared-memory resource tracker's
//! address, logging settings), much as CPython passes its "preparation data" to a spawned child.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::call::FnOffset;
use crate::state::{ProcessLocal, lock, slot};
use crate::{ContextError, StartMethod};

/// The current table: an immutable snapshot, replaced whole on every change (a forked child keeps it as is). A
/// re-executed child starts from its parent's table, taken from its bootstrap on first use.
static VALUES: ProcessLocal<BTreeMap<String, String>> = ProcessLocal::new(slot::INHERITED_VALUES, || {
    crate::wire::bootstrap::who().map(|who| who.inherited).unwrap_or_default()
});
/// Serializes writers.
static WRITING: ProcessLocal<Mutex<()>> = ProcessLocal::new(slot::INHERITED_WRITING, || Mutex::new(()));

/// Sets a value that children started from now on inherit (`None` removes it). Keys are namespaced by
/// convention: `"mp-shm.tracker"`.
///
/// ```
/// mp_process::set_inherited("example.colour", Some("blue"));
/// assert_eq!(mp_process::inherited("example.colour").as_deref(), Some("blue"));
/// ```
pub fn set_inherited(key: &str, value: Option<&str>) {
    let _writing = lock(WRITING.get());
    let mut values = VALUES.get().clone();
    match value {
        Some(value) => values.insert(key.to_owned(), value.to_owned()),
        None => values.remove(key),
    };
    VALUES.set(Box::new(values));
}

/// A value set with [`set_inherited`] in this process or in one of its ancestors before it started us.
pub fn inherited(key: &str) -> Option<String> {
    VALUES.get().get(key).cloned()
}

/// The whole table, for a child's start-up message.
pub(crate) fn snapshot() -> BTreeMap<String, String> {
    VALUES.get().clone()
}

/// A setup hook, as it travels.
type Hook = FnOffset<fn()>;

/// The setup hooks: an immutable list, replaced whole on every change (a forked child reads it without a lock).
/// A re-executed child starts from its parent's list, taken from its bootstrap on first use.
static SETUP: ProcessLocal<Vec<Hook>> =
    ProcessLocal::new(slot::SETUP_HOOKS, || crate::wire::bootstrap::who().map(|who| who.setup).unwrap_or_default());

/// Registers `hook` to run in every child started from now on, and in their children in turn, under every
/// start method: after the child knows who it is ([`current_process`](crate::current_process) and
/// [`inherited`] answer) and before its target runs. A spawned or fork-server child never runs `main`, so
/// this is where a higher crate sets a child up (mp-log installs its forwarding logger here). The same
/// function registered twice runs once; hooks run in the order they were registered.
///
/// A hook that panics fails the start of that child: the target does not run, and `join` reports the
/// panic. The hook travels as an offset in this build (see [`offset`](crate::offset)), so it must be a plain
/// `fn()`.
///
/// ```
/// # mp_process::init();
/// fn mark() { mp_process::set_inherited("example.setup", Some("ran")); }
///
/// mp_process::register_child_setup(mark);
/// let mut p = mp_process::Process::new(|(): ()| mp_process::inherited("example.setup"), ());
/// p.start()?;
/// assert_eq!(p.join()?.as_deref(), Some("ran"));
/// assert_eq!(mp_process::inherited("example.setup"), None); // the hook ran in the child only
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn register_child_setup(hook: fn()) {
    let _writing = lock(WRITING.get());
    let hook = FnOffset::of(hook);
    if SETUP.get().contains(&hook) {
        return;
    }
    let mut hooks = SETUP.get().clone();
    hooks.push(hook);
    SETUP.set(Box::new(hooks));
}

/// The hooks registered in this process, and inherited by it: for a child's start-up message, and for a
/// forked child to run from memory. A `fork` start calls this before forking, so that the child finds the list
/// made (a re-executed process makes it from its bootstrap on first use) and allocates nothing.
pub(crate) fn setup_hooks() -> &'static [Hook] {
    SETUP.get()
}

/// Hooks a `fork` start runs in the parent just before it forks (see [`register_before_fork`]).
static BEFORE_FORK: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Registers `hook` to run in this process just before each `fork` start (and in its forked children's, which
/// inherit the list): the moment to count, for the child about to be made, what the child will inherit in
/// memory — after the fork, the parent may already have dropped it. (CPython's
/// `os.register_at_fork(before=…)`, for mp's own starts.) The same function registered twice runs once.
pub fn register_before_fork(hook: fn()) {
    let mut hooks = lock(&BEFORE_FORK);
    if !hooks.iter().any(|h| std::ptr::fn_addr_eq(*h, hook)) {
        hooks.push(hook);
    }
}

/// Runs the before-fork hooks (a `fork` start, in the parent).
pub(crate) fn run_before_fork() {
    let hooks = lock(&BEFORE_FORK).clone();
    for hook in hooks {
        hook();
    }
}

/// In a re-executed child: forget any table inherited from the fork server, so that the child's comes from
/// its bootstrap.
pub(crate) fn forget() {
    VALUES.reset();
    SETUP.reset();
}

/// 0 while unset, else `StartMethod::to_u8` (in the block a forked child writes anyway).
static METHOD: &AtomicU8 = &crate::state::STATE.method;

/// The executable that `Spawn` and the fork server re-execute; `None` means this very program.
static EXECUTABLE: Mutex<Option<CString>> = Mutex::new(None);

/// The platform's default: `ForkServer` on Linux (as Python 3.14), `Spawn` elsewhere.
fn platform_default() -> StartMethod {
    if cfg!(target_os = "linux") { StartMethod::ForkServer } else { StartMethod::Spawn }
}

/// Sets the process-wide default start method. Like CPython, it may be set once: a second call, or a call
/// after the default was already used by a start or by [`get_start_method`], fails with
/// [`ContextError::AlreadySet`] unless `force` is true.
pub fn set_start_method(method: StartMethod, force: bool) -> Result<(), ContextError> {
    if !method.is_supported() {
        return Err(ContextError::Unsupported(method));
    }
    if force {
        METHOD.store(method.to_u8(), Ordering::SeqCst);
        return Ok(());
    }
    METHOD
        .compare_exchange(0, method.to_u8(), Ordering::SeqCst, Ordering::SeqCst)
        .map(drop)
        .map_err(|_| ContextError::AlreadySet)
}

/// The process-wide default start method. Reading it fixes it (CPython's `get_start_method()`): a later
/// [`set_start_method`] then needs `force`.
pub fn get_start_method() -> StartMethod {
    // Read first: after a `fork`, every page written is a copy-on-write fault, and this runs on each start.
    if METHOD.load(Ordering::SeqCst) == 0 {
        let _ = METHOD.compare_exchange(0, platform_default().to_u8(), Ordering::SeqCst, Ordering::SeqCst);
    }
    StartMethod::from_u8(METHOD.load(Ordering::SeqCst)).unwrap_or_else(platform_default)
}

/// Every start method this platform offers, the default first (CPython's `get_all_start_methods()`).
pub fn all_start_methods() -> Vec<StartMethod> {
    let default = platform_default();
    let mut methods = vec![default];
    methods.extend(
        [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer]
            .into_iter()
            .filter(|m| *m != default && m.is_supported()),
    );
    methods
}

/// Sets the program that `Spawn` children and the fork server execute (CPython's `set_executable`). It must
/// be the same build as this program and call [`init`](crate::init) first in `main`; a different build is
/// detected by the child, which refuses to run (see [`ChildErrorKind::BuildMismatch`](crate::ChildErrorKind)).
pub fn set_executable(path: impl AsRef<Path>) {
    let bytes = OsString::from(path.as_ref().as_os_str()).into_vec();
    let path = CString::new(bytes).ok();
    *EXECUTABLE.lock().unwrap_or_else(|e| e.into_inner()) = path;
}

/// The program to re-execute.
pub(crate) fn executable() -> CString {
    EXECUTABLE.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(|| c"/proc/self/exe".to_owned())
}

/// In a child: adopt the parent's default start method.
pub(crate) fn inherit_start_method(method: StartMethod) {
    // A forked child usually has the value already; not writing spares it a copy-on-write fault.
    if METHOD.load(Ordering::SeqCst) != method.to_u8() {
        METHOD.store(method.to_u8(), Ordering::SeqCst);
    }
}
