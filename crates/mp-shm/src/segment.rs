//! [`SharedMemory`]: a named block of memory that several processes map.

use std::fmt;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

use memmap2::MmapRaw;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ShmError, sys, tracker};

/// The longest name accepted (Linux allows 255 bytes under `/dev/shm`; we keep a margin).
const MAX_NAME: usize = 250;

/// A named shared-memory segment (CPython's `multiprocessing.shared_memory.SharedMemory`).
///
/// Any process may attach by name; the memory stays until the segment is [unlinked](Self::unlink) and every
/// mapping is gone. Only the creating handle *owns* the segment: the resource tracker unlinks the segments
/// a process tree created (and did not unlink) once the whole tree has ended, even after a SIGKILL.
/// Attaching never unlinks anything.
///
/// Other processes may write at any moment, so there is no `&mut [u8]` view: copy in and out with
/// [`read_at`](Self::read_at) / [`write_at`](Self::write_at), use atomic views, or the raw pointer.
///
/// ```
/// # mp_process::init();
/// use mp_shm::SharedMemory;
///
/// let shm = SharedMemory::create(16)?;
/// shm.write_at(0, b"hello")?;
/// let other = SharedMemory::open(shm.name())?; // as another process would
/// let mut buf = [0u8; 5];
/// other.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// shm.unlink()?;
/// # Ok::<(), mp_shm::ShmError>(())
/// ```
pub struct SharedMemory {
    name: String,
    size: usize,
    map: MmapRaw,
    owner: bool,
}

// SAFETY: the mapping is plain shared memory; every access goes through raw pointers (volatile or atomic),
// never through references that assume exclusivity, so sharing the handle between threads adds no hazard
// beyond the cross-process one the type already documents.
unsafe impl Send for SharedMemory {}
// SAFETY: as above.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// Creates a segment of `size` bytes with a fresh random name (`mp_`, the tracker's identity and 16 hex
    /// digits), zero-filled. It is registered with the resource tracker *before* it exists, so that a creator
    /// killed at any moment leaves nothing behind.
    pub fn create(size: usize) -> Result<Self, ShmError> {
        Self::create_fresh(size, tracker::Registration::Reported)
    }

    fn create_fresh(size: usize, registration: tracker::Registration) -> Result<Self, ShmError> {
        if size == 0 {
            return Err(ShmError::ZeroSize);
        }
        loop {
            let name = tracker::fresh_name();
            tracker::register(&name, registration);
            match Self::create_unregistered(&name, size) {
                Ok(shm) => return Ok(shm),
                Err(e) => {
                    tracker::unregister(&name);
                    if !matches!(e, ShmError::AlreadyExists(_)) {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Creates a segment with a random name whose lifetime is the process tree's: the resource tracker
    /// unlinks it when the tree has ended, without reporting it as leaked. For objects built on shared
    /// memory that are never unlinked by hand (mp-sync's locks, for instance), as CPython's semaphores are
    /// cleaned up at exit.
    pub fn create_for_tree(size: usize) -> Result<Self, ShmError> {
        Self::create_fresh(size, tracker::Registration::Quiet)
    }

    /// Creates a segment named `name` of `size` bytes, zero-filled. Fails with [`ShmError::AlreadyExists`]
    /// if the name is taken, [`ShmError::InvalidName`], or [`ShmError::ZeroSize`]. The name is yours, so it is
    /// registered with the resource tracker only once the segment exists (registering first could have the
    /// tracker unlink someone else's segment of that name): a creator killed in that moment leaves it behind.
    pub fn create_named(name: &str, size: usize) -> Result<Self, ShmError> {
        Self::create_registered(name, size, tracker::Registration::Reported)
    }

    fn create_registered(name: &str, size: usize, registration: tracker::Registration) -> Result<Self, ShmError> {
        let shm = Self::create_unregistered(name, size)?;
        tracker::register(name, registration);
        Ok(shm)
    }

    fn create_unregistered(name: &str, size: usize) -> Result<Self, ShmError> {
        check_name(name)?;
        if size == 0 {
            return Err(ShmError::ZeroSize);
        }
        let fd = sys::create(name, size).map_err(|e| ShmError::from_os(name, e))?;
        let map = match sys::map(fd.as_fd(), size) {
            Ok(map) => map,
            Err(e) => {
                let _ = sys::unlink(name);
                return Err(ShmError::Io(e));
            }
        };
        Ok(SharedMemory { name: name.to_owned(), size, map, owner: true })
    }

    /// Attaches to the existing segment `name` ([`ShmError::NotFound`] if there is none).
    pub fn open(name: &str) -> Result<Self, ShmError> {
        check_name(name)?;
        let (fd, size) = sys::open(name).map_err(|e| ShmError::from_os(name, e))?;
        if size == 0 {
            return Err(ShmError::ZeroSize);
        }
        let map = sys::map(fd.as_fd(), size)?;
        Ok(SharedMemory { name: name.to_owned(), size, map, owner: false })
    }

    /// Another handle to the same segment (an attachment: it does not own the segment). Handy for passing a
    /// segment to a child while keeping one.
    pub fn try_clone(&self) -> Result<Self, ShmError> {
        Self::open(&self.name)
    }

    /// The name, without the leading `/` (as CPython reports it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether this handle created the segment.
    pub fn is_owner(&self) -> bool {
        self.owner
    }

    /// The start of the mapping. Other processes may write to it at any moment; a segment shrunk by another
    /// process (`ftruncate`) makes access beyond the new end raise SIGBUS, as in CPython.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    fn range(&self, offset: usize, len: usize) -> Result<*mut u8, ShmError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(self.as_ptr().wrapping_add(offset)),
            end => Err(ShmError::OutOfBounds { offset, end: end.unwrap_or(usize::MAX), size: self.size }),
        }
    }

    /// Copies `buf.len()` bytes out of the segment, starting at `offset`.
    ///
    /// Other processes may write the same bytes meanwhile: the copy is made of relaxed atomic loads (eight
    /// bytes at a time where aligned), so such a race gives a torn value — some old bytes, some new, as
    /// CPython's `buf[a:b]` would — and never undefined behaviour. Order reads and writes with a lock or the
    /// atomics ([`atomic_u32`](Self::atomic_u32)) when the bytes must be consistent.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), ShmError> {
        let src = self.range(offset, buf.len())?;
        // SAFETY: the range lies inside the mapping (checked), which lives as long as `self`.
        unsafe { atomic_copy_out(src, buf) };
        Ok(())
    }

    /// Copies `data` into the segment, starting at `offset`, with relaxed atomic stores (see
    /// [`read_at`](Self::read_at)).
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), ShmError> {
        let dst = self.range(offset, data.len())?;
        // SAFETY: as in `read_at`.
        unsafe { atomic_copy_in(dst, data) };
        Ok(())
    }

    /// The whole segment, copied out.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.size];
        self.read_at(0, &mut out).expect("whole segment is in range");
        out
    }

    /// An atomic 32-bit view of the bytes at `offset` (which must be 4-aligned).
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, ShmError> {
        let ptr = self.aligned(offset, 4)?;
        // SAFETY: in bounds and aligned (checked); atomics may alias memory other processes access
        // atomically; the reference lives no longer than the mapping (`&self`).
        Ok(unsafe { AtomicU32::from_ptr(ptr.cast()) })
    }

    /// An atomic 64-bit view of the bytes at `offset` (which must be 8-aligned).
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64, ShmError> {
        let ptr = self.aligned(offset, 8)?;
        // SAFETY: as in `atomic_u32`.
        Ok(unsafe { AtomicU64::from_ptr(ptr.cast()) })
    }

    fn aligned(&self, offset: usize, align: usize) -> Result<*mut u8, ShmError> {
        let ptr = self.range(offset, align)?;
        if !(ptr as usize).is_multiple_of(align) {
            return Err(ShmError::Misaligned { offset, align });
        }
        Ok(ptr)
    }

    /// Removes the name, so that no one else can attach; the memory lives on while mapped (CPython's
    /// `unlink`). A second unlink, from any process, is [`ShmError::NotFound`].
    pub fn unlink(&self) -> Result<(), ShmError> {
        sys::unlink(&self.name).map_err(|e| ShmError::from_os(&self.name, e))?;
        // The tree's tracker forgets it, whoever unlinks (a name it never had is ignored).
        tracker::unregister(&self.name);
        Ok(())
    }

    /// Unmaps this handle (CPython's `close`); dropping it does the same. The segment itself stays.
    pub fn close(self) {}
}

/// CPython-compatible name rules, plus what `/dev/shm` needs.
pub(crate) fn check_name(name: &str) -> Result<(), ShmError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME {
        "longer than 250 bytes"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name == "." || name == ".." {
        "is a directory name"
    } else {
        return Ok(());
    };
    Err(ShmError::InvalidName { name: name.to_owned(), reason })
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("owner", &self.owner)
            .finish()
    }
}

/// A segment travels by name: the receiving process attaches (it does not own the segment).
impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.name.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        SharedMemory::open(&name).map_err(serde::de::Error::custom)
    }
}

/// Copies `src` to shared memory at `dst` with relaxed atomic stores: eight bytes at a time once `dst` is
/// aligned, single bytes at the edges.
///
/// # Safety
///
/// `dst .. dst + src.len()` lies inside a live mapping.
unsafe fn atomic_copy_in(dst: *mut u8, src: &[u8]) {
    let head = dst.align_offset(8).min(src.len());
    let (edge, rest) = src.split_at(head);
    for (i, byte) in edge.iter().enumerate() {
        // SAFETY: inside the range (caller); a byte is always aligned for `AtomicU8`.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(*byte, Relaxed);
    }
    let words = rest.chunks_exact(8);
    let tail = words.remainder();
    for (i, word) in words.enumerate() {
        let value = u64::from_ne_bytes(word.try_into().expect("8 bytes"));
        // SAFETY: inside the range, and 8-aligned (`head` aligned `dst`).
        unsafe { AtomicU64::from_ptr(dst.add(head + 8 * i).cast()) }.store(value, Relaxed);
    }
    let tail_at = src.len() - tail.len();
    for (i, byte) in tail.iter().enumerate() {
        // SAFETY: inside the range.
        unsafe { AtomicU8::from_ptr(dst.add(tail_at + i)) }.store(*byte, Relaxed);
    }
}

/// Copies from shared memory at `src` into `dst` with relaxed atomic loads (as [`atomic_copy_in`]).
///
/// # Safety
///
/// `src .. src + dst.len()` lies inside a live mapping.
unsafe fn atomic_copy_out(src: *mut u8, dst: &mut [u8]) {
    let head = src.align_offset(8).min(dst.len());
    let len = dst.len();
    let (edge, rest) = dst.split_at_mut(head);
    for (i, byte) in edge.iter_mut().enumerate() {
        // SAFETY: inside the range (caller); a byte is always aligned for `AtomicU8`.
        *byte = unsafe { AtomicU8::from_ptr(src.add(i)) }.load(Relaxed);
    }
    let mut words = rest.chunks_exact_mut(8);
    for (i, word) in words.by_ref().enumerate() {
        // SAFETY: inside the range, and 8-aligned.
        let value = unsafe { AtomicU64::from_ptr(src.add(head + 8 * i).cast()) }.load(Relaxed);
        word.copy_from_slice(&value.to_ne_bytes());
    }
    let tail = words.into_remainder();
    let tail_at = len - tail.len();
    for (i, byte) in tail.iter_mut().enumerate() {
        // SAFETY: inside the range.
        *byte = unsafe { AtomicU8::from_ptr(src.add(tail_at + i)) }.load(Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every offset and length across the word boundaries round-trips.
    #[test]
    fn atomic_copies_round_trip_at_any_alignment() {
        let mut memory = vec![0u64; 8];
        let base = memory.as_mut_ptr().cast::<u8>();
        for offset in 0..16 {
            for len in 0..40 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + offset + 1) as u8).collect();
                // SAFETY: offset + len ≤ 56 < 64 bytes of `memory`.
                unsafe { atomic_copy_in(base.add(offset), &data) };
                let mut back = vec![0u8; len];
                // SAFETY: as above.
                unsafe { atomic_copy_out(base.add(offset), &mut back) };
                assert_eq!(back, data, "offset {offset}, len {len}");
            }
        }
    }
}
