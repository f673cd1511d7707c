//! Upstream's disk listing tests (pve-storage `src/test/disk_tests/<case>/`,
//! run by `run_disk_tests.pl`): for every case, the disk list, the list
//! filtered by all names and by each name, and the S.M.A.R.T. data of every
//! disk with a `<dev>_smart_expected.json` must match.
//!
//! Values compare as upstream's `is_deeply` does: same keys, same nesting,
//! `null` only where `null` is expected, and scalars equal by their string
//! form. The expected files are hand-written for that comparison and type
//! the same field inconsistently (`"wearout": "97"` for ATA SSDs next to
//! `"wearout": 69` for NVMe; `"osdid": "444"` next to `"osdid": 1`), while
//! oxve sends the numbers the API schema declares. Every such number/string
//! pair is printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oxve_disks::{get_disks, get_smart_data, FixtureHost};
use serde_json::Value;

fn disk_tests() -> Option<PathBuf> {
    let shared = std::env::var_os("OXVE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = shared.join("pve-fixtures/pve-storage/src/test/disk_tests");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").is_err(),
        "{} is missing; CI must have ../shared",
        dir.display()
    );
    eprintln!("skipping: {} not found", dir.display());
    None
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Differences between `got` and `expected` under `is_deeply` rules, as
/// `path: got vs expected` lines; number/string pairs that are equal as
/// strings go to `retyped`.
fn compare(
    path: &str,
    got: &Value,
    expected: &Value,
    diffs: &mut Vec<String>,
    retyped: &mut Vec<String>,
) {
    match (got, expected) {
        (Value::Object(g), Value::Object(e)) => {
            for key in g.keys().filter(|k| !e.contains_key(*k)) {
                diffs.push(format!("{path}/{key}: unexpected {}", g[key]));
            }
            for (key, e_value) in e {
                match g.get(key) {
                    Some(g_value) => {
                        compare(&format!("{path}/{key}"), g_value, e_value, diffs, retyped)
                    }
                    None => diffs.push(format!("{path}/{key}: missing, expected {e_value}")),
                }
            }
        }
        (Value::Array(g), Value::Array(e)) if g.len() == e.len() => {
            for (i, (g_item, e_item)) in g.iter().zip(e).enumerate() {
                compare(&format!("{path}/{i}"), g_item, e_item, diffs, retyped);
            }
        }
        (Value::Number(_) | Value::String(_), Value::Number(_) | Value::String(_)) => {
            if got == expected {
                return;
            }
            let as_string = |v: &Value| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if as_string(got) == as_string(expected) {
                retyped.push(format!("{path}: {got} for {expected}"));
            } else {
                diffs.push(format!("{path}: {got} vs expected {expected}"));
            }
        }
        _ if got == expected => {}
        _ => diffs.push(format!("{path}: {got} vs expected {expected}")),
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serializable")
}

#[test]
fn every_upstream_disk_case_matches() {
    let Some(dir) = disk_tests() else { return };
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("disk_tests readable")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 7, "upstream has 7 disk test cases");

    let (mut diffs, mut retyped) = (Vec::new(), Vec::new());
    let mut smart_checked = 0;
    for case in &cases {
        let name = case
            .file_name()
            .expect("case name")
            .to_string_lossy()
            .into_owned();
        let host = FixtureHost::new(case);
        let expected = read_json(&case.join("disklist_expected.json"));
        let expected_map = expected.as_object().expect("disk list is an object");

        let all = get_disks(&host, None, false).expect("disk list");
        compare(
            &format!("{name} list"),
            &to_value(&all),
            &expected,
            &mut diffs,
            &mut retyped,
        );

        let names: Vec<String> = expected_map.keys().cloned().collect();
        let filtered = get_disks(&host, Some(&names), false).expect("disk list");
        compare(
            &format!("{name} list[all]"),
            &to_value(&filtered),
            &expected,
            &mut diffs,
            &mut retyped,
        );

        for (disk, expected_disk) in expected_map {
            let one: BTreeMap<_, _> =
                get_disks(&host, Some(std::slice::from_ref(disk)), false).expect("disk list");
            if one.len() != 1 {
                diffs.push(format!("{name} list[{disk}]: {} entries", one.len()));
            }
            let got = one.get(disk).map(to_value).unwrap_or(Value::Null);
            compare(
                &format!("{name} list[{disk}]/{disk}"),
                &got,
                expected_disk,
                &mut diffs,
                &mut retyped,
            );

            let smart_expected = case.join(format!("{disk}_smart_expected.json"));
            if smart_expected.is_file() {
                smart_checked += 1;
                let smart =
                    get_smart_data(&host, &format!("/dev/{disk}"), false).expect("smart data");
                compare(
                    &format!("{name} smart {disk}"),
                    &to_value(&smart),
                    &read_json(&smart_expected),
                    &mut diffs,
                    &mut retyped,
                );
            }
        }
    }

    for line in &retyped {
        eprintln!("number for numeric string: {line}");
    }
    assert_eq!(smart_checked, 10, "upstream has 10 smart expectations");
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn partitions_are_listed_when_asked() {
    let Some(dir) = disk_tests() else { return };
    let host = FixtureHost::new(dir.join("usages"));
    let list = get_disks(&host, None, true).expect("disk list");

    let sdd1 = to_value(&list["sdd1"]);
    assert_eq!(sdd1["type"], "partition");
    assert_eq!(sdd1["parent"], "/dev/sdd");
    assert_eq!(sdd1["devpath"], "/dev/sdd1");
    assert_eq!(sdd1["size"], 512_000);
    assert_eq!(sdd1["used"], "ZFS");
    assert_eq!(to_value(&list["sdm9"])["used"], "ZFS reserved");

    let sdf1 = to_value(&list["sdf1"]);
    assert_eq!(sdf1["osdid"], 444);
    assert_eq!(sdf1["mounted"], 1);
    // Partitions have holders in this fixture, so an unclaimed one is held.
    assert_eq!(to_value(&list["sde1"])["used"], "Device Mapper");

    // With partitions shown, a partitioned disk is just "partitions".
    assert_eq!(list["sdd"].used.as_deref(), Some("partitions"));
    assert_eq!(list["sdb"].used.as_deref(), Some("LVM"));

    // A partition name selects its disk and all of the disk's partitions.
    let by_part = get_disks(&host, Some(&["sdm9".to_string()]), true).expect("disk list");
    assert_eq!(by_part.keys().collect::<Vec<_>>(), ["sdm", "sdm1", "sdm9"]);
}

#[test]
fn skipping_smart_leaves_health_unknown() {
    let Some(dir) = disk_tests() else { return };
    let host = FixtureHost::new(dir.join("nvme_smart"));
    let options = oxve_disks::ListOptions {
        skip_smart: true,
        ..Default::default()
    };
    let list = oxve_disks::list_disks(&host, &options).expect("disk list");
    let nvme = to_value(&list["nvme0n1"]);
    assert_eq!(nvme["health"], "UNKNOWN");
    assert_eq!(nvme["wearout"], "N/A");
}
