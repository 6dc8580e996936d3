//! mp-log across real processes: every case runs under the start method `cargo xtask test` selects.

mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mp_log::{Builder, InstallError, LogRecord, QueueHandler, QueueListener};
use mp_process::{Builder as ProcessBuilder, Handle, Process};
use support::eventually;

fn main() {
    mp_process::init();
    support::run(support::cases![
        records_from_every_child_reach_the_inner_logger,
        filtered_records_cost_nothing_and_are_not_sent,
        install_twice_is_an_error,
        a_record_larger_than_the_cap_is_cut_with_a_marker,
        a_stalled_parent_bounds_the_child_and_counts_every_drop,
        a_child_killed_mid_burst_never_stalls_the_parent,
        children_of_a_killed_parent_fall_back_to_stderr,
        key_values_that_fail_to_format_are_left_out_and_counted,
        log_to_stderr_prints_cpythons_lines_for_every_process,
        queue_handler_and_listener_carry_records,
        tracing_events_from_children_are_forwarded,
        records_a_killed_parent_never_read_are_printed_by_the_child,
    ]);
}

/// A record as the test's inner logger saw it.
#[derive(Debug, Clone)]
struct Seen {
    level: log::Level,
    target: String,
    message: String,
    file: Option<String>,
    line: Option<u32>,
    kvs: BTreeMap<String, String>,
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
/// Held by a test to stall the inner logger.
static STALL: Mutex<()> = Mutex::new(());

struct Collect;

struct Kvs(BTreeMap<String, String>);

impl<'kvs> log::kv::VisitSource<'kvs> for Kvs {
    fn visit_pair(&mut self, key: log::kv::Key<'kvs>, value: log::kv::Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.insert(key.to_string(), value.to_string());
        Ok(())
    }
}

impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        // mp-process's own records (its warning that fork copies a multithreaded parent: the listener's thread
        // makes the parent one) are not what these cases look at.
        if record.target().starts_with("mp_process") {
            return;
        }
        drop(STALL.lock().unwrap_or_else(|e| e.into_inner()));
        let mut kvs = Kvs(BTreeMap::new());
        let _ = record.key_values().visit(&mut kvs);
        SEEN.lock().unwrap().push(Seen {
            level: record.level(),
            target: record.target().to_owned(),
            message: record.args().to_string(),
            file: record.file().map(str::to_owned),
            line: record.line(),
            kvs: kvs.0,
        });
    }

    fn flush(&self) {}
}

fn seen() -> Vec<Seen> {
    SEEN.lock().unwrap().clone()
}

/// Logs a few records, one with key-values; then its own child logs one.
fn chatty(n: u32) -> u32 {
    log::info!(target: "chatty", "hello {n}");
    log::warn!(colour = "blue", count = 3; "with key-values");
    let mut p = Process::new(|(): ()| log::error!("from a grandchild"), ());
    p.start().unwrap();
    p.join().unwrap();
    std::process::id()
}

fn records_from_every_child_reach_the_inner_logger() {
    let handle = Builder::new().level(log::LevelFilter::Info).install(Collect).unwrap();
    log::info!("from the parent");
    let mut p = ProcessBuilder::new().name("talker").target(chatty, 7);
    p.start().unwrap();
    let pid = p.join().unwrap();
    let stats = handle.stop();
    assert_eq!(stats.records, 3, "{stats:?}");
    assert_eq!(stats.dropped, 0);
    let seen = seen();
    let parent = seen.iter().find(|s| s.message == "from the parent").expect("the parent's own record");
    assert!(parent.kvs.is_empty(), "a parent's record goes straight to the inner logger: {parent:?}");
    let hello = seen.iter().find(|s| s.message == "hello 7").expect("the child's record");
    assert_eq!((hello.level, hello.target.as_str()), (log::Level::Info, "chatty"));
    assert_eq!(hello.kvs["process_name"], "talker");
    assert_eq!(hello.kvs["pid"], pid.to_string());
    assert_eq!(hello.kvs["seq"], "1");
    assert!(hello.file.as_deref().is_some_and(|f| f.ends_with("log.rs")) && hello.line.is_some(), "{hello:?}");
    let kv = seen.iter().find(|s| s.message == "with key-values").unwrap();
    assert_eq!((kv.level, kv.kvs["colour"].as_str(), kv.kvs["count"].as_str()), (log::Level::Warn, "blue", "3"));
    assert_eq!(kv.kvs["seq"], "2");
    let grandchild = seen.iter().find(|s| s.message == "from a grandchild").expect("the grandchild's record");
    assert_eq!(grandchild.kvs["process_name"], "Process-1:1", "named as CPython names it");
    assert_eq!(grandchild.kvs["seq"], "1", "each process numbers its own records");
}

/// Logs a million filtered-out `debug!`s; returns how long they took.
fn filtered(n: u64) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        log::debug!("filtered {i}");
    }
    log::info!("done");
    start.elapsed()
}

fn filtered_records_cost_nothing_and_are_not_sent() {
    let handle = Builder::new().level(log::LevelFilter::Info).install(Collect).unwrap();
    let mut p = Process::new(filtered, 1_000_000);
    p.start().unwrap();
    let took = p.join().unwrap();
    let stats = handle.stop();
    assert_eq!(stats.records, 1, "only the info record crossed: {stats:?}");
    // A comparison each (the speed itself is measured in `cargo xtask bench log`): far below a send each.
    assert!(took < Duration::from_secs(1), "{took:?}");
}

fn install_in_a_child(_: ()) -> String {
    match mp_log::install(Collect) {
        Err(e @ InstallError::AlreadyInstalled) => e.to_string(),
        other => format!("{other:?}"),
    }
}

fn install_twice_is_an_error() {
    let _handle = mp_log::install(Collect).unwrap();
    assert!(matches!(mp_log::install(Collect), Err(InstallError::AlreadyInstalled)));
    let mut p = Process::new(install_in_a_child, ());
    p.start().unwrap();
    assert!(p.join().unwrap().contains("already installed"));
}

fn huge(len: usize) {
    log::info!("{}", "x".repeat(len));
}

fn a_record_larger_than_the_cap_is_cut_with_a_marker() {
    let handle = Builder::new().record_cap(16 * 1024).install(Collect).unwrap();
    let mut p = Process::new(huge, 1 << 20);
    p.start().unwrap();
    p.join().unwrap();
    handle.stop();
    let seen = seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].message.ends_with(mp_log::TRUNCATED_MARKER), "cut with a marker");
    assert!(seen[0].message.len() < 16 * 1024 && seen[0].message.len() > 8 * 1024, "{}", seen[0].message.len());
}

/// Logs `n` small records as fast as it can, says so on `pipe`, returns how long logging took.
fn flood((n, pipe): (u64, Handle)) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        log::info!("record {i}");
    }
    let took = start.elapsed();
    File::from(pipe).write_all(b"d").unwrap();
    took
}

fn a_stalled_parent_bounds_the_child_and_counts_every_drop() {
    let handle = Builder::new().buffer(16 * 1024).install(Collect).unwrap();
    let stall = STALL.lock().unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    const N: u64 = 20_000;
    let mut p = Process::new(flood, (N, Handle::from(OwnedFd::from(writer))));
    p.start().unwrap();
    let mut done = [0u8; 1];
    reader.read_exact(&mut done).unwrap();
    // The child has logged everything while the parent was stalled: it never waited on the parent.
    drop(stall);
    let took = p.join().unwrap();
    let stats = handle.stop();
    assert!(took < Duration::from_secs(10), "the child was held up: {took:?}");
    assert!(stats.dropped > 0, "a stalled parent with a small buffer: some were dropped ({stats:?})");
    assert_eq!(stats.records + stats.dropped, N, "every record delivered or counted: {stats:?}");
    let warnings: u64 = seen()
        .iter()
        .filter(|s| s.target == "mp" && s.message.contains("dropped"))
        .map(|s| s.message.split_whitespace().nth(4).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(warnings, stats.dropped, "each drop announced");
}

fn forever(_: ()) {
    for i in 0.. {
        log::info!("record {i} with some text to make it a record of a realistic size, say a hundred bytes");
    }
}

fn a_child_killed_mid_burst_never_stalls_the_parent() {
    // The child may wait for room (so that nothing is dropped and the records can be checked for holes).
    let handle = Builder::new().send_wait(Duration::from_secs(5)).install(Collect).unwrap();
    let mut p = Process::new(forever, ());
    p.start().unwrap();
    assert!(eventually(Duration::from_secs(10), || handle.stats().records > 1000));
    p.kill().unwrap();
    let _ = p.join();
    let start = Instant::now();
    let stats = handle.stop();
    assert!(start.elapsed() < Duration::from_secs(5), "stop() waited {:?}", start.elapsed());
    let seen = seen();
    assert_eq!(seen.len() as u64, stats.records);
    // In order, with no hole: at most the record in flight was lost.
    for (i, s) in seen.iter().enumerate() {
        assert!(s.message.starts_with(&format!("record {i} ")), "{i}: {}", s.message);
    }
}

/// In the grandchild: stderr to `file`; logs, says so on `pipe`, waits for its parent to go, logs again.
fn orphan_logger((file, pipe): (Handle, Handle)) {
    let fd = OwnedFd::from(file);
    // SAFETY: dup2 of two valid descriptors.
    unsafe { libc::dup2(fd.as_raw_fd(), 2) };
    log::info!("before");
    let parent = mp_process::parent_process().unwrap();
    File::from(pipe).write_all(&std::process::id().to_le_bytes()).unwrap();
    assert!(parent.join_timeout(Duration::from_secs(20)).unwrap(), "the parent was to be killed");
    log::warn!("after the parent");
    eprintln!("exiting normally");
}

/// The installing process: starts the grandchild (which outlives it), reports its own pid, waits to be killed.
fn install_then_wait((file, pipe): (Handle, Handle)) {
    let _handle = mp_log::install(Collect).unwrap();
    let mut p = ProcessBuilder::new().keep_alive_after_parent(true).target(orphan_logger, (file, pipe));
    p.start().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Runs `parent` (which installs mp-log and starts a grandchild that outlives it, its stderr in a file, and
/// reports the grandchild's pid), kills it after `grace`, and returns what the grandchild wrote on its stderr
/// once it has finished.
fn stderr_of_an_orphan<F, M>(parent: F, grace: Duration) -> String
where
    F: mp_process::Target<M, (Handle, Handle), Output = ()>,
    M: 'static,
{
    let path = std::env::temp_dir().join("orphan-stderr");
    let file = File::create(&path).unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut p = Process::new(parent, (Handle::from(file), Handle::from(OwnedFd::from(writer))));
    p.start().unwrap();
    let mut pid = [0u8; 4];
    reader.read_exact(&mut pid).unwrap();
    let grandchild = u32::from_le_bytes(pid);
    std::thread::sleep(grace);
    p.kill().unwrap();
    let _ = p.join();
    let finished = eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(&path).is_ok_and(|text| text.contains("exiting normally"))
    });
    assert!(eventually(Duration::from_secs(5), || !support::process_alive(grandchild)));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(finished, "the grandchild did not finish: {text}");
    text
}

fn children_of_a_killed_parent_fall_back_to_stderr() {
    // Time for the parent to read "before" (one it had not read would be printed by the grandchild: nothing
    // is lost), then kill it.
    let text = stderr_of_an_orphan(install_then_wait, Duration::from_millis(300));
    assert!(text.contains("[WARNING/Process-1:1] after the parent"), "{text}");
    assert!(!text.contains("before"), "a record that reached the parent is not printed again: {text}");
}

/// A value whose `Display` fails.
struct Unprintable;

impl std::fmt::Display for Unprintable {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Err(std::fmt::Error)
    }
}

fn log_unprintable(_: ()) {
    log::info!(bad:% = Unprintable, good = 1; "a record with a bad key-value");
}

fn key_values_that_fail_to_format_are_left_out_and_counted() {
    let handle = mp_log::install(Collect).unwrap();
    let mut p = Process::new(log_unprintable, ());
    p.start().unwrap();
    p.join().unwrap();
    let stats = handle.stop();
    assert_eq!((stats.records, stats.kv_failed), (1, 1), "{stats:?}");
    let seen = seen();
    assert_eq!(seen[0].message, "a record with a bad key-value");
    assert!(!seen[0].kvs.contains_key("bad") && !seen[0].kvs.contains_key("good"), "{:?}", seen[0].kvs);
}

fn five_greetings(i: u32) {
    mp_log::get_logger().info(format!("hello from worker {i}"));
}

fn log_to_stderr_prints_cpythons_lines_for_every_process() {
    let path = std::env::temp_dir().join("stderr");
    let file = File::create(&path).unwrap();
    // SAFETY: dup/dup2 of this process's own stderr, restored below.
    let saved = unsafe { libc::dup(2) };
    // SAFETY: as above.
    unsafe { libc::dup2(file.as_raw_fd(), 2) };
    let logger = mp_log::log_to_stderr(log::LevelFilter::Info).unwrap();
    logger.info("parent here");
    let mut children: Vec<_> = (0..4).map(|i| Process::new(five_greetings, i)).collect();
    for p in &mut children {
        p.start().unwrap();
    }
    for p in &mut children {
        p.join().unwrap();
    }
    logger.debug("not shown");
    // Drain the listener before reading (it prints on the parent's stderr).
    let drained = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.lines().filter(|l| l.contains("hello from worker")).count() == 4)
    });
    // SAFETY: as above.
    unsafe { libc::dup2(saved, 2) };
    // SAFETY: as above.
    unsafe { libc::close(saved) };
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(drained, "{text}");
    assert!(text.contains("[INFO/MainProcess] parent here\n"), "{text}");
    for i in 0..4 {
        assert!(text.contains(&format!("[INFO/Process-{}] hello from worker {i}\n", i + 1)), "{text}");
    }
    assert!(!text.contains("not shown"));
}

/// Installs a `QueueHandler` as this child's logger and logs `n` records.
fn log_into_queue((queue, n): (mp_ipc::Queue<LogRecord>, u32)) {
    log::set_boxed_logger(Box::new(QueueHandler::new(queue))).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    for i in 0..n {
        log::info!("queued {i}");
    }
}

fn queue_handler_and_listener_carry_records() {
    let queue = mp_ipc::Queue::<LogRecord>::new().unwrap();
    let listener = QueueListener::start(queue.clone(), Collect).unwrap();
    let mut p = ProcessBuilder::new().name("producer").target(log_into_queue, (queue, 500));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(listener.stop(), 500);
    let seen = seen();
    assert_eq!(seen.len(), 500);
    assert!(seen.iter().enumerate().all(|(i, s)| s.message == format!("queued {i}")));
    assert_eq!(seen[0].kvs["process_name"], "producer");
}

fn trace_something(n: u32) {
    tracing::info!(answer = n, "from tracing");
    tracing::debug!("filtered out");
}

fn tracing_events_from_children_are_forwarded() {
    use tracing_subscriber::prelude::*;
    let handle = Builder::new().level(log::LevelFilter::Info).install(Collect).unwrap();
    tracing_subscriber::registry().with(mp_log::LogLayer).try_init().unwrap();
    mp_log::forward_tracing();
    tracing::warn!("the parent's own event");
    let mut p = ProcessBuilder::new().name("tracer").target(trace_something, 42);
    p.start().unwrap();
    p.join().unwrap();
    let stats = handle.stop();
    assert_eq!(stats.records, 1, "{stats:?}");
    let seen = seen();
    let parent = seen.iter().find(|s| s.message == "the parent's own event").expect("the parent's event");
    assert_eq!(parent.level, log::Level::Warn);
    let child = seen.iter().find(|s| s.message == "from tracing").expect("the child's event");
    assert_eq!((child.kvs["answer"].as_str(), child.kvs["process_name"].as_str()), ("42", "tracer"));
    assert!(!seen.iter().any(|s| s.message == "filtered out"));
}

/// In the grandchild: stderr to `file`; logs ten records (the stalled parent reads one at most), says so on
/// `pipe`, waits for its parent to go, then logs once more.
fn unread_logger((file, pipe): (Handle, Handle)) {
    let fd = OwnedFd::from(file);
    // SAFETY: dup2 of two valid descriptors.
    unsafe { libc::dup2(fd.as_raw_fd(), 2) };
    for i in 0..10 {
        log::info!("unread {i}");
    }
    let parent = mp_process::parent_process().unwrap();
    File::from(pipe).write_all(&std::process::id().to_le_bytes()).unwrap();
    assert!(parent.join_timeout(Duration::from_secs(20)).unwrap(), "the parent was to be killed");
    log::info!("last");
    eprintln!("exiting normally");
}

/// The installing process, its logger stalled for good.
fn install_stalled((file, pipe): (Handle, Handle)) {
    let _handle = mp_log::install(Collect).unwrap();
    let _stall = STALL.lock().unwrap();
    let mut p = ProcessBuilder::new().keep_alive_after_parent(true).target(unread_logger, (file, pipe));
    p.start().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Records a child handed over that its killed parent never read are not lost: the child prints them on its
/// own stderr (all but the one the parent was handling when it died).
fn records_a_killed_parent_never_read_are_printed_by_the_child() {
    let text = stderr_of_an_orphan(install_stalled, Duration::from_millis(100));
    let printed = (0..10).filter(|i| text.contains(&format!("[INFO/Process-1:1] unread {i}\n"))).count();
    assert!(printed >= 9, "at most the record in flight is lost: {text}");
    assert!(text.contains("[INFO/Process-1:1] last\n"), "{text}");
}
