//! Inherited settings: a small key → value table that every child (and its children) inherits, under every
//! start method, and the setup hooks every child runs before its target. Higher crates keep their
//! process-tree-wide settings here (the shared-memory resource tracker's address, logging settings), much as
//! CPython passes its "preparation data" to a spawned child.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::offset::FnOffset;
use crate::registry::{ProcessLocal, lock, slot};

/// The current table: an immutable snapshot, replaced whole on every change (a forked child keeps it as is). A
/// re-executed child starts from its parent's table, taken from its bootstrap on first use.
static VALUES: ProcessLocal<BTreeMap<String, String>> =
    ProcessLocal::new(slot::INHERITED_VALUES, || crate::popen::who().map(|who| who.inherited).unwrap_or_default());
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
    ProcessLocal::new(slot::SETUP_HOOKS, || crate::popen::who().map(|who| who.setup).unwrap_or_default());

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

/// In a re-executed child: forget any table inherited from the fork server, so that the child's comes from
/// its bootstrap.
pub(crate) fn forget() {
    VALUES.reset();
    SETUP.reset();
}

/// In a forked child: the table stays, its writers' lock is renewed.
pub(crate) fn reset_after_fork() {
    WRITING.reset();
}
