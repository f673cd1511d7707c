//! The error type of the config store.

use crate::op::Expect;

/// A config store result.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Everything that can go wrong in the config store.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key that is not a clean relative path.
    #[error("invalid config key '{key}': {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An operation's expectation did not hold; nothing was changed.
    #[error(
        "config '{key}' was changed by someone else (expected {expected}, found {}) - reload and try again",
        show_found(*.found)
    )]
    VersionMismatch {
        /// The key whose version was checked.
        key: String,
        /// What the operation expected.
        expected: Expect,
        /// The key's actual version, `None` if it does not exist.
        found: Option<u64>,
    },
    /// Delete or rename of a key that does not exist.
    #[error("config '{key}' does not exist")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// Rename onto a key that already exists.
    #[error("config '{key}' already exists")]
    AlreadyExists {
        /// The existing key.
        key: String,
    },
    /// A lock name or owner that is empty.
    #[error("invalid lock {what}: must not be empty")]
    InvalidLock {
        /// `name` or `owner`.
        what: &'static str,
    },
    /// Creating the database's directory failed.
    #[error("unable to create config store directory '{path}': {source}")]
    CreateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("config database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

fn show_found(found: Option<u64>) -> String {
    match found {
        Some(v) => format!("version {v}"),
        None => "no such entry".to_string(),
    }
}
