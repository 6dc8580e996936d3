//! The parent's listener: a thread that accepts one connection per child process, reads the records they
//! send, and re-emits them through the inner logger, saying when a child dropped records.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::record::{LogRecord, Message};
use crate::ring::{Popped, Ring};
use crate::sys::{self, Hello, Received};

/// How often the listener looks at its stop flag while nothing arrives.
const TICK: Duration = Duration::from_millis(50);

/// The descriptors the listener owns (its listening socket and one connection per child), where a child
/// forked from this process finds them to close: `fork` copies every descriptor, and a child holding a copy
/// of the listening socket or of a sibling's connection would keep it open after this process is gone, so
/// that those senders would never learn it. Lock-free, so that a forked child can read it whatever the
/// listener thread was doing. Beyond its room, a descriptor is not recorded (then a forked child keeps it).
static OWNED: [AtomicI32; 4096] = [const { AtomicI32::new(-1) }; 4096];

fn record_owned(fd: i32) {
    for slot in &OWNED {
        if slot.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            return;
        }
    }
}

fn forget_owned(fd: i32) {
    for slot in &OWNED {
        if slot.compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            return;
        }
    }
}

/// In a child forked from the listener's process: closes the listener's descriptors (see [`OWNED`]).
pub(crate) fn close_inherited() {
    for slot in &OWNED {
        let fd = slot.load(Ordering::Acquire);
        if fd >= 0 {
            slot.store(-1, Ordering::Relaxed);
            // SAFETY: the descriptor was the listener thread's, which does not exist in this child: nothing here
            // uses it, so closing it is ours to do.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

/// What a listener has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Records received from children and re-emitted.
    pub records: u64,
    /// Records the children reported dropped (their channel was full for longer than they were allowed to
    /// wait); each was announced by a warning of its own.
    pub dropped: u64,
    /// Records that came without their key-values (formatting one failed in the child).
    pub kv_failed: u64,
    /// Child processes that connected.
    pub processes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    dropped: AtomicU64,
    kv_failed: AtomicU64,
    processes: AtomicU64,
}

/// The running listener thread.
#[derive(Debug)]
pub(crate) struct Listener {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

/// What the listener knows of one child's connection.
#[derive(Debug)]
struct Peer {
    fd: OwnedFd,
    /// The child's ring, once its first message handed it over.
    ring: Option<Ring>,
    /// The first message has not come yet.
    greeted: bool,
    pid: u32,
    name: String,
    /// The last sequence number seen, and the counts reported so far.
    seq: u64,
    dropped: u64,
    kv_failed: u64,
    ended: bool,
}

impl Listener {
    /// Starts the thread reading `socket`, re-emitting through `inner`.
    pub(crate) fn start(socket: OwnedFd, inner: &'static dyn log::Log, buffer: usize) -> std::io::Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (flag, seen) = (stop.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("mp-log-listener".into())
            .spawn(move || run(&socket, inner, &flag, &seen, buffer))?;
        Ok(Listener { stop, counters, thread: Some(thread) })
    }

    /// What it has seen so far.
    pub(crate) fn stats(&self) -> ListenerStats {
        ListenerStats {
            records: self.counters.records.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            kv_failed: self.counters.kv_failed.load(Ordering::Relaxed),
            processes: self.counters.processes.load(Ordering::Relaxed),
        }
    }

    /// Reads what has been sent, then stops the thread.
    pub(crate) fn stop(mut self) -> ListenerStats {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.stats()
    }
}

fn run(socket: &OwnedFd, inner: &'static dyn log::Log, stop: &AtomicBool, counters: &Counters, buffer: usize) {
    record_owned(socket.as_raw_fd());
    let mut peers: Vec<Peer> = Vec::new();
    let mut batch = sys::Batch::new();
    let mut record = Vec::new();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        // Drain everything waiting, then wait (a short while, to look at the stop flag again).
        let mut busy = false;
        while let Ok(Some(fd)) = sys::accept(socket.as_fd(), buffer) {
            record_owned(fd.as_raw_fd());
            counters.processes.fetch_add(1, Ordering::Relaxed);
            peers.push(Peer {
                fd,
                ring: None,
                greeted: false,
                pid: 0,
                name: String::new(),
                seq: 0,
                dropped: 0,
                kv_failed: 0,
                ended: false,
            });
            busy = true;
        }
        for peer in &mut peers {
            if !peer.greeted {
                match sys::recv_hello(peer.fd.as_fd()) {
                    Hello::Pending => continue,
                    Hello::Ring(memory) => {
                        peer.ring = Ring::open(&memory).ok();
                        peer.greeted = true;
                    }
                    Hello::NoRing => peer.greeted = true,
                    Hello::Closed => {
                        peer.ended = true;
                        continue;
                    }
                }
                busy = true;
            }
            // A bounded turn per peer, so that one busy child cannot starve the others.
            if let Some(ring) = peer.ring.take() {
                let mut keep = true;
                for _ in 0..4096 {
                    match ring.pop(&mut record) {
                        Popped::Record => {
                            busy = true;
                            handle(peer, &record, inner, counters);
                        }
                        Popped::Empty => break,
                        Popped::Corrupt => {
                            let text = "mp-log: a child's ring is corrupt; its records are no longer read".to_owned();
                            log_from(inner, peer, log::Level::Error, text);
                            keep = false;
                            break;
                        }
                    }
                }
                if keep {
                    peer.ring = Some(ring);
                }
            }
            for _ in 0..16 {
                match sys::recv_batch(peer.fd.as_fd(), &mut batch) {
                    Received::Message(n) => {
                        busy = true;
                        for i in 0..n {
                            // One byte: a wake-up for the ring; anything longer: a record sent without one.
                            if batch.message(i).len() > 1 {
                                handle(peer, batch.message(i), inner, counters);
                            }
                        }
                    }
                    Received::Empty => break,
                    Received::Closed => {
                        peer.ended = true;
                        break;
                    }
                }
            }
        }
        // An ended child's ring may still hold records: read them before letting it go.
        for peer in peers.iter_mut().filter(|p| p.ended) {
            if let Some(ring) = peer.ring.take() {
                while ring.pop(&mut record) == Popped::Record {
                    handle(peer, &record, inner, counters);
                }
            }
        }
        peers.retain(|peer| {
            if peer.ended {
                forget_owned(peer.fd.as_raw_fd());
            }
            !peer.ended
        });
        if busy {
            continue;
        }

        if stopping {
            inner.flush();
            for peer in &peers {
                forget_owned(peer.fd.as_raw_fd());
            }
            forget_owned(socket.as_raw_fd());
            return;
        }
        // About to sleep: say so in every ring, then look once more (see `ring`): a record published meanwhile
        // is seen here, or its writer sees the flag and wakes us.
        let rings = || peers.iter().filter_map(|p| p.ring.as_ref());
        rings().for_each(|r| r.set_waiting(true));
        if rings().all(Ring::is_empty) {
            let mut fds = vec![socket.as_fd()];
            fds.extend(peers.iter().map(|p| p.fd.as_fd()));
            sys::wait_readable(&fds, TICK);
        }
        rings().for_each(|r| r.set_waiting(false));
    }
}

/// One message from `peer`.
fn handle(peer: &mut Peer, bytes: &[u8], inner: &'static dyn log::Log, counters: &Counters) {
    let Ok(message) = postcard::from_bytes::<Message<'_>>(bytes) else {
        log_from(
            inner,
            peer,
            log::Level::Warn,
            format!("mp-log: an undecodable record ({} bytes) was skipped", bytes.len()),
        );
        return;
    };
    match message {
        Message::Record { record, dropped, kv_failed } => {
            peer.pid = record.pid;
            if peer.name != record.process_name {
                record.process_name.clone_into(&mut peer.name);
            }
            peer.seq = record.seq;
            counters.records.fetch_add(1, Ordering::Relaxed);
            report_losses(peer, dropped, kv_failed, inner, counters);
            record.emit(inner);
        }
        Message::Exit { pid, process_name, seq, dropped, kv_failed } => {
            peer.pid = pid;
            process_name.clone_into(&mut peer.name);
            peer.seq = seq;
            report_losses(peer, dropped, kv_failed, inner, counters);
        }
    }
}

/// Announces what the child dropped since the last report.
fn report_losses(peer: &mut Peer, dropped: u64, kv_failed: u64, inner: &'static dyn log::Log, counters: &Counters) {
    if dropped > peer.dropped {
        let newly = dropped - peer.dropped;
        peer.dropped = dropped;
        counters.dropped.fetch_add(newly, Ordering::Relaxed);
        let text = format!("{} (pid {}) dropped {newly} records", peer.name, peer.pid);
        log_from(inner, peer, log::Level::Warn, text);
    }
    if kv_failed > peer.kv_failed {
        counters.kv_failed.fetch_add(kv_failed - peer.kv_failed, Ordering::Relaxed);
        peer.kv_failed = kv_failed;
    }
}

/// A record of mp-log's own (target `mp`), on behalf of `peer`.
fn log_from(inner: &'static dyn log::Log, peer: &Peer, level: log::Level, message: String) {
    LogRecord {
        level: level as usize as u8,
        target: "mp".into(),
        module_path: Some(module_path!().into()),
        file: None,
        line: None,
        message,
        key_values: Vec::new(),
        process_name: peer.name.clone(),
        pid: peer.pid,
        seq: peer.seq,
        truncated: false,
    }
    .emit(inner);
}
