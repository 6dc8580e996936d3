//! [`Pod`]: the plain-old-data types a [`RawValue`](crate::RawValue) or [`RawArray`](crate::RawArray) holds,
//! and [`Integer`]: those with atomic operations.

use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize,
    Ordering,
};

/// A type that can live in shared memory: plain old data, no pointers, no references, no drop glue.
///
/// Implemented for the integers, `f32`, `f64` and `bool`. Implement it for your own `#[repr(C)]` structs of
/// such fields:
///
/// ```
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Point { x: f64, y: f64 }
///
/// // SAFETY: `#[repr(C)]`, only `f64` fields (every bit pattern is valid), no padding.
/// unsafe impl mp_shm::Pod for Point {
///     const TYPE_NAME: &'static str = "Point";
/// }
/// ```
///
/// # Safety
///
/// Any bytes another process writes must read back as a valid `Self` through [`Pod::load`]: every bit
/// pattern of `size_of::<Self>()` bytes must be a valid value (or `load` must be overridden to validate,
/// as `bool`'s is), and `Self` must hold no pointers, references or resources. It must have **no padding**
/// bytes: a value is written to shared memory as its bytes, and padding bytes are uninitialised, so reading
/// them there (as the other process does) would be undefined behaviour — use `#[repr(C)]` with fields laid
/// out so that none is needed, or explicit padding fields. Its alignment must not exceed 64 bytes.
/// (bytemuck's `Pod` states the same contract with a derive that checks it; mp-shm keeps its own marker
/// for the `TYPE_NAME` its segments record and for `bool`, which bytemuck's `Pod` cannot admit.)
pub unsafe trait Pod: Copy + Send + Sync + 'static {
    /// Names the type in a segment's header, so that attaching with another type is an error. Two types
    /// with the same name and size are taken as the same.
    const TYPE_NAME: &'static str;

    /// Reads a value that another process may have written.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads of `Self` and aligned.
    unsafe fn load(ptr: *const Self) -> Self {
        // SAFETY: the caller guarantees validity and alignment; `Pod` guarantees any bits are a valid value.
        unsafe { ptr.read_volatile() }
    }
}

macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: a primitive number: every bit pattern is a valid value; no pointers.
        unsafe impl Pod for $t {
            const TYPE_NAME: &'static str = stringify!($t);
        }
    )*};
}

pod!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);

// SAFETY: `load` reads the byte and maps any non-zero value to `true`, so foreign bytes never make an
// invalid `bool`.
unsafe impl Pod for bool {
    const TYPE_NAME: &'static str = "bool";

    unsafe fn load(ptr: *const Self) -> Self {
        // SAFETY: the caller guarantees `ptr` is valid for one byte.
        unsafe { ptr.cast::<u8>().read_volatile() != 0 }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// An integer type with atomic operations in shared memory (CPython's shared values have none).
pub trait Integer: Pod + sealed::Sealed {
    #[doc(hidden)]
    type Atomic: Sync + 'static;
    #[doc(hidden)]
    /// # Safety
    /// `ptr` must be valid and aligned for the atomic type for `'a`.
    unsafe fn atomic<'a>(ptr: *mut Self) -> &'a Self::Atomic;
    #[doc(hidden)]
    fn load(atomic: &Self::Atomic) -> Self;
    #[doc(hidden)]
    fn store(atomic: &Self::Atomic, value: Self);
    #[doc(hidden)]
    fn fetch_add(atomic: &Self::Atomic, value: Self) -> Self;
    #[doc(hidden)]
    fn swap(atomic: &Self::Atomic, value: Self) -> Self;
    #[doc(hidden)]
    fn compare_exchange(atomic: &Self::Atomic, current: Self, new: Self) -> Result<Self, Self>;
}

macro_rules! integer {
    ($($t:ty => $a:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Integer for $t {
            type Atomic = $a;
            unsafe fn atomic<'a>(ptr: *mut Self) -> &'a $a {
                // SAFETY: the caller guarantees validity and alignment; the atomic has the integer's layout.
                unsafe { <$a>::from_ptr(ptr) }
            }
            fn load(atomic: &$a) -> Self {
                atomic.load(Ordering::SeqCst)
            }
            fn store(atomic: &$a, value: Self) {
                atomic.store(value, Ordering::SeqCst)
            }
            fn fetch_add(atomic: &$a, value: Self) -> Self {
                atomic.fetch_add(value, Ordering::SeqCst)
            }
            fn swap(atomic: &$a, value: Self) -> Self {
                atomic.swap(value, Ordering::SeqCst)
            }
            fn compare_exchange(atomic: &$a, current: Self, new: Self) -> Result<Self, Self> {
                atomic.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
            }
        }
    )*};
}

integer!(
    u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64, usize => AtomicUsize,
    i8 => AtomicI8, i16 => AtomicI16, i32 => AtomicI32, i64 => AtomicI64, isize => AtomicIsize
);
