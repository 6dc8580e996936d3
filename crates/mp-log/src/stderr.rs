//! CPython's `log_to_stderr`: lines `[LEVEL/process-name] message` on stderr, from every process of the tree,
//! and `get_logger()`, the logger of mp's own records (target `mp`).

use std::fmt;

use log::{Level, LevelFilter};

use crate::error::InstallError;
use crate::record::level_name;

/// CPython's `SUBDEBUG` (5, below `DEBUG`): `log`'s `Trace`.
pub const SUBDEBUG: Level = Level::Trace;
/// CPython's `SUBWARNING` (25, between `INFO` and `WARNING`): `log`'s `Warn`, which is the nearest level that
/// still shows by default.
pub const SUBWARNING: Level = Level::Warn;

/// A logger that writes CPython's `log_to_stderr` lines; a record forwarded from a child names the child (its
/// `process_name` key-value), any other names this process.
#[derive(Debug, Clone, Copy)]
pub struct StderrLogger {
    level: LevelFilter,
}

impl StderrLogger {
    /// Lines for records at `level` and above.
    pub fn new(level: LevelFilter) -> Self {
        StderrLogger { level }
    }
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let name = crate::record::process_name(record);
        let line = format!("[{}/{name}] {}\n", level_name(record.level()), record.args());
        crate::sys::write_stderr(line.as_bytes());
    }

    fn flush(&self) {}
}

/// CPython's `multiprocessing.log_to_stderr(level)`: installs mp's logger with a [`StderrLogger`], so that
/// every process of the tree — children under every start method, and theirs — logs `[LEVEL/name] message`
/// lines on the parent's stderr. Returns [`get_logger`]'s logger.
///
/// ```
/// # mp_process::init();
/// let logger = mp_log::log_to_stderr(log::LevelFilter::Info)?;
/// logger.info("printed as [INFO/MainProcess] ...");
/// # Ok::<(), mp_log::InstallError>(())
/// ```
pub fn log_to_stderr(level: LevelFilter) -> Result<Logger, InstallError> {
    crate::Builder::new().level(level).install(StderrLogger::new(level))?;
    Ok(get_logger())
}

/// CPython's `multiprocessing.get_logger()`: the logger of mp's own records (target `mp`). mp's crates log
/// their process starts, joins, terminations, replaced workers and cleanups through it at `debug` and
/// `trace` (CPython's `util.debug` and `SUBDEBUG`), so `log_to_stderr(Debug)` shows them.
pub fn get_logger() -> Logger {
    Logger { _private: () }
}

/// The logger [`get_logger`] returns: `log` records with target `mp`.
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    _private: (),
}

impl Logger {
    /// The target of its records.
    pub const TARGET: &'static str = "mp";

    /// Logs `message` at `level`.
    pub fn log(&self, level: Level, message: impl fmt::Display) {
        log::log!(target: Self::TARGET, level, "{message}");
    }

    /// At `error`.
    pub fn error(&self, message: impl fmt::Display) {
        self.log(Level::Error, message);
    }

    /// At `warn` (CPython's `warning`).
    pub fn warning(&self, message: impl fmt::Display) {
        self.log(Level::Warn, message);
    }

    /// At `info`.
    pub fn info(&self, message: impl fmt::Display) {
        self.log(Level::Info, message);
    }

    /// At `debug`.
    pub fn debug(&self, message: impl fmt::Display) {
        self.log(Level::Debug, message);
    }

    /// At [`SUBDEBUG`] (`trace`).
    pub fn subdebug(&self, message: impl fmt::Display) {
        self.log(SUBDEBUG, message);
    }
}
