//! Linux: POSIX shared memory through rustix (`/dev/shm`), memmap2 mappings, abstract Unix sockets.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use mp_process::keep_off_stdio;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::Mode;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use rustix::shm::OFlags;

fn path(name: &str) -> String {
    format!("/{name}")
}

/// Creates segment `name` of `size` bytes (`O_CREAT | O_EXCL`, mode 0600), zero-filled.
pub(crate) fn create(name: &str, size: usize) -> io::Result<OwnedFd> {
    let fd = keep_off_stdio(rustix::shm::open(
        path(name).as_str(),
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
        Mode::RUSR | Mode::WUSR,
    )?)?;
    if let Err(e) = rustix::fs::ftruncate(&fd, size as u64) {
        let _ = unlink(name);
        return Err(e.into());
    }
    Ok(fd)
}

/// Opens existing segment `name`; returns it with its size.
pub(crate) fn open(name: &str) -> io::Result<(OwnedFd, usize)> {
    let fd = keep_off_stdio(rustix::shm::open(path(name).as_str(), OFlags::RDWR, Mode::empty())?)?;
    let size = rustix::fs::fstat(&fd)?.st_size as usize;
    Ok((fd, size))
}

/// Removes name `name` (the memory lives on while mapped).
pub(crate) fn unlink(name: &str) -> io::Result<()> {
    rustix::shm::unlink(path(name).as_str()).map_err(io::Error::from)
}

/// Maps `size` bytes of `fd`, shared, read-write.
pub(crate) fn map(fd: BorrowedFd<'_>, size: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().len(size).map_raw(fd.as_raw_fd())
}

/// The names of the shared-memory segments that exist (`/dev/shm`).
pub(crate) fn segment_names() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

pub(crate) fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        // No entropy source: time and pid still make a collision unlikely, and `create` is exclusive.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = (nanos.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(40)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn abstract_address(name: &str) -> io::Result<SocketAddrUnix> {
    SocketAddrUnix::new_abstract_name(name.as_bytes()).map_err(io::Error::from)
}

/// A close-on-exec Unix sequenced-packet socket.
fn seqpacket() -> io::Result<OwnedFd> {
    keep_off_stdio(rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?)
}

/// A listening sequenced-packet socket at an abstract address (nothing in the file system to clean up).
pub(crate) fn listen(name: &str) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    rustix::net::bind(&fd, &abstract_address(name)?)?;
    rustix::net::listen(&fd, 64)?;
    Ok(fd)
}

/// Accepts one connection.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    keep_off_stdio(rustix::net::accept_with(listener, SocketFlags::CLOEXEC)?)
}

/// Connects to the listener at abstract address `name`.
pub(crate) fn connect(name: &str) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    rustix::net::connect(&fd, &abstract_address(name)?)?;
    Ok(fd)
}

/// Sends one message (never SIGPIPE).
pub(crate) fn send(sock: BorrowedFd<'_>, message: &[u8]) -> io::Result<()> {
    rustix::net::send(sock, message, SendFlags::NOSIGNAL).map(drop).map_err(io::Error::from)
}

/// Receives one message into `buf`; 0 at end of stream.
pub(crate) fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::net::recv(sock, &mut *buf, RecvFlags::empty()) {
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A descriptor that becomes readable when a process ends (`None` when it has ended already).
pub(crate) struct ProcessWatch(Option<OwnedFd>);

impl ProcessWatch {
    pub(crate) fn new(pid: u32) -> Self {
        let fd = rustix::process::Pid::from_raw(pid as i32)
            .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok());
        ProcessWatch(fd)
    }

    /// The descriptor to poll, while the process runs.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.0.as_ref().map(AsFd::as_fd)
    }

    /// Records that the process has ended.
    pub(crate) fn ended(&mut self) {
        self.0 = None;
    }
}

/// Waits until some of `fds` are readable (or hung up), at most `timeout`; one flag per descriptor.
pub(crate) fn poll(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut polls: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN)).collect();
    let spec = timeout.map(|t| Timespec { tv_sec: t.as_secs() as i64, tv_nsec: t.subsec_nanos().into() });
    loop {
        match rustix::event::poll(&mut polls, spec.as_ref()) {
            Ok(_) => return Ok(polls.iter().map(|p| !p.revents().is_empty()).collect()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Ignores SIGINT and SIGTERM (the resource tracker must outlive a Ctrl-C to clean up after it, as CPython's).
pub(crate) fn ignore_termination_signals() {
    // SAFETY: installing SIG_IGN is always sound.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
}
