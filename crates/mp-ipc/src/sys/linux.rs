//! Linux: Unix sockets through rustix.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, Shutdown, SocketAddrAny, SocketAddrUnix, SocketFlags, SocketType,
};

use mp_process::keep_off_stdio;

use crate::Address;

/// A connected pair of close-on-exec Unix stream sockets.
pub(crate) fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    Ok((keep_off_stdio(a)?, keep_off_stdio(b)?))
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

/// How many descriptors one read can take in (a peer that sends more has the rest closed by the kernel).
const FDS_PER_READ: usize = 8;

/// One `recvmsg` into `buf` (which must not be empty); 0 at end of stream. Descriptors that came with the
/// bytes (`SCM_RIGHTS`, close-on-exec) are appended to `fds`: Linux ends a read right after the bytes that
/// carried descriptors, so they belong to the last byte read.
pub(crate) fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_READ))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let n = loop {
        let mut iov = [IoSliceMut::new(&mut *buf)];
        match rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(msg) => break msg.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            for fd in received {
                fds.push(keep_off_stdio(fd)?);
            }
        }
    }
    Ok(n)
}

/// Sends the one byte `byte` with `fd` attached (`SCM_RIGHTS`), as CPython's `reduction.sendfds` does.
pub(crate) fn send_with_fd(sock: BorrowedFd<'_>, byte: u8, fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor in the control buffer"));
    }
    loop {
        match rustix::net::sendmsg(sock, &[IoSlice::new(&[byte])], &mut control, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One `recv` into `buf` (which must not be empty); 0 at end of stream.
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

/// Fills `buf` with random bytes from the kernel.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A fresh directory only we can enter, under the temporary directory.
pub(crate) fn private_temp_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    loop {
        let mut suffix = [0u8; 6];
        random_bytes(&mut suffix)?;
        let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("mp-{}-{name}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn stream_socket(address: &Address) -> io::Result<OwnedFd> {
    let family = match address {
        Address::Unix(_) | Address::Abstract(_) => AddressFamily::UNIX,
        Address::Tcp(SocketAddr::V4(_)) => AddressFamily::INET,
        Address::Tcp(SocketAddr::V6(_)) => AddressFamily::INET6,
    };
    keep_off_stdio(rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?)
}

fn socket_addr(address: &Address) -> io::Result<SocketAddrAny> {
    Ok(match address {
        Address::Unix(path) => SocketAddrUnix::new(path.as_path())?.into(),
        Address::Abstract(name) => SocketAddrUnix::new_abstract_name(name)?.into(),
        Address::Tcp(addr) => (*addr).into(),
    })
}

/// A listening socket bound to `address` (TCP with `SO_REUSEADDR`, as CPython sets it).
pub(crate) fn listen(address: &Address, backlog: u32) -> io::Result<OwnedFd> {
    let socket = stream_socket(address)?;
    if let Address::Tcp(_) = address {
        rustix::net::sockopt::set_socket_reuseaddr(&socket, true)?;
    }
    rustix::net::bind(&socket, &socket_addr(address)?)?;
    rustix::net::listen(&socket, backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket)
}

/// The address a TCP listener was given (its port, when it asked for port 0).
pub(crate) fn local_tcp_address(socket: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let addr = rustix::net::getsockname(socket)?;
    SocketAddr::try_from(addr).map_err(|_| io::Error::other("not an internet socket"))
}

/// Accepts one connection, waiting at most `timeout` (`None`: no limit); `None` on timeout.
pub(crate) fn accept(socket: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<Option<OwnedFd>> {
    if timeout.is_some() && !poll_readable(socket, timeout)? {
        return Ok(None);
    }
    loop {
        match rustix::net::accept_with(socket, SocketFlags::CLOEXEC) {
            Ok(stream) => return keep_off_stdio(stream).map(Some),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A stream connected to `address`, within `timeout` (`io::ErrorKind::TimedOut` after it). The socket connects
/// non-blocking and is waited on for writability, so that neither a full Unix backlog (where a blocking
/// connect waits for good) nor a silent TCP host (minutes of SYN retries) outlasts the timeout; it is blocking
/// again once connected. TCP gets `TCP_NODELAY` (every message leaves in one write anyway).
pub(crate) fn connect(address: &Address, timeout: Duration) -> io::Result<OwnedFd> {
    let deadline = Instant::now().checked_add(timeout);
    let left = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let socket = stream_socket(address)?;
    set_nonblocking(socket.as_fd(), true)?;
    let addr = socket_addr(address)?;
    loop {
        match rustix::net::connect(&socket, &addr) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR) => continue,
            // TCP: under way; done when the socket is writable, with the outcome in SO_ERROR.
            Err(rustix::io::Errno::INPROGRESS) => {
                if !wait_writable(socket.as_fd(), left())? {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                match rustix::net::sockopt::socket_error(&socket)? {
                    Ok(()) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            // A Unix listener's backlog is full: nothing is queued, so try again in a moment, until the
            // deadline.
            Err(rustix::io::Errno::AGAIN) => {
                let wait = left().map_or(Duration::from_millis(5), |l| l.min(Duration::from_millis(5)));
                if wait.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                std::thread::sleep(wait);
            }
            Err(e) => return Err(e.into()),
        }
    }
    set_nonblocking(socket.as_fd(), false)?;
    if let Address::Tcp(_) = address {
        rustix::net::sockopt::set_tcp_nodelay(&socket, true)?;
    }
    Ok(socket)
}

/// Turns `O_NONBLOCK` on or off.
fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    let flags = if on { flags | rustix::fs::OFlags::NONBLOCK } else { flags - rustix::fs::OFlags::NONBLOCK };
    rustix::fs::fcntl_setfl(fd, flags).map_err(Into::into)
}

/// Waits until `fd` is writable or `timeout` (`None`: no limit) passes; whether it became writable.
fn wait_writable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let spec = left
            .map(|l| Timespec { tv_sec: l.as_secs().min(i64::MAX as u64) as i64, tv_nsec: l.subsec_nanos().into() });
        let mut polls = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
        match rustix::event::poll(&mut polls, spec.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A shared mapping of a fresh anonymous memory file of `size` bytes (zeroed), and the file.
pub(crate) fn anonymous_shared(size: usize) -> io::Result<(OwnedFd, memmap2::MmapRaw)> {
    let fd = keep_off_stdio(rustix::fs::memfd_create("mp-queue", rustix::fs::MemfdFlags::CLOEXEC)?)?;
    rustix::fs::ftruncate(&fd, size as u64)?;
    let map = map_shared(&fd, size)?;
    Ok((fd, map))
}

/// Maps all `size` bytes of the memory file `fd`, shared.
pub(crate) fn map_shared(fd: &OwnedFd, size: usize) -> io::Result<memmap2::MmapRaw> {
    memmap2::MmapOptions::new().len(size).map_raw(fd)
}

/// The size of the file behind `fd`.
pub(crate) fn file_size(fd: &OwnedFd) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_size as u64)
}

/// Maps `len` bytes of the memory file `fd` from `offset` (page-aligned), shared.
pub(crate) fn map_range(fd: &OwnedFd, offset: u64, len: usize) -> io::Result<memmap2::MmapRaw> {
    memmap2::MmapOptions::new().offset(offset).len(len).map_raw(fd)
}

/// Makes the file `fd` at least `len` bytes long (never shorter).
pub(crate) fn grow_to(fd: &OwnedFd, len: u64) -> io::Result<()> {
    if file_size(fd)? < len {
        rustix::fs::ftruncate(fd, len)?;
    }
    Ok(())
}

/// Gives the memory behind `len` bytes of the file `fd` from `offset` back (the bytes read as zeros after).
pub(crate) fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) {
    let mode = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
    let _ = rustix::fs::fallocate(fd, mode, offset, len);
}
