//! The storage crate's error type. Messages name the object and, where
//! there is one, the fix; the API maps them to upstream's status codes.

use thiserror::Error;

/// What can go wrong with a storage or a volume.
#[derive(Debug, Error)]
pub enum StorageError {
    /// A storage id that is not in `storage.cfg`.
    #[error("storage '{0}' does not exist")]
    NoSuchStorage(String),
    /// A storage id that already is in `storage.cfg`.
    #[error("storage ID '{0}' already defined")]
    Exists(String),
    /// A volume that is not on the storage.
    #[error("volume '{0}' does not exist")]
    NoSuchVolume(String),
    /// The name is taken (allocation retries with the next free name).
    #[error("volume '{0}' already exists")]
    AlreadyExists(String),
    /// A volume id or name that does not parse, or tries to leave the storage.
    #[error("unable to parse volume name '{name}' - {reason}")]
    BadVolume { name: String, reason: String },
    /// Content the storage is not configured for.
    #[error("storage '{storage}' does not allow content '{content}' (allowed: {allowed})")]
    ContentNotAllowed {
        storage: String,
        content: String,
        allowed: String,
    },
    /// An operation this storage type cannot do.
    #[error("{op} is not supported by storage '{storage}' (type {kind})")]
    Unsupported {
        op: String,
        storage: String,
        kind: String,
    },
    /// A bad option value or option combination in a storage definition.
    #[error("{key}: {message}")]
    Option { key: String, message: String },
    /// A tool the plugin runs failed.
    #[error("command '{command}' failed: {message}")]
    Command { command: String, message: String },
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// Wraps an I/O error with what was being done (`"unable to create '/x'"`).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }

    /// A bad volume name with the reason.
    pub fn bad_volume(name: &str, reason: impl Into<String>) -> Self {
        StorageError::BadVolume {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// Result with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
