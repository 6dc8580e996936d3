//! The error type of shared-memory operations.

use std::io;

/// Why a shared-memory operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// The name is empty, too long (over 250 bytes), or holds `/` or a NUL byte.
    #[error("invalid shared memory name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A segment must have at least one byte (CPython: "'size' must be a positive number").
    #[error("shared memory size must be greater than zero")]
    ZeroSize,
    /// A segment of that name exists already (CPython: `FileExistsError`).
    #[error("shared memory {0:?} already exists")]
    AlreadyExists(String),
    /// No segment has that name (CPython: `FileNotFoundError`), also on a second `unlink`.
    #[error("no shared memory named {0:?}")]
    NotFound(String),
    /// A byte range outside the segment.
    #[error("range {offset}..{end} is outside the segment of {size} bytes")]
    OutOfBounds {
        /// Start of the range.
        offset: usize,
        /// End of the range (exclusive).
        end: usize,
        /// The segment's size.
        size: usize,
    },
    /// An atomic view at an offset that is not a multiple of its alignment.
    #[error("offset {offset} is not aligned to {align} bytes")]
    Misaligned {
        /// The offset given.
        offset: usize,
        /// The alignment required.
        align: usize,
    },
    /// The segment was not made by `RawValue` / `RawArray` (or `ShareableList`), or for another type or length.
    #[error("shared memory {name:?} holds {found}, not {expected}")]
    TypeMismatch {
        /// The segment's name.
        name: String,
        /// What the caller asked for.
        expected: String,
        /// What the segment's header says.
        found: String,
    },
    /// A [`ShareableList`](crate::ShareableList) index past the end (CPython: `IndexError`).
    #[error("index {index} is out of range for a list of {len} items")]
    IndexOutOfRange {
        /// The index given.
        index: usize,
        /// The list's length.
        len: usize,
    },
    /// A [`ShareableList`](crate::ShareableList) item larger than the room of the item it would replace
    /// (CPython: `ValueError: exceeds available storage`); the old item stays.
    #[error("item {index} has room for {capacity} bytes, not {size}")]
    ItemTooLarge {
        /// The item's index.
        index: usize,
        /// The bytes the new item needs.
        size: usize,
        /// The bytes the item has room for.
        capacity: usize,
    },
    /// A [`ShareableList`](crate::ShareableList) item whose stored bytes do not decode: a read that raced a
    /// write of the same item, or memory written by something else.
    #[error("item {index} does not decode: {reason}")]
    InvalidItem {
        /// The item's index.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The operating system refused (permissions, out of memory, ...).
    #[error("shared memory operation failed: {0}")]
    Io(#[from] io::Error),
}

impl ShmError {
    /// Maps an OS error on segment `name` to the specific variants.
    pub(crate) fn from_os(name: &str, error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::AlreadyExists => ShmError::AlreadyExists(name.to_owned()),
            io::ErrorKind::NotFound => ShmError::NotFound(name.to_owned()),
            _ => ShmError::Io(error),
        }
    }
}
