//! The real host as the command-line generator needs it: QEMU's version,
//! whether KVM can run a guest, the CPU, devices and firmware. The daemon
//! probes QEMU once and reads the rest for every start (it is cheap and
//! may change: hugepages, PCI devices).

use crate::cmdline::{HostEnv, Paths, PciDevice, Version};
use oxve_storage::config::StorageConfig;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The QEMU binary of x86_64 guests.
pub const QEMU_X86_64: &str = "qemu-system-x86_64";

/// What running QEMU once tells about it and the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuProbe {
    pub version: Version,
    /// `None`: KVM runs guests; `Some(reason)`: it does not, guests run
    /// under TCG.
    pub kvm_unusable: Option<String>,
}

/// Runs `binary --version` and a KVM trial: QEMU with `-accel kvm` and a
/// CPU model every KVM host supports (`kvm64`) in `enforce` mode, stopped
/// before the first instruction and quit over QMP on stdin. A `/dev/kvm`
/// that opens but cannot provide that CPU (nested virtualisation without
/// the features, where guests hang) counts as unusable.
pub fn probe(binary: &str) -> Result<QemuProbe, String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run '{binary}': {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text).ok_or_else(|| {
        format!(
            "cannot read the version of '{binary}' from '{}'",
            text.trim()
        )
    })?;
    Ok(QemuProbe {
        version,
        kvm_unusable: kvm_trial(binary).err(),
    })
}

/// `QEMU emulator version 10.0.2 (Debian ...)` → 10.0.2.
pub fn parse_version(text: &str) -> Option<Version> {
    let rest = text.split("version ").nth(1)?;
    let v = rest.split(|c: char| c.is_whitespace() || c == '(').next()?;
    Version::parse(v)
}

fn kvm_trial(binary: &str) -> Result<(), String> {
    if !Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm does not exist".into());
    }
    let mut child = Command::new(binary)
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "kvm64,enforce",
            "-machine",
            "pc",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-qmp",
            "stdio",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run '{binary}': {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(br#"{"execute":"qmp_capabilities"}{"execute":"quit"}"#);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("KVM trial: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaint = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim_start_matches(&format!("{binary}: ")).to_string());
    match (out.status.success(), complaint) {
        (true, None) => Ok(()),
        (_, Some(c)) => Err(c),
        (false, None) => Err(format!("QEMU with KVM exited with {}", out.status)),
    }
}

/// Fields of `/proc/cpuinfo` (first CPU).
struct CpuInfo {
    vendor: String,
    flags: Vec<String>,
    phys_bits: Option<u32>,
}

fn cpuinfo() -> CpuInfo {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    CpuInfo {
        vendor: field("vendor_id").unwrap_or_default(),
        flags: field("flags")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        // `address sizes : 48 bits physical, 48 bits virtual`
        phys_bits: field("address sizes")
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok())),
    }
}

/// Host PCI devices from sysfs.
pub fn pci_devices() -> Vec<PciDevice> {
    let Ok(dir) = std::fs::read_dir("/sys/bus/pci/devices") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        let read = |f: &str| {
            std::fs::read_to_string(path.join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        let iommugroup = std::fs::read_link(path.join("iommu_group"))
            .ok()
            .and_then(|l| l.file_name()?.to_str()?.parse().ok());
        let vendor = read("vendor");
        let mdev = path.join("mdev_supported_types").is_dir();
        let nvidia = mdev
            && std::fs::read_dir(path.join("mdev_supported_types"))
                .map(|d| {
                    d.flatten()
                        .any(|t| t.file_name().to_string_lossy().starts_with("nvidia-"))
                })
                .unwrap_or(false);
        out.push(PciDevice {
            id: entry.file_name().to_string_lossy().into_owned(),
            vendor,
            device: read("device"),
            iommugroup,
            mdev,
            nvidia,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Sizes of the firmware images in `dir` (for the EFI disk size check).
fn firmware_sizes(dir: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(meta) = e.metadata() {
                // The generator joins directory and file with a slash.
                out.insert(
                    format!("{dir}/{}", e.file_name().to_string_lossy()),
                    meta.len(),
                );
            }
        }
    }
    out
}

fn hugepage_sizes() -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let kib: u32 = name
                        .strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()?;
                    Some(kib / 1024)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

fn numa_nodes() -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir("/sys/devices/system/node")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// The iSCSI initiator name of open-iscsi, if configured.
fn iscsi_initiator() -> Option<String> {
    std::fs::read_to_string("/etc/iscsi/initiatorname.iscsi")
        .ok()?
        .lines()
        .find_map(|l| l.trim().strip_prefix("InitiatorName="))
        .map(str::to_string)
}

/// The host as the generator sees it. Bridge MTUs, volume chains and
/// custom CPU models are the caller's to add (they need the node's
/// network namespace and storages).
pub fn host_env(node: &str, probe: &QemuProbe, storage: StorageConfig, paths: Paths) -> HostEnv {
    let cpu = cpuinfo();
    HostEnv {
        node: node.to_string(),
        qemu_version: probe.version,
        host_arch: std::env::consts::ARCH.to_string(),
        cpu_vendor: cpu.vendor,
        cpu_flags: cpu.flags,
        host_cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        kvm_available: probe.kvm_unusable.is_none(),
        vhost_net: Path::new("/dev/vhost-net").exists(),
        iscsi_initiator: iscsi_initiator(),
        host_phys_bits: cpu.phys_bits,
        storage,
        cpu_models: HostEnv::builtin_x86_cpu_models(),
        custom_cpu_models: BTreeMap::new(),
        bridge_mtu: BTreeMap::new(),
        default_bridge_mtu: 1500,
        cdrom_path: Path::new("/dev/cdrom")
            .exists()
            .then(|| "/dev/cdrom".to_string()),
        device_path_prefixes: vec!["/dev/".into()],
        firmware_sizes: firmware_sizes(&paths.firmware_dir),
        volume_chains: BTreeMap::new(),
        iscsi_luns: BTreeMap::new(),
        spice_port: 61000,
        spice_addr: "127.0.0.1".into(),
        hugepage_sizes: hugepage_sizes(),
        numa_nodes: numa_nodes(),
        pci_devices: pci_devices(),
        sev: None,
        pci_mappings: BTreeMap::new(),
        paths,
    }
}

/// A versioned machine type of the QEMU build (`pc-q35-10.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineType {
    /// The full name.
    pub id: String,
    /// `i440fx` or `q35`.
    pub kind: &'static str,
    /// `10.0`.
    pub version: String,
}

/// The versioned i440fx and q35 machine types in `-machine help` output.
pub fn parse_machine_types(text: &str) -> Vec<MachineType> {
    text.lines()
        .filter_map(|line| {
            let id = line.split_whitespace().next()?;
            let (kind, version) = if let Some(v) = id.strip_prefix("pc-i440fx-") {
                ("i440fx", v)
            } else if let Some(v) = id.strip_prefix("pc-q35-") {
                ("q35", v)
            } else {
                return None;
            };
            Version::parse(version)?;
            Some(MachineType {
                id: id.to_string(),
                kind,
                version: version.to_string(),
            })
        })
        .collect()
}

/// The versioned machine types `binary` offers (`-machine help`).
pub fn machine_types(binary: &str) -> Result<Vec<MachineType>, String> {
    let out = std::process::Command::new(binary)
        .args(["-machine", "help"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {binary}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{binary} -machine help failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse_machine_types(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_types_from_help() {
        let help = "Supported machines are:\n\
            microvm              microvm (i386)\n\
            pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-10.0)\n\
            pc-i440fx-10.0       Standard PC (i440FX + PIIX, 1996) (default)\n\
            pc-i440fx-2.12       Standard PC (i440FX + PIIX, 1996)\n\
            q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-10.0)\n\
            pc-q35-10.0          Standard PC (Q35 + ICH9, 2009)\n\
            none                 empty machine\n";
        let got = parse_machine_types(help);
        let ids: Vec<(&str, &str, &str)> = got
            .iter()
            .map(|m| (m.id.as_str(), m.kind, m.version.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("pc-i440fx-10.0", "i440fx", "10.0"),
                ("pc-i440fx-2.12", "i440fx", "2.12"),
                ("pc-q35-10.0", "q35", "10.0"),
            ]
        );
    }

    #[test]
    fn version_from_banner() {
        let v = parse_version(
            "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright",
        )
        .unwrap();
        assert_eq!((v.major, v.minor, v.micro), (10, 0, 2));
        assert_eq!(parse_version("no banner"), None);
    }
}
