//! [`Cell`]: where a result waits for whoever asks for it — blocking, with a timeout, through callbacks, or
//! as a `std::future::Future`.
//!
//! Callbacks run with the cell's lock released, so that a callback may call anything on its own future or
//! pool (`done()`, `cancelled()`, `running()`, `add_done_callback`, `submit`, …). While they run, the outcome
//! is lent to them: it is out of the cell (`delivering` names the thread holding it), takers on other threads
//! wait for it, and a taker on that very thread — a callback asking for its own future's result, which it
//! holds by reference — is told so ([`TaskError::InCallback`]).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::TaskError;

/// A done-callback: gets the result by reference.
pub(crate) type Callback<T> = Box<dyn FnOnce(Result<&T, &TaskError>) + Send>;

/// Runs a user's callback; a panic in it is reported and contained (it must not take the pool's handler
/// thread down, nor keep the result from anyone waiting for it).
fn run_callback<T>(callback: Callback<T>, outcome: Result<&T, &TaskError>) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(outcome))).is_err() {
        log::error!("mp-pool: a result callback panicked; the pool goes on");
    }
}

pub(crate) struct Cell<T> {
    state: Mutex<CellState<T>>,
    ready: Condvar,
}

struct CellState<T> {
    outcome: Option<Result<T, TaskError>>,
    done: bool,
    /// How it ended (known from the moment it is done, even while the outcome is lent to callbacks).
    succeeded: bool,
    cancelled: bool,
    /// The outcome was handed out by `take_again`.
    taken: bool,
    /// The thread running callbacks with the outcome lent to them (the outcome is out of the cell meanwhile).
    delivering: Option<ThreadId>,
    /// Waiting callbacks, each with the key `on_done_keyed` handed out.
    callbacks: Vec<(u64, Callback<T>)>,
    next_key: u64,
    waker: Option<Waker>,
}

impl<T> Cell<T> {
    pub(crate) fn new() -> Self {
        Cell {
            state: Mutex::new(CellState {
                outcome: None,
                done: false,
                succeeded: false,
                cancelled: false,
                taken: false,
                delivering: None,
                callbacks: Vec::new(),
                next_key: 1,
                waker: None,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CellState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the outcome (the first one wins), runs the callbacks and wakes every waiter.
    pub(crate) fn set(&self, outcome: Result<T, TaskError>) {
        let mut state = self.lock();
        if state.done {
            return;
        }
        state.done = true;
        state.succeeded = outcome.is_ok();
        state.cancelled = matches!(outcome, Err(TaskError::Cancelled));
        let state = self.deliver(state, outcome);
        self.release(state);
    }

    /// Runs the waiting callbacks (and any that arrive meanwhile) with `outcome` lent to them and the lock
    /// released, then puts the outcome in the cell. Returns the lock, held again.
    fn deliver<'a>(
        &'a self,
        mut state: MutexGuard<'a, CellState<T>>,
        outcome: Result<T, TaskError>,
    ) -> MutexGuard<'a, CellState<T>> {
        loop {
            let callbacks = std::mem::take(&mut state.callbacks);
            if callbacks.is_empty() {
                break;
            }
            state.delivering = Some(std::thread::current().id());
            drop(state);
            for (_, callback) in callbacks {
                run_callback(callback, outcome.as_ref());
            }
            state = self.lock();
        }
        state.delivering = None;
        state.outcome = Some(outcome);
        state
    }

    /// Lets go of the lock and wakes whoever waits.
    fn release(&self, mut state: MutexGuard<'_, CellState<T>>) {
        let waker = state.waker.take();
        drop(state);
        self.ready.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Runs `callback` when the outcome is set (now, on this thread, if it is already).
    pub(crate) fn on_done(&self, callback: Callback<T>) {
        let _ = self.on_done_keyed(callback);
    }

    /// [`on_done`](Self::on_done), returning a key to take the callback back with
    /// [`forget_callback`](Self::forget_callback) while it waits (`None`: it ran at once).
    pub(crate) fn on_done_keyed(&self, callback: Callback<T>) -> Option<u64> {
        let mut state = self.lock();
        if !state.done || state.delivering.is_some() {
            // Pending — or done and being delivered: the deliverer runs it in turn.
            let key = state.next_key;
            state.next_key += 1;
            state.callbacks.push((key, callback));
            return Some(key);
        }
        match state.outcome.take() {
            Some(outcome) => {
                state.callbacks.push((0, callback));
                let state = self.deliver(state, outcome);
                self.release(state);
            }
            // Taken already: what it was is all that is left to tell.
            None => {
                drop(state);
                run_callback(callback, Err(&TaskError::Cancelled));
            }
        }
        None
    }

    /// Drops a waiting callback (a `wait` or `as_completed` that has returned): a polling loop must not pile
    /// them up on a future that stays pending.
    pub(crate) fn forget_callback(&self, key: u64) {
        self.lock().callbacks.retain(|(k, _)| *k != key);
    }

    pub(crate) fn is_done(&self) -> bool {
        self.lock().done
    }

    /// Whether it ended well: `None` before it ends.
    pub(crate) fn succeeded(&self) -> Option<bool> {
        let state = self.lock();
        state.done.then_some(state.succeeded)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        let state = self.lock();
        state.done && state.cancelled
    }

    /// Whether this thread runs the callbacks now (holding the outcome).
    fn delivering_here(state: &CellState<T>) -> bool {
        state.delivering == Some(std::thread::current().id())
    }

    /// Waits until done (and delivered) or `timeout`; whether it is done. A callback waiting on its own
    /// future returns at once.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> bool {
        self.wait_locked(timeout).is_some()
    }

    /// [`wait`](Self::wait), returning the lock held when done.
    fn wait_locked(&self, timeout: Option<Duration>) -> Option<MutexGuard<'_, CellState<T>>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut state = self.lock();
        while !state.done || (state.delivering.is_some() && !Self::delivering_here(&state)) {
            match deadline {
                None => state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    state = self.ready.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
        Some(state)
    }

    /// Takes the outcome, waiting at most `timeout` ([`TaskError::Timeout`] then; the outcome stays).
    pub(crate) fn take(&self, timeout: Option<Duration>) -> Result<T, TaskError> {
        let mut state = self.wait_locked(timeout).ok_or(TaskError::Timeout)?;
        if Self::delivering_here(&state) {
            return Err(TaskError::InCallback);
        }
        state.outcome.take().unwrap_or(Err(TaskError::Cancelled))
    }

    /// Like [`take`](Self::take), for a handle that stays: a second take after the outcome was handed out is
    /// [`TaskError::AlreadyTaken`].
    pub(crate) fn take_again(&self, timeout: Option<Duration>) -> Result<T, TaskError> {
        let mut state = self.wait_locked(timeout).ok_or(TaskError::Timeout)?;
        if Self::delivering_here(&state) {
            return Err(TaskError::InCallback);
        }
        match state.outcome.take() {
            Some(outcome) => {
                state.taken = true;
                outcome
            }
            None if state.taken => Err(TaskError::AlreadyTaken),
            None => Err(TaskError::Cancelled),
        }
    }

    /// For `Future::poll`: the outcome if done (and delivered), else remember the waker.
    pub(crate) fn poll_take(&self, waker: &Waker) -> Option<Result<T, TaskError>> {
        let mut state = self.lock();
        if state.done && state.delivering.is_none() {
            return Some(state.outcome.take().unwrap_or(Err(TaskError::Cancelled)));
        }
        state.waker = Some(waker.clone());
        None
    }
}
