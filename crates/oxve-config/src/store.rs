//! The store: one SQLite database, one state machine.

use crate::error::{ConfigError, Result};
use crate::key::validate_key;
use crate::op::{Change, ChangeKind, Expect, Op};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// How many unread changes a slow subscriber may fall behind before it
/// sees `RecvError::Lagged` (and should re-read what it watches).
const CHANGE_BUFFER: usize = 1024;

/// How often [`Store::update`] retries after losing a race.
const UPDATE_ATTEMPTS: usize = 32;

/// The schema; `user_version` tells which one a database has.
const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    key     TEXT PRIMARY KEY NOT NULL,
    text    TEXT NOT NULL,
    version INTEGER NOT NULL,
    mtime   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locks (
    name       TEXT PRIMARY KEY NOT NULL,
    owner      TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('applied_index', 0);
";

/// The config store. Cheap to clone; all clones share one database
/// connection, so calls are serialized. Calls block on SQLite (and, for
/// writes, on an fsync): from async code, keep them short or move them to
/// a blocking thread.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    changes: broadcast::Sender<Change>,
}

/// One key with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key (relative path).
    pub key: String,
    /// The file's text.
    pub text: String,
    /// The applied index of the last write to this key.
    pub version: u64,
    /// When the key was last written, in seconds since the Unix epoch.
    pub mtime: i64,
}

impl Entry {
    /// Upstream's `digest` of the text (hex SHA-1).
    pub fn digest(&self) -> String {
        crate::digest(&self.text)
    }
}

/// A key without its text, as listed by [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// The key (relative path).
    pub key: String,
    /// The applied index of the last write to this key.
    pub version: u64,
    /// When the key was last written, in seconds since the Unix epoch.
    pub mtime: i64,
    /// The text's length in bytes.
    pub size: u64,
}

impl Store {
    /// Opens the database at `path`, creating it, its parent directories
    /// and its schema if needed.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ConfigError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        // Other processes (the CLI) may hold the write lock for a moment.
        conn.busy_timeout(Duration::from_secs(10))?;
        // WAL + FULL: a commit is fsynced to the WAL before it returns.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == 0 {
            conn.execute_batch(SCHEMA)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Ok(Store {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                changes,
            }),
        })
    }

    /// The entry at `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Entry>> {
        validate_key(key)?;
        let conn = self.conn();
        let entry = conn
            .query_row(
                "SELECT text, version, mtime FROM entries WHERE key = ?1",
                [key],
                |r| {
                    Ok(Entry {
                        key: key.to_string(),
                        text: r.get(0)?,
                        version: as_u64(r.get(1)?),
                        mtime: r.get(2)?,
                    })
                },
            )
            .optional()?;
        Ok(entry)
    }

    /// All keys starting with `prefix` (plain string prefix: pass
    /// `"nodes/pve1/"` for a directory), sorted by key.
    pub fn list(&self, prefix: &str) -> Result<Vec<EntryMeta>> {
        // U+10FFFF is the largest scalar value, so in SQLite's bytewise
        // order every key starting with `prefix` sorts below this bound.
        let upper = format!("{prefix}\u{10FFFF}");
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT key, version, mtime, length(CAST(text AS BLOB)) FROM entries
             WHERE key >= ?1 AND key < ?2 ORDER BY key",
        )?;
        let rows = stmt.query_map([prefix, upper.as_str()], |r| {
            Ok(EntryMeta {
                key: r.get(0)?,
                version: as_u64(r.get(1)?),
                mtime: r.get(2)?,
                size: as_u64(r.get(3)?),
            })
        })?;
        let list = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(list)
    }

    /// The store-wide applied index: how many ops have been applied.
    pub fn applied_index(&self) -> Result<u64> {
        let conn = self.conn();
        Ok(read_applied_index(&conn)?)
    }

    /// Applies one op in one transaction and returns the new applied
    /// index, which is also the new version of the key put or renamed to.
    ///
    /// A failed [`Expect`]ation gives [`ConfigError::VersionMismatch`];
    /// deleting or renaming a missing key gives [`ConfigError::NotFound`]
    /// (unless an expectation already failed), renaming onto an existing
    /// key [`ConfigError::AlreadyExists`]. On any error nothing changes.
    pub fn apply(&self, op: Op) -> Result<u64> {
        match &op {
            Op::Put { key, .. } | Op::Delete { key, .. } => validate_key(key)?,
            Op::Rename { from, to, .. } => {
                validate_key(from)?;
                validate_key(to)?;
            }
        }
        let mtime = unix_now();
        let change = {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let index = read_applied_index(&tx)? + 1;
            let change = apply_in(&tx, op, index, mtime)?;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE name = 'applied_index'",
                [as_i64(index)],
            )?;
            tx.commit()?;
            change
        };
        let version = change.version;
        // No receiver is not an error: nobody is watching.
        let _ = self.inner.changes.send(change);
        Ok(version)
    }

    /// Read-modify-write of one key with optimistic retry.
    ///
    /// `f` gets the current text (`None` if the key does not exist) and
    /// returns the new text, or `None` to leave the key as it is (delete a
    /// key with [`Op::Delete`]). A new text equal to the current one writes
    /// nothing. If another writer changed the key in between, `f` is called
    /// again with the fresh text. Returns the key's version afterwards
    /// (`None` if it does not exist).
    pub fn update<E>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<&str>) -> Result<Option<String>, E>,
    ) -> Result<Option<u64>, E>
    where
        E: From<ConfigError>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.get(key)?;
            let old_text = current.as_ref().map(|e| e.text.as_str());
            let Some(text) = f(old_text)? else {
                return Ok(current.map(|e| e.version));
            };
            if old_text == Some(text.as_str()) {
                return Ok(current.map(|e| e.version));
            }
            let expect = match &current {
                Some(e) => Expect::Version(e.version),
                None => Expect::Absent,
            };
            let op = Op::Put {
                key: key.to_string(),
                text,
                expect,
            };
            match self.apply(op) {
                Ok(version) => return Ok(Some(version)),
                Err(ConfigError::VersionMismatch { .. }) if attempt < UPDATE_ATTEMPTS => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Watches committed changes. Each change is sent after its commit;
    /// a receiver that lags too far behind gets `Lagged` and should re-read.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// The connection; a panic while it was held cannot have left a
    /// transaction open (dropping one rolls it back), so poison is ignored.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The state machine's step: checks `op` against the current state and
/// performs it as applied index `index`.
fn apply_in(tx: &Transaction<'_>, op: Op, index: u64, mtime: i64) -> Result<Change> {
    match op {
        Op::Put { key, text, expect } => {
            check(tx, &key, expect)?;
            tx.execute(
                "INSERT INTO entries (key, text, version, mtime) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE
                 SET text = excluded.text, version = excluded.version, mtime = excluded.mtime",
                params![key, text, as_i64(index), mtime],
            )?;
            Ok(Change {
                key,
                version: index,
                kind: ChangeKind::Put,
            })
        }
        Op::Delete { key, expect } => {
            if check(tx, &key, expect)?.is_none() {
                return Err(ConfigError::NotFound { key });
            }
            tx.execute("DELETE FROM entries WHERE key = ?1", [&key])?;
            Ok(Change {
                key,
                version: index,
                kind: ChangeKind::Delete,
            })
        }
        Op::Rename { from, to, expect } => {
            if check(tx, &from, expect)?.is_none() {
                return Err(ConfigError::NotFound { key: from });
            }
            if version_of(tx, &to)?.is_some() {
                return Err(ConfigError::AlreadyExists { key: to });
            }
            tx.execute(
                "UPDATE entries SET key = ?1, version = ?2, mtime = ?3 WHERE key = ?4",
                params![to, as_i64(index), mtime, from],
            )?;
            Ok(Change {
                key: to,
                version: index,
                kind: ChangeKind::Rename { from },
            })
        }
    }
}

/// Checks `expect` on `key` and returns its current version.
fn check(tx: &Transaction<'_>, key: &str, expect: Expect) -> Result<Option<u64>> {
    let found = version_of(tx, key)?;
    let ok = match expect {
        Expect::Any => true,
        Expect::Absent => found.is_none(),
        Expect::Version(v) => found == Some(v),
    };
    if ok {
        Ok(found)
    } else {
        Err(ConfigError::VersionMismatch {
            key: key.to_string(),
            expected: expect,
            found,
        })
    }
}

fn version_of(conn: &Connection, key: &str) -> rusqlite::Result<Option<u64>> {
    conn.query_row("SELECT version FROM entries WHERE key = ?1", [key], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|v| v.map(as_u64))
}

fn read_applied_index(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT value FROM meta WHERE name = 'applied_index'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(as_u64)
}

/// SQLite integers are signed; versions and sizes never go negative.
fn as_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
