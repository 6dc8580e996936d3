//! A server and a client in two processes, with an authentication key: the client asks the server to add
//! 4 and 4 and prints the answer. A Python `multiprocessing.connection.Client` could connect just as well.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! 8
//! ```

use mp_ipc::{Address, Client, Listener};
use mp_process::Process;

const KEY: &[u8] = b"secret password";

fn client(address: Address) {
    let mut conn = Client::new(address).authkey(KEY).connect().expect("connect");
    conn.send(&("add", 4, 4)).expect("send");
    let sum: i64 = conn.recv().expect("recv");
    println!("{sum}");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let listener = Listener::builder().authkey(KEY).bind()?; // a private Unix socket, removed on drop
    let mut p = Process::new(client, listener.address().clone());
    p.start()?;
    let mut conn = listener.accept()?;
    let (op, a, b): (String, i64, i64) = conn.recv()?;
    assert_eq!(op, "add");
    conn.send(&(a + b))?;
    p.join()?;
    Ok(())
}
