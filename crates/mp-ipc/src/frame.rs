//! CPython's `multiprocessing.connection` framing: a 4-byte big-endian signed length, then the payload;
//! payloads over `0x7fffffff` bytes use the length `-1` followed by an 8-byte big-endian length.

use crate::RecvError;

/// The largest payload a 4-byte header can announce.
const SHORT_MAX: usize = 0x7fff_ffff;

/// The header for a payload of `len` bytes (4 or 12 bytes).
pub(crate) fn header(len: usize) -> ([u8; 12], usize) {
    let mut h = [0u8; 12];
    if len > SHORT_MAX {
        h[..4].copy_from_slice(&(-1i32).to_be_bytes());
        h[4..].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 12)
    } else {
        h[..4].copy_from_slice(&(len as i32).to_be_bytes());
        (h, 4)
    }
}

/// What the first 4 header bytes say.
pub(crate) enum Length {
    /// The payload length.
    Short(usize),
    /// An 8-byte length follows.
    Long,
}

/// Decodes the first 4 bytes of a header. Negative lengths other than -1 are an error (CPython quietly
/// accepts them, and then misbehaves).
pub(crate) fn short(bytes: [u8; 4]) -> Result<Length, RecvError> {
    match i32::from_be_bytes(bytes) {
        -1 => Ok(Length::Long),
        n if n < 0 => Err(RecvError::BadFrame(format!("negative length {n}"))),
        n => Ok(Length::Short(n as usize)),
    }
}

/// Decodes the 8-byte length of a long header.
pub(crate) fn long(bytes: [u8; 8]) -> Result<usize, RecvError> {
    let n = u64::from_be_bytes(bytes);
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= isize::MAX as usize)
        .ok_or_else(|| RecvError::BadFrame(format!("length {n} is impossible")))
}
