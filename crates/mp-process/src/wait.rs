//! Waiting on several processes (and, from higher crates, connections) at once.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::sys;

/// Something [`wait`] can watch: borrowed from a [`Process`](crate::Process) or, in `mp-ipc`, a connection.
#[derive(Debug, Clone, Copy)]
pub struct Sentinel<'a> {
    fd: BorrowedFd<'a>,
}

impl<'a> Sentinel<'a> {
    /// A sentinel that is ready when `fd` is readable (or hung up).
    pub fn new(fd: BorrowedFd<'a>) -> Self {
        Sentinel { fd }
    }
}

/// An object with a [`Sentinel`] (CPython: objects accepted by `multiprocessing.connection.wait`).
pub trait Waitable {
    /// The sentinel; `None` when the object can never become ready (a process not yet started). An error
    /// when the descriptor cannot be had (a process's is opened on first use: `EMFILE`, say).
    fn sentinel(&self) -> io::Result<Option<Sentinel<'_>>>;

    /// Whether the object is ready without looking at the sentinel (a connection holding buffered data).
    fn ready_now(&self) -> bool {
        false
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`: no limit), and returns the
/// indices of the ready ones, in order (empty on timeout). A process is ready once it has ended.
///
/// ```
/// # mp_process::init();
/// use std::time::Duration;
/// use mp_process::{Process, wait};
///
/// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
///
/// let mut quick = Process::new(nap, 10);
/// let mut slow = Process::new(nap, 10_000);
/// quick.start()?;
/// slow.start()?;
/// assert_eq!(wait(&[&quick, &slow], Some(Duration::from_secs(5)))?, vec![0]);
/// slow.kill()?;
/// # quick.join()?; let _ = slow.join();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let ready_now: Vec<bool> = objects.iter().map(|o| o.ready_now()).collect();
    let mut watched: Vec<(usize, BorrowedFd<'_>)> = Vec::with_capacity(objects.len());
    for (i, object) in objects.iter().enumerate() {
        if ready_now[i] {
            continue;
        }
        if let Some(sentinel) = object.sentinel()? {
            watched.push((i, sentinel.fd));
        }
    }
    // With something ready already, the others are only looked at.
    let timeout = if ready_now.contains(&true) { Some(Duration::ZERO) } else { timeout };
    if watched.is_empty() {
        if ready_now.contains(&true) {
            return Ok((0..objects.len()).filter(|i| ready_now[*i]).collect());
        }
        if let Some(timeout) = timeout {
            std::thread::sleep(timeout);
            return Ok(Vec::new());
        }
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "wait() with nothing that can become ready"));
    }
    let fds: Vec<BorrowedFd<'_>> = watched.iter().map(|(_, fd)| *fd).collect();
    let ready = sys::poll_readable(&fds, timeout)?;
    let mut out: Vec<usize> = (0..objects.len()).filter(|i| ready_now[*i]).collect();
    out.extend(watched.iter().zip(ready).filter(|(_, r)| *r).map(|((i, _), _)| *i));
    out.sort_unstable();
    Ok(out)
}
