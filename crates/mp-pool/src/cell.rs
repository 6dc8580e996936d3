//! [`Cell`]: where a result waits for whoever asks for it — blocking, with a timeout, through callbacks, or
//! as a `std::future::Future`.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
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
    /// The outcome was handed out by `take_again`.
    taken: bool,
    /// Waiting callbacks, each with the key `on_done_keyed` handed out (0 for ones that stay).
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
                taken: false,
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

    /// Stores the outcome (the first one wins), runs the callbacks and wakes every waiter. The outcome is
    /// stored first, so that a panicking callback cannot keep it from the waiters.
    pub(crate) fn set(&self, outcome: Result<T, TaskError>) {
        let mut state = self.lock();
        if state.done {
            return;
        }
        state.outcome = Some(outcome);
        state.done = true;
        let callbacks = std::mem::take(&mut state.callbacks);
        if let Some(outcome) = &state.outcome {
            for (_, callback) in callbacks {
                run_callback(callback, outcome.as_ref());
            }
        }
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
        match (&state.outcome, state.done) {
            (Some(outcome), _) => run_callback(callback, outcome.as_ref()),
            (None, true) => run_callback(callback, Err(&TaskError::Cancelled)),
            (None, false) => {
                let key = state.next_key;
                state.next_key += 1;
                state.callbacks.push((key, callback));
                return Some(key);
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
        state.done.then(|| matches!(state.outcome, Some(Ok(_))))
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(self.lock().outcome, Some(Err(TaskError::Cancelled)))
    }

    /// Waits until done or `timeout`; whether it is done.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut state = self.lock();
        while !state.done {
            match deadline {
                None => state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    state = self.ready.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
        true
    }

    /// Takes the outcome, waiting at most `timeout` ([`TaskError::Timeout`] then; the outcome stays).
    pub(crate) fn take(&self, timeout: Option<Duration>) -> Result<T, TaskError> {
        if !self.wait(timeout) {
            return Err(TaskError::Timeout);
        }
        self.lock().outcome.take().unwrap_or(Err(TaskError::Cancelled))
    }

    /// Like [`take`](Self::take), for a handle that stays: a second take after the outcome was handed out is
    /// [`TaskError::AlreadyTaken`].
    pub(crate) fn take_again(&self, timeout: Option<Duration>) -> Result<T, TaskError> {
        if !self.wait(timeout) {
            return Err(TaskError::Timeout);
        }
        let mut state = self.lock();
        match state.outcome.take() {
            Some(outcome) => {
                state.taken = true;
                outcome
            }
            None if state.taken => Err(TaskError::AlreadyTaken),
            None => Err(TaskError::Cancelled),
        }
    }

    /// For `Future::poll`: the outcome if done, else remember the waker.
    pub(crate) fn poll_take(&self, waker: &Waker) -> Option<Result<T, TaskError>> {
        let mut state = self.lock();
        if state.done {
            return Some(state.outcome.take().unwrap_or(Err(TaskError::Cancelled)));
        }
        state.waker = Some(waker.clone());
        None
    }
}
