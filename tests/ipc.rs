//! mp-ipc across real processes, under the start method `cargo xtask test` selects.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mp_ipc::{Connection, Direction, RecvError, SendError, pipe};
use mp_process::{Process, wait};
use serde::{Deserialize, Serialize};

fn main() {
    mp_process::init();
    support::run(support::cases![
        typed_messages_cross_into_a_child,
        child_reads_eof_when_the_parent_closes,
        byte_messages_use_cpython_framing,
        one_way_pipes_refuse_the_wrong_direction,
        eof_at_boundary_and_mid_message_differ,
        forged_and_negative_headers_are_refused,
        undecodable_message_keeps_the_stream_aligned,
        recv_bytes_into_and_max_length,
        closed_peer_is_a_broken_pipe_not_sigpipe,
        poll_and_wait_with_processes,
        big_messages_round_trip,
        many_small_messages_in_order,
        unserializable_value_is_an_error_before_sending,
    ]);
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Job {
    id: u32,
    name: String,
    weights: Vec<f64>,
}

// Under `fork` a child inherits the parent's end of every pipe too (as in CPython), so it would never read
// end of file: the conversations below end with an explicit last message instead.
fn echo_doubled(mut conn: Connection) -> u32 {
    let mut handled = 0;
    while let Some(mut job) = conn.recv::<Option<Job>>().unwrap() {
        job.weights.iter_mut().for_each(|w| *w *= 2.0);
        conn.send(&job).unwrap();
        handled += 1;
    }
    handled
}

fn typed_messages_cross_into_a_child() {
    let (mut ours, theirs) = pipe(Direction::Duplex).unwrap();
    let mut p = Process::new(echo_doubled, theirs);
    p.start().unwrap();
    for id in 0..10 {
        let job = Job { id, name: format!("job {id}"), weights: vec![1.0, 2.5] };
        ours.send(&Some(&job)).unwrap();
        let back: Job = ours.recv().unwrap();
        assert_eq!(back, Job { weights: vec![2.0, 5.0], ..job });
    }
    ours.send(&None::<Job>).unwrap();
    assert_eq!(p.join().unwrap(), 10);
}

fn read_until_eof(mut conn: Connection) -> usize {
    let mut n = 0;
    loop {
        match conn.recv::<u32>() {
            Ok(_) => n += 1,
            Err(e) if e.is_eof() => return n,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Under spawn and forkserver the child holds only the end it was given, so closing ours is its end of file.
fn child_reads_eof_when_the_parent_closes() {
    if support::method() == mp_process::StartMethod::Fork {
        return; // the child inherited our end as well: documented, as in CPython
    }
    let (mut ours, theirs) = pipe(Direction::Duplex).unwrap();
    let mut p = Process::new(read_until_eof, theirs);
    p.start().unwrap();
    for n in 0..3 {
        ours.send(&n).unwrap();
    }
    ours.close();
    assert_eq!(p.join_timeout(Duration::from_secs(20)).unwrap(), Some(3));
}

/// Raw frames, written and read by hand: the wire format CPython's `multiprocessing.connection` uses.
fn byte_messages_use_cpython_framing() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut ours = conn_from(a);
    let mut raw = b;
    ours.send_bytes(b"abc").unwrap();
    let mut got = [0u8; 7];
    raw.read_exact(&mut got).unwrap();
    assert_eq!(got, [0, 0, 0, 3, b'a', b'b', b'c']);
    // A long header: -1, then an 8-byte length (CPython uses it above 0x7fffffff; it is legal for any size).
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']).unwrap();
    raw.write_all(&[0, 0, 0, 0]).unwrap(); // an empty message
    assert_eq!(ours.recv_bytes().unwrap(), b"hi");
    assert_eq!(ours.recv_bytes().unwrap(), b"");
}

fn conn_from(stream: UnixStream) -> Connection {
    // The only public way to make a Connection from a socket: send it through a child's arguments
    // codec, which is exactly what happens when one is passed to a process.
    let handle = mp_process::Handle::from(std::os::fd::OwnedFd::from(stream));
    let (bytes, fds) =
        mp_process::to_bytes_with_handles(&(handle, true, true, mp_ipc::DEFAULT_MAX_MESSAGE, Vec::<u8>::new()))
            .unwrap();
    mp_process::from_bytes_with_handles(&bytes, fds).unwrap()
}

fn one_way_pipes_refuse_the_wrong_direction() {
    let (mut receiver, mut sender) = pipe(Direction::OneWay).unwrap();
    assert!(receiver.readable() && !receiver.writable());
    assert!(sender.writable() && !sender.readable());
    assert!(matches!(receiver.send_bytes(b"x"), Err(SendError::NotWritable)));
    assert!(matches!(sender.recv_bytes(), Err(RecvError::NotReadable)));
    sender.send(&7u8).unwrap();
    assert_eq!(receiver.recv::<u8>().unwrap(), 7);
    receiver.close();
    assert!(receiver.closed());
    assert!(matches!(receiver.recv_bytes(), Err(RecvError::NotReadable)));
}

fn eof_at_boundary_and_mid_message_differ() {
    let (mut ours, theirs) = pipe(Direction::Duplex).unwrap();
    drop(theirs);
    assert!(matches!(ours.recv_bytes(), Err(RecvError::Eof)));
    let (a, mut raw) = UnixStream::pair().unwrap();
    let mut ours = conn_from(a);
    raw.write_all(&[0, 0, 0, 10, 1, 2, 3]).unwrap();
    drop(raw);
    assert!(matches!(ours.recv_bytes(), Err(RecvError::Truncated { got: 3, expected: 10 })));
    let (a, mut raw) = UnixStream::pair().unwrap();
    let mut ours = conn_from(a);
    raw.write_all(&[0, 0]).unwrap();
    drop(raw);
    assert!(matches!(ours.recv_bytes(), Err(RecvError::Truncated { got: 2, expected: 4 })));
}

fn forged_and_negative_headers_are_refused() {
    let (a, mut raw) = UnixStream::pair().unwrap();
    let mut ours = conn_from(a);
    // Claims 4 GiB: refused before any allocation.
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap();
    match ours.recv_bytes() {
        Err(RecvError::TooLarge { len, max }) => assert_eq!((len, max), (1 << 32, mp_ipc::DEFAULT_MAX_MESSAGE)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(ours.recv_bytes(), Err(RecvError::NotReadable)), "the stream's place is lost");
    let (a, mut raw) = UnixStream::pair().unwrap();
    let mut ours = conn_from(a);
    raw.write_all(&(-2i32).to_be_bytes()).unwrap();
    assert!(matches!(ours.recv_bytes(), Err(RecvError::BadFrame(_))));
    let (a, mut raw) = UnixStream::pair().unwrap();
    let mut ours = conn_from(a);
    ours.set_max_message_size(16);
    raw.write_all(&[0, 0, 0, 17]).unwrap();
    assert!(matches!(ours.recv_bytes(), Err(RecvError::TooLarge { len: 17, max: 16 })));
    assert!(matches!(ours.send_bytes(&[0; 17]), Err(SendError::TooLarge { len: 17, max: 16 })));
}

fn undecodable_message_keeps_the_stream_aligned() {
    let (mut a, mut b) = pipe(Direction::Duplex).unwrap();
    a.send_bytes(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap(); // not a valid u32 varint
    a.send(&"next").unwrap();
    assert!(matches!(b.recv::<u32>(), Err(RecvError::Decode(_))));
    assert_eq!(b.recv::<String>().unwrap(), "next");
}

fn recv_bytes_into_and_max_length() {
    let (mut a, mut b) = pipe(Direction::Duplex).unwrap();
    a.send_bytes(b"0123456789").unwrap();
    let mut small = [0u8; 4];
    match b.recv_bytes_into(&mut small) {
        Err(RecvError::BufferTooShort { message }) => assert_eq!(message, b"0123456789"),
        other => panic!("{other:?}"),
    }
    a.send_bytes(b"fits").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"fits");
    a.send_bytes(b"too long").unwrap();
    assert!(matches!(b.recv_bytes_max(3), Err(RecvError::TooLarge { len: 8, max: 3 })));
}

fn closed_peer_is_a_broken_pipe_not_sigpipe() {
    let (mut a, b) = pipe(Direction::Duplex).unwrap();
    drop(b);
    // Rust ignores SIGPIPE by default; make sure we would survive even if it did not.
    // SAFETY: restoring the default disposition is always sound; the test only sends afterwards.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let result = a.send_bytes(&[1; 1000]);
    assert!(matches!(result, Err(SendError::BrokenPipe)), "{result:?}");
}

fn reply_after(mut conn: Connection) {
    let delay: u64 = conn.recv().unwrap();
    std::thread::sleep(Duration::from_millis(delay));
    conn.send(&"done").unwrap();
}

fn poll_and_wait_with_processes() {
    let (mut ours, theirs) = pipe(Direction::Duplex).unwrap();
    let mut p = Process::new(reply_after, theirs);
    p.start().unwrap();
    assert!(!ours.poll(Some(Duration::ZERO)).unwrap());
    ours.send(&200u64).unwrap();
    let start = Instant::now();
    assert!(!ours.poll(Some(Duration::from_millis(50))).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(matches!(ours.recv_timeout::<String>(Duration::from_millis(10)), Err(RecvError::Timeout)));
    // The connection becomes ready before the process ends.
    let ready = wait(&[&p, &ours], Some(Duration::from_secs(10))).unwrap();
    assert!(ready.contains(&1), "{ready:?}");
    assert_eq!(ours.recv::<String>().unwrap(), "done");
    p.join().unwrap();
    assert_eq!(wait(&[&p], Some(Duration::from_secs(10))).unwrap(), vec![0]);
}

/// Echoes byte messages until an empty one.
fn echo_bytes(mut conn: Connection) {
    loop {
        let bytes = conn.recv_bytes().unwrap();
        if bytes.is_empty() {
            return;
        }
        conn.send_bytes(&bytes).unwrap();
    }
}

fn big_messages_round_trip() {
    let (mut ours, theirs) = pipe(Direction::Duplex).unwrap();
    let mut p = Process::new(echo_bytes, theirs);
    p.start().unwrap();
    for size in [1, 65_535, 65_536, 1 << 20, 16 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
        ours.send_bytes(&data).unwrap();
        assert_eq!(ours.recv_bytes().unwrap(), data, "size {size}");
    }
    ours.send_bytes(b"").unwrap();
    p.join().unwrap();
}

fn count_messages(mut conn: Connection) -> u64 {
    let mut expected = 0u64;
    while let Some(n) = conn.recv::<Option<u64>>().unwrap() {
        assert_eq!(n, expected, "messages arrive in order");
        expected += 1;
    }
    expected
}

fn many_small_messages_in_order() {
    let (receiver, mut sender) = pipe(Direction::OneWay).unwrap();
    let mut p = Process::new(count_messages, receiver);
    p.start().unwrap();
    for n in 0..100_000u64 {
        sender.send(&Some(n)).unwrap();
    }
    sender.send(&None::<u64>).unwrap();
    assert_eq!(p.join().unwrap(), 100_000);
}

struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no"))
    }
}

fn unserializable_value_is_an_error_before_sending() {
    let (mut a, mut b) = pipe(Direction::Duplex).unwrap();
    assert!(matches!(a.send(&Unserializable), Err(SendError::Serialize(_))));
    a.send(&1u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 1, "nothing of the failed message was sent");
}
