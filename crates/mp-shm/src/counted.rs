//! Reference counts across `fork`: which counted references to shared objects this process holds, so that a
//! forked child counts the copies it inherited in memory, and a child releases at its end the ones it still
//! holds (a child ends with `_exit`, running no destructors).
//!
//! The objects (RawValue / RawArray made for the tree, mp-sync's locks and the rest) keep one counter word in
//! their segment: +1 for each handle, in each process; the last release unlinks the segment. A handle
//! remembers which process counted it; without this module, the copies a forked child has in memory counted
//! for nobody, so when the parent dropped its own handles — which it may do at once after starting the child
//! — the segment went, under the child's feet.
//!
//! Here each process keeps a table: segment name → how many counted handles it holds, and where the counter
//! is. Just before a `fork` start (mp-process's before-fork hook, in the parent) the table is counted again,
//! in the segments, for the child about to inherit it; in the child (the setup hook, before its target) the
//! handles counted by its parent count as its own from then on; at a child's end (the exit hook) the
//! references it still holds are released. A re-executed child starts with an empty table (its handles
//! arrive serialized, counted in transit). A child killed on the way leaves its counts to the resource tracker,
//! which removes the segments when the tree ends, as for any killed process.
//!
//! This is a building block for crates on mp-shm (mp-sync uses it); its functions are public but hidden.

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Mutex, Once};

/// One segment's entry: the counter's address as each counted handle of this process sees it (one per
/// handle: each has a mapping of its own, unmapped when it is dropped, so only a live handle's is used).
#[derive(Debug, Clone, Default)]
struct Entry {
    words: Vec<usize>,
}

impl Entry {
    fn held(&self) -> u32 {
        self.words.len() as u32
    }

    /// The counter, through a live handle's mapping.
    fn word(&self) -> Option<&AtomicU32> {
        // SAFETY: each address is that of a counter word in the mapping of a handle that is alive (it is
        // removed when its handle is dropped; a forked child's inherited handles are never dropped before
        // they are counted or released here).
        self.words.first().map(|w| unsafe { &*(*w as *const AtomicU32) })
    }
}

type Table = Mutex<HashMap<String, Entry>>;

/// This process's table, replaced whole in each child (a forked child must not take a lock another thread of
/// its parent may have held at the fork).
static TABLE: AtomicPtr<Table> = AtomicPtr::new(std::ptr::null_mut());

/// The processes whose counted handles count as this process's own: itself, and in a forked child the
/// processes its parent counted as its own (a short chain; a deeper one is not followed, and its handles then
/// release nothing, as before).
static COUNTED_AS: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];

static HOOKS: Once = Once::new();

fn table() -> &'static Table {
    let ptr = TABLE.load(Ordering::Acquire);
    if !ptr.is_null() {
        // SAFETY: tables are leaked boxes, never freed.
        return unsafe { &*ptr };
    }
    let fresh = Box::into_raw(Box::new(Mutex::new(HashMap::new())));
    match TABLE.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: as above.
        Ok(_) => unsafe { &*fresh },
        Err(existing) => {
            // SAFETY: `fresh` was never shared.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: as above.
            unsafe { &*existing }
        }
    }
}

fn lock(table: &Table) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records that this process now holds one more counted reference to segment `name`, whose counter is `word`
/// (the caller has counted it there). Returns the pid the handle is counted by.
#[doc(hidden)]
pub fn hold(name: &str, word: &AtomicU32) -> u32 {
    HOOKS.call_once(|| {
        mp_process::register_before_fork(count_for_the_child);
        mp_process::register_child_setup(adopt_inherited);
    });
    let me = std::process::id();
    let _ = COUNTED_AS[0].compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed);
    lock(table()).entry(name.to_owned()).or_default().words.push(std::ptr::from_ref(word) as usize);
    me
}

/// Whether a handle counted by process `counted_by` holds a reference for this process.
#[doc(hidden)]
pub fn counts_here(counted_by: u32) -> bool {
    counted_by == std::process::id() || COUNTED_AS.iter().any(|p| p.load(Ordering::Relaxed) == counted_by)
}

/// Records that this process holds one counted reference fewer to `name`: the handle whose counter is
/// `word` (as passed to [`hold`]) is being dropped; the caller then releases it in the segment.
#[doc(hidden)]
pub fn release(name: &str, word: &AtomicU32) {
    let mut table = lock(table());
    if let Some(entry) = table.get_mut(name) {
        let word = std::ptr::from_ref(word) as usize;
        match entry.words.iter().position(|w| *w == word) {
            Some(at) => {
                entry.words.swap_remove(at);
            }
            None => {
                entry.words.pop();
            }
        }
        if entry.words.is_empty() {
            table.remove(name);
        }
    }
}

/// In the parent, just before a `fork` start: count what this process holds once more, for the child about
/// to inherit it (after the fork the parent may drop its handles at once, before the child could count).
fn count_for_the_child() {
    for entry in lock(table()).values() {
        if let Some(word) = entry.word() {
            word.fetch_add(entry.held(), Ordering::SeqCst);
        }
    }
}

/// In every child, before its target: the handles it inherited (counted for it by the parent, just before
/// the fork) are its own.
fn adopt_inherited() {
    let parent = TABLE.load(Ordering::Acquire);
    let inherited: HashMap<String, Entry> = if parent.is_null() {
        HashMap::new()
    } else {
        // SAFETY: as in `table`. A lock held by another thread of the parent at the fork cannot be taken here:
        // then the inherited handles stay counted for nobody (as they were before this module).
        match unsafe { &*parent }.try_lock() {
            Ok(table) => table.clone(),
            Err(_) => HashMap::new(),
        }
    };
    // Which pids count as ours: our own, then our parent's list (shifted), so that handles counted there count
    // here too. A re-executed child starts with its own pid alone (its table is empty anyway).
    let me = std::process::id();
    let mut theirs: Vec<u32> = COUNTED_AS.iter().map(|p| p.load(Ordering::Relaxed)).filter(|p| *p != 0).collect();
    if parent.is_null() {
        theirs.clear();
    }
    for (slot, pid) in COUNTED_AS.iter().zip(std::iter::once(me).chain(theirs)) {
        slot.store(pid, Ordering::Relaxed);
    }
    let fresh = Box::into_raw(Box::new(Mutex::new(inherited)));
    // The parent's table is leaked: its lock may be held by a thread that does not exist here.
    TABLE.store(fresh, Ordering::Release);
    mp_process::register_at_exit(release_all);
}

/// At a child's end: release the references it still holds (it runs no destructors), unlinking the
/// segments whose last reference they were.
fn release_all() {
    let entries = std::mem::take(&mut *lock(table()));
    for (name, entry) in entries {
        if let Some(word) = entry.word()
            && word.fetch_sub(entry.held(), Ordering::SeqCst) == entry.held()
        {
            let _ = crate::sys::unlink(&name);
            crate::tracker::unregister(&name);
        }
    }
}
