//! Python's `multiprocessing.shared_memory` (`SharedMemory`, `ShareableList`) and `sharedctypes.RawValue` /
//! `RawArray` for Rust: named shared-memory segments that several processes map, typed values in them, and a
//! resource tracker that removes what a crashed process tree left behind.
//!
//! ```
//! use mp_process::Process;
//! use mp_shm::SharedMemory;
//!
//! fn fill(shm: SharedMemory) {
//!     shm.write_at(0, b"written by the child").unwrap();
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     mp_process::init();
//!     let shm = SharedMemory::create(64)?;
//!     let mut child = Process::new(fill, shm.try_clone()?);
//!     child.start()?;
//!     child.join()?;
//!     let mut text = [0u8; 20];
//!     shm.read_at(0, &mut text)?;
//!     assert_eq!(&text, b"written by the child");
//!     shm.unlink()?;
//!     Ok(())
//! }
//! ```
//!
//! Architecture invariant: uses mp-process only (for handles, inherited settings and the tracker process).
//!
//! # Segments
//!
//! [`SharedMemory`] creates (with a random or given name), attaches, copies bytes in and out, gives atomic
//! views, and unlinks. It serializes as its name, so passing one to a child attaches the child to it.
//!
//! # Typed values
//!
//! [`RawValue<T>`] and [`RawArray<T>`] hold [`Pod`] types behind a header naming the type and length, so
//! attaching with the wrong type is an error, not undefined behaviour. [`Integer`] types add atomic
//! `fetch_add`, `compare_exchange` and `swap`.
//!
//! # Lists
//!
//! [`ShareableList`] is CPython's fixed-length list of scalars, strings and bytes ([`Item`]s) in one
//! segment, with each item's length stored, so trailing NUL bytes survive.
//!
//! # Cleanup
//!
//! [`SharedMemoryManager`] is CPython's scope that unlinks what it made when it ends, panics included.
//!
//! A resource tracker process unlinks the segments a process tree created and did not unlink once every
//! process of the tree has ended, SIGKILL included. Only creators register segments; attaching never causes
//! an unlink.
//!
//! # Levels
//!
//! Each module uses only modules on lower levels (`cargo xtask tidy` checks it):
//!
//! | level | modules | what they hold |
//! |---|---|---|
//! | 0 | `sys`, `error`, `pod` | system calls; the error types; the plain-old-data marker |
//! | 1 | `tracker` | the resource tracker process that unlinks what a crashed tree left |
//! | 2 | `segment`, `counted` | `SharedMemory` segments; reference counts across `fork` |
//! | 3 | `raw`, `shareable` | `RawValue` / `RawArray`; `ShareableList` |
//! | 4 | `manager` | `SharedMemoryManager`, a scope that unlinks what it made |

#![warn(missing_docs)]

mod counted;
mod error;
mod manager;
mod pod;
mod raw;
mod segment;
mod shareable;
mod sys;
mod tracker;

/// Reference counts kept in segments, across `fork` (a building block for the crates on mp-shm; see the
/// `counted` module's notes in the source).
#[doc(hidden)]
pub mod refs {
    pub use crate::counted::{counts_here, hold, release};
}

pub use crate::{
    error::ShmError,
    manager::SharedMemoryManager,
    pod::{Integer, Pod},
    raw::{RawArray, RawValue},
    segment::SharedMemory,
    shareable::{Item, ShareableList},
};
