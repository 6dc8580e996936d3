//! [`init`]: the entry call that diverts a re-executed program to its role (spawned child, fork server)
//! before any user code runs, and sets the main program up.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::launch::forkserver;
use crate::slots::{self, Writer};
use crate::wire::env;
use crate::{job, runtime, state, sys, tree};

/// The entry call: put `mp_process::init()` first in `main` (and first in each `#[test]` that starts
/// processes).
///
/// In the main program it registers the exit handler (daemonic children are terminated and the others joined
/// when `main` returns, as in CPython) and returns at once. In a program re-executed as a `Spawn` child or as
/// the fork server, it never returns: it runs the child's target (or serves fork requests) and exits the
/// process. This is Rust's counterpart of Python's `if __name__ == "__main__":` guard; starting a process
/// without it is [`StartError::NotInitialized`](crate::StartError::NotInitialized).
///
/// Under `cargo test`, call it first in the test: the re-executed child runs the test binary filtered to
/// that exact test, reaches this call, and is diverted to its target there.
pub fn init() {
    // What a process runs as it exits: joining and terminating its children (the tree sits above the
    // runtime, which calls it through `state`).
    state::set_exit_handler(tree::shutdown_children);
    if let Some(fd) = take_env_fd(env::CHILD) {
        // A spawned child with an outcome slot: its parent's memory file of slots, and its slot there.
        let slots = take_env_fd(env::SLOTS);
        let slot = take_env(env::SLOT).and_then(|index| index.parse().ok());
        let writer = match (slots, slot) {
            (Some(slots), Some(index)) => {
                slots::adopt(slots);
                Writer::for_index(index)
            }
            _ => None,
        };
        runtime::run_from_socket(fd, false, writer);
    }
    if let Some(fd) = take_env_fd(env::SERVER) {
        if take_env(env::BIND_NOW).is_some() {
            take_env("LD_BIND_NOW"); // ours, not the user's: the children must not inherit it
        }
        let parent = take_env(env::PARENT).and_then(|v| v.parse().ok()).unwrap_or(0);
        if let Some(slots) = take_env_fd(env::SLOTS) {
            slots::adopt(slots);
        }
        forkserver::serve(fd, parent);
    }
    runtime::mark_initialized();
    job::install_panic_hook();
    runtime::record_test_name();
}

fn take_env(key: &str) -> Option<String> {
    let value = std::env::var(key).ok()?;
    sys::remove_env(key);
    Some(value)
}

fn take_env_fd(key: &str) -> Option<OwnedFd> {
    let fd: i32 = take_env(key)?.parse().ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the parent kept exactly this descriptor open across exec for us, and nothing else in this
    // freshly started program has claimed it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
