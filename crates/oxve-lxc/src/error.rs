//! Errors of container operations; the messages are what a task log shows.

/// What went wrong with a container.
#[derive(Debug, thiserror::Error)]
pub enum LxcError {
    /// The CT config holds something that cannot be used.
    #[error("{0}")]
    Config(String),
    /// An external tool (`lxc-start`, `tar`, `mount`, ...) failed.
    #[error("{0}")]
    Command(String),
    /// A file operation failed; the message names the path.
    #[error("{0}")]
    Io(String),
    /// The storage layer refused or failed.
    #[error("{0}")]
    Storage(#[from] oxve_storage::StorageError),
    /// The OS setup of the root file system failed.
    #[error("{0}")]
    Setup(String),
}

/// An I/O error with the path it happened on.
pub fn io_err(what: &str, path: &std::path::Path, e: std::io::Error) -> LxcError {
    LxcError::Io(format!("{what} '{}': {e}", path.display()))
}
