//! The oxve config store: the `/etc/pve` file tree as keys in one SQLite
//! database, each value the text of that file.
//!
//! Keys are relative paths (`user.cfg`, `nodes/pve1/qemu-server/100.conf`,
//! `priv/shadow.cfg`). Every write is an [`Op`] — put, delete or rename,
//! each with an [`Expect`]ation about the key's current version — applied
//! by one state machine ([`Store::apply`]), so that a replicated log can
//! carry the same operations later. Each applied op advances the store-wide
//! *applied index*, which is persisted with the data and doubles as the new
//! version of the key it touched: versions only ever grow, even across a
//! delete and re-create.
//!
//! The store also holds named cluster locks with expiry ([`Store::lock`])
//! and tells in-process watchers about committed changes
//! ([`Store::subscribe`]).
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL` and
//! each operation is one transaction, so a write that [`Store::apply`]
//! acknowledged survives `kill -9` and power loss.

mod error;
mod key;
mod lock;
mod op;
mod store;

pub use error::{ConfigError, Result};
pub use key::validate_key;
pub use op::{Change, ChangeKind, Expect, Op};
pub use store::{Entry, EntryMeta, Store};

use sha1::{Digest, Sha1};

/// Upstream's config `digest`: the hex SHA-1 of the file's text.
///
/// ```
/// assert_eq!(oxve_config::digest(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
/// ```
pub fn digest(text: &str) -> String {
    let hash = Sha1::digest(text.as_bytes());
    let mut out = String::with_capacity(40);
    for b in hash {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::digest;

    #[test]
    fn digest_matches_known_sha1() {
        assert_eq!(digest("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            digest("The quick brown fox jumps over the lazy dog"),
            "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"
        );
    }
}
