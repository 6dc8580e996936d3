//! A small test harness for cross-process tests (`harness = false`).
//!
//! Every case runs in a fresh process (this test binary re-executed with `MP_TEST_CASE=name`) under a
//! watchdog, with the start method taken from `MP_TEST_START_METHOD` (set by `cargo xtask test`). The runner
//! is a child subreaper, so anything a case leaves running is reparented to it: after each case it checks
//! that no process, `/dev/shm` entry or file in the case's private `TMPDIR` is left, and fails the case
//! (and cleans up) otherwise. The closing line is `N passed, N failed`.

#![allow(dead_code, reason = "each test binary uses a different subset of the helpers")]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mp_process::StartMethod;

/// One test case: a name and a body that panics on failure.
pub(crate) type Case = (&'static str, fn());

/// How long one case may run before the watchdog fails it.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// The start method under test.
pub(crate) fn method() -> StartMethod {
    std::env::var("MP_TEST_START_METHOD").ok().and_then(|m| m.parse().ok()).unwrap_or(StartMethod::ForkServer)
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub(crate) fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a live (non-zombie) process has this pid.
pub(crate) fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The parent pid of `pid`, from `/proc`.
pub(crate) fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the cases (the test binary's `main` calls this right after `mp_process::init()`).
pub(crate) fn run(cases: &[Case]) {
    if let Ok(name) = std::env::var("MP_TEST_CASE") {
        mp_process::set_start_method(method(), true).expect("start method");
        let case = cases.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no case {name}"));
        (case.1)();
        return;
    }
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    become_subreaper();
    let me = std::env::current_exe().expect("current exe");
    let (mut passed, mut failed) = (0, 0);
    println!("\nrunning {} cases under {}", cases.len(), method());
    for (name, _) in cases.iter().filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
    {
        match run_case(&me, name) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Err(report) => {
                failed += 1;
                println!("test {name} ... FAILED\n{report}");
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag and has no memory-safety preconditions.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

fn shm_entries() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Processes reparented to this runner (our children other than the case itself).
fn orphans() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| ppid_of(*pid) == Some(me))
                .collect()
        })
        .unwrap_or_default()
}

fn reap_zombies() {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            break;
        }
    }
}

fn run_case(me: &PathBuf, name: &str) -> Result<(), String> {
    let tmp = std::env::temp_dir().join(format!("mp-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let log_path = std::env::temp_dir().join(format!("mp-test-{}-{name}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let shm_before = shm_entries();
    let mut child = Command::new(me)
        .env("MP_TEST_CASE", name)
        .env("TMPDIR", &tmp)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + CASE_TIMEOUT;
    let mut problems = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            problems.push(format!("watchdog: the case ran longer than {CASE_TIMEOUT:?} and was killed"));
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if let Some(status) = status.filter(|s| !s.success()) {
        problems.push(format!("the case exited with {status}"));
    }
    // Children of the case that outlive it are reparented here; they have a moment to die with their parent.
    let settled = eventually(Duration::from_secs(3), || {
        reap_zombies();
        orphans().is_empty()
    });
    if !settled {
        let left = orphans();
        for pid in &left {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        eventually(Duration::from_secs(3), || {
            reap_zombies();
            orphans().is_empty()
        });
        problems.push(format!("left processes running: {left:?}"));
    }
    let leaked_shm: Vec<_> = shm_entries().difference(&shm_before).cloned().collect();
    for entry in &leaked_shm {
        let _ = std::fs::remove_file(format!("/dev/shm/{entry}"));
    }
    if !leaked_shm.is_empty() {
        problems.push(format!("left shared memory in /dev/shm: {leaked_shm:?}"));
    }
    let leaked_files: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    if !leaked_files.is_empty() {
        problems.push(format!("left files in its TMPDIR: {leaked_files:?}"));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    if problems.is_empty() { Ok(()) } else { Err(format!("{}\n--- output ---\n{output}", problems.join("\n"))) }
}

/// `cases![a, b]` → `&[("a", a as fn()), ("b", b as fn())]`.
macro_rules! cases {
    ($($case:ident),+ $(,)?) => {
        &[$((stringify!($case), $case as fn())),+]
    };
}
pub(crate) use cases;
