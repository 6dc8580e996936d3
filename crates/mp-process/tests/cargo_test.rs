//! Processes started from ordinary `#[test]`s (libtest's harness): a re-executed child runs this binary
//! filtered to the exact test, which calls `mp_process::init()` first and is diverted there.

use mp_process::{Builder, all_start_methods, get_context};

fn triple(x: u32) -> u32 {
    x * 3
}

#[test]
fn children_run_under_every_start_method() {
    mp_process::init();
    for method in all_start_methods() {
        let mut p = get_context(method).unwrap().process(triple, 14);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 42, "{method}");
    }
}

#[test]
fn a_second_test_in_the_same_binary() {
    mp_process::init();
    let mut p = Builder::new().start_method(mp_process::StartMethod::Spawn).target(triple, 5);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 15);
}

fn nap(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Under libtest the re-executed fork server runs the test on a thread of its own, with libtest's main thread
/// alive beside it: a server that learnt of ended children through SIGCHLD missed the ones whose signal went
/// to that other thread. Every killed child must be reported, and promptly.
#[test]
fn fork_server_reports_every_child_under_libtest() {
    mp_process::init();
    let ctx = get_context(mp_process::StartMethod::ForkServer).unwrap();
    let mut children: Vec<_> = (0..40).map(|_| ctx.process(nap, 60_000)).collect();
    for p in &mut children {
        p.start().unwrap();
    }
    for p in &children {
        p.kill().unwrap();
    }
    let mut missed = Vec::new();
    for (i, p) in children.iter_mut().enumerate() {
        match p.join_timeout(std::time::Duration::from_secs(2)) {
            Err(mp_process::JoinError::Signaled { signal: 9, .. }) => {}
            Ok(None) => missed.push(i),
            other => panic!("child {i}: {other:?}"),
        }
    }
    assert!(missed.is_empty(), "never reported: {missed:?}");
}
