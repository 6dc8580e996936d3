//! Linux: Unix sockets through rustix.

use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, RecvFlags, SendAncillaryBuffer, SendFlags, Shutdown, SocketFlags, SocketType};

/// A connected pair of close-on-exec Unix stream sockets.
pub(crate) fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)
        .map_err(io::Error::from)
}

/// Writes `head` then `body`, in one `sendmsg` when the socket takes them whole. Never raises SIGPIPE.
pub(crate) fn send_parts(sock: BorrowedFd<'_>, mut head: &[u8], mut body: &[u8]) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let iov = [IoSlice::new(head), IoSlice::new(body)];
        match rustix::net::sendmsg(sock, &iov, &mut SendAncillaryBuffer::default(), SendFlags::NOSIGNAL) {
            Ok(n) if n < head.len() => head = &head[n..],
            Ok(n) => {
                body = &body[n - head.len()..];
                head = &[];
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One `recv` into `buf`; 0 at end of stream.
pub(crate) fn recv_into(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::net::recv(sock, &mut *buf, RecvFlags::empty()) {
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until `fd` is readable (or hung up), at most `timeout` (`None`: no limit).
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut polls = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
    loop {
        let remaining = match (timeout, deadline) {
            (None, _) | (Some(_), None) => None,
            (Some(_), Some(d)) => Some(d.saturating_duration_since(Instant::now())),
        };
        let spec = remaining.map(|r| Timespec { tv_sec: r.as_secs() as i64, tv_nsec: r.subsec_nanos().into() });
        match rustix::event::poll(&mut polls, spec.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// No more sending on this end (the peer reads end of file once the data is drained).
pub(crate) fn shutdown_write(sock: BorrowedFd<'_>) {
    let _ = rustix::net::shutdown(sock, Shutdown::Write);
}

/// No more receiving on this end.
pub(crate) fn shutdown_read(sock: BorrowedFd<'_>) {
    let _ = rustix::net::shutdown(sock, Shutdown::Read);
}
