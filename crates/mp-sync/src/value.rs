//! [`Value`] and [`Array`]: shared data with a lock of its own (CPython's `multiprocessing.Value` / `Array`).

use std::fmt;
use std::ops::{Deref, DerefMut};

use mp_shm::{Pod, RawArray, RawValue};
use serde::{Deserialize, Serialize};

use crate::{RLock, RLockGuard, SyncError};

/// One `T` in shared memory with its own lock (CPython's `multiprocessing.Value`, which also defaults to an
/// `RLock`). For the lock-free variant (CPython's `lock=False`), use [`mp_shm::RawValue`].
///
/// ```
/// # mp_process::init();
/// let counter = mp_sync::Value::new(0u64)?;
/// *counter.get_lock()? += 1; // CPython: `with v.get_lock(): v.value += 1`
/// assert_eq!(counter.value()?, 1);
/// # Ok::<(), mp_sync::SyncError>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Value<T: Pod> {
    raw: RawValue<T>,
    lock: RLock,
}

impl<T: Pod> Value<T> {
    /// A value in new shared memory.
    pub fn new(value: T) -> Result<Self, SyncError> {
        Ok(Value { raw: RawValue::new_for_tree(value)?, lock: RLock::new()? })
    }

    /// A value guarded by a lock the caller supplies (CPython's `Value(..., lock=rlock)`), for instance one
    /// shared with other values so that one acquisition covers them all.
    ///
    /// ```
    /// # mp_process::init();
    /// let lock = mp_sync::RLock::new()?;
    /// let (a, b) = (mp_sync::Value::with_lock(1u32, lock.try_clone()?)?, mp_sync::Value::with_lock(2u32, lock)?);
    /// let _both = a.lock().acquire()?; // holds b's lock too: it is the same lock
    /// assert!(b.lock().is_held());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn with_lock(value: T, lock: RLock) -> Result<Self, SyncError> {
        Ok(Value { raw: RawValue::new_for_tree(value)?, lock })
    }

    /// Another handle to the same value and lock, to pass into a child.
    pub fn try_clone(&self) -> Result<Self, SyncError> {
        Ok(Value { raw: self.raw.try_clone()?, lock: self.lock.try_clone()? })
    }

    /// Locks the value and gives access to it; the change is written back when the guard drops (before the
    /// lock is released).
    #[inline]
    pub fn get_lock(&self) -> Result<ValueGuard<'_, T>, SyncError> {
        let guard = self.lock.acquire()?;
        Ok(ValueGuard { value: self.raw.get(), raw: &self.raw, guard })
    }

    /// The value, read under the lock (CPython's `v.value`).
    pub fn value(&self) -> Result<T, SyncError> {
        Ok(*self.get_lock()?)
    }

    /// Sets the value under the lock (CPython's `v.value = x`).
    pub fn set_value(&self, value: T) -> Result<(), SyncError> {
        *self.get_lock()? = value;
        Ok(())
    }

    /// The lock (CPython's `get_lock()` without the access).
    pub fn lock(&self) -> &RLock {
        &self.lock
    }

    /// The shared value without its lock (CPython's `get_obj()`): reads and writes through it are not
    /// synchronized with the lock's holders.
    pub fn get_obj(&self) -> &RawValue<T> {
        &self.raw
    }

    /// The name of the shared-memory segment holding the value (another process attaches with it).
    pub fn name(&self) -> &str {
        self.raw.name()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value").field("raw", &self.raw).field("lock", &self.lock).finish()
    }
}

/// The locked contents of a [`Value`]: a copy taken under the lock, written back on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    value: T,
    raw: &'a RawValue<T>,
    guard: RLockGuard<'a>,
}

impl<T: Pod> ValueGuard<'_, T> {
    /// Whether a previous holder died holding the lock (the value may be half-updated).
    pub fn previous_owner_died(&self) -> bool {
        self.guard.previous_owner_died()
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: Pod> Drop for ValueGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.raw.set(self.value);
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&self.value).finish()
    }
}

/// An array of `T` in shared memory with its own lock (CPython's `multiprocessing.Array`). For the lock-free
/// variant, use [`mp_shm::RawArray`].
///
/// ```
/// # mp_process::init();
/// let squares = mp_sync::Array::<i32>::new(5)?;
/// {
///     let locked = squares.get_lock()?;
///     for i in 0..locked.len() {
///         locked.set(i, (i * i) as i32)?;
///     }
/// }
/// assert_eq!(squares.to_vec()?, [0, 1, 4, 9, 16]);
/// # Ok::<(), mp_sync::SyncError>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Array<T: Pod> {
    raw: RawArray<T>,
    lock: RLock,
}

impl<T: Pod> Array<T> {
    /// A zeroed array of `len` elements.
    pub fn new(len: usize) -> Result<Self, SyncError> {
        Ok(Array { raw: RawArray::create_for_tree(len)?, lock: RLock::new()? })
    }

    /// A zeroed array guarded by a lock the caller supplies (CPython's `Array(..., lock=rlock)`).
    pub fn with_lock(len: usize, lock: RLock) -> Result<Self, SyncError> {
        Ok(Array { raw: RawArray::create_for_tree(len)?, lock })
    }

    /// An array holding a copy of `values`.
    pub fn from_slice(values: &[T]) -> Result<Self, SyncError> {
        let array = Self::new(values.len())?;
        array.raw.copy_from_slice(0, values)?;
        Ok(array)
    }

    /// Another handle to the same array and lock, to pass into a child.
    pub fn try_clone(&self) -> Result<Self, SyncError> {
        Ok(Array { raw: self.raw.try_clone()?, lock: self.lock.try_clone()? })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Locks the array for a sequence of operations.
    #[inline]
    pub fn get_lock(&self) -> Result<ArrayGuard<'_, T>, SyncError> {
        Ok(ArrayGuard { raw: &self.raw, guard: self.lock.acquire()? })
    }

    /// Element `index` read under the lock; `None` past the end.
    pub fn get(&self, index: usize) -> Result<Option<T>, SyncError> {
        Ok(self.get_lock()?.get(index))
    }

    /// Sets element `index` under the lock.
    pub fn set(&self, index: usize, value: T) -> Result<(), SyncError> {
        self.get_lock()?.set(index, value)
    }

    /// All elements, copied under the lock (CPython's `arr[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>, SyncError> {
        Ok(self.get_lock()?.to_vec())
    }

    /// The lock.
    pub fn lock(&self) -> &RLock {
        &self.lock
    }

    /// The shared array without its lock (CPython's `get_obj()`): accesses through it are not synchronized
    /// with the lock's holders.
    pub fn get_obj(&self) -> &RawArray<T> {
        &self.raw
    }

    /// The name of the shared-memory segment holding the elements.
    pub fn name(&self) -> &str {
        self.raw.name()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array").field("raw", &self.raw).field("lock", &self.lock).finish()
    }
}

/// The locked contents of an [`Array`]; the lock is released on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Pod> {
    raw: &'a RawArray<T>,
    guard: RLockGuard<'a>,
}

impl<T: Pod> ArrayGuard<'_, T> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Element `index`; `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        self.raw.get(index)
    }

    /// Sets element `index` ([`SyncError::Shm`] out of bounds).
    pub fn set(&self, index: usize, value: T) -> Result<(), SyncError> {
        Ok(self.raw.set(index, value)?)
    }

    /// Copies `values` in, starting at `start`.
    pub fn copy_from_slice(&self, start: usize, values: &[T]) -> Result<(), SyncError> {
        Ok(self.raw.copy_from_slice(start, values)?)
    }

    /// All elements.
    pub fn to_vec(&self) -> Vec<T> {
        self.raw.to_vec()
    }

    /// Whether a previous holder died holding the lock (the array may be half-updated).
    pub fn previous_owner_died(&self) -> bool {
        self.guard.previous_owner_died()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&self.to_vec()).finish()
    }
}
