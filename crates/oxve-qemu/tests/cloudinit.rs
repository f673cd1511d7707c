//! Golden tests of the cloud-init seeds. Each directory under
//! `tests/cloudinit/` holds a VM config (`config`, rendered as VM 105),
//! optionally the host's `resolv.conf`, and under `expected/` every file
//! the seed must hold. The expected texts were written from upstream's
//! `PVE::QemuServer::Cloudinit` by hand (its string building, followed
//! line by line), the instance ids computed with Python's `hashlib` over
//! those texts — not produced by this code. `snippets/` is the `local`
//! storage's snippet directory (`local:snippets/<name>`).

use oxve_qemu::cloudinit::{self, CiType, DumpKind, HostDns, Seed};
use oxve_schema::vmconfig::{VmConfig, VmSection};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cloudinit")
}

fn snippet(volid: &str) -> Result<PathBuf, String> {
    match volid.strip_prefix("local:snippets/") {
        Some(name) => Ok(dir().join("snippets").join(name)),
        None => Err(format!("{volid} is not in the snippets directory")),
    }
}

fn load(case: &Path) -> (VmSection, HostDns) {
    let text = std::fs::read_to_string(case.join("config")).unwrap();
    let (conf, warnings) = VmConfig::parse(105, &text, true).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let dns = std::fs::read_to_string(case.join("resolv.conf"))
        .map(|t| HostDns::parse_resolv_conf(&t))
        .unwrap_or_default();
    (conf.main, dns)
}

fn expected_files(root: &Path, sub: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(root.join(sub)).unwrap() {
        let e = e.unwrap();
        let rel = sub.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            expected_files(root, &rel, out);
        } else {
            out.push(rel.display().to_string());
        }
    }
}

#[test]
fn golden_seeds() {
    let mut cases = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let case = entry.unwrap().path();
        if !case.join("config").exists() {
            continue;
        }
        cases += 1;
        let (section, dns) = load(&case);
        let seed = cloudinit::render(105, &section, &dns, &snippet).unwrap();
        let expected = case.join("expected");
        let mut want = Vec::new();
        expected_files(&expected, Path::new(""), &mut want);
        want.sort();
        let mut got: Vec<String> = seed.files.iter().map(|(p, _)| p.to_string()).collect();
        got.sort();
        assert_eq!(got, want, "{}", case.display());
        for (path, content) in &seed.files {
            let text = std::fs::read_to_string(expected.join(path)).unwrap();
            assert_eq!(content, &text, "{}: {path}", case.display());
        }
    }
    assert_eq!(cases, 6);
}

fn section(pairs: &[(&str, &str)]) -> VmSection {
    VmSection {
        description: String::new(),
        props: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn formats_and_labels() {
    assert_eq!(CiType::of(&section(&[])).unwrap(), CiType::NoCloud);
    assert_eq!(
        CiType::of(&section(&[("ostype", "win10")])).unwrap(),
        CiType::ConfigDrive2
    );
    assert_eq!(
        CiType::of(&section(&[("ostype", "win10"), ("citype", "nocloud")])).unwrap(),
        CiType::NoCloud
    );
    assert_eq!(CiType::NoCloud.label(), "cidata");
    assert_eq!(CiType::ConfigDrive2.label(), "config-2");
}

#[test]
fn changed_vendor_snippet_changes_the_instance_id() {
    let tmp = std::env::temp_dir().join(format!("oxve-ci-vendor-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let vendor = tmp.join("vendor.yaml");
    let resolve = |_: &str| Ok(vendor.clone());
    let s = section(&[
        ("cicustom", "vendor=local:snippets/vendor.yaml"),
        ("name", "a"),
    ]);
    let dns = HostDns::default();
    std::fs::write(&vendor, "#cloud-config\npackages: [a]\n").unwrap();
    let one = cloudinit::render(1, &s, &dns, &resolve).unwrap();
    std::fs::write(&vendor, "#cloud-config\npackages: [b]\n").unwrap();
    let two = cloudinit::render(1, &s, &dns, &resolve).unwrap();
    std::fs::remove_dir_all(&tmp).unwrap();
    assert_ne!(one.file("meta-data"), two.file("meta-data"));
    assert_eq!(one.file("user-data"), two.file("user-data"));
}

#[test]
fn dump_shows_the_drives_instance_id_and_masks_the_password() {
    let case = dir().join("cicustom");
    let (s, dns) = load(&case);
    let seed = cloudinit::render(105, &s, &dns, &snippet).unwrap();
    let meta = cloudinit::dump(105, &s, &dns, DumpKind::Meta, false, &snippet).unwrap();
    assert_eq!(Some(meta.as_str()), seed.file("meta-data"));
    // The generated user data, not the snippet.
    let user = cloudinit::dump(105, &s, &dns, DumpKind::User, false, &snippet).unwrap();
    assert!(
        user.starts_with("#cloud-config\nhostname: custom\n"),
        "{user}"
    );

    let (s, dns) = load(&dir().join("nocloud-basic"));
    let masked = cloudinit::dump(105, &s, &dns, DumpKind::User, true, &snippet).unwrap();
    assert!(masked.contains("password: **********\n"), "{masked}");
    assert!(!masked.contains("$5$"));
    let net = cloudinit::dump(105, &s, &dns, DumpKind::Network, false, &snippet).unwrap();
    assert!(net.starts_with("version: 1\n"));
}

#[test]
fn errors_name_the_problem() {
    let dns = HostDns::default();
    let s = section(&[("cicustom", "user=nosuch:snippets/u.yaml")]);
    let e = cloudinit::render(1, &s, &dns, &snippet).unwrap_err();
    assert_eq!(
        e.to_string(),
        "nosuch:snippets/u.yaml is not in the snippets directory"
    );
    let s = section(&[("cicustom", "user=local:snippets/missing.yaml")]);
    let e = cloudinit::render(1, &s, &dns, &snippet).unwrap_err();
    assert!(e.to_string().starts_with("unable to open file"), "{e}");
    let s = section(&[("net0", "virtio,bridge=vmbr0"), ("ipconfig0", "ip=dhcp")]);
    let e = cloudinit::render(1, &s, &dns, &snippet).unwrap_err();
    assert_eq!(e.to_string(), "network interface 'net0' has no mac address");
}

/// The label in an ISO's primary volume descriptor.
fn iso_label(iso: &[u8]) -> String {
    String::from_utf8_lossy(&iso[0x8028..0x8048])
        .trim_end()
        .to_string()
}

fn tool(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var("CI").is_err(),
        "{name} is not installed (scripts/install-deps.sh)"
    );
    found
}

#[test]
fn iso_written_into_a_qcow2_volume() {
    if !tool("genisoimage") || !tool("qemu-img") {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("oxve-ci-iso-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for ci in [CiType::NoCloud, CiType::ConfigDrive2] {
        let seed = Seed {
            ci_type: ci,
            files: vec![("user-data", "#cloud-config\n".into())],
        };
        let iso = tmp.join("seed.iso");
        cloudinit::build_iso(&seed, &tmp.join("scratch"), &iso).unwrap();
        assert!(!tmp.join("scratch").exists());
        let vol = tmp.join("vm-1-cloudinit.qcow2");
        let created = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&vol)
            .arg("4M")
            .status()
            .unwrap();
        assert!(created.success());
        let image = std::fs::read(&iso).unwrap();
        cloudinit::write_volume(&iso, &vol, "qcow2", cloudinit::DISK_SIZE).unwrap();
        let back = tmp.join("back.raw");
        let converted = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&vol)
            .arg(&back)
            .status()
            .unwrap();
        assert!(converted.success());
        let raw = std::fs::read(&back).unwrap();
        assert_eq!(raw.len() as u64, cloudinit::DISK_SIZE);
        assert_eq!(&raw[..image.len()], &image[..]);
        assert_eq!(iso_label(&raw), ci.label());
        for f in [&iso, &vol, &back] {
            std::fs::remove_file(f).unwrap();
        }
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
