//! CPython's `Queue` example: a worker puts a message, the main process gets and prints it.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! [42, None, "hello"]
//! ```

use mp_ipc::Queue;
use mp_process::Process;

type Message = (i32, Option<i32>, String);

fn worker(q: Queue<Message>) {
    q.put((42, None, "hello".to_owned())).expect("put");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let q = Queue::new()?;
    let mut p = Process::new(worker, q.clone());
    p.start()?;
    let (n, nothing, word) = q.get()?;
    println!("[{n}, {}, {word:?}]", nothing.map_or("None".to_owned(), |v| v.to_string()));
    p.join()?;
    Ok(())
}
