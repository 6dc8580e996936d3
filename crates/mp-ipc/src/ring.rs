//! The shared state behind a queue: one anonymous memory file (memfd) holding a header, a producer and a
//! consumer robust mutex, the counters, and a byte ring that items stream through.
//!
//! Between the producer that holds the producer mutex and the consumer that holds the consumer mutex the
//! ring is single-producer single-consumer: the producer writes chunks past the tail and publishes them with
//! one release store; the consumer reads them past the head and frees them with one store. Each side's
//! position and item count share one 64-bit word, so no crash can leave them disagreeing.
//!
//! A chunk is an 8-byte header (`u32` payload length, `u32` flags) and its payload, padded to 8 bytes. An
//! item up to half the ring is one chunk (`FIRST | LAST`), written only once there is room for it whole; a
//! `PAD` chunk fills the end of the ring when the next chunk does not fit before it. A larger item is a
//! `FIRST` chunk starting with the item's total length, middle chunks, and a `LAST` chunk: items up to the
//! ring's size are written once there is room for all of them, bigger ones stream through as the consumer
//! frees space.
//!
//! Spill: a queue made without a byte bound (`Queue::new()`) never makes a producer wait for room. An item
//! that does not fit in the ring now goes to the spill instead: records (`u64` length, payload, padded to 8)
//! in the same memory file past the ring, which grows for them, mapped a 1 MiB window at a time, published by
//! moving the spill tail (one word: `count << 40 | offset`, on a cache line of its own that nothing writes
//! until something spills). A window the consumers have left is unmapped and its memory given back
//! (`fallocate(PUNCH_HOLE)`). While the spill holds
//! anything, every put goes there, so ring items are always older than spill items and a consumer takes from
//! the ring first: FIFO holds. The spill lives and dies with the memory file, so nothing can leak.
//!
//! Crashes: a producer that dies in the middle of an item leaves a mark; the next producer to take the
//! mutex (or a consumer waiting for the rest of that item, which checks the producer mutex every 50 ms)
//! writes an `ABORT` chunk, and the consumer drops the partial item. A consumer that dies in the middle of
//! an item leaves a mark; the next consumer skips the rest of that item. A consumer that dies before it
//! freed a chunk has not taken it: the next consumer gets it. Waiter flags are reset by whoever recovers
//! a mutex, since only mutex holders wait.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mp_sync::raw::{Deadline, Locked, MUTEX_SIZE, RobustMutex, futex_wait, futex_wake};

use crate::sys;

const MAGIC: [u8; 8] = *b"mpqueue1";

// The layout. Words written by producers and by consumers sit on separate cache lines.
const H_MAGIC: usize = 0;
const H_CAPACITY: usize = 8;
const H_MAXSIZE: usize = 16;
const H_JOINABLE: usize = 24;
const PRODUCER_MUTEX: usize = 64;
const CONSUMER_MUTEX: usize = 128;
/// Producer side: `put count << 40 | tail position`.
const TAIL: usize = 192;
/// Producer side: 1 while an item of several chunks is being written.
const PRODUCER_MID: usize = 200;
/// Producer side: bumped to wake a producer waiting for room; the waiting flag.
const SPACE_SEQ: usize = 256;
const SPACE_WAITING: usize = 260;
/// Consumer side: `get count << 40 | head position`.
const HEAD: usize = 320;
/// Consumer side: 1 while an item of several chunks is being read.
const CONSUMER_MID: usize = 328;
/// Consumer side: bumped to wake a consumer waiting for data; the waiting flag.
const DATA_SEQ: usize = 384;
const DATA_WAITING: usize = 388;
/// Items put and not yet marked done (`JoinableQueue`).
const UNFINISHED: usize = 448;
/// Bumped by the producer each time the tail crosses a multiple of 2^39 bytes: a position cached under an
/// unchanged epoch is less than a wrap (2^40) behind, so wrapped arithmetic on it stays exact.
const EPOCH: usize = 512;
const EPOCH_SHIFT: u32 = 39;
/// Producer side, alone on its line: spilled items put and the spill's end, `count << 40 | offset`.
const SPILL_TAIL: usize = 576;
/// Consumer side, alone on its line: spilled items taken and the next record's offset.
const SPILL_HEAD: usize = 640;
/// 1 when items that do not fit in the ring spill (the queue has no byte bound).
const H_SPILL: usize = 28;
/// The spill is mapped this much at a time (a multiple of the page size).
const SPILL_WINDOW: u64 = 1 << 20;
/// A spill record's length word meaning "the next record starts at the next window".
const SKIP: u64 = u64::MAX;
/// Where the ring starts.
const RING: usize = 4096;

const _: () = assert!(MUTEX_SIZE <= 64, "a mutex must fit its 64-byte slot");

const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const COUNT_MASK: u64 = (1 << (64 - POS_BITS)) - 1;

const HEADER: u64 = 8;
/// Set in every header: a zero header word means "nothing published here yet".
const VALID: u32 = 1 << 31;
const FIRST: u32 = 1;
const LAST: u32 = 2;
const PAD: u32 = 4;
const ABORT: u32 = 8;

/// The smallest ring (bytes).
pub(crate) const MIN_CAPACITY: usize = 4096;
/// The largest ring: positions are kept modulo 2^40.
pub(crate) const MAX_CAPACITY: usize = 1 << 36;

/// How long a waiter spins on the shared words before it sleeps: a wake-up across CPUs costs ~20 µs.
const SPIN: Duration = Duration::from_micros(30);
/// The longest pause between two looks while spinning (in `spin_loop` hints).
const MAX_PAUSE: u32 = 64;
/// How often a consumer waiting for the rest of an item checks that its producer is alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(50);

fn pack(count: u64, pos: u64) -> u64 {
    (count & COUNT_MASK) << POS_BITS | (pos & POS_MASK)
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> POS_BITS, word & POS_MASK)
}

fn pad8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Where a ring of `cap` bytes' spill starts in its memory file.
fn spill_base(cap: u64) -> u64 {
    (RING as u64 + cap).next_multiple_of(4096)
}

fn too_large() -> Fail {
    Fail::Io(io::Error::new(io::ErrorKind::OutOfMemory, "queue item too large"))
}

/// Why a ring operation gave up.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The deadline passed (full for a put, empty for a get).
    Timeout,
    /// The operating system refused (a mutex error).
    Io(io::Error),
}

/// The mapped state of one queue.
#[derive(Debug)]
pub(crate) struct Ring {
    map: memmap2::MmapRaw,
    fd: OwnedFd,
    cap: u64,
    maxsize: u64,
    joinable: bool,
    producer: RobustMutex,
    consumer: RobustMutex,
    /// Producers' last look at the head, under an epoch: a lower bound (positions only grow), used only by
    /// producer mutex holders; it spares a cache-line transfer between CPUs on most puts.
    seen_head: Cached,
    /// Whether items that do not fit spill past the ring.
    spill: bool,
    /// Where the spill starts in the memory file (past the ring, page-aligned).
    spill_base: u64,
    /// The spill tail word when producers last saw the spill empty: while the tail is unchanged, it still is,
    /// without a look at the consumers' line.
    seen_empty_spill: AtomicU64,
    /// How long this process has seen the memory file grow (only producers grow it): a lower bound.
    spill_grown: AtomicU64,
    /// The spill window this process's producers write in, and its consumers read in.
    producer_window: Mutex<Option<Window>>,
    consumer_window: Mutex<Option<Window>>,
}

/// A mapping of the spill from offset `start`.
#[derive(Debug)]
struct Window {
    start: u64,
    map: memmap2::MmapRaw,
}

/// A position seen under an epoch.
#[derive(Debug, Default)]
struct Cached {
    epoch: AtomicU64,
    pos: AtomicU64,
}

// SAFETY: the mutexes are process-shared pthread mutexes (thread-safe by design); everything else in the
// mapping is reached through atomics or under those mutexes.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

/// Holds a ring mutex; unlocks on drop (also when a deserializer panics).
struct Held<'a>(&'a RobustMutex);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

impl Ring {
    /// A fresh ring of `capacity` bytes (a multiple of 8, within [`MIN_CAPACITY`]..=[`MAX_CAPACITY`]).
    pub(crate) fn create(capacity: usize, maxsize: usize, joinable: bool, spill: bool) -> io::Result<Self> {
        let (fd, map) = sys::anonymous_shared(RING + capacity)?;
        let base = map.as_mut_ptr();
        // SAFETY: the mapping is RING + capacity bytes, fresh and zeroed, and nobody else has it yet; the
        // header lies in its first 64 bytes, each field aligned.
        let (producer, consumer) = unsafe {
            base.add(H_MAGIC).cast::<[u8; 8]>().write(MAGIC);
            base.add(H_CAPACITY).cast::<u64>().write(capacity as u64);
            base.add(H_MAXSIZE).cast::<u64>().write(maxsize as u64);
            base.add(H_JOINABLE).cast::<u32>().write(u32::from(joinable));
            base.add(H_SPILL).cast::<u32>().write(u32::from(spill));
            (RobustMutex::init(base.add(PRODUCER_MUTEX), false)?, RobustMutex::init(base.add(CONSUMER_MUTEX), false)?)
        };
        Ok(Ring {
            map,
            fd,
            cap: capacity as u64,
            maxsize: maxsize as u64,
            joinable,
            producer,
            consumer,
            seen_head: Cached::default(),
            spill,
            spill_base: spill_base(capacity as u64),
            seen_empty_spill: AtomicU64::new(0),
            spill_grown: AtomicU64::new(0),
            producer_window: Mutex::new(None),
            consumer_window: Mutex::new(None),
        })
    }

    /// Maps the ring behind `fd` (received from another process), checking that it is one.
    pub(crate) fn attach(fd: OwnedFd) -> io::Result<Self> {
        let invalid = || io::Error::new(io::ErrorKind::InvalidData, "not an mp queue");
        let size = sys::file_size(&fd)?;
        if size < (RING + MIN_CAPACITY) as u64 {
            return Err(invalid());
        }
        // The header first, to learn the ring's size (the file is larger once something spilled).
        let header = sys::map_shared(&fd, RING)?;
        let base = header.as_mut_ptr();
        // SAFETY: the mapping holds RING bytes; the header fields are aligned and were written before the
        // file left its creator.
        let (magic, cap, maxsize, joinable, spill) = unsafe {
            (
                base.add(H_MAGIC).cast::<[u8; 8]>().read(),
                base.add(H_CAPACITY).cast::<u64>().read(),
                base.add(H_MAXSIZE).cast::<u64>().read(),
                base.add(H_JOINABLE).cast::<u32>().read(),
                base.add(H_SPILL).cast::<u32>().read(),
            )
        };
        drop(header);
        let ring_end = (RING as u64).checked_add(cap).ok_or_else(invalid)?;
        if magic != MAGIC
            || !(MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&cap)
            || cap % 8 != 0
            || size < ring_end
            || (spill == 0 && size != ring_end)
        {
            return Err(invalid());
        }
        let map = sys::map_shared(&fd, ring_end as usize)?;
        let base = map.as_mut_ptr();
        // SAFETY: the creator initialised both mutexes (the magic says this is a queue it made); they live
        // as long as the mapping, which the ring owns.
        let (producer, consumer) =
            unsafe { (RobustMutex::attach(base.add(PRODUCER_MUTEX)), RobustMutex::attach(base.add(CONSUMER_MUTEX))) };
        Ok(Ring {
            map,
            fd,
            cap,
            maxsize,
            joinable: joinable != 0,
            producer,
            consumer,
            seen_head: Cached::default(),
            spill: spill != 0,
            spill_base: spill_base(cap),
            seen_empty_spill: AtomicU64::new(0),
            spill_grown: AtomicU64::new(0),
            producer_window: Mutex::new(None),
            consumer_window: Mutex::new(None),
        })
    }

    /// The memory file, to pass to another process.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap as usize
    }

    pub(crate) fn maxsize(&self) -> usize {
        self.maxsize as usize
    }

    pub(crate) fn joinable(&self) -> bool {
        self.joinable
    }

    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `offset` is one of the 8-aligned header words above, inside the mapping, which lives as
        // long as `self`; other processes touch it only atomically too.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast()) }
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: as in `u64_at`, for the 4-aligned words.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset).cast()) }
    }

    /// Items put and not yet taken (in the ring and in the spill).
    pub(crate) fn qsize(&self) -> usize {
        let in_ring = |head: usize, tail: usize| {
            let (got, _) = unpack(self.u64_at(head).load(Ordering::Acquire));
            let (put, _) = unpack(self.u64_at(tail).load(Ordering::Acquire));
            // A consumer may count an item a moment before its producer does: never below zero.
            let n = put.wrapping_sub(got) & COUNT_MASK;
            if n > COUNT_MASK / 2 { 0 } else { n as usize }
        };
        in_ring(HEAD, TAIL) + if self.spill { in_ring(SPILL_HEAD, SPILL_TAIL) } else { 0 }
    }

    /// Whether the queue spills (it has no byte bound).
    pub(crate) fn spills(&self) -> bool {
        self.spill
    }

    /// Whether the spill holds records (counted: records put against records taken), judged by a producer
    /// mutex holder: the consumers' line is read only when the spill tail moved since it was last seen empty.
    fn spill_pending(&self) -> bool {
        let tail = self.u64_at(SPILL_TAIL).load(Ordering::Relaxed);
        if self.seen_empty_spill.load(Ordering::Relaxed) == tail {
            return false;
        }
        let (taken, _) = unpack(self.u64_at(SPILL_HEAD).load(Ordering::SeqCst));
        let empty = taken == unpack(tail).0;
        if empty {
            self.seen_empty_spill.store(tail, Ordering::Relaxed);
        }
        !empty
    }

    /// Whether the spill holds a record for a consumer (consumer side).
    fn spill_has_data(&self) -> bool {
        self.spill && {
            let (taken, _) = unpack(self.u64_at(SPILL_HEAD).load(Ordering::Relaxed));
            let (put, _) = unpack(self.u64_at(SPILL_TAIL).load(Ordering::Acquire));
            taken != put
        }
    }

    /// Whether `item` can go in the ring without waiting (a producer mutex holder asks; consumers only free
    /// more).
    fn fits_now(&self, item: &[u8]) -> bool {
        let len = item.len() as u64;
        if HEADER + pad8(len) <= self.cap / 2 {
            let need = HEADER + pad8(len);
            let contiguous = self.contiguous_at_tail();
            if contiguous < need { self.has_room(contiguous + need + HEADER) } else { self.has_room(need + HEADER) }
        } else {
            let whole = len + 8 + 5 * HEADER + 8;
            whole <= self.cap && self.has_room(whole)
        }
    }

    /// The address of spill offset `from`, in a mapping (cached in `window`) that covers `from..to`: a
    /// [`SPILL_WINDOW`] at a time, more for a record larger than that. Only one mutex's holder uses a cache.
    fn spill_at(&self, window: &Mutex<Option<Window>>, from: u64, to: u64) -> Result<*mut u8, Fail> {
        let mut window = window.lock().unwrap_or_else(|p| p.into_inner());
        let covered = window.as_ref().is_some_and(|w| w.start <= from && to <= w.start + w.map.len() as u64);
        if !covered {
            let start = from / SPILL_WINDOW * SPILL_WINDOW;
            let end = (start + SPILL_WINDOW).max(to.next_multiple_of(SPILL_WINDOW));
            let len = usize::try_from(end - start).map_err(|_| too_large())?;
            let map = sys::map_range(&self.fd, self.spill_base + start, len).map_err(Fail::Io)?;
            *window = Some(Window { start, map });
        }
        let w = window.as_ref().expect("mapped above");
        // SAFETY: `from` lies inside the mapping (checked or just made to cover `from..to`).
        Ok(unsafe { w.map.as_mut_ptr().add((from - w.start) as usize) })
    }

    /// Appends `item` to the spill and publishes it (we hold the producer mutex). Records do not straddle a
    /// window: one that does not fit in the rest of the current window starts the next, behind a skip mark.
    fn put_spill(&self, item: &[u8]) -> Result<(), Fail> {
        let (count, mut tail) = unpack(self.u64_at(SPILL_TAIL).load(Ordering::Relaxed));
        let record = 8 + pad8(item.len() as u64);
        let window_end = (tail / SPILL_WINDOW + 1) * SPILL_WINDOW;
        let skip = tail % SPILL_WINDOW != 0 && tail + record > window_end;
        let start = if skip { window_end } else { tail };
        let end = start.checked_add(record).filter(|end| *end <= POS_MASK).ok_or_else(|| {
            Fail::Io(io::Error::new(io::ErrorKind::OutOfMemory, "the queue's spill has carried 1 TiB; it is worn out"))
        })?;
        let size = self.spill_base + end.next_multiple_of(SPILL_WINDOW);
        if size > self.spill_grown.load(Ordering::Relaxed) {
            sys::grow_to(&self.fd, size).map_err(Fail::Io)?;
            self.spill_grown.store(size, Ordering::Relaxed);
        }
        if skip {
            let at = self.spill_at(&self.producer_window, tail, tail + 8)?;
            // SAFETY: 8 bytes at an 8-aligned offset inside the mapping, past the tail: no consumer reads them
            // before the tail moves, and only the producer mutex holder (us) writes there.
            unsafe { at.cast::<u64>().write(SKIP) };
        }
        tail = start;
        let at = self.spill_at(&self.producer_window, tail, end)?;
        // SAFETY: `record` bytes from `at` lie inside the mapping (it covers `tail..end`), past the tail, as
        // above.
        unsafe {
            at.cast::<u64>().write(item.len() as u64);
            std::ptr::copy_nonoverlapping(item.as_ptr(), at.add(8), item.len());
        }
        self.count_unfinished();
        self.u64_at(SPILL_TAIL).store(pack(count + 1, end), Ordering::SeqCst);
        self.wake(DATA_SEQ, DATA_WAITING);
        Ok(())
    }

    /// Takes the spill's first record (we hold the consumer mutex and saw one there) and hands its bytes to
    /// `f`; windows left behind are unmapped and their memory given back.
    fn get_spill<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, Fail> {
        let (count, first) = unpack(self.u64_at(SPILL_HEAD).load(Ordering::Relaxed));
        let tail = self.u64_at(SPILL_TAIL).load(Ordering::Acquire);
        let mut head = first;
        // SAFETY: 8 bytes at an 8-aligned offset inside the mapping, published (before the tail).
        let mut len = unsafe { self.spill_at(&self.consumer_window, head, head + 8)?.cast::<u64>().read() };
        if len == SKIP {
            head = (head / SPILL_WINDOW + 1) * SPILL_WINDOW;
            // SAFETY: as above: a skip mark is followed by a record at the next window's start.
            len = unsafe { self.spill_at(&self.consumer_window, head, head + 8)?.cast::<u64>().read() };
        }
        let end = head.checked_add(8 + pad8(len)).filter(|end| *end <= unpack(tail).1);
        let Some(end) = end else {
            return Err(Fail::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "corrupt queue: a spilled record overruns",
            )));
        };
        let at = self.spill_at(&self.consumer_window, head, end)?;
        // SAFETY: the record's payload lies inside the mapping (it covers `head..end`) and is published and not
        // yet freed, so no producer writes it while the consumer mutex holder (us) reads it.
        let result = f(unsafe { std::slice::from_raw_parts(at.add(8), len as usize) });
        self.u64_at(SPILL_HEAD).store(pack(count + 1, end), Ordering::SeqCst);
        self.wake(SPACE_SEQ, SPACE_WAITING);
        // Whole windows behind the head now are free; all of them when the spill emptied and starts over.
        let from = first / SPILL_WINDOW * SPILL_WINDOW;
        if unpack(tail).0 == count + 1 && self.restart_spill(count + 1, from, end) {
            return Ok(result);
        }
        let to = end / SPILL_WINDOW * SPILL_WINDOW;
        if to > from {
            sys::punch_hole(self.fd.as_fd(), self.spill_base + from, to - from);
        }
        Ok(result)
    }

    fn used(&self) -> u64 {
        let (_, head) = unpack(self.u64_at(HEAD).load(Ordering::SeqCst));
        let (_, tail) = unpack(self.u64_at(TAIL).load(Ordering::SeqCst));
        tail.wrapping_sub(head) & POS_MASK
    }

    fn free(&self) -> u64 {
        self.cap - self.used()
    }

    /// Room at the tail, judged from the cached head when that shows at least `need` (producer side).
    fn has_room(&self, need: u64) -> bool {
        let (_, tail) = unpack(self.u64_at(TAIL).load(Ordering::Relaxed));
        let epoch = self.u64_at(EPOCH).load(Ordering::Acquire);
        if self.seen_head.epoch.load(Ordering::Relaxed) == epoch {
            let used = tail.wrapping_sub(self.seen_head.pos.load(Ordering::Relaxed)) & POS_MASK;
            if used <= self.cap && self.cap - used >= need {
                return true;
            }
        }
        let (_, head) = unpack(self.u64_at(HEAD).load(Ordering::SeqCst));
        self.seen_head.epoch.store(epoch, Ordering::Relaxed);
        self.seen_head.pos.store(head, Ordering::Relaxed);
        self.cap - (tail.wrapping_sub(head) & POS_MASK) >= need
    }

    /// The spill is empty after the consumer took record `taken`, and its windows `from..` up to the one
    /// holding offset `end` were in use: when no producer is busy, their memory is given back and both ends go
    /// back to offset 0, so that the memory file's offsets never run out. Whether they did.
    fn restart_spill(&self, taken: u64, from: u64, end: u64) -> bool {
        if !matches!(self.producer.try_lock(), Ok(Locked::Yes)) {
            return false;
        }
        let _held = Held(&self.producer);
        let (put, _) = unpack(self.u64_at(SPILL_TAIL).load(Ordering::SeqCst));
        if put != taken {
            return false;
        }
        // Under the producer mutex: no record can be written there before the ends move.
        sys::punch_hole(self.fd.as_fd(), self.spill_base + from, end.next_multiple_of(SPILL_WINDOW) - from);
        self.u64_at(SPILL_TAIL).store(pack(put, 0), Ordering::SeqCst);
        self.u64_at(SPILL_HEAD).store(pack(taken, 0), Ordering::SeqCst);
        true
    }

    /// Whether a chunk is published at the head: its header word is set (consumer side). The consumer
    /// never reads the tail word, which stays with the producers.
    fn has_chunk(&self) -> bool {
        let (_, head) = unpack(self.u64_at(HEAD).load(Ordering::Relaxed));
        self.header_word(head).load(Ordering::SeqCst) != 0
    }

    /// Whether there is anything for a consumer: a chunk in the ring, or a spilled record.
    fn has_data(&self) -> bool {
        self.has_chunk() || self.spill_has_data()
    }

    fn lock(&self, mutex: &RobustMutex, deadline: Deadline) -> Result<(), Fail> {
        match mutex.lock(deadline).map_err(Fail::Io)? {
            Locked::Yes => Ok(()),
            Locked::OwnerDied => {
                log::warn!("mp-ipc: a process died while using a queue; recovering it");
                // Only the holder ever waits, and the holder died: nobody waits now.
                if std::ptr::eq(mutex, &self.producer) {
                    self.u32_at(SPACE_WAITING).store(0, Ordering::SeqCst);
                    self.repair_tail();
                } else {
                    self.u32_at(DATA_WAITING).store(0, Ordering::SeqCst);
                }
                Ok(())
            }
            Locked::No => Err(Fail::Timeout),
            Locked::Deadlock => Err(Fail::Io(io::Error::other("queue mutex already held by this thread"))),
        }
    }

    /// Spins, then sleeps on `seq`, until `ready()` or the deadline; only a mutex holder calls this.
    fn wait(&self, seq: usize, waiting: usize, deadline: Deadline, ready: impl Fn(&Self) -> bool) -> bool {
        if ready(self) {
            return true;
        }
        if deadline.passed() {
            return false;
        }
        // Poll with a growing pause between looks: every look pulls the other side's cache line away
        // from the process about to write it.
        let spin_until = Instant::now() + SPIN;
        let mut pause = 1u32;
        loop {
            for _ in 0..pause {
                std::hint::spin_loop();
            }
            if ready(self) {
                return true;
            }
            pause = (pause * 2).min(MAX_PAUSE);
            if pause == MAX_PAUSE && Instant::now() >= spin_until {
                break;
            }
        }
        let (seq, waiting) = (self.u32_at(seq), self.u32_at(waiting));
        loop {
            let observed = seq.load(Ordering::SeqCst);
            waiting.store(1, Ordering::SeqCst);
            if ready(self) {
                waiting.store(0, Ordering::Relaxed);
                return true;
            }
            let woken = futex_wait(seq, observed, deadline);
            waiting.store(0, Ordering::Relaxed);
            if ready(self) {
                return true;
            }
            if !woken || deadline.passed() {
                return false;
            }
        }
    }

    fn wake(&self, seq: usize, waiting: usize) {
        if self.u32_at(waiting).load(Ordering::SeqCst) != 0 {
            self.u32_at(seq).fetch_add(1, Ordering::SeqCst);
            futex_wake(self.u32_at(seq), u32::MAX);
        }
    }

    fn wait_free(&self, need: u64, deadline: Deadline) -> bool {
        self.wait(SPACE_SEQ, SPACE_WAITING, deadline, |r| r.has_room(need))
    }

    /// The header word of the chunk at position `pos` (8-aligned).
    fn header_word(&self, pos: u64) -> &AtomicU64 {
        let off = (pos % self.cap) as usize;
        // SAFETY: chunk positions are 8-aligned and a header always fits before the ring's end (the ring
        // size is a multiple of 8); the word is only accessed atomically while it can be published.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(RING + off).cast()) }
    }

    /// Copies `data` into the ring at position `pos` (no wrap: the caller checked it fits before the end).
    fn write_at(&self, pos: u64, data: &[u8]) {
        let off = (pos % self.cap) as usize;
        debug_assert!(off + data.len() <= self.cap as usize);
        // SAFETY: `off + data.len()` lies inside the ring (checked by the caller); the range is free space,
        // which only the producer mutex holder (us) writes and no consumer reads until it is published.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(RING + off), data.len()) }
    }

    /// The `len` published bytes at position `pos` (no wrap).
    fn slice_at(&self, pos: u64, len: u64) -> &[u8] {
        let off = (pos % self.cap) as usize;
        assert!(off + len as usize <= self.cap as usize, "corrupt queue: chunk crosses the ring's end");
        // SAFETY: inside the ring (asserted); the bytes are published and not yet freed, so no producer
        // writes them while the consumer mutex holder (us) reads them.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(RING + off), len as usize) }
    }

    /// Writes one chunk at the tail and publishes it (counting an item when `flags` has `FIRST`). The
    /// caller made sure of room for the chunk and one more header word.
    fn push_chunk(&self, flags: u32, parts: &[&[u8]]) {
        let (count, pos) = unpack(self.u64_at(TAIL).load(Ordering::Relaxed));
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut at = pos + HEADER;
        for part in parts {
            self.write_at(at, part);
            at += part.len() as u64;
        }
        let end = pos + HEADER + pad8(len as u64);
        let count = if flags & FIRST != 0 { count + 1 } else { count };
        self.publish(count, pos, end, (len as u32, flags));
    }

    /// Publishes the chunk at `pos` (its payload written) whose successor starts at `end`: clears the
    /// successor's header word, stores this header (the consumer's signal), then moves the tail (bumping the
    /// epoch when it crosses a multiple of 2^39) and wakes a waiting consumer.
    fn publish(&self, count: u64, pos: u64, end: u64, (len, flags): (u32, u32)) {
        self.header_word(end).store(0, Ordering::Relaxed);
        let header = u64::from(len) | u64::from(flags | VALID) << 32;
        self.header_word(pos).store(header, Ordering::SeqCst);
        if (pos & POS_MASK) >> EPOCH_SHIFT != (end & POS_MASK) >> EPOCH_SHIFT {
            self.u64_at(EPOCH).fetch_add(1, Ordering::SeqCst);
        }
        self.u64_at(TAIL).store(pack(count, end), Ordering::Release);
        self.wake(DATA_SEQ, DATA_WAITING);
    }

    /// After a producer died holding the mutex: a chunk it published without moving the tail (a header
    /// at the tail) is taken into account.
    fn repair_tail(&self) {
        // A consumer that died restarting an empty spill may have moved one end only: line the head up with
        // the tail (nothing is in the spill, and no consumer writes the head of an empty spill).
        let (put, end) = unpack(self.u64_at(SPILL_TAIL).load(Ordering::SeqCst));
        let (taken, head) = unpack(self.u64_at(SPILL_HEAD).load(Ordering::SeqCst));
        if put == taken && head != end {
            self.u64_at(SPILL_HEAD).store(pack(taken, end), Ordering::SeqCst);
        }
        let (count, pos) = unpack(self.u64_at(TAIL).load(Ordering::Relaxed));
        let header = self.header_word(pos).load(Ordering::SeqCst);
        if header != 0 {
            let (len, flags) = (header & 0xffff_ffff, (header >> 32) as u32);
            let end = if flags & PAD != 0 { pos + (self.cap - pos % self.cap) } else { pos + HEADER + pad8(len) };
            let count = if flags & FIRST != 0 { count + 1 } else { count };
            self.u64_at(TAIL).store(pack(count, end), Ordering::Release);
        }
    }

    /// Room before the ring's end at the tail.
    fn contiguous_at_tail(&self) -> u64 {
        let (_, pos) = unpack(self.u64_at(TAIL).load(Ordering::Relaxed));
        self.cap - pos % self.cap
    }

    /// Fills the ring's end with a `PAD` chunk (the caller made sure of room up to the end and one more
    /// header word).
    fn push_pad(&self) {
        let (count, pos) = unpack(self.u64_at(TAIL).load(Ordering::Relaxed));
        let rest = self.cap - pos % self.cap;
        self.publish(count, pos, pos + rest, ((rest - HEADER) as u32, PAD));
    }

    /// Puts one item's bytes. The deadline covers waiting for the mutex, for `maxsize`, and for room; an
    /// item bigger than the ring, once started, is finished whatever the deadline.
    pub(crate) fn put(&self, item: &[u8], deadline: Deadline) -> Result<(), Fail> {
        self.lock(&self.producer, deadline)?;
        let _held = Held(&self.producer);
        if self.u32_at(PRODUCER_MID).load(Ordering::Relaxed) != 0 {
            self.abort_partial(deadline)?;
        }
        if self.maxsize > 0 && !self.wait(SPACE_SEQ, SPACE_WAITING, deadline, |r| (r.qsize() as u64) < r.maxsize) {
            return Err(Fail::Timeout);
        }
        if self.spill && (self.spill_pending() || !self.fits_now(item)) {
            return self.put_spill(item);
        }
        let len = item.len() as u64;
        if HEADER + pad8(len) <= self.cap / 2 { self.put_small(item, deadline) } else { self.put_large(item, deadline) }
    }

    fn count_unfinished(&self) {
        if self.joinable {
            self.u32_at(UNFINISHED).fetch_add(1, Ordering::SeqCst);
        }
    }

    fn put_small(&self, item: &[u8], deadline: Deadline) -> Result<(), Fail> {
        let need = HEADER + pad8(item.len() as u64);
        loop {
            let contiguous = self.contiguous_at_tail();
            if contiguous < need {
                if !self.wait_free(contiguous + HEADER, deadline) {
                    return Err(Fail::Timeout);
                }
                self.push_pad();
                continue;
            }
            if !self.wait_free(need + HEADER, deadline) {
                return Err(Fail::Timeout);
            }
            self.count_unfinished();
            self.push_chunk(FIRST | LAST, &[item]);
            return Ok(());
        }
    }

    fn put_large(&self, item: &[u8], deadline: Deadline) -> Result<(), Fail> {
        // Room for the whole item (its length prefix, up to three headers and a pad) when it can fit at all;
        // half the ring otherwise, after which it streams.
        let whole = item.len() as u64 + 8 + 5 * HEADER + 8;
        let first_room = if whole <= self.cap { whole } else { self.cap / 2 };
        if !self.wait_free(first_room, deadline) {
            return Err(Fail::Timeout);
        }
        self.count_unfinished();
        self.u32_at(PRODUCER_MID).store(1, Ordering::Relaxed);
        let total = (item.len() as u64).to_le_bytes();
        let mut rest = item;
        let mut first = true;
        let max_chunk = self.cap / 2;
        while first || !rest.is_empty() {
            let contiguous = self.contiguous_at_tail();
            if contiguous < HEADER + 16 {
                self.wait_free(contiguous + HEADER, Deadline::after(None));
                self.push_pad();
                continue;
            }
            // Mid-item: the item must be finished (a consumer may be holding its start).
            self.wait_free(2 * HEADER + 16, Deadline::after(None));
            let room = ((self.free() - HEADER).min(contiguous).min(max_chunk) - HEADER) & !7;
            let prefix: &[u8] = if first { &total } else { &[] };
            let take = (room - prefix.len() as u64).min(rest.len() as u64) as usize;
            let last = take == rest.len();
            let flags = if first { FIRST } else { 0 } | if last { LAST } else { 0 };
            self.push_chunk(flags, &[prefix, &rest[..take]]);
            rest = &rest[take..];
            first = false;
        }
        self.u32_at(PRODUCER_MID).store(0, Ordering::Relaxed);
        Ok(())
    }

    /// A producer died in the middle of an item: end it with an `ABORT` chunk (we hold the producer mutex;
    /// chunks are 8-aligned, so a header always fits before the ring's end).
    fn abort_partial(&self, deadline: Deadline) -> Result<(), Fail> {
        if !self.wait_free(2 * HEADER, deadline) {
            return Err(Fail::Timeout);
        }
        self.push_chunk(ABORT, &[]);
        self.u32_at(PRODUCER_MID).store(0, Ordering::Relaxed);
        Ok(())
    }

    /// The chunk at the head, once published: `(count, position, flags, payload length)`.
    fn head_chunk(&self) -> (u64, u64, u32, u64) {
        let (count, pos) = unpack(self.u64_at(HEAD).load(Ordering::Relaxed));
        let header = self.header_word(pos).load(Ordering::Acquire);
        (count, pos, (header >> 32) as u32, header & 0xffff_ffff)
    }

    /// Frees the head chunk (counting an item taken when `item`).
    fn pop_chunk(&self, count: u64, pos: u64, len: u64, item: bool) {
        let count = if item { count + 1 } else { count };
        self.u64_at(HEAD).store(pack(count, pos + HEADER + pad8(len)), Ordering::SeqCst);
        self.wake(SPACE_SEQ, SPACE_WAITING);
    }

    fn wait_data(&self, deadline: Deadline) -> bool {
        self.wait(DATA_SEQ, DATA_WAITING, deadline, |r| r.has_data())
    }

    /// Waits for the next chunk of an item in progress, making sure its producer is still alive; `false`
    /// when no more of it will come (its producer is gone and left nothing).
    fn wait_rest(&self) -> Result<bool, Fail> {
        loop {
            if self.wait(DATA_SEQ, DATA_WAITING, Deadline::after(Some(LIVENESS_CHECK)), |r| r.has_chunk()) {
                return Ok(true);
            }
            // The producer mutex is held for the whole item: if we can take it, its holder died.
            match self.producer.try_lock().map_err(Fail::Io)? {
                locked @ (Locked::Yes | Locked::OwnerDied) => {
                    let _held = Held(&self.producer);
                    if locked == Locked::OwnerDied {
                        self.u32_at(SPACE_WAITING).store(0, Ordering::SeqCst);
                        self.repair_tail();
                    }
                    if self.u32_at(PRODUCER_MID).load(Ordering::Relaxed) != 0 {
                        self.abort_partial(Deadline::after(None))?;
                    } else if !self.has_chunk() {
                        return Ok(false);
                    }
                }
                Locked::No | Locked::Deadlock => {}
            }
        }
    }

    /// Takes one item and hands its bytes to `f`. The deadline covers waiting for the mutex and for an
    /// item to start; an item that has started arriving is received whole.
    pub(crate) fn get<R>(&self, deadline: Deadline, f: impl FnOnce(&[u8]) -> R) -> Result<R, Fail> {
        self.lock(&self.consumer, deadline)?;
        let _held = Held(&self.consumer);
        if self.u32_at(CONSUMER_MID).load(Ordering::Relaxed) != 0 {
            // A consumer died in the middle of an item: drop the rest of it.
            self.read_rest(None)?;
        }
        loop {
            if !self.wait_data(deadline) {
                return Err(Fail::Timeout);
            }
            if !self.has_chunk() {
                // Ring items are older than spilled ones: the spill's turn comes once the ring is empty.
                return self.get_spill(f);
            }
            let (count, pos, flags, len) = self.head_chunk();
            if flags & PAD != 0 {
                self.pop_chunk(count, pos, len, false);
            } else if flags & FIRST != 0 && flags & LAST != 0 {
                let result = f(self.slice_at(pos + HEADER, len));
                self.pop_chunk(count, pos, len, true);
                return Ok(result);
            } else if flags & FIRST != 0 {
                let payload = self.slice_at(pos + HEADER, len);
                let total = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes")) as usize;
                let mut item = Vec::new();
                if item.try_reserve_exact(total).is_err() {
                    return Err(Fail::Io(io::Error::new(io::ErrorKind::OutOfMemory, "queue item too large")));
                }
                item.extend_from_slice(&payload[8..]);
                self.u32_at(CONSUMER_MID).store(1, Ordering::Relaxed);
                self.pop_chunk(count, pos, len, true);
                if self.read_rest(Some(&mut item))? {
                    return Ok(f(&item));
                }
                // Its producer died before finishing it: wait for the next item.
            } else {
                // A stray middle, last or abort chunk (left by a consumer that died): skip it.
                self.pop_chunk(count, pos, len, false);
            }
        }
    }

    /// Reads the rest of an item in progress into `item` (or drops it); `false` when it was aborted.
    fn read_rest(&self, mut item: Option<&mut Vec<u8>>) -> Result<bool, Fail> {
        loop {
            if !self.wait_rest()? {
                self.u32_at(CONSUMER_MID).store(0, Ordering::Relaxed);
                return Ok(false);
            }
            let (count, pos, flags, len) = self.head_chunk();
            if flags & PAD != 0 {
                self.pop_chunk(count, pos, len, false);
                continue;
            }
            if flags & FIRST != 0 {
                // The item we were skipping had ended unseen: this is the next one, leave it.
                self.u32_at(CONSUMER_MID).store(0, Ordering::Relaxed);
                return Ok(false);
            }
            if flags & ABORT == 0 {
                if let Some(item) = item.as_deref_mut() {
                    item.extend_from_slice(self.slice_at(pos + HEADER, len));
                }
            }
            self.pop_chunk(count, pos, len, false);
            if flags & (LAST | ABORT) != 0 {
                self.u32_at(CONSUMER_MID).store(0, Ordering::Relaxed);
                return Ok(flags & LAST != 0);
            }
        }
    }

    /// Marks one item done (`JoinableQueue::task_done`); `false` when none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let unfinished = self.u32_at(UNFINISHED);
        let mut current = unfinished.load(Ordering::SeqCst);
        loop {
            if current == 0 {
                return false;
            }
            match unfinished.compare_exchange_weak(current, current - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        if current == 1 {
            futex_wake(unfinished, u32::MAX);
        }
        true
    }

    /// Waits until every item put has been marked done; `false` on timeout.
    pub(crate) fn join(&self, deadline: Deadline) -> bool {
        let unfinished = self.u32_at(UNFINISHED);
        loop {
            let current = unfinished.load(Ordering::SeqCst);
            if current == 0 {
                return true;
            }
            if !futex_wait(unfinished, current, deadline) && deadline.passed() {
                return unfinished.load(Ordering::SeqCst) == 0;
            }
        }
    }
}
