//! The bootstrap: the start-up message of a re-executed child (spawn, and the fork server's children).
//!
//! ```text
//! u64 length | u64 build fingerprint | u32 bootstrap length | postcard Bootstrap | argument bytes
//! ```
//!
//! with the argument handles attached (`SCM_RIGHTS`). The fingerprint comes first, so that a different build
//! is refused before anything is decoded. [`Bootstrap`] holds what the child needs before its target runs and
//! is decoded in place, without allocating; who the child is travels as the bytes of a [`Who`], decoded on
//! first use.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::call::{FnOffset, fingerprint};
use crate::error::{ChildError, ChildErrorKind};
use crate::wire::outcome::Outcome;
use crate::{StartMethod, state, sys};

/// The trampoline a re-executed child calls: decode the arguments, run the target, encode the outcome.
pub(crate) type Entry = fn(payload: &[u8], fds: Vec<OwnedFd>) -> Outcome;

/// What a child knows of its parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ParentLink {
    pub(crate) pid: u32,
    pub(crate) name: String,
    /// True when a fork server, not the parent itself, created this process (so `getppid` is the server's).
    pub(crate) via_server: bool,
    /// When the parent started (clock ticks since boot; 0 when unknown): with the pid, it names the parent
    /// for good, where the pid alone may be reused once the parent has gone. Sent when `via_server`.
    pub(crate) started: u64,
}

/// The start-up message of a re-executed child (after the fixed header). It holds what the child needs before
/// its target runs, decoded without allocating. Who the child is comes as the bytes of a [`Who`], decoded
/// only when something asks (see [`who`]), so that a served child touches no allocator on its way to the
/// target: in a child forked by the server, the first allocation alone costs about nine page faults.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bootstrap<'a> {
    /// The target's trampoline.
    pub(crate) entry: FnOffset<Entry>,
    pub(crate) parent_pid: u32,
    pub(crate) kill_with_parent: bool,
    pub(crate) affinity: Option<Vec<usize>>,
    pub(crate) start_method: StartMethod,
    /// The setup hooks to run before the target: raw [`FnOffset`]s, 8 bytes each, little-endian (read in
    /// place, without allocating).
    #[serde(borrow)]
    pub(crate) setup: &'a [u8],
    /// A postcard-encoded [`Who`].
    #[serde(borrow)]
    pub(crate) who: &'a [u8],
}

/// Who a re-executed child is, as its parent sends it ([`WhoRef`] encodes the same fields, borrowed).
#[derive(Debug, Deserialize)]
pub(crate) struct Who {
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) parent: ParentLink,
    pub(crate) authkey: Vec<u8>,
    pub(crate) inherited: BTreeMap<String, String>,
    pub(crate) setup: Vec<FnOffset<fn()>>,
}

/// [`Who`] as the parent encodes it, without copying its [`LaunchSpec`](crate::launch::LaunchSpec).
#[derive(Serialize)]
pub(crate) struct WhoRef<'a> {
    pub(crate) name: &'a str,
    pub(crate) identity: &'a [u32],
    pub(crate) daemon: bool,
    pub(crate) parent: &'a ParentLink,
    pub(crate) authkey: &'a [u8],
    pub(crate) inherited: &'a BTreeMap<String, String>,
    pub(crate) setup: &'a [FnOffset<fn()>],
}

/// Who this re-executed child is: the [`Who`] its bootstrap carried, decoded now. `None` in a process that
/// was not re-executed as a child (the main program and the fork server).
pub(crate) fn who() -> Option<Who> {
    // Encoded by this same build (the fingerprint was checked), so decoding fails only on a bug; the
    // process then carries on as if it had been told nothing.
    state::who().and_then(|bytes| postcard::from_bytes(bytes).ok())
}

/// Bytes before the bootstrap proper: total length (u64), build fingerprint (u64), bootstrap length (u32).
const HEADER: usize = 20;

/// The whole frame: the header (this build's fingerprint), the encoded [`Bootstrap`], the arguments.
pub(crate) fn encode_frame(boot: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER + boot.len() + payload.len());
    frame.extend_from_slice(&((HEADER - 8 + boot.len() + payload.len()) as u64).to_le_bytes());
    frame.extend_from_slice(&fingerprint().to_le_bytes());
    frame.extend_from_slice(&(boot.len() as u32).to_le_bytes());
    frame.extend_from_slice(boot);
    frame.extend_from_slice(payload);
    frame
}

/// Sends a bootstrap frame, the handles riding on its first bytes.
pub(crate) fn send_bootstrap(sock: BorrowedFd<'_>, frame: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let sent = sys::send_with_fds(sock, frame, &borrowed)?;
    sys::write_all(sock, &frame[sent..])
}

/// A decoded bootstrap: the message, the target's encoded arguments, and the handles that came with them.
pub(crate) type Decoded = (Bootstrap<'static>, &'static [u8], Vec<OwnedFd>);

/// Reads a bootstrap frame in the child; a different build is refused before anything is decoded. The frame
/// is kept for the rest of the process's life (the bootstrap borrows from it).
pub(crate) fn read_bootstrap(sock: BorrowedFd<'_>) -> Result<Decoded, ChildError> {
    let io_fail = |e: io::Error| ChildError {
        kind: ChildErrorKind::Bootstrap,
        message: format!("reading the start-up message: {e}"),
    };
    let mut fds = Vec::new();
    let mut head = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match sys::recv_with_fds(sock, &mut head[got..], &mut fds).map_err(io_fail)? {
            0 => return Err(io_fail(io::ErrorKind::UnexpectedEof.into())),
            n => got += n,
        }
    }
    let (rest_len, boot_len) = check_header(&head)?;
    let rest = vec![0u8; rest_len].leak();
    sys::read_exact(sock, rest).map_err(io_fail)?;
    decode_bootstrap(rest, boot_len, fds)
}

/// Decodes a whole bootstrap frame that arrived in one piece (a fork-server request), in place.
pub(crate) fn parse_bootstrap(frame: &'static [u8], fds: Vec<OwnedFd>) -> Result<Decoded, ChildError> {
    let head = frame
        .get(..HEADER)
        .ok_or_else(|| ChildError { kind: ChildErrorKind::Bootstrap, message: "truncated start-up message".into() })?;
    let (rest_len, boot_len) = check_header(head.try_into().expect("HEADER bytes"))?;
    match frame.get(HEADER..) {
        Some(rest) if rest.len() == rest_len => decode_bootstrap(rest, boot_len, fds),
        _ => Err(ChildError { kind: ChildErrorKind::Bootstrap, message: "malformed start-up message".into() }),
    }
}

/// Checks a bootstrap header (the build first); returns the length of the rest and of the bootstrap proper.
fn check_header(head: &[u8; HEADER]) -> Result<(usize, usize), ChildError> {
    let fail = |kind, message: String| ChildError { kind, message };
    let total = u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) as usize;
    let theirs = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
    let boot_len = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes")) as usize;
    if theirs != fingerprint() {
        return Err(fail(
            ChildErrorKind::BuildMismatch,
            format!("parent build {theirs:016x}, child build {:016x}; refusing to run the target", fingerprint()),
        ));
    }
    match total.checked_sub(HEADER - 8).filter(|n| *n >= boot_len) {
        Some(rest_len) => Ok((rest_len, boot_len)),
        None => Err(fail(ChildErrorKind::Bootstrap, "malformed start-up message".into())),
    }
}

fn decode_bootstrap(rest: &'static [u8], boot_len: usize, fds: Vec<OwnedFd>) -> Result<Decoded, ChildError> {
    let (boot, payload) = rest.split_at(boot_len);
    let boot: Bootstrap<'static> = postcard::from_bytes(boot)
        .map_err(|e| ChildError { kind: ChildErrorKind::Bootstrap, message: format!("decoding: {e}") })?;
    Ok((boot, payload, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::FnOffset;

    #[test]
    fn who_reads_back_what_the_parent_encodes() {
        let parent = ParentLink { pid: 42, name: "MainProcess".into(), via_server: true, started: 77 };
        let inherited = BTreeMap::from([("a.key".to_owned(), "value".to_owned())]);
        let sent = WhoRef {
            name: "Process-3:1",
            identity: &[3, 1],
            daemon: true,
            parent: &parent,
            authkey: &[1, 200, 3],
            inherited: &inherited,
            setup: &[FnOffset::from_raw(-5)],
        };
        let bytes = postcard::to_stdvec(&sent).unwrap();
        let who: Who = postcard::from_bytes(&bytes).unwrap();
        assert_eq!((who.name.as_str(), who.identity.as_slice(), who.daemon), ("Process-3:1", &[3, 1][..], true));
        assert_eq!((who.parent.pid, who.parent.name.as_str(), who.parent.via_server), (42, "MainProcess", true));
        assert_eq!((who.parent.started, who.authkey.as_slice()), (77, &[1, 200, 3][..]));
        assert_eq!(who.setup, [FnOffset::from_raw(-5)]);
        assert_eq!(who.inherited, inherited);
    }
}
