//! Group `ipc`: pipe round trips (unpinned, both on one CPU, on different CPUs), queue throughput,
//! bandwidth and round trips, and the raw socketpair floor.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use mp_ipc::{Connection, Direction, Queue, QueueBuilder, pipe};
use mp_process::{Builder, Process};
use serde_bytes::ByteBuf;

use crate::report;

const RTT_ROUNDS: u32 = 20_000;
const QUEUE_ITEMS: u64 = 2_000_000;
const BIG_ITEMS: u32 = 2_000;
const QUEUE_RTT_ROUNDS: u32 = 20_000;

/// CPU placements: unpinned, both on CPU 0, parent on 0 and child on 1.
const PLACEMENTS: [(&str, Option<(usize, usize)>); 3] =
    [("", None), ("_samecpu", Some((0, 0))), ("_crosscpu", Some((0, 1)))];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pins the calling process to `cpu` (`None`: every CPU).
fn pin(cpu: Option<usize>) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match cpu {
            Some(cpu) => libc::CPU_SET(cpu, &mut set),
            None => (0..mp_process::cpu_count().max(1)).for_each(|c| libc::CPU_SET(c, &mut set)),
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn child(cpu: Option<usize>) -> Builder {
    let builder = Builder::new();
    match cpu {
        Some(cpu) => builder.cpu_affinity([cpu]),
        None => builder,
    }
}

fn pong_obj((mut conn, n): (Connection, u32)) {
    for _ in 0..=n {
        let v: u64 = conn.recv().expect("recv");
        conn.send(&(v + 1)).expect("send");
    }
}

fn pong_bytes((mut conn, n): (Connection, u32)) {
    let mut buf = [0u8; 64];
    for _ in 0..=n {
        let len = conn.recv_bytes_into(&mut buf).expect("recv");
        conn.send_bytes(&buf[..len]).expect("send");
    }
}

fn pipe_rtt(placement: Option<(usize, usize)>, bytes: bool) -> f64 {
    pin(placement.map(|p| p.0));
    let (mut ours, theirs) = pipe(Direction::Duplex).expect("pipe");
    let mut p: Process<()> = if bytes {
        child(placement.map(|p| p.1)).target(pong_bytes, (theirs, RTT_ROUNDS))
    } else {
        child(placement.map(|p| p.1)).target(pong_obj, (theirs, RTT_ROUNDS))
    };
    p.start().expect("start");
    let payload = [7u8; 64];
    let mut buf = [0u8; 64];
    let mut once = |ours: &mut Connection| {
        if bytes {
            ours.send_bytes(&payload).expect("send");
            ours.recv_bytes_into(&mut buf).expect("recv");
        } else {
            ours.send(&1u64).expect("send");
            let _: u64 = ours.recv().expect("recv");
        }
    };
    once(&mut ours); // the child is up
    let start = Instant::now();
    for _ in 0..RTT_ROUNDS {
        once(&mut ours);
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(RTT_ROUNDS);
    p.join().expect("join");
    pin(None);
    us
}

fn socketpair_rtt(placement: Option<(usize, usize)>) -> f64 {
    pin(placement.map(|p| p.0));
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    // SAFETY: the child only does plain reads, writes and _exit on its inherited socket.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(a);
        if let Some((_, cpu)) = placement {
            pin(Some(cpu));
        }
        let mut buf = [0u8; 8];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    drop(b);
    let mut buf = [0u8; 8];
    a.write_all(&buf).expect("write");
    a.read_exact(&mut buf).expect("read");
    let start = Instant::now();
    for _ in 0..RTT_ROUNDS {
        a.write_all(&buf).expect("write");
        a.read_exact(&mut buf).expect("read");
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(RTT_ROUNDS);
    drop(a);
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    pin(None);
    us
}

fn produce_small((q, n): (Queue<u64>, u64)) {
    for i in 0..n {
        q.put(i).expect("put");
    }
}

/// Items per second from the start of a producer putting `n` small items to the last one taken: with the
/// consumer reading as they come (`queue_throughput_small`), or only once the producer has put them all and
/// exited (`queue_burst`: the queue holds them past its ring).
fn queue_rate(n: u64, join_first: bool) -> f64 {
    let q: Queue<u64> = Queue::new().expect("queue");
    let mut p = Process::new(produce_small, (q.clone(), n));
    let start = Instant::now();
    p.start().expect("start");
    if join_first {
        p.join().expect("join");
    }
    let sum = (0..n).fold(0u64, |sum, _| sum.wrapping_add(q.get().expect("get")));
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert_eq!(sum, n * (n - 1) / 2);
    if !join_first {
        p.join().expect("join");
    }
    rate
}

fn produce_big((q, n): (Queue<ByteBuf>, u32)) {
    let item = ByteBuf::from(vec![0x5a; 1 << 20]);
    for _ in 0..n {
        q.put(item.clone()).expect("put");
    }
}

fn queue_bw() -> f64 {
    let q: Queue<ByteBuf> = QueueBuilder::new().capacity(4 << 20).build().expect("queue");
    let mut p = Process::new(produce_big, (q.clone(), BIG_ITEMS));
    let start = Instant::now();
    p.start().expect("start");
    for _ in 0..BIG_ITEMS {
        assert_eq!(q.get().expect("get").len(), 1 << 20);
    }
    let rate = f64::from(BIG_ITEMS) * f64::from(1u32 << 20) / start.elapsed().as_secs_f64() / 1e6;
    p.join().expect("join");
    rate
}

fn queue_pong((inbox, outbox, n): (Queue<u64>, Queue<u64>, u32)) {
    for _ in 0..=n {
        let v = inbox.get().expect("get");
        outbox.put(v + 1).expect("put");
    }
}

fn queue_rtt() -> f64 {
    let (inbox, outbox): (Queue<u64>, Queue<u64>) = (Queue::new().expect("queue"), Queue::new().expect("queue"));
    let mut p = Process::new(queue_pong, (outbox.clone(), inbox.clone(), QUEUE_RTT_ROUNDS));
    p.start().expect("start");
    outbox.put(0).expect("put");
    inbox.get().expect("get");
    let start = Instant::now();
    for i in 0..u64::from(QUEUE_RTT_ROUNDS) {
        outbox.put(i).expect("put");
        inbox.get().expect("get");
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(QUEUE_RTT_ROUNDS);
    p.join().expect("join");
    us
}

pub(crate) fn run() {
    let two_cpus = mp_process::cpu_count() >= 2;
    for (suffix, placement) in PLACEMENTS {
        if placement.is_some_and(|(a, b)| a != b) && !two_cpus {
            continue;
        }
        let rounds = |f: &dyn Fn() -> f64| median((0..3).map(|_| f()).collect());
        report(&format!("pipe_rtt_obj{suffix}"), "mp", rounds(&|| pipe_rtt(placement, false)), "us");
        report(&format!("socketpair_rtt{suffix}"), "floor", rounds(&|| socketpair_rtt(placement)), "us");
    }
    report("pipe_rtt_bytes", "mp", median((0..3).map(|_| pipe_rtt(None, true)).collect()), "us");
    let rounds = |join_first, n| median((0..3).map(|_| queue_rate(n, join_first)).collect());
    report("queue_throughput_small", "mp", rounds(false, QUEUE_ITEMS), "msgs/s");
    report("queue_burst", "mp", rounds(true, QUEUE_ITEMS / 4), "msgs/s");
    report("queue_bw_1mb", "mp", median((0..3).map(|_| queue_bw()).collect()), "MB/s");
    report("queue_rtt", "mp", median((0..3).map(|_| queue_rtt()).collect()), "us");
}
