//! Group `process`: start + join of a no-op target under each start method, and the raw floors.

use mp_process::{StartMethod, get_context};

use crate::{floor, micros_per_op, report};

fn noop() {}

pub(crate) fn run() {
    report("fork_exit_wait", "floor", micros_per_op(500, floor::fork_exit_wait), "us");
    report("posix_spawn_self", "floor", micros_per_op(200, floor::posix_spawn_self), "us");
    for (method, workload, n) in [
        (StartMethod::Fork, "spawn_join_fork", 500),
        (StartMethod::Spawn, "spawn_join_spawn", 200),
        (StartMethod::ForkServer, "spawn_join_forkserver", 500),
    ] {
        let ctx = get_context(method).expect("start method");
        let value = micros_per_op(n, || {
            let mut p = ctx.process(noop, ());
            p.start().expect("start");
            p.join().expect("join");
        });
        report(workload, "mp", value, "us");
    }
}
