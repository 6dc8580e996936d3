//! The error types: sending and receiving.

use std::io;

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
