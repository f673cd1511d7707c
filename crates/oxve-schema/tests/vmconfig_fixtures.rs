//! VM configs from upstream's qemu-server test data: the parse-config cases
//! (strict and non-strict, expected text or exact error), and a byte-exact
//! round trip of every config upstream's writer produced.

use oxve_schema::vmconfig::{validate_section, VmConfig};
use std::path::{Path, PathBuf};

/// The harness parses every config as `.../qemu-server/8006.conf`.
const VMID: u32 = 8006;

fn test_dir() -> PathBuf {
    oxve_schema::gen::shared_dir().join("pve-fixtures/qemu-server/src/test")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn parse_config_cases() {
    let input = test_dir().join("parse-config-input");
    let expected = test_dir().join("parse-config-expected");
    let mut names: Vec<_> = std::fs::read_dir(&input)
        .unwrap_or_else(|e| panic!("{}: {e}", input.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 10, "upstream has 10 parse-config inputs");
    for name in names {
        let text = std::fs::read_to_string(input.join(&name)).unwrap();
        let want = std::fs::read_to_string(expected.join(&name)).unwrap_or_else(|_| text.clone());

        let (conf, _warnings) = VmConfig::parse(VMID, &text, false)
            .unwrap_or_else(|e| panic!("{name} (non-strict): {}", e.0));
        assert_eq!(conf.write(), want, "{name} (non-strict)");

        let strict_error = std::fs::read_to_string(expected.join(format!("{name}.strict.error")));
        match (VmConfig::parse(VMID, &text, true), strict_error) {
            (Err(e), Ok(want_err)) => assert_eq!(format!("{}\n", e.0), want_err, "{name}"),
            (Ok(_), Ok(want_err)) => panic!("{name}: strict parse passed, want {want_err}"),
            (Err(e), Err(_)) => panic!("{name} (strict): {}", e.0),
            (Ok((conf, warnings)), Err(_)) => {
                assert!(warnings.is_empty(), "{name}");
                assert_eq!(conf.write(), want, "{name} (strict)");
            }
        }
    }
}

fn check_sections(rel: &str, conf: &VmConfig, failures: &mut Vec<String>) {
    let sections = [&conf.main, &conf.pending]
        .into_iter()
        .chain(conf.snapshots.values());
    for section in sections {
        if let Err(e) = validate_section(section) {
            failures.push(format!("{rel}: {e}"));
        }
    }
}

/// The snapshot tests' configs were written by upstream's writer: they
/// round-trip byte for byte, and their options pass the option schema.
#[test]
fn snapshot_configs_round_trip() {
    let mut files = Vec::new();
    files_under(&test_dir().join("snapshot-input"), &mut files);
    files_under(&test_dir().join("snapshot-expected"), &mut files);
    assert!(files.len() >= 90, "expected upstream's snapshot configs");
    let mut failures = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(test_dir())
            .unwrap_or(file)
            .display()
            .to_string();
        let text = std::fs::read_to_string(file).unwrap();
        match VmConfig::parse(VMID, &text, true) {
            Err(e) => failures.push(format!("{rel}: {}", e.0)),
            Ok((conf, _)) if conf.write() != text => {
                failures.push(format!("{rel}: written as\n{}", conf.write()))
            }
            Ok((conf, _)) => check_sections(&rel, &conf, &mut failures),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The text upstream's writer makes of a hand-written config whose values
/// are already canonical: per section the description lines (percent-encoded,
/// trailing empty ones dropped) first, then the options sorted by key.
fn canonical(text: &str) -> String {
    let mut out = String::new();
    for (i, block) in text.trim_end_matches('\n').split("\n\n").enumerate() {
        let mut lines = block.lines().peekable();
        if i > 0 {
            out.push('\n');
            out.push_str(lines.next().unwrap_or(""));
            out.push('\n');
        }
        let (mut descr, mut opts): (Vec<&str>, Vec<&str>) = lines.partition(|l| l.starts_with('#'));
        while descr.last().is_some_and(|l| l[1..].trim().is_empty()) {
            descr.pop();
        }
        for line in descr {
            out.push_str(&line.replace('%', "%25").replace(':', "%3A"));
            out.push('\n');
        }
        opts.sort_by_key(|l| l.split_once(':').map_or(*l, |(k, _)| k));
        for line in opts {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// cfg2cmd's configs are hand-written test inputs with a `# TEST: ...`
/// header whose `:` upstream's writer would encode, often with options out
/// of order. They parse strictly without warnings, pass the option schema,
/// and write back as the canonical form of their text; the ones already
/// canonical round-trip byte for byte.
#[test]
fn cfg2cmd_configs_round_trip() {
    /// Inputs whose writing differs from `canonical` on purpose.
    const SPECIAL: &[(&str, &str, &str)] = &[(
        // Upstream's option pattern keeps the last white-space character
        // of an empty value, so `boot: ` comes back with two spaces.
        "cfg2cmd/bootorder-empty.conf",
        "boot: \n",
        "boot:  \n",
    )];
    let mut files = Vec::new();
    files_under(&test_dir().join("cfg2cmd"), &mut files);
    files.retain(|p| p.extension().is_some_and(|x| x == "conf"));
    assert!(files.len() >= 100, "expected upstream's cfg2cmd configs");
    let mut failures = Vec::new();
    let mut byte_exact = 0;
    for file in &files {
        let rel = file
            .strip_prefix(test_dir())
            .unwrap_or(file)
            .display()
            .to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let (conf, warnings) = match VmConfig::parse(VMID, &text, true) {
            Ok(parsed) => parsed,
            Err(e) => {
                failures.push(format!("{rel}: {}", e.0));
                continue;
            }
        };
        assert!(warnings.is_empty(), "{rel}");
        let mut want = canonical(&text);
        if let Some((_, from, to)) = SPECIAL.iter().find(|(n, _, _)| *n == rel) {
            want = want.replace(from, to);
        }
        let written = conf.write();
        if written == text {
            byte_exact += 1;
        } else if written != want {
            failures.push(format!("{rel}: written as\n{written}\nwant\n{want}"));
        }
        check_sections(&rel, &conf, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        byte_exact >= 4,
        "only {byte_exact} canonical cfg2cmd configs"
    );
}
