//! CPython's explicit pattern: [`QueueHandler`] puts each record into an mp queue, and a [`QueueListener`]
//! in the parent takes them out and hands them to a logger of its choosing.
//!
//! [`install`](crate::install) forwards without a queue, which is what most programs want; this is for those
//! who want the queue in their own hands (one queue for several trees, records kept in order with other
//! items, a listener in a process of its own).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mp_ipc::{GetError, JoinableQueue, Queue};

use crate::record::LogRecord;

/// A queue that carries [`LogRecord`]s: mp-ipc's [`Queue`] and [`JoinableQueue`].
pub trait RecordQueue: Clone + Send + Sync + 'static {
    /// Puts one record; whether it went in.
    fn put_record(&self, record: LogRecord) -> bool;
    /// Takes one, waiting at most `timeout`: `Ok(None)` when none came, `Err` when the queue is closed or broken.
    fn get_record(&self, timeout: Duration) -> Result<Option<LogRecord>, GetError>;
}

impl RecordQueue for Queue<LogRecord> {
    fn put_record(&self, record: LogRecord) -> bool {
        self.put(record).is_ok()
    }

    fn get_record(&self, timeout: Duration) -> Result<Option<LogRecord>, GetError> {
        match self.get_timeout(timeout) {
            Ok(record) => Ok(Some(record)),
            Err(GetError::Empty) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl RecordQueue for JoinableQueue<LogRecord> {
    fn put_record(&self, record: LogRecord) -> bool {
        self.put(record).is_ok()
    }

    fn get_record(&self, timeout: Duration) -> Result<Option<LogRecord>, GetError> {
        match self.get_timeout(timeout) {
            Ok(record) => {
                let _ = self.task_done();
                Ok(Some(record))
            }
            Err(GetError::Empty) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// CPython's `logging.handlers.QueueHandler`: a `log::Log` that puts each record into `queue`. Install it
/// as a process's logger (`log::set_boxed_logger`), or as the inner logger of mp's.
#[derive(Debug, Clone)]
pub struct QueueHandler<Q> {
    queue: Q,
    level: log::LevelFilter,
    failed: Arc<AtomicU64>,
}

impl<Q: RecordQueue> QueueHandler<Q> {
    /// Puts every record at `Trace` and above into `queue`.
    pub fn new(queue: Q) -> Self {
        QueueHandler { queue, level: log::LevelFilter::Trace, failed: Arc::new(AtomicU64::new(0)) }
    }

    /// Only records at `level` and above.
    pub fn with_level(mut self, level: log::LevelFilter) -> Self {
        self.level = level;
        self
    }

    /// How many records could not be put (the queue was closed or broken).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl<Q: RecordQueue> log::Log for QueueHandler<Q> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) && !self.queue.put_record(LogRecord::from_record(record).0) {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// CPython's `logging.handlers.QueueListener`: a thread that takes records from a queue and hands each to a
/// logger (with the child's `process_name`, `pid` and `seq` as key-values).
#[derive(Debug)]
pub struct QueueListener {
    stop: Arc<AtomicBool>,
    handled: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl QueueListener {
    /// Starts the thread.
    pub fn start<Q: RecordQueue>(queue: Q, handler: impl log::Log + 'static) -> std::io::Result<QueueListener> {
        let stop = Arc::new(AtomicBool::new(false));
        let handled = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), handled.clone());
        let thread = std::thread::Builder::new().name("mp-log-queue-listener".into()).spawn(move || {
            loop {
                let stopping = flag.load(Ordering::SeqCst);
                match queue.get_record(if stopping { Duration::ZERO } else { Duration::from_millis(50) }) {
                    Ok(Some(record)) => {
                        record.emit(&handler);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) if stopping => break,
                    Ok(None) => {}
                    Err(GetError::Decode(_)) => {}
                    Err(_) => break,
                }
            }
            handler.flush();
        })?;
        Ok(QueueListener { stop, handled, thread: Some(thread) })
    }

    /// How many records it has handled.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Handles what is in the queue, then stops (CPython's `stop()`, which never hangs here: a producer that
    /// died mid-put does not wedge an mp queue). Returns how many records it handled in all.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.handled()
    }
}
