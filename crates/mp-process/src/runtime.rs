//! The child runtime: what a new process does between its creation and `_exit` — become the child its
//! parent described, run the setup hooks and the target, join its own children, report the outcome.
//!
//! # The forked child's rules
//!
//! A forked child (under `fork`, and every fork-server child) shares every page with the process it was
//! forked from until one of them writes to it: each first write to a page is a copy-on-write fault, and each
//! 64 KiB stretch of code first run is a page fault too, since `fork` copies no page-table entries for the
//! program's code. On the path from `fork` to the target, mp's code therefore:
//!
//! - **allocates nothing**: the allocator's first use alone is about nine page faults (its code, its arena,
//!   two heap pages). What the child needs is built before the fork (`me_for`), the fork server's request is
//!   received into a static page-aligned buffer and decoded in place (`wire::bootstrap`), who the child is
//!   is decoded only on first use. A perf probe on `malloc` counted about 10 allocations per served child
//!   before, 0 after; `tests/process.rs` checks it (`forked_children_allocate_nothing_before_the_target`).
//! - **touches no new code page it can avoid**: the child's path is `#[inline(always)]` where it leaves the
//!   functions already run, system calls go through rustix's inline calls or one `libc::syscall` helper
//!   rather than libc wrappers that each lie on a page of their own (the signal set-up, `close`,
//!   `getpid`), and libc symbols the child calls are bound before any fork (`LD_BIND_NOW` in the fork server,
//!   `prebind_child_symbols` elsewhere). Page faults per served child went from 24 to 18 with these; a child
//!   that calls `_exit` at once takes 9.
//! - **writes no page it need not write**: process-wide state is swapped, not reset (`state::reset_after_fork`
//!   writes only non-null entries of one 128-byte block); flags are read before they are written; the parent
//!   puts off freeing memory until the child has been reaped.
//!
//! `cargo xtask bench process` (`spawn_join_fork`, `spawn_join_forkserver` against the `fork_exit_wait`
//! floor) is the workload that shows a loss of any of these.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::call::FnOffset;
use crate::error::{ChildError, ChildErrorKind};
use crate::identity::{Me, set_me};
use crate::job::{Job, install_panic_hook};
use crate::slots::{Report, Writer};
use crate::wire::bootstrap::{Decoded, parse_bootstrap, read_bootstrap};
use crate::wire::outcome::Outcome;
use crate::{StartMethod, settings, state, sys};

static INITIALIZED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The `#[test]` this thread runs, recorded by `init` (libtest names each test's thread after it).
    static TEST_NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks the process initialized, registering the exit handler once (see [`state::run_exit_handler`]).
pub(crate) fn mark_initialized() {
    // Read first: a forked child shares this page with its parent until it writes to it.
    if !INITIALIZED.load(Ordering::SeqCst) && !INITIALIZED.swap(true, Ordering::SeqCst) {
        sys::at_exit(state::at_exit);
        sys::prebind_child_symbols();
    }
}

/// Records the `#[test]` this thread runs (libtest names each test's thread after it), for [`child_args`].
pub(crate) fn record_test_name() {
    if !sys::is_main_thread() {
        if let Some(name) = std::thread::current().name().filter(|n| *n != "main") {
            TEST_NAME.with(|slot| *slot.borrow_mut() = Some(name.to_owned()));
        }
    }
}

/// What `init` sets up, done once in the fork server so that its children inherit it instead of each doing it
/// after the fork.
pub(crate) fn prepare_server() {
    mark_initialized();
    install_panic_hook();
    // First uses that every child would otherwise make after the fork (each touching pages and code).
    crate::handle::touch_tables();
    TEST_NAME.with(|_| ());
    crate::job::touch_tables();
    let _ = std::io::stdout().flush();
}

pub(crate) fn is_initialized() -> bool {
    INITIALIZED.load(Ordering::SeqCst)
}

/// Arguments for a re-executed child: under `cargo test`, the filter that selects the current test.
pub(crate) fn child_args() -> Vec<String> {
    TEST_NAME.with(|slot| slot.borrow().clone()).map_or_else(Vec::new, |name| {
        vec![name, "--exact".into(), "--nocapture".into(), "--test-threads=1".into(), "--quiet".into()]
    })
}

/// What a child needs to know of its start before its target runs.
pub(crate) struct Start<'a> {
    pub(crate) start_method: StartMethod,
    pub(crate) kill_with_parent: bool,
    pub(crate) parent_pid: u32,
    pub(crate) affinity: Option<&'a [usize]>,
    /// Created by the fork server, which has already arranged to die-with-parent.
    pub(crate) via_server: bool,
}

/// Sets up the process for its target: start method, death with the parent, CPU affinity, panic hook (its
/// identity is set before).
#[inline(always)] // the forked child's path in as few code pages as possible (see `fork_and_run`)
fn become_child(start: &Start<'_>) -> Result<(), ChildError> {
    settings::inherit_start_method(start.start_method);
    mark_initialized();
    if start.kill_with_parent && !start.via_server {
        // Set first, then check: a parent that died before the prctl is caught by the pid check.
        if sys::set_parent_death_signal().is_err() || sys::parent_pid() != start.parent_pid {
            sys::exit_now(1);
        }
    }
    if let Some(cpus) = start.affinity {
        sys::set_affinity(cpus).map_err(|e| ChildError {
            kind: ChildErrorKind::Bootstrap,
            message: format!("failed to set CPU affinity {cpus:?}: {e}"),
        })?;
    }
    install_panic_hook();
    Ok(())
}

/// Forks; the child runs `job` and exits, the parent gets the child's pid. The job (its arguments) is
/// dropped in the parent at once, as in CPython: a handle among them must not stay open there. Here, next to
/// the child's code, so that the child resumes in code pages it is about to run anyway (each code page a forked
/// child touches first costs it a page fault).
///
/// `me` becomes the child's identity; the parent gets it back, to free it once the child has ended.
///
/// `gate`, when given (a pipe: read end, write end), holds the child back until the parent writes a byte to
/// it: where the kernel reaps children itself (SIGCHLD ignored), the parent must open the child's pidfd
/// before the child can end.
pub(crate) fn fork_and_run(
    start: &Start<'_>,
    me: Box<Me>,
    report: &Report,
    job: Box<dyn Job>,
    gate: Option<(RawFd, RawFd)>,
) -> std::io::Result<(u32, Box<Me>)> {
    // SAFETY: the child only runs `run_forked`, which resets this crate's locks before use; the caller chose
    // `Fork` knowing locks held by other threads stay held in the child (see `StartMethod`).
    match unsafe { sys::fork() }? {
        sys::Forked::Child => {
            if let Some((read, write)) = gate {
                sys::close_raw(write);
                // SAFETY: the read end stays open until closed just below; nothing else in the child uses it.
                let _ = sys::read_some(unsafe { BorrowedFd::borrow_raw(read) }, &mut [0u8; 1]);
                sys::close_raw(read);
            }
            run_forked(start, me, report, job)
        }
        sys::Forked::Parent(pid) => {
            drop(job);
            Ok((pid, me))
        }
    }
}

/// The child of a `fork` start: runs the job from memory.
#[inline(always)] // the forked child's path in as few code pages as possible (see `fork_and_run`)
fn run_forked(start: &Start<'_>, me: Box<Me>, report: &Report, mut job: Box<dyn Job>) -> ! {
    state::reset_after_fork();
    set_me(me);
    let outcome = match become_child(start) {
        // The hooks are this process's own (the same image): no offsets to trust.
        Ok(()) => match run_setup(crate::settings::setup_hooks().iter().copied()) {
            // SAFETY: the job runs once, and is never dropped: `finish` ends the process.
            Ok(()) => unsafe { job.run_once() },
            Err(outcome) => outcome,
        },
        Err(e) => Outcome::Failed(e),
    };
    finish(report, outcome)
}

/// A re-executed or fork-server child: reads its bootstrap from `sock`, runs the target.
///
/// A spawned child given an outcome slot (`slot`, in its parent's memory file, adopted by `init`) reports
/// there: its socket then only brings the bootstrap, and a target that closes every descriptor cannot lose
/// the outcome.
pub(crate) fn run_from_socket(sock: OwnedFd, via_server: bool, slot: Option<Writer>) -> ! {
    if via_server {
        state::reset_after_fork();
        // The parent learns a fork-server child's pid from the child itself.
        let _ = sys::write_all(sock.as_fd(), &sys::pid().to_le_bytes());
    }
    let boot = read_bootstrap(sock.as_fd());
    let report = match slot {
        Some(writer) => {
            drop(sock);
            Report::Slot(writer)
        }
        None => {
            let identity = sys::fd_identity(sock.as_fd());
            Report::Socket { sock, identity }
        }
    };
    let outcome = run_bootstrap(boot, via_server);
    finish(&report, outcome)
}

/// A fork-server child whose request came whole (`frame`: its bootstrap) with a slot for its outcome and a
/// pipe to say when the outcome is there.
pub(crate) fn run_served(
    frame: Result<&'static [u8], ChildError>,
    fds: Vec<OwnedFd>,
    writer: Writer,
    done: OwnedFd,
    identity: u64,
) -> ! {
    state::reset_after_fork();
    // The parent learns the pid from the slot, without a wake-up unless it asks before this.
    writer.set_pid(sys::pid());
    let outcome = run_bootstrap(frame.and_then(|frame| parse_bootstrap(frame, fds)), true);
    finish(&Report::Served { writer, done, identity }, outcome)
}

/// Becomes the process a bootstrap describes and runs its target. Nothing here allocates before the target
/// runs (see [`Bootstrap`](crate::wire::bootstrap::Bootstrap)).
fn run_bootstrap(boot: Result<Decoded, ChildError>, via_server: bool) -> Outcome {
    let (boot, payload, fds) = match boot {
        Ok(decoded) => decoded,
        Err(e) => return Outcome::Failed(e),
    };
    // Who we are, and what we inherit, are decoded from here on first use.
    state::set_who(boot.who);
    crate::identity::forget_me();
    crate::settings::forget();
    let start = Start {
        start_method: boot.start_method,
        kill_with_parent: boot.kill_with_parent,
        parent_pid: boot.parent_pid,
        affinity: boot.affinity.as_deref(),
        via_server,
    };
    if let Err(e) = become_child(&start) {
        return Outcome::Failed(e);
    }
    let hooks =
        boot.setup.chunks_exact(8).map(|raw| FnOffset::from_raw(i64::from_le_bytes(raw.try_into().expect("8"))));
    if let Err(outcome) = run_setup(hooks) {
        return outcome;
    }
    // SAFETY: the fingerprint check in the header established that the parent runs this same build, and the
    // parent made the offset from an `Entry` with `FnOffset::of`.
    let entry = unsafe { boot.entry.resolve() };
    entry(payload, fds)
}

/// Runs the child-setup hooks (see [`register_child_setup`](crate::register_child_setup)); a panic in one
/// becomes the child's outcome, and its target does not run.
#[inline(always)] // the forked child's path in as few code pages as possible (see `fork_and_run`)
fn run_setup(hooks: impl Iterator<Item = FnOffset<fn()>>) -> Result<(), Outcome> {
    for hook in hooks {
        // SAFETY: the offset was made by `FnOffset::of` from a `fn()` (see `register_child_setup`) in this
        // process or in a parent running the same build (the start-up message's fingerprint was checked).
        let hook = unsafe { hook.resolve() };
        crate::job::catch_panic(hook).map_err(Outcome::Panicked)?;
    }
    Ok(())
}

/// Waits for our own children as CPython does at a child's exit, reports the outcome, and exits. The outcome
/// goes last, so that the parent, once it has it, knows the exit is immediate.
#[inline(always)] // the forked child's path in as few code pages as possible (see `fork_and_run`)
fn finish(report: &Report, outcome: Outcome) -> ! {
    let code = outcome.exit_code();
    state::run_exit_handler();
    // Rust's stderr is unbuffered; stdout may hold a partial line.
    let _ = std::io::stdout().flush();
    let _ = report.send(&outcome);
    sys::exit_now(code)
}
