//! Handle transfer: OS handles travelling inside serialized values.
//!
//! [`Handle`] owns a file descriptor and serializes as an index into a side table that
//! [`to_bytes_with_handles`] fills (with duplicates of the descriptors). The table travels next to the bytes:
//! kept open across `exec` or sent with `SCM_RIGHTS`. [`from_bytes_with_handles`] puts the received
//! descriptors back in place. Serializing a `Handle` outside those two functions is an error, never a
//! silently dangling number. Higher crates (locks, queues, shared memory) embed a `Handle` in their own
//! serializable types, which is all it takes to make them passable into children.

use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

thread_local! {
    /// Descriptors collected while encoding (duplicates, owned by the table).
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    /// Descriptors received, waiting to be claimed by index while decoding.
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// The last handle error's text (postcard keeps only "custom error", so the message waits here).
    static HANDLE_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// `fd` itself when its number is 3 or above; else a close-on-exec duplicate at 3 or above, the original
/// closed. Every descriptor mp's crates create goes through this (mp-process's own through its `sys` layer):
/// in a program that closed its standard streams, a pipe, socket or memory file of mp's that took 0, 1 or 2
/// would receive a child's `println!`, or be a spawned child's stdout. The check costs nothing; the duplicate
/// is made only in such a program.
///
/// ```
/// let file = std::fs::File::open("/dev/null")?;
/// let fd = mp_process::keep_off_stdio(file.into())?;
/// assert!(std::os::fd::AsRawFd::as_raw_fd(&fd) > 2);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn keep_off_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    crate::sys::above_stdio(fd)
}

/// Registers this thread's codec tables now (each registers a destructor on first use), so that the fork
/// server's children inherit them registered instead of each doing it on the start's critical path.
pub(crate) fn touch_tables() {
    OUTGOING.with(|_| ());
    INCOMING.with(|_| ());
    HANDLE_ERROR.with(|_| ());
}

/// Records `message` for the enclosing codec call and returns it as a serde error.
fn handle_error<E: serde::ser::Error>(message: String) -> E {
    HANDLE_ERROR.with(|slot| *slot.borrow_mut() = Some(message.clone()));
    E::custom(message)
}

/// The codec error, preferring the recorded handle message over postcard's generic text.
fn codec_error(e: postcard::Error) -> CodecError {
    CodecError(HANDLE_ERROR.with(|slot| slot.borrow_mut().take()).unwrap_or_else(|| e.to_string()))
}

/// An owned OS handle (a file descriptor on Unix) that can be passed to a child inside its arguments, under
/// every start method. The child gets its own descriptor referring to the same open file, pipe or socket.
///
/// ```
/// # mp_process::init();
/// use std::io::{Read, Write};
/// use mp_process::{Handle, Process};
///
/// fn write_greeting(pipe: Handle) {
///     let mut pipe = std::fs::File::from(pipe.into_owned_fd());
///     pipe.write_all(b"hello from the child").unwrap();
/// }
///
/// let (mut reader, writer) = std::io::pipe()?;
/// let mut p = Process::new(write_greeting, Handle::from(std::os::fd::OwnedFd::from(writer)));
/// p.start()?; // the parent's copy of the write end is dropped here
/// p.join()?;
/// let mut text = String::new();
/// reader.read_to_string(&mut text)?;
/// assert_eq!(text, "hello from the child");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Handle {
    fd: OwnedFd,
}

impl Handle {
    /// Wraps an owned descriptor.
    pub fn new(fd: OwnedFd) -> Self {
        Handle { fd }
    }

    /// A second handle to the same open file (`dup`).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Handle { fd: self.fd.try_clone()? })
    }

    /// The owned descriptor.
    pub fn into_owned_fd(self) -> OwnedFd {
        self.fd
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Handle").field(&self.fd.as_raw_fd()).finish()
    }
}

impl From<OwnedFd> for Handle {
    fn from(fd: OwnedFd) -> Self {
        Handle { fd }
    }
}

impl From<File> for Handle {
    fn from(file: File) -> Self {
        Handle { fd: file.into() }
    }
}

impl From<Handle> for OwnedFd {
    fn from(handle: Handle) -> Self {
        handle.fd
    }
}

impl From<Handle> for File {
    fn from(handle: Handle) -> Self {
        File::from(handle.fd)
    }
}

impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl IntoRawFd for Handle {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

impl FromRawFd for Handle {
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        // SAFETY: the caller transfers ownership of an open descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Handle { fd }
    }
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let index = OUTGOING.with(|table| -> Result<u32, String> {
            let mut table = table.borrow_mut();
            let table = table.as_mut().ok_or_else(|| {
                concat!(
                    "an OS handle travels only in a process's arguments or through `to_bytes_with_handles`; ",
                    "`Connection::send`, `Queue::put` and pool tasks cannot carry one ",
                    "(`Connection::send_handle` sends a descriptor over an open connection)"
                )
                .to_owned()
            })?;
            let copy = self.fd.try_clone().map_err(|e| format!("failed to duplicate handle: {e}"))?;
            table.push(copy);
            Ok(table.len() as u32 - 1)
        });
        serializer.serialize_u32(index.map_err(handle_error::<S::Error>)?)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(deserializer)? as usize;
        INCOMING
            .with(|table| {
                let mut table = table.borrow_mut();
                let table = table.as_mut().ok_or("an OS handle can only be deserialized from an mp message")?;
                table.get_mut(index).and_then(Option::take).ok_or("handle index missing or used twice")
            })
            .map(|fd| Handle { fd })
            .map_err(|message| {
                HANDLE_ERROR.with(|slot| *slot.borrow_mut() = Some(message.to_owned()));
                D::Error::custom(message)
            })
    }
}

/// Why [`to_bytes_with_handles`] or [`from_bytes_with_handles`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(String);

/// Serializes `value` with postcard, collecting a duplicate of every [`Handle`] inside it, in order.
pub fn to_bytes_with_handles<T: Serialize + ?Sized>(value: &T) -> Result<(Vec<u8>, Vec<OwnedFd>), CodecError> {
    HANDLE_ERROR.with(|slot| slot.borrow_mut().take());
    let outer = OUTGOING.with(|table| table.borrow_mut().replace(Vec::new()));
    let bytes = postcard::to_stdvec(value).map_err(|e| match HANDLE_ERROR.with(|slot| slot.borrow_mut().take()) {
        Some(message) => CodecError(message),
        // While the table is still this call's, so a second pass's duplicates are dropped with it.
        None => CodecError(crate::codec::explain(value, &e)),
    });
    let fds = OUTGOING.with(|table| std::mem::replace(&mut *table.borrow_mut(), outer)).unwrap_or_default();
    let bytes = bytes?;
    Ok((bytes, fds))
}

/// Deserializes a value made by [`to_bytes_with_handles`], handing `fds` to its [`Handle`]s. Descriptors
/// that no handle claims are closed.
pub fn from_bytes_with_handles<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T, CodecError> {
    HANDLE_ERROR.with(|slot| slot.borrow_mut().take());
    let outer = INCOMING.with(|table| table.borrow_mut().replace(fds.into_iter().map(Some).collect()));
    let value = postcard::from_bytes(bytes);
    INCOMING.with(|table| *table.borrow_mut() = outer);
    value.map_err(codec_error)
}
