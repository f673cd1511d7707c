use super::*;
use std::time::Duration;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("sub/dir/config.db")).expect("open");
    (dir, store)
}

fn put(key: &str, text: &str, expect: Expect) -> Op {
    Op::Put {
        key: key.into(),
        text: text.into(),
        expect,
    }
}

#[test]
fn put_get_versions_grow() {
    let (_d, s) = store();
    assert_eq!(s.get("user.cfg").unwrap(), None);
    let v1 = s.apply(put("user.cfg", "a\n", Expect::Absent)).unwrap();
    let v2 = s.apply(put("storage.cfg", "b\n", Expect::Any)).unwrap();
    let v3 = s
        .apply(put("user.cfg", "c\n", Expect::Version(v1)))
        .unwrap();
    assert!(v1 < v2 && v2 < v3);
    let e = s.get("user.cfg").unwrap().unwrap();
    assert_eq!((e.text.as_str(), e.version), ("c\n", v3));
    assert_eq!(e.digest(), crate::digest("c\n"));
    assert!(e.mtime > 0);
    assert_eq!(s.applied_index().unwrap(), v3);
}

#[test]
fn failed_expectation_changes_nothing() {
    let (_d, s) = store();
    let v1 = s.apply(put("user.cfg", "a", Expect::Absent)).unwrap();
    let err = s.apply(put("user.cfg", "b", Expect::Absent)).unwrap_err();
    assert!(matches!(
        &err,
        ConfigError::VersionMismatch { key, expected: Expect::Absent, found: Some(v) }
            if key == "user.cfg" && *v == v1
    ));
    assert!(err.to_string().contains("'user.cfg'"), "{err}");
    let err = s
        .apply(put("user.cfg", "b", Expect::Version(v1 + 7)))
        .unwrap_err();
    assert!(matches!(err, ConfigError::VersionMismatch { .. }));
    let err = s
        .apply(Op::Delete {
            key: "user.cfg".into(),
            expect: Expect::Version(0),
        })
        .unwrap_err();
    assert!(matches!(err, ConfigError::VersionMismatch { .. }));
    let err = s.apply(put("x.cfg", "b", Expect::Version(1))).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::VersionMismatch { found: None, .. }
    ));
    assert_eq!(s.get("user.cfg").unwrap().unwrap().text, "a");
    assert_eq!(s.applied_index().unwrap(), v1);
}

#[test]
fn delete_and_recreate_never_reuses_a_version() {
    let (_d, s) = store();
    let v1 = s.apply(put("a.cfg", "1", Expect::Any)).unwrap();
    let v2 = s
        .apply(Op::Delete {
            key: "a.cfg".into(),
            expect: Expect::Version(v1),
        })
        .unwrap();
    assert_eq!(s.get("a.cfg").unwrap(), None);
    let err = s
        .apply(Op::Delete {
            key: "a.cfg".into(),
            expect: Expect::Any,
        })
        .unwrap_err();
    assert!(matches!(err, ConfigError::NotFound { .. }));
    let v3 = s.apply(put("a.cfg", "2", Expect::Absent)).unwrap();
    assert!(v1 < v2 && v2 < v3);
}

#[test]
fn rename_moves_text_and_refuses_to_overwrite() {
    let (_d, s) = store();
    let from = "nodes/pve1/qemu-server/100.conf";
    let to = "nodes/pve2/qemu-server/100.conf";
    let v1 = s.apply(put(from, "memory: 512\n", Expect::Absent)).unwrap();
    let v2 = s
        .apply(Op::Rename {
            from: from.into(),
            to: to.into(),
            expect: Expect::Version(v1),
        })
        .unwrap();
    assert_eq!(s.get(from).unwrap(), None);
    let e = s.get(to).unwrap().unwrap();
    assert_eq!((e.text.as_str(), e.version), ("memory: 512\n", v2));

    s.apply(put(from, "other", Expect::Absent)).unwrap();
    let err = s
        .apply(Op::Rename {
            from: from.into(),
            to: to.into(),
            expect: Expect::Any,
        })
        .unwrap_err();
    assert!(matches!(err, ConfigError::AlreadyExists { .. }));
    let err = s
        .apply(Op::Rename {
            from: "nope.cfg".into(),
            to: "new.cfg".into(),
            expect: Expect::Any,
        })
        .unwrap_err();
    assert!(matches!(err, ConfigError::NotFound { .. }));
    assert_eq!(s.get(from).unwrap().unwrap().text, "other");
}

#[test]
fn invalid_keys_are_refused() {
    let (_d, s) = store();
    assert!(matches!(
        s.apply(put("/etc/pve/user.cfg", "", Expect::Any)),
        Err(ConfigError::InvalidKey { .. })
    ));
    assert!(matches!(
        s.get("nodes/../user.cfg"),
        Err(ConfigError::InvalidKey { .. })
    ));
}

#[test]
fn list_by_prefix() {
    let (_d, s) = store();
    for k in [
        "nodes/pve1/qemu-server/100.conf",
        "nodes/pve1/lxc/101.conf",
        "nodes/pve10/qemu-server/102.conf",
        "user.cfg",
    ] {
        s.apply(put(k, "äb", Expect::Any)).unwrap();
    }
    let keys: Vec<String> = s
        .list("nodes/pve1/")
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        keys,
        ["nodes/pve1/lxc/101.conf", "nodes/pve1/qemu-server/100.conf"]
    );
    let all = s.list("").unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].size, 3, "size counts bytes");
}

#[test]
fn update_retries_and_keeps_unchanged() {
    let (_d, s) = store();
    let v = s
        .update::<ConfigError>("user.cfg", |old| {
            assert_eq!(old, None);
            Ok(Some("one\n".into()))
        })
        .unwrap();
    assert!(v.is_some());
    // A writer sneaks in during the first call: f runs again on fresh text.
    let mut calls = 0;
    let v2 = s
        .update::<ConfigError>("user.cfg", |old| {
            calls += 1;
            if calls == 1 {
                s.apply(put("user.cfg", "two\n", Expect::Any)).unwrap();
            }
            Ok(Some(format!("{}three\n", old.unwrap_or(""))))
        })
        .unwrap();
    assert_eq!(calls, 2);
    assert_eq!(s.get("user.cfg").unwrap().unwrap().text, "two\nthree\n");
    let same = s
        .update::<ConfigError>("user.cfg", |old| Ok(old.map(String::from)))
        .unwrap();
    assert_eq!(same, v2);
    assert_eq!(
        s.update::<ConfigError>("missing.cfg", |_| Ok(None))
            .unwrap(),
        None
    );
}

#[test]
fn locks_expire_and_renew() {
    let (_d, s) = store();
    // Long enough that no step of a loaded machine outlives it; only the
    // expiry step uses a short one.
    let ttl = Duration::from_secs(60);
    let short = Duration::from_millis(100);
    assert!(s.lock("vmid-100", "a", ttl).unwrap());
    assert!(s.lock("vmid-100", "a", ttl).unwrap(), "renew by owner");
    assert!(!s.lock("vmid-100", "b", ttl).unwrap());
    assert!(
        !s.unlock("vmid-100", "b").unwrap(),
        "only the owner unlocks"
    );
    assert!(s.lock("vmid-100", "a", short).unwrap(), "renew, shorter");
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.lock("vmid-100", "b", ttl).unwrap(), "expired: taken over");
    assert!(!s.lock("vmid-100", "a", ttl).unwrap());
    assert!(s.unlock("vmid-100", "b").unwrap());
    assert!(s.lock("vmid-100", "a", ttl).unwrap());
    assert!(s.lock("other", "b", ttl).unwrap(), "locks are independent");
    assert!(matches!(
        s.lock("", "a", ttl),
        Err(ConfigError::InvalidLock { .. })
    ));
}

#[test]
fn subscribers_see_committed_changes() {
    let (_d, s) = store();
    let mut rx = s.subscribe();
    let v1 = s.apply(put("a.cfg", "1", Expect::Any)).unwrap();
    let _ = s.apply(put("a.cfg", "2", Expect::Absent));
    let v2 = s
        .apply(Op::Rename {
            from: "a.cfg".into(),
            to: "b.cfg".into(),
            expect: Expect::Any,
        })
        .unwrap();
    let v3 = s
        .apply(Op::Delete {
            key: "b.cfg".into(),
            expect: Expect::Any,
        })
        .unwrap();
    let got: Vec<Change> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(
        got,
        [
            Change {
                key: "a.cfg".into(),
                version: v1,
                kind: ChangeKind::Put
            },
            Change {
                key: "b.cfg".into(),
                version: v2,
                kind: ChangeKind::Rename {
                    from: "a.cfg".into()
                }
            },
            Change {
                key: "b.cfg".into(),
                version: v3,
                kind: ChangeKind::Delete
            },
        ]
    );
}

#[test]
fn reopen_keeps_data_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    let v = {
        let s = Store::open(&path).unwrap();
        s.apply(put("user.cfg", "x", Expect::Any)).unwrap()
    };
    let s = Store::open(&path).unwrap();
    assert_eq!(s.applied_index().unwrap(), v);
    assert_eq!(s.get("user.cfg").unwrap().unwrap().version, v);
    let mode: String = s
        .conn()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = s
        .conn()
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
}

#[test]
fn op_serializes() {
    let op = Op::Rename {
        from: "a".into(),
        to: "b".into(),
        expect: Expect::Version(3),
    };
    let json = serde_json::to_string(&op).unwrap();
    let back: Op = serde_json::from_str(&json).unwrap();
    assert_eq!(back, op);
}

#[test]
fn store_is_shareable() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<Store>();
}
