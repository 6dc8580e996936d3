//! The shared memory behind each object: a 64-byte header naming its kind and counting references, then
//! the object's state.
//!
//! Every handle, in every process, holds one reference: creating or opening one counts +1, a handle
//! serialized for another process counts +1 for the receiver (who adopts it), and dropping a handle counts
//! −1 in the process that counted it. The copies a forked child has in memory are counted again for the child
//! before its target runs, and what a child still holds is released at its end (mp-shm's `refs`). The last
//! reference removes the segment's name. A process killed while holding references leaves them; the
//! resource tracker removes the segment when the process tree ends.

use std::sync::atomic::{AtomicU32, Ordering};

use mp_shm::SharedMemory;

use crate::SyncError;

const MAGIC: [u8; 8] = *b"mp-sync\x01";
/// Where the reference count sits in the header.
const REFS: usize = 16;
/// Where an object's state starts.
pub(crate) const BODY: usize = 64;

/// The kinds of objects, as recorded in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Lock = 1,
    RLock = 2,
    Semaphore = 3,
    Event = 4,
    Condition = 5,
    Barrier = 6,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Lock => "Lock",
            Kind::RLock => "RLock",
            Kind::Semaphore => "Semaphore",
            Kind::Event => "Event",
            Kind::Condition => "Condition",
            Kind::Barrier => "Barrier",
        }
    }
}

/// A segment holding one synchronization object.
#[derive(Debug)]
pub(crate) struct Segment {
    shm: SharedMemory,
    /// The process whose reference this handle holds.
    counted_by: u32,
}

impl Segment {
    /// A fresh zeroed segment of `body` bytes of state.
    pub(crate) fn create(kind: Kind, body: usize) -> Result<Self, SyncError> {
        let shm = SharedMemory::create_for_tree(BODY + body)?;
        let mut header = [0u8; 20];
        header[..8].copy_from_slice(&MAGIC);
        header[8..16].copy_from_slice(&(kind as u64).to_le_bytes());
        header[REFS..REFS + 4].copy_from_slice(&1u32.to_le_bytes());
        shm.write_at(0, &header)?;
        let mut segment = Segment { shm, counted_by: 0 };
        segment.counted_by = mp_shm::refs::hold(segment.name(), segment.refs());
        Ok(segment)
    }

    /// Attaches to `name`, which must hold a `kind`, counting a reference.
    pub(crate) fn open(name: &str, kind: Kind) -> Result<Self, SyncError> {
        let segment = Self::adopt(name, kind)?;
        segment.refs().fetch_add(1, Ordering::SeqCst);
        Ok(segment)
    }

    /// Counts a reference for a handle about to travel to another process (which adopts it).
    pub(crate) fn in_transit(&self) {
        self.refs().fetch_add(1, Ordering::SeqCst);
    }

    fn refs(&self) -> &AtomicU32 {
        self.shm.atomic_u32(REFS).expect("the header is in bounds and aligned")
    }

    /// Attaches to `name`, which must hold a `kind`, taking over a reference counted in transit.
    pub(crate) fn adopt(name: &str, kind: Kind) -> Result<Self, SyncError> {
        let shm = SharedMemory::open(name)?;
        let mut header = [0u8; 16];
        if shm.size() < BODY
            || shm.read_at(0, &mut header).is_err()
            || header[..8] != MAGIC
            || header[8..] != (kind as u64).to_le_bytes()
        {
            return Err(SyncError::WrongKind { name: name.to_owned(), expected: kind.name() });
        }
        let mut segment = Segment { shm, counted_by: 0 };
        segment.counted_by = mp_shm::refs::hold(segment.name(), segment.refs());
        Ok(segment)
    }

    pub(crate) fn name(&self) -> &str {
        self.shm.name()
    }

    /// The address of byte `offset` of the state.
    pub(crate) fn at(&self, offset: usize) -> *mut u8 {
        debug_assert!(BODY + offset < self.shm.size());
        self.shm.as_ptr().wrapping_add(BODY + offset)
    }

    /// The 32-bit word at `offset` of the state (4-aligned), as an atomic.
    pub(crate) fn word(&self, offset: usize) -> &AtomicU32 {
        self.shm.atomic_u32(BODY + offset).expect("state words are in bounds and aligned")
    }
}

/// Releases this process's reference; the last one removes the name.
impl Drop for Segment {
    fn drop(&mut self) {
        if mp_shm::refs::counts_here(self.counted_by) {
            mp_shm::refs::release(self.shm.name(), self.refs());
            if self.refs().fetch_sub(1, Ordering::SeqCst) == 1 {
                let _ = self.shm.unlink();
            }
        }
    }
}
