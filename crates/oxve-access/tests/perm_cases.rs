//! Upstream's permission test cases (pve-access-control perm-test1..8):
//! every row of `_derived/pve-access-control/perm-cases.tsv` must match.

use oxve_access::acl;
use oxve_access::usercfg::UserConfig;
use oxve_access::userid::Authid;
use std::path::PathBuf;

fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("OXVE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    if dir.join("pve-fixtures").is_dir() {
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

#[test]
fn every_upstream_permission_case_matches() {
    let Some(shared) = shared() else { return };
    let fixtures = shared.join("pve-fixtures");
    let cases =
        std::fs::read_to_string(fixtures.join("_derived/pve-access-control/perm-cases.tsv"))
            .unwrap();
    let mut failures = Vec::new();
    let mut n = 0;
    for line in cases.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, check, user, path, expected) = (
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols.get(4).copied().unwrap_or(""),
        );
        let text = std::fs::read_to_string(fixtures.join("pve-access-control/src/test").join(file))
            .unwrap();
        let cfg = UserConfig::parse(&text).unwrap();
        let authid = Authid::parse(user).unwrap();
        let got: Vec<String> = match check {
            "roles" => acl::roles(&cfg, &authid, path).into_keys().collect(),
            "permissions" => acl::privileges(&cfg, &authid, path, 0)
                .into_iter()
                .collect(),
            other => panic!("unknown check {other}"),
        };
        let got = got.join(",");
        n += 1;
        if got != expected {
            failures.push(format!(
                "{file} {check} {user} {path}: expected '{expected}', got '{got}'"
            ));
        }
    }
    assert_eq!(n, 100);
    assert!(
        failures.is_empty(),
        "{} of {n} cases fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixture_files_round_trip() {
    let Some(shared) = shared() else { return };
    let dir = shared.join("pve-fixtures/pve-access-control/src/test");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = UserConfig::parse(&text).unwrap();
        let again = UserConfig::parse(&cfg.write()).unwrap();
        assert_eq!(cfg.users, again.users, "{}", path.display());
        assert_eq!(cfg.groups, again.groups, "{}", path.display());
        assert_eq!(cfg.roles, again.roles, "{}", path.display());
        assert_eq!(cfg.pools, again.pools, "{}", path.display());
        assert_eq!(cfg.acl, again.acl, "{}", path.display());
        // Written form is a fixed point.
        assert_eq!(again.write(), cfg.write(), "{}", path.display());
    }
}
