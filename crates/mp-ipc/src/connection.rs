//! [`Connection`]: one end of a pipe or socket carrying framed messages, and [`pipe`].

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
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
pub struct Connection {
    fd: Option<OwnedFd>,
    readable: bool,
    writable: bool,
    /// An earlier error lost the message boundaries: no more receiving.
    lost_place: bool,
    max_message: usize,
    /// Received bytes not yet handed out: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
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
    /// message, a truncated or forged frame), after which receiving is [`RecvError::NotReadable`].
    pub fn readable(&self) -> bool {
        self.readable && self.fd.is_some() && !self.lost_place
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
        sys::send_parts(fd, &header[..n], data).map_err(|e| match e.raw_os_error() {
            Some(code) if code == rustix::io::Errno::PIPE.raw_os_error() => SendError::BrokenPipe,
            _ => SendError::Io(e),
        })
    }

    /// Sends a value, serialized with postcard inside this call (an unserializable value is an error here,
    /// and nothing is sent).
    pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SendError> {
        let bytes = mp_process::codec::to_vec(value).map_err(SendError::Serialize)?;
        self.send_bytes(&bytes)
    }

    fn recv_fd(&self) -> Result<BorrowedFd<'_>, RecvError> {
        match &self.fd {
            Some(fd) if self.readable && !self.lost_place => Ok(fd.as_fd()),
            _ => Err(RecvError::NotReadable),
        }
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads until at least `need` bytes are buffered. `Ok(false)`: end of file first. An error leaves
    /// what was buffered in place (the caller decides whether the stream lost its place).
    fn fill(&mut self, need: usize) -> Result<bool, RecvError> {
        while self.buffered() < need {
            self.recv_fd()?;
            let fd = self.fd.as_ref().expect("checked by recv_fd").as_fd();
            self.await_readable(fd)?;
            if self.pos > 0 && self.pos >= self.buf.len() / 2 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            // Grow as bytes arrive (at most doubling), not by what a header claims: a forged header that
            // claims a gigabyte reserves nothing more until the bytes come.
            self.buf.reserve((need - self.buffered()).min(self.buf.len().max(READ_CHUNK)).max(READ_CHUNK));
            if sys::recv_append(fd, &mut self.buf).map_err(RecvError::Io)? == 0 {
                return Ok(false);
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
    fn settle(&mut self) {
        if self.pos == self.buf.len() {
            self.pos = 0;
            if self.buf.capacity() > KEPT_BUFFER {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
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
        let mut out = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        self.settle();
        let mut filled = out.len();
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
        self.with_frame(self.max_message, |bytes| {
            postcard::from_bytes(bytes).map_err(|e| RecvError::Decode(e.to_string()))
        })?
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

    /// A connection that lost its place is ready at once, so that a `wait` loop calls `recv` and learns it
    /// (a sentinel that never fires would leave it waiting).
    fn ready_now(&self) -> bool {
        (self.readable && self.buffered() > 0) || self.lost_place
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

/// A connection travels into a child as a duplicate of its descriptor (plus any bytes already buffered),
/// so the child holds an end of the same connection. Serializing a closed connection is an error.
impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fd = self.fd.as_ref().ok_or_else(|| serde::ser::Error::custom("cannot pass a closed connection"))?;
        let handle = Handle::from(fd.try_clone().map_err(serde::ser::Error::custom)?);
        (handle, self.readable, self.writable, self.max_message, &self.buf[self.pos..]).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (handle, readable, writable, max_message, pending): (Handle, bool, bool, usize, Vec<u8>) =
            Deserialize::deserialize(deserializer)?;
        let mut connection = Connection::new(handle.into_owned_fd(), readable, writable);
        connection.max_message = max_message;
        connection.buf = pending;
        Ok(connection)
    }
}
