//! CPython's `Pipe` example: a worker sends a greeting through its end, the main process replies.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! main received: hello from the worker
//! worker received: hello back from main
//! ```

use mp_ipc::{Connection, Direction, pipe};
use mp_process::Process;

fn worker(mut conn: Connection) {
    conn.send("hello from the worker").expect("send");
    let reply: String = conn.recv().expect("recv");
    println!("worker received: {reply}");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let (mut parent_end, child_end) = pipe(Direction::Duplex)?;
    let mut p = Process::new(worker, child_end);
    p.start()?;
    let greeting: String = parent_end.recv()?;
    println!("main received: {greeting}");
    parent_end.send("hello back from main")?;
    p.join()?;
    Ok(())
}
