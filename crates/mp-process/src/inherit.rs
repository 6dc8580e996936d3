//! Inherited settings: a small key → value table that every child (and its children) inherits, under every
//! start method. Higher crates keep their process-tree-wide settings here (the shared-memory resource
//! tracker's address, logging settings), much as CPython passes its "preparation data" to a spawned child.

use std::collections::BTreeMap;
use std::sync::Mutex;

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

/// In a re-executed child: forget any table inherited from the fork server, so that the child's comes from
/// its bootstrap.
pub(crate) fn forget() {
    VALUES.reset();
}

/// In a forked child: the table stays, its writers' lock is renewed.
pub(crate) fn reset_after_fork() {
    WRITING.reset();
}
