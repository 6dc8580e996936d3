//! Launchers: one per start method behind [`launch`], and the parent's handle on what it launched
//! ([`Launched`]).
//!
//! - [`fork`]: `fork()`, then the target runs in the copy of this process;
//! - [`spawn`]: `posix_spawn` of the executable, which [`init`](crate::init) diverts to the child runtime;
//! - [`forkserver`]: a request to the fork server, which forks a clean copy of itself.
//!
//! A child writes its *outcome* into a slot of memory shared with its parent ([`slots`](crate::slots)), or
//! over a socket when no slot is free. A re-executed child reads its *bootstrap* from a socket (spawn) or its
//! fork-server request ([`wire`](crate::wire)). See `README.md` here.

pub(crate) mod fork;
pub(crate) mod forkserver;
mod launched;
pub(crate) mod spawn;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) use self::launched::Launched;
use crate::call::FnOffset;
use crate::job::Job;
use crate::state::{ProcessLocal, lock, slot};
use crate::wire::bootstrap::{Bootstrap, ParentLink, WhoRef, encode_frame};
use crate::wire::env;
use crate::{StartError, StartMethod, sys};

/// What a child is told about itself.
#[derive(Debug)]
pub(crate) struct LaunchSpec {
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) parent: ParentLink,
    pub(crate) kill_with_parent: bool,
    pub(crate) affinity: Option<Vec<usize>>,
    pub(crate) start_method: StartMethod,
    /// The child's authkey (its parent's unless the builder gave it one).
    pub(crate) authkey: Vec<u8>,
    /// Settings from [`set_inherited`](crate::set_inherited) (a forked child has them in memory already).
    pub(crate) inherited: BTreeMap<String, String>,
}

/// Starts a child with `method`.
pub(crate) fn launch(
    method: StartMethod,
    info: LaunchSpec,
    job: Box<dyn Job>,
    args: Vec<String>,
) -> Result<Arc<Launched>, StartError> {
    match method {
        StartMethod::Fork => fork::launch(info, job),
        StartMethod::Spawn => spawn::launch(info, job, args),
        StartMethod::ForkServer => forkserver::launch(info, job, args),
    }
}

/// The bootstrap frame for a re-executed child, and the handles that go with it.
pub(crate) fn bootstrap_frame(
    info: &LaunchSpec,
    job: &dyn Job,
    method: StartMethod,
) -> Result<(Vec<u8>, Vec<OwnedFd>), StartError> {
    let entry = job.entry().ok_or(StartError::ClosureNeedsFork(method))?;
    let (payload, fds) = job.encode()?;
    if fds.len() > sys::MAX_FDS_PER_MESSAGE {
        return Err(StartError::TooManyHandles(fds.len()));
    }
    let encode = |e: postcard::Error| StartError::Serialize(e.to_string());
    let via_server = method == StartMethod::ForkServer;
    // A fork-server child cannot ask `getppid` about its parent: it gets the parent's start time to tell it
    // from a later process with the same pid.
    let started = if via_server { sys::own_start_time() } else { 0 };
    let parent = ParentLink { via_server, started, ..info.parent.clone() };
    let who = WhoRef {
        name: &info.name,
        identity: &info.identity,
        daemon: info.daemon,
        parent: &parent,
        authkey: &info.authkey,
        inherited: &info.inherited,
        setup: crate::settings::setup_hooks(),
    };
    let who = postcard::to_stdvec(&who).map_err(encode)?;
    let setup: Vec<u8> = crate::settings::setup_hooks().iter().flat_map(|h| h.to_raw().to_le_bytes()).collect();
    let boot = Bootstrap {
        entry: FnOffset::of(entry),
        parent_pid: info.parent.pid,
        kill_with_parent: info.kill_with_parent,
        affinity: info.affinity.clone(),
        start_method: info.start_method,
        setup: &setup,
        who: &who,
    };
    let boot = postcard::to_stdvec(&boot).map_err(encode)?;
    Ok((encode_frame(&boot, &payload), fds))
}

/// The environment of a re-executed child: ours, minus stale mp variables, plus `extra`.
pub(crate) fn child_env(extra: &[(&str, String)]) -> Vec<CString> {
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| !k.to_string_lossy().starts_with(env::PREFIX))
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.extend(extra.iter().filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok()));
    env
}

/// `argv` of a re-executed child: this program's `argv[0]`, then `args` (a test filter under `cargo test`).
pub(crate) fn child_argv(args: &[String]) -> Vec<CString> {
    let argv0 = std::env::args_os().next().map(|a| a.into_encoded_bytes()).unwrap_or_else(|| b"mp-child".to_vec());
    std::iter::once(CString::new(argv0).unwrap_or_else(|_| c"mp-child".to_owned()))
        .chain(args.iter().filter_map(|a| CString::new(a.as_bytes()).ok()))
        .collect()
}

/// Held while a child is created, so that no sibling created at the same moment inherits its descriptors.
static START_LOCK: ProcessLocal<Mutex<()>> = ProcessLocal::new(slot::START_LOCK, || Mutex::new(()));

pub(crate) fn start_lock() -> MutexGuard<'static, ()> {
    lock(START_LOCK.get())
}
