//! Per-task limits: [`TaskOptions`] for one submission, and [`current_task`], which a running task asks for
//! its deadline.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Options for one task, overriding the pool's ([`PoolBuilder::task_timeout`](crate::PoolBuilder::task_timeout)).
///
/// ```
/// use std::time::Duration;
/// # mp_process::init();
/// let executor = mp_pool::ProcessPoolExecutor::new(1)?;
/// let options = mp_pool::TaskOptions::new().timeout(Duration::from_millis(100));
/// let stuck = executor.submit_with(|(): ()| -> u32 { loop { std::hint::spin_loop() } }, (), options)?;
/// assert!(matches!(stuck.result(), Err(mp_pool::TaskError::TimedOut { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskOptions {
    pub(crate) timeout: Option<Option<Duration>>,
}

impl TaskOptions {
    /// The pool's options.
    pub fn new() -> Self {
        TaskOptions::default()
    }

    /// A hard time limit for this task: still running `limit` after it started, its worker is killed and its
    /// result is [`TaskError::TimedOut`](crate::TaskError::TimedOut). A limit too large to represent is no
    /// limit; zero stops the task as soon as it starts.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(Some(limit));
        self
    }

    /// No time limit for this task, whatever the pool's.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Some(None);
        self
    }

    /// The limit for a task of a pool whose own is `default`.
    pub(crate) fn timeout_or(&self, default: Option<Duration>) -> Option<Duration> {
        self.timeout.unwrap_or(default)
    }
}

/// The task running in this worker, as it may observe itself (see [`current_task`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentTask {
    started: Instant,
    deadline: Option<Instant>,
}

impl CurrentTask {
    /// When the task started in this worker.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When the worker will be killed if the task still runs (its hard time limit), if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How long until [`deadline`](Self::deadline) (zero once it passed), if the task has one: a task that
    /// checks it now and then can stop itself cleanly before the hard limit fires (a soft time limit).
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }
}

thread_local! {
    static CURRENT: Cell<Option<CurrentTask>> = const { Cell::new(None) };
}

/// The task this thread runs, in a pool worker (`None` elsewhere): its start and its deadline, so that
/// well-behaved code can stop before its hard time limit.
///
/// ```
/// use std::time::Duration;
///
/// /// Works until a tenth of a second before its limit, then returns what it has.
/// fn search(_: ()) -> u64 {
///     let mut tries = 0;
///     let task = mp_pool::current_task().expect("runs in a pool worker");
///     while task.time_left().is_none_or(|left| left > Duration::from_millis(100)) && tries < 1_000_000_000 {
///         tries += 1;
///     }
///     tries
/// }
/// # mp_process::init();
/// let executor = mp_pool::ProcessPoolExecutor::builder().task_timeout(Duration::from_millis(300)).build()?;
/// assert!(executor.submit(search, ())?.result()? > 0);
/// assert!(mp_pool::current_task().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn current_task() -> Option<CurrentTask> {
    CURRENT.get()
}

/// Marks the start of a task with time limit `timeout` in this worker (`None` after it).
pub(crate) fn set_current(timeout: Option<Option<Duration>>) {
    CURRENT.set(timeout.map(|limit| {
        let started = Instant::now();
        CurrentTask { started, deadline: limit.and_then(|l| started.checked_add(l)) }
    }));
}
