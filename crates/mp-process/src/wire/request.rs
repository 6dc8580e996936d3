//! A start request to the fork server: one `SOCK_SEQPACKET` datagram, its descriptors attached.
//!
//! - [`SLOT`]: `[SLOT][kill with parent u8][slot u32][done pipe's identity u64]`, then `[0][bootstrap frame]`,
//!   or `[1][offset u64][length u64]` when the frame lies in the slots' memory file (too large for a
//!   datagram); descriptors `[done pipe, status pipe, the bootstrap's handles…]`. The child reports into its
//!   outcome slot, then writes a byte on the done pipe (only while that descriptor is still the pipe of the
//!   identity sent here: its target may have closed it and opened a file under the same number).
//! - [`SOCKET`] (no free slot): `[SOCKET][kill with parent u8]`; descriptors `[child socket, status pipe]`.
//!
//! Only pipes travel with a slot request: a Unix socket in flight makes every socket closed meanwhile,
//! system-wide, schedule the kernel's collector of in-flight sockets.

/// A request whose child reports through a slot.
pub(crate) const SLOT: u8 = b'A';
/// A request whose child reports over its socket.
pub(crate) const SOCKET: u8 = b'S';
/// The largest bootstrap sent inside a request (larger ones go through the memory file). Small, so that the
/// child's receive buffer stays within a page or two.
pub(crate) const INLINE_FRAME: usize = 2048;
/// The head of a slot request, before the frame.
const SLOT_HEAD: usize = 14;
/// The largest request.
pub(crate) const REQUEST_MAX: usize = INLINE_FRAME + SLOT_HEAD + 1 + 16;

/// Where a slot request's bootstrap frame is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// Inside the request.
    Inline(&'a [u8]),
    /// In the slots' memory file, at this offset, this long.
    Spilled { offset: u64, len: u64 },
}

/// A slot request's bytes.
pub(crate) fn encode_slot(kill: bool, slot: u32, done_identity: u64, frame: &Frame<'_>) -> Vec<u8> {
    let inline = match frame {
        Frame::Inline(bytes) => bytes.len(),
        Frame::Spilled { .. } => 16,
    };
    let mut request = Vec::with_capacity(SLOT_HEAD + 1 + inline);
    request.extend_from_slice(&[SLOT, u8::from(kill)]);
    request.extend_from_slice(&slot.to_le_bytes());
    request.extend_from_slice(&done_identity.to_le_bytes());
    match frame {
        Frame::Inline(bytes) => {
            request.push(0);
            request.extend_from_slice(bytes);
        }
        Frame::Spilled { offset, len } => {
            request.push(1);
            request.extend_from_slice(&offset.to_le_bytes());
            request.extend_from_slice(&len.to_le_bytes());
        }
    }
    request
}

/// A socket request's bytes.
pub(crate) fn encode_socket(kill: bool) -> [u8; 2] {
    [SOCKET, u8::from(kill)]
}

/// The kind of a request ([`SLOT`] or [`SOCKET`]) and whether its child dies with the server.
#[inline(always)] // a served child's path: see `runtime`
pub(crate) fn kind(request: &[u8]) -> Option<(u8, bool)> {
    Some((*request.first()?, *request.get(1)? != 0))
}

/// A slot request's slot, done-pipe identity and frame; `None` when malformed.
#[inline(always)] // a served child's path: see `runtime`
pub(crate) fn decode_slot(request: &[u8]) -> Option<(u32, u64, Frame<'_>)> {
    let slot = u32::from_le_bytes(request.get(2..6)?.try_into().ok()?);
    let identity = u64::from_le_bytes(request.get(6..SLOT_HEAD)?.try_into().ok()?);
    let frame = match (request.get(SLOT_HEAD)?, request.get(SLOT_HEAD + 1..)?) {
        (0, frame) => Frame::Inline(frame),
        (1, at) if at.len() == 16 => Frame::Spilled {
            offset: u64::from_le_bytes(at[..8].try_into().ok()?),
            len: u64::from_le_bytes(at[8..].try_into().ok()?),
        },
        _ => return None,
    };
    Some((slot, identity, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_requests_read_back() {
        for frame in [Frame::Inline(b"frame bytes"), Frame::Spilled { offset: 1 << 40, len: 7 }] {
            let request = encode_slot(true, 17, 0xfeed, &frame);
            assert!(request.len() <= REQUEST_MAX);
            assert_eq!(kind(&request), Some((SLOT, true)));
            assert_eq!(decode_slot(&request), Some((17, 0xfeed, frame)));
        }
        assert_eq!(kind(&encode_socket(false)), Some((SOCKET, false)));
        assert_eq!(decode_slot(&[SLOT, 1, 0, 0]), None, "truncated");
        let mut bad = encode_slot(false, 1, 2, &Frame::Spilled { offset: 3, len: 4 });
        bad.pop();
        assert_eq!(decode_slot(&bad), None, "short spill range");
    }
}
