//! The worker process: runs the initializer, then the jobs of its own queue one at a time, reporting each
//! outcome to the pool's inbox.

use mp_ipc::Queue;
use mp_shm::SharedMemory;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::task::{Failure, Input, Job};

/// What a worker is started with.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) slot: u32,
    pub(crate) tasks: Queue<Option<Job>>,
    pub(crate) inbox: Queue<Inbox>,
    pub(crate) initializer: Option<Job>,
    pub(crate) max_tasks: Option<u64>,
    /// Retire after a task that left the worker's resident memory above this (bytes).
    pub(crate) max_memory: Option<u64>,
    /// How much the worker's address space may grow past its size at start (bytes): an allocation beyond it
    /// fails, and the worker aborts.
    pub(crate) memory_limit: Option<u64>,
    /// Exit after waiting this long for a job (the pool starts a worker again when work comes).
    pub(crate) idle_timeout: Option<std::time::Duration>,
}

/// The pool's inbox: what workers report, and the pool's own wake-up calls.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Inbox {
    /// The worker in `slot` ran its initializer and waits for jobs.
    Ready { slot: u32 },
    /// The initializer failed: the pool stops.
    InitFailed { slot: u32, failure: Failure },
    /// A job's outcome.
    Done { slot: u32, id: u64, result: Result<ByteBuf, Failure> },
    /// The worker in `slot` waited its idle timeout for a job and exits.
    Idle { slot: u32 },
    /// Something changed in the parent (a submission, close, terminate): look at the state.
    Wake,
}

/// The worker's main loop (the target of every worker process).
pub(crate) fn worker_main(args: WorkerArgs) {
    let slot = args.slot;
    if let Some(limit) = args.memory_limit {
        limit_address_space(limit);
    }
    if let Some(init) = &args.initializer {
        if let Err(failure) = run(init) {
            let _ = args.inbox.put(Inbox::InitFailed { slot, failure });
            return;
        }
    }
    if args.inbox.put(Inbox::Ready { slot }).is_err() {
        return;
    }
    let mut done = 0u64;
    loop {
        let next = match args.idle_timeout {
            None => args.tasks.get(),
            Some(idle) => args.tasks.get_timeout(idle),
        };
        let job = match next {
            Ok(Some(job)) => job,
            Ok(None) => return, // the pool's "stop"
            Err(mp_ipc::GetError::Empty) => {
                let _ = args.inbox.put(Inbox::Idle { slot });
                return;
            }
            Err(e) => {
                log::error!("mp-pool: worker in slot {slot} cannot read its jobs: {e}");
                return;
            }
        };
        crate::options::set_current(Some(job.timeout));
        let result = run(&job).map(ByteBuf::from);
        crate::options::set_current(None);
        if args.inbox.put(Inbox::Done { slot, id: job.id, result }).is_err() {
            return;
        }
        done += 1;
        if args.max_tasks.is_some_and(|max| done >= max) {
            return;
        }
        if let Some(max) = args.max_memory {
            let resident = status_bytes("VmRSS:");
            if resident.is_some_and(|r| r > max) {
                log::info!("mp-pool: worker in slot {slot} holds {resident:?} bytes, over {max}: it retires");
                return;
            }
        }
    }
}

/// A size from `/proc/self/status` (`VmRSS:`, `VmSize:`) in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Limits this worker's address space to its present size plus `limit` (`RLIMIT_AS`).
fn limit_address_space(limit: u64) {
    let Some(now) = status_bytes("VmSize:") else {
        log::error!("mp-pool: cannot read this worker's size; no memory limit");
        return;
    };
    let cap = now.saturating_add(limit);
    let rlimit = rustix::process::Rlimit { current: Some(cap), maximum: Some(cap) };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::As, rlimit) {
        log::error!("mp-pool: cannot limit this worker's memory to {cap} bytes: {e}");
    }
}

fn run(job: &Job) -> Result<Vec<u8>, Failure> {
    // SAFETY: jobs come only from the pool that started this worker, in a process running the same build
    // (mp-process checked it before running us).
    let entry = unsafe { job.entry.resolve() };
    match &job.input {
        Input::Inline(bytes) => entry(bytes),
        Input::Segment(name) => {
            let shm = SharedMemory::open(name).map_err(|e| Failure::ArgumentDecode(e.to_string()))?;
            entry(&shm.to_vec())
        }
    }
}
