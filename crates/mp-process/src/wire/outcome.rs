//! The outcome: how a child's run ended, as the last thing it sends its parent before `_exit` — into its
//! outcome slot ([`slots`](crate::slots)) or, without one, over its socket.
//!
//! On a socket: `'F' | u64 length | tag | body` (tag 0 returned value, 1 panic, 2 failure), or `'M'` alone
//! with a memory file attached holding the frame, when it might not fit the socket's buffer (the child never
//! waits for its parent to read).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::error::{ChildError, PanicInfo};
use crate::sys;

/// How a child's run ended, as sent back to the parent.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The target returned; its value, postcard-encoded.
    Returned(Vec<u8>),
    /// The target panicked.
    Panicked(PanicInfo),
    /// The child could not run the target or send its result.
    Failed(ChildError),
}

impl Outcome {
    /// The exit code that goes with this outcome (CPython: 0 on return, 1 on an exception).
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Outcome::Returned(_) => 0,
            Outcome::Panicked(_) | Outcome::Failed(_) => 1,
        }
    }

    /// Hands `[u64 LE length][tag]` and the body of the frame to `send` (no copy of a returned value).
    // Inlined into the forked child's path: each code page it touches first is a page fault.
    #[inline(always)]
    pub(crate) fn with_frame<T>(&self, send: impl FnOnce([u8; 9], &[u8]) -> T) -> T {
        let encoded;
        let (tag, body) = match self {
            Outcome::Returned(bytes) => (0u8, bytes.as_slice()),
            Outcome::Panicked(info) => {
                encoded = postcard::to_stdvec(info).unwrap_or_default();
                (1, encoded.as_slice())
            }
            Outcome::Failed(err) => {
                encoded = postcard::to_stdvec(err).unwrap_or_default();
                (2, encoded.as_slice())
            }
        };
        let mut head = [0u8; 9];
        head[..8].copy_from_slice(&(body.len() as u64 + 1).to_le_bytes());
        head[8] = tag;
        send(head, body)
    }

    /// Decodes a complete frame; `None` when the bytes are missing or damaged.
    pub(crate) fn decode(frame: &[u8]) -> Option<Outcome> {
        let len = u64::from_le_bytes(frame.get(..8)?.try_into().ok()?) as usize;
        let rest = frame.get(8..)?;
        if rest.len() != len || len == 0 {
            return None;
        }
        let body = &rest[1..];
        match rest[0] {
            0 => Some(Outcome::Returned(body.to_vec())),
            1 => postcard::from_bytes(body).ok().map(Outcome::Panicked),
            2 => postcard::from_bytes(body).ok().map(Outcome::Failed),
            _ => None,
        }
    }
}

/// The outcome message: `INLINE` then the frame, or `IN_MEMFD` alone with a memory file holding the frame.
pub(crate) const INLINE: u8 = b'F';
pub(crate) const IN_MEMFD: u8 = b'M';

/// Sends a child's outcome. It must never block (the parent only reads it after the exit), so a frame that
/// might not fit the socket's buffer goes into a memory file whose descriptor travels instead.
pub(crate) fn send_outcome(sock: BorrowedFd<'_>, outcome: &Outcome) -> io::Result<()> {
    outcome.with_frame(|head, body| {
        let len = 1 + head.len() + body.len();
        // Any Unix socket buffers 2 KiB (Linux's minimum SO_SNDBUF is larger), so only bigger messages ask.
        if len <= 2048 || len <= sys::send_buffer_size(sock) / 2 {
            let mut first = [0u8; 10];
            first[0] = INLINE;
            first[1..].copy_from_slice(&head);
            return sys::write_all_parts(sock, &first, body);
        }
        let mut frame = head.to_vec();
        frame.extend_from_slice(body);
        let memfd = sys::memfd_with(&frame)?;
        sys::send_with_fds(sock, &[IN_MEMFD], &[memfd.as_fd()]).map(drop)
    })
}
