//! Named cluster locks with expiry, kept in the store's database.
//!
//! A lock belongs to one owner until it expires; its owner renews it by
//! locking again. An expired lock is free for anyone: a holder that died
//! cannot block others for longer than its ttl.

use crate::error::{ConfigError, Result};
use crate::store::Store;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

impl Store {
    /// Takes or renews the lock `name` for `owner` until `ttl` from now.
    /// Returns `false` if someone else holds it and it has not expired.
    pub fn lock(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
        check_names(name, owner)?;
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let holder: Option<(String, i64)> = tx
            .query_row(
                "SELECT owner, expires_ms FROM locks WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((holder, until)) = holder {
            if holder != owner && until > now {
                return Ok(false);
            }
        }
        tx.execute(
            "INSERT INTO locks (name, owner, expires_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms",
            params![name, owner, expires],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Releases the lock `name` if `owner` holds it (expired or not).
    /// Returns whether it was released.
    pub fn unlock(&self, name: &str, owner: &str) -> Result<bool> {
        check_names(name, owner)?;
        let conn = self.conn();
        let n = conn.execute(
            "DELETE FROM locks WHERE name = ?1 AND owner = ?2",
            [name, owner],
        )?;
        Ok(n > 0)
    }
}

fn check_names(name: &str, owner: &str) -> Result<()> {
    if name.is_empty() {
        return Err(ConfigError::InvalidLock { what: "name" });
    }
    if owner.is_empty() {
        return Err(ConfigError::InvalidLock { what: "owner" });
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
