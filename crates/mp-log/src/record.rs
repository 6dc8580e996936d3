//! [`LogRecord`]: a `log` record as it travels from a child to its parent (or through a queue), and the one
//! datagram format of the forwarding transport ([`Message`]).

use std::fmt::Write as _;

use log::Level;
use serde::{Deserialize, Serialize};

/// The largest encoded record by default (64 KiB): a longer message is cut, with a marker.
pub const DEFAULT_RECORD_CAP: usize = 64 * 1024;

/// What is appended to a message that was cut to fit the cap.
pub const TRUNCATED_MARKER: &str = " …[truncated]";

/// The name of the process that logged `record`: the `process_name` key-value a forwarded record carries,
/// else this process's name (CPython's `%(processName)s`) — what a formatter of the parent's logger prints.
///
/// ```
/// # mp_process::init();
/// let record = log::Record::builder().args(format_args!("hi")).build();
/// assert_eq!(mp_log::process_name(&record), "MainProcess");
/// ```
pub fn process_name(record: &log::Record<'_>) -> String {
    match record.key_values().get(log::kv::Key::from_str("process_name")) {
        Some(name) => name.to_string(),
        None => mp_process::current_process().name().to_owned(),
    }
}

/// A `log::Record`, owned and serde-serializable: its level, target, module path, file, line, message and
/// key-values (as text), with the process that logged it (name, pid, and its per-process sequence number).
///
/// Made with [`LogRecord::from_record`] in the process that logs, re-emitted with [`LogRecord::emit`] in the
/// one that handles it; [`QueueHandler`](crate::QueueHandler) carries these through a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The level, as `log::Level as usize` (1 = error … 5 = trace).
    pub level: u8,
    /// The record's target (`log`'s `target:`, by default the module path).
    pub target: String,
    /// The module path, when known.
    pub module_path: Option<String>,
    /// The source file, when known.
    pub file: Option<String>,
    /// The source line, when known.
    pub line: Option<u32>,
    /// The formatted message.
    pub message: String,
    /// The key-values, formatted with `Display`.
    pub key_values: Vec<(String, String)>,
    /// The name of the process that logged it (`MainProcess`, `Process-1`, …).
    pub process_name: String,
    /// Its pid.
    pub pid: u32,
    /// Its place among the records that process sent (1, 2, …; 0 for records that went through no transport).
    pub seq: u64,
    /// The message was cut to fit the cap.
    pub truncated: bool,
}

impl LogRecord {
    /// The record `record`, logged by this process. Key-values whose `Display` fails are left out and the
    /// record says so (`kv_failed` is then true).
    pub fn from_record(record: &log::Record<'_>) -> (LogRecord, bool) {
        let me = mp_process::current_process();
        Self::capture(record, me.name(), me.pid())
    }

    /// [`from_record`](Self::from_record) for a process whose name and pid the caller knows.
    pub(crate) fn capture(record: &log::Record<'_>, process_name: &str, pid: u32) -> (LogRecord, bool) {
        let mut message = String::new();
        let _ = write!(message, "{}", record.args());
        let mut collect = Collect(Vec::new(), false);
        let _ = record.key_values().visit(&mut collect);
        let rec = LogRecord {
            level: record.level() as usize as u8,
            target: record.target().to_owned(),
            module_path: record.module_path().map(str::to_owned),
            file: record.file().map(str::to_owned),
            line: record.line(),
            message,
            key_values: if collect.1 { Vec::new() } else { collect.0 },
            process_name: process_name.to_owned(),
            pid,
            seq: 0,
            truncated: false,
        };
        (rec, collect.1)
    }

    /// The record borrowed, for encoding.
    pub(crate) fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            level: self.level,
            target: &self.target,
            module_path: self.module_path.as_deref(),
            file: self.file.as_deref(),
            line: self.line,
            message: &self.message,
            key_values: self.key_values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            process_name: &self.process_name,
            pid: self.pid,
            seq: self.seq,
            truncated: self.truncated,
        }
    }

    /// The level as `log`'s.
    pub fn log_level(&self) -> log::Level {
        level_of(self.level)
    }

    /// Hands the record to `logger` as a `log::Record` with its original level, target, module path, file,
    /// line and key-values, plus `process_name`, `pid` and `seq` as key-values.
    pub fn emit(&self, logger: &dyn log::Log) {
        let source = Source(self);
        let metadata = log::Metadata::builder().level(self.log_level()).target(&self.target).build();
        if !logger.enabled(&metadata) {
            return;
        }
        logger.log(
            &log::Record::builder()
                .metadata(metadata)
                .args(format_args!("{}", self.message))
                .module_path(self.module_path.as_deref())
                .file(self.file.as_deref())
                .line(self.line)
                .key_values(&source)
                .build(),
        );
    }

    /// Cuts the message until the encoded record fits `cap` bytes (then the key-values, then the target and
    /// paths, should the message alone not do).
    pub(crate) fn fit(&mut self, cap: usize, encoded_len: impl Fn(&LogRecord) -> usize) {
        let mut len = encoded_len(self);
        if len <= cap {
            return;
        }
        self.truncated = true;
        let over = len - cap + TRUNCATED_MARKER.len() + 16;
        let mut keep = self.message.len().saturating_sub(over);
        while !self.message.is_char_boundary(keep) {
            keep -= 1;
        }
        self.message.truncate(keep);
        self.message.push_str(TRUNCATED_MARKER);
        len = encoded_len(self);
        if len > cap {
            self.key_values.clear();
            self.module_path = None;
            self.file = None;
            self.target.truncate(self.target.len().min(256));
            while !self.target.is_char_boundary(self.target.len()) {
                self.target.pop();
            }
        }
    }
}

/// Collects key-values as text; the flag says one failed to format.
#[derive(Debug, Default)]
pub(crate) struct Collect(pub(crate) Vec<(String, String)>, pub(crate) bool);

impl<'kvs> log::kv::VisitSource<'kvs> for Collect {
    fn visit_pair(&mut self, key: log::kv::Key<'kvs>, value: log::kv::Value<'kvs>) -> Result<(), log::kv::Error> {
        let mut text = String::new();
        if write!(text, "{value}").is_err() {
            self.1 = true;
            return Ok(());
        }
        self.0.push((key.as_str().to_owned(), text));
        Ok(())
    }
}

/// A record's key-values for `log`, with the process's name, pid and sequence number after them.
struct Source<'a>(&'a LogRecord);

impl log::kv::Source for Source<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn log::kv::VisitSource<'kvs>) -> Result<(), log::kv::Error> {
        for (key, value) in &self.0.key_values {
            visitor.visit_pair(log::kv::Key::from_str(key), log::kv::Value::from(value.as_str()))?;
        }
        visitor
            .visit_pair(log::kv::Key::from_str("process_name"), log::kv::Value::from(self.0.process_name.as_str()))?;
        visitor.visit_pair(log::kv::Key::from_str("pid"), log::kv::Value::from(self.0.pid))?;
        visitor.visit_pair(log::kv::Key::from_str("seq"), log::kv::Value::from(self.0.seq))
    }
}

/// A [`LogRecord`] borrowed: the same fields in the same order, so that it encodes to the same bytes and
/// either side can read what the other wrote. A child encodes records from this (no copy of the record's
/// strings), the listener decodes into it (strings borrowed from the message).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RecordRef<'a> {
    pub(crate) level: u8,
    pub(crate) target: &'a str,
    pub(crate) module_path: Option<&'a str>,
    pub(crate) file: Option<&'a str>,
    pub(crate) line: Option<u32>,
    pub(crate) message: &'a str,
    #[serde(borrow)]
    pub(crate) key_values: Vec<(&'a str, &'a str)>,
    pub(crate) process_name: &'a str,
    pub(crate) pid: u32,
    pub(crate) seq: u64,
    pub(crate) truncated: bool,
}

impl RecordRef<'_> {
    /// An owned copy.
    pub(crate) fn to_owned_record(&self) -> LogRecord {
        LogRecord {
            level: self.level,
            target: self.target.to_owned(),
            module_path: self.module_path.map(str::to_owned),
            file: self.file.map(str::to_owned),
            line: self.line,
            message: self.message.to_owned(),
            key_values: self.key_values.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            process_name: self.process_name.to_owned(),
            pid: self.pid,
            seq: self.seq,
            truncated: self.truncated,
        }
    }

    /// Hands the record to `logger`, as [`LogRecord::emit`] does, without copying it.
    pub(crate) fn emit(&self, logger: &dyn log::Log) {
        let metadata = log::Metadata::builder().level(level_of(self.level)).target(self.target).build();
        if !logger.enabled(&metadata) {
            return;
        }
        let source = SourceRef(self);
        logger.log(
            &log::Record::builder()
                .metadata(metadata)
                .args(format_args!("{}", self.message))
                .module_path(self.module_path)
                .file(self.file)
                .line(self.line)
                .key_values(&source)
                .build(),
        );
    }
}

/// A borrowed record's key-values for `log`, with the process's name, pid and sequence number after them.
struct SourceRef<'a, 'b>(&'b RecordRef<'a>);

impl log::kv::Source for SourceRef<'_, '_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn log::kv::VisitSource<'kvs>) -> Result<(), log::kv::Error> {
        for (key, value) in &self.0.key_values {
            visitor.visit_pair(log::kv::Key::from_str(key), log::kv::Value::from(*value))?;
        }
        visitor.visit_pair(log::kv::Key::from_str("process_name"), log::kv::Value::from(self.0.process_name))?;
        visitor.visit_pair(log::kv::Key::from_str("pid"), log::kv::Value::from(self.0.pid))?;
        visitor.visit_pair(log::kv::Key::from_str("seq"), log::kv::Value::from(self.0.seq))
    }
}

fn level_of(level: u8) -> log::Level {
    match level {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    }
}

/// CPython's level name for `level`: `ERROR`, `WARNING`, `INFO`, `DEBUG`, and `SUBDEBUG` for `Trace`.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "SUBDEBUG",
    }
}

/// `[LEVEL/process-name] message\n`: CPython's `log_to_stderr` format.
pub(crate) fn cpython_line(record: &LogRecord) -> String {
    format!("[{}/{}] {}\n", level_name(record.log_level()), record.process_name, record.message)
}

/// One message from a child to its parent's listener.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Message<'a> {
    /// A record; `dropped` is how many records this process has dropped so far (a full channel), `kv_failed`
    /// how many it sent without their key-values.
    Record {
        #[serde(borrow)]
        record: RecordRef<'a>,
        dropped: u64,
        kv_failed: u64,
    },
    /// The process ends: its last sequence number and its final counts.
    Exit { pid: u32, process_name: &'a str, seq: u64, dropped: u64, kv_failed: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(message: &str) -> LogRecord {
        LogRecord {
            level: 3,
            target: "t".into(),
            module_path: Some("m".into()),
            file: Some("f.rs".into()),
            line: Some(7),
            message: message.into(),
            key_values: vec![("k".into(), "v".into())],
            process_name: "Process-1".into(),
            pid: 42,
            seq: 1,
            truncated: false,
        }
    }

    #[test]
    fn borrowed_and_owned_records_encode_alike() {
        let owned = record("same bytes");
        let bytes = postcard::to_stdvec(&owned).unwrap();
        let borrowed: RecordRef<'_> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(borrowed.to_owned_record(), owned);
        assert_eq!(postcard::to_stdvec(&borrowed).unwrap(), bytes);
    }

    #[test]
    fn a_long_message_is_cut_at_a_char_boundary_with_a_marker() {
        let len = |r: &LogRecord| postcard::to_stdvec(r).unwrap().len();
        let mut long = record(&"é".repeat(50_000));
        long.fit(1000, len);
        assert!(len(&long) <= 1000, "{}", len(&long));
        assert!(long.truncated && long.message.ends_with(TRUNCATED_MARKER));
        let mut short = record("short");
        short.fit(1000, len);
        assert_eq!(short, record("short"));
    }
}
