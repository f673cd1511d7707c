//! The operations of the store's state machine and the changes they emit.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One write to the store. Ops are plain data so that a replicated log can
/// carry them; [`crate::Store::apply`] is the only place they take effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create or replace `key` with `text`.
    Put {
        /// The key to write.
        key: String,
        /// The new text.
        text: String,
        /// What `key` must look like before the write.
        expect: Expect,
    },
    /// Remove `key`; it must exist.
    Delete {
        /// The key to remove.
        key: String,
        /// What `key` must look like before the delete.
        expect: Expect,
    },
    /// Move `from` to `to` keeping its text; `to` must not exist.
    Rename {
        /// The existing key.
        from: String,
        /// The new key.
        to: String,
        /// What `from` must look like before the rename.
        expect: Expect,
    },
}

/// An op's precondition on the version of the key it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// No condition.
    Any,
    /// The key must not exist (create only).
    Absent,
    /// The key must exist with exactly this version.
    Version(u64),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Any => f.write_str("any version"),
            Expect::Absent => f.write_str("no such entry"),
            Expect::Version(v) => write!(f, "version {v}"),
        }
    }
}

/// A committed change, as told to [`crate::Store::subscribe`]rs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key written, removed, or renamed to.
    pub key: String,
    /// The applied index of the change (the key's new version).
    pub version: u64,
    /// What happened.
    pub kind: ChangeKind,
}

/// What kind of change a [`Change`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// The key was created or replaced.
    Put,
    /// The key was removed.
    Delete,
    /// The key was renamed from `from` (which no longer exists).
    Rename {
        /// The old key.
        from: String,
    },
}
