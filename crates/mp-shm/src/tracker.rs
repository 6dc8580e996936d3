//! The resource tracker: unlinks the segments a process tree created once the whole tree has ended.
//!
//! The first process that creates a segment starts the tracker, a detached process (see
//! `mp_process::Builder::detached`) listening on an abstract Unix socket, and publishes the address through
//! `mp_process::set_inherited`, so that every descendant finds it. Each process that creates a segment keeps
//! one connection to the tracker (a forked child shares its parent's) and sends `R name` when it creates a
//! segment (`Q name` for one whose lifetime is the tree's, cleaned up without a warning) and `U name` when
//! it unlinks one; attaching sends nothing, so attachers cause neither cleanup nor
//! false "leaked" reports (CPython's gh-82300). When the process that started the tracker has ended and no
//! connection is left open — however the processes died, SIGKILL included — the tracker unlinks every
//! segment still registered, says so on stderr as CPython does, and exits.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;

use mp_process::{Builder, Handle, StartMethod};

use crate::sys;

/// The inherited setting that holds the tracker's address.
const ADDRESS_KEY: &str = "mp-shm.tracker";
/// The inherited setting that holds the tracker's identity: its pid and start time, in hex, `PID-START`. The
/// segments its tree creates with random names carry it (`mp_PID-START-RANDOM`), so that a later tracker can
/// tell, if this one was killed with its tree, which segments are left over: those of a tracker no longer
/// alive.
const ID_KEY: &str = "mp-shm.tracker-id";

/// This process's connection to the tracker (`None`: tracking is unavailable; a warning was logged).
static CONNECTION: OnceLock<Option<OwnedFd>> = OnceLock::new();

fn connection() -> Option<&'static OwnedFd> {
    CONNECTION
        .get_or_init(|| {
            connect_or_start()
                .inspect_err(|e| {
                    log::warn!("mp-shm: no resource tracker ({e}); segments will not be cleaned up after a crash")
                })
                .ok()
        })
        .as_ref()
}

fn connect_or_start() -> io::Result<OwnedFd> {
    if let Some(address) = mp_process::inherited(ADDRESS_KEY) {
        if let Ok(connection) = sys::connect(&address) {
            return Ok(connection);
        }
    }
    let address = format!("mp-shm-tracker-{}-{}", std::process::id(), sys::random_suffix());
    let listener = sys::listen(&address)?;
    let mut tracker = Builder::new()
        .name("ResourceTracker")
        .detached(true)
        .start_method(StartMethod::Spawn)
        .target(serve, Handle::from(listener));
    tracker.start().map_err(io::Error::other)?;
    mp_process::set_inherited(ADDRESS_KEY, Some(&address));
    if let Some(pid) = tracker.pid()
        && let Some(start) = mp_process::process_start_time(pid)
    {
        mp_process::set_inherited(ID_KEY, Some(&format!("{pid:x}-{start:x}")));
    }
    sys::connect(&address)
}

/// A fresh random name for a segment of this tree: `mp_` then the tracker's identity (starting the tracker if
/// need be) and 16 random hex digits, or `mp_` and the random digits alone without a tracker.
pub(crate) fn fresh_name() -> String {
    let _ = connection();
    match mp_process::inherited(ID_KEY) {
        Some(id) => format!("mp_{id}-{}", sys::random_suffix()),
        None => format!("mp_{}", sys::random_suffix()),
    }
}

/// The tracker identity a segment name carries (`mp_PID-START-RANDOM`): its pid and start time.
fn tree_of(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix("mp_")?.split('-');
    let (pid, start, random) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || random.len() != 16 {
        return None;
    }
    Some((u32::from_str_radix(pid, 16).ok()?, u64::from_str_radix(start, 16).ok()?))
}

/// At a tracker's start: unlinks the segments left by trees whose tracker is gone (killed with its tree, so
/// that nobody cleaned up). A live tracker's segments are never touched: its pid and start time still name a
/// live process.
fn sweep_orphans(me: (u32, u64)) {
    for name in sys::segment_names() {
        if let Some((pid, start)) = tree_of(&name)
            && (pid, start) != me
            && mp_process::process_start_time(pid) != Some(start)
        {
            log::debug!(target: "mp", "resource tracker: unlinking {name}, left by a tracker that is gone");
            let _ = sys::unlink(&name);
        }
    }
}

fn tell(op: u8, name: &str) {
    if let Some(connection) = connection() {
        let mut message = Vec::with_capacity(1 + name.len());
        message.push(op);
        message.extend_from_slice(name.as_bytes());
        if let Err(e) = sys::send(connection.as_fd(), &message) {
            log::warn!("mp-shm: resource tracker unreachable: {e}");
        }
    }
}

/// How a segment is registered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Registration {
    /// Reported on stderr if the tree ends without unlinking it (CPython's "leaked" warning).
    Reported,
    /// Its lifetime is the tree's: cleaned up silently.
    Quiet,
}

/// A segment this process created.
pub(crate) fn register(name: &str, registration: Registration) {
    tell(if matches!(registration, Registration::Quiet) { b'Q' } else { b'R' }, name);
}

/// A segment this process created and has now unlinked.
pub(crate) fn unregister(name: &str) {
    // A tree without a tracker registered nothing: do not start one just to forget a name.
    if CONNECTION.get().is_some() || mp_process::inherited(ADDRESS_KEY).is_some() {
        tell(b'U', name);
    }
}

/// The tracker process.
fn serve(listener: Handle) {
    sys::ignore_termination_signals();
    let me = std::process::id();
    sweep_orphans((me, mp_process::process_start_time(me).unwrap_or(0)));
    let listener = OwnedFd::from(listener);
    let mut root = sys::ProcessWatch::new(mp_process::parent_process().map_or(0, |p| p.pid()));
    let mut connections: Vec<OwnedFd> = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut quiet: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        if connections.is_empty() && root.fd().is_none() {
            // Done only if no connection waits in the backlog (a creator that died young still queued one,
            // with its registrations).
            match sys::poll(&[listener.as_fd()], Some(std::time::Duration::ZERO)) {
                Ok(ready) if ready[0] => {}
                _ => break,
            }
        }
        let mut fds = vec![listener.as_fd()];
        fds.extend(root.fd());
        let first_connection = fds.len();
        fds.extend(connections.iter().map(AsFd::as_fd));
        let Ok(ready) = sys::poll(&fds, None) else { break };
        let root_ended = root.fd().is_some() && ready[1];
        let mut closed = Vec::new();
        for (i, connection) in connections.iter().enumerate() {
            if !ready[first_connection + i] {
                continue;
            }
            let mut buf = [0u8; 512];
            match sys::recv(connection.as_fd(), &mut buf) {
                Ok(0) | Err(_) => closed.push(i),
                Ok(n) => {
                    let name = String::from_utf8_lossy(&buf[1..n]).into_owned();
                    match buf[0] {
                        b'R' => *names.entry(name).or_default() += 1,
                        b'Q' => *quiet.entry(name).or_default() += 1,
                        b'U' => {
                            for table in [&mut names, &mut quiet] {
                                if let Some(count) = table.get_mut(&name) {
                                    *count -= 1;
                                    if *count == 0 {
                                        table.remove(&name);
                                    }
                                    break;
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        for i in closed.into_iter().rev() {
            connections.remove(i);
        }
        if root_ended {
            root.ended();
        }
        if ready[0] {
            if let Ok(connection) = sys::accept(listener.as_fd()) {
                connections.push(connection);
            }
        }
    }
    // A name registered before its segment was made (a creator killed in between) has nothing to unlink and
    // is not reported.
    let leaked: Vec<&String> = names.keys().filter(|name| sys::unlink(name).is_ok()).collect();
    if !leaked.is_empty() {
        eprintln!(
            "mp-shm resource tracker: there appear to be {} leaked shared memory segment(s) to clean up at shutdown: {:?}",
            leaked.len(),
            leaked
        );
    }
    for name in quiet.keys() {
        log::debug!(target: "mp", "resource tracker: unlinking shared memory segment {name}");
        let _ = sys::unlink(name);
    }
}
