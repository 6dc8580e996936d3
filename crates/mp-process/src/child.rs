//! The child side: the entry call [`init`], and the runtime that runs a target and reports how it went.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::current::{Me, ParentLink, set_me};
use crate::error::{ChildError, ChildErrorKind};
use crate::offset::{FnOffset, install_panic_hook};
use crate::popen::arena::{Report, Writer};
use crate::popen::{ChildInfo, Decoded, forkserver, parse_bootstrap, read_bootstrap};
use crate::target::{Job, Outcome};
use crate::{StartMethod, context, registry, sys};

/// Environment variable that turns a re-executed program into a child (value: its socket's number).
pub(crate) const CHILD_ENV: &str = "MP_PROCESS_CHILD";
/// The outcome slot of a spawned child, in the memory file `MP_PROCESS_SLOTS` names.
pub(crate) const SLOT_ENV: &str = "MP_PROCESS_SLOT";

static INITIALIZED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The `#[test]` this thread runs, recorded by `init` (libtest names each test's thread after it).
    static TEST_NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

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
    if let Some(fd) = take_env_fd(CHILD_ENV) {
        // A spawned child with an outcome slot: its parent's memory file of slots, and its slot there.
        let slots = take_env_fd(forkserver::SLOTS_ENV);
        let slot = take_env(SLOT_ENV).and_then(|index| index.parse().ok());
        let writer = match (slots, slot) {
            (Some(slots), Some(index)) => {
                crate::popen::arena::adopt(slots);
                Writer::for_index(index)
            }
            _ => None,
        };
        run_from_socket(fd, false, writer);
    }
    if let Some(fd) = take_env_fd(forkserver::SERVER_ENV) {
        if take_env(forkserver::BIND_NOW_ENV).is_some() {
            take_env("LD_BIND_NOW"); // ours, not the user's: the children must not inherit it
        }
        let parent = take_env(forkserver::PARENT_ENV).and_then(|v| v.parse().ok()).unwrap_or(0);
        if let Some(slots) = take_env_fd(forkserver::SLOTS_ENV) {
            crate::popen::arena::adopt(slots);
        }
        forkserver::serve(fd, parent);
    }
    mark_initialized();
    install_panic_hook();
    if !sys::is_main_thread() {
        if let Some(name) = std::thread::current().name().filter(|n| *n != "main") {
            TEST_NAME.with(|slot| *slot.borrow_mut() = Some(name.to_owned()));
        }
    }
}

fn mark_initialized() {
    // Read first: a forked child shares this page with its parent until it writes to it.
    if !INITIALIZED.load(Ordering::SeqCst) && !INITIALIZED.swap(true, Ordering::SeqCst) {
        sys::at_exit(registry::exit_handler);
        sys::prebind_child_symbols();
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
    crate::offset::touch_tables();
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

/// What a child needs to know of its start before its target runs.
struct Start<'a> {
    start_method: StartMethod,
    kill_with_parent: bool,
    parent_pid: u32,
    affinity: Option<&'a [usize]>,
    /// Created by the fork server, which has already arranged to die-with-parent.
    via_server: bool,
}

/// Sets up the process for its target: start method, death with the parent, CPU affinity, panic hook (its
/// identity is set before).
#[inline(always)] // the forked child's path in as few code pages as possible (see `fork_and_run`)
fn become_child(start: &Start<'_>) -> Result<(), ChildError> {
    context::inherit_start_method(start.start_method);
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

/// Who the forked child of `info` will be, moving the name, identity and parent's name out of `info`. A `fork`
/// start builds this before forking, so that the child allocates nothing (every page it writes is a
/// copy-on-write fault), and moves rather than clones: a start that keeps few small allocations alive stays in
/// the allocator's thread cache, whose shared state would otherwise be written (and copied) after every fork.
pub(crate) fn me_for(info: &mut ChildInfo) -> Box<Me> {
    Box::new(Me {
        name: std::mem::take(&mut info.name),
        identity: std::mem::take(&mut info.identity),
        daemon: info.daemon,
        parent: Some(ParentLink {
            pid: info.parent.pid,
            name: std::mem::take(&mut info.parent.name),
            via_server: false,
            started: 0,
        }),
        counter: AtomicU32::new(0),
        authkey: std::sync::Mutex::new(std::mem::take(&mut info.authkey)),
    })
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
    info: &ChildInfo,
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
            run_forked(info, me, report, job)
        }
        sys::Forked::Parent(pid) => {
            drop(job);
            Ok((pid, me))
        }
    }
}

/// The child of a `fork` start: runs the job from memory.
#[inline(always)] // the forked child's path in as few code pages as possible (see `fork_and_run`)
fn run_forked(info: &ChildInfo, me: Box<Me>, report: &Report, mut job: Box<dyn Job>) -> ! {
    registry::reset_after_fork();
    set_me(me);
    let start = Start {
        start_method: info.start_method,
        kill_with_parent: info.kill_with_parent,
        parent_pid: info.parent.pid,
        affinity: info.affinity.as_deref(),
        via_server: false,
    };
    let outcome = match become_child(&start) {
        // The hooks are this process's own (the same image): no offsets to trust.
        Ok(()) => match run_setup(crate::inherit::setup_hooks().iter().copied()) {
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
        registry::reset_after_fork();
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
    registry::reset_after_fork();
    // The parent learns the pid from the slot, without a wake-up unless it asks before this.
    writer.set_pid(sys::pid());
    let outcome = run_bootstrap(frame.and_then(|frame| parse_bootstrap(frame, fds)), true);
    finish(&Report::Served { writer, done, identity }, outcome)
}

/// Becomes the process a bootstrap describes and runs its target. Nothing here allocates before the target
/// runs (see [`Bootstrap`](crate::popen::Bootstrap)).
fn run_bootstrap(boot: Result<Decoded, ChildError>, via_server: bool) -> Outcome {
    let (boot, payload, fds) = match boot {
        Ok(decoded) => decoded,
        Err(e) => return Outcome::Failed(e),
    };
    // Who we are, and what we inherit, are decoded from here on first use.
    registry::set_who(boot.who);
    crate::current::forget_me();
    crate::inherit::forget();
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
        crate::offset::catch_panic(hook).map_err(Outcome::Panicked)?;
    }
    Ok(())
}

/// Waits for our own children as CPython does at a child's exit, reports the outcome, and exits. The outcome
/// goes last, so that the parent, once it has it, knows the exit is immediate.
#[inline(always)] // the forked child's path in as few code pages as possible (see `fork_and_run`)
fn finish(report: &Report, outcome: Outcome) -> ! {
    let code = outcome.exit_code();
    registry::shutdown_children();
    // Rust's stderr is unbuffered; stdout may hold a partial line.
    let _ = std::io::stdout().flush();
    let _ = report.send(&outcome);
    sys::exit_now(code)
}
