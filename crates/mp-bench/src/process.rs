//! Group `process`: start + join of a no-op target under each start method, and the raw floors.

use mp_process::{Context, StartMethod, get_context};

use crate::{Workload, floor, interleaved};

fn noop() {}

fn start_join(ctx: Context) -> Box<dyn FnMut()> {
    Box::new(move || {
        let mut p = ctx.process(noop, ());
        p.start().expect("start");
        p.join().expect("join");
    })
}

pub(crate) fn run() {
    let ctx = |m| get_context(m).expect("start method");
    let workloads: Vec<Workload<'_>> = vec![
        ("fork_exit_wait", "floor", 100, Box::new(floor::fork_exit_wait)),
        ("spawn_join_fork", "mp", 100, start_join(ctx(StartMethod::Fork))),
        ("spawn_join_forkserver", "mp", 100, start_join(ctx(StartMethod::ForkServer))),
        ("posix_spawn_self", "floor", 30, Box::new(floor::posix_spawn_self)),
        ("spawn_join_spawn", "mp", 30, start_join(ctx(StartMethod::Spawn))),
    ];
    interleaved(workloads);
}
