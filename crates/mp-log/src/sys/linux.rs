//! Linux: abstract `AF_UNIX` `SOCK_SEQPACKET` sockets through rustix.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use mp_process::keep_off_stdio;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};

/// Room for the largest message a listener receives (records are capped below it).
pub(crate) const MAX_MESSAGE: usize = 128 * 1024;

fn socket() -> io::Result<OwnedFd> {
    keep_off_stdio(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// The parent's listening socket, bound at abstract address `name` (non-blocking).
pub(crate) fn listen(name: &str) -> io::Result<OwnedFd> {
    let fd = socket()?;
    rustix::net::bind(&fd, &SocketAddrUnix::new_abstract_name(name.as_bytes())?)?;
    rustix::net::listen(&fd, 1024)?;
    Ok(fd)
}

/// A connection a child made, if one is waiting (non-blocking); its receive buffer set to `buffer` bytes.
pub(crate) fn accept(listener: BorrowedFd<'_>, buffer: usize) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(fd) => {
                let fd = keep_off_stdio(fd)?;
                let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, buffer);
                return Ok(Some(fd));
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A child's end, connected to the listener at `name` (an error when it is gone), with a send buffer of
/// `buffer` bytes: records wait there while the parent is busy, and a send finds it full only when the parent
/// has fallen that far behind.
pub(crate) fn connect(name: &str, buffer: usize) -> io::Result<OwnedFd> {
    let fd = socket()?;
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&fd, buffer);
    loop {
        match rustix::net::connect(&fd, &SocketAddrUnix::new_abstract_name(name.as_bytes())?) {
            Ok(()) => return Ok(fd),
            Err(rustix::io::Errno::INTR) => continue,
            // The listener's backlog is full: it accepts as it reads; a moment later there is room.
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INPROGRESS) => {
                let mut polls = [PollFd::from_borrowed_fd(fd.as_fd(), PollFlags::OUT)];
                let spec = Timespec { tv_sec: 1, tv_nsec: 0 };
                match rustix::event::poll(&mut polls, Some(&spec)) {
                    Ok(n) if n > 0 => return Ok(fd),
                    _ => return Err(io::Error::from(io::ErrorKind::TimedOut)),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How a send went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Delivered,
    /// The connection's buffer stayed full for the whole wait.
    Full,
    /// The listener is gone (its process ended).
    Gone,
    /// The listener is gone, and what it had not read of the child's ring, this record included, has been
    /// written to the child's stderr.
    Orphaned,
}

/// Sends one message, waiting at most `wait` for room when the connection's buffer is full.
pub(crate) fn send(fd: BorrowedFd<'_>, datagram: &[u8], wait: Duration) -> Sent {
    let deadline = Instant::now().checked_add(wait);
    loop {
        match rustix::net::send(fd, datagram, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(_) => return Sent::Delivered,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                let left = deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
                if left.is_zero() || !wait_writable(fd, left) {
                    return Sent::Full;
                }
            }
            Err(_) => return Sent::Gone,
        }
    }
}

fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let spec =
        Timespec { tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64, tv_nsec: timeout.subsec_nanos().into() };
    let mut polls = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
    matches!(rustix::event::poll(&mut polls, Some(&spec)), Ok(n) if n > 0)
}

/// What a receive found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// A message of this many bytes.
    Message(usize),
    /// Nothing waiting.
    Empty,
    /// The child's end is closed (it ended).
    Closed,
}

/// Room for receiving several messages with one system call: [`BATCH`] slots of [`MAX_MESSAGE`] bytes each
/// (2 MiB of address space, of which a small message touches a page).
pub(crate) struct Batch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
}

/// How many messages one receive takes at most.
pub(crate) const BATCH: usize = 16;

impl Batch {
    pub(crate) fn new() -> Self {
        Batch { buf: vec![0u8; BATCH * MAX_MESSAGE], lens: [0; BATCH] }
    }

    /// The `i`th message of the last receive.
    pub(crate) fn message(&self, i: usize) -> &[u8] {
        &self.buf[i * MAX_MESSAGE..i * MAX_MESSAGE + self.lens[i]]
    }
}

/// Receives up to [`BATCH`] messages without waiting (`recvmmsg`): `Message(n)` for `n` of them in `batch`.
pub(crate) fn recv_batch(fd: BorrowedFd<'_>, batch: &mut Batch) -> Received {
    // SAFETY: all-zero iovec and mmsghdr values are valid; they are filled in below.
    let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let base = batch.buf.as_mut_ptr();
    for (i, (iov, header)) in iovecs.iter_mut().zip(headers.iter_mut()).enumerate() {
        // SAFETY: slot `i` lies inside `batch.buf` (BATCH * MAX_MESSAGE bytes).
        iov.iov_base = unsafe { base.add(i * MAX_MESSAGE) }.cast();
        iov.iov_len = MAX_MESSAGE;
        header.msg_hdr.msg_iov = iov;
        header.msg_hdr.msg_iovlen = 1;
    }
    loop {
        // SAFETY: `headers` holds BATCH valid message headers, each pointing at one iovec of `iovecs` that
        // points at its own slot of `batch.buf`, all alive for the call; no timeout pointer.
        let n = unsafe {
            libc::recvmmsg(fd.as_raw_fd(), headers.as_mut_ptr(), BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n > 0 {
            let n = n as usize;
            for (len, header) in batch.lens.iter_mut().zip(&headers).take(n) {
                *len = header.msg_len as usize;
            }
            // A zero-length message is the end of the connection (records are never empty).
            if batch.lens[0] == 0 {
                return Received::Closed;
            }
            let n = batch.lens[..n].iter().position(|&l| l == 0).unwrap_or(n);
            return Received::Message(n);
        }
        if n == 0 {
            return Received::Closed;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Received::Empty,
            _ => return Received::Closed,
        }
    }
}

/// Waits at most `timeout` until one of `fds` is readable; which ones are.
pub(crate) fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> Vec<bool> {
    let spec =
        Timespec { tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64, tv_nsec: timeout.subsec_nanos().into() };
    let mut polls: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN)).collect();
    match rustix::event::poll(&mut polls, Some(&spec)) {
        Ok(_) => polls.iter().map(|p| !p.revents().is_empty()).collect(),
        Err(_) => vec![false; fds.len()],
    }
}

/// Whether the other end of a child's connection has gone (the parent ended): the connection reads end of file
/// or reports a hang-up (the parent never sends a child anything). No waiting.
pub(crate) fn peer_gone(fd: BorrowedFd<'_>) -> bool {
    let mut polls = [PollFd::from_borrowed_fd(fd, PollFlags::IN | PollFlags::RDHUP)];
    let spec = Timespec { tv_sec: 0, tv_nsec: 0 };
    matches!(rustix::event::poll(&mut polls, Some(&spec)), Ok(n) if n > 0)
}

/// Writes a whole line to this process's stderr (descriptor 2) with `write(2)` itself, ignoring failures: no
/// lock of Rust's `stderr` is taken, so a child forked while this process's listener thread printed does not
/// inherit that lock held.
pub(crate) fn write_stderr(mut line: &[u8]) {
    // SAFETY: descriptor 2 is borrowed for the call only; if it is closed the write fails, harmlessly.
    let fd = unsafe { BorrowedFd::borrow_raw(2) };
    while !line.is_empty() {
        match rustix::io::write(fd, line) {
            Ok(0) => return,
            Ok(n) => line = &line[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// A fresh memory file of `size` bytes (zeroed), mapped shared: a child's ring.
pub(crate) fn ring_memory(size: usize) -> io::Result<(OwnedFd, memmap2::MmapRaw)> {
    let fd = keep_off_stdio(rustix::fs::memfd_create("mp-log-ring", rustix::fs::MemfdFlags::CLOEXEC)?)?;
    rustix::fs::ftruncate(&fd, size as u64)?;
    let map = memmap2::MmapOptions::new().len(size).map_raw(&std::fs::File::from(fd.try_clone()?))?;
    Ok((fd, map))
}

/// Maps the whole memory file `fd` (a child's ring, received by the parent).
pub(crate) fn map_ring(fd: &OwnedFd) -> io::Result<memmap2::MmapRaw> {
    let size = rustix::fs::fstat(fd)?.st_size as usize;
    memmap2::MmapOptions::new().len(size).map_raw(&std::fs::File::from(fd.try_clone()?))
}

/// Sends `byte` with descriptor `fd` attached (`SCM_RIGHTS`).
pub(crate) fn send_fd(sock: BorrowedFd<'_>, byte: u8, fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("control buffer too small"));
    }
    loop {
        match rustix::net::sendmsg(sock, &[std::io::IoSlice::new(&[byte])], &mut control, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A child's first message on its connection.
#[derive(Debug)]
pub(crate) enum Hello {
    /// Not here yet.
    Pending,
    /// Its ring's memory file.
    Ring(OwnedFd),
    /// It has no ring: its records come on the connection.
    NoRing,
    /// The connection ended first.
    Closed,
}

/// Receives a child's first message (`b'R'` with its ring's memory file attached, or `b'N'`), without waiting.
pub(crate) fn recv_hello(sock: BorrowedFd<'_>) -> Hello {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let received = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [std::io::IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) => break r,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Hello::Pending,
            Err(_) => return Hello::Closed,
        }
    };
    if received.bytes == 0 {
        return Hello::Closed;
    }
    let mut fd = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            fd = fds.next();
        }
    }
    match (byte[0], fd.map(keep_off_stdio)) {
        (b'R', Some(Ok(fd))) => Hello::Ring(fd),
        _ => Hello::NoRing,
    }
}

/// Random bytes for a listener's name.
pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    u64::from_le_bytes(bytes)
}
