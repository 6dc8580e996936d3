//! [`Pool`]: CPython's `multiprocessing.Pool`, with [`AsyncResult`] and the lazy [`Imap`] iterator.

use std::collections::{HashMap, VecDeque};
use std::iter::Fuse;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mp_process::{StartMethod, Target};

use crate::Task;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cell::Cell;
use crate::core::{Completion, Config, Core};
use crate::task::{Entry, EntryOffset};
use crate::{PoolError, TaskError, TaskOptions, task};
use mp_process::offset::FnOffset;

/// Serializes a task input.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, PoolError> {
    mp_process::codec::to_vec(value).map_err(PoolError::Serialize)
}

/// Options for a [`Pool`] (CPython's `Pool(processes, initializer, initargs, maxtasksperchild, context)`).
#[derive(Debug, Clone, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    initializer: Option<(EntryOffset, Result<Vec<u8>, String>)>,
    max_tasks: Option<usize>,
    start_method: Option<StartMethod>,
    task_timeout: Option<Duration>,
    max_memory: Option<u64>,
    memory_limit: Option<u64>,
    idle_timeout: Option<Duration>,
}

impl PoolBuilder {
    /// The defaults: [`cpu_count`](mp_process::cpu_count) workers, no initializer, workers never recycled,
    /// the default start method.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many worker processes (0 is [`PoolError::ZeroProcesses`]).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// A function every worker runs once before its first task (CPython's `initializer` and `initargs`).
    /// If it panics in a worker, the pool stops: every pending result gets [`TaskError::Initializer`] and no
    /// worker is started again (CPython starts new workers forever, gh-87472).
    pub fn initializer<F, M, A>(mut self, f: F, args: A) -> Self
    where
        F: Target<M, A>,
        F::Output: Serialize,
        A: Serialize + DeserializeOwned,
        M: 'static,
    {
        let _ = f;
        let entry = FnOffset::of(task::call_entry::<F, M, A> as Entry);
        self.initializer = Some((entry, mp_process::codec::to_vec(&args)));
        self
    }

    /// Replace a worker after it has completed `n` tasks (CPython's `maxtasksperchild`; a task of `map` is a
    /// chunk). 0 is [`PoolError::ZeroMaxTasks`].
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks = Some(n);
        self
    }

    /// The start method of the workers (CPython's `context`).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    /// A hard time limit for every task (a chunk, for `map` and `imap`), from when a worker starts it
    /// (pebble's `timeout`, billiard's `time_limit`; CPython has none): a task still running then has its
    /// worker killed and its result is [`TaskError::TimedOut`], within about 20 ms of the deadline; a new
    /// worker takes the slot, and the jobs the killed one had not started go to the others. The task can see
    /// its deadline with [`current_task`](crate::current_task) and stop first. One submission may set its own
    /// ([`TaskOptions`](crate::TaskOptions)). A limit too large to represent is no limit.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// Replace a worker after a task that left its resident memory above `bytes` (billiard's
    /// `max_memory_per_child`, in bytes rather than KiB): the task's result stands, the worker exits and a new
    /// one takes its place, so that a leak or a bloated cache cannot grow without end. Checked after each task
    /// (one read of `/proc/self/status`); 0 is [`PoolError::ZeroMemory`].
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// A hard memory limit per worker: its address space may grow at most `bytes` past its size when it
    /// starts (`RLIMIT_AS`). An allocation beyond it fails, Rust aborts the worker, and the task running there
    /// fails with [`TaskError::MemoryExceeded`] instead of the machine running out of memory; a new worker
    /// takes its place. (A worker that aborts for another reason under this limit is reported the same way.)
    /// 0 is [`PoolError::ZeroMemory`].
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Workers exit after waiting `idle` for a task, and the pool starts them again when work comes (loky's
    /// `timeout`): an idle pool holds no processes. By default workers wait for good, as CPython's do.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    pub(crate) fn config(self, name: &'static str) -> Result<Config, PoolError> {
        let processes = self.processes.unwrap_or_else(mp_process::cpu_count);
        if processes == 0 {
            return Err(PoolError::ZeroProcesses);
        }
        if self.max_tasks == Some(0) {
            return Err(PoolError::ZeroMaxTasks);
        }
        if self.max_memory == Some(0) || self.memory_limit == Some(0) {
            return Err(PoolError::ZeroMemory);
        }
        let initializer = match self.initializer {
            None => None,
            Some((entry, Ok(bytes))) => Some((entry, bytes)),
            Some((_, Err(message))) => return Err(PoolError::Serialize(message)),
        };
        Ok(Config {
            processes,
            initializer,
            max_tasks: self.max_tasks.map(|n| n as u64),
            start_method: self.start_method,
            name,
            task_timeout: self.task_timeout,
            max_memory: self.max_memory,
            memory_limit: self.memory_limit,
            idle_timeout: self.idle_timeout,
        })
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool, PoolError> {
        Ok(Pool { core: Core::start(self.config("PoolWorker")?)? })
    }
}

/// A pool of worker processes (CPython's `multiprocessing.Pool`).
///
/// Tasks are plain functions (fn items, or closures without captures) with serde arguments and results.
/// A panicking task fails only its own result. A worker that dies (SIGKILL, out of memory) in the middle
/// of a task fails only that task, with [`TaskError::WorkerLost`], within about 20 ms; a new worker takes
/// its place and every other task completes (CPython's pool hangs forever, gh-96062). Dropping the pool
/// terminates it (as leaving CPython's `with Pool() as p:` does).
///
/// ```
/// use mp_pool::Pool;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # mp_process::init();
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.map(square, 1..=5)?, [1, 4, 9, 16, 25]);
/// assert_eq!(pool.apply(square, 12)?, 144);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Pool {
    core: Arc<Core>,
}

impl Pool {
    /// A pool of `processes` workers with the default options.
    pub fn new(processes: usize) -> Result<Self, PoolError> {
        PoolBuilder::new().processes(processes).build()
    }

    /// Options: processes, initializer, `max_tasks_per_child`, start method.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// How many workers the pool keeps.
    pub fn processes(&self) -> usize {
        self.core.processes()
    }

    /// Applies `f` to every item, in order, and waits for all the results (CPython's `map`). The items go in
    /// chunks that shrink as the input drains (guided self-scheduling: each a `1 / (2 × processes)` share of
    /// what is left, no smaller than `1 / (32 × processes)` of the whole), so that work whose cost grows along
    /// the input leaves no worker with a heavy last chunk; [`map_chunked`](Self::map_chunked) takes CPython's
    /// fixed chunks instead. The first failed task's error is returned once every task has ended.
    pub fn map<F, M, A, I>(&self, f: F, iterable: I) -> Result<Vec<F::Result>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
        I: IntoIterator<Item = A>,
    {
        Ok(self.map_async(f, iterable, None)?.get()?)
    }

    /// [`map`](Self::map) with a chosen chunk size (0 is [`PoolError::ZeroChunksize`]).
    pub fn map_chunked<F, M, A, I>(&self, f: F, iterable: I, chunksize: usize) -> Result<Vec<F::Result>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
        I: IntoIterator<Item = A>,
    {
        Ok(self.map_async(f, iterable, Some(chunksize))?.get()?)
    }

    /// CPython's `starmap`: `f` takes several parameters and each item is a tuple of them. (`map` accepts
    /// such functions too; this is the same call under CPython's name.)
    pub fn starmap<F, M, A, I>(&self, f: F, iterable: I) -> Result<Vec<F::Result>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
        I: IntoIterator<Item = A>,
    {
        self.map(f, iterable)
    }

    /// Submits a `map` and returns at once (CPython's `map_async`; `chunksize: None` for `map`'s shrinking
    /// chunks, `Some(n)` for CPython's fixed ones).
    pub fn map_async<F, M, A, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<F::Result>>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_with(f, iterable, chunksize, |_| {})
    }

    /// [`map_async`](Self::map_async) with a callback run (in the pool's handler thread) when the result is
    /// ready — CPython's `callback` and `error_callback` in one.
    pub fn map_async_with<F, M, A, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: Option<usize>,
        callback: impl FnOnce(Result<&Vec<F::Result>, &TaskError>) + Send + 'static,
    ) -> Result<AsyncResult<Vec<F::Result>>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        if chunksize == Some(0) {
            return Err(PoolError::ZeroChunksize);
        }
        let items: Vec<A> = iterable.into_iter().collect();
        let cell = Arc::new(Cell::new());
        cell.on_done(Box::new(callback));
        if items.is_empty() {
            if !self.core.is_running() {
                return Err(PoolError::Closed);
            }
            cell.set(Ok(Vec::new()));
            return Ok(AsyncResult { cell });
        }
        let bounds = match chunksize {
            Some(n) => fixed_chunks(items.len(), n),
            None => guided_chunks(items.len(), self.processes()),
        };
        let entry = FnOffset::of(task::map_entry::<F, M, A> as Entry);
        let gather = Arc::new(Mutex::new(Gather {
            parts: (0..bounds.len()).map(|_| None).collect(),
            left: bounds.len(),
            error: None,
        }));
        // Chunks go to the workers as they are encoded, so that the workers start while the rest is encoded: the
        // first alone, then in batches that double (one lock and wake-up each), up to 256.
        let total = bounds.len();
        let mut submitted = Vec::with_capacity(total);
        let mut batch = Vec::new();
        let mut batch_size = 1;
        for (index, range) in bounds.into_iter().enumerate() {
            let (gather, cell) = (gather.clone(), cell.clone());
            let completion: Completion = Box::new(move |result| {
                // Decoded here, on the handler thread, as each chunk arrives.
                let decoded = result.and_then(|bytes| {
                    mp_process::codec::from_bytes::<Vec<F::Result>>(&bytes).map_err(TaskError::ResultDecode)
                });
                let mut g = gather.lock().unwrap_or_else(|p| p.into_inner());
                match decoded {
                    Ok(part) => g.parts[index] = Some(part),
                    Err(e) => {
                        g.error.get_or_insert(e);
                    }
                }
                g.left -= 1;
                if g.left == 0 {
                    let outcome = match g.error.take() {
                        Some(e) => Err(e),
                        None => join_parts(std::mem::take(&mut g.parts)),
                    };
                    drop(g);
                    cell.set(outcome);
                }
            });
            let sent = encode_presized(&items[range]).and_then(|bytes| {
                batch.push((entry, bytes, completion));
                if batch.len() == batch_size || index + 1 == total {
                    submitted.extend(self.core.submit(std::mem::take(&mut batch))?);
                    batch_size = (batch_size * 2).min(256);
                }
                Ok(())
            });
            if let Err(e) = sent {
                // What was submitted is taken back (what a worker already has runs on, unread).
                for id in submitted {
                    self.core.cancel(id);
                }
                return Err(e);
            }
        }
        Ok(AsyncResult { cell })
    }

    /// Calls `f(args)` in a worker and waits for the result (CPython's `apply`).
    pub fn apply<F, M, A>(&self, f: F, args: A) -> Result<F::Result, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
    {
        Ok(self.apply_async(f, args)?.get()?)
    }

    /// Submits `f(args)` and returns at once (CPython's `apply_async`).
    pub fn apply_async<F, M, A>(&self, f: F, args: A) -> Result<AsyncResult<F::Result>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
    {
        self.apply_async_with(f, args, |_| {})
    }

    /// [`apply_async`](Self::apply_async) with a callback run (in the pool's handler thread) when the result
    /// is ready — CPython's `callback` and `error_callback` in one.
    pub fn apply_async_with<F, M, A>(
        &self,
        f: F,
        args: A,
        callback: impl FnOnce(Result<&F::Result, &TaskError>) + Send + 'static,
    ) -> Result<AsyncResult<F::Result>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
    {
        self.apply_async_options(f, args, TaskOptions::new(), callback)
    }

    /// [`apply_async_with`](Self::apply_async_with) with options of its own: a hard time limit other than the
    /// pool's ([`TaskOptions::timeout`]), or none.
    pub fn apply_async_options<F, M, A>(
        &self,
        f: F,
        args: A,
        options: TaskOptions,
        callback: impl FnOnce(Result<&F::Result, &TaskError>) + Send + 'static,
    ) -> Result<AsyncResult<F::Result>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
    {
        let cell = Arc::new(Cell::new());
        cell.on_done(Box::new(callback));
        let timeout = options.timeout_or(self.core.task_timeout());
        self.core.submit_limited(vec![call_job(f, &args, cell.clone())?], timeout)?;
        Ok(AsyncResult { cell })
    }

    /// Applies `f` to every item lazily, yielding results in order as they come (CPython's `imap`). At most
    /// `4 × processes` chunks are in flight: an endless input is fine.
    pub fn imap<F, M, A, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: usize,
    ) -> Result<Imap<'_, F::Result, I::IntoIter>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
        I: IntoIterator<Item = A>,
    {
        Imap::new(self, f, iterable.into_iter(), chunksize, true)
    }

    /// Like [`imap`](Self::imap), yielding results in the order they are ready (CPython's
    /// `imap_unordered`).
    pub fn imap_unordered<F, M, A, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: usize,
    ) -> Result<Imap<'_, F::Result, I::IntoIter>, PoolError>
    where
        F: Task<M, A>,
        A: Serialize + DeserializeOwned,
        M: 'static,
        I: IntoIterator<Item = A>,
    {
        Imap::new(self, f, iterable.into_iter(), chunksize, false)
    }

    /// No more tasks: the workers exit once the submitted ones are done (CPython's `close`).
    pub fn close(&self) {
        self.core.close();
    }

    /// Stops the workers at once; unfinished results become [`TaskError::Cancelled`] (CPython's
    /// `terminate`, whose pending results instead never become ready).
    pub fn terminate(&self) {
        self.core.terminate();
    }

    /// Waits for the workers to exit; [`PoolError::NotClosed`] before `close` or `terminate`.
    pub fn join(&self) -> Result<(), PoolError> {
        self.core.join()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.core.terminate();
        let _ = self.core.join();
    }
}

/// One call of `f` with `args` as a job that fills `cell`.
pub(crate) fn call_job<F, M, A>(
    f: F,
    args: &A,
    cell: Arc<Cell<F::Result>>,
) -> Result<(EntryOffset, Vec<u8>, Completion), PoolError>
where
    F: Task<M, A>,
    A: Serialize + DeserializeOwned,
    M: 'static,
{
    let _ = f;
    let entry = FnOffset::of(task::call_entry::<F, M, A> as Entry);
    let completion: Completion = Box::new(move |result| {
        cell.set(result.and_then(|bytes| mp_process::codec::from_bytes(&bytes).map_err(TaskError::ResultDecode)));
    });
    Ok((entry, encode(args)?, completion))
}

/// One call of `f` over each item of `chunk` as a job that fills `cell` with their results, in order (a
/// failing item fails the chunk, as in CPython).
pub(crate) fn chunk_job<F, M, A>(
    chunk: &[A],
    cell: Arc<Cell<Vec<F::Result>>>,
) -> Result<(EntryOffset, Vec<u8>, Completion), PoolError>
where
    F: Task<M, A>,
    A: Serialize + DeserializeOwned,
    M: 'static,
{
    let entry = FnOffset::of(task::map_entry::<F, M, A> as Entry);
    let completion: Completion = Box::new(move |result| {
        cell.set(result.and_then(|bytes| mp_process::codec::from_bytes(&bytes).map_err(TaskError::ResultDecode)));
    });
    Ok((entry, encode(chunk)?, completion))
}

struct Gather<R> {
    parts: Vec<Option<Vec<R>>>,
    left: usize,
    error: Option<TaskError>,
}

fn join_parts<R>(parts: Vec<Option<Vec<R>>>) -> Result<Vec<R>, TaskError> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.as_ref().map_or(0, Vec::len)).sum());
    for part in parts {
        out.extend(part.ok_or(TaskError::Cancelled)?);
    }
    Ok(out)
}

/// CPython's chunks of `chunksize` items (the last one shorter).
fn fixed_chunks(len: usize, chunksize: usize) -> Vec<std::ops::Range<usize>> {
    (0..len).step_by(chunksize).map(|start| start..(start + chunksize).min(len)).collect()
}

/// The default chunks of a `map`: guided self-scheduling. Each chunk is a share of what is left
/// (`1 / (2 × workers)`), no smaller than `1 / (32 × workers)` of the whole: the first chunks are large, so
/// that few round trips carry most of the input, and the last ones small, so that no worker is left with a
/// heavy tail while the others idle (the cost of an item often grows along the input; CPython's fixed
/// `len / (4 × workers)` leaves the heaviest chunk to the end).
fn guided_chunks(len: usize, workers: usize) -> Vec<std::ops::Range<usize>> {
    let workers = workers.max(1);
    let smallest = len.div_ceil(32 * workers).max(1);
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < len {
        let size = (len - start).div_ceil(2 * workers).max(smallest).min(len - start);
        chunks.push(start..start + size);
        start += size;
    }
    chunks
}

/// Encodes a chunk into a buffer sized for it up front (no regrowth: a fresh buffer's pages are touched once).
fn encode_presized<A: Serialize>(chunk: &[A]) -> Result<Vec<u8>, PoolError> {
    let estimate = std::mem::size_of_val(chunk).saturating_add(16).min(64 << 20);
    mp_process::codec::to_extend(chunk, Vec::with_capacity(estimate)).map_err(PoolError::Serialize)
}

/// A result that will be ready later (CPython's `AsyncResult`).
pub struct AsyncResult<T> {
    cell: Arc<Cell<T>>,
}

impl<T> AsyncResult<T> {
    /// Waits for the result and takes it.
    pub fn get(self) -> Result<T, TaskError> {
        self.cell.take(None)
    }

    /// Waits at most `timeout` for the result ([`TaskError::Timeout`] then, and the task runs on: call again
    /// later, as CPython's `get(timeout)` may be). Once it has handed the result out, another call is
    /// [`TaskError::AlreadyTaken`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, TaskError> {
        self.cell.take_again(Some(timeout))
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        self.cell.wait(None);
    }

    /// Waits at most `timeout`; whether the result is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.cell.wait(Some(timeout))
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        self.cell.is_done()
    }

    /// Whether the task succeeded; `None` while it is not ready (CPython raises `ValueError` then).
    pub fn successful(&self) -> Option<bool> {
        self.cell.succeeded()
    }
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("ready", &self.ready()).finish()
    }
}

/// Serializes a chunk of inputs.
type Encoder<A> = fn(&[A]) -> Result<Vec<u8>, PoolError>;

/// Results of chunks as they arrive: `(chunk index, encoded outputs or error)`.
#[derive(Default)]
struct Arrivals {
    chunks: VecDeque<(usize, Result<Vec<u8>, TaskError>)>,
}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: each item is the result of one input
/// (a failed chunk yields its error once per input in it).
pub struct Imap<'p, R, I: Iterator> {
    pool: &'p Pool,
    source: Fuse<I>,
    entry: EntryOffset,
    encode: Encoder<I::Item>,
    chunksize: usize,
    window: usize,
    ordered: bool,
    arrivals: Arc<(Mutex<Arrivals>, Condvar)>,
    lens: HashMap<usize, usize>,
    submitted: usize,
    yielded: usize,
    current: VecDeque<Result<R, TaskError>>,
    /// Submitting failed (the pool closed) or the input panicked: no more chunks.
    stopped: bool,
    /// The input iterator's panic, raised again once every result before it is yielded.
    input_panic: Option<Box<dyn std::any::Any + Send>>,
}

impl<'p, R, I> Imap<'p, R, I>
where
    R: DeserializeOwned,
    I: Iterator,
    I::Item: Serialize,
{
    fn new<F, M>(pool: &'p Pool, f: F, source: I, chunksize: usize, ordered: bool) -> Result<Self, PoolError>
    where
        F: Target<M, I::Item, Output = R>,
        R: Serialize,
        I::Item: DeserializeOwned,
        M: 'static,
    {
        let _ = f;
        if chunksize == 0 {
            return Err(PoolError::ZeroChunksize);
        }
        if !pool.core.is_running() {
            return Err(PoolError::Closed);
        }
        Ok(Imap {
            pool,
            source: source.fuse(),
            entry: FnOffset::of(task::map_entry::<F, M, I::Item> as Entry),
            encode: |chunk| encode(chunk),
            chunksize,
            window: 4 * pool.processes(),
            ordered,
            arrivals: Arc::default(),
            lens: HashMap::new(),
            submitted: 0,
            yielded: 0,
            current: VecDeque::new(),
            stopped: false,
            input_panic: None,
        })
    }

    /// Submits chunks until `window` are in flight or the input ends.
    fn fill(&mut self) {
        while !self.stopped && self.submitted - self.yielded < self.window {
            let mut chunk: Vec<I::Item> = Vec::new();
            let (source, chunksize) = (&mut self.source, self.chunksize);
            // The input runs here, in the caller's thread: a panic in it is held until the results before it
            // (the items pulled before it included) are yielded, then raised again (CPython yields them first).
            let pulled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                chunk.extend(source.by_ref().take(chunksize));
            }));
            if let Err(payload) = pulled {
                self.input_panic = Some(payload);
                self.stopped = true;
            }
            if chunk.is_empty() {
                return;
            }
            let index = self.submitted;
            let len = chunk.len();
            let submitted = (self.encode)(&chunk).and_then(|bytes| {
                let arrivals = self.arrivals.clone();
                let completion: Completion = Box::new(move |result| {
                    let (lock, ready) = &*arrivals;
                    lock.lock().unwrap_or_else(|p| p.into_inner()).chunks.push_back((index, result));
                    ready.notify_all();
                });
                self.pool.core.submit(vec![(self.entry, bytes, completion)])
            });
            if let Err(e) = submitted {
                // The chunk's items fail in their place, after the chunks before it (CPython sets the job's
                // result to the error and goes on). A chunk that failed to serialize is its own failure; a
                // closed or broken pool takes no more: this chunk's `Err`s are the iterator's last items (the
                // input beyond is not consumed), so it never ends early without saying so.
                let error = match e {
                    PoolError::Serialize(message) => TaskError::ArgumentDecode(message),
                    PoolError::Task(e) | PoolError::Broken(e) => {
                        self.stopped = true;
                        e
                    }
                    _ => {
                        self.stopped = true;
                        TaskError::Cancelled
                    }
                };
                let (lock, ready) = &*self.arrivals;
                lock.lock().unwrap_or_else(|p| p.into_inner()).chunks.push_back((index, Err(error)));
                ready.notify_all();
            }
            self.lens.insert(index, len);
            self.submitted += 1;
        }
    }

    /// Waits for the next chunk (the next in order, or any) until `deadline` (`None`: no limit), returning its
    /// index and result; `None` when the deadline passed first (nothing is consumed).
    fn next_chunk(&mut self, deadline: Option<Instant>) -> Option<(usize, Result<Vec<u8>, TaskError>)> {
        let (lock, ready) = &*self.arrivals;
        let mut arrivals = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let found = if self.ordered {
                arrivals.chunks.iter().position(|(index, _)| *index == self.yielded)
            } else if arrivals.chunks.is_empty() {
                None
            } else {
                Some(0)
            };
            if let Some(at) = found {
                return arrivals.chunks.remove(at);
            }
            arrivals = match deadline {
                None => ready.wait(arrivals).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    ready.wait_timeout(arrivals, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }

    /// The next result, waiting at most until `deadline`: `Some(Err(TaskError::Timeout))` when it passes
    /// first (nothing is consumed; the iterator goes on).
    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R, TaskError>> {
        loop {
            if let Some(item) = self.current.pop_front() {
                return Some(item);
            }
            self.fill();
            if !self.current.is_empty() {
                continue;
            }
            if self.submitted == self.yielded {
                if let Some(payload) = self.input_panic.take() {
                    std::panic::resume_unwind(payload);
                }
                return None;
            }
            let Some((index, result)) = self.next_chunk(deadline) else {
                return Some(Err(TaskError::Timeout));
            };
            self.yielded += 1;
            let len = self.lens.remove(&index).unwrap_or(0);
            match result.and_then(|b| mp_process::codec::from_bytes::<Vec<R>>(&b).map_err(TaskError::ResultDecode)) {
                Ok(items) => self.current.extend(items.into_iter().map(Ok)),
                Err(e) => self.current.extend(std::iter::repeat_n(e, len).map(Err)),
            }
        }
    }

    /// The next result, waiting at most `timeout` (CPython's `next(timeout)`): `Some(Err(TaskError::Timeout))`
    /// when none came in time — nothing is consumed, and the iterator goes on — and `None` at the end.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, TaskError>> {
        self.next_until(Instant::now().checked_add(timeout))
    }
}

impl<R, I> Iterator for Imap<'_, R, I>
where
    R: DeserializeOwned,
    I: Iterator,
    I::Item: Serialize,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_until(None)
    }
}

impl<R, I: Iterator> std::fmt::Debug for Imap<'_, R, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("in_flight", &(self.submitted - self.yielded))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::{fixed_chunks, guided_chunks};

    #[test]
    fn guided_chunks_cover_the_input_in_order_and_shrink() {
        for (len, workers) in [(1, 4), (7, 4), (100, 1), (100_000, 4), (10_000_000, 2), (5, 64)] {
            let chunks = guided_chunks(len, workers);
            assert_eq!(chunks.first().unwrap().start, 0);
            assert_eq!(chunks.last().unwrap().end, len);
            assert!(chunks.windows(2).all(|w| w[0].end == w[1].start), "contiguous");
            assert!(chunks.windows(2).all(|w| w[0].len() >= w[1].len()), "never growing");
            let smallest = len.div_ceil(32 * workers);
            assert!(chunks[..chunks.len() - 1].iter().all(|c| c.len() >= smallest), "no chunk under the floor");
            assert!(chunks.len() <= 2 * workers * 8 + 32 * workers, "{} chunks", chunks.len());
        }
        let chunks = guided_chunks(100_000, 4);
        assert_eq!(chunks[0].len(), 12_500, "the first is an eighth of the whole");
    }

    #[test]
    fn fixed_chunks_are_cpythons() {
        assert_eq!(fixed_chunks(10, 4), [0..4, 4..8, 8..10]);
        assert_eq!(fixed_chunks(8, 4), [0..4, 4..8]);
        assert_eq!(fixed_chunks(1, 4).len(), 1);
        assert_eq!(fixed_chunks(1, 4)[0], 0..1);
    }
}
