//! [`Event`]: a flag processes can wait for.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::SyncError;
use crate::segment::{Kind, Segment};
use crate::sys::{self, Deadline};

const FLAG: usize = 0;

/// A flag shared between processes (CPython's `multiprocessing.Event`).
///
/// ```
/// # mp_process::init();
/// use std::time::Duration;
/// let event = mp_sync::Event::new()?;
/// assert!(!event.wait_timeout(Duration::from_millis(10)));
/// event.set();
/// assert!(event.is_set() && event.wait_timeout(Duration::ZERO));
/// # Ok::<(), mp_sync::SyncError>(())
/// ```
pub struct Event {
    segment: Segment,
}

impl Event {
    /// A new, clear event.
    pub fn new() -> Result<Self, SyncError> {
        Ok(Event { segment: Segment::create(Kind::Event, 4)? })
    }

    /// Attaches to the event in segment `name`.
    pub fn open(name: &str) -> Result<Self, SyncError> {
        Ok(Event { segment: Segment::open(name, Kind::Event)? })
    }

    /// Another handle to the same event, to pass into a child.
    pub fn try_clone(&self) -> Result<Self, SyncError> {
        Self::open(self.name())
    }

    /// The shared-memory segment's name.
    pub fn name(&self) -> &str {
        self.segment.name()
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.segment.word(FLAG).load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.segment.word(FLAG).store(1, Ordering::Release);
        sys::futex_wake(self.segment.word(FLAG), u32::MAX);
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.segment.word(FLAG).store(0, Ordering::Release);
    }

    /// Blocks until the flag is set.
    pub fn wait(&self) {
        self.wait_until(Deadline::after(None));
    }

    /// Waits at most `timeout`; returns whether the flag is set (CPython's `wait(timeout)`).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Deadline::after(Some(timeout)))
    }

    fn wait_until(&self, deadline: Deadline) -> bool {
        while !self.is_set() {
            if !sys::futex_wait(self.segment.word(FLAG), 0, deadline) {
                break;
            }
        }
        self.is_set()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("name", &self.name()).field("set", &self.is_set()).finish()
    }
}

/// Travels by name; the receiver attaches to the same event.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.segment.in_transit();
        self.name().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(Event { segment: Segment::adopt(&name, Kind::Event).map_err(serde::de::Error::custom)? })
    }
}
