//! Upstream's `cfg2cmd` fixtures (qemu-server `src/test/cfg2cmd/`): every
//! `NAME.conf` must give exactly `NAME.conf.cmd` (compared line by line as
//! upstream does), or exactly its `EXPECT_ERROR` message. The hidden test
//! environment (QEMU 11.0.0, VMID 8006, storages, CPU models, mocked host
//! values) is rebuilt from `pve-fixtures/_derived/qemu-server/`.
//!
//! Pairs not reached yet are listed in [`PENDING`] with the reason; the
//! test fails when a listed pair passes, so the list stays honest.

use oxve_qemu::cmdline::{
    build, pretty, ChainLink, HostEnv, Paths, PciDevice, PciMapping, SevCapabilities, Version,
    VmInput,
};
use oxve_schema::vmconfig::VmConfig;
use oxve_storage::StorageConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Fixtures this generator does not pass yet, and why.
const PENDING: &[(&str, &str)] = &[];

fn fixtures() -> PathBuf {
    oxve_schema::gen::shared_dir().join("pve-fixtures")
}

/// A `storage.cfg` text equivalent of the parsed storage hash.
fn storage_cfg(parsed: &Value) -> String {
    let mut out = String::new();
    let Some(ids) = parsed["ids"].as_object() else {
        return out;
    };
    for (id, def) in ids {
        let kind = def["type"].as_str().unwrap_or_default();
        out.push_str(&format!("{kind}: {id}\n"));
        if let Some(map) = def.as_object() {
            for (k, v) in map {
                match k.as_str() {
                    "type" => {}
                    "content" => {
                        let list: Vec<&str> = v
                            .as_object()
                            .map(|c| c.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        out.push_str(&format!("\tcontent {}\n", list.join(",")));
                    }
                    _ => {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        out.push_str(&format!("\t{k} {text}\n"));
                    }
                }
            }
        }
        out.push('\n');
    }
    out
}

fn custom_cpu_models(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("cpu-model:") {
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(cur), Some((k, v))) = (&current, line.trim().split_once(' ')) {
            out.entry(cur.clone())
                .or_default()
                .insert(k.to_string(), v.trim().to_string());
        }
    }
    out
}

struct Case {
    name: String,
    conf: BTreeMap<String, String>,
    meta: BTreeMap<String, String>,
}

/// Parses the config as upstream's harness does (VM 8006, not strict): the
/// main section's options, and the harness keys from its description.
fn read_case(name: &str, text: &str) -> Case {
    let (config, _warnings) = VmConfig::parse(8006, text, false)
        .unwrap_or_else(|e| panic!("{name}: the config does not parse: {}", e.0));
    let meta = config
        .main
        .description
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Case {
        name: name.to_string(),
        conf: config.main.props,
        meta,
    }
}

fn environment(case: &Case, json: &Value, cpu_models_conf: &str) -> HostEnv {
    let qemu = case
        .meta
        .get("QEMU_VERSION")
        .map_or("11.0.0", String::as_str);
    let mut firmware_sizes = BTreeMap::new();
    for (file, size) in [
        ("OVMF_VARS_4M.fd", 540_672),
        ("OVMF_VARS_4M.ms.fd", 540_672),
        ("OVMF_SEV_VARS_4M.fd", 540_672),
        ("OVMF32_VARS_4M.fd", 540_672),
        ("OVMF_VARS.fd", 131_072),
        ("AAVMF_VARS.fd", 67_108_864),
        ("AAVMF_VARS.ms.fd", 67_108_864),
    ] {
        firmware_sizes.insert(format!("/usr/share/pve-edk2-firmware//{file}"), size);
    }
    let mocked = &json["mocked_values"];
    let mut volume_chains = BTreeMap::new();
    if let Some(info) = mocked["volume_snapshot_info"].as_object() {
        for (storage, snaps) in info {
            let Some(snaps) = snaps.as_object() else {
                continue;
            };
            let chain: BTreeMap<String, ChainLink> = snaps
                .iter()
                .map(|(snap, v)| {
                    let link = ChainLink {
                        file: v["file"].as_str().unwrap_or_default().to_string(),
                        parent: v["parent"].as_str().map(str::to_string),
                    };
                    (snap.clone(), link)
                })
                .collect();
            // Upstream's mock answers per storage; attach the chain to every
            // volume of that storage in this config.
            for value in case.conf.values() {
                let volid = value.split(',').next().unwrap_or_default();
                if volid.starts_with(&format!("{storage}:")) {
                    volume_chains.insert(volid.to_string(), chain.clone());
                }
            }
        }
    }
    let mut bridge_mtu = BTreeMap::new();
    bridge_mtu.insert("vxlan_bridge".to_string(), 1450);
    HostEnv {
        paths: Paths::default(),
        node: "localhost".into(),
        qemu_version: Version::parse(qemu).expect("QEMU_VERSION"),
        host_arch: case
            .meta
            .get("HOST_ARCH")
            .cloned()
            .unwrap_or_else(|| "x86_64".into()),
        cpu_vendor: case
            .meta
            .get("HOST_CPU_VENDOR")
            .cloned()
            .unwrap_or_else(|| "GenuineIntel".into()),
        cpu_flags: vec!["vmx".into()],
        host_cpus: 512,
        kvm_available: true,
        vhost_net: true,
        iscsi_initiator: Some("iqn.1993-08.org.debian:01:aabbccddeeff".into()),
        host_phys_bits: Some(46),
        storage: StorageConfig::parse(&storage_cfg(&json["storage_config_parsed"])),
        cpu_models: HostEnv::builtin_x86_cpu_models(),
        custom_cpu_models: custom_cpu_models(cpu_models_conf),
        bridge_mtu,
        default_bridge_mtu: 1500,
        cdrom_path: Some("/dev/cdrom".into()),
        device_path_prefixes: vec!["/dev/".into()],
        firmware_sizes,
        volume_chains,
        iscsi_luns: BTreeMap::new(),
        spice_port: 61000,
        spice_addr: "127.0.0.1".into(),
        hugepage_sizes: vec![2, 1024],
        numa_nodes: (0..64).collect(),
        sev: sev_caps(case, json),
        pci_devices: pci_devices(json),
        pci_mappings: pci_mappings(json),
    }
}

/// `HW_CAPABILITIES`: a preset name or raw JSON; default no SEV.
fn sev_caps(case: &Case, json: &Value) -> Option<SevCapabilities> {
    let caps: Value = match case.meta.get("HW_CAPABILITIES") {
        None => json["hw_capabilities_default"].clone(),
        Some(v) => match serde_json::from_str(v) {
            Ok(raw) => raw,
            Err(_) => json["hw_capabilities_presets"][v.to_ascii_lowercase()].clone(),
        },
    };
    let sev = &caps["amd-sev"];
    if sev["sev-support"].as_bool() != Some(true) {
        return None;
    }
    Some(SevCapabilities {
        cbitpos: sev["cbitpos"].as_u64().unwrap_or(0) as u32,
        reduced_phys_bits: sev["reduced-phys-bits"].as_u64().unwrap_or(0) as u32,
        es: sev["sev-support-es"].as_bool() == Some(true),
        snp: sev["sev-support-snp"].as_bool() == Some(true),
    })
}

fn pci_devices(json: &Value) -> Vec<PciDevice> {
    let ids = json["pci_devices_lspci"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ids.iter()
        .filter_map(Value::as_str)
        .map(|id| {
            let mut d = PciDevice {
                id: id.to_string(),
                ..PciDevice::default()
            };
            if id.starts_with("0000:01:00") {
                d.vendor = Some("0x10de".into());
                d.device = Some("0x2231".into());
                d.iommugroup = Some(1);
                d.mdev = true;
            } else if id.starts_with("0000:07:10") {
                d.vendor = Some("0x8086".into());
                d.device = Some("0x1520".into());
                d.iommugroup = Some(2);
            }
            d
        })
        .collect()
}

fn pci_mappings(json: &Value) -> BTreeMap<String, PciMapping> {
    let mut out = BTreeMap::new();
    if let Some(ids) = json["pci_mapping_config_parsed"]["ids"].as_object() {
        for (name, m) in ids {
            let map = m["map"].as_array().cloned().unwrap_or_default();
            out.insert(
                name.clone(),
                PciMapping {
                    map: map
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                    mdev: m["mdev"].as_i64() == Some(1),
                    live_migration_capable: m["live-migration-capable"].as_i64() == Some(1),
                },
            );
        }
    }
    out
}

fn split_lines(text: &str) -> Vec<String> {
    // upstream splits on /\s*\\?\n\s*/
    text.split('\n')
        .map(|l| l.trim().trim_end_matches('\\').trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Runs one case; `Err` says why it failed.
fn run_case(dir: &Path, case: &Case, json: &Value, cpu_models: &str) -> Result<(), String> {
    let env = environment(case, json, cpu_models);
    let vm = VmInput {
        vmid: 8006,
        conf: case.conf.clone(),
    };
    let result = build(&vm, &env);
    if let Some(expect) = case.meta.get("EXPECT_ERROR") {
        return match result {
            Ok(_) => Err(format!("expected error '{expect}', got a command line")),
            Err(e) if e.to_string() == *expect => Ok(()),
            Err(e) => Err(format!("error '{e}' != expected '{expect}'")),
        };
    }
    let generated = result.map_err(|e| format!("unexpected error: {e}"))?;
    for w in &generated.warnings {
        if case.meta.get("EXPECT_WARN") != Some(w) {
            return Err(format!("unexpected warning: {w}"));
        }
    }
    let expected_text = std::fs::read_to_string(dir.join(format!("{}.cmd", case.name)))
        .map_err(|e| format!("no expected output: {e}"))?;
    let expected = split_lines(&expected_text);
    let got = split_lines(&pretty(&generated.args));
    if expected == got {
        return Ok(());
    }
    let mut diff = String::new();
    let n = expected.len().max(got.len());
    for i in 0..n {
        let (e, g) = (expected.get(i), got.get(i));
        if e != g {
            diff.push_str(&format!(
                "  line {i}:\n    -{}\n    +{}\n",
                e.map_or("", |s| s),
                g.map_or("", |s| s)
            ));
            if diff.len() > 3000 {
                break;
            }
        }
    }
    Err(format!("command line differs:\n{diff}"))
}

#[test]
fn cfg2cmd_fixtures() {
    let base = fixtures();
    let dir = base.join("qemu-server/src/test/cfg2cmd");
    let derived = base.join("_derived/qemu-server");
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(derived.join("cfg2cmd-environment.json"))
            .expect("environment json"),
    )
    .expect("environment json parses");
    let cpu_models =
        std::fs::read_to_string(derived.join("cfg2cmd-cpu-models.conf")).expect("cpu models");

    let mut cases = Vec::new();
    for sub in ["", "aarch64/"] {
        let d = dir.join(sub);
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .expect("cfg2cmd dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".conf"))
            .collect();
        names.sort();
        for n in names {
            cases.push((format!("{sub}{n}"), d.clone()));
        }
    }
    assert!(
        cases.len() > 100,
        "too few fixtures found in {}",
        dir.display()
    );

    let pending: BTreeMap<&str, &str> = PENDING.iter().copied().collect();
    let verbose = std::env::var_os("CFG2CMD_VERBOSE").is_some();
    let mut problems = Vec::new();
    let mut passed = 0;
    for (full, d) in &cases {
        let file = full.rsplit('/').next().unwrap_or(full);
        let text = std::fs::read_to_string(d.join(file)).expect("conf");
        let case = read_case(file, &text);
        let key = full.trim_end_matches(".conf");
        let outcome = run_case(d, &case, &json, &cpu_models);
        match (outcome, pending.get(key)) {
            (Ok(()), None) => passed += 1,
            (Ok(()), Some(_)) => {
                problems.push(format!("{key}: passes now, remove it from PENDING"))
            }
            (Err(e), None) => problems.push(format!("{key}: {e}")),
            (Err(e), Some(reason)) => {
                if verbose {
                    println!("pending {key} ({reason}): {e}");
                }
            }
        }
    }
    println!(
        "cfg2cmd: {passed} of {} fixtures pass, {} pending",
        cases.len(),
        pending.len()
    );
    for key in pending.keys() {
        if !cases
            .iter()
            .any(|(c, _)| c.trim_end_matches(".conf") == *key)
        {
            problems.push(format!("{key}: listed in PENDING but no such fixture"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
