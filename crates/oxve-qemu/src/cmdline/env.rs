//! The host as the command-line generator sees it. Nothing in `cmdline`
//! reads the host itself: the daemon fills this from the real machine, tests
//! from a fixture.

use super::machine::Version;
use oxve_storage::config::StorageConfig;
use std::collections::BTreeMap;

/// One snapshot of a volume chain: its file and its parent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub file: String,
    pub parent: Option<String>,
}

/// A host PCI device as `lspci` and sysfs describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PciDevice {
    /// Full address, `0000:01:00.0`.
    pub id: String,
    /// `0x10de`.
    pub vendor: Option<String>,
    /// `0x2231`.
    pub device: Option<String>,
    pub iommugroup: Option<u32>,
    /// Supports mediated devices.
    pub mdev: bool,
    /// An NVIDIA vGPU capable device (mdev types `nvidia-N`).
    pub nvidia: bool,
}

/// The host's AMD SEV support (QEMU's `query-sev-capabilities`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SevCapabilities {
    pub cbitpos: u32,
    pub reduced_phys_bits: u32,
    pub es: bool,
    pub snp: bool,
}

/// A cluster-wide PCI resource mapping (`/etc/pve/mapping/pci.cfg`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PciMapping {
    /// `node=...,path=...,id=vendor:device[,iommugroup=N]` entries.
    pub map: Vec<String>,
    pub mdev: bool,
    pub live_migration_capable: bool,
}

/// Where the command line points QEMU at files and sockets. The default
/// is upstream's layout (what `qm showcmd` prints and the fixtures expect);
/// a running node puts its sockets under its own run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Directory of the per-VM sockets and pid files (`<vmid>.qmp`, ...).
    pub run_dir: String,
    /// The socket of the event listener every QEMU connects to.
    pub event_socket: String,
    /// The programs QEMU runs when it creates and removes a tap device.
    pub bridge_up: String,
    pub bridge_down: String,
    /// Directory of the QEMU `-readconfig` files and the boot splash.
    pub share_dir: String,
    /// Directory of option ROMs (`romfile=`).
    pub rom_dir: String,
    /// Directory of the OVMF/AAVMF firmware images, with a trailing slash.
    pub firmware_dir: String,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            run_dir: "/var/run/qemu-server".into(),
            event_socket: "/var/run/qmeventd.sock".into(),
            bridge_up: "/usr/libexec/qemu-server/pve-bridge".into(),
            bridge_down: "/usr/libexec/qemu-server/pve-bridgedown".into(),
            share_dir: "/usr/share/qemu-server".into(),
            rom_dir: "/usr/share/kvm".into(),
            firmware_dir: "/usr/share/pve-edk2-firmware/".into(),
        }
    }
}

/// Everything about the host that changes the command line.
#[derive(Debug, Clone)]
pub struct HostEnv {
    /// Files and sockets.
    pub paths: Paths,
    /// The node's name.
    pub node: String,
    /// Version of the QEMU binary.
    pub qemu_version: Version,
    /// `x86_64` or `aarch64`.
    pub host_arch: String,
    /// Vendor field of `/proc/cpuinfo` (`GenuineIntel`, `AuthenticAMD`).
    pub cpu_vendor: String,
    /// Host CPU flags (to resolve `nested-virt`).
    pub cpu_flags: Vec<String>,
    /// Number of host CPUs (upper bound for vCPUs).
    pub host_cpus: u32,
    /// Whether `/dev/kvm` answers.
    pub kvm_available: bool,
    /// Whether `/dev/vhost-net` exists.
    pub vhost_net: bool,
    /// The iSCSI initiator name, if configured.
    pub iscsi_initiator: Option<String>,
    /// Host physical address bits.
    pub host_phys_bits: Option<u32>,
    /// `storage.cfg`.
    pub storage: StorageConfig,
    /// Built-in CPU models of the QEMU build: name → vendor (`default`
    /// for generic models).
    pub cpu_models: BTreeMap<String, String>,
    /// Custom CPU models (`cpu-models.conf`): name (without `custom-`) →
    /// options.
    pub custom_cpu_models: BTreeMap<String, BTreeMap<String, String>>,
    /// MTU of each bridge; bridges not listed have `default_bridge_mtu`.
    pub bridge_mtu: BTreeMap<String, u32>,
    pub default_bridge_mtu: u32,
    /// The host's CD-ROM device (`cdrom` drives), if any.
    pub cdrom_path: Option<String>,
    /// Path prefixes that are block or character devices (`/dev/`).
    pub device_path_prefixes: Vec<String>,
    /// Size of each firmware variables template, by file path.
    pub firmware_sizes: BTreeMap<String, u64>,
    /// Snapshot chains of volumes on storages that keep snapshots as
    /// volume chains: volid → snapshot name (`current` too) → link.
    pub volume_chains: BTreeMap<String, BTreeMap<String, ChainLink>>,
    /// LU name and LUN of ZFS-over-iSCSI volumes: volid → (lu, lun).
    pub iscsi_luns: BTreeMap<String, u32>,
    /// The next free SPICE TLS port and the address it listens on.
    pub spice_port: u16,
    pub spice_addr: String,
    /// Host huge page sizes in MiB (2, 1024) that are available.
    pub hugepage_sizes: Vec<u32>,
    /// Host NUMA node ids.
    pub numa_nodes: Vec<u32>,
    /// Host PCI devices.
    pub pci_devices: Vec<PciDevice>,
    /// AMD SEV support, if the host has it.
    pub sev: Option<SevCapabilities>,
    /// PCI resource mappings by name.
    pub pci_mappings: BTreeMap<String, PciMapping>,
}

impl HostEnv {
    /// Devices whose address starts with `filter` (with or without the
    /// `0000:` domain), sorted, as `lspci` filters.
    pub fn lspci(&self, filter: &str) -> Vec<PciDevice> {
        let mut out: Vec<PciDevice> = self
            .pci_devices
            .iter()
            .filter(|d| {
                d.id.starts_with(filter)
                    || d.id
                        .strip_prefix("0000:")
                        .is_some_and(|r| r.starts_with(filter))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The MTU of bridge `name`.
    pub fn bridge_mtu(&self, name: &str) -> u32 {
        self.bridge_mtu
            .get(name)
            .copied()
            .unwrap_or(self.default_bridge_mtu)
    }

    /// Whether `path` is a block or character device.
    pub fn is_device_path(&self, path: &str) -> bool {
        self.device_path_prefixes
            .iter()
            .any(|p| path.contains(p.as_str()))
    }

    /// Upstream's fallback list of x86_64 CPU models and their vendors (used
    /// when the QEMU build ships no model list), plus `host`.
    pub fn builtin_x86_cpu_models() -> BTreeMap<String, String> {
        let intel = "486 pentium pentium2 pentium3 coreduo core2duo Conroe Penryn Nehalem \
            Nehalem-IBRS Westmere Westmere-IBRS SandyBridge SandyBridge-IBRS IvyBridge \
            IvyBridge-IBRS Haswell Haswell-IBRS Haswell-noTSX Haswell-noTSX-IBRS Broadwell \
            Broadwell-IBRS Broadwell-noTSX Broadwell-noTSX-IBRS Skylake-Client \
            Skylake-Client-IBRS Skylake-Client-noTSX-IBRS Skylake-Client-v4 Skylake-Server \
            Skylake-Server-IBRS Skylake-Server-noTSX-IBRS Skylake-Server-v4 Skylake-Server-v5 \
            Cascadelake-Server Cascadelake-Server-v2 Cascadelake-Server-noTSX \
            Cascadelake-Server-v4 Cascadelake-Server-v5 Cooperlake Cooperlake-v2 KnightsMill \
            Icelake-Client Icelake-Client-noTSX Icelake-Server Icelake-Server-noTSX \
            Icelake-Server-v3 Icelake-Server-v4 Icelake-Server-v5 Icelake-Server-v6 \
            Icelake-Server-v7 SapphireRapids SapphireRapids-v2 SapphireRapids-v3 \
            SapphireRapids-v4 GraniteRapids GraniteRapids-v2 GraniteRapids-v3 SierraForest \
            SierraForest-v2 SierraForest-v3 ClearwaterForest";
        let amd = "athlon phenom Opteron_G1 Opteron_G2 Opteron_G3 Opteron_G4 Opteron_G5 EPYC \
            EPYC-IBPB EPYC-v3 EPYC-v4 EPYC-v5 EPYC-Rome EPYC-Rome-v2 EPYC-Rome-v3 EPYC-Rome-v4 \
            EPYC-Rome-v5 EPYC-Milan EPYC-Milan-v2 EPYC-Milan-v3 EPYC-Genoa EPYC-Genoa-v2 \
            EPYC-Turin";
        let mut out = BTreeMap::new();
        for m in intel.split_whitespace() {
            out.insert(m.to_string(), "GenuineIntel".to_string());
        }
        for m in amd.split_whitespace() {
            out.insert(m.to_string(), "AuthenticAMD".to_string());
        }
        for m in ["kvm32", "kvm64", "qemu32", "qemu64", "max", "host"] {
            out.insert(m.to_string(), "default".to_string());
        }
        out
    }
}
