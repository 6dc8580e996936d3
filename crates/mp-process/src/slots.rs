//! Outcome slots: how forked and fork-server children hand their outcome to their parent.
//!
//! A process that starts children keeps one memory file, mapped shared: a header page, then one page per
//! slot. A start reserves a free slot; the child writes its outcome frame there as the last thing before
//! `_exit` (a frame too large for the page goes into the file past the slots, at an offset the child reserves
//! from the header's cursor), and the parent reads it once the child has ended. Next to a socket per child,
//! this costs no descriptor and no system call, and since `fork` copies no page of a shared mapping, neither
//! side takes a copy-on-write fault for it. Forked children inherit the mapping; the fork server is handed
//! the memory file when it starts, so its children write into their parent's slots too (a fork-server child
//! also stores its pid in the slot as soon as it takes the request). The children that a child forks in turn
//! reserve slots in the same file: reservations are atomic. When every slot is taken (or the memory file
//! cannot be made), a start falls back to a socket.
//!
//! Ordering: the child stores the slot's state last (release); the parent reads it only after the child has
//! ended (reaped, or told so by the child's last message), so the child's writes are complete. A child killed
//! halfway leaves the state `RESERVED` (no outcome) or, for a large frame, a recorded range that the parent
//! frees all the same.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::state::ProcessLocal;
use crate::sys::{self, SharedPages};
use crate::wire::outcome::Outcome;

const PAGE: usize = 4096;
const SLOTS: usize = 256;
/// The size of the mapping (the memory file grows past it for large frames).
const MAPPED: usize = PAGE * (1 + SLOTS);
/// Where large frames go: the file past the header page and the slots.
const SPILL_START: u64 = (PAGE * (1 + SLOTS)) as u64;

// A slot's page: state u32 at 0, inline frame length u32 at 4, spilled frame offset u64 at 8, spilled range
// length u64 at 16, the child's pid u32 at 24 (fork-server children), the inline frame from `DATA`.
const LEN: usize = 4;
const SPILL_AT: usize = 8;
const SPILL_LEN: usize = 16;
const PID: usize = 24;
const DATA: usize = 32;
/// The largest frame kept in the slot's own page.
const CAPACITY: usize = PAGE - DATA;
/// The header page: the spill cursor (bytes reserved so far past `SPILL_START`), a u64 at 0.
const CURSOR: usize = 0;

const FREE: u32 = 0;
/// Taken by a start; its child has not written an outcome (yet, or ever).
const RESERVED: u32 = 1;
const INLINE: u32 = 2;
const SPILLED: u32 = 3;
/// Given up while its child may still run: never reused.
const ABANDONED: u32 = 4;

/// This process's slots (a forked child keeps its parent's; the fork server adopts its program's).
static ARENA: ProcessLocal<Option<SharedPages>> = ProcessLocal::new(crate::state::slot::ARENA, || {
    SharedPages::new(MAPPED).inspect_err(|e| log::debug!("no outcome slots: {e}")).ok()
});

/// The memory file behind this process's slots (made now if need be), for the fork server.
pub(crate) fn memory_file() -> Option<BorrowedFd<'static>> {
    ARENA.get().as_ref().map(SharedPages::fd)
}

/// In the fork server: use its program's slots, whose memory file it was handed.
pub(crate) fn adopt(fd: OwnedFd) {
    match SharedPages::from_fd(fd, MAPPED) {
        Ok(pages) => ARENA.set(Box::new(Some(pages))),
        Err(e) => log::debug!("fork server: cannot map its program's outcome slots: {e}"),
    }
}

/// Copies `bytes` into the memory file past the slots, for another process to read with [`take_spilled`];
/// `(offset, length)`.
pub(crate) fn spill(bytes: &[u8]) -> io::Result<(u64, u64)> {
    let pages = ARENA.get().as_ref().ok_or_else(|| io::Error::other("no outcome slots"))?;
    let reserved = bytes.len().div_ceil(PAGE) * PAGE;
    let at = SPILL_START + pages.u64_at(CURSOR).fetch_add(reserved as u64, Relaxed);
    pages.file_write_at(at, &[bytes])?;
    Ok((at, bytes.len() as u64))
}

/// Reads what [`spill`] stored and frees it.
pub(crate) fn take_spilled(at: u64, len: u64) -> io::Result<Vec<u8>> {
    let pages = ARENA.get().as_ref().ok_or_else(|| io::Error::other("no outcome slots"))?;
    if at < SPILL_START || len > isize::MAX as u64 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad spilled range"));
    }
    let mut out = Vec::new();
    let read = pages.file_read_at(at, len as usize, &mut out);
    pages.punch(at, len.div_ceil(PAGE as u64) * PAGE as u64);
    read.map(|()| out)
}

/// A reserved slot: owned by the parent's handle on one child, which the child writes into.
pub(crate) struct Slot {
    pages: &'static SharedPages,
    index: usize,
    /// The process that reserved it: only it reads and frees the slot (a forked child has a copy of its
    /// parent's handles, which must not touch the parent's slots).
    owner: u32,
    /// The child has been reaped and the slot read and freed.
    done: bool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("index", &self.index).field("owner", &self.owner).finish_non_exhaustive()
    }
}

impl Slot {
    /// Reserves a free slot for a child of process `owner` (this process); `None` when all are taken or there
    /// are no slots.
    pub(crate) fn reserve(owner: u32) -> Option<Slot> {
        let pages = ARENA.get().as_ref()?;
        (0..SLOTS).find_map(|index| {
            let state = pages.u32_at(base(index));
            (state.load(Relaxed) == FREE && state.compare_exchange(FREE, RESERVED, AcqRel, Relaxed).is_ok()).then(
                || {
                    pages.u64_at(base(index) + SPILL_LEN).store(0, Relaxed);
                    pages.u32_at(base(index) + PID).store(0, Relaxed);
                    Slot { pages, index, owner, done: false }
                },
            )
        })
    }

    /// What the child needs to write into this slot.
    pub(crate) fn writer(&self) -> Writer {
        Writer { pages: self.pages, index: self.index }
    }

    /// Frees a slot that no child ever got.
    pub(crate) fn release(mut self) {
        self.done = true;
        self.pages.u32_at(base(self.index)).store(FREE, Release);
    }

    /// Whether the slot was already read and freed.
    pub(crate) fn is_taken(&self) -> bool {
        self.done
    }

    /// The slot's number, for a fork-server child.
    pub(crate) fn index(&self) -> u32 {
        self.index as u32
    }

    /// In the parent, once the child has ended: appends the frame it wrote to `out` and says whether there
    /// was one. Frees the slot. `reaped`: this process has just reaped the child, so it owns the slot (without
    /// that, a forked child holding a copy of its parent's handle might be asking).
    pub(crate) fn take(&mut self, out: &mut Vec<u8>, reaped: bool) -> bool {
        if self.done || !(reaped || self.owner == sys::pid()) {
            return false;
        }
        self.done = true;
        let base = base(self.index);
        let found = match self.pages.u32_at(base).load(Acquire) {
            INLINE => {
                let len = self.pages.u32_at(base + LEN).load(Relaxed) as usize;
                len <= CAPACITY && {
                    self.pages.read_at(base + DATA, len, out);
                    true
                }
            }
            SPILLED => {
                let at = self.pages.u64_at(base + SPILL_AT).load(Relaxed);
                // The frame's own length prefix says how much of the reserved range it uses.
                let mut prefix = Vec::with_capacity(8);
                self.pages.file_read_at(at, 8, &mut prefix).is_ok()
                    && prefix.as_slice().try_into().is_ok_and(|bytes: [u8; 8]| {
                        let body = u64::from_le_bytes(bytes) as usize;
                        8usize.checked_add(body).is_some_and(|len| self.pages.file_read_at(at, len, out).is_ok())
                    })
            }
            _ => false,
        };
        let spilled = self.pages.u64_at(base + SPILL_LEN).load(Acquire);
        if spilled > 0 {
            self.pages.punch(self.pages.u64_at(base + SPILL_AT).load(Relaxed), spilled);
        }
        self.pages.u32_at(base).store(FREE, Release);
        found
    }
}

/// A forked child's access to its slot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Writer {
    pages: &'static SharedPages,
    index: usize,
}

impl Writer {
    /// In a fork-server child: the writer for slot `index` of its program (the server's adopted slots).
    pub(crate) fn for_index(index: u32) -> Option<Writer> {
        let pages = ARENA.get().as_ref()?;
        ((index as usize) < SLOTS).then_some(Writer { pages, index: index as usize })
    }

    /// In the parent: the pid a fork-server child published, waiting at most `timeout` for it.
    pub(crate) fn pid(&self, timeout: std::time::Duration) -> Option<u32> {
        let word = self.pages.u32_at(base(self.index) + PID);
        match word.load(Acquire) {
            0 => {
                sys::futex_wait_shared(word, 0, timeout);
                Some(word.load(Acquire)).filter(|pid| *pid != 0)
            }
            pid => Some(pid),
        }
    }

    /// In a fork-server child: publishes its pid to the parent, which may be waiting for it.
    pub(crate) fn set_pid(&self, pid: u32) {
        let word = self.pages.u32_at(base(self.index) + PID);
        word.store(pid, Release);
        sys::futex_wake_shared(word);
    }

    /// Records the outcome. Never blocks on the parent.
    // Inlined into the forked child's path: each code page it touches first is a page fault.
    #[inline(always)]
    pub(crate) fn write(&self, outcome: &Outcome) -> io::Result<()> {
        let base = base(self.index);
        outcome.with_frame(|head, body| {
            let len = head.len() + body.len();
            if len <= CAPACITY {
                self.pages.write_at(base + DATA, &[&head, body]);
                self.pages.u32_at(base + LEN).store(len as u32, Relaxed);
                self.pages.u32_at(base).store(INLINE, Release);
                return Ok(());
            }
            let reserved = len.div_ceil(PAGE) * PAGE;
            let at = SPILL_START + self.pages.u64_at(CURSOR).fetch_add(reserved as u64, Relaxed);
            // Recorded before the data, so that the parent frees the range even if this child dies halfway.
            self.pages.u64_at(base + SPILL_AT).store(at, Relaxed);
            self.pages.u64_at(base + SPILL_LEN).store(reserved as u64, Release);
            self.pages.file_write_at(at, &[&head, body])?;
            self.pages.u32_at(base).store(SPILLED, Release);
            Ok(())
        })
    }
}

/// Where a child sends its outcome.
#[derive(Debug)]
pub(crate) enum Report {
    /// Over its socket (see [`send_outcome`](crate::wire::outcome::send_outcome)), whose identity
    /// ([`sys::fd_identity`]) is checked first: a target may have closed it and opened a file of its own
    /// under the same number.
    Socket { sock: OwnedFd, identity: u64 },
    /// Into its slot (a forked or spawned child: its parent reaps it, then reads the slot). The slot is
    /// memory, not a descriptor: a target that closes every descriptor cannot lose it.
    Slot(Writer),
    /// Into its slot, then a byte on `done` (a fork-server child, whose parent cannot reap it), written only
    /// while `done` is still the pipe of that identity (else the parent learns of the end from the pipe's
    /// end of file at exit, a moment later).
    Served { writer: Writer, done: OwnedFd, identity: u64 },
}

/// The byte a fork-server child writes once its outcome is in its slot.
pub(crate) const DONE: u8 = b'D';

impl Report {
    /// Sends the outcome; never blocks on the parent.
    // Inlined into the forked child's path: each code page it touches first is a page fault.
    #[inline(always)]
    pub(crate) fn send(&self, outcome: &Outcome) -> io::Result<()> {
        match self {
            Report::Socket { sock, identity } => {
                if sys::fd_identity(sock.as_fd()) != *identity {
                    return Err(io::Error::other("the target closed the descriptor of its outcome"));
                }
                crate::wire::outcome::send_outcome(sock.as_fd(), outcome)
            }
            Report::Slot(writer) => writer.write(outcome),
            Report::Served { writer, done, identity } => {
                writer.write(outcome)?;
                if sys::fd_identity(done.as_fd()) != *identity {
                    return Ok(());
                }
                // From the stack: a constant would be read from a page the child has not touched yet.
                sys::write_fd_all(done.as_fd(), &std::hint::black_box([DONE]))
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Dropped before its child was reaped (the handle went away while the child ran, or in the child
        // itself, which never drops it): the child may still write, so the slot is never reused.
        if !self.done && self.owner == sys::pid() {
            self.pages.u32_at(base(self.index)).store(ABANDONED, Release);
        }
    }
}

fn base(index: usize) -> usize {
    PAGE * (1 + index)
}
