//! A program that forgot `mp_process::init()` gets a clear error at `start`, never a second copy of `main`.

use mp_process::{StartError, StartMethod, get_context};

fn noop() {}

fn main() {
    let mut failed = 0;
    for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = get_context(method).expect("context").process(noop, ());
        match p.start() {
            Err(StartError::NotInitialized) => println!("test start_without_init_{method} ... ok"),
            other => {
                failed += 1;
                println!("test start_without_init_{method} ... FAILED: {other:?}");
            }
        }
        assert!(p.pid().is_none());
    }
    println!("\n{} passed, {failed} failed", 3 - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
