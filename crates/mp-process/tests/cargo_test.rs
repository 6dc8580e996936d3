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
