//! Linux implementation of the OS layer: rustix for sockets, poll and pidfds; libc for what rustix lacks
//! (`fork`, `posix_spawn`, `waitpid`, `prctl`, `_exit`, `sigaction`, `atexit`).

use std::ffi::{CStr, CString};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};

/// The most descriptors one message may carry (Linux's `SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// Turns a libc `-1` return into the current `errno` as an [`io::Error`].
macro_rules! syscall {
    ($e:expr) => {{
        let r = $e;
        if r == -1 { Err(io::Error::last_os_error()) } else { Ok(r) }
    }};
}

/// What `fork` returned in this process.
pub(crate) enum Forked {
    /// We are the new child.
    Child,
    /// We are the parent; the child has this pid.
    Parent(u32),
}

/// `fork()`.
///
/// # Safety
///
/// In the child only the forking thread exists: locks held by other threads stay locked forever. The caller
/// must keep the child's work to what is safe in that state (the child runtime resets every lock of this crate
/// before it uses it).
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; the caller upholds the post-fork contract.
    let pid = syscall!(unsafe { libc::fork() })?;
    Ok(if pid == 0 { Forked::Child } else { Forked::Parent(pid as u32) })
}

/// `posix_spawn` of `path` with `argv` and `envp`, keeping the descriptors in `keep` open (at the same numbers)
/// in the child; every other close-on-exec descriptor is closed by `exec`.
pub(crate) fn spawn(path: &CStr, argv: &[CString], envp: &[CString], keep: &[RawFd]) -> io::Result<u32> {
    let mut argv_ptrs: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> = envp.iter().map(|a| a.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());

    let mut actions = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    // SAFETY: `actions` is valid for writes; init fully initialises it.
    let r = unsafe { libc::posix_spawn_file_actions_init(actions.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    let mut pid: libc::pid_t = 0;
    let mut result = 0;
    for &fd in keep {
        // dup2(fd, fd) in the child clears FD_CLOEXEC (POSIX 2024, glibc >= 2.29): the descriptor survives exec.
        // SAFETY: `actions` was initialised above.
        result = unsafe { libc::posix_spawn_file_actions_adddup2(actions.as_mut_ptr(), fd, fd) };
        if result != 0 {
            break;
        }
    }
    if result == 0 {
        // SAFETY: every pointer is valid and NUL-terminated; the argv and envp arrays end with a null pointer
        // and outlive the call.
        result = unsafe {
            libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                actions.as_ptr(),
                std::ptr::null(),
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            )
        };
    }
    // SAFETY: `actions` was initialised above and is destroyed exactly once.
    unsafe { libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr()) };
    if result != 0 {
        return Err(io::Error::from_raw_os_error(result));
    }
    Ok(pid as u32)
}

/// Converts a raw wait status into CPython's exit code convention: the exit status, or `-N` for signal `N`.
fn exitcode_of(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) { -libc::WTERMSIG(status) } else { libc::WEXITSTATUS(status) }
}

/// The exit code (CPython's convention, as [`wait_status`]) of the ended process behind `pidfd`, even once
/// it has been reaped, by the kernel itself when SIGCHLD is ignored: `PIDFD_GET_INFO` with
/// `PIDFD_INFO_EXIT` (Linux 6.15 and later; the pidfd must have been opened before the process ended).
/// `None` on older kernels, or while the process runs.
pub(crate) fn pidfd_exit_code(pidfd: BorrowedFd<'_>) -> Option<i32> {
    /// `struct pidfd_info` as of Linux 6.15 (`PIDFD_INFO_SIZE_VER0`, 64 bytes).
    #[repr(C)]
    struct PidfdInfo {
        mask: u64,
        cgroupid: u64,
        ids: [u32; 11],
        exit_code: i32,
    }
    const _: () = assert!(size_of::<PidfdInfo>() == 64);
    const PIDFD_INFO_EXIT: u64 = 1 << 3;
    // _IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info)
    const PIDFD_GET_INFO: libc::c_ulong =
        (3 << 30) | ((size_of::<PidfdInfo>() as libc::c_ulong) << 16) | (0xFF << 8) | 11;
    let mut info = PidfdInfo { mask: PIDFD_INFO_EXIT, cgroupid: 0, ids: [0; 11], exit_code: 0 };
    // SAFETY: PIDFD_GET_INFO reads the mask from, and writes at most 64 bytes (the size encoded in the request)
    // into, the valid `PidfdInfo` it is given; on a kernel without it the ioctl fails and writes nothing.
    let r = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO, &mut info as *mut PidfdInfo) };
    (r == 0 && info.mask & PIDFD_INFO_EXIT != 0).then(|| exitcode_of(info.exit_code))
}

/// Reaps child `pid`: `Some(exitcode)` once it has ended, `None` while it runs (only when `block` is false).
pub(crate) fn wait_status(pid: u32, block: bool) -> io::Result<Option<i32>> {
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out-pointer.
        match syscall!(unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) }) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(exitcode_of(status))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reaps any ended child without blocking: `Some((pid, exitcode))`, or `None` when none has ended.
pub(crate) fn reap_any() -> Option<(u32, i32)> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid out-pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then(|| (pid as u32, exitcode_of(status)))
}

/// `kill(pid, sig)`.
pub(crate) fn send_signal(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    syscall!(unsafe { libc::kill(pid as libc::pid_t, sig) }).map(drop)
}

/// `_exit(code)`: ends the process at once, running no destructors, `atexit` handlers or stdio flushes.
// Inlined into the forked child's path: each code page it touches first is a page fault.
#[inline(always)]
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and always sound to call.
    unsafe { libc::_exit(code) }
}

/// This process's pid. A raw system call, inlined (see [`parent_pid`]).
#[inline(always)]
pub(crate) fn pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// The parent's pid (`getppid`; 0 when there is none). A raw system call, inlined: a forked child calls this on
/// its way to the target, where every code page touched first is a page fault.
#[inline(always)]
pub(crate) fn parent_pid() -> u32 {
    rustix::process::getppid().map_or(0, |pid| pid.as_raw_nonzero().get() as u32)
}

/// Whether the calling thread is the process's main thread (its tid equals the pid).
pub(crate) fn is_main_thread() -> bool {
    thread_local! {
        // Never stale in a way that matters: a thread that was the main thread is the only (so the main)
        // thread of a child it forks; one that was not may hand a start to a launcher thread needlessly.
        static MAIN: bool = rustix::thread::gettid().as_raw_nonzero().get() as u32 == pid();
    }
    MAIN.with(|main| *main)
}

/// Asks the kernel to SIGKILL this process when the thread that created it ends (`PR_SET_PDEATHSIG`). A raw
/// system call, inlined, as [`parent_pid`].
#[inline(always)]
pub(crate) fn set_parent_death_signal() -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)).map_err(io::Error::from)
}

/// Undoes [`set_parent_death_signal`].
pub(crate) fn clear_parent_death_signal() -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(None).map_err(io::Error::from)
}

/// Calls, harmlessly, the libc functions a forked child calls, so that their dynamic symbols are bound
/// before any fork: a child binding a symbol itself writes to (and so copies) a page of its parent's.
pub(crate) fn prebind_child_symbols() {
    let mut signal: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int through the valid pointer; getppid cannot fail.
    unsafe {
        libc::prctl(libc::PR_GET_PDEATHSIG, &mut signal as *mut libc::c_int as libc::c_ulong, 0, 0, 0);
        libc::getppid();
    }
}

/// Restricts this process to the given CPUs.
pub(crate) fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus {
        if cpu >= rustix::thread::CpuSet::MAX_CPU {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("cpu {cpu} is out of range")));
        }
        set.set(cpu);
    }
    rustix::thread::sched_setaffinity(None, &set).map_err(io::Error::from)
}

/// The number of CPUs this process may run on (its affinity mask), at least 1.
pub(crate) fn affinity_count() -> usize {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (set.count() as usize).max(1),
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// A descriptor that becomes readable when process `pid` ends (`pidfd_open`).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
    above_stdio(rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?)
}

/// `fd` itself when its number is 3 or above; else a close-on-exec duplicate at 3 or above (the original is
/// closed). mp's own descriptors never take the numbers 0–2: in a program that closed its standard streams,
/// a pipe or memory file of ours there would receive a child's `println!` (or become a spawned child's
/// stdout). The check costs nothing; the duplicate is made only in such a program.
#[inline(always)]
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    rustix::io::fcntl_dupfd_cloexec(&fd, 3).map_err(io::Error::from)
}

/// What file `fd` refers to, as one number (device and inode); 0 when it is not open. A child compares it
/// before its last write, so that it never writes into a file its target opened under the number of one of
/// mp's descriptors that the target closed.
#[inline(always)]
pub(crate) fn fd_identity(fd: BorrowedFd<'_>) -> u64 {
    match rustix::fs::fstat(fd) {
        Ok(st) => fnv1a(fnv1a(FNV_OFFSET, &st.st_dev.to_le_bytes()), &st.st_ino.to_le_bytes()),
        Err(_) => 0,
    }
}

/// [`above_stdio`] for a received descriptor, whose position in its message matters: kept where it is if it
/// cannot be moved.
#[cold]
fn lift_received(fd: OwnedFd) -> OwnedFd {
    match rustix::io::fcntl_dupfd_cloexec(&fd, 3) {
        Ok(moved) => moved,
        Err(_) => fd,
    }
}

/// [`above_stdio`] for both ends of a pair.
fn pair_above_stdio((a, b): (OwnedFd, OwnedFd)) -> io::Result<(OwnedFd, OwnedFd)> {
    Ok((above_stdio(a)?, above_stdio(b)?))
}

/// A connected pair of close-on-exec Unix stream sockets.
pub(crate) fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    pair_above_stdio(rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?)
}

/// A connected pair of close-on-exec Unix sequenced-packet sockets (message boundaries kept).
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    pair_above_stdio(rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?)
}

/// Room for the control message of the most descriptors one message carries, plus the slack for aligning it to
/// a `cmsghdr` (a byte array on the stack is not). Kept on the stack: no allocation on the fork server's paths.
const CONTROL_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE)) + std::mem::align_of::<u64>();

/// Sends `data` with `fds` attached (`SCM_RIGHTS`); returns how many bytes went. Never raises SIGPIPE.
pub(crate) fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors in one message"));
    }
    let mut space = [MaybeUninit::uninit(); CONTROL_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("control buffer too small"));
    }
    loop {
        match rustix::net::sendmsg(sock, &[IoSlice::new(data)], &mut control, SendFlags::NOSIGNAL) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Receives into `buf`, appending any descriptors that came with the bytes to `fds` (close-on-exec).
/// Returns 0 at end of stream.
pub(crate) fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut impl Extend<OwnedFd>) -> io::Result<usize> {
    recv_with_fds_flags(sock, buf, fds, RecvFlags::CMSG_CLOEXEC)
}

/// [`recv_with_fds`] that fails with `WouldBlock` instead of waiting.
pub(crate) fn try_recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    recv_with_fds_flags(sock, buf, fds, RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT)
}

/// Receives one message carrying at most one descriptor, without waiting (`WouldBlock` when there is none):
/// no allocation, and a small stack frame, for the fork server's loop.
pub(crate) fn try_recv_one_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1)) + std::mem::align_of::<u64>()];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let n = recvmsg_retrying(sock, buf, &mut control, RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT)?;
    let mut fd = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            // Any beyond the first are closed as they are dropped.
            for received in received {
                fd.get_or_insert(if received.as_raw_fd() > 2 { received } else { lift_received(received) });
            }
        }
    }
    Ok((n, fd))
}

/// `recvmsg` into `buf` and `control`, retried on `EINTR`: the number of bytes received.
fn recvmsg_retrying(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    control: &mut RecvAncillaryBuffer<'_>,
    flags: RecvFlags,
) -> io::Result<usize> {
    loop {
        match rustix::net::recvmsg(sock, &mut [IoSliceMut::new(buf)], control, flags) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return Ok(r.map_err(io::Error::from)?.bytes),
        }
    }
}

fn recv_with_fds_flags(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut impl Extend<OwnedFd>,
    flags: RecvFlags,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); CONTROL_SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let n = recvmsg_retrying(sock, buf, &mut control, flags)?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            // Received descriptors take the lowest free numbers, 0–2 in a program without standard streams.
            fds.extend(received.map(|fd| if fd.as_raw_fd() > 2 { fd } else { lift_received(fd) }));
        }
    }
    Ok(n)
}

/// Writes all of `data` to a socket. Never raises SIGPIPE: a closed peer is `BrokenPipe`.
pub(crate) fn write_all(sock: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::net::send(sock, data, SendFlags::NOSIGNAL) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes `head` then `body` to a socket, in one `sendmsg` when it takes them whole.
pub(crate) fn write_all_parts(sock: BorrowedFd<'_>, head: &[u8], body: &[u8]) -> io::Result<()> {
    let sent = loop {
        let iov = [IoSlice::new(head), IoSlice::new(body)];
        match rustix::net::sendmsg(sock, &iov, &mut SendAncillaryBuffer::default(), SendFlags::NOSIGNAL) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if sent < head.len() {
        write_all(sock, &head[sent..])?;
        write_all(sock, body)
    } else {
        write_all(sock, &body[sent - head.len()..])
    }
}

/// One `read(2)` (a pipe or a socket), waiting for data unless the descriptor is non-blocking. Returns 0 at
/// end of stream.
pub(crate) fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// How many bytes a socket may have in flight before a writer blocks (`SO_SNDBUF`).
pub(crate) fn send_buffer_size(sock: BorrowedFd<'_>) -> usize {
    rustix::net::sockopt::socket_send_buffer_size(sock).unwrap_or(0)
}

/// An anonymous memory file (`memfd_create`) holding `data`.
pub(crate) fn memfd_with(data: &[u8]) -> io::Result<OwnedFd> {
    let fd = above_stdio(rustix::fs::memfd_create("mp-outcome", rustix::fs::MemfdFlags::CLOEXEC)?)?;
    let mut rest = data;
    while !rest.is_empty() {
        match rustix::io::write(&fd, rest) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(fd)
}

/// The whole content of a memory file made by [`memfd_with`] (read from offset 0).
pub(crate) fn memfd_contents(fd: OwnedFd) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd);
    let mut data = vec![0u8; file.metadata()?.len() as usize];
    file.read_exact_at(&mut data, 0)?;
    Ok(data)
}

/// Reads exactly `buf.len()` bytes; end of stream first is `UnexpectedEof`.
pub(crate) fn read_exact(sock: BorrowedFd<'_>, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match read_some(sock, buf)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

/// Waits until at least one of `fds` is readable (or hung up), or `timeout` passes (`None`: no limit).
/// Returns one flag per descriptor; all false on timeout.
pub(crate) fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let deadline = timeout.map(|t| Instant::now().checked_add(t));
    let mut polls: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN)).collect();
    loop {
        let remaining = match deadline {
            None | Some(None) => None,
            Some(Some(deadline)) => Some(deadline.saturating_duration_since(Instant::now())),
        };
        let spec = remaining
            .map(|d| Timespec { tv_sec: d.as_secs().min(i64::MAX as u64) as i64, tv_nsec: d.subsec_nanos().into() });
        match rustix::event::poll(&mut polls, spec.as_ref()) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(polls.iter().map(|p| !p.revents().is_empty()).collect())
}

/// The running executable's GNU build id (the `NT_GNU_BUILD_ID` note the linker writes, 20 bytes for the
/// usual SHA-1 ids), read from the program headers mapped in memory: no file is read, so it is the same in
/// every copy of the binary and different in every other build. `None` when the program has no such note.
pub(crate) fn build_id() -> Option<&'static [u8]> {
    // SAFETY: getauxval only reads the auxiliary vector the kernel passed to this process.
    let (phdr, phnum) = unsafe { (libc::getauxval(libc::AT_PHDR), libc::getauxval(libc::AT_PHNUM)) };
    if phdr == 0 || phnum == 0 {
        return None;
    }
    // SAFETY: AT_PHDR is the address of the main program's program headers, mapped for the whole life of the
    // process, and AT_PHNUM their count.
    let headers = unsafe { std::slice::from_raw_parts(phdr as *const libc::Elf64_Phdr, phnum as usize) };
    // Segments' virtual addresses are relative to the load bias, which PT_PHDR (the headers' own entry) tells.
    let bias = headers.iter().find(|h| h.p_type == libc::PT_PHDR).map_or(0, |h| phdr.wrapping_sub(h.p_vaddr));
    for note in headers.iter().filter(|h| h.p_type == libc::PT_NOTE) {
        // SAFETY: a PT_NOTE segment lies inside a loaded (PT_LOAD, readable) segment of the program, mapped
        // for the life of the process; p_memsz is its size.
        let bytes =
            unsafe { std::slice::from_raw_parts(bias.wrapping_add(note.p_vaddr) as *const u8, note.p_memsz as usize) };
        if let Some(id) = find_gnu_build_id(bytes) {
            return Some(id);
        }
    }
    None
}

/// The descriptor of an `NT_GNU_BUILD_ID` note among the ELF notes in `notes` (each `namesz, descsz, type`,
/// then the name and the descriptor, both padded to 4 bytes).
pub(crate) fn find_gnu_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let pad = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let word = |at: usize| u32::from_ne_bytes(notes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let (namesz, descsz, kind) = (word(0), word(4), word(8) as u32);
        let desc_at = pad(namesz)?.checked_add(12)?;
        let end = desc_at.checked_add(pad(descsz)?)?;
        let desc = notes.get(desc_at..desc_at.checked_add(descsz)?)?;
        if kind == NT_GNU_BUILD_ID && notes.get(12..12 + namesz)? == b"GNU\0" {
            return Some(desc);
        }
        notes = notes.get(end..)?;
    }
    None
}

/// A 64-bit FNV-1a hash of the executable's contents, for a program without a build id: a different build
/// differs somewhere in its bytes. Reads the whole file once (callers cache the result).
pub(crate) fn exe_content_hash(path: &CStr) -> io::Result<u64> {
    use std::io::Read;
    let path: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(path.to_bytes());
    let mut file = std::fs::File::open(path)?;
    let mut h = FNV_OFFSET;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(h),
            Ok(n) => h = fnv1a(h, &buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// FNV-1a's 64-bit offset basis.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds `bytes` into the 64-bit FNV-1a hash `h`.
pub(crate) fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// When the process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`): with the pid, it
/// names one process for good, where a pid alone may be reused. `None` if there is no such (live) process.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command name (which may hold spaces): state is the first (field 3).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    // A zombie (Z) or a process being reaped (X) has ended.
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(22 - 4)?.parse().ok()
}

/// This process's start time (see [`process_start_time`]), read once per process (a forked child reads its
/// own); 0 if it cannot be read.
pub(crate) fn own_start_time() -> u64 {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    static FOR_PID: AtomicU32 = AtomicU32::new(0);
    static STARTED: AtomicU64 = AtomicU64::new(0);
    let me = pid();
    if FOR_PID.load(Ordering::Acquire) != me {
        STARTED.store(process_start_time(me).unwrap_or(0), Ordering::Relaxed);
        FOR_PID.store(me, Ordering::Release);
    }
    STARTED.load(Ordering::Relaxed)
}

/// How many threads this process has (field 20 of `/proc/self/stat`); 0 if it cannot be read.
pub(crate) fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat.rsplit_once(')')?.1.split_whitespace().nth(20 - 3)?.parse().ok())
        .unwrap_or(0)
}

/// Fills `buf` with random bytes from the kernel (`getrandom`).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Registers `f` to run when the process exits normally (`atexit`).
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function with C ABI that lives for the whole program.
    unsafe { libc::atexit(f) };
}

/// Closes a raw descriptor that no owner tracks (an inherited copy after `fork`).
pub(crate) fn close_raw(fd: RawFd) {
    // A raw system call, inlined: a fork server's child calls this on its way to the target (see `parent_pid`).
    // SAFETY: the caller hands over a descriptor nothing else in this process will use again.
    unsafe { rustix::io::close(fd) };
}

/// Removes an environment variable of ours before any user code (or thread) runs.
pub(crate) fn remove_env(key: &str) {
    // SAFETY: called only by `init()` in a re-executed program (a spawned child or the fork server), before
    // its target or server loop runs, so no thread of the program's own runs yet; the one other thread there
    // may be is a libtest main thread, blocked waiting for the test that called `init()`, not reading the
    // environment.
    unsafe { std::env::remove_var(key) };
}

/// Whether `sig`'s disposition is "ignore" (`SIG_IGN`).
pub(crate) fn signal_ignored(sig: i32) -> bool {
    // SAFETY: an all-zero sigaction is a valid out-value; a null new action only queries.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Sets `sig`'s disposition to ignore it (`ignore`) or to its default action.
pub(crate) fn set_signal_ignored(sig: i32, ignore: bool) {
    // SAFETY: SIG_IGN and SIG_DFL are always sound dispositions.
    unsafe { libc::signal(sig, if ignore { libc::SIG_IGN } else { libc::SIG_DFL }) };
}

/// The size of the kernel's signal set (`_NSIG / 8`), which `rt_sig*` system calls take.
const KERNEL_SIGSET_SIZE: usize = 8;

/// [`set_signal_ignored`] for a fork server's child: a raw `rt_sigaction`, so that the child's signal set-up
/// goes through `libc::syscall` alone, one small function, where libc's wrappers would each be a code page
/// first touched (a page fault) in every child.
#[inline(always)]
pub(crate) fn set_signal_ignored_raw(sig: i32, ignore: bool) {
    // The kernel's `struct sigaction`: the handler first (SIG_DFL 0, SIG_IGN 1), then no flags, no restorer
    // and an empty mask (all zero, whatever the architecture's field order after the handler).
    let action = [u64::from(ignore), 0, 0, 0];
    // SAFETY: rt_sigaction reads one kernel sigaction from the valid pointer and writes nothing (null old
    // action); SIG_IGN and SIG_DFL are always sound.
    unsafe {
        libc::syscall(libc::SYS_rt_sigaction, sig, action.as_ptr(), std::ptr::null_mut::<u64>(), KERNEL_SIGSET_SIZE)
    };
}

/// An epoll instance whose registrations carry a `u64` token: the fork server's one wait, for its request and
/// notify sockets and the pidfd of every child (a pidfd becomes readable when its process ends, whichever
/// thread would have received SIGCHLD).
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        let fd = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC)?;
        Ok(Epoll { fd: above_stdio(fd)? })
    }

    /// Watches `fd` for readability, reporting `token`.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        use rustix::event::epoll;
        epoll::add(&self.fd, fd, epoll::EventData::new_u64(token), epoll::EventFlags::IN).map_err(Into::into)
    }

    /// Turns the watch on `fd` on or off (it stays registered).
    pub(crate) fn watch(&self, fd: BorrowedFd<'_>, token: u64, on: bool) -> io::Result<()> {
        use rustix::event::epoll;
        let flags = if on { epoll::EventFlags::IN } else { epoll::EventFlags::empty() };
        epoll::modify(&self.fd, fd, epoll::EventData::new_u64(token), flags).map_err(Into::into)
    }

    /// Stops watching `fd` (before it is closed: a copy of it in a just-forked child would otherwise keep the
    /// registration alive).
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) {
        let _ = rustix::event::epoll::delete(&self.fd, fd);
    }

    /// Waits (`None`: without a time limit) for events; writes their tokens into `tokens`, returns how many.
    /// Allocates nothing.
    pub(crate) fn wait(&self, tokens: &mut [u64; 16], timeout: Option<Duration>) -> io::Result<usize> {
        let mut events = [const { MaybeUninit::<rustix::event::epoll::Event>::uninit() }; 16];
        let spec = timeout.map(|d| Timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos().into() });
        loop {
            match rustix::event::epoll::wait(&self.fd, &mut events, spec.as_ref()) {
                Ok((ready, _)) => {
                    for (token, event) in tokens.iter_mut().zip(ready.iter()) {
                        *token = event.data.u64();
                    }
                    return Ok(ready.len());
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The raw descriptor, for a forked child to close.
    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Sends `sig` to the process behind `pidfd` (immune to pid reuse). An ended process is not an error.
pub(crate) fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    let sig = rustix::process::Signal::from_named_raw(sig)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("unknown signal {sig}")))?;
    match rustix::process::pidfd_send_signal(pidfd, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Blocks until our child `pid` has ended, leaving it unreaped (`waitid(P_PID, WEXITED | WNOWAIT)`), so that
/// whoever reaps it next still gets its status. `ECHILD` when it was reaped already (or by the kernel).
pub(crate) fn wait_ended(pid: u32) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid out-value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer.
        match syscall!(unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) }) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether the kernel reaps this process's children itself (SIGCHLD ignored, or `SA_NOCLDWAIT`): then an
/// ended child's pid may be reused before we look, and only a pidfd names it safely.
pub(crate) fn children_autoreaped() -> bool {
    // SAFETY: an all-zero sigaction is a valid out-value; a null new action only queries.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) != 0 {
            return true; // cannot tell: assume the careful case
        }
        old.sa_sigaction == libc::SIG_IGN || old.sa_flags & libc::SA_NOCLDWAIT != 0
    }
}

/// Memory this process shares with the children it forks: an anonymous memory file mapped `MAP_SHARED`.
/// `fork` copies no page of a shared mapping, so neither side takes a copy-on-write fault writing to it.
/// The file itself can grow past the mapping ([`file_write_at`](Self::file_write_at)).
pub(crate) struct SharedPages {
    fd: OwnedFd,
    base: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access goes through atomics or the copy methods, whose
// callers order them (see `slots`).
unsafe impl Send for SharedPages {}
// SAFETY: as above.
unsafe impl Sync for SharedPages {}

impl SharedPages {
    /// A zero-filled mapping of `len` bytes (a multiple of the page size). Pages take memory when first touched.
    pub(crate) fn new(len: usize) -> io::Result<Self> {
        let fd = above_stdio(rustix::fs::memfd_create("mp-outcomes", rustix::fs::MemfdFlags::CLOEXEC)?)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        Self::map(fd, len)
    }

    /// Maps the first `len` bytes of a memory file made by [`new`](Self::new) in another process.
    pub(crate) fn from_fd(fd: OwnedFd, len: usize) -> io::Result<Self> {
        if rustix::fs::fstat(&fd)?.st_size < len as i64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "shared pages shorter than expected"));
        }
        Self::map(fd, len)
    }

    /// The memory file, to hand to another process.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of a file we own, at an address of the kernel's choosing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedPages { fd, base, len })
    }

    fn check(&self, off: usize, len: usize, align: usize) {
        assert!(
            off.is_multiple_of(align) && off.checked_add(len).is_some_and(|end| end <= self.len),
            "bad offset {off}"
        );
    }

    /// The `u32` at byte `off` (4-aligned), shared with our forked children.
    pub(crate) fn u32_at(&self, off: usize) -> &std::sync::atomic::AtomicU32 {
        self.check(off, 4, 4);
        // SAFETY: in bounds and aligned (checked); the mapping lives as long as `self` and is only ever
        // accessed atomically at this offset.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.base.as_ptr().add(off).cast()) }
    }

    /// The `u64` at byte `off` (8-aligned).
    pub(crate) fn u64_at(&self, off: usize) -> &std::sync::atomic::AtomicU64 {
        self.check(off, 8, 8);
        // SAFETY: as in `u32_at`.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.base.as_ptr().add(off).cast()) }
    }

    /// Copies `parts`, one after the other, to byte `off`. The caller makes sure nobody reads the range at the
    /// same time (the reader waits for a flag stored after this, or for the writer's exit).
    pub(crate) fn write_at(&self, off: usize, parts: &[&[u8]]) {
        let total = parts.iter().map(|p| p.len()).sum();
        self.check(off, total, 1);
        let mut at = off;
        for part in parts {
            // SAFETY: in bounds (checked above); no concurrent access to the range, by the caller's protocol.
            let to = unsafe { self.base.as_ptr().add(at) };
            if part.len() <= 64 {
                // Byte by byte: a forked child writing its outcome spares itself the fault that maps the code
                // page of the C library's `memcpy`.
                for (i, byte) in part.iter().enumerate() {
                    // SAFETY: `to + i` is inside the checked range.
                    unsafe { to.add(i).write_volatile(*byte) };
                }
            } else {
                // SAFETY: as above.
                unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), to, part.len()) };
            }
            at += part.len();
        }
    }

    /// Appends a copy of `len` bytes at `off` to `out`, under the same rule as [`write_at`](Self::write_at).
    pub(crate) fn read_at(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        self.check(off, len, 1);
        // SAFETY: in bounds (checked above); no concurrent writer, by the caller's protocol.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off), len) });
    }

    /// Writes `parts` to the file at `off`, which may lie beyond the mapping (the file grows).
    pub(crate) fn file_write_at(&self, mut off: u64, parts: &[&[u8]]) -> io::Result<()> {
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                match rustix::io::pwrite(&self.fd, rest, off) {
                    Ok(n) => {
                        rest = &rest[n..];
                        off += n as u64;
                    }
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Appends `len` bytes of the file at `off` to `out`.
    pub(crate) fn file_read_at(&self, off: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let start = out.len();
        out.resize(start + len, 0);
        let mut got = 0;
        while got < len {
            match rustix::io::pread(&self.fd, &mut out[start + got..], off + got as u64) {
                Ok(0) => {
                    out.truncate(start);
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(n) => got += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    out.truncate(start);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Gives the memory of `len` bytes of the file at `off` back (a hole reads as zeros).
    pub(crate) fn punch(&self, off: u64, len: u64) {
        let mode = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        let _ = rustix::fs::fallocate(&self.fd, mode, off, len);
    }
}

impl std::fmt::Debug for SharedPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPages").field("fd", &self.fd).field("len", &self.len).finish_non_exhaustive()
    }
}

impl Drop for SharedPages {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this length and nothing borrows it past `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The read end of a pipe whose write end is closed: always readable (end of file).
pub(crate) fn closed_pipe() -> io::Result<OwnedFd> {
    let (read, _write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    above_stdio(read)
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    pair_above_stdio(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Writes all of `data` with `write(2)` (pipes and sockets alike; SIGPIPE is ignored in Rust programs).
pub(crate) fn write_fd_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Waits while `word` (in memory shared between processes) holds `expected`, at most `timeout`.
pub(crate) fn futex_wait_shared(word: &std::sync::atomic::AtomicU32, expected: u32, timeout: Duration) {
    let spec =
        Timespec { tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64, tv_nsec: timeout.subsec_nanos().into() };
    // Any outcome will do: the caller looks at the word again.
    let _ = rustix::thread::futex::wait(word, rustix::thread::futex::Flags::empty(), expected, Some(&spec));
}

/// Wakes every process waiting on `word` (in shared memory).
pub(crate) fn futex_wake_shared(word: &std::sync::atomic::AtomicU32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), i32::MAX as u32);
}
