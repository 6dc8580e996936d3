//! mp's global logger: in the process that installed it, records go to the inner logger; in every child of
//! that process tree, under every start method, they are forwarded to it over a connection of the child's
//! own — never into the inner logger, whose locks a forked child may have inherited held.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use log::LevelFilter;

use crate::error::InstallError;
use crate::listener::{Listener, ListenerStats};
use crate::record::{Collect, DEFAULT_RECORD_CAP, Message, RecordRef, cpython_line};
use crate::ring::{Pushed, Ring};
use crate::sys::{self, Sent};

/// The inherited settings that tell a child where its tree's listener is and how to send.
const ADDRESS: &str = "mp-log.address";
const LEVEL: &str = "mp-log.level";
const WAIT: &str = "mp-log.wait-ns";
const CAP: &str = "mp-log.cap";
const BUFFER: &str = "mp-log.buffer";

/// The default size of each child's send buffer (and of the listener's receive buffer per child): how far a
/// parent may fall behind a child before the child's records are dropped (and counted).
pub const DEFAULT_BUFFER: usize = 1 << 20;

/// What this process does with a record.
const NONE: u8 = 0;
/// The installing process: to the inner logger.
const PARENT: u8 = 1;
/// A child: forwarded.
const CHILD: u8 = 2;

static ROLE: AtomicU8 = AtomicU8::new(NONE);
static INNER: OnceLock<&'static dyn log::Log> = OnceLock::new();
/// A child's connection to the listener (-1: none): its first message hands over the ring; then it carries
/// the ring's wake-ups (and records, should the ring be missing); its end tells the parent the child ended.
static SENDER: AtomicI32 = AtomicI32::new(-1);
/// A child's ring (see [`Ring`]), where its records go; null: none (records go on the connection).
static RING: AtomicPtr<ChildRing> = AtomicPtr::new(std::ptr::null_mut());

/// A child's ring and the lock its threads take turns under (this process's own, never shared), with when
/// the child last looked whether its parent is still there (nanoseconds of `since`).
struct ChildRing {
    ring: Ring,
    lock: Mutex<()>,
    since: std::time::Instant,
    checked: AtomicU64,
}

/// How often a child whose records go into its ring (no system call) looks whether its parent is still there.
const CHECK_PARENT: Duration = Duration::from_millis(10);
/// How many records this process has sent (the last one's sequence number).
static SENT: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static KV_FAILED: AtomicU64 = AtomicU64::new(0);
/// Set once sending found the listener gone: the child writes to its own stderr from then on.
static PARENT_GONE: AtomicBool = AtomicBool::new(false);
static WAIT_NS: AtomicU64 = AtomicU64::new(0);
static RECORD_CAP: AtomicUsize = AtomicUsize::new(DEFAULT_RECORD_CAP);
/// This process's name and pid, captured when it became a child (a record needs them, cheaply).
static WHO: AtomicPtr<(String, u32)> = AtomicPtr::new(std::ptr::null_mut());
/// The installing process's listener, stopped (drained) by the exit hook.
static LISTENER: Mutex<Option<Listener>> = Mutex::new(None);

/// The global logger (see the module's documentation).
struct MpLogger;

static LOGGER: MpLogger = MpLogger;

impl log::Log for MpLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        match ROLE.load(Ordering::Relaxed) {
            PARENT => inner().is_some_and(|inner| inner.enabled(metadata)),
            CHILD => metadata.level() <= log::max_level(),
            _ => false,
        }
    }

    fn log(&self, record: &log::Record<'_>) {
        match ROLE.load(Ordering::Relaxed) {
            PARENT => {
                if let Some(inner) = inner()
                    && inner.enabled(record.metadata())
                {
                    inner.log(record);
                }
            }
            CHILD => forward(record),
            _ => {}
        }
    }

    fn flush(&self) {
        if ROLE.load(Ordering::Relaxed) == PARENT
            && let Some(inner) = inner()
        {
            inner.flush();
        }
    }
}

fn inner() -> Option<&'static dyn log::Log> {
    INNER.get().copied()
}

/// Options for [`install`] (level, how long a child may wait for room, record cap, buffer size).
#[derive(Debug, Clone)]
pub struct Builder {
    level: LevelFilter,
    send_wait: Duration,
    record_cap: usize,
    buffer: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            level: LevelFilter::Info,
            send_wait: Duration::ZERO,
            record_cap: DEFAULT_RECORD_CAP,
            buffer: DEFAULT_BUFFER,
        }
    }
}

impl Builder {
    /// Default options: level `Info`, no wait, 64 KiB records, 1 MiB of buffer per child.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most verbose level any process of the tree logs (`log::set_max_level`); records above it cost
    /// one comparison and are never formatted.
    pub fn level(mut self, level: LevelFilter) -> Self {
        self.level = level;
        self
    }

    /// How long a child may wait for room when its channel to the parent is full (default zero: drop at
    /// once). A dropped record is counted, and the parent announces the count.
    pub fn send_wait(mut self, wait: Duration) -> Self {
        self.send_wait = wait;
        self
    }

    /// The largest encoded record (default 64 KiB, at most 100 KiB): a longer message is cut, with a marker.
    pub fn record_cap(mut self, bytes: usize) -> Self {
        self.record_cap = bytes.clamp(1024, 100 * 1024);
        self
    }

    /// The send buffer of each child's channel (default 1 MiB): how far the parent may fall behind.
    pub fn buffer(mut self, bytes: usize) -> Self {
        self.buffer = bytes.max(4096);
        self
    }

    /// Installs mp's logger as `log`'s global logger, delivering this process's records (and, through the
    /// listener, every child's) to `inner`. Children started from now on, and their children, forward.
    ///
    /// Errors: [`InstallError::AlreadyInstalled`] when mp's logger already runs in this process (installed
    /// here, or inherited as a child); [`InstallError::AnotherLogger`] when another logger was set;
    /// [`InstallError::Io`] when the listener cannot be made.
    pub fn install(self, inner: impl log::Log + 'static) -> Result<LogHandle, InstallError> {
        if ROLE.load(Ordering::SeqCst) != NONE {
            return Err(InstallError::AlreadyInstalled);
        }
        let name = format!("mp-log-{}-{:016x}", std::process::id(), sys::random_u64());
        let socket = sys::listen(&name).map_err(InstallError::Io)?;
        log::set_logger(&LOGGER).map_err(|_| InstallError::AnotherLogger)?;
        // It lives as long as the program, as `log`'s loggers do.
        let inner: &'static dyn log::Log = Box::leak(Box::new(inner));
        if INNER.set(inner).is_err() {
            return Err(InstallError::AlreadyInstalled);
        }
        ROLE.store(PARENT, Ordering::SeqCst);
        log::set_max_level(self.level);
        let listener = Listener::start(socket, inner, self.buffer).map_err(InstallError::Io)?;
        *LISTENER.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
        mp_process::set_inherited(ADDRESS, Some(&name));
        mp_process::set_inherited(LEVEL, Some(self.level.as_str()));
        mp_process::set_inherited(WAIT, Some(&self.send_wait.as_nanos().min(u128::from(u64::MAX)).to_string()));
        mp_process::set_inherited(CAP, Some(&self.record_cap.to_string()));
        mp_process::set_inherited(BUFFER, Some(&self.buffer.to_string()));
        mp_process::register_child_setup(become_child);
        // At the program's exit, after its children have been joined: read what they sent.
        mp_process::register_at_exit(stop_listener);
        Ok(LogHandle { _private: () })
    }
}

/// Installs mp's logger with default options (see [`Builder::install`]).
///
/// ```
/// # mp_process::init();
/// struct Print;
/// impl log::Log for Print {
///     fn enabled(&self, _: &log::Metadata<'_>) -> bool { true }
///     fn log(&self, record: &log::Record<'_>) { println!("{}", record.args()); }
///     fn flush(&self) {}
/// }
///
/// let handle = mp_log::install(Print)?;
/// log::info!("from the parent");
/// let mut p = mp_process::Process::new(|(): ()| log::info!("from a child"), ());
/// p.start()?;
/// p.join()?;
/// let stats = handle.stop(); // reads what the children sent
/// assert_eq!(stats.records, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn install(inner: impl log::Log + 'static) -> Result<LogHandle, InstallError> {
    Builder::new().install(inner)
}

/// The installed logger's listener (see [`install`]). Dropping it leaves the listener running until the
/// program exits, when it reads what the children sent.
#[derive(Debug)]
pub struct LogHandle {
    _private: (),
}

impl LogHandle {
    /// What the listener has received so far.
    pub fn stats(&self) -> ListenerStats {
        LISTENER.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(Listener::stats).unwrap_or_default()
    }

    /// Reads everything the children have sent and stops the listener (records sent afterwards are lost; a
    /// child then writes them to its own stderr). Returns what it received in all.
    pub fn stop(self) -> ListenerStats {
        stop_listener_stats()
    }
}

fn stop_listener_stats() -> ListenerStats {
    let listener = LISTENER.lock().unwrap_or_else(|e| e.into_inner()).take();
    listener.map(Listener::stop).unwrap_or_default()
}

fn stop_listener() {
    stop_listener_stats();
}

/// In every child (mp-process's setup hook, before its target): forward from now on.
fn become_child() {
    let Some(address) = mp_process::inherited(ADDRESS) else { return };
    // A forked child has copies of its parent's listener descriptors: closed, or they would outlive the parent.
    crate::listener::close_inherited();
    let setting = |key: &str| mp_process::inherited(key).and_then(|v| v.parse::<u64>().ok());
    WAIT_NS.store(setting(WAIT).unwrap_or(0), Ordering::Relaxed);
    RECORD_CAP.store(setting(CAP).map_or(DEFAULT_RECORD_CAP, |c| c as usize), Ordering::Relaxed);
    SENT.store(0, Ordering::Relaxed);
    DROPPED.store(0, Ordering::Relaxed);
    KV_FAILED.store(0, Ordering::Relaxed);
    PARENT_GONE.store(false, Ordering::Relaxed);
    let me = mp_process::current_process();
    let who = Box::into_raw(Box::new((me.name().to_owned(), me.pid())));
    // The previous value (a forked child's parent's) is leaked: another thread of the parent may have held it.
    WHO.store(who, Ordering::Release);
    let buffer = setting(BUFFER).map_or(DEFAULT_BUFFER, |b| b as usize);
    // The previous ring (a forked child's parent's) is left as it is: this process never writes to it again.
    RING.store(std::ptr::null_mut(), Ordering::Release);
    let fd = match sys::connect(&address, 64 * 1024) {
        Ok(conn) => {
            let hello = match Ring::create(buffer) {
                Ok((ring, memory)) => {
                    let sent = sys::send_fd(conn.as_fd(), b'R', memory.as_fd());
                    if sent.is_ok() {
                        let child_ring = Box::new(ChildRing {
                            ring,
                            lock: Mutex::new(()),
                            since: std::time::Instant::now(),
                            checked: AtomicU64::new(0),
                        });
                        RING.store(Box::into_raw(child_ring), Ordering::Release);
                    }
                    sent
                }
                Err(_) => sys::send(conn.as_fd(), b"N", Duration::ZERO)
                    .eq(&Sent::Delivered)
                    .then_some(())
                    .ok_or_else(|| std::io::Error::other("the listener took no first message")),
            };
            if hello.is_err() {
                PARENT_GONE.store(true, Ordering::Relaxed);
            }
            conn.into_raw_fd()
        }
        Err(_) => {
            PARENT_GONE.store(true, Ordering::Relaxed);
            -1
        }
    };
    let old = SENDER.swap(fd, Ordering::AcqRel);
    if old >= 0 {
        // SAFETY: the inherited connection (a forked child's parent's) is ours to close: nothing else in this
        // process uses it once `SENDER` no longer names it.
        drop(unsafe { OwnedFd::from_raw_fd(old) });
    }
    ROLE.store(CHILD, Ordering::SeqCst);
    // A spawned or fork-server child has no logger yet; a forked one inherited this very one.
    let _ = log::set_logger(&LOGGER);
    let level = mp_process::inherited(LEVEL).and_then(|l| l.parse().ok()).unwrap_or(LevelFilter::Info);
    log::set_max_level(level);
    mp_process::register_at_exit(child_exit);
}

/// The child's connection, if it has one.
fn sender() -> Option<BorrowedFd<'static>> {
    let fd = SENDER.load(Ordering::Acquire);
    // SAFETY: `SENDER` owns the descriptor for the rest of the process (it is replaced only in a new child, by
    // `become_child`, before the target runs and so before any record is sent).
    (fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
}

/// A thread's reusable buffers for forwarding: the formatted message, the key-values, the encoded message.
#[derive(Default)]
struct Scratch {
    message: String,
    key_values: Collect,
    encoded: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Forwards one record from a child: encoded straight from the `log::Record` (borrowed strings, reused
/// buffers: no allocation once a thread's buffers are warm), sent as one message.
fn forward(record: &log::Record<'_>) {
    let who = WHO.load(Ordering::Acquire);
    if who.is_null() {
        return;
    }
    // SAFETY: set by `become_child` from `Box::into_raw` and never freed.
    let (name, pid) = unsafe { &*who };
    SCRATCH.with(|scratch| {
        let Ok(mut scratch) = scratch.try_borrow_mut() else { return }; // a record logged while formatting one
        let Scratch { message, key_values, encoded } = &mut *scratch;
        message.clear();
        let _ = write!(message, "{}", record.args());
        key_values.0.clear();
        key_values.1 = false;
        if record.key_values().count() > 0 {
            let _ = record.key_values().visit(key_values);
        }
        if key_values.1 {
            KV_FAILED.fetch_add(1, Ordering::Relaxed);
            key_values.0.clear();
        }
        let rec = RecordRef {
            level: record.level() as usize as u8,
            target: record.target(),
            module_path: record.module_path(),
            file: record.file(),
            line: record.line(),
            message,
            key_values: key_values.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            process_name: name,
            pid: *pid,
            seq: 0,
            truncated: false,
        };
        if PARENT_GONE.load(Ordering::Relaxed) {
            sys::write_stderr(cpython_line(&rec.to_owned_record()).as_bytes());
            return;
        }
        let Some(fd) = sender() else { return };
        let seq = SENT.fetch_add(1, Ordering::Relaxed) + 1;
        let rec = RecordRef { seq, ..rec };
        let (dropped, kv_failed) = (DROPPED.load(Ordering::Relaxed), KV_FAILED.load(Ordering::Relaxed));
        let cap = RECORD_CAP.load(Ordering::Relaxed);
        let fits = encode(encoded, &Message::Record { record: rec, dropped, kv_failed }) && encoded.len() <= cap;
        let mut owned = None;
        if !fits {
            // Too large (rare): cut an owned copy to fit.
            let Message::Record { record: rec, .. } = postcard::from_bytes::<Message<'_>>(encoded)
                .ok()
                .unwrap_or(Message::Exit { pid: 0, process_name: "", seq: 0, dropped: 0, kv_failed: 0 })
            else {
                return;
            };
            let mut cut = rec.to_owned_record();
            cut.fit(cap - 64, |r| postcard::to_stdvec(&r.as_ref()).map_or(usize::MAX, |v| v.len()));
            owned = Some(cut);
        }
        if let Some(cut) = &owned {
            encode(encoded, &Message::Record { record: cut.as_ref(), dropped, kv_failed });
        }
        let wait = Duration::from_nanos(WAIT_NS.load(Ordering::Relaxed));
        match transmit(fd, encoded, wait) {
            Sent::Delivered => {}
            Sent::Full => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            Sent::Gone => {
                PARENT_GONE.store(true, Ordering::Relaxed);
                if let Ok(Message::Record { record, .. }) = postcard::from_bytes::<Message<'_>>(encoded) {
                    sys::write_stderr(cpython_line(&record.to_owned_record()).as_bytes());
                }
            }
            // The record was in the ring, and printed with the rest of it.
            Sent::Orphaned => {}
        }
    });
}

/// Hands one encoded message to the parent: into the child's ring (waking the listener if it was about to
/// sleep), waiting at most `wait` for room; over the connection when there is no ring. A full ring is
/// `Full`, unless probing the connection shows the parent gone.
fn transmit(conn: BorrowedFd<'_>, bytes: &[u8], wait: Duration) -> Sent {
    let ring = RING.load(Ordering::Acquire);
    if ring.is_null() {
        return sys::send(conn, bytes, wait);
    }
    // SAFETY: set by `become_child` from `Box::into_raw` and never freed.
    let child_ring = unsafe { &*ring };
    let ChildRing { ring, lock, since, checked } = child_ring;
    let _turn = lock.lock().unwrap_or_else(|e| e.into_inner());
    let deadline = std::time::Instant::now().checked_add(wait);
    loop {
        match ring.push(bytes) {
            Pushed::Done { wake: false } => {
                // No system call on this path: look now and then whether anyone still reads the ring.
                let now = since.elapsed().as_nanos() as u64;
                if now.saturating_sub(checked.load(Ordering::Relaxed)) >= CHECK_PARENT.as_nanos() as u64 {
                    checked.store(now, Ordering::Relaxed);
                    if sys::peer_gone(conn) {
                        orphaned(ring);
                        return Sent::Orphaned;
                    }
                }
                return Sent::Delivered;
            }
            Pushed::Done { wake: true } => {
                return match sys::send(conn, &[0], Duration::ZERO) {
                    Sent::Gone => {
                        orphaned(ring);
                        Sent::Orphaned
                    }
                    _ => Sent::Delivered,
                };
            }
            Pushed::Full => {
                if sys::peer_gone(conn) {
                    orphaned(ring);
                    return Sent::Gone;
                }
                if deadline.is_none_or(|d| std::time::Instant::now() >= d) {
                    return Sent::Full;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// The parent is gone: from now on this child writes its records to its own stderr, starting with those it
/// had put in its ring that the parent never read (so that none is lost without a word).
fn orphaned(ring: &Ring) {
    PARENT_GONE.store(true, Ordering::Relaxed);
    let mut bytes = Vec::new();
    while ring.pop(&mut bytes) == crate::ring::Popped::Record {
        if let Ok(Message::Record { record, .. }) = postcard::from_bytes::<Message<'_>>(&bytes) {
            sys::write_stderr(cpython_line(&record.to_owned_record()).as_bytes());
        }
    }
}

/// Encodes into `buf` (cleared first); whether it worked.
fn encode(buf: &mut Vec<u8>, message: &Message<'_>) -> bool {
    buf.clear();
    match postcard::to_extend(message, std::mem::take(buf)) {
        Ok(bytes) => {
            *buf = bytes;
            true
        }
        Err(_) => false,
    }
}

/// In a child, once its target has returned: tells the listener its final counts, waiting a little for room
/// (the records it dropped must not go unsaid); on its own stderr when that fails too.
fn child_exit() {
    let who = WHO.load(Ordering::Acquire);
    if who.is_null() {
        return;
    }
    // SAFETY: as in `forward`.
    let (name, pid) = unsafe { &*who };
    // The parent may have gone since the last look: what it did not read is printed here.
    let ring = RING.load(Ordering::Acquire);
    if let Some(conn) = sender()
        && !ring.is_null()
        && !PARENT_GONE.load(Ordering::Relaxed)
        && sys::peer_gone(conn)
    {
        // SAFETY: as in `transmit`.
        let child_ring = unsafe { &*ring };
        let _turn = child_ring.lock.lock().unwrap_or_else(|e| e.into_inner());
        orphaned(&child_ring.ring);
    }
    let dropped = DROPPED.load(Ordering::Relaxed);
    let exit = Message::Exit {
        pid: *pid,
        process_name: name,
        seq: SENT.load(Ordering::Relaxed),
        dropped,
        kv_failed: KV_FAILED.load(Ordering::Relaxed),
    };
    let delivered = match (sender(), postcard::to_stdvec(&exit)) {
        (Some(fd), Ok(bytes)) if !PARENT_GONE.load(Ordering::Relaxed) => {
            let wait = Duration::from_nanos(WAIT_NS.load(Ordering::Relaxed)).max(Duration::from_millis(200));
            transmit(fd, &bytes, wait) == Sent::Delivered
        }
        _ => false,
    };
    if !delivered && dropped > 0 {
        sys::write_stderr(
            format!("[WARNING/{name}] mp-log: {name} (pid {pid}) dropped {dropped} records\n").as_bytes(),
        );
    }
}

/// Whether this process forwards its records to a parent (a child of a tree with mp's logger installed).
pub fn is_forwarding() -> bool {
    ROLE.load(Ordering::Relaxed) == CHILD
}
