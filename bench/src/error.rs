//! The one error type of the bench: what could not be measured, and why.

use std::path::PathBuf;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The config store under test failed.
    #[error("config store: {0}")]
    Store(#[from] oxve_config::ConfigError),
    /// A storage plugin under test failed.
    #[error("storage: {0}")]
    Storage(#[from] oxve_storage::StorageError),
    /// The raw SQLite baseline failed.
    #[error("SQLite baseline: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// An external program could not be started at all.
    #[error("cannot run '{tool}': {source}")]
    Spawn {
        /// The program.
        tool: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// An external program ran but failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The program and its purpose.
        tool: String,
        /// Its exit status and output.
        detail: String,
    },
    /// Something a benchmark needs is missing from this machine.
    #[error("{0}")]
    Missing(String),
    /// The daemon did not start, or stopped too early.
    #[error("daemon: {0}")]
    Daemon(String),
    /// A program's output was not what the bench expects.
    #[error("cannot read {what}: {detail}")]
    Parse {
        /// Whose output.
        what: &'static str,
        /// What was missing or malformed.
        detail: String,
    },
}

/// The bench's result type.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

impl BenchError {
    /// A file error for `path`.
    pub fn file(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BenchError {
        let path = path.into();
        move |source| BenchError::File { path, source }
    }
}
