//! The error types: sending, receiving, connecting and authenticating.

use std::io;

use crate::Address;

/// Why a send failed. Nothing was written unless the error says the stream broke.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The value failed to serialize; nothing was sent.
    #[error("failed to serialize the message: {0}")]
    Serialize(String),
    /// The message exceeds the connection's maximum message size; nothing was sent.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The connection's limit.
        max: usize,
    },
    /// The peer has closed its end (`EPIPE`; never a death by SIGPIPE).
    #[error("the other end of the connection is closed")]
    BrokenPipe,
    /// This end was closed, or opened read-only (a one-way pipe's receiving end).
    #[error("connection is closed or not writable")]
    NotWritable,
    /// The operating system refused.
    #[error("send failed: {0}")]
    Io(io::Error),
}

/// Why a receive failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The peer closed the connection at a message boundary (CPython: `EOFError`).
    #[error("end of file: the other end closed the connection")]
    Eof,
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed in the middle of a message ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes of the frame received.
        got: usize,
        /// Bytes the frame should have had.
        expected: usize,
    },
    /// A header announcing more than the connection's maximum message size; nothing was allocated. The
    /// connection cannot find the next message after this and is closed for receiving.
    #[error("incoming message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced size.
        len: usize,
        /// The connection's limit.
        max: usize,
    },
    /// A malformed header (a negative length other than -1); the connection is closed for receiving.
    #[error("malformed message header: {0}")]
    BadFrame(String),
    /// The message arrived whole but did not decode as the expected type; the connection stays aligned at
    /// the next message.
    #[error("failed to decode the message: {0}")]
    Decode(String),
    /// `recv_bytes_into` with a buffer shorter than the message; the whole message is here (CPython's
    /// `BufferTooShort`).
    #[error("buffer too short for a message of {} bytes", message.len())]
    BufferTooShort {
        /// The message.
        message: Vec<u8>,
    },
    /// This end was closed, is write-only, or lost its place in the stream after an earlier error.
    #[error("connection is closed or not readable")]
    NotReadable,
    /// No message arrived within the timeout.
    #[error("timed out waiting for a message")]
    Timeout,
    /// This end was passed on to another process, which reads it now (see [One end, several
    /// readers](crate::Connection#one-end-several-readers)): `try_clone` an end before passing it to read it
    /// in both places.
    #[error(
        "this end of the connection was passed on, and its copy reads it now; `try_clone` it before passing it to read in both places"
    )]
    PassedOn,
    /// `recv_handle`, but the next thing on the connection is a message (or bytes without a descriptor): the
    /// peer did not send a handle here. Nothing was consumed; the message can still be received.
    #[error("expected a descriptor, but the peer sent a message here (nothing was consumed)")]
    NoHandle,
    /// A descriptor arrived with a marker byte that does not match it (a peer that does not speak CPython's
    /// `send_handle` protocol); the marker was consumed.
    #[error("malformed handle transfer: {0}")]
    BadHandle(String),
    /// The operating system refused.
    #[error("receive failed: {0}")]
    Io(io::Error),
}

impl RecvError {
    /// Whether this is the end of the stream at a message boundary.
    pub fn is_eof(&self) -> bool {
        matches!(self, RecvError::Eof)
    }

    /// Whether the wait timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvError::Timeout)
    }
}

/// Why a [`Listener`](crate::Listener) could not bind or accept, or a [`Client`](crate::Client) could not
/// connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Another socket is bound to the address already (or a file is in the way of a Unix socket).
    #[error("address {0} is already in use")]
    AddressInUse(Address),
    /// Nobody listens at the address.
    #[error("nobody is listening at {0}")]
    Refused(Address),
    /// No client arrived within `accept_timeout`'s timeout, or a client's `connect` (and its handshake) did not
    /// complete within its timeout (a listener whose backlog is full, a host that does not answer).
    #[error("timed out waiting for a connection")]
    Timeout,
    /// The listener was closed.
    #[error("the listener is closed")]
    Closed,
    /// The handshake failed: a wrong key on either side, or a peer that does not speak the protocol. The
    /// connection was closed and no application message passed.
    #[error(transparent)]
    Authentication(#[from] AuthenticationError),
    /// The operating system refused.
    #[error("connection failed: {0}")]
    Io(io::Error),
}

impl ConnectError {
    pub(crate) fn from_os(address: &Address, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::AddrInUse => ConnectError::AddressInUse(address.clone()),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => ConnectError::Refused(address.clone()),
            io::ErrorKind::TimedOut => ConnectError::Timeout,
            _ => ConnectError::Io(e),
        }
    }
}

/// Why the authentication handshake failed (CPython's `AuthenticationError`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthenticationError {
    /// The peer's answer to our challenge was wrong: it does not hold our key (CPython: "digest received
    /// was wrong").
    #[error("authentication failed: digest received was wrong")]
    DigestWrong,
    /// The peer rejected our answer to its challenge: we do not hold its key (CPython: "digest sent was
    /// rejected").
    #[error("authentication failed: digest sent was rejected")]
    Rejected,
    /// The peer asked for a MAC algorithm we do not offer (we speak `sha256` and legacy `md5`).
    #[error("authentication failed: unsupported digest {0:?}")]
    UnsupportedDigest(String),
    /// The peer sent something that is not part of the handshake, or closed the connection during it.
    #[error("authentication failed: protocol error: {0}")]
    Protocol(String),
    /// The peer did not finish the handshake in time.
    #[error("authentication failed: the peer did not answer in time")]
    Timeout,
}

impl AuthenticationError {
    pub(crate) fn from_recv(e: RecvError) -> Self {
        match e {
            RecvError::Timeout => AuthenticationError::Timeout,
            RecvError::Eof => AuthenticationError::Protocol("the peer closed the connection".into()),
            other => AuthenticationError::Protocol(other.to_string()),
        }
    }
}

/// Why a `put` failed; the item comes back ([`into_inner`](Self::into_inner)) and nothing of it is in the
/// queue.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PutError<T> {
    /// No room before the timeout (`try_put`, `put_timeout`; CPython's `queue.Full`).
    #[error("queue is full")]
    Full(T),
    /// This handle was closed (CPython: "Queue ... is closed").
    #[error("queue is closed")]
    Closed(T),
    /// The item failed to serialize.
    #[error("failed to serialize the item: {message}")]
    Serialize {
        /// The item.
        item: T,
        /// The serializer's message.
        message: String,
    },
    /// The operating system refused.
    #[error("put failed: {error}")]
    Io {
        /// The item.
        item: T,
        /// The error.
        error: io::Error,
    },
}

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(item) | PutError::Closed(item) => item,
            PutError::Serialize { item, .. } | PutError::Io { item, .. } => item,
        }
    }

    /// Whether the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, PutError::Full(_))
    }
}

impl<T> std::fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Serialize { message, .. } => f.debug_struct("Serialize").field("message", message).finish(),
            PutError::Io { error, .. } => f.debug_struct("Io").field("error", error).finish(),
        }
    }
}

/// Why a `get` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// No item before the timeout (`try_get`, `get_timeout`; CPython's `queue.Empty`).
    #[error("queue is empty")]
    Empty,
    /// This handle was closed.
    #[error("queue is closed")]
    Closed,
    /// The item was taken but did not decode as the queue's type; the queue goes on with the next one.
    #[error("failed to decode the item: {0}")]
    Decode(String),
    /// The operating system refused.
    #[error("get failed: {0}")]
    Io(io::Error),
}

impl GetError {
    /// Whether the queue was empty until the timeout.
    pub fn is_empty(&self) -> bool {
        matches!(self, GetError::Empty)
    }
}

/// `task_done` called more times than items were put (CPython's `ValueError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called too many times")]
pub struct TaskDoneError;
