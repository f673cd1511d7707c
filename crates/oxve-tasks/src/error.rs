//! The error type of the task crate.

use std::path::PathBuf;

/// A task crate result.
pub type Result<T, E = TaskError> = std::result::Result<T, E>;

/// Everything that can go wrong with worker tasks.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A string that is not a well-formed UPID.
    #[error("unable to parse worker upid '{0}'")]
    InvalidUpid(String),
    /// A task type, id, user or node that cannot be part of a UPID.
    #[error("invalid task {field} '{value}': {reason}")]
    InvalidField {
        /// `type`, `id`, `user` or `node`.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A UPID that has no log on this node.
    #[error("no such task '{0}'")]
    NoSuchTask(String),
    /// A task run by another live process, which this one cannot stop.
    #[error("task '{0}' is run by another process and cannot be stopped from here")]
    NotLocal(String),
    /// `spawn` called outside a tokio runtime.
    #[error("unable to start worker task: no tokio runtime")]
    NoRuntime,
    /// A task file could not be read or written.
    #[error("task file '{path}': {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl TaskError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TaskError {
        let path = path.into();
        move |source| TaskError::Io { path, source }
    }
}
