//! mp-ipc across real processes, under the start method `cargo xtask test` selects.

mod support;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mp_ipc::{
    Address, AuthenticationError, Client, ConnectError, Connection, Direction, GetError, JoinableQueue, Listener,
    PutError, Queue, QueueBuilder, RecvError, SendError, SimpleQueue, pipe,
};
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
        listener_and_client_across_processes,
        listener_addresses_and_their_errors,
        wrong_keys_and_garbage_fail_the_handshake,
        python_client_talks_to_our_listener,
        our_client_talks_to_a_python_listener,
        queue_is_fifo_per_producer_across_processes,
        queue_size_empty_full_and_timeouts,
        queue_close_and_bad_items,
        queue_items_of_every_size_in_order,
        queue_child_exits_without_waiting_for_readers,
        queue_survives_a_producer_killed_mid_item,
        queue_survives_a_consumer_killed_mid_item,
        queue_survives_a_consumer_killed_while_waiting,
        joinable_queue_counts_tasks,
        simple_queue_across_processes,
        connect_honours_its_timeout_when_the_backlog_is_full,
        a_connection_that_lost_its_place_says_so,
        receiving_holds_a_message_once_and_gives_the_memory_back,
        two_processes_read_one_end_in_turn,
        passing_an_end_hands_its_reading_over,
        descriptors_cross_an_open_connection,
        descriptors_cross_to_and_from_python,
        a_lent_descriptor_reports_every_waiting_message,
        an_unbounded_queue_never_makes_its_producer_wait,
        a_queue_stays_fifo_across_its_ring_and_its_spill,
        decode_errors_say_why,
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
    Connection::from(stream)
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
        Err(serde::ser::Error::custom("Unserializable refuses"))
    }
}

fn unserializable_value_is_an_error_before_sending() {
    let (mut a, mut b) = pipe(Direction::Duplex).unwrap();
    // The serializer's own words, not postcard's "Serde Serialization Error".
    assert!(matches!(a.send(&Unserializable), Err(SendError::Serialize(m)) if m == "Unserializable refuses"));
    a.send(&1u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 1, "nothing of the failed message was sent");
    // A child's failed send says why too: the child reports the error's text over the same pipe.
    let mut p = Process::new(send_unserializable, a);
    p.start().unwrap();
    assert_eq!(b.recv::<String>().unwrap(), "failed to serialize the message: Unserializable refuses");
    p.join().unwrap();
    // A Handle is refused with a message that says where handles can go.
    let err = b.send(&mp_process::Handle::from(std::fs::File::open("/dev/null").unwrap()));
    assert!(matches!(&err, Err(SendError::Serialize(m)) if m.contains("to_bytes_with_handles")), "{err:?}");
}

fn send_unserializable(mut conn: Connection) {
    let err = conn.send(&vec![Some(Unserializable)]).unwrap_err();
    conn.send(&err.to_string()).unwrap();
}

fn ask_to_add((address, key): (Address, Vec<u8>)) -> i64 {
    let mut conn = Client::new(address).authkey(&key).connect().unwrap();
    conn.send(&("add", 4i64, 4i64)).unwrap();
    conn.recv().unwrap()
}

fn listener_and_client_across_processes() {
    let listener = Listener::builder().authkey(b"secret key").bind().unwrap();
    let Address::Unix(path) = listener.address().clone() else { panic!("default is a Unix socket") };
    assert!(path.exists());
    let mut p = Process::new(ask_to_add, (listener.address().clone(), b"secret key".to_vec()));
    p.start().unwrap();
    let mut conn = listener.accept_timeout(Duration::from_secs(20)).unwrap();
    let (op, a, b): (String, i64, i64) = conn.recv().unwrap();
    assert_eq!(op, "add");
    conn.send(&(a + b)).unwrap();
    assert_eq!(p.join().unwrap(), 8);
    drop(listener);
    assert!(!path.exists(), "the socket file goes with the listener");
    assert!(!path.parent().unwrap().exists(), "and so does its private directory");
}

fn listener_addresses_and_their_errors() {
    // Abstract names leave nothing in the file system.
    let name = format!("mp-test-{}", std::process::id()).into_bytes();
    let listener = Listener::bind(Address::Abstract(name.clone())).unwrap();
    assert!(matches!(Listener::bind(Address::Abstract(name.clone())), Err(ConnectError::AddressInUse(_))));
    let t = std::thread::spawn(move || Client::new(Address::Abstract(name)).connect().unwrap().recv::<u8>().unwrap());
    listener.accept().unwrap().send(&9u8).unwrap();
    assert_eq!(t.join().unwrap(), 9);
    // TCP on the loopback, port picked by the kernel.
    let tcp = Listener::bind(Address::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
    let Address::Tcp(addr) = tcp.address().clone() else { panic!() };
    assert_ne!(addr.port(), 0);
    assert!(matches!(Listener::bind(addr), Err(ConnectError::AddressInUse(_))));
    let t = std::thread::spawn(move || Client::new(addr).connect().unwrap().recv_bytes().unwrap());
    tcp.accept().unwrap().send_bytes(b"over tcp").unwrap();
    assert_eq!(t.join().unwrap(), b"over tcp");
    // A Unix path: a second listener is refused, close removes the file, nobody listening is refused.
    let path = std::env::temp_dir().join("sock");
    let mut unix = Listener::bind(path.as_path()).unwrap();
    assert!(matches!(Listener::bind(path.as_path()), Err(ConnectError::AddressInUse(_))));
    let start = Instant::now();
    assert!(matches!(unix.accept_timeout(Duration::from_millis(100)), Err(ConnectError::Timeout)));
    assert!(start.elapsed() >= Duration::from_millis(100));
    unix.close();
    assert!(!path.exists());
    assert!(matches!(unix.accept(), Err(ConnectError::Closed)));
    assert!(matches!(Client::new(path.as_path()).connect(), Err(ConnectError::Refused(_))));
    let closed_port = Address::Tcp(addr);
    drop(tcp);
    assert!(matches!(Client::new(closed_port).connect(), Err(ConnectError::Refused(_))));
}

fn wrong_keys_and_garbage_fail_the_handshake() {
    let listener = Listener::builder().authkey(b"right").bind().unwrap();
    let address = listener.address().clone();
    // A wrong key fails on both sides, and the listener goes on serving.
    let client = std::thread::spawn({
        let address = address.clone();
        move || Client::new(address).authkey(b"wrong").connect()
    });
    let server_side = listener.accept();
    assert!(
        matches!(server_side, Err(ConnectError::Authentication(AuthenticationError::DigestWrong))),
        "{server_side:?}"
    );
    let client_side = client.join().unwrap();
    assert!(matches!(client_side, Err(ConnectError::Authentication(AuthenticationError::Rejected))), "{client_side:?}");
    // A peer answering the challenge with garbage.
    let garbage = std::thread::spawn({
        let address = address.clone();
        move || {
            let mut conn = Client::new(address).connect().unwrap(); // no key: sees the raw challenge
            let challenge = conn.recv_bytes().unwrap();
            assert!(challenge.starts_with(b"#CHALLENGE#{sha256}"), "{challenge:?}");
            assert_eq!(challenge.len(), 11 + 8 + 40);
            conn.send_bytes(b"this is not a digest at all").unwrap();
            conn.recv_bytes().unwrap()
        }
    });
    let result = listener.accept();
    assert!(matches!(result, Err(ConnectError::Authentication(AuthenticationError::Protocol(_)))), "{result:?}");
    assert_eq!(garbage.join().unwrap(), b"#FAILURE#");
    // A client that never answers is cut off by the handshake timeout.
    let quick = Listener::builder().authkey(b"k").handshake_timeout(Duration::from_millis(200)).bind().unwrap();
    let silent = UnixStream::connect(match quick.address() {
        Address::Unix(path) => path,
        _ => unreachable!(),
    })
    .unwrap();
    let result = quick.accept();
    assert!(matches!(result, Err(ConnectError::Authentication(AuthenticationError::Timeout))), "{result:?}");
    drop(silent);
    // And after all that, a right key still gets in.
    let good = std::thread::spawn(move || Client::new(address).authkey(b"right").connect().map(|_| ()));
    listener.accept().unwrap();
    good.join().unwrap().unwrap();
}

/// The CPython interpreters installed here: `python3`, and `python3.12` / `python3.13` when present
/// (directly on the path, or as pyenv versions).
fn pythons() -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for name in ["python3", "python3.12", "python3.13"] {
        let mut candidates = vec![std::path::PathBuf::from(name)];
        let pyenv = std::env::var_os("PYENV_ROOT")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pyenv")));
        if let Some(versions) = pyenv.map(|p| p.join("versions")).and_then(|v| std::fs::read_dir(v).ok()) {
            candidates.extend(versions.filter_map(Result::ok).map(|v| v.path().join("bin").join(name)));
        }
        let works = |p: &std::path::PathBuf| {
            std::process::Command::new(p)
                .arg("--version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if let Some(p) = candidates.into_iter().find(works) {
            found.push(p);
        }
    }
    assert!(!found.is_empty(), "python3 is needed for the interop tests");
    found
}

const PY_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
from multiprocessing import AuthenticationError
try:
    c = Client(sys.argv[1], authkey=sys.argv[2].encode())
except AuthenticationError as e:
    print("AuthenticationError:", e)
    sys.exit(0)
c.send_bytes(b"hello from python")
print(c.recv_bytes().decode())
c.close()
"#;

fn python_client_talks_to_our_listener() {
    for python in pythons() {
        let listener = Listener::builder().authkey(b"shared secret").bind().unwrap();
        let Address::Unix(path) = listener.address().clone() else { unreachable!() };
        for (key, ok) in [("shared secret", true), ("wrong secret", false)] {
            let child = std::process::Command::new(&python)
                .args(["-c", PY_CLIENT, path.to_str().unwrap(), key])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            match listener.accept_timeout(Duration::from_secs(30)) {
                Ok(mut conn) => {
                    assert!(ok, "{python:?} got in with a wrong key");
                    assert_eq!(conn.recv_bytes().unwrap(), b"hello from python");
                    conn.send_bytes(b"hello from rust").unwrap();
                }
                Err(e) => {
                    assert!(!ok, "{python:?}: {e}");
                    assert!(matches!(e, ConnectError::Authentication(AuthenticationError::DigestWrong)), "{e:?}");
                }
            }
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            if ok {
                assert_eq!(text.trim(), "hello from rust", "{python:?}");
            } else {
                assert!(text.contains("AuthenticationError: digest sent was rejected"), "{python:?}: {text}");
            }
        }
    }
}

const PY_LISTENER: &str = r#"
import sys
from multiprocessing.connection import Listener
from multiprocessing import AuthenticationError
with Listener(sys.argv[1], authkey=sys.argv[2].encode()) as listener:
    print("ready", flush=True)
    try:
        with listener.accept() as c:
            c.send_bytes(c.recv_bytes()[::-1])
            print("served", flush=True)
    except AuthenticationError as e:
        print("AuthenticationError:", e, flush=True)
"#;

fn our_client_talks_to_a_python_listener() {
    use std::io::BufRead;
    for python in pythons() {
        for (key, ok) in [(&b"shared secret"[..], true), (&b"wrong secret"[..], false)] {
            let path = std::env::temp_dir().join("py.sock");
            let mut child = std::process::Command::new(&python)
                .args(["-c", PY_LISTENER, path.to_str().unwrap(), "shared secret"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            assert_eq!(lines.next().unwrap().unwrap(), "ready");
            match Client::new(path.as_path()).authkey(key).connect() {
                Ok(mut conn) => {
                    assert!(ok, "{python:?} let a wrong key in");
                    conn.send_bytes(b"abc").unwrap();
                    assert_eq!(conn.recv_bytes().unwrap(), b"cba");
                    assert_eq!(lines.next().unwrap().unwrap(), "served");
                }
                Err(e) => {
                    assert!(!ok, "{python:?}: {e}");
                    assert!(matches!(e, ConnectError::Authentication(AuthenticationError::Rejected)), "{e:?}");
                    let line = lines.next().unwrap().unwrap();
                    assert!(line.starts_with("AuthenticationError: digest received was wrong"), "{line}");
                }
            }
            assert!(child.wait().unwrap().success());
            assert!(!path.exists());
        }
    }
}

fn produce_tagged((q, tag, n): (Queue<(u32, u32)>, u32, u32)) {
    for i in 0..n {
        q.put((tag, i)).unwrap();
    }
}

fn queue_is_fifo_per_producer_across_processes() {
    let q: Queue<(u32, u32)> = QueueBuilder::new().capacity(16 * 1024).build().unwrap(); // small: producers wait for room too
    let n = 20_000;
    let mut producers: Vec<Process<()>> = (0..3).map(|tag| Process::new(produce_tagged, (q.clone(), tag, n))).collect();
    for p in &mut producers {
        p.start().unwrap();
    }
    let mut next = [0u32; 3];
    for _ in 0..3 * n {
        let (tag, i) = q.get_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(i, next[tag as usize], "items of one producer arrive in order");
        next[tag as usize] += 1;
    }
    for p in &mut producers {
        p.join().unwrap();
    }
    assert_eq!(next, [n; 3]);
    assert!(q.empty());
    assert!(matches!(q.try_get(), Err(GetError::Empty)));
}

fn queue_size_empty_full_and_timeouts() {
    let q: Queue<u64> = Queue::bounded(2).unwrap();
    assert_eq!((q.qsize(), q.empty(), q.full(), q.maxsize()), (0, true, false, 2));
    q.put(1).unwrap();
    assert!(!q.empty(), "exact right after put (CPython's empty() lags behind its feeder thread)");
    q.put(2).unwrap();
    assert_eq!((q.qsize(), q.full()), (2, true));
    match q.try_put(3) {
        Err(e @ PutError::Full(_)) => assert_eq!(e.into_inner(), 3, "the item comes back"),
        other => panic!("{other:?}"),
    }
    let start = Instant::now();
    assert!(q.put_timeout(3, Duration::from_millis(100)).unwrap_err().is_full());
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(q.get().unwrap(), 1);
    q.put_timeout(3, Duration::from_millis(100)).unwrap();
    assert_eq!((q.get().unwrap(), q.get().unwrap()), (2, 3));
    let start = Instant::now();
    assert!(q.get_timeout(Duration::from_millis(100)).unwrap_err().is_empty());
    assert!(start.elapsed() >= Duration::from_millis(100));
    // Zero and enormous timeouts.
    assert!(q.get_timeout(Duration::ZERO).unwrap_err().is_empty());
    q.put_timeout(4, Duration::MAX).unwrap();
    assert_eq!(q.get_timeout(Duration::MAX).unwrap(), 4);
    // The ring's byte capacity bounds an unbounded queue too.
    let small: Queue<Vec<u8>> = QueueBuilder::new().capacity(4096).build().unwrap();
    small.put(vec![7; 2000]).unwrap();
    assert!(small.try_put(vec![7; 2100]).unwrap_err().is_full());
    assert_eq!(small.qsize(), 1);
    assert!(QueueBuilder::new().capacity(100).build::<u8>().is_err());
}

fn queue_close_and_bad_items() {
    let q: Queue<String> = Queue::new().unwrap();
    let other = q.clone();
    q.put("kept".into()).unwrap();
    q.close();
    assert!(matches!(q.put("late".into()), Err(PutError::Closed(s)) if s == "late"));
    assert!(matches!(q.get(), Err(GetError::Closed)));
    assert_eq!(other.get().unwrap(), "kept", "other handles go on");
    // An item that fails to serialize: an error from put, nothing in the queue.
    let bad: Queue<Unserializable> = Queue::new().unwrap();
    assert!(
        matches!(bad.put(Unserializable), Err(PutError::Serialize { message, .. }) if message == "Unserializable refuses")
    );
    assert!(bad.empty());
    // An item that fails to decode: an error from get, and the queue goes on.
    let numbers: Queue<u64> = Queue::new().unwrap();
    let (bytes, fds) = mp_process::to_bytes_with_handles(&numbers).unwrap();
    let texts: Queue<String> = mp_process::from_bytes_with_handles(&bytes, fds).unwrap();
    numbers.put(u64::MAX).unwrap(); // as a String: a length far beyond the bytes there
    numbers.put(3).unwrap(); // as a String: a length of 3 with nothing behind it
    texts.put("fine".into()).unwrap();
    assert!(matches!(texts.get(), Err(GetError::Decode(_))));
    assert!(matches!(texts.get(), Err(GetError::Decode(_))));
    assert_eq!(texts.get().unwrap(), "fine");
    // A closed handle cannot be passed on.
    assert!(mp_process::to_bytes_with_handles(&q).is_err());
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

const SIZES: [usize; 9] = [0, 1, 100, 2000, 2100, 4000, 70_000, 1 << 20, 3 << 20];

fn put_sizes(q: Queue<Vec<u8>>) {
    for round in 0..3u8 {
        for (i, size) in SIZES.iter().enumerate() {
            q.put(pattern(*size, round + i as u8)).unwrap();
        }
    }
}

fn queue_items_of_every_size_in_order() {
    // A 4 KiB ring: small items wrap around it, big ones stream through it.
    let q: Queue<Vec<u8>> = QueueBuilder::new().capacity(4096).build().unwrap();
    let mut p = Process::new(put_sizes, q.clone());
    p.start().unwrap();
    for round in 0..3u8 {
        for (i, size) in SIZES.iter().enumerate() {
            let item = q.get_timeout(Duration::from_secs(20)).unwrap();
            assert!(item == pattern(*size, round + i as u8), "round {round}, size {size}: got {} bytes", item.len());
        }
    }
    p.join().unwrap();
    assert!(q.empty());
}

fn put_and_leave(q: Queue<u32>) {
    for i in 0..1000 {
        q.put(i).unwrap();
    }
}

fn queue_child_exits_without_waiting_for_readers() {
    // CPython's trap: a child that put items cannot exit until they are read. Here they wait in the queue.
    let q = Queue::new().unwrap();
    let mut p = Process::new(put_and_leave, q.clone());
    p.start().unwrap();
    assert_eq!(p.join_timeout(Duration::from_secs(20)).unwrap(), Some(()), "the child exits at once");
    let items: Vec<u32> = (0..1000).map(|_| q.try_get().unwrap()).collect();
    assert_eq!(items, (0..1000).collect::<Vec<_>>());
}

fn put_one(q: Queue<Vec<u8>>, item: Vec<u8>) {
    q.put(item).unwrap();
}

fn put_big_then_small((q, big): (Queue<Vec<u8>>, usize)) {
    put_one(q.clone(), vec![1; big]);
    put_one(q, b"after".to_vec());
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// Waits until the queue's ring has (about) no room left: the producer is blocked in the middle of an item.
fn wait_until_full(q: &Queue<Vec<u8>>) {
    assert!(
        eventually_true(Duration::from_secs(20), || q.qsize() == 1 && q.try_clone_probe()),
        "the producer never filled the ring"
    );
}

fn eventually_true(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

trait Probe {
    fn try_clone_probe(&self) -> bool;
}

impl Probe for Queue<Vec<u8>> {
    /// Whether even a tiny item finds no room now.
    fn try_clone_probe(&self) -> bool {
        self.try_put(Vec::new()).is_err()
    }
}

fn queue_survives_a_producer_killed_mid_item() {
    let q: Queue<Vec<u8>> = QueueBuilder::new().capacity(64 * 1024).build().unwrap();
    let mut p = Process::new(put_big_then_small, (q.clone(), 1 << 20));
    p.start().unwrap();
    wait_until_full(&q);
    signal(p.pid().unwrap(), libc::SIGKILL);
    let _ = p.join();
    // Another producer takes over (it must end the dead one's item first, which needs a consumer's room).
    let writer = std::thread::spawn({
        let q = q.clone();
        move || q.put_timeout(b"next".to_vec(), Duration::from_secs(20)).unwrap()
    });
    let start = Instant::now();
    let item = q.get_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(item, b"next", "the partial item is dropped, never delivered");
    assert!(start.elapsed() < Duration::from_secs(5));
    writer.join().unwrap();
    assert!(q.empty());
    // And the queue is healthy for everyone.
    let mut p = Process::new(put_big_then_small, (q.clone(), 200_000));
    p.start().unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap().len(), 200_000);
    assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap(), b"after");
    p.join().unwrap();
}

fn get_forever(q: Queue<Vec<u8>>) {
    let _ = q.get();
}

fn queue_survives_a_consumer_killed_mid_item() {
    let q: Queue<Vec<u8>> = QueueBuilder::new().capacity(64 * 1024).build().unwrap();
    let mut producer = Process::new(put_big_then_small, (q.clone(), 1 << 20));
    producer.start().unwrap();
    wait_until_full(&q);
    // Freeze the producer in the middle of its item, let a consumer take the start of it, kill the consumer.
    let producer_pid = producer.pid().unwrap();
    signal(producer_pid, libc::SIGSTOP);
    let mut consumer = Process::new(get_forever, q.clone());
    consumer.start().unwrap();
    assert!(eventually_true(Duration::from_secs(20), || q.try_put(Vec::new()).is_err() && q.qsize() == 0));
    signal(consumer.pid().unwrap(), libc::SIGKILL);
    let _ = consumer.join();
    signal(producer_pid, libc::SIGCONT);
    // The next consumer skips the rest of the item the dead one had begun, and gets the next.
    assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap(), b"after");
    producer.join().unwrap();
    assert!(q.empty());
}

fn queue_survives_a_consumer_killed_while_waiting() {
    let q: Queue<Vec<u8>> = Queue::new().unwrap();
    let mut consumer = Process::new(get_forever, q.clone());
    consumer.start().unwrap();
    std::thread::sleep(Duration::from_millis(100)); // it holds the consumer side, waiting
    consumer.kill().unwrap();
    let _ = consumer.join();
    q.put(b"x".to_vec()).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), b"x");
}

fn work_on(q: JoinableQueue<u32>) -> u32 {
    let mut sum = 0;
    while let Ok(n) = q.get_timeout(Duration::from_millis(300)) {
        sum += n;
        q.task_done().unwrap();
    }
    sum
}

fn joinable_queue_counts_tasks() {
    let q = JoinableQueue::new().unwrap();
    for n in 1..=100 {
        q.put(n).unwrap();
    }
    assert!(!q.join_timeout(Duration::from_millis(50)), "nothing is done yet");
    let mut workers: Vec<Process<u32>> = (0..2).map(|_| Process::new(work_on, q.clone())).collect();
    for w in &mut workers {
        w.start().unwrap();
    }
    assert!(q.join_timeout(Duration::from_secs(20)), "every task was marked done");
    let total: u32 = workers.iter_mut().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, 5050);
    assert!(matches!(q.task_done(), Err(mp_ipc::TaskDoneError)));
    q.join();
}

fn echo_simple((inbox, outbox): (SimpleQueue<String>, SimpleQueue<String>)) {
    loop {
        let s = inbox.get().unwrap();
        if s.is_empty() {
            return;
        }
        outbox.put(s.to_uppercase()).unwrap();
    }
}

fn simple_queue_across_processes() {
    let (inbox, outbox) = (SimpleQueue::new().unwrap(), SimpleQueue::new().unwrap());
    let mut p = Process::new(echo_simple, (inbox.clone(), outbox.clone()));
    p.start().unwrap();
    for word in ["alpha", "beta"] {
        inbox.put(word.to_owned()).unwrap();
        assert_eq!(outbox.get().unwrap(), word.to_uppercase());
    }
    inbox.put(String::new()).unwrap();
    p.join().unwrap();
    assert!(inbox.empty() && outbox.empty());
}

/// A listener that never accepts: its backlog fills, and a client's `connect` must still give up at its timeout
/// (a blocking connect waited for good).
fn connect_honours_its_timeout_when_the_backlog_is_full() {
    let listener = Listener::builder().bind().unwrap();
    let address = listener.address().clone();
    let mut held = Vec::new();
    let mut timed_out = None;
    for _ in 0..256 {
        let started = Instant::now();
        match Client::new(address.clone()).timeout(Duration::from_millis(200)).connect() {
            Ok(conn) => held.push(conn),
            Err(ConnectError::Timeout) => {
                timed_out = Some(started.elapsed());
                break;
            }
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    let took = timed_out.expect("the backlog never filled");
    assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(2), "{took:?}");
    // Accepting one makes room: the next connect succeeds.
    let _first = listener.accept_timeout(Duration::from_secs(5)).unwrap();
    assert!(Client::new(address).timeout(Duration::from_secs(5)).connect().is_ok());
    drop(held);
}

fn send_big_then_small(mut conn: Connection) {
    conn.send_bytes(&vec![7u8; 100_000]).unwrap();
    conn.send_bytes(b"small").unwrap();
}

/// After `recv_bytes_max` refuses an oversized message the connection has lost its place: `poll`, `readable`
/// and `wait` say so (a `wait` loop ends instead of spinning on a "ready" connection that never delivers).
fn a_connection_that_lost_its_place_says_so() {
    let (mut ours, theirs) = pipe(Direction::Duplex).unwrap();
    let mut p = Process::new(send_big_then_small, theirs);
    p.start().unwrap();
    p.join().unwrap();
    assert!(matches!(ours.recv_bytes_max(1000), Err(RecvError::TooLarge { len: 100_000, max: 1000 })));
    assert!(!ours.readable(), "readable() after losing its place");
    assert!(matches!(ours.poll(Some(Duration::ZERO)), Err(RecvError::NotReadable)), "poll says it is broken");
    assert_eq!(wait(&[&ours], Some(Duration::from_secs(1))).unwrap(), [0], "wait hands it back at once");
    assert!(matches!(ours.recv_bytes(), Err(RecvError::NotReadable)));
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmSize`, ...).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Reports its memory around large receives, then waits in a receive whose header was forged.
fn memory_probe((mut data, mut report): (Connection, Connection)) {
    report.send(&status_kib("VmRSS")).unwrap();
    let big = data.recv_bytes().unwrap();
    assert!(big == pattern(64 << 20, 1), "the 64 MiB message arrives whole");
    drop(big);
    report.send(&status_kib("VmRSS")).unwrap();
    let typed: Vec<u8> = data.recv().unwrap();
    assert!(typed == pattern(48 << 20, 2), "the 48 MiB typed message arrives whole");
    drop(typed);
    report.send(&status_kib("VmRSS")).unwrap();
    // Back to back: a large message's read must not swallow the one after it.
    for (len, seed) in [(2 << 20, 3), (100, 4), (3 << 20, 5), (0, 6)] {
        assert!(data.recv_bytes().unwrap() == pattern(len, seed), "message of {len} bytes in order");
    }
    report.send(&status_kib("VmSize")).unwrap();
    let forged = data.recv_bytes();
    panic!("the forged message cannot complete: {forged:?}");
}

fn receiving_holds_a_message_once_and_gives_the_memory_back() {
    let (a, mut raw) = UnixStream::pair().unwrap();
    let (report_here, report_there) = pipe(Direction::Duplex).unwrap();
    let mut report = report_here;
    let mut p = Process::new(memory_probe, (conn_from(a), report_there));
    p.start().unwrap();
    let frame = |raw: &mut UnixStream, payload: &[u8]| {
        raw.write_all(&(payload.len() as u32).to_be_bytes()).unwrap();
        raw.write_all(payload).unwrap();
    };
    let rss0: u64 = report.recv().unwrap();
    frame(&mut raw, &pattern(64 << 20, 1));
    let rss1: u64 = report.recv().unwrap();
    // Before: the receive buffer kept the message's 64 MiB until the connection was dropped.
    assert!(rss1 < rss0 + (24 << 10), "64 MiB received and dropped: RSS {rss0} KiB -> {rss1} KiB");
    frame(&mut raw, &postcard::to_stdvec(&pattern(48 << 20, 2)).unwrap());
    let rss2: u64 = report.recv().unwrap();
    assert!(rss2 < rss0 + (24 << 10), "48 MiB typed message received and dropped: RSS {rss0} KiB -> {rss2} KiB");
    let mut burst = Vec::new();
    for (len, seed) in [(2 << 20, 3), (100, 4), (3 << 20, 5), (0, 6)] {
        burst.extend_from_slice(&(len as u32).to_be_bytes());
        burst.extend_from_slice(&pattern(len, seed));
    }
    raw.write_all(&burst).unwrap();
    let size0: u64 = report.recv().unwrap();
    // A header claiming just under the 1 GiB limit, and a few bytes: nothing near a gigabyte is reserved.
    raw.write_all(&((mp_ipc::DEFAULT_MAX_MESSAGE - 16) as u32).to_be_bytes()).unwrap();
    raw.write_all(&[7; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid().unwrap())).unwrap();
    let size1: u64 =
        status.lines().find(|l| l.starts_with("VmSize")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(size1 < size0 + (64 << 10), "a forged 1 GiB header: VmSize {size0} KiB -> {size1} KiB");
    p.kill().unwrap();
    assert!(matches!(p.join(), Err(mp_process::JoinError::Signaled { .. })));
}

/// Takes its turn on a shared end: told "go" on `turns`, receives one message from `shared` and reports it.
fn take_turns((mut shared, mut turns): (Connection, Connection)) {
    assert!(shared.is_shared(), "a copy of a cloned end is shared too");
    while turns.recv::<bool>().unwrap() {
        let message = shared.recv_bytes().unwrap();
        turns.send(&message).unwrap();
    }
}

fn message(i: usize) -> Vec<u8> {
    // Every seventh is larger than a read chunk: exact reads must stop at its end too.
    let len = if i % 7 == 3 { 100_000 } else { 5 + i };
    (0..len).map(|b| (b * 31 + i) as u8).collect()
}

fn two_processes_read_one_end_in_turn() {
    let (mut writer, mut ours) = pipe(Direction::Duplex).unwrap();
    let theirs = ours.try_clone().unwrap();
    assert!(ours.is_shared() && theirs.is_shared());
    let (mut turns, their_turns) = pipe(Direction::Duplex).unwrap();
    let mut p = Process::new(take_turns, (theirs, their_turns));
    p.start().unwrap();
    // Everything is written before anyone reads: an end that read ahead would swallow its partner's turns.
    let sender = std::thread::spawn(move || {
        for i in 0..40 {
            writer.send_bytes(&message(i)).unwrap();
        }
        writer
    });
    for i in 0..40 {
        let got = if i % 2 == 0 {
            ours.recv_bytes().unwrap()
        } else {
            turns.send(&true).unwrap();
            turns.recv_timeout::<Vec<u8>>(Duration::from_secs(10)).unwrap()
        };
        assert!(
            got == message(i),
            "message {i} read whole, in turn, by {}",
            if i % 2 == 0 { "us" } else { "the child" }
        );
    }
    turns.send(&false).unwrap();
    p.join().unwrap();
    let _writer = sender.join().unwrap();
    assert!(!ours.poll(Some(Duration::ZERO)).unwrap(), "nothing left over");
}

fn recv_one_u32(mut conn: Connection) -> u32 {
    conn.recv().unwrap()
}

fn passing_an_end_hands_its_reading_over() {
    let (mut writer, mut ours) = pipe(Direction::Duplex).unwrap();
    writer.send(&1u32).unwrap();
    writer.send(&2u32).unwrap();
    assert!(ours.poll(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(ours.recv::<u32>().unwrap(), 1); // reads ahead: message 2 is buffered here now
    assert!(!ours.is_shared());
    // Passed on in memory, keeping the original: the copy gets the buffered message, the original may not read.
    let (bytes, fds) = mp_process::to_bytes_with_handles(&ours).unwrap();
    let mut copy: Connection = mp_process::from_bytes_with_handles(&bytes, fds).unwrap();
    assert!(matches!(ours.recv::<u32>(), Err(RecvError::PassedOn)), "the original refuses to read");
    assert!(matches!(ours.poll(Some(Duration::ZERO)), Err(RecvError::PassedOn)));
    assert!(!ours.readable());
    assert_eq!(wait(&[&ours], Some(Duration::from_secs(1))).unwrap(), [0], "wait hands it back at once");
    ours.send(&9u32).unwrap(); // sending stays possible
    assert_eq!(writer.recv::<u32>().unwrap(), 9);
    let again = mp_process::to_bytes_with_handles(&ours).unwrap_err().to_string();
    assert!(again.contains("already passed on"), "{again}");
    assert!(ours.try_clone().is_err());
    assert_eq!(copy.recv::<u32>().unwrap(), 2, "the read-ahead message went with the copy");
    // Across processes: the child receives what this end had read ahead.
    writer.send(&3u32).unwrap();
    writer.send(&4u32).unwrap();
    assert!(copy.poll(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(copy.recv::<u32>().unwrap(), 3);
    let mut p = Process::new(recv_one_u32, copy);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 4);
}

/// Receives a message, a descriptor, a message; reads the descriptor and reports what it held.
fn receive_a_descriptor(mut conn: Connection) {
    assert_eq!(conn.recv_bytes().unwrap(), b"before");
    // Asking for a descriptor where a message waits takes nothing.
    assert!(matches!(conn.recv_handle(), Err(RecvError::NoHandle)));
    assert_eq!(conn.recv_bytes().unwrap(), b"a message, not a handle");
    let fd = conn.recv_handle().unwrap();
    let mut text = String::new();
    std::fs::File::from(fd).read_to_string(&mut text).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"after");
    conn.send(&text).unwrap();
    // And one back: the parent's own pipe, written to from here.
    let fd = conn.recv_handle().unwrap();
    std::fs::File::from(fd).write_all(b"written by the child").unwrap();
    conn.send_bytes(b"done").unwrap();
}

fn descriptors_cross_an_open_connection() {
    let (mut ours, theirs) = pipe(Direction::Duplex).unwrap();
    let mut p = Process::new(receive_a_descriptor, theirs);
    p.start().unwrap();
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(b"sent as a descriptor").unwrap();
    drop(writer);
    // All sent at once: the child's first receive reads ahead over the descriptor's byte, and keeps it.
    ours.send_bytes(b"before").unwrap();
    ours.send_bytes(b"a message, not a handle").unwrap();
    ours.send_handle(&reader).unwrap();
    ours.send_bytes(b"after").unwrap();
    drop(reader);
    assert_eq!(ours.recv_timeout::<String>(Duration::from_secs(10)).unwrap(), "sent as a descriptor");
    let (mut reader, writer) = std::io::pipe().unwrap();
    ours.send_handle(&writer).unwrap();
    drop(writer);
    assert_eq!(ours.recv_bytes().unwrap(), b"done");
    p.join().unwrap();
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "written by the child");
    // End of file where a descriptor is expected, and a TCP-free refusal of the wrong kind of payload.
    let (mut a, b) = pipe(Direction::Duplex).unwrap();
    drop(b);
    assert!(matches!(a.recv_handle(), Err(RecvError::Eof)));
    assert!(matches!(a.send_handle(std::io::stdin()), Err(SendError::BrokenPipe)));
}

const PY_HANDLES: &str = r#"
import os, sys
from multiprocessing.connection import Client
from multiprocessing import reduction
c = Client(sys.argv[1])
r, w = os.pipe()
os.write(w, b"from python's send_handle")
os.close(w)
c.send_bytes(b"first")
reduction.send_handle(c, r, os.getppid())
c.send_bytes(b"last")
fd = reduction.recv_handle(c)
print(os.read(fd, 100).decode(), flush=True)
"#;

fn descriptors_cross_to_and_from_python() {
    for python in pythons() {
        let listener = Listener::builder().bind().unwrap();
        let Address::Unix(path) = listener.address().clone() else { unreachable!() };
        let child = std::process::Command::new(&python)
            .args(["-c", PY_HANDLES, path.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut conn = listener.accept_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"first");
        let mut text = String::new();
        std::fs::File::from(conn.recv_handle().unwrap()).read_to_string(&mut text).unwrap();
        assert_eq!(text, "from python's send_handle", "{python:?}");
        assert_eq!(conn.recv_bytes().unwrap(), b"last");
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"from rust's send_handle").unwrap();
        drop(writer);
        conn.send_handle(&reader).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{python:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from rust's send_handle", "{python:?}");
    }
}

fn a_lent_descriptor_reports_every_waiting_message() {
    let (mut writer, mut ours) = pipe(Direction::Duplex).unwrap();
    let fd = ours.as_raw_fd();
    assert!(ours.is_shared(), "lending the descriptor shares the end");
    writer.send_bytes(b"one").unwrap();
    writer.send_bytes(b"two").unwrap();
    let readable = |fd| {
        let mut polls = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
        // SAFETY: one valid pollfd, a zero timeout.
        unsafe { libc::poll(polls.as_mut_ptr(), 1, 1000) == 1 }
    };
    assert!(readable(fd));
    assert_eq!(ours.recv_bytes().unwrap(), b"one");
    assert!(readable(fd), "the second message is still in the socket, where the event loop sees it");
    assert_eq!(ours.recv_bytes().unwrap(), b"two");
}

/// Bytes of memory behind this process's queue memory files (the largest one).
fn queue_memory() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to.to_string_lossy().contains("memfd:mp-queue")))
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .map(|meta| meta.blocks() * 512)
        .max()
        .unwrap_or(0)
}

fn flood(q: Queue<Vec<u8>>) {
    for i in 0..200_000u32 {
        q.try_put(i.to_le_bytes().to_vec()).expect("an unbounded queue is never full");
    }
    q.put(vec![7; 6 << 20]).unwrap(); // larger than the ring
    for i in 0..100u32 {
        q.put(i.to_le_bytes().to_vec()).unwrap();
    }
}

/// `Queue::new()` has no bound (CPython's `Queue()`): 200,000 small items and one larger than the ring, with
/// nobody reading, and the producer exits at once (it was `Full` after 65,535, and a child that put one item
/// larger than the ring could not exit until it was taken). Drained, the spill gives its memory back.
fn an_unbounded_queue_never_makes_its_producer_wait() {
    let q = Queue::new().unwrap();
    assert!(q.spills());
    let mut p = Process::new(flood, q.clone());
    p.start().unwrap();
    assert_eq!(p.join_timeout(Duration::from_secs(60)).unwrap(), Some(()), "the producer exits at once");
    assert_eq!(q.qsize(), 200_101);
    assert!(queue_memory() > 6 << 20, "the spill holds the items: {} bytes", queue_memory());
    for i in 0..200_000u32 {
        assert_eq!(q.try_get().unwrap(), i.to_le_bytes(), "item {i} in order");
    }
    let big = q.try_get().unwrap();
    assert!(big.len() == 6 << 20 && big.iter().all(|b| *b == 7));
    for i in 0..100u32 {
        assert_eq!(q.try_get().unwrap(), i.to_le_bytes());
    }
    assert!(q.empty() && matches!(q.try_get(), Err(GetError::Empty)));
    assert!(queue_memory() < 3 << 20, "the drained spill gave its memory back: {} bytes", queue_memory());
    // Back in the ring afterwards.
    q.put(b"again".to_vec()).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), b"again");
    // A queue bounded by its capacity keeps the bound.
    let bounded: Queue<Vec<u8>> = Queue::with_capacity(64 * 1024).unwrap();
    assert!(!bounded.spills());
    let mut put = 0;
    while bounded.try_put(vec![0; 100]).is_ok() {
        put += 1;
    }
    assert!((400..700).contains(&put), "{put} items of 100 bytes in a 64 KiB ring");
    assert!(matches!(bounded.try_put(vec![0; 100]), Err(PutError::Full(_))));
}

/// Items tagged with their producer and their number.
type Tagged = Queue<(u32, u32, Vec<u8>)>;

fn produce_tagged_mixed((q, tag, n): (Tagged, u32, u32)) {
    for i in 0..n {
        // Now and then an item too big to share the ring: it forces a spill while others are in the ring.
        let payload = if i % 5_000 == 4_999 { vec![tag as u8; 700 * 1024] } else { vec![tag as u8; (i % 50) as usize] };
        q.put((tag, i, payload)).unwrap();
    }
}

/// Two producers and a consumer that starts late and then races them: the queue moves between its ring and
/// its spill many times, and each producer's items still arrive in order, each exactly once.
fn a_queue_stays_fifo_across_its_ring_and_its_spill() {
    let q: Tagged = Queue::new().unwrap();
    let n = 40_000;
    let mut producers: Vec<_> = (0..2)
        .map(|tag| {
            let mut p = Process::new(produce_tagged_mixed, (q.clone(), tag, n));
            p.start().unwrap();
            p
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let mut next = [0u32; 2];
    for _ in 0..2 * n {
        let (tag, i, payload) = q.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(i, next[tag as usize], "producer {tag}'s items in order");
        assert!(payload.iter().all(|b| *b == tag as u8));
        next[tag as usize] += 1;
    }
    for p in &mut producers {
        p.join().unwrap();
    }
    assert!(q.empty());
}

fn send_zero(mut conn: Connection) {
    conn.send(&0u32).unwrap();
    conn.send(&7u32).unwrap();
}

/// A value that fails to decode says why, in the words of its `Deserialize` impl (postcard alone says "Serde
/// Deserialization Error"), and the stream or queue goes on.
fn decode_errors_say_why() {
    use std::num::NonZeroU32;
    let (mut ours, theirs) = pipe(Direction::Duplex).unwrap();
    let mut p = Process::new(send_zero, theirs);
    p.start().unwrap();
    match ours.recv::<NonZeroU32>() {
        Err(RecvError::Decode(message)) => assert!(message.contains("nonzero"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ours.recv::<NonZeroU32>().unwrap().get(), 7, "the stream goes on");
    p.join().unwrap();
    // A queue read as another type: the item is taken, the error says why, the next item decodes.
    let q: Queue<u32> = Queue::new().unwrap();
    let (bytes, fds) = mp_process::to_bytes_with_handles(&q.clone()).unwrap();
    let nonzero: Queue<NonZeroU32> = mp_process::from_bytes_with_handles(&bytes, fds).unwrap();
    q.put(0).unwrap();
    q.put(5).unwrap();
    match nonzero.get_timeout(Duration::from_secs(5)) {
        Err(GetError::Decode(message)) => assert!(message.contains("nonzero"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(nonzero.get_timeout(Duration::from_secs(5)).unwrap().get(), 5);
    // Errors of postcard's own stay postcard's.
    let (mut a, mut b) = pipe(Direction::Duplex).unwrap();
    a.send_bytes(&[1]).unwrap();
    match b.recv::<(u32, u32)>() {
        Err(RecvError::Decode(message)) => assert!(message.contains("end of buffer"), "{message}"),
        other => panic!("{other:?}"),
    }
}
