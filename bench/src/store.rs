//! Config-store write path: `oxve_config::Store::apply` puts against raw
//! rusqlite inserts with the same pragmas, one transaction per write each.

use crate::error::{BenchError, Result};
use crate::stats::median;
use oxve_config::{Expect, Op, Store};
use rusqlite::{params, Connection, TransactionBehavior};
use std::path::Path;
use std::time::Instant;

/// What one run of the store benchmark measured.
#[derive(Debug)]
pub struct StoreFigures {
    /// Puts per round.
    pub puts: usize,
    /// Rounds run (each store and baseline once, alternating who goes first).
    pub rounds: usize,
    /// Median puts/s of `Store::apply`.
    pub store_rate: f64,
    /// Median puts/s of the raw rusqlite baseline.
    pub sqlite_rate: f64,
}

/// Runs `rounds` rounds of `puts` puts against both, in fresh databases
/// under `scratch`.
pub fn run(scratch: &Path, puts: usize, rounds: usize) -> Result<StoreFigures> {
    let mut store_rates = Vec::with_capacity(rounds);
    let mut sqlite_rates = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Alternate the order so that neither always gets the warmer cache.
        if round % 2 == 0 {
            sqlite_rates.push(sqlite_round(scratch, puts)?);
            store_rates.push(store_round(scratch, puts)?);
        } else {
            store_rates.push(store_round(scratch, puts)?);
            sqlite_rates.push(sqlite_round(scratch, puts)?);
        }
        eprintln!(
            "store round {}/{rounds}: oxve {:.0} puts/s, sqlite {:.0} puts/s",
            round + 1,
            store_rates[round],
            sqlite_rates[round]
        );
    }
    Ok(StoreFigures {
        puts,
        rounds,
        store_rate: median(&mut store_rates),
        sqlite_rate: median(&mut sqlite_rates),
    })
}

/// The key and text of put number `i`: a small guest config, as most
/// writes to the store are.
fn entry(i: usize) -> (String, String) {
    let key = format!("nodes/benchnode/qemu-server/{}.conf", 100 + i);
    let text = format!(
        "boot: order=scsi0\ncores: 2\nmemory: 2048\nname: bench-{i}\n\
         net0: virtio=BC:24:11:00:{:02X}:{:02X},bridge=vmbr0\n\
         scsi0: local:vm-{}-disk-0,size=32G\nscsihw: virtio-scsi-single\n",
        (i >> 8) & 0xff,
        i & 0xff,
        100 + i
    );
    (key, text)
}

fn store_round(scratch: &Path, puts: usize) -> Result<f64> {
    let dir = temp_dir(scratch)?;
    let store = Store::open(&dir.path().join("config.db"))?;
    let entries: Vec<_> = (0..puts).map(entry).collect();
    let start = Instant::now();
    for (key, text) in entries {
        store.apply(Op::Put {
            key,
            text,
            expect: Expect::Any,
        })?;
    }
    Ok(rate(puts, start))
}

/// The floor: the same table shape as the store's, the same pragmas, one
/// `INSERT OR REPLACE` per immediate transaction, nothing else.
fn sqlite_round(scratch: &Path, puts: usize) -> Result<f64> {
    let dir = temp_dir(scratch)?;
    let mut conn = Connection::open(dir.path().join("baseline.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE entries (
             key     TEXT PRIMARY KEY NOT NULL,
             text    TEXT NOT NULL,
             version INTEGER NOT NULL,
             mtime   INTEGER NOT NULL
         ) WITHOUT ROWID;",
    )?;
    let entries: Vec<_> = (0..puts).map(entry).collect();
    let start = Instant::now();
    for (version, (key, text)) in (1i64..).zip(entries) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR REPLACE INTO entries (key, text, version, mtime) VALUES (?1, ?2, ?3, ?4)",
            params![key, text, version, 0i64],
        )?;
        tx.commit()?;
    }
    Ok(rate(puts, start))
}

fn temp_dir(scratch: &Path) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("oxve-bench-store-")
        .tempdir_in(scratch)
        .map_err(BenchError::file(scratch))
}

fn rate(count: usize, start: Instant) -> f64 {
    count as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_rounds_run_on_a_scratch_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        store_round(dir.path(), 5).expect("store round");
        sqlite_round(dir.path(), 5).expect("sqlite round");
    }

    #[test]
    fn entries_are_valid_distinct_keys() {
        let (key, text) = entry(3);
        oxve_config::validate_key(&key).expect("valid key");
        assert_ne!(entry(4).0, key);
        assert_eq!(key, "nodes/benchnode/qemu-server/103.conf");
        assert!(text.contains("name: bench-3\n"));
    }
}
