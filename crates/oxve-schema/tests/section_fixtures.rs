//! Section-config files from upstream's test fixtures (HA groups and rules,
//! a storage.cfg) parse without warnings and survive a write/parse round
//! trip; tab-indented, comment-free files are reproduced byte for byte.

use oxve_schema::section::SectionConfig;
use std::path::{Path, PathBuf};

fn fixture_files() -> Option<Vec<PathBuf>> {
    let root = oxve_schema::gen::shared_dir().join("pve-fixtures");
    if !root.is_dir() {
        assert!(
            std::env::var("CI").is_err(),
            "{} is missing; CI must have ../shared",
            root.display()
        );
        eprintln!("skipping: {} not found", root.display());
        return None;
    }
    let mut files = vec![root.join("pve-container/src/test/snapshot-input/storage.cfg")];
    let ha = root.join("pve-ha-manager/src/test");
    files.extend(
        std::fs::read_dir(ha.join("rules_cfgs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "cfg")),
    );
    files.extend(
        std::fs::read_dir(&ha)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("groups"))
            .filter(|p| p.is_file()),
    );
    Some(files)
}

fn check(path: &Path) {
    let text = std::fs::read_to_string(path).expect("fixture readable");
    let cfg = SectionConfig::parse(&text);
    assert!(
        cfg.warnings.is_empty(),
        "{}: {:?}",
        path.display(),
        cfg.warnings
    );
    assert!(!cfg.sections.is_empty(), "{}: no sections", path.display());
    let written = cfg.write().expect("writable");
    let again = SectionConfig::parse(&written);
    assert_eq!(again.sections, cfg.sections, "{}", path.display());
    assert_eq!(again.write().expect("writable"), written);
    let canonical = !text.contains('#') && !text.contains("\n ");
    if canonical {
        assert_eq!(written.trim_end(), text.trim_end(), "{}", path.display());
    }
}

#[test]
fn upstream_fixtures_round_trip() {
    let Some(files) = fixture_files() else { return };
    assert!(files.len() > 10, "found only {} fixture files", files.len());
    for file in &files {
        check(file);
    }
}

#[test]
fn storage_cfg_fixture_values() {
    let Some(files) = fixture_files() else { return };
    let text = std::fs::read_to_string(&files[0]).expect("storage.cfg readable");
    let cfg = SectionConfig::parse(&text);
    let local = cfg.get("local").expect("local storage");
    assert_eq!(local.ty, "dir");
    assert_eq!(local.get("path"), Some("/tmp/storage/"));
    assert_eq!(local.get("content"), Some("vztmpl,rootdir,iso,images"));
}
