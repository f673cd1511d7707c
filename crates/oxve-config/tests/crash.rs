//! Crash safety: every write that `apply` acknowledged survives SIGKILL.
//!
//! The test re-runs its own binary as a child (selected by an environment
//! variable) that writes in a tight loop and prints each acknowledged key
//! and version. The parent kills it mid-burst, reopens the database and
//! checks every acknowledged write and the database's integrity.

use oxve_config::{Expect, Op, Store};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "OXVE_CONFIG_CRASH_CHILD_DB";
const KILL_AFTER: usize = 150;

/// The text the child writes for burst step `i`: varied sizes so that
/// some writes span several database pages.
fn text_for(i: usize) -> String {
    format!("step: {i}\n{}\n", "x".repeat((i * 37) % 9000))
}

/// The child's work; a no-op unless run as the child.
#[test]
fn crash_child_burst() {
    let Ok(db) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&db)).expect("child open");
    for i in 0.. {
        // A few keys are rewritten over and over, the rest are new.
        let key = if i % 3 == 0 {
            format!("nodes/n1/qemu-server/{}.conf", i % 5)
        } else {
            format!("burst/{i}.cfg")
        };
        let version = store
            .apply(Op::Put {
                key: key.clone(),
                text: text_for(i),
                expect: Expect::Any,
            })
            .expect("child apply");
        println!("ACK {i} {key} {version}");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("config.db");
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_child_burst",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");

    // Latest acknowledged (step, version) per key.
    let mut acked: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut count = 0;
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child output");
        let Some(rest) = line.strip_prefix("ACK ") else {
            continue;
        };
        let parts: Vec<&str> = rest.split(' ').collect();
        assert_eq!(parts.len(), 3, "{line}");
        let step: usize = parts[0].parse().expect("step");
        let version: u64 = parts[2].parse().expect("version");
        acked.insert(parts[1].to_string(), (step, version));
        count += 1;
        if count == KILL_AFTER && !killed {
            // std's kill() sends SIGKILL on Unix.
            child.kill().expect("kill child");
            killed = true;
        }
    }
    let status = child.wait().expect("wait child");
    assert!(killed, "child ended before it was killed: {status:?}");
    assert!(count >= KILL_AFTER);

    let store = Store::open(&db).expect("reopen");
    let max_acked = acked.values().map(|(_, v)| *v).max().unwrap_or(0);
    assert!(store.applied_index().expect("index") >= max_acked);
    for (key, (step, version)) in &acked {
        let entry = store
            .get(key)
            .expect("get")
            .unwrap_or_else(|| panic!("acknowledged key {key} lost"));
        // The child may have committed one more write after its last ack
        // (killed before printing); a rewritten key may then be newer.
        if entry.version == *version {
            assert_eq!(entry.text, text_for(*step), "{key}");
        } else {
            assert!(entry.version > *version, "{key} went back in time");
        }
    }
    drop(store);

    let conn = rusqlite::Connection::open(&db).expect("open for check");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
}
