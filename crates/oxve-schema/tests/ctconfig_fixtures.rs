//! CT configs written by upstream (its snapshot test data) parse and write
//! back byte for byte, and their options pass the CT option schema.

use oxve_schema::ctconfig::{validate_section, CtConfig};
use std::path::{Path, PathBuf};

fn conf_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            conf_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "conf")
            && p.parent().is_some_and(|d| d.ends_with("lxc"))
        {
            out.push(p);
        }
    }
}

#[test]
fn upstream_ct_configs_round_trip() {
    let base = oxve_schema::gen::shared_dir().join("pve-fixtures/pve-container/src/test");
    let mut files = Vec::new();
    conf_files(&base, &mut files);
    assert!(
        files.len() >= 80,
        "expected upstream's CT snapshot configs under {}",
        base.display()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let (conf, warnings) =
            CtConfig::parse(&text, true).unwrap_or_else(|e| panic!("{}: {}", file.display(), e.0));
        assert!(warnings.is_empty());
        assert_eq!(conf.write(), text, "{}", file.display());
        for section in std::iter::once(&conf.main).chain(conf.snapshots.values()) {
            // Upstream's snapshot data still says `ostype: redhat`, a value
            // its schema dropped (its parser checks types, not enumerations).
            let mut section = section.clone();
            if section.get("ostype") == Some("redhat") {
                section.props.remove("ostype");
            }
            if let Err(e) = validate_section(&section) {
                panic!("{}: {e}", file.display());
            }
        }
    }
}

#[test]
fn setup_fixture_configs_parse() {
    let base = oxve_schema::gen::shared_dir().join("pve-fixtures/pve-container/src/test");
    let mut n = 0;
    for e in std::fs::read_dir(&base).unwrap().flatten() {
        let config = e.path().join("config");
        if !config.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&config).unwrap();
        let (conf, _) = CtConfig::parse(&text, true)
            .unwrap_or_else(|e| panic!("{}: {}", config.display(), e.0));
        validate_section(&conf.main).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        n += 1;
    }
    assert!(n >= 30);
}
