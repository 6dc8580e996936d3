//! [`Address`]: where a listener listens and a client connects.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a [`Listener`](crate::Listener) listens (CPython's `address` and `family` together).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Address {
    /// A Unix socket file (CPython's `'AF_UNIX'` with a path).
    Unix(PathBuf),
    /// A Linux abstract socket name, without the leading NUL (CPython: an `'AF_UNIX'` address starting with
    /// `'\0'`). Nothing appears in the file system.
    Abstract(Vec<u8>),
    /// A TCP address (CPython's `'AF_INET'` / `'AF_INET6'`: `('127.0.0.1', 6000)`). Port 0 picks a free one;
    /// [`Listener::address`](crate::Listener::address) then tells which.
    Tcp(SocketAddr),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "{}", path.display()),
            Address::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            Address::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

impl From<PathBuf> for Address {
    fn from(path: PathBuf) -> Self {
        Address::Unix(path)
    }
}

impl From<&Path> for Address {
    fn from(path: &Path) -> Self {
        Address::Unix(path.to_owned())
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Tcp(addr)
    }
}
