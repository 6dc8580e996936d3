//! The error type of installing mp's logger.

/// Why [`install`](crate::install) (or [`log_to_stderr`](crate::log_to_stderr)) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// mp's logger already runs in this process: it was installed here, or this process is a child of a tree
    /// that installed it (and forwards to that tree's parent).
    #[error("mp's logger is already installed in this process (installed here, or inherited as a child)")]
    AlreadyInstalled,
    /// Another logger was set with `log::set_logger` first; `log` allows one per process.
    #[error(
        "another logger is already installed; mp's logger must be the global logger (pass yours as its inner logger)"
    )]
    AnotherLogger,
    /// The listener's socket or thread could not be made.
    #[error("failed to start the log listener: {0}")]
    Io(#[source] std::io::Error),
}
