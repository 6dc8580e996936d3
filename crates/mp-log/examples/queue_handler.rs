//! CPython's `QueueHandler(log_queue)` pattern: each worker logs into an mp queue through a `QueueHandler`;
//! a `QueueListener` in the parent hands the records to a logger that prints them.
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text sorted
//! worker-1: task 0 done
//! worker-1: task 1 done
//! worker-2: task 0 done
//! worker-2: task 1 done
//! worker-3: task 0 done
//! worker-3: task 1 done
//! 6 records handled
//! ```

use mp_ipc::Queue;
use mp_log::{LogRecord, QueueHandler, QueueListener};
use mp_process::Builder;

fn worker(log_queue: Queue<LogRecord>) {
    log::set_boxed_logger(Box::new(QueueHandler::new(log_queue))).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    for task in 0..2 {
        log::info!("task {task} done");
    }
}

/// Prints each record as `process: message`.
struct Print;

struct ProcessName(String);

impl<'kvs> log::kv::VisitSource<'kvs> for ProcessName {
    fn visit_pair(&mut self, key: log::kv::Key<'kvs>, value: log::kv::Value<'kvs>) -> Result<(), log::kv::Error> {
        if key.as_str() == "process_name" {
            self.0 = value.to_string();
        }
        Ok(())
    }
}

impl log::Log for Print {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let mut name = ProcessName(String::new());
        let _ = record.key_values().visit(&mut name);
        println!("{}: {}", name.0, record.args());
    }
    fn flush(&self) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let log_queue = Queue::<LogRecord>::new()?;
    let listener = QueueListener::start(log_queue.clone(), Print)?;
    let mut workers: Vec<_> =
        (1..=3).map(|i| Builder::new().name(format!("worker-{i}")).target(worker, log_queue.clone())).collect();
    for w in &mut workers {
        w.start()?;
    }
    for w in &mut workers {
        w.join()?;
    }
    println!("{} records handled", listener.stop());
    Ok(())
}
