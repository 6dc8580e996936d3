//! mp-process across real processes: every case runs under the start method `cargo xtask test` selects.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mp_process::{
    Builder, ChildErrorKind, ContextError, Handle, JoinError, Process, ProcessError, StartError, StartMethod,
    active_children, all_start_methods, cpu_count, current_process, get_context, parent_process, wait,
};
use serde::{Deserialize, Serialize};
use support::{eventually, method, ppid_of, process_alive};

fn main() {
    mp_process::init();
    support::run(support::cases![
        return_value_comes_back,
        targets_take_python_style_args,
        default_names_follow_cpython,
        exit_codes_follow_cpython,
        exit_codes_of_many_short_lived_children,
        panic_comes_back_as_data,
        join_timeout_returns_while_running,
        lifecycle_misuse_is_an_error,
        close_rules,
        argument_that_fails_to_serialize,
        argument_that_fails_to_decode,
        result_that_fails_to_serialize_says_why,
        child_from_a_copy_of_the_build_runs,
        child_from_a_different_build_refuses,
        closures_need_fork,
        daemon_rules,
        exit_joins_and_terminates_children,
        children_die_with_a_killed_parent,
        keep_alive_after_parent_opts_out,
        handles_cross_into_the_child,
        current_and_parent_process,
        active_children_lists_running_ones,
        cpu_count_and_affinity,
        wait_returns_the_ready_ones,
        large_arguments_and_results,
        start_from_a_short_lived_thread,
        many_children_at_once,
        outcomes_are_never_mixed_up,
        start_method_configuration,
        killed_fork_server_is_reported_and_replaced,
        killed_spares_are_replaced,
        children_get_the_parents_signal_state,
        inherited_settings_reach_grandchildren,
        detached_processes_are_not_children,
        forked_children_allocate_nothing_before_the_target,
        a_contexts_start_method_reaches_the_child,
        authkeys_are_inherited,
        parent_process_join_and_is_alive,
        a_childs_panic_names_the_process_on_stderr,
        setup_hooks_run_before_the_target,
        a_failing_setup_hook_fails_the_start,
        fork_of_a_threaded_parent_warns_once,
        a_start_that_fails_fails_alone,
        standard_streams_closed_in_the_parent,
        exit_codes_with_sigchld_ignored,
        no_spare_outlives_a_killed_server,
        terminal_signals_spare_the_fork_servers_children,
        a_target_that_closes_every_descriptor,
        exit_hooks_run_as_a_child_ends,
        before_fork_hooks_run_in_the_parent_before_each_fork,
    ]);
}

/// Counts heap allocations per process (see [`allocations_here`]).
struct CountingAllocator;

/// Allocations made by the process whose pid is in `ALLOCATING_PID` (a forked child inherits both values and
/// starts its own count at its first allocation).
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATING_PID: AtomicU32 = AtomicU32::new(0);

impl CountingAllocator {
    fn count() {
        let pid = std::process::id();
        if ALLOCATING_PID.load(Ordering::Relaxed) != pid {
            ALLOCATING_PID.store(pid, Ordering::Relaxed);
            ALLOCATIONS.store(0, Ordering::Relaxed);
        }
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches only atomics.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// How many allocations this process has made since it was forked (allocating nothing itself).
fn allocations_here() -> u64 {
    if ALLOCATING_PID.load(Ordering::Relaxed) == std::process::id() { ALLOCATIONS.load(Ordering::Relaxed) } else { 0 }
}

fn allocations_before_me(_: ()) -> u64 {
    allocations_here()
}

/// A forked child (`fork`, and the fork server's children) reaches its target without touching the allocator:
/// in a child every heap page written is a copy-on-write fault, and the allocator's first use alone costs about
/// nine page faults. A spawned child is a fresh program and allocates as it starts.
fn forked_children_allocate_nothing_before_the_target() {
    for _ in 0..3 {
        let mut p = Process::new(allocations_before_me, ());
        p.start().unwrap();
        let allocations = p.join().unwrap();
        match method() {
            StartMethod::Spawn => assert!(allocations > 0, "a spawned child starts a program, which allocates"),
            _ => assert_eq!(allocations, 0, "allocations in a {} child before its target", method()),
        }
    }
}

fn square(x: u64) -> u64 {
    x * x
}

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn return_value_comes_back() {
    let mut p = Process::new(square, 12);
    assert_eq!(p.pid(), None);
    assert_eq!(p.exitcode(), None);
    assert!(!p.is_alive());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    assert_ne!(pid, std::process::id());
    assert_eq!(p.start_method(), method());
    assert_eq!(p.join().unwrap(), 144);
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    assert!(matches!(p.join(), Err(JoinError::AlreadyJoined)));
    assert_eq!(p.exitcode(), Some(0));
}

fn no_args() -> String {
    "none".to_owned()
}

fn add3(a: i32, b: i32, c: String) -> String {
    format!("{c}{}", a + b)
}

fn targets_take_python_style_args() {
    let mut p = Process::new(no_args, ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), "none");
    let mut p = Process::new(add3, (2, 3, "sum=".to_owned()));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), "sum=5");
    let mut p = Process::new(|v: Vec<u8>| v.len(), vec![1, 2, 3]);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 3);
}

fn names_in_child(_: ()) -> (String, String, String) {
    let first = Process::new(nap, 0);
    let second = Process::new(nap, 0);
    (current_process().name().to_owned(), first.name().to_owned(), second.name().to_owned())
}

fn default_names_follow_cpython() {
    let a = Process::new(nap, 0);
    let b = Process::new(nap, 0);
    assert_eq!(a.name(), "Process-1");
    assert_eq!(b.name(), "Process-2");
    let mut c = Process::new(names_in_child, ());
    assert_eq!(c.name(), "Process-3");
    c.start().unwrap();
    let (me, first, second) = c.join().unwrap();
    assert_eq!(me, "Process-3");
    assert_eq!(first, "Process-3:1");
    assert_eq!(second, "Process-3:2");
    let named = Builder::new().name("worker").target(nap, 0);
    assert_eq!(named.name(), "worker");
    assert_eq!(current_process().name(), "MainProcess");
}

fn panics(msg: String) {
    panic!("{msg}");
}

fn exits(code: i32) {
    std::process::exit(code);
}

/// Children that end at once, one after another, each without an outcome: every exit code must come back
/// (under the fork server, the server's report races the next start's spare bookkeeping).
fn exit_codes_of_many_short_lived_children() {
    for round in 0..150 {
        let code = round % 5 + 2;
        let mut p = Process::new(exits, code);
        p.start().unwrap();
        match p.join_timeout(Duration::from_secs(10)) {
            Err(JoinError::Exited { code: got, .. }) => assert_eq!(got, code, "round {round}"),
            other => panic!("round {round}: expected Exited({code}), got {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(code));
    }
}

fn exit_codes_follow_cpython() {
    let mut ok = Process::new(nap, 0);
    let mut panicking = Process::new(panics, "boom".to_owned());
    let mut exiting = Process::new(exits, 3);
    let mut exiting_zero = Process::new(exits, 0);
    let mut terminated = Process::new(nap, 60_000);
    let mut killed = Process::new(nap, 60_000);
    for p in [&mut ok, &mut terminated, &mut killed] {
        p.start().unwrap();
    }
    panicking.start().unwrap();
    exiting.start().unwrap();
    exiting_zero.start().unwrap();
    terminated.terminate().unwrap();
    killed.kill().unwrap();
    ok.join().unwrap();
    assert_eq!(ok.exitcode(), Some(0));
    assert!(matches!(panicking.join(), Err(JoinError::Panicked(_))));
    assert_eq!(panicking.exitcode(), Some(1));
    assert!(matches!(exiting.join(), Err(JoinError::Exited { code: 3, .. })));
    assert_eq!(exiting.exitcode(), Some(3));
    assert!(matches!(exiting_zero.join(), Err(JoinError::Exited { code: 0, .. })));
    assert_eq!(exiting_zero.exitcode(), Some(0));
    assert!(matches!(terminated.join(), Err(JoinError::Signaled { signal: 15, .. })));
    assert_eq!(terminated.exitcode(), Some(-15));
    assert!(matches!(killed.join(), Err(JoinError::Signaled { signal: 9, .. })));
    assert_eq!(killed.exitcode(), Some(-9));
    // terminate/kill after the end are no-ops, as in CPython.
    terminated.terminate().unwrap();
    killed.kill().unwrap();
}

fn panic_comes_back_as_data() {
    let mut p = Builder::new().name("doomed").target(panics, "the answer is 42".to_owned());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    let err = p.join().unwrap_err();
    let info = err.panic_info().expect("a panic");
    assert_eq!(info.message, "the answer is 42");
    assert_eq!(info.process_name, "doomed");
    assert_eq!(info.pid, pid);
    let location = info.location.as_deref().expect("a location");
    assert!(location.starts_with("tests/process.rs:"), "{location}");
    let text = err.to_string();
    assert!(text.contains("doomed") && text.contains("the answer is 42") && text.contains(&pid.to_string()));
}

fn join_timeout_returns_while_running() {
    let mut p = Process::new(nap, 60_000);
    p.start().unwrap();
    let start = Instant::now();
    assert!(p.join_timeout(Duration::from_millis(100)).unwrap().is_none());
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(5), "{waited:?}");
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert!(p.join_timeout(Duration::ZERO).unwrap().is_none());
    p.terminate().unwrap();
    assert!(matches!(p.join_timeout(Duration::from_secs(10)), Err(JoinError::Signaled { signal: 15, .. })));
    let mut quick = Process::new(square, 3);
    quick.start().unwrap();
    assert_eq!(quick.join_timeout(Duration::from_secs(10)).unwrap(), Some(9));
}

fn lifecycle_misuse_is_an_error() {
    let mut p = Process::new(square, 2);
    assert!(matches!(p.join(), Err(JoinError::NotStarted)));
    assert!(matches!(p.join_timeout(Duration::ZERO), Err(JoinError::NotStarted)));
    assert!(matches!(p.terminate(), Err(ProcessError::NotStarted)));
    assert!(matches!(p.kill(), Err(ProcessError::NotStarted)));
    p.start().unwrap();
    assert!(matches!(p.start(), Err(StartError::AlreadyStarted)));
    assert_eq!(p.join().unwrap(), 4);
    assert!(matches!(p.start(), Err(StartError::AlreadyStarted)));
}

fn close_rules() {
    let unstarted = Process::new(square, 2);
    unstarted.close().unwrap();
    let mut running = Process::new(nap, 60_000);
    running.start().unwrap();
    let err = running.close().unwrap_err();
    assert!(err.to_string().contains("still running"));
    let mut running = err.into_inner();
    running.kill().unwrap();
    assert!(running.join().is_err());
    running.close().unwrap();
    // Any use after close is a compile error: `close` consumes the process.
}

/// Serializes only while `ok` is true; decodes only when `decodable` is true.
#[derive(Debug)]
struct Picky {
    serializable: bool,
    decodable: bool,
}

impl Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.serializable {
            return Err(serde::ser::Error::custom("Picky refuses to be serialized"));
        }
        self.decodable.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if bool::deserialize(d)? {
            Ok(Picky { serializable: true, decodable: true })
        } else {
            Err(serde::de::Error::custom("Picky refuses to be decoded"))
        }
    }
}

fn take_picky(p: Picky) -> bool {
    p.decodable
}

fn argument_that_fails_to_serialize() {
    let mut p = Process::new(take_picky, Picky { serializable: false, decodable: true });
    if method() == StartMethod::Fork {
        // A forked child gets its arguments by copy, not by serialization (as in CPython).
        p.start().unwrap();
        assert!(p.join().unwrap());
    } else {
        let err = p.start().unwrap_err();
        // The serializer's own words, not postcard's "Serde Serialization Error".
        assert!(matches!(&err, StartError::Serialize(m) if m == "Picky refuses to be serialized"), "{err:?}");
        assert!(p.pid().is_none());
        assert!(active_children().is_empty());
    }
}

fn make_picky(serializable: bool) -> Picky {
    Picky { serializable, decodable: true }
}

fn result_that_fails_to_serialize_says_why() {
    let mut p = Process::new(make_picky, false);
    p.start().unwrap();
    match p.join() {
        Err(JoinError::Child(e)) => {
            assert_eq!(e.kind, ChildErrorKind::ResultEncode);
            assert_eq!(
                e.message, "Picky refuses to be serialized",
                "the child's serializer's message reaches the parent"
            );
        }
        other => panic!("expected a result encode error, got {other:?}"),
    }
    assert_eq!(p.exitcode(), Some(1));
    let mut q = Process::new(make_picky, true);
    q.start().unwrap();
    assert!(q.join().unwrap().decodable);
}

fn argument_that_fails_to_decode() {
    let mut p = Process::new(take_picky, Picky { serializable: true, decodable: false });
    p.start().unwrap();
    if method() == StartMethod::Fork {
        assert!(!p.join().unwrap());
    } else {
        match p.join() {
            Err(JoinError::Child(e)) => assert_eq!(e.kind, ChildErrorKind::ArgumentDecode),
            other => panic!("expected an argument decode error, got {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(1));
    }
}

/// The offset of this executable's build-id descriptor in its file, and its length.
fn build_id_in_file(file: &[u8]) -> (usize, usize) {
    let id = mp_process::offset::build_id();
    assert!(id.is_gnu_build_id(), "the test binary has no build-id note: {id:?}");
    let bytes = id.as_bytes();
    let at = file.windows(bytes.len()).position(|w| w == bytes).expect("the build id is in the file");
    (at, bytes.len())
}

/// Writes `bytes` as an executable file in the case's temporary directory.
fn write_program(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// Runs `square(5)` in a child re-executed from the program at `path` (the fork server, if any, is started
/// from it too: nothing in this case started one before), then removes the program.
fn square_from(path: &std::path::Path) -> Result<u64, JoinError> {
    mp_process::set_executable(path);
    let mut p = Process::new(square, 5);
    p.start().unwrap();
    let result = p.join();
    drop(p);
    // A running fork server keeps its program's inode: the file can go now.
    std::fs::remove_file(path).unwrap();
    result
}

/// A copy of the same build, under another name and modification time and even with a byte more (as on
/// another machine): the build id is what counts, so it runs.
fn child_from_a_copy_of_the_build_runs() {
    if method() == StartMethod::Fork {
        return; // a forked child is this very build
    }
    let mut bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    bytes.push(0);
    assert_eq!(square_from(&write_program("same-build", &bytes)).unwrap(), 25);
}

/// Another build: the same bytes with one bit of the build-id note changed.
fn child_from_a_different_build_refuses() {
    if method() == StartMethod::Fork {
        return; // a forked child is this very build
    }
    let mut bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let (at, _) = build_id_in_file(&bytes);
    bytes[at] ^= 0x01;
    match square_from(&write_program("other-build", &bytes)) {
        Err(JoinError::Child(e)) => {
            assert_eq!(e.kind, ChildErrorKind::BuildMismatch);
            assert!(e.to_string().contains("different build"), "{e}");
        }
        other => panic!("expected a build mismatch, got {other:?}"),
    }
}

fn closures_need_fork() {
    let captured: Vec<u32> = (1..=3).collect();
    let mut p = Process::from_closure(move || captured.iter().sum::<u32>());
    if method() == StartMethod::Fork {
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 6);
    } else {
        assert!(matches!(p.start(), Err(StartError::ClosureNeedsFork(m)) if m == method()));
    }
}

fn try_to_start_child(_: ()) -> String {
    let mut p = Process::new(nap, 0);
    match p.start() {
        Ok(()) => {
            p.join().unwrap();
            "started".to_owned()
        }
        Err(e) => format!("{e:?}: {e}"),
    }
}

fn daemon_rules() {
    assert!(!current_process().daemon());
    let plain = Process::new(nap, 0);
    assert!(!plain.daemon(), "the daemon flag is inherited from the (non-daemonic) main process");
    let mut d = Builder::new().daemon(true).target(try_to_start_child, ());
    assert!(d.daemon());
    d.start().unwrap();
    let answer = d.join().unwrap();
    assert!(answer.starts_with("DaemonicParent"), "{answer}");
    assert!(answer.contains("daemonic processes are not allowed to have children"));
    let mut n = Process::new(try_to_start_child, ());
    n.start().unwrap();
    assert_eq!(n.join().unwrap(), "started");
}

fn write_file_later(path: String) {
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(path, "done").unwrap();
}

/// Starts a non-daemonic writer and a daemonic sleeper, returns at once with the sleeper's pid.
fn leave_children_behind(path: String) -> u32 {
    let mut writer = Process::new(write_file_later, path);
    writer.start().unwrap();
    let mut sleeper = Builder::new().daemon(true).target(nap, 60_000);
    sleeper.start().unwrap();
    sleeper.pid().unwrap()
}

fn exit_joins_and_terminates_children() {
    let path = std::env::temp_dir().join("written-by-grandchild");
    let mut p = Process::new(leave_children_behind, path.to_string_lossy().into_owned());
    p.start().unwrap();
    let daemon_pid = p.join().unwrap();
    // The child joined its non-daemonic child before exiting...
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "done");
    std::fs::remove_file(&path).unwrap();
    // ...and terminated its daemonic one.
    assert!(eventually(Duration::from_secs(2), || !process_alive(daemon_pid)));
}

/// Starts a long-lived grandchild, reports its pid through the pipe, then sleeps until killed.
fn parent_of_sleeper((pipe, keep_alive): (Handle, bool)) {
    let mut sleeper = Builder::new().keep_alive_after_parent(keep_alive).target(nap, 60_000);
    sleeper.start().unwrap();
    let mut pipe = File::from(pipe);
    pipe.write_all(&sleeper.pid().unwrap().to_le_bytes()).unwrap();
    drop(pipe);
    std::thread::sleep(Duration::from_secs(60));
}

fn grandchild_after_parent_killed(keep_alive: bool) -> u32 {
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut p = Process::new(parent_of_sleeper, (Handle::from(OwnedFd::from(writer)), keep_alive));
    p.start().unwrap();
    let mut pid = [0u8; 4];
    reader.read_exact(&mut pid).unwrap();
    let grandchild = u32::from_le_bytes(pid);
    assert!(process_alive(grandchild));
    p.kill().unwrap();
    assert!(matches!(p.join(), Err(JoinError::Signaled { signal: 9, .. })));
    grandchild
}

fn children_die_with_a_killed_parent() {
    let grandchild = grandchild_after_parent_killed(false);
    assert!(
        eventually(Duration::from_secs(3), || !process_alive(grandchild)),
        "the grandchild {grandchild} outlived its SIGKILLed parent"
    );
}

fn keep_alive_after_parent_opts_out() {
    let grandchild = grandchild_after_parent_killed(true);
    std::thread::sleep(Duration::from_millis(200));
    let survived = process_alive(grandchild);
    // Clean up the deliberate orphan before asserting.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(3), || !process_alive(grandchild)));
    assert!(survived, "an opted-out grandchild must survive its parent");
}

fn copy_file_to_pipe((file, pipe): (Handle, Handle)) -> usize {
    let mut text = String::new();
    File::from(file).read_to_string(&mut text).unwrap();
    File::from(pipe).write_all(text.to_uppercase().as_bytes()).unwrap();
    text.len()
}

fn handles_cross_into_the_child() {
    let path = std::env::temp_dir().join("handle-source");
    std::fs::write(&path, "through a handle").unwrap();
    let file = File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut p = Process::new(copy_file_to_pipe, (Handle::from(file), Handle::from(OwnedFd::from(writer))));
    p.start().unwrap();
    // The parent's copies went with the arguments at start, so EOF comes when the child is done.
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "THROUGH A HANDLE");
    assert_eq!(p.join().unwrap(), 16);
    // Outside a child's arguments (or an mp message) a handle refuses to serialize instead of sending a
    // dangling descriptor number; inside `to_bytes_with_handles` it travels as a duplicate.
    let lonely = Handle::from(File::open("/dev/null").unwrap());
    assert!(postcard::to_stdvec(&lonely).is_err());
    let (bytes, fds) = mp_process::to_bytes_with_handles(&lonely).unwrap();
    assert_eq!(fds.len(), 1);
    let back: Handle = mp_process::from_bytes_with_handles(&bytes, fds).unwrap();
    drop(back);
}

#[derive(Serialize, Deserialize, Debug)]
struct Family {
    my_pid: u32,
    my_name: String,
    daemon: bool,
    parent_pid: Option<u32>,
    parent_name: Option<String>,
    parent_alive: bool,
}

fn describe_family(_: ()) -> Family {
    let me = current_process();
    let parent = parent_process();
    Family {
        my_pid: me.pid(),
        my_name: me.name().to_owned(),
        daemon: me.daemon(),
        parent_pid: parent.as_ref().map(|p| p.pid()),
        parent_name: parent.as_ref().map(|p| p.name().to_owned()),
        parent_alive: parent.as_ref().is_some_and(|p| p.is_alive()),
    }
}

fn current_and_parent_process() {
    assert!(parent_process().is_none());
    let me = current_process();
    assert_eq!(me.name(), "MainProcess");
    assert_eq!(me.pid(), std::process::id());
    assert!(me.identity().is_empty());
    let mut p = Builder::new().name("kid").daemon(true).target(describe_family, ());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    let family = p.join().unwrap();
    assert_eq!(family.my_pid, pid);
    assert_eq!(family.my_name, "kid");
    assert!(family.daemon);
    assert_eq!(family.parent_pid, Some(std::process::id()));
    assert_eq!(family.parent_name.as_deref(), Some("MainProcess"));
    assert!(family.parent_alive);
}

fn active_children_lists_running_ones() {
    assert!(active_children().is_empty());
    let mut a = Process::new(nap, 60_000);
    let mut b = Builder::new().daemon(true).target(nap, 60_000);
    a.start().unwrap();
    b.start().unwrap();
    let mut pids: Vec<u32> = active_children().iter().filter_map(|c| c.pid()).collect();
    pids.sort();
    let mut expected = vec![a.pid().unwrap(), b.pid().unwrap()];
    expected.sort();
    assert_eq!(pids, expected);
    let listed = active_children();
    let daemon = listed.iter().find(|c| c.daemon()).unwrap();
    assert_eq!(daemon.name(), b.name());
    assert!(daemon.is_alive());
    for child in &listed {
        child.terminate().unwrap();
    }
    for child in &listed {
        assert_eq!(child.join_timeout(Some(Duration::from_secs(10))).unwrap(), Some(-15));
    }
    assert!(active_children().is_empty());
    assert_eq!(a.exitcode(), Some(-15));
    assert_eq!(b.exitcode(), Some(-15));
}

fn child_cpu_count(_: ()) -> usize {
    cpu_count()
}

fn cpu_count_and_affinity() {
    let n = cpu_count();
    assert!(n >= 1 && n <= std::thread::available_parallelism().unwrap().get().max(n));
    let mut pinned = Builder::new().cpu_affinity([0]).target(child_cpu_count, ());
    pinned.start().unwrap();
    assert_eq!(pinned.join().unwrap(), 1);
    let mut bad = Builder::new().cpu_affinity([100_000]).target(child_cpu_count, ());
    bad.start().unwrap();
    match bad.join() {
        Err(JoinError::Child(e)) => assert!(e.message.contains("affinity"), "{e}"),
        other => panic!("expected an affinity error, got {other:?}"),
    }
}

fn wait_returns_the_ready_ones() {
    let mut quick = Process::new(nap, 0);
    let mut slow = Process::new(nap, 60_000);
    let unstarted = Process::new(nap, 0);
    quick.start().unwrap();
    slow.start().unwrap();
    let ready = wait(&[&slow, &unstarted, &quick], Some(Duration::from_secs(10))).unwrap();
    assert_eq!(ready, vec![2]);
    assert!(wait(&[&slow], Some(Duration::from_millis(50))).unwrap().is_empty());
    slow.kill().unwrap();
    assert_eq!(wait(&[&slow], Some(Duration::from_secs(10))).unwrap(), vec![0]);
    quick.join().unwrap();
    assert!(slow.join().is_err());
}

fn echo_len(data: Vec<u8>) -> Vec<u8> {
    let mut out = data.clone();
    out.extend_from_slice(&data);
    out
}

fn large_arguments_and_results() {
    let data: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut p = Process::new(echo_len, data.clone());
    p.start().unwrap();
    // The result (8 MiB) is bigger than any socket buffer: polling must drain it for the child to finish.
    assert!(eventually(Duration::from_secs(20), || !p.is_alive()));
    let back = p.join().unwrap();
    assert_eq!(back.len(), data.len() * 2);
    assert_eq!(&back[..data.len()], &data[..]);
    assert_eq!(&back[data.len()..], &data[..]);
}

fn start_from_a_short_lived_thread() {
    let mut p = std::thread::spawn(|| {
        let mut p = Process::new(nap, 300);
        p.start().unwrap();
        p
    })
    .join()
    .unwrap();
    // The starting thread is gone; the child must not have died with it (PR_SET_PDEATHSIG is per thread).
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

fn many_children_at_once() {
    let mut children: Vec<Process<u64>> = (0..24).map(|i| Process::new(square, i)).collect();
    for p in &mut children {
        p.start().unwrap();
    }
    let results: Vec<u64> = children.iter_mut().map(|p| p.join().unwrap()).collect();
    assert_eq!(results, (0..24).map(|i| i * i).collect::<Vec<_>>());
}

fn sized_result((i, len, ms): (u64, usize, u64)) -> Vec<u64> {
    std::thread::sleep(Duration::from_millis(ms));
    vec![i; len]
}

fn outcomes_are_never_mixed_up() {
    // More children at once than a parent has outcome slots (64), small and large (spilled) results mixed:
    // under fork, the last ones report over sockets. One is killed and reports nothing. Every result must
    // come back to its own process, in every round (slots are reused).
    let len = |i: u64| if i.is_multiple_of(3) { 2000 } else { 3 };
    for round in 0..3 {
        let mut children: Vec<Process<Vec<u64>>> = (0..80u64)
            .map(|i| Process::new(sized_result, (i + round * 100, len(i), if i == 5 { 60_000 } else { 50 })))
            .collect();
        for p in &mut children {
            p.start().unwrap();
        }
        children[5].kill().unwrap();
        for (i, p) in (0u64..).zip(children.iter_mut()) {
            let result = p.join();
            if i == 5 {
                assert!(matches!(result, Err(JoinError::Signaled { signal: 9, .. })), "{result:?}");
            } else {
                assert_eq!(result.unwrap(), vec![i + round * 100; len(i)]);
            }
            // A joined process stays ready for `wait`.
            assert_eq!(wait(&[&*p], Some(Duration::ZERO)).unwrap(), vec![0]);
        }
    }
}

fn start_method_configuration() {
    assert!(matches!("bogus".parse::<StartMethod>(), Err(ContextError::UnknownStartMethod(s)) if s == "bogus"));
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        assert_eq!(m.as_str().parse::<StartMethod>().unwrap(), m);
        assert!(m.is_supported());
        assert_eq!(get_context(m).unwrap().start_method(), m);
    }
    assert_eq!(all_start_methods()[0], StartMethod::ForkServer);
    assert_eq!(all_start_methods().len(), 3);
    // The harness forced the method; setting it again needs force, as in CPython.
    assert_eq!(mp_process::get_start_method(), method());
    assert_eq!(mp_process::set_start_method(StartMethod::Spawn, false), Err(ContextError::AlreadySet));
    mp_process::set_start_method(StartMethod::Spawn, true).unwrap();
    assert_eq!(mp_process::get_start_method(), StartMethod::Spawn);
    let mut p = Process::new(square, 4);
    p.start().unwrap();
    assert_eq!(p.start_method(), StartMethod::Spawn);
    assert_eq!(p.join().unwrap(), 16);
}

/// A started process napping `ms`, and the pid of the fork server that started it.
fn served_nap(ms: u64) -> (Process<()>, u32) {
    let mut p = Process::new(nap, ms);
    p.start().unwrap();
    let server = ppid_of(p.pid().unwrap()).unwrap();
    assert_ne!(server, std::process::id());
    (p, server)
}

fn killed_fork_server_is_reported_and_replaced() {
    if method() != StartMethod::ForkServer {
        return;
    }
    let (mut p, server) = served_nap(60_000);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(server as i32, libc::SIGKILL) };
    match p.join_timeout(Duration::from_secs(10)) {
        Err(JoinError::ForkServerLost { pid }) => assert_eq!(Some(pid), p.pid()),
        other => panic!("expected ForkServerLost, got {other:?}"),
    }
    assert_eq!(p.exitcode(), Some(255));
    // The child died with its server.
    assert!(eventually(Duration::from_secs(3), || !process_alive(p.pid().unwrap())));
    let mut again = Process::new(square, 6);
    again.start().unwrap();
    assert_eq!(again.join().unwrap(), 36);
    assert_ne!(ppid_of(std::process::id()), Some(server));
}

/// The live children of `pid`, from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| ppid_of(p) == Some(pid) && process_alive(p))
        .collect()
}

/// The fork server keeps idle children ready for the next start; killing them must cost no start (the harness
/// checks that the server still ends with its program).
fn killed_spares_are_replaced() {
    if method() != StartMethod::ForkServer {
        return;
    }
    let (mut p, server) = served_nap(100);
    p.join().unwrap();
    for round in 0..3u64 {
        let mut spares = Vec::new();
        let found = eventually(Duration::from_secs(5), || {
            spares = children_of(server);
            !spares.is_empty()
        });
        assert!(found, "no spare in round {round}");
        for &spare in &spares {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(spare as i32, libc::SIGKILL) };
        }
        // Gone before the next start: a spare killed just as it takes a request loses that start
        // (`ForkServerLost`), which is not what this case is about.
        assert!(eventually(Duration::from_secs(5), || spares.iter().all(|&s| !process_alive(s))));
        for x in 0..4 {
            let mut q = Process::new(square, x + round);
            q.start().unwrap();
            assert_eq!(q.join_timeout(Duration::from_secs(10)).unwrap(), Some((x + round) * (x + round)));
        }
    }
    // The same server served every start, and has spares again.
    assert!(process_alive(server));
    assert!(eventually(Duration::from_secs(5), || !children_of(server).is_empty()));
}

/// `SigBlk` and `SigIgn` of this thread, from `/proc`.
fn signal_state(_: ()) -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
    };
    (field("SigBlk:"), field("SigIgn:"))
}

/// The fork server blocks SIGCHLD and ignores SIGINT for itself; its children must not inherit either.
fn children_get_the_parents_signal_state() {
    let bit = |sig: i32| 1u64 << (sig - 1);
    let (blocked, ignored) = signal_state(());
    let mut p = Process::new(signal_state, ());
    p.start().unwrap();
    let (child_blocked, child_ignored) = p.join().unwrap();
    assert_eq!(child_blocked & bit(libc::SIGCHLD), blocked & bit(libc::SIGCHLD), "SIGCHLD blocked");
    assert_eq!(child_ignored & bit(libc::SIGINT), ignored & bit(libc::SIGINT), "SIGINT ignored");
    assert_eq!(child_ignored & bit(libc::SIGCHLD), 0, "SIGCHLD ignored");
}

fn read_setting(_: ()) -> Option<String> {
    mp_process::inherited("test.colour")
}

/// Starts a grandchild that reads the setting, after changing another one.
fn relay_setting(_: ()) -> (Option<String>, Option<String>) {
    mp_process::set_inherited("test.shape", Some("round"));
    let mut p = Process::new(read_setting, ());
    p.start().unwrap();
    let colour = p.join().unwrap();
    let mut q = Process::new(|(): ()| mp_process::inherited("test.shape"), ());
    q.start().unwrap();
    (colour, q.join().unwrap())
}

fn inherited_settings_reach_grandchildren() {
    assert_eq!(mp_process::inherited("test.colour"), None);
    mp_process::set_inherited("test.colour", Some("blue"));
    let mut p = Process::new(relay_setting, ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (Some("blue".to_owned()), Some("round".to_owned())));
    // The child's change stayed in the child.
    assert_eq!(mp_process::inherited("test.shape"), None);
    mp_process::set_inherited("test.colour", None);
    let mut p = Process::new(read_setting, ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), None);
}

fn start_detached_service(_: ()) -> u32 {
    let mut service = Builder::new().detached(true).target(nap, 300);
    service.start().unwrap();
    assert!(active_children().is_empty(), "a detached process is not a child");
    service.pid().unwrap()
}

fn detached_processes_are_not_children() {
    // A daemon may start a detached service; its exit neither joins nor kills it.
    let mut d = Builder::new().daemon(true).target(start_detached_service, ());
    d.start().unwrap();
    let service = d.join().unwrap();
    assert!(process_alive(service), "the service outlived the process that started it");
    assert!(eventually(Duration::from_secs(10), || !process_alive(service)), "the service ends by itself");
}

/// The start method this child runs under, and the one its own child (started with the default) runs under.
fn start_methods_below(_: ()) -> (StartMethod, StartMethod) {
    let mut p = Process::new(|(): ()| mp_process::get_start_method(), ());
    p.start().unwrap();
    (mp_process::get_start_method(), p.join().unwrap())
}

/// A child started through a context runs with the context's method as its own default, and so do its own
/// children: a user who chose spawn to avoid fork does not get fork one level down.
fn a_contexts_start_method_reaches_the_child() {
    for other in all_start_methods() {
        let mut p = get_context(other).unwrap().process(start_methods_below, ());
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), (other, other), "started with {other}, default {}", method());
    }
    assert_eq!(mp_process::get_start_method(), method(), "the parent's default is unchanged");
}

/// This child's key, and its own child's.
fn authkeys_below(_: ()) -> (Vec<u8>, Vec<u8>) {
    let mut p = Process::new(|(): ()| current_process().authkey().to_vec(), ());
    p.start().unwrap();
    (current_process().authkey().to_vec(), p.join().unwrap())
}

fn authkeys_are_inherited() {
    let key = current_process().authkey().to_vec();
    assert_eq!(key.len(), 32, "CPython's os.urandom(32)");
    assert!(key.iter().any(|&b| b != 0), "a random key");
    assert_eq!(current_process().authkey(), key, "the key stays the process's");
    // Inherited by children and grandchildren.
    let mut p = Process::new(authkeys_below, ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (key.clone(), key.clone()));
    // A child given its own key passes it on.
    let mut p = Builder::new().authkey(b"secret-key".to_vec()).target(authkeys_below, ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (b"secret-key".to_vec(), b"secret-key".to_vec()));
    // A new key for this process reaches children started afterwards.
    mp_process::set_authkey(b"another".to_vec());
    let mut p = Process::new(authkeys_below, ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (b"another".to_vec(), b"another".to_vec()));
}

/// In the child: the parent seen while it runs (a short join times out, it is alive).
fn watch_parent(_: ()) -> (bool, bool) {
    let parent = parent_process().unwrap();
    (parent.join_timeout(Duration::from_millis(50)).unwrap(), parent.is_alive())
}

/// A grandchild that outlives its parent: joins it, then writes what it saw.
fn outlive_parent(path: String) {
    let parent = parent_process().unwrap();
    let ended = parent.join_timeout(Duration::from_secs(20)).unwrap();
    std::fs::write(format!("{path}.tmp"), format!("{ended} {}", parent.is_alive())).unwrap();
    std::fs::rename(format!("{path}.tmp"), path).unwrap();
}

/// Starts the grandchild detached (not joined at exit, not dying with us) and returns at once.
fn start_orphan(path: String) {
    let mut p = Builder::new().detached(true).target(outlive_parent, path);
    p.start().unwrap();
}

fn parent_process_join_and_is_alive() {
    let mut p = Process::new(watch_parent, ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (false, true), "the parent runs: the join times out");
    // A grandchild whose parent exits sees it end (join returns, is_alive is false), under the fork server
    // too, where the parent's pid is checked with its start time.
    let path = std::env::temp_dir().join("orphan-saw").to_string_lossy().into_owned();
    let mut p = Process::new(start_orphan, path.clone());
    p.start().unwrap();
    let _ = p.join();
    assert!(eventually(Duration::from_secs(20), || std::path::Path::new(&path).exists()), "no report");
    let saw = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(saw, "true false", "joined the ended parent, which is not alive");
}

/// Sends this process's stderr to `file`, then panics.
fn panic_into(file: Handle) {
    let fd = std::os::fd::OwnedFd::from(file);
    // SAFETY: dup2 onto descriptor 2 of two valid descriptors.
    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&fd), 2) };
    panic!("the child's own failure");
}

fn a_childs_panic_names_the_process_on_stderr() {
    let path = std::env::temp_dir().join("stderr");
    let file = File::create(&path).unwrap();
    let mut p = Builder::new().name("worker-7").target(panic_into, Handle::from(file));
    p.start().unwrap();
    let pid = p.pid().unwrap();
    assert!(matches!(p.join(), Err(JoinError::Panicked(_))));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let first = text.lines().next().unwrap_or_default();
    assert_eq!(first, format!("Process worker-7 (pid {pid}):"), "{text}");
    assert!(text.contains("the child's own failure"), "{text}");
}

static HOOK_RUNS: AtomicU32 = AtomicU32::new(0);

fn count_setup() {
    HOOK_RUNS.fetch_add(1, Ordering::SeqCst);
    mp_process::set_inherited("test.setup", Some(&format!("ran in {}", current_process().name())));
}

/// What the setup hook left in this child, and in its own child.
fn setup_below(_: ()) -> (u32, Option<String>, Option<String>) {
    let mut p = Process::new(|(): ()| mp_process::inherited("test.setup"), ());
    p.start().unwrap();
    (HOOK_RUNS.load(Ordering::SeqCst), mp_process::inherited("test.setup"), p.join().unwrap())
}

fn setup_hooks_run_before_the_target() {
    mp_process::register_child_setup(count_setup);
    mp_process::register_child_setup(count_setup); // once is enough
    let mut p = Builder::new().name("hooked").target(setup_below, ());
    p.start().unwrap();
    let (runs, mine, grandchild) = p.join().unwrap();
    assert_eq!(runs, 1, "the hook ran once in the child (a forked child inherits the parent's count of 0)");
    assert_eq!(mine.as_deref(), Some("ran in hooked"), "it ran knowing who the child is");
    assert_eq!(grandchild.as_deref(), Some("ran in Process-1:1"), "grandchildren run it too");
    assert_eq!(HOOK_RUNS.load(Ordering::SeqCst), 0, "never in the parent");
}

fn failing_setup() {
    panic!("setup refused");
}

fn a_failing_setup_hook_fails_the_start() {
    mp_process::register_child_setup(failing_setup);
    let path = std::env::temp_dir().join("target-ran");
    let mut p = Process::new(|path: String| std::fs::write(path, "ran").unwrap(), path.to_string_lossy().into_owned());
    p.start().unwrap();
    match p.join() {
        Err(JoinError::Panicked(info)) => assert_eq!(info.message, "setup refused"),
        other => panic!("expected the hook's panic, got {other:?}"),
    }
    assert_eq!(p.exitcode(), Some(1));
    assert!(!path.exists(), "the target did not run");
}

/// Collects warnings logged through `log`.
struct Warnings;

static WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl log::Log for Warnings {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            WARNINGS.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn fork_of_a_threaded_parent_warns_once() {
    log::set_logger(&Warnings).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let fork = get_context(StartMethod::Fork).unwrap();
    let mut p = fork.process(square, 2);
    p.start().unwrap();
    p.join().unwrap();
    assert!(WARNINGS.lock().unwrap().is_empty(), "one thread: no warning");
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || stopped.recv());
    for _ in 0..3 {
        let mut p = fork.process(square, 3);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 9);
    }
    drop(stop);
    thread.join().unwrap().unwrap_err();
    let warnings = WARNINGS.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("multi-threaded") && warnings[0].contains("fork"), "{warnings:?}");
}

/// Waits for one byte on `pipe`, then returns `value` (a child that runs until told to end).
fn wait_for_word((pipe, value): (Handle, u64)) -> u64 {
    let mut byte = [0u8; 1];
    let _ = File::from(pipe).read(&mut byte);
    value
}

/// Opens descriptors until there are none left; returns them.
fn exhaust_descriptors() -> Vec<File> {
    let mut held = Vec::new();
    while let Ok(file) = File::open("/dev/null") {
        held.push(file);
    }
    held
}

/// A start that fails on our side (descriptors exhausted) fails alone: a running child of every start
/// method, the fork server's included, is untouched, and the next start works.
fn a_start_that_fails_fails_alone() {
    let (reader, mut writer) = std::io::pipe().unwrap();
    let mut running = Process::new(wait_for_word, (Handle::from(OwnedFd::from(reader)), 41));
    running.start().unwrap();
    let mut failures = 0;
    // With no descriptor left, then one, two, three: every way a start can run short of them.
    for free in 0..4 {
        let mut held = exhaust_descriptors();
        held.truncate(held.len().saturating_sub(free));
        let mut p = Process::new(square, 3);
        let started = p.start();
        drop(held);
        match started {
            Ok(()) => assert_eq!(p.join().unwrap(), 9),
            Err(StartError::Io(e)) => {
                failures += 1;
                assert!(e.raw_os_error() == Some(libc::EMFILE) || e.to_string().contains("descriptor"), "{e}");
            }
            Err(other) => panic!("unexpected error: {other:?}"),
        }
        assert!(running.is_alive(), "the running child went down with a failed start ({free} free)");
    }
    if method() != StartMethod::Fork {
        assert!(failures > 0, "a start needing descriptors never failed without them");
    }
    writer.write_all(b"x").unwrap();
    assert_eq!(running.join_timeout(Duration::from_secs(10)).unwrap(), Some(41));
    let mut p = Process::new(square, 4);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 16);
}

/// What descriptors 0–2 are in this process (`None`: closed); prints a line on the way.
fn open_stdio(_: ()) -> [Option<String>; 3] {
    println!("a child printing with stdout closed");
    [0, 1, 2].map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok().map(|p| p.display().to_string()))
}

/// In a program that closed its standard streams, mp's own descriptors never take 0–2: a child's output does
/// not end up in them, and its outcome arrives.
fn standard_streams_closed_in_the_parent() {
    // SAFETY: dup/close/dup2 on the process's own standard descriptors, which are restored at the end.
    let saved: Vec<i32> = (0..3).map(|fd| unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) }).collect();
    for fd in 0..3 {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
    let mut results = Vec::new();
    for round in 0..3 {
        let mut p = Process::new(open_stdio, ());
        let started = p.start();
        results.push((round, started.map(|()| p.join())));
    }
    let (reader, mut writer) = std::io::pipe().unwrap();
    let pipe_fd = std::os::fd::AsRawFd::as_raw_fd(&reader);
    let mut p = Process::new(wait_for_word, (Handle::from(OwnedFd::from(reader)), 7));
    p.start().unwrap();
    writer.write_all(b"x").unwrap();
    let waited = p.join();
    for (fd, saved) in saved.iter().enumerate() {
        // SAFETY: as above.
        unsafe { libc::dup2(*saved, fd as i32) };
        // SAFETY: as above.
        unsafe { libc::close(*saved) };
    }
    // The test's own pipe took one of the free numbers (it is ours to take), and still arrived.
    assert!(pipe_fd <= 2, "the test pipe should have taken a free low number, took {pipe_fd}");
    for (round, result) in results {
        match result {
            // Closed as in the parent, or /dev/null where Rust's runtime opened it in a re-executed program.
            Ok(Ok(open)) => assert!(
                open.iter().all(|fd| fd.as_deref().is_none_or(|p| p == "/dev/null")),
                "round {round}: mp put a descriptor at 0-2 in the child: {open:?}"
            ),
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(waited.unwrap(), 7);
}

fn exit_with(code: i32) {
    std::process::exit(code);
}

fn panic_now(_: ()) {
    panic!("on purpose");
}

/// With SIGCHLD ignored (as daemons and some embedders set it), the kernel reaps children itself: starts
/// still work, and exit codes are still right (from the pidfd on Linux 6.15 and later, which this machine
/// has; from the outcome otherwise).
fn exit_codes_with_sigchld_ignored() {
    // SAFETY: SIG_IGN is always a sound disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let exact = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| {
            let mut parts = r.split(['.', '-']).map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .is_some_and(|version| version >= (6, 15));
    for round in 0..4 {
        let mut p = Process::new(square, 5);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 25, "round {round}");
        assert_eq!(p.exitcode(), Some(0), "round {round}");
        let mut p = Process::new(panic_now, ());
        p.start().unwrap();
        assert!(matches!(p.join(), Err(JoinError::Panicked(_))));
        assert_eq!(p.exitcode(), Some(1), "round {round}");
        if exact {
            let mut p = Process::new(exit_with, 3);
            p.start().unwrap();
            assert!(matches!(p.join(), Err(JoinError::Exited { code: 3, .. })), "round {round}");
            let mut p = Process::new(nap, 60_000);
            p.start().unwrap();
            p.kill().unwrap();
            assert!(matches!(p.join(), Err(JoinError::Signaled { signal: 9, .. })), "round {round}");
            assert_eq!(p.exitcode(), Some(-9));
        }
    }
}

/// A spare forked just before its server is SIGKILLed must not live on (the harness fails the case if any
/// process outlives it).
fn no_spare_outlives_a_killed_server() {
    if method() != StartMethod::ForkServer {
        return;
    }
    for round in 0..20u64 {
        let (mut p, server) = served_nap(60_000);
        // The server forks a replacement spare right after this start: kill it meanwhile.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(server as i32, libc::SIGKILL) };
        let _ = p.join_timeout(Duration::from_secs(10));
        assert!(
            eventually(Duration::from_secs(5), || children_of(server).is_empty() && !process_alive(server)),
            "round {round}: the server's children outlived it"
        );
    }
}

/// SIGHUP, SIGINT and SIGQUIT sent to the fork server (as a terminal sends them to its process group) do not
/// take its running children down.
fn terminal_signals_spare_the_fork_servers_children() {
    if method() != StartMethod::ForkServer {
        return;
    }
    let (reader, mut writer) = std::io::pipe().unwrap();
    let mut p = Process::new(wait_for_word, (Handle::from(OwnedFd::from(reader)), 5));
    p.start().unwrap();
    let server = ppid_of(p.pid().unwrap()).unwrap();
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(server as i32, sig) };
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(process_alive(server), "the server died of a terminal signal");
    assert!(p.is_alive(), "its child died");
    writer.write_all(b"x").unwrap();
    assert_eq!(p.join_timeout(Duration::from_secs(10)).unwrap(), Some(5));
    // Its children have the program's dispositions, not the server's.
    let (_, ignored) = signal_state(());
    let mut q = Process::new(signal_state, ());
    q.start().unwrap();
    let (_, child_ignored) = q.join().unwrap();
    let bits = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT].iter().fold(0u64, |m, s| m | 1 << (s - 1));
    assert_eq!(child_ignored & bits, ignored & bits);
}

/// Closes every descriptor from 3 on, then opens `n` files of its own (taking the numbers mp's descriptors
/// had), writes each one's name into it and leaves it open; returns 42.
fn close_everything_then_write((dir, n): (String, u32)) -> u32 {
    // SAFETY: close_range closes descriptors; this target owns the process and uses none of them again.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let files: Vec<File> = (0..n).map(|i| File::create(format!("{dir}/file-{i}")).unwrap()).collect();
    for (i, mut file) in files.into_iter().enumerate() {
        file.write_all(format!("file-{i}").as_bytes()).unwrap();
        // Left open, as a program's log file is, until the process ends.
        std::mem::forget(file);
    }
    42
}

/// A target may close every descriptor mp gave it and open files under the same numbers: mp writes nothing
/// into them, and the outcome still arrives (from the slot, which is memory).
fn a_target_that_closes_every_descriptor() {
    let dir = std::env::temp_dir().join("closer");
    std::fs::create_dir_all(&dir).unwrap();
    for round in 0..3 {
        let mut p = Process::new(close_everything_then_write, (dir.to_string_lossy().into_owned(), 40));
        p.start().unwrap();
        let result = p.join_timeout(Duration::from_secs(10));
        for i in 0..40 {
            let path = dir.join(format!("file-{i}"));
            assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("file-{i}"), "round {round}: mp wrote into it");
            std::fs::remove_file(&path).unwrap();
        }
        assert_eq!(result.unwrap(), Some(42), "round {round}");
        assert_eq!(p.exitcode(), Some(0));
    }
    std::fs::remove_dir(&dir).unwrap();
}

/// An exit hook that records which process ran it.
fn note_exit() {
    let path = std::env::temp_dir().join(format!("exit-{}", current_process().name()));
    std::fs::write(path, "ran").unwrap();
}

/// Registers the exit hook, then returns (the hook runs after the target).
fn register_and_return(_: ()) -> u32 {
    mp_process::register_at_exit(note_exit);
    7
}

/// A child's exit hooks run once its target has returned (before it reports: the file is there when `join`
/// returns); a parent's hooks are not inherited by its children.
fn exit_hooks_run_as_a_child_ends() {
    mp_process::register_at_exit(note_exit); // the parent's own: never run by a child
    let mut p = Builder::new().name("ender").target(register_and_return, ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 7);
    let mine = std::env::temp_dir().join("exit-ender");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "ran");
    std::fs::remove_file(&mine).unwrap();
    let mut q = Builder::new().name("plain").target(square, 2);
    q.start().unwrap();
    q.join().unwrap();
    assert!(!std::env::temp_dir().join("exit-plain").exists(), "a child ran its parent's hook");
    // The main process's hook runs at its exit: leave nothing for the harness to find.
    mp_process::register_at_exit(|| {
        let _ = std::fs::remove_file(std::env::temp_dir().join("exit-MainProcess"));
    });
}

static FORKS_SEEN: AtomicU32 = AtomicU32::new(0);

fn count_fork() {
    FORKS_SEEN.fetch_add(1, Ordering::SeqCst);
}

/// A before-fork hook runs in the parent just before each `fork` start (never for the other methods), so the
/// child sees the count it made.
fn before_fork_hooks_run_in_the_parent_before_each_fork() {
    mp_process::register_before_fork(count_fork);
    mp_process::register_before_fork(count_fork); // once is enough
    for round in 1..=3 {
        let mut p = Process::new(|(): ()| FORKS_SEEN.load(Ordering::SeqCst), ());
        p.start().unwrap();
        let seen = p.join().unwrap();
        if method() == StartMethod::Fork {
            assert_eq!(
                (seen, FORKS_SEEN.load(Ordering::SeqCst)),
                (round, round),
                "the child inherits the parent's count"
            );
        } else {
            assert_eq!((seen, FORKS_SEEN.load(Ordering::SeqCst)), (0, 0), "only fork starts run it");
        }
    }
}
