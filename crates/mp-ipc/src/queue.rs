//! [`Queue`], [`SimpleQueue`] and [`JoinableQueue`]: typed many-producer many-consumer queues between
//! processes, over a shared-memory ring (see `ring.rs` for the mechanics).

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mp_process::Handle;
use mp_sync::raw::Deadline;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ring::{self, Fail, Ring};
use crate::{GetError, PutError, TaskDoneError};

/// The default ring size: how many bytes of items wait in a queue's ring (beyond it they spill, unless the
/// queue is bounded by its [`capacity`](QueueBuilder::capacity)).
pub const DEFAULT_QUEUE_CAPACITY: usize = 1 << 20;

/// The largest encoding buffer a thread keeps between `put`s (a fresh large buffer costs page faults).
const KEPT_ENCODE_BUFFER: usize = 8 << 20;

thread_local! {
    /// A buffer reused by `put` for serializing, so that small items cost no allocation.
    static ENCODE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Options for a [`Queue`] (or a [`JoinableQueue`]): `maxsize` and the ring's byte capacity.
///
/// ```
/// let q: mp_ipc::Queue<u32> = mp_ipc::QueueBuilder::new().maxsize(10).capacity(64 * 1024).build()?;
/// assert_eq!((q.maxsize(), q.capacity()), (10, 64 * 1024));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct QueueBuilder {
    maxsize: usize,
    capacity: Option<usize>,
}

impl Default for QueueBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl QueueBuilder {
    /// No `maxsize`, a ring of [`DEFAULT_QUEUE_CAPACITY`] bytes, and no byte bound: what does not fit in
    /// the ring spills.
    pub fn new() -> Self {
        QueueBuilder { maxsize: 0, capacity: None }
    }

    /// The most items the queue holds (CPython's `maxsize`; 0, the default, means no limit on the count).
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.maxsize = maxsize;
        self
    }

    /// Bounds the queue to a ring of `bytes` (rounded up to a multiple of 8; from 4 KiB to 64 GiB): items wait
    /// there for consumers, and once it is full `put` waits for room (an item larger than the ring still
    /// passes, streaming through it as a consumer takes it). Without this the queue has no byte bound: items
    /// that do not fit in its [`DEFAULT_QUEUE_CAPACITY`]-byte ring spill into memory past it, and `put` never
    /// waits for a consumer.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = Some(bytes);
        self
    }

    fn ring(&self, joinable: bool) -> io::Result<Ring> {
        let asked = self.capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY);
        let capacity = asked.checked_add(7).map(|c| c & !7).unwrap_or(usize::MAX);
        if !(ring::MIN_CAPACITY..=ring::MAX_CAPACITY).contains(&capacity) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("queue capacity {asked} is outside 4 KiB ..= 64 GiB"),
            ));
        }
        Ring::create(capacity, self.maxsize, joinable, self.capacity.is_none())
    }

    /// Makes the queue.
    pub fn build<T>(&self) -> io::Result<Queue<T>> {
        Ok(Queue::from_ring(Arc::new(self.ring(false)?)))
    }

    /// Makes a [`JoinableQueue`].
    pub fn build_joinable<T>(&self) -> io::Result<JoinableQueue<T>> {
        Ok(JoinableQueue { queue: Queue::from_ring(Arc::new(self.ring(true)?)) })
    }
}

/// A queue of `T` between processes (CPython's `multiprocessing.Queue`): many producers, many consumers,
/// FIFO for each producer.
///
/// Items are serialized (postcard) inside [`put`](Self::put), so an item that cannot be serialized is an
/// error there and nothing is lost behind the caller's back. They wait in shared memory (a ring, and past it
/// a spill that grows as needed), not in the producer: a process that put items may exit at once, and the
/// items stay for the consumers. Cloning
/// gives another handle to the same queue; a queue passed to a child (in its arguments) arrives there as a
/// handle to the same queue, under every start method.
///
/// ```
/// use mp_ipc::Queue;
/// use mp_process::Process;
///
/// fn produce(q: Queue<String>) {
///     for word in ["to", "be", "or", "not"] {
///         q.put(word.to_owned()).unwrap();
///     }
/// }
///
/// # mp_process::init();
/// let q = Queue::new()?;
/// let mut p = Process::new(produce, q.clone());
/// p.start()?;
/// let words: Vec<String> = (0..4).map(|_| q.get().unwrap()).collect();
/// assert_eq!(words, ["to", "be", "or", "not"]);
/// p.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    ring: Arc<Ring>,
    closed: AtomicBool,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Queue<T> {
    fn from_ring(ring: Arc<Ring>) -> Self {
        Queue { ring, closed: AtomicBool::new(false), _items: PhantomData }
    }

    /// An empty queue with no limit on the count or the bytes of items (CPython's `Queue()`): `put` never
    /// waits for a consumer, since items that do not fit in the [`DEFAULT_QUEUE_CAPACITY`]-byte ring spill
    /// into memory past it, so a producer can always exit once its `put`s return. More options through
    /// [`QueueBuilder`].
    pub fn new() -> io::Result<Self> {
        QueueBuilder::new().build()
    }

    /// An empty queue holding at most `maxsize` items (CPython's `Queue(maxsize)`; 0 means no limit), with
    /// no byte bound.
    pub fn bounded(maxsize: usize) -> io::Result<Self> {
        QueueBuilder::new().maxsize(maxsize).build()
    }

    /// An empty queue bounded by a ring of `bytes` (see [`QueueBuilder::capacity`]): once the ring is full,
    /// `put` waits for a consumer.
    pub fn with_capacity(bytes: usize) -> io::Result<Self> {
        QueueBuilder::new().capacity(bytes).build()
    }

    /// How many items are in the queue: put and not yet taken by a `get`.
    pub fn qsize(&self) -> usize {
        self.ring.qsize()
    }

    /// Whether the queue holds no item. Exact, unlike CPython's: right after a `put` returns it is
    /// `false`, and a `get` would not wait.
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the queue holds `maxsize` items (never, without a `maxsize`). On a queue bounded by its
    /// [`capacity`](QueueBuilder::capacity), a `put` may still wait when the ring's bytes are used up.
    pub fn full(&self) -> bool {
        self.ring.maxsize() > 0 && self.qsize() >= self.ring.maxsize()
    }

    /// The `maxsize` the queue was made with (0: none).
    pub fn maxsize(&self) -> usize {
        self.ring.maxsize()
    }

    /// The ring's size in bytes (items beyond it spill, unless the queue is bounded by it: see
    /// [`spills`](Self::spills)).
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Whether items that do not fit in the ring spill past it (the queue was made without a byte bound), so
    /// that `put` never waits for a consumer.
    pub fn spills(&self) -> bool {
        self.ring.spills()
    }

    /// Closes this handle (CPython's `close`): `put` and `get` through it are [`PutError::Closed`] /
    /// [`GetError::Closed`] from now on. Other handles, in this process or others, are unaffected, and
    /// items already put stay in the queue.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether this handle was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

impl<T: Serialize> Queue<T> {
    /// Puts `item`, waiting as long as needed for room (`maxsize`, or the ring's bytes).
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_until(item, Deadline::after(None))
    }

    /// Puts `item` if there is room now; otherwise [`PutError::Full`] hands it back.
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_until(item, Deadline::after(Some(Duration::ZERO)))
    }

    /// Puts `item`, waiting at most `timeout` for room; then [`PutError::Full`] hands it back. An item
    /// larger than the ring, once it has started to stream, is finished whatever the timeout.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_until(item, Deadline::after(Some(timeout)))
    }

    fn put_until(&self, item: T, deadline: Deadline) -> Result<(), PutError<T>> {
        if self.is_closed() {
            return Err(PutError::Closed(item));
        }
        let encoded = ENCODE.with(|buf| {
            let mut buf = buf.take();
            buf.clear();
            mp_process::codec::to_extend(&item, buf)
        });
        let bytes = match encoded {
            Ok(bytes) => bytes,
            Err(message) => return Err(PutError::Serialize { item, message }),
        };
        let result = self.ring.put(&bytes, deadline);
        ENCODE.with(|buf| {
            if bytes.capacity() <= KEPT_ENCODE_BUFFER {
                buf.replace(bytes);
            }
        });
        match result {
            Ok(()) => Ok(()),
            Err(Fail::Timeout) => Err(PutError::Full(item)),
            Err(Fail::Io(error)) => Err(PutError::Io { item, error }),
        }
    }
}

impl<T: DeserializeOwned> Queue<T> {
    /// Takes the next item, waiting as long as needed.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_until(Deadline::after(None))
    }

    /// Takes the next item if there is one now; otherwise [`GetError::Empty`].
    pub fn try_get(&self) -> Result<T, GetError> {
        self.get_until(Deadline::after(Some(Duration::ZERO)))
    }

    /// Takes the next item, waiting at most `timeout`; then [`GetError::Empty`]. An item that has started
    /// to arrive is received whole.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_until(Deadline::after(Some(timeout)))
    }

    fn get_until(&self, deadline: Deadline) -> Result<T, GetError> {
        if self.is_closed() {
            return Err(GetError::Closed);
        }
        match self.ring.get(deadline, |bytes| mp_process::codec::from_bytes(bytes)) {
            Ok(Ok(item)) => Ok(item),
            Ok(Err(message)) => Err(GetError::Decode(message)),
            Err(Fail::Timeout) => Err(GetError::Empty),
            Err(Fail::Io(e)) => Err(GetError::Io(e)),
        }
    }
}

/// Another handle to the same queue (open, whatever this handle's state).
impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue::from_ring(self.ring.clone())
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.maxsize())
            .field("capacity", &self.capacity())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A queue travels into a child as its shared-memory file (a [`Handle`]). Serializing a closed handle is
/// an error.
impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_closed() {
            return Err(serde::ser::Error::custom("cannot pass a closed queue"));
        }
        let fd = self.ring.fd().try_clone().map_err(serde::ser::Error::custom)?;
        Handle::from(fd).serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let handle = Handle::deserialize(deserializer)?;
        let ring = Ring::attach(handle.into_owned_fd()).map_err(serde::de::Error::custom)?;
        Ok(Queue::from_ring(Arc::new(ring)))
    }
}

/// CPython's `SimpleQueue`: a [`Queue`] with no `maxsize` and only `put`, `get`, `empty` and `close`.
///
/// ```
/// let q = mp_ipc::SimpleQueue::new()?;
/// q.put((1, "one".to_owned()))?;
/// assert!(!q.empty());
/// assert_eq!(q.get()?, (1, "one".to_owned()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T> SimpleQueue<T> {
    /// An empty queue.
    pub fn new() -> io::Result<Self> {
        Ok(SimpleQueue { queue: Queue::new()? })
    }

    /// Whether the queue holds no item (exact).
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Closes this handle (see [`Queue::close`]).
    pub fn close(&self) {
        self.queue.close();
    }
}

impl<T: Serialize> SimpleQueue<T> {
    /// Puts `item` (see [`Queue::put`]).
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.queue.put(item)
    }
}

impl<T: DeserializeOwned> SimpleQueue<T> {
    /// Takes the next item, waiting as long as needed (see [`Queue::get`]).
    pub fn get(&self) -> Result<T, GetError> {
        self.queue.get()
    }
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue { queue: self.queue.clone() }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue").field("empty", &self.empty()).finish()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(SimpleQueue { queue: Queue::deserialize(deserializer)? })
    }
}

/// CPython's `JoinableQueue`: a [`Queue`] that counts unfinished items. Every `put` adds one; a consumer
/// calls [`task_done`](Self::task_done) for each item it has finished with; [`join`](Self::join) waits
/// until none is unfinished.
///
/// ```
/// use mp_ipc::JoinableQueue;
///
/// let q = JoinableQueue::new()?;
/// q.put(7u32)?;
/// let item: u32 = q.get()?;
/// q.task_done()?;
/// assert!(q.join_timeout(std::time::Duration::from_secs(1)));
/// assert!(q.task_done().is_err(), "one task_done too many");
/// # let _ = item;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> JoinableQueue<T> {
    /// An empty queue with no `maxsize`.
    pub fn new() -> io::Result<Self> {
        QueueBuilder::new().build_joinable()
    }

    /// An empty queue holding at most `maxsize` items.
    pub fn bounded(maxsize: usize) -> io::Result<Self> {
        QueueBuilder::new().maxsize(maxsize).build_joinable()
    }

    /// Marks one item taken from the queue as finished. More calls than items put is
    /// [`TaskDoneError`] (CPython's `ValueError: task_done() called too many times`).
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        if self.queue.ring.task_done() { Ok(()) } else { Err(TaskDoneError) }
    }

    /// Waits until every item put has been marked finished.
    pub fn join(&self) {
        self.queue.ring.join(Deadline::after(None));
    }

    /// Waits at most `timeout` until every item put has been marked finished; whether they all were.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.queue.ring.join(Deadline::after(Some(timeout)))
    }

    /// The queue's other operations.
    pub fn queue(&self) -> &Queue<T> {
        &self.queue
    }

    /// How many items are in the queue.
    pub fn qsize(&self) -> usize {
        self.queue.qsize()
    }

    /// Whether the queue holds no item (exact).
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Closes this handle (see [`Queue::close`]).
    pub fn close(&self) {
        self.queue.close();
    }
}

impl<T: Serialize> JoinableQueue<T> {
    /// Puts `item` (see [`Queue::put`]); it counts as unfinished until a `task_done`.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.queue.put(item)
    }

    /// Puts `item` if there is room now (see [`Queue::try_put`]).
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.queue.try_put(item)
    }

    /// Puts `item`, waiting at most `timeout` (see [`Queue::put_timeout`]).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.queue.put_timeout(item, timeout)
    }
}

impl<T: DeserializeOwned> JoinableQueue<T> {
    /// Takes the next item (see [`Queue::get`]).
    pub fn get(&self) -> Result<T, GetError> {
        self.queue.get()
    }

    /// Takes the next item if there is one now (see [`Queue::try_get`]).
    pub fn try_get(&self) -> Result<T, GetError> {
        self.queue.try_get()
    }

    /// Takes the next item, waiting at most `timeout` (see [`Queue::get_timeout`]).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.queue.get_timeout(timeout)
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { queue: self.queue.clone() }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue").field("queue", &self.queue).finish()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let queue = Queue::deserialize(deserializer)?;
        if !queue.ring.joinable() {
            return Err(serde::de::Error::custom("the queue received is not a JoinableQueue"));
        }
        Ok(JoinableQueue { queue })
    }
}
