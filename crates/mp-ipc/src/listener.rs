//! [`Listener`] and [`Client`]: connections between processes that were not started by one another
//! (CPython's `multiprocessing.connection.Listener` / `Client`), optionally authenticated with a shared key.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{Address, ConnectError, Connection, auth, sys};

/// How long the authentication handshake may take before it fails (CPython's `CONNECTION_TIMEOUT`).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// A listening socket that hands out authenticated [`Connection`]s (CPython's `Listener`).
///
/// ```
/// use mp_ipc::{Client, Listener};
///
/// let listener = Listener::builder().authkey(b"secret").bind()?;
/// let address = listener.address().clone();
/// let client = std::thread::spawn(move || {
///     let mut conn = Client::new(address).authkey(b"secret").connect().unwrap();
///     conn.send(&[4, 4]).unwrap();
///     conn.recv::<i32>().unwrap()
/// });
/// let mut conn = listener.accept()?;
/// let [a, b]: [i32; 2] = conn.recv()?;
/// conn.send(&(a + b))?;
/// assert_eq!(client.join().unwrap(), 8);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Listener {
    socket: Option<OwnedFd>,
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
    /// A socket file (and the private directory made for it) to remove on close.
    cleanup: Option<(PathBuf, Option<PathBuf>)>,
}

/// Options for a [`Listener`]: address, authentication key, backlog, handshake timeout.
#[derive(Debug, Clone)]
pub struct ListenerBuilder {
    address: Option<Address>,
    authkey: Option<Vec<u8>>,
    backlog: u32,
    handshake_timeout: Duration,
}

impl ListenerBuilder {
    /// Where to listen. Default: a socket file in a fresh private (mode 0700) temporary directory, removed
    /// with the listener (CPython's `arbitrary_address('AF_UNIX')`).
    pub fn address(mut self, address: impl Into<Address>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// The shared secret clients must prove they hold (CPython's `authkey`). Default: none, no
    /// authentication.
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.authkey = Some(key.to_vec());
        self
    }

    /// How many connections may wait to be accepted (CPython's `backlog`, default 1).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// How long a client's handshake may take in [`Listener::accept`] (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]), so that a silent client cannot hold the listener forever.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Binds and listens. A bound address is [`ConnectError::AddressInUse`].
    pub fn bind(self) -> Result<Listener, ConnectError> {
        let (address, private_dir) = match self.address {
            Some(address) => (address, None),
            None => {
                let dir = sys::private_temp_dir().map_err(ConnectError::Io)?;
                (Address::Unix(dir.join("listener")), Some(dir))
            }
        };
        let socket = match sys::listen(&address, self.backlog) {
            Ok(socket) => socket,
            Err(e) => {
                if let Some(dir) = &private_dir {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(ConnectError::from_os(&address, e));
            }
        };
        let address = match address {
            Address::Tcp(_) => Address::Tcp(sys::local_tcp_address(socket.as_fd()).map_err(ConnectError::Io)?),
            other => other,
        };
        let cleanup = match &address {
            Address::Unix(path) => Some((path.clone(), private_dir)),
            _ => None,
        };
        Ok(Listener {
            socket: Some(socket),
            address,
            authkey: self.authkey,
            handshake_timeout: self.handshake_timeout,
            cleanup,
        })
    }
}

impl Listener {
    /// Options: address, authentication key, backlog, handshake timeout.
    pub fn builder() -> ListenerBuilder {
        ListenerBuilder { address: None, authkey: None, backlog: 1, handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT }
    }

    /// Listens on `address` without authentication.
    pub fn bind(address: impl Into<Address>) -> Result<Self, ConnectError> {
        Self::builder().address(address).bind()
    }

    /// The address clients connect to.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for a client and authenticates it (when the listener has a key). A failed handshake is an
    /// error for this client only: its connection is closed, and the listener goes on.
    pub fn accept(&self) -> Result<Connection, ConnectError> {
        self.accept_until(None)
    }

    /// Like [`accept`](Self::accept), giving up with [`ConnectError::Timeout`] when no client arrives
    /// within `timeout`.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection, ConnectError> {
        self.accept_until(Instant::now().checked_add(timeout))
    }

    fn accept_until(&self, deadline: Option<Instant>) -> Result<Connection, ConnectError> {
        let socket = self.socket.as_ref().ok_or(ConnectError::Closed)?;
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let stream = sys::accept(socket.as_fd(), remaining).map_err(ConnectError::Io)?.ok_or(ConnectError::Timeout)?;
        let mut conn = Connection::new(stream, true, true);
        if let Some(key) = &self.authkey {
            conn.set_read_deadline(Instant::now().checked_add(self.handshake_timeout));
            auth::deliver_challenge(&mut conn, key)?;
            auth::answer_challenge(&mut conn, key)?;
            conn.set_read_deadline(None);
        }
        Ok(conn)
    }

    /// Stops listening and removes the socket file (and the private directory made for it). Dropping the
    /// listener does the same; accepting afterwards is [`ConnectError::Closed`].
    pub fn close(&mut self) {
        self.socket = None;
        if let Some((path, dir)) = self.cleanup.take() {
            let _ = std::fs::remove_file(path);
            if let Some(dir) = dir {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("closed", &self.socket.is_none())
            .finish()
    }
}

/// Connects to a [`Listener`] (CPython's `Client(address, authkey=...)`), as a builder:
/// `Client::new(address).authkey(key).connect()`.
#[derive(Clone)]
pub struct Client {
    address: Address,
    authkey: Option<Vec<u8>>,
    timeout: Duration,
}

impl Client {
    /// A client for `address`, without authentication, with a [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn new(address: impl Into<Address>) -> Self {
        Client { address: address.into(), authkey: None, timeout: DEFAULT_HANDSHAKE_TIMEOUT }
    }

    /// The shared secret to prove (and to demand of the listener: authentication is mutual).
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.authkey = Some(key.to_vec());
        self
    }

    /// How long connecting and the handshake may take, together ([`ConnectError::Timeout`] after it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects (and authenticates). Nobody listening is [`ConnectError::Refused`]; a wrong key is
    /// [`ConnectError::Authentication`], and no application message has passed.
    pub fn connect(&self) -> Result<Connection, ConnectError> {
        let deadline = Instant::now().checked_add(self.timeout);
        let stream = sys::connect(&self.address, self.timeout).map_err(|e| ConnectError::from_os(&self.address, e))?;
        let mut conn = Connection::new(stream, true, true);
        if let Some(key) = &self.authkey {
            conn.set_read_deadline(deadline);
            auth::answer_challenge(&mut conn, key)?;
            auth::deliver_challenge(&mut conn, key)?;
            conn.set_read_deadline(None);
        }
        Ok(conn)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}
