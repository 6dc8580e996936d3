//! The engine under [`Pool`](crate::Pool) and [`ProcessPoolExecutor`](crate::ProcessPoolExecutor): worker
//! slots, the table of unfinished jobs, and the handler thread.
//!
//! Every worker has a queue of its own, so the handler always knows which jobs each worker holds: at most
//! [`WINDOW`] at a time, sent in order, answered in order through the shared inbox. The handler blocks on
//! the inbox (submissions post a `Wake` there), refills a worker as its answers arrive, and checks every
//! [`LIVENESS_INTERVAL`] that the workers live. When one has died it first takes every answer already in the
//! inbox, then takes back the jobs still in the dead worker's queue (they never started: they go to other
//! workers), and fails the one job left — the one that was running — with [`TaskError::WorkerLost`]. A new
//! worker takes the slot. An initializer that fails stops the pool instead: every unfinished job gets the
//! error, and no worker is started again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mp_ipc::{Queue, QueueBuilder};
use mp_process::{Builder, JoinError, Process, StartMethod};
use mp_shm::SharedMemory;

use crate::task::{EntryOffset, Input, Job};
use crate::worker::{Inbox, WorkerArgs, worker_main};
use crate::{PoolError, TaskError};

/// Jobs a worker holds at once: the one it runs and the next, so that it never waits for the handler.
const WINDOW: usize = 2;
/// How often the handler checks that its workers live (a dead worker's job fails within about this).
const LIVENESS_INTERVAL: Duration = Duration::from_millis(20);
/// The signal an aborting process dies of.
const SIGABRT: i32 = 6;
/// How often the handler looks for a worker it killed to stop a job (a time limit, a cancel) to be gone.
const KILL_POLL: Duration = Duration::from_millis(1);
/// Inputs larger than this travel in a shared-memory segment rather than through a worker's queue.
const INLINE_MAX: usize = 256 * 1024;
/// A slot whose workers die this many times in a row before starting up breaks the pool.
const MAX_EARLY_DEATHS: u32 = 3;
/// A worker that cannot be started (say a transient `EMFILE`) is tried again after this, doubling each time
/// up to [`RESPAWN_BACKOFF_MAX`]; this many failures in a row (about 2.5 s of them) break the pool.
const RESPAWN_BACKOFF_FIRST: Duration = Duration::from_millis(20);
const RESPAWN_BACKOFF_MAX: Duration = Duration::from_secs(1);
const MAX_RESPAWN_FAILURES: u32 = 8;

/// What to call when a job ends: its encoded output, or why it has none.
pub(crate) type Completion = Box<dyn FnOnce(Result<Vec<u8>, TaskError>) + Send>;

/// How the pool was configured.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) initializer: Option<(EntryOffset, Vec<u8>)>,
    pub(crate) max_tasks: Option<u64>,
    pub(crate) start_method: Option<StartMethod>,
    pub(crate) name: &'static str,
    /// The hard time limit of every task that sets none of its own.
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) max_memory: Option<u64>,
    pub(crate) memory_limit: Option<u64>,
    /// Workers exit after waiting this long for a job, and are started again when work comes.
    pub(crate) idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
enum Phase {
    Running,
    Closed,
    Terminated,
    Broken(TaskError),
}

/// The shared-memory segment holding a large input. It goes with its job, however the job ends (done, lost,
/// cancelled, terminated, refused): dropping it unlinks it.
struct InputSegment(SharedMemory);

impl Drop for InputSegment {
    fn drop(&mut self) {
        let _ = self.0.unlink();
    }
}

/// A job waiting for a worker.
struct Pending {
    id: u64,
    entry: EntryOffset,
    input: Input,
    segment: Option<InputSegment>,
    timeout: Option<Duration>,
}

/// A job a worker holds.
struct Sent {
    id: u64,
    segment: Option<InputSegment>,
    /// When it was handed over.
    at: Instant,
    timeout: Option<Duration>,
}

struct Slot {
    process: Option<Process<()>>,
    tasks: Queue<Option<Job>>,
    outstanding: VecDeque<Sent>,
    ready: bool,
    done: u64,
    early_deaths: u32,
    /// Starts of this slot's worker that failed in a row, and when to try again (the slot has no process).
    respawn_failures: u32,
    retry_at: Option<Instant>,
    /// When the job at the front of `outstanding` started, as near as the handler knows (it was handed to an
    /// idle worker, or the job before it ended).
    front_since: Instant,
    /// The job this slot's worker was killed to stop, and the error it gets (a time limit, a cancel).
    doomed: Option<(u64, TaskError)>,
    /// The worker exits (or exited) without a replacement: it was idle past the idle timeout, or the pool
    /// shrank. A dormant slot below the pool's size gets a worker again when work comes.
    dormant: bool,
    /// The "stop" went into its queue.
    stop_sent: bool,
}

impl Slot {
    /// Takes back the job waiting in this slot's queue, which its worker has not started (the worker holds the
    /// one it runs), with its input segment; `None` when the queue is empty or its worker is taking from it now.
    fn take_back_queued(&mut self) -> Option<(Job, Option<InputSegment>)> {
        let Ok(Some(job)) = self.tasks.try_get() else { return None };
        let at = self.outstanding.iter().position(|sent| sent.id == job.id);
        let segment = at.and_then(|at| self.outstanding.remove(at)).and_then(|sent| sent.segment);
        Some((job, segment))
    }
}

struct State {
    phase: Phase,
    next_id: u64,
    pending: VecDeque<Pending>,
    completions: HashMap<u64, Completion>,
    slots: Vec<Slot>,
    wake_posted: bool,
    started_workers: u64,
    /// How many slots take work (the pool's size; slots past it are dormant).
    size: usize,
}

/// The shared engine.
pub(crate) struct Core {
    state: Mutex<State>,
    inbox: Queue<Inbox>,
    config: Config,
    handler: Mutex<Option<JoinHandle<()>>>,
    /// A wake-up found the inbox full and was not posted: the handler must not wait before it looks again.
    missed_wake: AtomicBool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("processes", &self.config.processes).finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

thread_local! {
    /// Whether this thread is a pool's handler (see [`Core::wake`]).
    static ON_A_HANDLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Jobs that ended, with their completions: called once the state lock is released.
type Finished = Vec<(Completion, Result<Vec<u8>, TaskError>)>;

impl Core {
    /// Starts the workers and the handler thread.
    pub(crate) fn start(config: Config) -> Result<Arc<Core>, PoolError> {
        let inbox = QueueBuilder::new().capacity(4 << 20).build().map_err(|e| PoolError::Io(e.to_string()))?;
        let core = Arc::new(Core {
            state: Mutex::new(State {
                phase: Phase::Running,
                next_id: 0,
                pending: VecDeque::new(),
                completions: HashMap::new(),
                slots: Vec::new(),
                wake_posted: false,
                started_workers: 0,
                size: config.processes,
            }),
            inbox,
            config,
            handler: Mutex::new(None),
            missed_wake: AtomicBool::new(false),
        });
        {
            let mut state = lock(&core.state);
            for slot in 0..core.config.processes {
                let fresh = core.new_slot(&mut state, slot)?;
                state.slots.push(fresh);
            }
        }
        let handler_core = core.clone();
        let handler = std::thread::Builder::new()
            .name("mp-pool-handler".into())
            .spawn(move || handler_core.handle_loop())
            .map_err(|e| PoolError::Io(e.to_string()))?;
        *core.handler.lock().unwrap_or_else(|p| p.into_inner()) = Some(handler);
        Ok(core)
    }

    pub(crate) fn processes(&self) -> usize {
        lock(&self.state).size
    }

    /// Makes the pool `n` workers strong: more slots start at once; slots past `n` take no more work, and
    /// their workers exit once they have finished what they hold.
    pub(crate) fn resize(&self, n: usize) -> Result<(), PoolError> {
        if n == 0 {
            return Err(PoolError::ZeroProcesses);
        }
        let mut state = lock(&self.state);
        if !matches!(state.phase, Phase::Running) {
            return Err(PoolError::Closed);
        }
        state.size = n;
        while state.slots.len() < n {
            let index = state.slots.len();
            let fresh = self.new_slot(&mut state, index)?;
            state.slots.push(fresh);
        }
        for index in n..state.slots.len() {
            state.slots[index].dormant = true;
        }
        Self::stop_dormant_idlers(&mut state);
        drop(state);
        let _ = self.wake();
        Ok(())
    }

    /// Tells the workers of dormant slots that hold nothing to exit.
    fn stop_dormant_idlers(state: &mut State) {
        for slot in &mut state.slots {
            if slot.dormant && slot.process.is_some() && slot.outstanding.is_empty() && !slot.stop_sent {
                slot.stop_sent = slot.tasks.try_put(None).is_ok();
            }
        }
    }

    /// The pool's time limit per task.
    pub(crate) fn task_timeout(&self) -> Option<Duration> {
        self.config.task_timeout
    }

    /// A worker for `slot`, started.
    fn new_slot(&self, state: &mut State, slot: usize) -> Result<Slot, PoolError> {
        let tasks: Queue<Option<Job>> = Queue::new().map_err(|e| PoolError::Io(e.to_string()))?;
        let initializer = self.config.initializer.as_ref().map(|(entry, input)| Job {
            id: u64::MAX,
            entry: *entry,
            input: Input::Inline(input.clone()),
            timeout: None,
        });
        let args = WorkerArgs {
            slot: slot as u32,
            tasks: tasks.clone(),
            inbox: self.inbox.clone(),
            initializer,
            max_tasks: self.config.max_tasks,
            max_memory: self.config.max_memory,
            memory_limit: self.config.memory_limit,
            idle_timeout: self.config.idle_timeout,
        };
        state.started_workers += 1;
        let mut builder = Builder::new().daemon(true).name(format!("{}-{}", self.config.name, state.started_workers));
        if let Some(method) = self.config.start_method {
            builder = builder.start_method(method);
        }
        let mut process = builder.target(worker_main, args);
        process.start().map_err(|e| PoolError::Start(e.to_string()))?;
        log::debug!(target: "mp", "pool {}: started worker {} in slot {slot}", self.config.name, process.name());
        Ok(Slot {
            process: Some(process),
            tasks,
            outstanding: VecDeque::new(),
            ready: false,
            done: 0,
            early_deaths: 0,
            respawn_failures: 0,
            retry_at: None,
            front_since: Instant::now(),
            doomed: None,
            dormant: false,
            stop_sent: false,
        })
    }

    /// Queues jobs (`entry`, serialized input, completion) under the pool's time limit; they run in order of
    /// submission.
    pub(crate) fn submit(&self, jobs: Vec<(EntryOffset, Vec<u8>, Completion)>) -> Result<Vec<u64>, PoolError> {
        self.submit_limited(jobs, self.config.task_timeout)
    }

    /// [`submit`](Self::submit) with the time limit `timeout` for each job.
    pub(crate) fn submit_limited(
        &self,
        jobs: Vec<(EntryOffset, Vec<u8>, Completion)>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u64>, PoolError> {
        let mut prepared = Vec::with_capacity(jobs.len());
        for (entry, bytes, completion) in jobs {
            let (input, segment) = if bytes.len() > INLINE_MAX {
                let shm = InputSegment(SharedMemory::create(bytes.len()).map_err(|e| PoolError::Io(e.to_string()))?);
                shm.0.write_at(0, &bytes).map_err(|e| PoolError::Io(e.to_string()))?;
                (Input::Segment(shm.0.name().to_owned()), Some(shm))
            } else {
                (Input::Inline(bytes), None)
            };
            prepared.push((entry, input, segment, completion));
        }
        let mut state = lock(&self.state);
        match &state.phase {
            Phase::Running => {}
            Phase::Broken(e) => return Err(PoolError::Broken(e.clone())),
            Phase::Closed | Phase::Terminated => return Err(PoolError::Closed),
        }
        let mut ids = Vec::with_capacity(prepared.len());
        for (entry, input, segment, completion) in prepared {
            let id = state.next_id;
            state.next_id += 1;
            state.pending.push_back(Pending { id, entry, input, segment, timeout });
            state.completions.insert(id, completion);
            ids.push(id);
        }
        let post = !std::mem::replace(&mut state.wake_posted, true);
        drop(state);
        if post && !self.wake() {
            lock(&self.state).wake_posted = false;
        }
        Ok(ids)
    }

    /// Tells the handler to look at the state again. On a handler thread (a callback runs there, and this
    /// pool's handler is the inbox's only reader, while a worker may hold the inbox streaming a large result)
    /// it never waits: a wake-up that finds no room is recorded instead (`false`), and the handler looks again
    /// before it next waits. Any other thread puts the wake-up however long that takes (the handler drains
    /// the inbox, and a worker killed holding it gives it up as it dies).
    fn wake(&self) -> bool {
        if !ON_A_HANDLER.get() {
            return self.inbox.put(Inbox::Wake).is_ok();
        }
        if self.inbox.try_put(Inbox::Wake).is_ok() {
            return true;
        }
        self.missed_wake.store(true, Ordering::SeqCst);
        false
    }

    /// Cancels a job that no worker has yet (its completion gets [`TaskError::Cancelled`]); `false` if it has
    /// started or ended.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        let mut state = lock(&self.state);
        let Some(index) = state.pending.iter().position(|p| p.id == id) else { return false };
        state.pending.remove(index);
        let completion = state.completions.remove(&id);
        drop(state);
        if let Some(completion) = completion {
            completion(Err(TaskError::Cancelled));
        }
        true
    }

    /// Cancels job `id` wherever it is: pending, it is dropped; waiting in a worker's queue behind a running
    /// job, it is taken back; running, its worker is killed (the jobs it had not started go to the others).
    /// It gets [`TaskError::Cancelled`]; `false` if it has ended already.
    pub(crate) fn cancel_running(&self, id: u64) -> bool {
        if self.cancel(id) {
            return true;
        }
        let mut state = lock(&self.state);
        let Some(index) = state.slots.iter().position(|s| s.outstanding.iter().any(|j| j.id == id)) else {
            return false;
        };
        let slot = &mut state.slots[index];
        if slot.outstanding.front().is_some_and(|running| running.id != id) {
            // Behind the running job: still in the queue unless its worker is taking it this instant.
            if let Some((job, segment)) = slot.take_back_queued() {
                if job.id == id {
                    let completion = state.completions.remove(&id);
                    drop(state);
                    if let Some(completion) = completion {
                        completion(Err(TaskError::Cancelled));
                    }
                    return true;
                }
                let Job { id, entry, input, timeout } = job;
                state.pending.push_front(Pending { id, entry, input, segment, timeout });
                return false;
            }
        }
        let slot = &mut state.slots[index];
        if slot.doomed.is_some() {
            return slot.doomed.as_ref().is_some_and(|(doomed, _)| *doomed == id);
        }
        slot.doomed = Some((id, TaskError::Cancelled));
        if let Some(process) = &slot.process {
            let _ = process.kill();
        }
        drop(state);
        let _ = self.wake();
        true
    }

    /// Kills the workers whose running job is past its time limit (the job fails with
    /// [`TaskError::TimedOut`] once the death is seen); how long until the next limit, if any runs.
    fn enforce_limits(&self, state: &mut State) -> Option<Duration> {
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        for (index, slot) in state.slots.iter_mut().enumerate() {
            let (Some(process), None, Some(front)) = (&slot.process, &slot.doomed, slot.outstanding.front()) else {
                continue;
            };
            let started = slot.front_since.max(front.at);
            let Some(deadline) = front.timeout.and_then(|limit| started.checked_add(limit)) else { continue };
            if now < deadline {
                next = Some(next.map_or(deadline - now, |n| n.min(deadline - now)));
                continue;
            }
            let pid = process.pid().unwrap_or(0);
            let elapsed = now - started;
            log::warn!(
                "mp-pool: job {} ran {elapsed:?}, past its time limit: killing worker {pid} in slot {index}",
                front.id
            );
            slot.doomed = Some((front.id, TaskError::TimedOut { elapsed, pid }));
            let _ = process.kill();
        }
        next
    }

    /// Cancels every job no worker has yet.
    pub(crate) fn cancel_pending(&self) {
        let mut state = lock(&self.state);
        let ids: Vec<u64> = state.pending.drain(..).map(|p| p.id).collect();
        let cancelled: Vec<Completion> = ids.iter().filter_map(|id| state.completions.remove(id)).collect();
        drop(state);
        for completion in cancelled {
            completion(Err(TaskError::Cancelled));
        }
    }

    /// Whether a worker holds the job (it runs, or is next).
    pub(crate) fn is_dispatched(&self, id: u64) -> bool {
        lock(&self.state).slots.iter().any(|s| s.outstanding.iter().any(|j| j.id == id))
    }

    /// No more submissions; the workers stop once every job has ended.
    pub(crate) fn close(&self) {
        let mut state = lock(&self.state);
        if let Phase::Running = state.phase {
            state.phase = Phase::Closed;
        }
        drop(state);
        let _ = self.wake();
    }

    /// Stops the workers now; every unfinished job gets [`TaskError::Cancelled`].
    pub(crate) fn terminate(&self) {
        let mut state = lock(&self.state);
        if !matches!(state.phase, Phase::Broken(_)) {
            state.phase = Phase::Terminated;
        }
        let finished = Self::fail_all(&mut state, TaskError::Cancelled);
        drop(state);
        // The handler is told before the workers die: a worker killed while it holds the inbox would make
        // this wake-up wait until its death is noticed.
        let _ = self.wake();
        for slot in &mut lock(&self.state).slots {
            if let Some(p) = &slot.process {
                let _ = p.kill();
            }
        }
        for (completion, result) in finished {
            completion(result);
        }
    }

    /// Whether `close` or `terminate` was called (or the pool broke).
    pub(crate) fn is_running(&self) -> bool {
        matches!(lock(&self.state).phase, Phase::Running)
    }

    /// Waits for the handler to finish and the workers to exit (after `close` or `terminate`).
    pub(crate) fn join(&self) -> Result<(), PoolError> {
        if self.is_running() {
            return Err(PoolError::NotClosed);
        }
        let handler = self.handler.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handler) = handler {
            let _ = handler.join();
        }
        let processes: Vec<Process<()>> = lock(&self.state).slots.iter_mut().filter_map(|s| s.process.take()).collect();
        for mut p in processes {
            let _ = p.join();
        }
        Ok(())
    }

    fn fail_all(state: &mut State, error: TaskError) -> Finished {
        state.pending.clear();
        for slot in &mut state.slots {
            slot.outstanding.clear();
        }
        state.completions.drain().map(|(_, c)| (c, Err(error.clone()))).collect()
    }

    /// The handler thread.
    fn handle_loop(self: Arc<Self>) {
        ON_A_HANDLER.set(true);
        let mut last_check = Instant::now();
        let mut wake_in = LIVENESS_INTERVAL;
        loop {
            let wait = if self.missed_wake.swap(false, Ordering::SeqCst) { Duration::ZERO } else { wake_in };
            let first = self.inbox.get_timeout(wait);
            let mut finished: Finished = Vec::new();
            let mut state = lock(&self.state);
            if let Ok(message) = first {
                self.handle(&mut state, message, &mut finished);
                for _ in 0..1024 {
                    match self.inbox.try_get() {
                        Ok(message) => self.handle(&mut state, message, &mut finished),
                        Err(_) => break,
                    }
                }
            }
            // A worker killed to stop its job is looked for at once, not at the next liveness check.
            let killing = state.slots.iter().any(|s| s.doomed.is_some() && s.process.is_some());
            if killing || last_check.elapsed() >= LIVENESS_INTERVAL {
                last_check = Instant::now();
                self.check_workers(&mut state, &mut finished);
            }
            self.dispatch(&mut state, &mut finished);
            Self::stop_dormant_idlers(&mut state);
            let next_limit = self.enforce_limits(&mut state);
            let killing = state.slots.iter().any(|s| s.doomed.is_some() && s.process.is_some());
            wake_in = match (killing, next_limit) {
                (true, _) => KILL_POLL,
                (false, Some(next)) => next.min(LIVENESS_INTERVAL),
                (false, None) => LIVENESS_INTERVAL,
            };
            let done = match &state.phase {
                Phase::Running => false,
                Phase::Closed => {
                    if state.completions.is_empty() {
                        for slot in &state.slots {
                            let _ = slot.tasks.put(None);
                        }
                        true
                    } else {
                        false
                    }
                }
                Phase::Terminated | Phase::Broken(_) => true,
            };
            drop(state);
            for (completion, result) in finished {
                // Completions run user callbacks: a panic there must not end this thread.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| completion(result))).is_err() {
                    log::error!("mp-pool: a completion panicked; the pool goes on");
                }
            }
            if done {
                return;
            }
        }
    }

    fn handle(&self, state: &mut State, message: Inbox, finished: &mut Finished) {
        match message {
            Inbox::Wake => state.wake_posted = false,
            Inbox::Idle { slot } => {
                if let Some(s) = state.slots.get_mut(slot as usize) {
                    s.dormant = true;
                }
            }
            Inbox::Ready { slot } => {
                if let Some(s) = state.slots.get_mut(slot as usize) {
                    s.ready = true;
                    s.early_deaths = 0;
                }
            }
            Inbox::InitFailed { failure, .. } => {
                let error = TaskError::Initializer(Box::new(TaskError::from_failure(failure)));
                log::error!("mp-pool: {error}; the pool stops");
                state.phase = Phase::Broken(error.clone());
                finished.extend(Self::fail_all(state, error));
                for slot in &mut state.slots {
                    if let Some(p) = &slot.process {
                        let _ = p.kill();
                    }
                }
            }
            Inbox::Done { slot, id, result } => {
                if let Some(s) = state.slots.get_mut(slot as usize) {
                    if let Some(index) = s.outstanding.iter().position(|j| j.id == id) {
                        s.outstanding.remove(index); // and with it, its input segment
                        if index == 0 {
                            s.front_since = Instant::now(); // the next one starts now
                        }
                    }
                    s.done += 1;
                }
                if let Some(completion) = state.completions.remove(&id) {
                    finished.push((completion, result.map(|b| b.into_vec()).map_err(TaskError::from_failure)));
                }
            }
        }
    }

    /// Finds ended workers: their answers are taken, their unstarted jobs go back to the front of the line,
    /// the job that was running fails, and a new worker takes the slot.
    fn check_workers(&self, state: &mut State, finished: &mut Finished) {
        for index in 0..state.slots.len() {
            let Some(process) = state.slots[index].process.as_ref() else {
                // A slot whose worker could not be started: try again when its backoff is over.
                if state.slots[index].retry_at.is_some_and(|at| Instant::now() >= at) {
                    let early_deaths = state.slots[index].early_deaths;
                    if !self.respawn(state, index, early_deaths, finished) {
                        return;
                    }
                }
                continue;
            };
            if process.is_alive() {
                continue;
            }
            // Answers the worker gave before it ended are in the inbox: take them all first.
            while let Ok(message) = self.inbox.try_get() {
                self.handle(state, message, finished);
            }
            if matches!(state.phase, Phase::Terminated | Phase::Broken(_)) {
                return;
            }
            let slot = &mut state.slots[index];
            let mut process = slot.process.take().expect("checked above");
            let pid = process.pid().unwrap_or(0);
            let ended = process.join_timeout(Duration::ZERO);
            let exitcode = process.exitcode().unwrap_or(255);
            // Jobs still in its queue never started: they go to other workers.
            let mut unstarted: Vec<Job> = Vec::new();
            while let Ok(Some(job)) = slot.tasks.try_get() {
                unstarted.push(job);
            }
            let retired = self.config.max_tasks.is_some_and(|max| slot.done >= max) && exitcode == 0;
            if !slot.ready {
                slot.early_deaths += 1;
            }
            let early_deaths = slot.early_deaths;
            let outstanding: Vec<Sent> = slot.outstanding.drain(..).collect();
            let mut requeue = Vec::new();
            for sent in outstanding {
                if let Some(at) = unstarted.iter().position(|job| job.id == sent.id) {
                    let job = unstarted.swap_remove(at);
                    if let Some((_, error)) = state.slots[index].doomed.take_if(|(id, _)| *id == job.id) {
                        // Stopped before its worker took it (a cancel, a zero time limit): it does not run again.
                        if let Some(completion) = state.completions.remove(&job.id) {
                            finished.push((completion, Err(error)));
                        }
                        continue;
                    }
                    let timeout = job.timeout;
                    requeue.push(Pending {
                        id: job.id,
                        entry: job.entry,
                        input: job.input,
                        segment: sent.segment,
                        timeout,
                    });
                } else if let Some(completion) = state.completions.remove(&sent.id) {
                    let doomed = state.slots[index].doomed.take_if(|(id, _)| *id == sent.id);
                    let error = match (doomed, &ended) {
                        (Some((_, error)), _) => error,
                        (None, Err(JoinError::Panicked(info))) => TaskError::Panicked(info.clone()),
                        // Rust aborts when an allocation fails; under the address-space limit, that is why.
                        (None, _) if exitcode == -SIGABRT && self.config.memory_limit.is_some() => {
                            TaskError::MemoryExceeded { limit: self.config.memory_limit.unwrap_or(0), pid }
                        }
                        (None, _) => TaskError::WorkerLost { pid, exitcode },
                    };
                    log::warn!("mp-pool: worker {pid} ended (exit code {exitcode}) while running job {}", sent.id);
                    finished.push((completion, Err(error)));
                }
            }
            // The unstarted jobs go first again, in their order.
            for job in requeue.into_iter().rev() {
                state.pending.push_front(job);
            }
            if state.slots[index].dormant {
                continue; // idle past its timeout, or the pool shrank: a worker comes back with work
            }
            if !retired && early_deaths >= MAX_EARLY_DEATHS {
                let error = TaskError::WorkerStart(format!(
                    "workers died {early_deaths} times in a row before starting (last: pid {pid}, exit code {exitcode})"
                ));
                state.phase = Phase::Broken(error.clone());
                finished.extend(Self::fail_all(state, error));
                return;
            }
            if !self.respawn(state, index, if retired { 0 } else { early_deaths }, finished) {
                return;
            }
        }
    }

    /// Starts a new worker in slot `index`. A failed start is tried again with backoff; only
    /// [`MAX_RESPAWN_FAILURES`] in a row break the pool (then `false`).
    fn respawn(&self, state: &mut State, index: usize, early_deaths: u32, finished: &mut Finished) -> bool {
        match self.new_slot(state, index) {
            Ok(mut fresh) => {
                fresh.early_deaths = early_deaths;
                state.slots[index] = fresh;
                true
            }
            Err(e) => {
                let slot = &mut state.slots[index];
                slot.respawn_failures += 1;
                let failures = slot.respawn_failures;
                if failures >= MAX_RESPAWN_FAILURES {
                    let error =
                        TaskError::WorkerStart(format!("failed to start a worker {failures} times in a row: {e}"));
                    log::error!("mp-pool: {error}; the pool stops");
                    state.phase = Phase::Broken(error.clone());
                    finished.extend(Self::fail_all(state, error));
                    return false;
                }
                let backoff = RESPAWN_BACKOFF_FIRST.saturating_mul(1 << (failures - 1)).min(RESPAWN_BACKOFF_MAX);
                slot.retry_at = Some(Instant::now() + backoff);
                log::warn!("mp-pool: failed to start a worker in slot {index} ({e}); trying again in {backoff:?}");
                true
            }
        }
    }

    /// Hands pending jobs to workers with room, oldest first, each to the worker holding the fewest (an idle
    /// worker before one that already has a job waiting; among equals, the one whose job started last, since
    /// a job that has run long is likely to run on). Then no worker idles while another holds a job it has not
    /// started: that job is taken back from its queue and handed to the idle one.
    fn dispatch(&self, state: &mut State, finished: &mut Finished) {
        if matches!(state.phase, Phase::Terminated | Phase::Broken(_)) {
            return;
        }
        if !state.pending.is_empty() && !self.wake_dormant(state, finished) {
            return;
        }
        let mut full = vec![false; state.slots.len()];
        while !state.pending.is_empty() {
            let Some(index) = self.least_loaded(state, &full) else { break };
            let Pending { id, entry, input, segment, timeout } = state.pending.pop_front().expect("not empty");
            if let Err(job) = Self::hand_over(&mut state.slots[index], Job { id, entry, input, timeout }, segment) {
                state.pending.push_front(job);
                full[index] = true;
            }
        }
        if state.pending.is_empty() {
            self.rebalance(state);
        }
    }

    /// Work is waiting: dormant slots within the pool's size whose workers are gone get new ones, started as
    /// a replacement is (a failed start is retried with backoff). `false` if the pool broke.
    fn wake_dormant(&self, state: &mut State, finished: &mut Finished) -> bool {
        for index in 0..state.size.min(state.slots.len()) {
            let slot = &mut state.slots[index];
            if slot.dormant && slot.process.is_none() && slot.retry_at.is_none() {
                slot.dormant = false; // a failed start now waits for its retry like any other
                if !self.respawn(state, index, 0, finished) {
                    return false;
                }
            }
        }
        true
    }

    /// The slot that should take the next job: alive, with room and budget, holding the fewest, and not marked
    /// in `full` (slots past its end are not).
    fn least_loaded(&self, state: &State, full: &[bool]) -> Option<usize> {
        let max_tasks = self.config.max_tasks;
        state
            .slots
            .iter()
            .enumerate()
            .filter(|(index, slot)| {
                let budget_left = max_tasks.is_none_or(|max| slot.done + (slot.outstanding.len() as u64) < max);
                let taking = *index < state.size && !slot.dormant && slot.process.is_some();
                !full.get(*index).copied().unwrap_or(false) && taking && slot.outstanding.len() < WINDOW && budget_left
            })
            .min_by_key(|(_, slot)| {
                let started = slot.outstanding.front().map(|s| std::cmp::Reverse(s.at));
                (slot.outstanding.len(), started)
            })
            .map(|(index, _)| index)
    }

    /// Puts `job` in `slot`'s queue; when there is no room, it comes back as pending.
    fn hand_over(slot: &mut Slot, job: Job, segment: Option<InputSegment>) -> Result<(), Pending> {
        let (id, timeout) = (job.id, job.timeout);
        match slot.tasks.try_put(Some(job)) {
            Ok(()) => {
                let now = Instant::now();
                if slot.outstanding.is_empty() {
                    slot.front_since = now;
                }
                slot.outstanding.push_back(Sent { id, segment, at: now, timeout });
                Ok(())
            }
            Err(e) => {
                let Some(Job { id, entry, input, timeout }) = e.into_inner() else { unreachable!("we put a job") };
                Err(Pending { id, entry, input, segment, timeout })
            }
        }
    }

    /// Moves jobs that wait behind a running one to workers that have nothing.
    fn rebalance(&self, state: &mut State) {
        loop {
            let idle = state.slots.iter().position(|s| s.process.is_some() && s.ready && s.outstanding.is_empty());
            let Some(idle) = idle else { return };
            if self.least_loaded(state, &[]) != Some(idle) {
                return; // it has no budget left
            }
            let Some(donor) = state.slots.iter().position(|s| s.process.is_some() && s.outstanding.len() >= 2) else {
                return;
            };
            let Some((job, segment)) = state.slots[donor].take_back_queued() else { return };
            if let Err(pending) = Self::hand_over(&mut state.slots[idle], job, segment) {
                state.pending.push_front(pending);
                return;
            }
        }
    }
}
