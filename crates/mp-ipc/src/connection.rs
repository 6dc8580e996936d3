//! [`Connection`]: one end of a pipe or socket carrying framed messages, and [`pipe`].

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use mp_process::{Handle, Sentinel, Waitable};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::frame::{self, Length};
use crate::{RecvError, SendError, sys};

/// The default largest message a connection accepts: a forged header cannot make it allocate more.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 30;

/// How much is read from the socket at once; small messages then cost one system call each.
const READ_CHUNK: usize = 64 * 1024;
/// A receive buffer that grew past this for one large message is given back once it is empty.
const KEPT_BUFFER: usize = 1 << 20;

/// States of `Connection::passed`.
const NOT_PASSED: u8 = 0;
const PASSED: u8 = 1;
const PASSED_AGAIN: u8 = 2;

/// Which ways a [`pipe`] carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ends send and receive (CPython's `Pipe(duplex=True)`, the default).
    Duplex,
    /// The first end only receives, the second only sends (CPython's `Pipe(duplex=False)`).
    OneWay,
}

/// A pair of connected [`Connection`]s (CPython's `multiprocessing.Pipe`).
///
/// ```
/// use mp_ipc::{Direction, pipe};
/// let (mut a, mut b) = pipe(Direction::Duplex)?;
/// a.send(&("hello", 42u32))?;
/// let (word, n): (String, u32) = b.recv()?;
/// assert_eq!((word.as_str(), n), ("hello", 42));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn pipe(direction: Direction) -> std::io::Result<(Connection, Connection)> {
    let (a, b) = sys::stream_pair()?;
    Ok(match direction {
        Direction::Duplex => (Connection::new(a, true, true), Connection::new(b, true, true)),
        Direction::OneWay => {
            sys::shutdown_write(a.as_fd());
            sys::shutdown_read(b.as_fd());
            (Connection::new(a, true, false), Connection::new(b, false, true))
        }
    })
}

/// One end of a connection (CPython's `multiprocessing.connection.Connection`).
///
/// Messages are framed as CPython frames them (4-byte big-endian length, or `-1` and an 8-byte length), so
/// `send_bytes` / `recv_bytes` interoperate with Python. [`send`](Self::send) / [`recv`](Self::recv) carry
/// serde values encoded with postcard (Python's `send` pickles instead). A connection passed to a child
/// (inside its arguments) arrives there as a connection to the same peer.
///
/// # One end, several readers
///
/// An end with one reader reads ahead (up to 64 KiB at once), so that a burst of small messages costs one
/// system call. An end that may have several readers reads exactly up to each message's end instead, as
/// CPython always does, so that readers taking turns each get whole messages and none swallows another's.
/// The rule, checked:
///
/// - Passing an end on (serializing it: into a child's arguments, or `to_bytes_with_handles`) hands the
///   reading over: the copy reads, with any bytes this end had read ahead, and receiving here is
///   [`RecvError::PassedOn`] (sending stays possible). Passing it a second time is a serialization error.
/// - To read from several places, share the end first: [`try_clone`](Self::try_clone) makes a second
///   connection to it, and both (and every copy passed on from a shared end) read exactly up to message
///   boundaries.
/// - Lending the descriptor ([`AsFd`] / [`AsRawFd`], CPython's `fileno()`) shares the end too, so that an event
///   loop waiting on the descriptor sees every message not yet received.
///
/// The one sharing mp cannot see is an end a `fork` child reaches through a `static` rather than its
/// arguments: clone it before starting the child.
pub struct Connection {
    fd: Option<OwnedFd>,
    readable: bool,
    writable: bool,
    /// An earlier error lost the message boundaries: no more receiving.
    lost_place: bool,
    max_message: usize,
    /// Received bytes not yet handed out: `buf[pos..end]`. `buf` is initialized (zeroed) to its length.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// The stream offset of `buf[0]`.
    base: u64,
    /// Descriptors that arrived with the byte at a stream offset, oldest first (see [`recv_handle`](Self::recv_handle)).
    handles: VecDeque<(u64, Vec<OwnedFd>)>,
    /// Another holder may read this end: reads stop at message boundaries.
    shared: AtomicBool,
    /// Whether this end was passed on (serialized while not shared; its copy reads, this one may not):
    /// [`NOT_PASSED`], [`PASSED`], or [`PASSED_AGAIN`] once a second pass was refused.
    passed: AtomicU8,
    /// While set, reads give up at this instant with [`RecvError::Timeout`] (the authentication handshake).
    read_deadline: Option<Instant>,
}

impl Connection {
    pub(crate) fn new(fd: OwnedFd, readable: bool, writable: bool) -> Self {
        Connection {
            fd: Some(fd),
            readable,
            writable,
            lost_place: false,
            max_message: DEFAULT_MAX_MESSAGE,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            base: 0,
            handles: VecDeque::new(),
            shared: AtomicBool::new(false),
            passed: AtomicU8::new(NOT_PASSED),
            read_deadline: None,
        }
    }

    /// Makes reads fail with [`RecvError::Timeout`] once `deadline` passes (`None`: no limit). A timeout in
    /// the middle of a message loses the stream's place.
    pub(crate) fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.read_deadline = deadline;
    }

    /// The largest message this end accepts and sends.
    pub fn max_message_size(&self) -> usize {
        self.max_message
    }

    /// Sets the largest message this end accepts and sends (default [`DEFAULT_MAX_MESSAGE`]).
    pub fn set_max_message_size(&mut self, max: usize) {
        self.max_message = max;
    }

    /// Whether this end is closed.
    pub fn closed(&self) -> bool {
        self.fd.is_none()
    }

    /// Whether this end can receive: not once it has lost its place in the stream (a refused oversized
    /// message, a truncated or forged frame), after which receiving is [`RecvError::NotReadable`], nor once it
    /// was passed on ([`RecvError::PassedOn`]).
    pub fn readable(&self) -> bool {
        self.readable && self.fd.is_some() && !self.lost_place && !self.passed_on()
    }

    /// Whether this end can send.
    pub fn writable(&self) -> bool {
        self.writable && self.fd.is_some()
    }

    /// Closes this end (dropping it does the same); the peer then reads end of file.
    pub fn close(&mut self) {
        self.fd = None;
        self.buf = Vec::new();
        self.pos = 0;
        self.end = 0;
        self.handles.clear();
    }

    /// Another connection to the same end (a duplicate of the descriptor): messages sent on either go out
    /// in order of sending, and each message received is received by one of them. Both read exactly up to
    /// message boundaries from now on (see [One end, several readers](Self#one-end-several-readers)). Bytes
    /// this end had already read ahead stay with it. An end already passed on cannot be cloned.
    pub fn try_clone(&self) -> std::io::Result<Connection> {
        let fd = self.fd.as_ref().ok_or_else(|| std::io::Error::other("cannot clone a closed connection"))?;
        if self.passed_on() {
            return Err(std::io::Error::other("cannot clone an end that was passed on: its copy reads it now"));
        }
        let mut clone = Connection::new(fd.try_clone()?, self.readable, self.writable);
        clone.max_message = self.max_message;
        clone.lost_place = self.lost_place;
        *clone.shared.get_mut() = true;
        self.shared.store(true, Ordering::Relaxed);
        Ok(clone)
    }

    /// Whether this end reads exactly up to message boundaries because it may have other readers (see
    /// [One end, several readers](Self#one-end-several-readers)).
    pub fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Relaxed)
    }

    /// Sends the descriptor `fd` to the peer (CPython's `multiprocessing.reduction.send_handle`, wire for
    /// wire: one byte, the count of descriptors, with the descriptor attached as `SCM_RIGHTS`). The peer gets
    /// its own duplicate with [`recv_handle`](Self::recv_handle); `fd` stays open here. Unix sockets only
    /// (a TCP connection fails with [`SendError::Io`]).
    pub fn send_handle(&mut self, fd: impl AsFd) -> Result<(), SendError> {
        let sock = self.send_fd()?;
        sys::send_with_fd(sock, 1, fd.as_fd()).map_err(send_error)
    }

    /// Receives a descriptor sent with [`send_handle`](Self::send_handle) (or by CPython's `send_handle`),
    /// close-on-exec. When the next thing on the connection is a message rather than a descriptor, this is
    /// [`RecvError::NoHandle`] and the message stays to be received; end of file is [`RecvError::Eof`].
    pub fn recv_handle(&mut self) -> Result<OwnedFd, RecvError> {
        self.recv_fd()?;
        if !self.fill(1)? {
            return Err(RecvError::Eof);
        }
        let at = self.base + self.pos as u64;
        while self.handles.front().is_some_and(|(offset, _)| *offset < at) {
            self.handles.pop_front();
        }
        if self.handles.front().is_none_or(|(offset, _)| *offset != at) {
            return Err(RecvError::NoHandle);
        }
        let (_, fds) = self.handles.pop_front().expect("checked above");
        let count = self.buf[self.pos];
        self.pos += 1;
        self.settle();
        if usize::from(count) != fds.len() % 256 {
            return Err(RecvError::BadHandle(format!(
                "the marker byte announces {count} descriptors, {} arrived",
                fds.len()
            )));
        }
        // One is asked for; any others are closed (CPython's `recv_handle` takes one too).
        fds.into_iter().next().ok_or_else(|| RecvError::BadHandle("no descriptor arrived".into()))
    }

    fn send_fd(&self) -> Result<BorrowedFd<'_>, SendError> {
        match &self.fd {
            Some(fd) if self.writable => Ok(fd.as_fd()),
            _ => Err(SendError::NotWritable),
        }
    }

    /// Sends `data` as one message (CPython's `send_bytes`).
    pub fn send_bytes(&mut self, data: &[u8]) -> Result<(), SendError> {
        if data.len() > self.max_message {
            return Err(SendError::TooLarge { len: data.len(), max: self.max_message });
        }
        let fd = self.send_fd()?;
        let (header, n) = frame::header(data.len());
        sys::send_parts(fd, &header[..n], data).map_err(send_error)
    }

    /// Sends a value, serialized with postcard inside this call (an unserializable value is an error here,
    /// and nothing is sent).
    pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SendError> {
        let bytes = mp_process::codec::to_vec(value).map_err(SendError::Serialize)?;
        self.send_bytes(&bytes)
    }

    fn recv_fd(&self) -> Result<BorrowedFd<'_>, RecvError> {
        match &self.fd {
            Some(_) if self.passed_on() => Err(RecvError::PassedOn),
            Some(fd) if self.readable && !self.lost_place => Ok(fd.as_fd()),
            _ => Err(RecvError::NotReadable),
        }
    }

    fn passed_on(&self) -> bool {
        self.passed.load(Ordering::Relaxed) != NOT_PASSED
    }

    fn buffered(&self) -> usize {
        self.end - self.pos
    }

    /// Reads until at least `need` bytes are buffered. `Ok(false)`: end of file first. An error leaves
    /// what was buffered in place (the caller decides whether the stream lost its place).
    fn fill(&mut self, need: usize) -> Result<bool, RecvError> {
        while self.buffered() < need {
            self.recv_fd()?;
            let fd = self.fd.as_ref().expect("checked by recv_fd").as_fd();
            self.await_readable(fd)?;
            if self.pos > 0 && self.pos >= self.end / 2 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.base += self.pos as u64;
                self.end -= self.pos;
                self.pos = 0;
            }
            let want = need - self.buffered();
            // Grow as bytes arrive (at most doubling), not by what a header claims: a forged header that
            // claims a gigabyte reserves nothing more until the bytes come.
            let room = want.min(self.end.max(READ_CHUNK)).max(READ_CHUNK);
            if self.buf.len() - self.end < room {
                self.buf.resize(self.end + room, 0);
            }
            let limit = if self.shared.load(Ordering::Relaxed) { want.min(room) } else { self.buf.len() - self.end };
            let mut fds = Vec::new();
            let n =
                sys::recv_with_fds(fd, &mut self.buf[self.end..self.end + limit], &mut fds).map_err(RecvError::Io)?;
            if n == 0 {
                return Ok(false);
            }
            self.end += n;
            if !fds.is_empty() {
                self.handles.push_back((self.base + self.end as u64 - 1, fds));
            }
        }
        Ok(true)
    }

    /// While a read deadline is set, waits for `fd` to be readable until then ([`RecvError::Timeout`]).
    fn await_readable(&self, fd: BorrowedFd<'_>) -> Result<(), RecvError> {
        if let Some(deadline) = self.read_deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if !sys::poll_readable(fd, Some(remaining)).map_err(RecvError::Io)? {
                return Err(RecvError::Timeout);
            }
        }
        Ok(())
    }

    /// Reads one frame's header and returns the payload length, enforcing `max`.
    fn frame_len(&mut self, max: usize) -> Result<usize, RecvError> {
        if !self.fill(4)? {
            let got = self.buffered();
            return Err(if got == 0 {
                RecvError::Eof
            } else {
                self.lose_place(RecvError::Truncated { got, expected: 4 })
            });
        }
        let short: [u8; 4] = self.buf[self.pos..self.pos + 4].try_into().expect("4 bytes");
        let (len, header) = match frame::short(short).map_err(|e| self.lose_place(e))? {
            Length::Short(len) => (len, 4),
            Length::Long => {
                if !self.fill(12)? {
                    let got = self.buffered();
                    return Err(self.lose_place(RecvError::Truncated { got, expected: 12 }));
                }
                let long: [u8; 8] = self.buf[self.pos + 4..self.pos + 12].try_into().expect("8 bytes");
                (frame::long(long).map_err(|e| self.lose_place(e))?, 12)
            }
        };
        if len > max {
            return Err(self.lose_place(RecvError::TooLarge { len, max }));
        }
        self.pos += header;
        Ok(len)
    }

    fn lose_place(&mut self, error: RecvError) -> RecvError {
        self.lost_place = true;
        error
    }

    /// Receives one whole frame and hands its payload to `f` (no copy when it is buffered).
    fn with_frame<R>(&mut self, max: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R, RecvError> {
        self.recv_fd()?;
        let len = self.frame_len(max)?;
        self.with_payload(len, f)
    }

    /// Buffers the `len` bytes of the payload whose header was just read and hands them to `f`. The header is
    /// consumed: any failure loses the stream's place.
    fn with_payload<R>(&mut self, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R, RecvError> {
        if !self.fill(len).map_err(|e| self.lose_place(e))? {
            let got = self.buffered();
            return Err(self.lose_place(RecvError::Truncated { got, expected: len }));
        }
        let result = f(&self.buf[self.pos..self.pos + len]);
        self.pos += len;
        self.settle();
        Ok(result)
    }

    /// An emptied buffer starts again at the front; one that grew for a large message is given back.
    /// Descriptors that arrived with bytes now received as a message are closed.
    fn settle(&mut self) {
        if self.pos == self.end {
            self.base += self.end as u64;
            self.pos = 0;
            self.end = 0;
            self.handles.clear();
            if self.buf.len() > KEPT_BUFFER {
                self.buf = Vec::new();
            }
        }
    }

    /// Receives one frame's payload as an owned vector. A payload larger than a read chunk is read straight
    /// into the vector, grown as its bytes arrive: the message is held once, not buffered and then copied.
    fn owned_frame(&mut self, max: usize) -> Result<Vec<u8>, RecvError> {
        self.recv_fd()?;
        let len = self.frame_len(max)?;
        if len <= READ_CHUNK || self.buffered() >= len {
            return self.with_payload(len, <[u8]>::to_vec);
        }
        // Everything buffered belongs to this message (it is longer than what is buffered).
        let mut out = self.buf[self.pos..self.end].to_vec();
        self.pos = self.end;
        self.settle();
        let from_buffer = out.len();
        let mut filled = from_buffer;
        while filled < len {
            let fd = self.recv_fd()?;
            if let Err(e) = self.await_readable(fd) {
                return Err(self.lose_place(e));
            }
            if out.len() == filled {
                out.resize(len.min(filled.max(READ_CHUNK) * 2), 0);
            }
            let n = match sys::recv_into(fd, &mut out[filled..]) {
                Ok(n) => n,
                Err(e) => return Err(self.lose_place(RecvError::Io(e))),
            };
            if n == 0 {
                return Err(self.lose_place(RecvError::Truncated { got: filled, expected: len }));
            }
            filled += n;
        }
        self.base += (len - from_buffer) as u64;
        Ok(out)
    }

    /// Receives one message's bytes (CPython's `recv_bytes`).
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>, RecvError> {
        self.owned_frame(self.max_message)
    }

    /// Receives one message's bytes, refusing one longer than `max_length` (CPython's
    /// `recv_bytes(maxlength)`; like CPython, the connection is unusable for receiving afterwards).
    pub fn recv_bytes_max(&mut self, max_length: usize) -> Result<Vec<u8>, RecvError> {
        self.owned_frame(max_length.min(self.max_message))
    }

    /// Receives one message into `buf`, returning its length (CPython's `recv_bytes_into`). A message longer
    /// than `buf` is [`RecvError::BufferTooShort`], which carries it whole.
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        self.with_frame(self.max_message, |message| {
            if message.len() > buf.len() {
                Err(RecvError::BufferTooShort { message: message.to_vec() })
            } else {
                buf[..message.len()].copy_from_slice(message);
                Ok(message.len())
            }
        })?
    }

    /// Receives a value sent with [`send`](Self::send). Bytes that do not decode as `T` are
    /// [`RecvError::Decode`], and the connection stays at the next message.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, RecvError> {
        self.with_frame(self.max_message, |bytes| mp_process::codec::from_bytes(bytes).map_err(RecvError::Decode))?
    }

    /// Like [`recv`](Self::recv), waiting at most `timeout` for the message to start.
    pub fn recv_timeout<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<T, RecvError> {
        if self.poll(Some(timeout))? { self.recv() } else { Err(RecvError::Timeout) }
    }

    /// Whether a message (or end of file) is ready to be received, waiting at most `timeout` (`None`: no
    /// limit; CPython's `poll`).
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool, RecvError> {
        // A connection that lost its place has nothing to receive ever again: said at once, not "ready".
        let fd = self.recv_fd()?;
        if self.buffered() > 0 {
            return Ok(true);
        }
        sys::poll_readable(fd, timeout).map_err(RecvError::Io)
    }
}

/// A failed send: `EPIPE` (the peer closed) is [`SendError::BrokenPipe`].
fn send_error(e: std::io::Error) -> SendError {
    match e.raw_os_error() {
        Some(code) if code == rustix::io::Errno::PIPE.raw_os_error() => SendError::BrokenPipe,
        _ => SendError::Io(e),
    }
}

/// A connection over a connected Unix stream socket (both directions).
impl From<UnixStream> for Connection {
    fn from(stream: UnixStream) -> Self {
        Connection::new(stream.into(), true, true)
    }
}

/// A connection over a connected TCP stream (both directions; Nagle's algorithm is turned off, since every
/// message leaves in one write).
impl From<std::net::TcpStream> for Connection {
    fn from(stream: std::net::TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Connection::new(stream.into(), true, true)
    }
}

impl Waitable for Connection {
    /// Ready when a message (or end of file) can be received.
    fn sentinel(&self) -> std::io::Result<Option<Sentinel<'_>>> {
        Ok(self.fd.as_ref().filter(|_| self.readable).map(|fd| Sentinel::new(fd.as_fd())))
    }

    /// A connection that lost its place, or was passed on, is ready at once, so that a `wait` loop calls
    /// `recv` and learns it (a sentinel that never fires would leave it waiting).
    fn ready_now(&self) -> bool {
        (self.readable && self.buffered() > 0) || self.lost_place || self.passed_on()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd)
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("buffered", &self.buffered())
            .finish()
    }
}

/// Lends the descriptor (CPython's `fileno()`), to wait on it in another event loop: the end reads exactly up
/// to message boundaries from now on, so that the descriptor is readable whenever a message is waiting (see
/// [One end, several readers](Connection#one-end-several-readers); bytes read ahead before are still there:
/// [`poll`](Connection::poll) with a zero timeout tells).
impl AsFd for Connection {
    /// # Panics
    ///
    /// On a closed connection (it has no descriptor).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.store(true, Ordering::Relaxed);
        self.fd.as_ref().expect("the connection is closed: it has no descriptor").as_fd()
    }
}

/// As [`AsFd`]; `-1` for a closed connection.
impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        self.shared.store(true, Ordering::Relaxed);
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }
}

/// A connection travels into a child as a duplicate of its descriptor, so the child holds an end of the same
/// connection. An end with one reader hands its reading over to the copy, with the bytes it had read ahead;
/// a shared end stays readable here, and its copy is shared too (see
/// [One end, several readers](Connection#one-end-several-readers)). Serializing a closed end, or passing
/// one a second time, is an error.
impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fd = self.fd.as_ref().ok_or_else(|| serde::ser::Error::custom("cannot pass a closed connection"))?;
        let shared = self.shared.load(Ordering::Relaxed);
        if !shared {
            // The second walk of a value that failed (to learn why) answers as the first walk did.
            let refused = if mp_process::codec::probing() {
                self.passed.load(Ordering::Relaxed) == PASSED_AGAIN
            } else {
                self.passed.compare_exchange(NOT_PASSED, PASSED, Ordering::Relaxed, Ordering::Relaxed).is_err()
            };
            if refused {
                self.passed.store(PASSED_AGAIN, Ordering::Relaxed);
                return Err(serde::ser::Error::custom(
                    "this end of the connection was already passed on; `try_clone` it to pass it more than once",
                ));
            }
        }
        let handle = Handle::from(fd.try_clone().map_err(serde::ser::Error::custom)?);
        let pending: &[u8] = if shared { &[] } else { &self.buf[self.pos..self.end] };
        (handle, self.readable, self.writable, self.max_message, shared, pending).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (handle, readable, writable, max_message, shared, pending): (Handle, bool, bool, usize, bool, Vec<u8>) =
            Deserialize::deserialize(deserializer)?;
        let mut connection = Connection::new(handle.into_owned_fd(), readable, writable);
        connection.max_message = max_message;
        connection.end = pending.len();
        connection.buf = pending;
        *connection.shared.get_mut() = shared;
        Ok(connection)
    }
}
