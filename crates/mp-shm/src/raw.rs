//! [`RawArray`] and [`RawValue`]: typed values in a segment of their own, with a header that names the type.

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::counted;
use crate::{Integer, Pod, SharedMemory, ShmError};

/// Where the elements start; the header fills the bytes before.
const DATA_OFFSET: usize = 64;
const MAGIC: [u8; 8] = *b"mp-raw\x00\x01";
const NAME_BYTES: usize = 24;
/// A tree-lifetime segment's reference count (`u32`), and whether it has one (`u32`, 1).
const REFS: usize = 56;
const COUNTED: usize = 60;

/// `magic | FNV-1a of the type name | element size | length | type name (truncated, for messages) |
/// reference count | counted`.
fn header<T: Pod>(len: usize) -> [u8; DATA_OFFSET] {
    let mut h = [0u8; DATA_OFFSET];
    h[..8].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&type_hash(T::TYPE_NAME).to_le_bytes());
    h[16..24].copy_from_slice(&(size_of::<T>() as u64).to_le_bytes());
    h[24..32].copy_from_slice(&(len as u64).to_le_bytes());
    let name = T::TYPE_NAME.as_bytes();
    let n = name.len().min(NAME_BYTES);
    h[32..32 + n].copy_from_slice(&name[..n]);
    h
}

fn type_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn describe(h: &[u8; DATA_OFFSET]) -> String {
    if h[..8] != MAGIC {
        return "no mp RawArray/RawValue header".to_owned();
    }
    let name = String::from_utf8_lossy(&h[32..32 + NAME_BYTES]).trim_end_matches('\0').to_owned();
    let len = u64::from_le_bytes(h[24..32].try_into().expect("8 bytes"));
    format!("[{name}; {len}]")
}

/// An array of `T` in shared memory (CPython's `multiprocessing.sharedctypes.RawArray`), without a lock.
///
/// Elements are read and written whole with volatile accesses; integer arrays also offer atomic operations.
/// Passed to a child (it serializes as its segment's name), the child attaches to the same memory.
///
/// ```
/// # mp_process::init();
/// use mp_shm::RawArray;
///
/// let squares = RawArray::<u64>::create(5)?;
/// for i in 0..5 {
///     squares.set(i, (i * i) as u64)?;
/// }
/// assert_eq!(squares.to_vec(), [0, 1, 4, 9, 16]);
/// assert_eq!(squares.fetch_add(2, 1)?, 4);
/// squares.unlink()?;
/// # Ok::<(), mp_shm::ShmError>(())
/// ```
pub struct RawArray<T: Pod> {
    shm: SharedMemory,
    len: usize,
    /// For a tree-lifetime segment: the process whose reference this handle holds. A copy of the handle in a
    /// forked child is counted for the child too, before its target runs (see `counted`).
    counted_by: Option<u32>,
    _type: PhantomData<T>,
}

impl<T: Pod> RawArray<T> {
    const FITS: () = assert!(align_of::<T>() <= DATA_OFFSET, "Pod types must not be aligned to more than 64 bytes");

    /// A zeroed array of `len` elements in a new segment with a random name.
    pub fn create(len: usize) -> Result<Self, ShmError> {
        Self::init(SharedMemory::create(Self::bytes(len)?)?, len)
    }

    /// A zeroed array whose segment needs no `unlink`: the handles (in every process) count references,
    /// and the name goes with the last one; a process killed while holding one leaves it to the resource
    /// tracker, which removes the segment when the process tree ends (see
    /// [`SharedMemory::create_for_tree`]).
    pub fn create_for_tree(len: usize) -> Result<Self, ShmError> {
        let mut array = Self::init(SharedMemory::create_for_tree(Self::bytes(len)?)?, len)?;
        array.shm.write_at(REFS, &[1, 0, 0, 0, 1, 0, 0, 0])?;
        array.counted_by = Some(counted::hold(array.shm.name(), array.refs()));
        Ok(array)
    }

    /// A zeroed array of `len` elements in a new segment named `name`.
    pub fn create_named(name: &str, len: usize) -> Result<Self, ShmError> {
        Self::init(SharedMemory::create_named(name, Self::bytes(len)?)?, len)
    }

    /// An array holding a copy of `values`, in a new segment with a random name.
    pub fn from_slice(values: &[T]) -> Result<Self, ShmError> {
        let array = Self::create(values.len())?;
        array.copy_from_slice(0, values)?;
        Ok(array)
    }

    fn bytes(len: usize) -> Result<usize, ShmError> {
        let () = Self::FITS;
        len.checked_mul(size_of::<T>()).and_then(|n| n.checked_add(DATA_OFFSET)).ok_or(ShmError::OutOfBounds {
            offset: DATA_OFFSET,
            end: usize::MAX,
            size: usize::MAX,
        })
    }

    fn init(shm: SharedMemory, len: usize) -> Result<Self, ShmError> {
        shm.write_at(0, &header::<T>(len))?;
        Ok(RawArray { shm, len, counted_by: None, _type: PhantomData })
    }

    /// Attaches to the array in segment `name`. A segment made for another type (or not by `RawArray` /
    /// `RawValue`), or too small for its header's length, is [`ShmError::TypeMismatch`].
    pub fn open(name: &str) -> Result<Self, ShmError> {
        let mut array = Self::attach(name)?;
        if array.is_counted() {
            array.refs().fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            array.counted_by = Some(counted::hold(array.shm.name(), array.refs()));
        }
        Ok(array)
    }

    /// Attaches taking over a reference counted for us by the sender (see the `Serialize` impl).
    fn adopt(name: &str) -> Result<Self, ShmError> {
        let mut array = Self::attach(name)?;
        if array.is_counted() {
            array.counted_by = Some(counted::hold(array.shm.name(), array.refs()));
        }
        Ok(array)
    }

    fn is_counted(&self) -> bool {
        self.shm.atomic_u32(COUNTED).is_ok_and(|c| c.load(std::sync::atomic::Ordering::Relaxed) == 1)
    }

    fn refs(&self) -> &std::sync::atomic::AtomicU32 {
        self.shm.atomic_u32(REFS).expect("the header is in bounds and aligned")
    }

    fn attach(name: &str) -> Result<Self, ShmError> {
        let shm = SharedMemory::open(name)?;
        let mut found = [0u8; DATA_OFFSET];
        let mismatch = |found: &[u8; DATA_OFFSET]| ShmError::TypeMismatch {
            name: name.to_owned(),
            expected: format!("[{}]", T::TYPE_NAME),
            found: describe(found),
        };
        if shm.size() < DATA_OFFSET {
            return Err(mismatch(&found));
        }
        shm.read_at(0, &mut found)?;
        let len = u64::from_le_bytes(found[24..32].try_into().expect("8 bytes")) as usize;
        let expected = header::<T>(len);
        if found[..24] != expected[..24] || Self::bytes(len).map_or(true, |n| n > shm.size()) {
            return Err(mismatch(&found));
        }
        Ok(RawArray { shm, len, counted_by: None, _type: PhantomData })
    }

    /// Another handle to the same array (see [`SharedMemory::try_clone`]).
    pub fn try_clone(&self) -> Result<Self, ShmError> {
        Self::open(self.name())
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segment's name (what a child attaches to).
    pub fn name(&self) -> &str {
        self.shm.name()
    }

    /// The segment.
    pub fn shared_memory(&self) -> &SharedMemory {
        &self.shm
    }

    fn ptr(&self, index: usize) -> *mut T {
        self.shm.as_ptr().wrapping_add(DATA_OFFSET).cast::<T>().wrapping_add(index)
    }

    fn check(&self, index: usize, count: usize) -> Result<(), ShmError> {
        match index.checked_add(count) {
            Some(end) if end <= self.len => Ok(()),
            end => Err(ShmError::OutOfBounds { offset: index, end: end.unwrap_or(usize::MAX), size: self.len }),
        }
    }

    /// Element `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        self.check(index, 1).ok()?;
        // SAFETY: in bounds; the data starts 64-aligned within the page-aligned mapping, so `T` is aligned.
        Some(unsafe { T::load(self.ptr(index)) })
    }

    /// Sets element `index` ([`ShmError::OutOfBounds`] past the end).
    pub fn set(&self, index: usize, value: T) -> Result<(), ShmError> {
        self.check(index, 1)?;
        // SAFETY: in bounds and aligned (see `get`).
        unsafe { self.ptr(index).write_volatile(value) };
        Ok(())
    }

    /// Copies `out.len()` elements starting at `start` into `out`.
    pub fn copy_to_slice(&self, start: usize, out: &mut [T]) -> Result<(), ShmError> {
        self.check(start, out.len())?;
        for (i, slot) in out.iter_mut().enumerate() {
            // SAFETY: in bounds (checked for the whole range) and aligned.
            *slot = unsafe { T::load(self.ptr(start + i)) };
        }
        Ok(())
    }

    /// Copies `values` into the array starting at `start`.
    pub fn copy_from_slice(&self, start: usize, values: &[T]) -> Result<(), ShmError> {
        self.check(start, values.len())?;
        // SAFETY: in bounds (checked) and aligned; `values` is local memory, not the mapping.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr(start), values.len()) };
        Ok(())
    }

    /// All elements, copied out.
    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: every index below `len` is in bounds and aligned.
        (0..self.len).map(|i| unsafe { T::load(self.ptr(i)) }).collect()
    }

    /// Removes the segment's name (see [`SharedMemory::unlink`]).
    pub fn unlink(&self) -> Result<(), ShmError> {
        self.shm.unlink()
    }
}

impl<T: Integer> RawArray<T> {
    fn atomic(&self, index: usize) -> Result<&T::Atomic, ShmError> {
        self.check(index, 1)?;
        // SAFETY: in bounds and aligned; the atomic lives as long as `&self` keeps the mapping.
        Ok(unsafe { T::atomic(self.ptr(index)) })
    }

    /// Atomically adds `value` to element `index` (wrapping), returning the previous value.
    pub fn fetch_add(&self, index: usize, value: T) -> Result<T, ShmError> {
        Ok(T::fetch_add(self.atomic(index)?, value))
    }

    /// Atomically replaces element `index` with `new` if it equals `current`; `Ok(previous)` on success,
    /// `Err(actual)` otherwise.
    pub fn compare_exchange(&self, index: usize, current: T, new: T) -> Result<Result<T, T>, ShmError> {
        Ok(T::compare_exchange(self.atomic(index)?, current, new))
    }

    /// Atomically replaces element `index`, returning the previous value.
    pub fn swap(&self, index: usize, value: T) -> Result<T, ShmError> {
        Ok(T::swap(self.atomic(index)?, value))
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray").field("name", &self.name()).field("values", &self.to_vec()).finish()
    }
}

/// Releases this process's reference to a tree-lifetime segment; the last one removes its name.
impl<T: Pod> Drop for RawArray<T> {
    fn drop(&mut self) {
        if let Some(counted_by) = self.counted_by
            && counted::counts_here(counted_by)
        {
            counted::release(self.shm.name(), self.refs());
            if self.refs().fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                let _ = self.shm.unlink();
            }
        }
    }
}

/// Travels by name; the receiver attaches (and checks the type). For a tree-lifetime segment the sender
/// counts a reference for the receiver, so that the segment outlives every handle in transit.
impl<T: Pod> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_counted() {
            self.refs().fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.name().serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        RawArray::adopt(&name).map_err(serde::de::Error::custom)
    }
}

/// One `T` in shared memory (CPython's `multiprocessing.sharedctypes.RawValue`), without a lock. Integer
/// values also offer atomic operations.
///
/// ```
/// # mp_process::init();
/// use mp_shm::RawValue;
///
/// let counter = RawValue::new(41u32)?;
/// assert_eq!(counter.fetch_add(1), 41);
/// assert_eq!(counter.get(), 42);
/// counter.unlink()?;
/// # Ok::<(), mp_shm::ShmError>(())
/// ```
pub struct RawValue<T: Pod> {
    array: RawArray<T>,
}

impl<T: Pod> RawValue<T> {
    /// A value in a new segment with a random name.
    pub fn new(value: T) -> Result<Self, ShmError> {
        let array = RawArray::create(1)?;
        array.set(0, value)?;
        Ok(RawValue { array })
    }

    /// A value whose segment lives as long as the process tree (see [`SharedMemory::create_for_tree`]).
    pub fn new_for_tree(value: T) -> Result<Self, ShmError> {
        let array = RawArray::create_for_tree(1)?;
        array.set(0, value)?;
        Ok(RawValue { array })
    }

    /// A zeroed value in a new segment with a random name.
    pub fn zeroed() -> Result<Self, ShmError> {
        Ok(RawValue { array: RawArray::create(1)? })
    }

    /// A value in a new segment named `name`.
    pub fn create_named(name: &str, value: T) -> Result<Self, ShmError> {
        let array = RawArray::create_named(name, 1)?;
        array.set(0, value)?;
        Ok(RawValue { array })
    }

    /// Attaches to the value in segment `name`; another type, or an array, is [`ShmError::TypeMismatch`].
    pub fn open(name: &str) -> Result<Self, ShmError> {
        Self::from_array(RawArray::open(name)?)
    }

    fn from_array(array: RawArray<T>) -> Result<Self, ShmError> {
        if array.len() != 1 {
            return Err(ShmError::TypeMismatch {
                name: array.name().to_owned(),
                expected: T::TYPE_NAME.to_owned(),
                found: format!("[{}; {}]", T::TYPE_NAME, array.len()),
            });
        }
        Ok(RawValue { array })
    }

    /// Another handle to the same value (see [`SharedMemory::try_clone`]).
    pub fn try_clone(&self) -> Result<Self, ShmError> {
        Ok(RawValue { array: self.array.try_clone()? })
    }

    /// The value.
    pub fn get(&self) -> T {
        self.array.get(0).expect("a value has one element")
    }

    /// Sets the value.
    pub fn set(&self, value: T) {
        self.array.set(0, value).expect("a value has one element");
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        self.array.name()
    }

    /// The segment.
    pub fn shared_memory(&self) -> &SharedMemory {
        self.array.shared_memory()
    }

    /// Removes the segment's name (see [`SharedMemory::unlink`]).
    pub fn unlink(&self) -> Result<(), ShmError> {
        self.array.unlink()
    }
}

impl<T: Integer> RawValue<T> {
    /// Atomically adds `value` (wrapping), returning the previous value.
    pub fn fetch_add(&self, value: T) -> T {
        self.array.fetch_add(0, value).expect("a value has one element")
    }

    /// Atomically replaces the value with `new` if it equals `current`: `Ok(previous)` or `Err(actual)`.
    pub fn compare_exchange(&self, current: T, new: T) -> Result<T, T> {
        self.array.compare_exchange(0, current, new).expect("a value has one element")
    }

    /// Atomically replaces the value, returning the previous one.
    pub fn swap(&self, value: T) -> T {
        self.array.swap(0, value).expect("a value has one element")
    }

    /// Reads the value atomically.
    pub fn load(&self) -> T {
        <T as Integer>::load(self.array.atomic(0).expect("a value has one element"))
    }

    /// Writes the value atomically.
    pub fn store(&self, value: T) {
        T::store(self.array.atomic(0).expect("a value has one element"), value)
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue").field("name", &self.name()).field("value", &self.get()).finish()
    }
}

/// Travels as its array does (see [`RawArray`]'s `Serialize`).
impl<T: Pod> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.array.serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawValue::from_array(RawArray::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}
