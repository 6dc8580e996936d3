//! [`SharedMemoryManager`]: a scope that unlinks every segment and list made through it when it ends.

use std::sync::Mutex;

use crate::{Item, ShareableList, SharedMemory, ShmError};

/// CPython's `multiprocessing.managers.SharedMemoryManager`, as a scope: the [`SharedMemory`] segments and
/// [`ShareableList`]s made through it are unlinked when it is dropped (or [`shutdown`](Self::shutdown)),
/// however the scope ends — a panic included. The handles themselves stay usable (a mapping outlives its
/// name); only attaching by name is no longer possible. CPython runs a server process for this; the tracker
/// of mp-shm already cleans up after a crash, so a scope is all that is needed.
///
/// ```
/// # mp_process::init();
/// use mp_shm::{SharedMemory, SharedMemoryManager, ShmError};
///
/// let name = {
///     let smm = SharedMemoryManager::new();
///     let shm = smm.shared_memory(128)?;
///     let list = smm.shareable_list([1i64, 2, 3])?;
///     assert_eq!(list.get(2)?, mp_shm::Item::Int(3));
///     shm.name().to_owned()
/// }; // both unlinked here
/// assert!(matches!(SharedMemory::open(&name), Err(ShmError::NotFound(_))));
/// # Ok::<(), ShmError>(())
/// ```
#[derive(Debug, Default)]
pub struct SharedMemoryManager {
    names: Mutex<Vec<String>>,
}

impl SharedMemoryManager {
    /// An empty scope.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new segment of `size` bytes (see [`SharedMemory::create`]), unlinked when the scope ends.
    pub fn shared_memory(&self, size: usize) -> Result<SharedMemory, ShmError> {
        let shm = SharedMemory::create(size)?;
        self.remember(shm.name());
        Ok(shm)
    }

    /// A new list holding `items` (see [`ShareableList::new`]), unlinked when the scope ends.
    pub fn shareable_list<I: Into<Item>>(&self, items: impl IntoIterator<Item = I>) -> Result<ShareableList, ShmError> {
        let list = ShareableList::new(items)?;
        self.remember(list.name());
        Ok(list)
    }

    /// The names of what the scope made and has not unlinked yet.
    pub fn names(&self) -> Vec<String> {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn remember(&self, name: &str) {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).push(name.to_owned());
    }

    /// Unlinks everything the scope made (CPython's `shutdown()`); dropping the scope does the same.
    pub fn shutdown(self) {}

    fn unlink_all(&self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        for name in names {
            // Gone already (unlinked by hand, or by another process) is fine.
            if let Ok(shm) = SharedMemory::open(&name) {
                let _ = shm.unlink();
            }
        }
    }
}

impl Drop for SharedMemoryManager {
    fn drop(&mut self) {
        self.unlink_all();
    }
}
