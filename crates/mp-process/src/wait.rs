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
    /// The sentinel; `None` when the object can never become ready (a process not yet started).
    fn sentinel(&self) -> Option<Sentinel<'_>>;

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
    let ready_now: Vec<usize> = objects.iter().enumerate().filter(|(_, o)| o.ready_now()).map(|(i, _)| i).collect();
    if !ready_now.is_empty() {
        return Ok(ready_now);
    }
    let watched: Vec<(usize, BorrowedFd<'_>)> =
        objects.iter().enumerate().filter_map(|(i, o)| o.sentinel().map(|s| (i, s.fd))).collect();
    if watched.is_empty() {
        if let Some(timeout) = timeout {
            std::thread::sleep(timeout);
            return Ok(Vec::new());
        }
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "wait() with nothing that can become ready"));
    }
    let fds: Vec<BorrowedFd<'_>> = watched.iter().map(|(_, fd)| *fd).collect();
    let ready = sys::poll_readable(&fds, timeout)?;
    Ok(watched.iter().zip(ready).filter(|(_, r)| *r).map(|((i, _), _)| *i).collect())
}
