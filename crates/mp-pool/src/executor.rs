//! [`ProcessPoolExecutor`]: CPython's `concurrent.futures.ProcessPoolExecutor`, with [`TaskFuture`],
//! [`as_completed`] and [`wait`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mp_process::{StartMethod, Target};

use crate::Task;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cell::Cell;
use crate::core::Core;
use crate::pool::{PoolBuilder, call_job};
use crate::{PoolError, TaskError, TaskOptions};

/// Options for a [`ProcessPoolExecutor`] (CPython's `max_workers`, `initializer`, `initargs`,
/// `max_tasks_per_child`, `mp_context`).
#[derive(Debug, Clone, Default)]
pub struct ExecutorBuilder {
    pool: PoolBuilder,
}

impl ExecutorBuilder {
    /// The defaults: [`cpu_count`](mp_process::cpu_count) workers.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many worker processes (0 is [`PoolError::ZeroProcesses`]).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.pool = self.pool.processes(n);
        self
    }

    /// A function every worker runs once first; if it panics the executor stops (see
    /// [`PoolBuilder::initializer`]).
    pub fn initializer<F, M, A>(mut self, f: F, args: A) -> Self
    where
        F: Target<M, A>,
        F::Output: Serialize,
        A: Serialize + DeserializeOwned,
        M: 'static,
    {
        self.pool = self.pool.initializer(f, args);
        self
    }

    /// Replace a worker after `n` tasks — driven by the worker's exit, so it cannot deadlock (CPython's
    /// gh-115634).
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.pool = self.pool.max_tasks_per_child(n);
        self
    }

    /// The start method of the workers.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.pool = self.pool.start_method(method);
        self
    }

    /// A hard time limit for every task (see [`PoolBuilder::task_timeout`]); one submission may set its own
    /// with [`submit_with`](ProcessPoolExecutor::submit_with).
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.pool = self.pool.task_timeout(limit);
        self
    }

    /// Replace a worker after a task that left its resident memory above `bytes` (see
    /// [`PoolBuilder::max_memory_per_child`]).
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.pool = self.pool.max_memory_per_child(bytes);
        self
    }

    /// A hard memory limit per worker (see [`PoolBuilder::memory_limit`]).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.pool = self.pool.memory_limit(bytes);
        self
    }

    /// Workers exit after waiting `idle` for a task, and come back with work (see
    /// [`PoolBuilder::idle_timeout`]).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.pool = self.pool.idle_timeout(idle);
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<ProcessPoolExecutor, PoolError> {
        Ok(ProcessPoolExecutor { core: Core::start(self.pool.config("ExecutorWorker")?)? })
    }
}

/// A pool of worker processes handing out [`TaskFuture`]s (CPython's `ProcessPoolExecutor`).
///
/// A worker that dies fails only the future it was running, with [`TaskError::WorkerLost`]; the others
/// complete, and a new worker takes its place (CPython fails every pending future and breaks the pool).
/// Dropping the executor is `shutdown(wait = true)`.
///
/// ```
/// use mp_pool::ProcessPoolExecutor;
///
/// fn cube(x: i64) -> i64 {
///     x * x * x
/// }
///
/// # mp_process::init();
/// let executor = ProcessPoolExecutor::new(2)?;
/// let futures: Vec<_> = (1..=3).map(|x| executor.submit(cube, x)).collect::<Result<_, _>>()?;
/// let cubes: Vec<i64> = futures.into_iter().map(|f| f.result()).collect::<Result<_, _>>()?;
/// assert_eq!(cubes, [1, 8, 27]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ProcessPoolExecutor {
    core: Arc<Core>,
}

impl ProcessPoolExecutor {
    /// An executor with `max_workers` workers.
    pub fn new(max_workers: usize) -> Result<Self, PoolError> {
        ExecutorBuilder::new().max_workers(max_workers).build()
    }

    /// Options: workers, initializer, `max_tasks_per_child`, start method.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::new()
    }

    /// Schedules `f(args)`; after `shutdown` it is [`PoolError::Closed`].
    pub fn submit<F, M, A>(&self, f: F, args: A) -> Result<TaskFuture<F::Result>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
    {
        self.submit_with(f, args, TaskOptions::new())
    }

    /// [`submit`](Self::submit) with options of its own: a hard time limit other than the executor's
    /// ([`TaskOptions::timeout`]), or none.
    pub fn submit_with<F, M, A>(&self, f: F, args: A, options: TaskOptions) -> Result<TaskFuture<F::Result>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
    {
        let cell = Arc::new(Cell::new());
        let job = call_job(f, &args, cell.clone())?;
        let id = self.core.submit_limited(vec![job], options.timeout_or(self.core.task_timeout()))?[0];
        Ok(TaskFuture { cell, core: self.core.clone(), id })
    }

    /// Applies `f` to every item in chunks of `chunksize` (CPython's default is 1), all submitted now; the
    /// results come in order, each as soon as it and those before it are done (CPython's `map`). An item
    /// that fails is an `Err` in its place — its chunk's results before it are lost with it, as in CPython —
    /// after which the iterator ends and the chunks no worker has started are cancelled.
    ///
    /// ```
    /// # mp_process::init();
    /// let executor = mp_pool::ProcessPoolExecutor::new(2)?;
    /// let squares: Result<Vec<u64>, _> = executor.map(|x: u64| x * x, 1..=4, 1)?.collect();
    /// assert_eq!(squares?, [1, 4, 9, 16]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map<F, M, A, I>(&self, f: F, iterable: I, chunksize: usize) -> Result<MapResults<F::Result>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_timeout(f, iterable, chunksize, None)
    }

    /// [`map`](Self::map) against one deadline, `timeout` after this call (CPython's `timeout=`): the first
    /// result not ready by then is [`TaskError::Timeout`] in its place, and the iterator ends there.
    pub fn map_timeout<F, M, A, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: usize,
        timeout: Option<Duration>,
    ) -> Result<MapResults<F::Result>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        if chunksize == 0 {
            return Err(PoolError::ZeroChunksize);
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let items: Vec<A> = iterable.into_iter().collect();
        let mut cells = Vec::new();
        let mut jobs = Vec::new();
        for chunk in items.chunks(chunksize) {
            let cell = Arc::new(Cell::new());
            jobs.push(crate::pool::chunk_job::<F, M, A>(chunk, cell.clone())?);
            cells.push(cell);
        }
        let ids = if jobs.is_empty() {
            if !self.core.is_running() {
                return Err(PoolError::Closed);
            }
            Vec::new()
        } else {
            self.core.submit(jobs)?
        };
        Ok(MapResults {
            chunks: cells.into_iter().zip(ids).collect(),
            core: self.core.clone(),
            deadline,
            items: Vec::new().into_iter(),
            started: false,
        })
    }

    /// How many workers the executor has (its size; idle ones may have exited, see
    /// [`ExecutorBuilder::idle_timeout`]).
    pub fn max_workers(&self) -> usize {
        self.core.processes()
    }

    /// Grows or shrinks the executor to `max_workers` (loky's resize): new workers start at once; surplus
    /// ones take no more tasks and exit once they have finished what they hold. Futures already handed out
    /// are unaffected. 0 is [`PoolError::ZeroProcesses`]; after `shutdown`, [`PoolError::Closed`].
    pub fn resize(&self, max_workers: usize) -> Result<(), PoolError> {
        self.core.resize(max_workers)
    }

    /// Stops taking work; with `cancel_futures` the futures no worker has started are cancelled; with
    /// `wait` this returns once every worker has exited (CPython's `shutdown`).
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        if cancel_futures {
            self.core.cancel_pending();
        }
        self.core.close();
        if wait {
            let _ = self.core.join();
        }
    }
}

impl Drop for ProcessPoolExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

/// The results of [`ProcessPoolExecutor::map`], in order, each as soon as it is ready. Dropped after
/// iteration began, it cancels the chunks no worker has started (CPython's generator does so when closed);
/// dropped before, it leaves them to run.
pub struct MapResults<R> {
    chunks: VecDeque<(Arc<Cell<Vec<R>>>, u64)>,
    core: Arc<Core>,
    deadline: Option<Instant>,
    items: std::vec::IntoIter<R>,
    started: bool,
}

impl<R> MapResults<R> {
    /// Cancels every chunk no worker has started; the iterator ends.
    fn cancel_rest(&mut self) {
        for (_, id) in self.chunks.drain(..) {
            self.core.cancel(id);
        }
    }
}

impl<R> Iterator for MapResults<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.started = true;
        loop {
            if let Some(item) = self.items.next() {
                return Some(Ok(item));
            }
            let (cell, _) = self.chunks.pop_front()?;
            let left = self.deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match cell.take(left) {
                Ok(items) => self.items = items.into_iter(),
                Err(e) => {
                    self.cancel_rest();
                    return Some(Err(e));
                }
            }
        }
    }
}

impl<R> Drop for MapResults<R> {
    fn drop(&mut self) {
        if self.started {
            self.cancel_rest();
        }
    }
}

impl<R> std::fmt::Debug for MapResults<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapResults").finish_non_exhaustive()
    }
}

/// The eventual result of a submitted task (CPython's `concurrent.futures.Future`). It is also a
/// `std::future::Future`, so async code can `.await` it. (It was called `Future`, which shadowed the
/// prelude's `Future` trait in every module that did `use mp_pool::*`; now that trait is there as usual.)
///
/// ```
/// use mp_pool::*;
///
/// // `Future` here is the prelude's trait, not a type of mp-pool's.
/// fn is_a_future<F: Future>(_: &F) {}
/// # mp_process::init();
/// let executor = ProcessPoolExecutor::new(1)?;
/// let future: TaskFuture<u32> = executor.submit(|x: u32| x + 1, 1)?;
/// is_a_future(&future);
/// assert_eq!(future.result()?, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TaskFuture<R> {
    cell: Arc<Cell<R>>,
    core: Arc<Core>,
    id: u64,
}

impl<R> TaskFuture<R> {
    /// Waits for the result and takes it.
    pub fn result(self) -> Result<R, TaskError> {
        self.cell.take(None)
    }

    /// Waits at most `timeout` ([`TaskError::Timeout`] then, and the task runs on: call again later, as
    /// CPython's `result(timeout)` may be). Once it has handed the result out, another call is
    /// [`TaskError::AlreadyTaken`].
    pub fn result_timeout(&self, timeout: Duration) -> Result<R, TaskError> {
        self.cell.take_again(Some(timeout))
    }

    /// Waits at most `timeout` (`None`: no limit); whether it is done.
    pub fn wait_timeout(&self, timeout: Option<Duration>) -> bool {
        self.cell.wait(timeout)
    }

    /// Cancels the task if no worker has started it; whether it is cancelled now.
    pub fn cancel(&self) -> bool {
        self.core.cancel(self.id) || self.cancelled()
    }

    /// Cancels the task even if it runs (CPython can cancel only pending futures; pebble's `cancel`): a
    /// running task's worker is killed — the tasks it had not started go to other workers, and a new worker
    /// takes its place — and the result is [`TaskError::Cancelled`]. `false` if the task has ended already:
    /// a task that completes as it is cancelled has exactly one outcome, whichever came first.
    pub fn cancel_running(&self) -> bool {
        self.core.cancel_running(self.id) || self.cancelled()
    }

    /// Whether the task was cancelled.
    pub fn cancelled(&self) -> bool {
        self.cell.is_cancelled()
    }

    /// Whether a worker has the task (it runs, or is about to).
    pub fn running(&self) -> bool {
        !self.done() && self.core.is_dispatched(self.id)
    }

    /// Whether the task has ended (with a result, an error, or cancelled).
    pub fn done(&self) -> bool {
        self.cell.is_done()
    }

    /// Runs `callback` with the result once the task ends (at once, on this thread, if it has). It runs in
    /// the executor's handler thread otherwise, so it should be quick.
    pub fn add_done_callback(&self, callback: impl FnOnce(Result<&R, &TaskError>) + Send + 'static) {
        self.cell.on_done(Box::new(callback));
    }
}

impl<R> std::future::Future for TaskFuture<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.cell.poll_take(cx.waker()) {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

impl<R> std::fmt::Debug for TaskFuture<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFuture").field("id", &self.id).field("done", &self.done()).finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// What [`wait`] and [`as_completed`] take: a [`TaskFuture`] of any result type, or a reference to one — so
/// futures of different result types are waited on together as `&dyn Waitable` (CPython mixes freely).
///
/// ```
/// # mp_process::init();
/// use mp_pool::{ProcessPoolExecutor, ReturnWhen, Waitable, wait};
///
/// fn square(x: u64) -> u64 { x * x }
/// fn greet(name: String) -> String { format!("hello {name}") }
///
/// let executor = ProcessPoolExecutor::new(2)?;
/// let number = executor.submit(square, 7)?;
/// let text = executor.submit(greet, "mp".to_string())?;
/// let both: [&dyn Waitable; 2] = [&number, &text];
/// let (done, not_done) = wait(&both, None, ReturnWhen::AllCompleted);
/// assert_eq!((done.len(), not_done.len()), (2, 0));
/// assert_eq!((number.result()?, text.result()?), (49, "hello mp".to_string()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// It is sealed: only mp-pool's futures implement it.
pub trait Waitable: sealed::Sealed {
    /// Whether the task has ended (with a result, an error, or cancelled).
    fn is_done(&self) -> bool;
    /// Whether the task ended with an error (or was cancelled).
    fn is_failed(&self) -> bool;
    /// Runs `wake` once the task ends (at once if it has); returns what takes a pending `wake` back.
    #[doc(hidden)]
    fn watch(&self, wake: Box<dyn FnOnce() + Send>) -> Option<Box<dyn FnOnce() + Send>>;
}

impl<R: Send + 'static> sealed::Sealed for TaskFuture<R> {}

impl<R: Send + 'static> Waitable for TaskFuture<R> {
    fn is_done(&self) -> bool {
        self.cell.is_done()
    }

    fn is_failed(&self) -> bool {
        self.cell.succeeded() == Some(false)
    }

    fn watch(&self, wake: Box<dyn FnOnce() + Send>) -> Option<Box<dyn FnOnce() + Send>> {
        let key = self.cell.on_done_keyed(Box::new(move |_| wake()))?;
        let cell = Arc::downgrade(&self.cell);
        Some(Box::new(move || {
            if let Some(cell) = cell.upgrade() {
                cell.forget_callback(key);
            }
        }))
    }
}

impl<W: Waitable + ?Sized> sealed::Sealed for &W {}

impl<W: Waitable + ?Sized> Waitable for &W {
    fn is_done(&self) -> bool {
        (**self).is_done()
    }

    fn is_failed(&self) -> bool {
        (**self).is_failed()
    }

    fn watch(&self, wake: Box<dyn FnOnce() + Send>) -> Option<Box<dyn FnOnce() + Send>> {
        (**self).watch(wake)
    }
}

/// Yields the indices of `futures` as they complete (CPython's `as_completed`); after `timeout` from now,
/// one `Err(TaskError::Timeout)` ends it.
///
/// The iterator takes back what it left with the futures when it is dropped, so calling it again and again
/// on futures that stay pending (a polling loop) costs no memory.
pub fn as_completed<W: Waitable>(futures: &[W], timeout: Option<Duration>) -> AsCompleted {
    let (tx, rx) = mpsc::channel();
    let mut cleanup: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    for (index, future) in futures.iter().enumerate() {
        let tx = tx.clone();
        let forget = future.watch(Box::new(move || {
            let _ = tx.send(index);
        }));
        cleanup.extend(forget);
    }
    AsCompleted { rx, left: futures.len(), deadline: timeout.and_then(|t| Instant::now().checked_add(t)), cleanup }
}

/// The iterator of [`as_completed`].
pub struct AsCompleted {
    rx: mpsc::Receiver<usize>,
    left: usize,
    deadline: Option<Instant>,
    /// Takes back the callbacks still waiting on the futures.
    cleanup: Vec<Box<dyn FnOnce() + Send>>,
}

impl Drop for AsCompleted {
    fn drop(&mut self) {
        for forget in self.cleanup.drain(..) {
            forget();
        }
    }
}

impl std::fmt::Debug for AsCompleted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted").field("left", &self.left).field("deadline", &self.deadline).finish()
    }
}

impl Iterator for AsCompleted {
    type Item = Result<usize, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let received = match self.deadline {
            None => self.rx.recv().ok(),
            Some(deadline) => self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok(),
        };
        match received {
            Some(index) => {
                self.left -= 1;
                Some(Ok(index))
            }
            None => {
                self.left = 0;
                Some(Err(TaskError::Timeout))
            }
        }
    }
}

/// When [`wait`] returns (CPython's `FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any future is done.
    FirstCompleted,
    /// As soon as any future fails (or all are done).
    FirstException,
    /// When all are done.
    AllCompleted,
}

/// Waits for `futures` as `return_when` says, at most `timeout`; returns the indices of the done ones and
/// of the others (CPython's `concurrent.futures.wait`).
pub fn wait<W: Waitable>(
    futures: &[W],
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> (Vec<usize>, Vec<usize>) {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut completions = as_completed(futures, timeout);
    loop {
        let done: Vec<usize> = (0..futures.len()).filter(|&i| futures[i].is_done()).collect();
        let failed = done.iter().any(|&i| futures[i].is_failed());
        let enough = match return_when {
            ReturnWhen::FirstCompleted => !done.is_empty(),
            ReturnWhen::FirstException => failed || done.len() == futures.len(),
            ReturnWhen::AllCompleted => done.len() == futures.len(),
        };
        let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
        if enough || timed_out || futures.is_empty() {
            let not_done = (0..futures.len()).filter(|i| !done.contains(i)).collect();
            return (done, not_done);
        }
        if !matches!(completions.next(), Some(Ok(_))) {
            let done: Vec<usize> = (0..futures.len()).filter(|&i| futures[i].is_done()).collect();
            let not_done = (0..futures.len()).filter(|i| !done.contains(i)).collect();
            return (done, not_done);
        }
    }
}

/// The process-wide executor of [`get_reusable_executor`], and the idle timeout it was made with.
static REUSABLE: std::sync::Mutex<Option<(Arc<ProcessPoolExecutor>, Duration)>> = std::sync::Mutex::new(None);

/// One process-wide executor, made on first use and reused (loky's `get_reusable_executor`): asked for
/// another size it is resized in place ([`ProcessPoolExecutor::resize`]); its workers exit after `idle_timeout`
/// without a task and start again with the next submission, so an idle program holds no worker processes.
/// Asked for another idle timeout, or after it was shut down, a new one replaces it (the old one finishes
/// what it holds and shuts down once its last handle is dropped, without blocking this call).
///
/// ```
/// use std::time::Duration;
/// # mp_process::init();
/// let executor = mp_pool::get_reusable_executor(2, Duration::from_secs(10))?;
/// assert_eq!(executor.submit(|x: u32| x * 2, 21)?.result()?, 42);
/// let again = mp_pool::get_reusable_executor(3, Duration::from_secs(10))?;
/// assert!(std::sync::Arc::ptr_eq(&executor, &again) && again.max_workers() == 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn get_reusable_executor(
    max_workers: usize,
    idle_timeout: Duration,
) -> Result<Arc<ProcessPoolExecutor>, PoolError> {
    let mut reusable = REUSABLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((executor, idle)) = reusable.as_ref() {
        if *idle == idle_timeout && executor.core.is_running() {
            if executor.max_workers() != max_workers {
                executor.resize(max_workers)?;
            }
            return Ok(executor.clone());
        }
    }
    let executor = Arc::new(ExecutorBuilder::new().max_workers(max_workers).idle_timeout(idle_timeout).build()?);
    if let Some((old, _)) = reusable.replace((executor.clone(), idle_timeout)) {
        // Dropping the last handle waits for its workers: not here.
        old.shutdown(false, false);
        std::thread::spawn(move || drop(old));
    }
    Ok(executor)
}
