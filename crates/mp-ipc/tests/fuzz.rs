//! Bounded fuzzing of the frame decoder and the authentication handshake: random and mutated byte streams
//! must give typed errors — never a panic, a hang, or an allocation beyond the connection's limit. Runs
//! for a fixed budget of cases (a second or two); a failure prints the seed that reproduces it
//! (`MP_FUZZ_SEED=...`).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mp_ipc::{Address, Client, ConnectError, Connection, Listener, RecvError};

/// xorshift64*: small, seedable, good enough to shake a parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seed() -> u64 {
    std::env::var("MP_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    })
}

/// A stream of frames, some valid, some with forged lengths, truncated or garbled.
fn stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(8) + 1 {
        let n = rng.below(300) as usize;
        let payload = rng.bytes(n);
        match rng.below(6) {
            0 => {
                let n = rng.below(20) as usize;
                out.extend(rng.bytes(n));
            }
            1 => {
                out.extend((-1i32).to_be_bytes());
                out.extend(rng.next().to_be_bytes());
            }
            2 => out.extend((rng.next() as i32).to_be_bytes()),
            _ => {
                out.extend((payload.len() as i32).to_be_bytes());
                out.extend(&payload);
            }
        }
    }
    if rng.below(3) == 0 {
        let at = rng.below(out.len() as u64) as usize;
        out.truncate(at);
    }
    out
}

#[test]
fn frame_decoder_survives_random_streams() {
    let seed = seed();
    let mut rng = Rng(seed);
    let start = Instant::now();
    for case in 0..3000 {
        let data = stream(&mut rng);
        let (a, mut b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = b.write_all(&data);
        });
        let mut conn = Connection::from(a);
        conn.set_max_message_size(1 << 16);
        let typed = rng.below(2) == 0;
        let mut messages = 0;
        loop {
            let result = if typed { conn.recv::<(u32, String)>().map(|_| ()) } else { conn.recv_bytes().map(|_| ()) };
            match result {
                Ok(()) => messages += 1,
                Err(RecvError::Decode(_)) => messages += 1, // aligned: go on with the next frame
                Err(RecvError::Eof | RecvError::NotReadable) => break,
                Err(RecvError::Truncated { .. } | RecvError::TooLarge { .. } | RecvError::BadFrame(_)) => {
                    assert!(matches!(conn.recv_bytes(), Err(RecvError::NotReadable)), "seed {seed}, case {case}");
                    break;
                }
                Err(e) => panic!("seed {seed}, case {case}: unexpected {e:?}"),
            }
            assert!(messages < 100, "seed {seed}, case {case}: more messages than frames");
        }
        writer.join().unwrap();
        assert!(start.elapsed() < Duration::from_secs(60), "seed {seed}: too slow");
    }
}

#[test]
fn handshake_survives_random_peers() {
    let seed = seed();
    let mut rng = Rng(seed ^ 0x5555);
    let listener = Listener::builder().authkey(b"key").handshake_timeout(Duration::from_millis(500)).bind().unwrap();
    let Address::Unix(path) = listener.address().clone() else { unreachable!() };
    for case in 0..200 {
        // A random client: sometimes replies with framed garbage, sometimes with raw garbage, then leaves.
        let frames = stream(&mut rng);
        let path2 = path.clone();
        let client = std::thread::spawn(move || {
            let mut s = UnixStream::connect(path2).unwrap();
            let _ = s.write_all(&frames);
        });
        match listener.accept() {
            Err(ConnectError::Authentication(_)) => {}
            other => panic!("seed {seed}, case {case}: a random peer got {other:?}"),
        }
        client.join().unwrap();
    }
    // A random server: our client must fail cleanly too.
    for case in 0..200 {
        let frames = stream(&mut rng);
        let server = std::os::unix::net::UnixListener::bind(
            std::env::temp_dir().join(format!("mp-fuzz-{}-{case}", std::process::id())),
        )
        .unwrap();
        let addr = server.local_addr().unwrap().as_pathname().unwrap().to_owned();
        let t = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let _ = s.write_all(&frames);
        });
        let result = Client::new(addr.as_path()).authkey(b"key").timeout(Duration::from_millis(500)).connect();
        assert!(matches!(result, Err(ConnectError::Authentication(_))), "seed {seed}, case {case}: {result:?}");
        t.join().unwrap();
        std::fs::remove_file(addr).unwrap();
    }
}
