//! PCI placement: upstream's fixed slot per device id on i440fx/virt
//! (`pci.N` bridges) and on q35's PCIe root, and host PCI passthrough.

use crate::error::{cfg_err, CmdlineError};
use std::collections::BTreeSet;

/// Fixed slots of devices on bus 0 (`pci.0`/`pcie.0` on aarch64).
const BUS0: &[(&str, u32)] = &[
    ("piix3", 1),
    ("ehci", 1),
    ("vga", 2),
    ("legacy-igd", 2),
    ("balloon0", 3),
    ("watchdog", 4),
    ("scsihw0", 5),
    ("pci.3", 5),
    ("scsihw1", 6),
    ("ahci0", 7),
    ("qga0", 8),
    ("spice", 9),
    ("virtio0", 10),
    ("virtio1", 11),
    ("virtio2", 12),
    ("virtio3", 13),
    ("virtio4", 14),
    ("virtio5", 15),
    ("hostpci0", 16),
    ("hostpci1", 17),
    ("net0", 18),
    ("net1", 19),
    ("net2", 20),
    ("net3", 21),
    ("net4", 22),
    ("net5", 23),
    ("vga1", 24),
    ("vga2", 25),
    ("vga3", 26),
    ("hostpci2", 27),
    ("hostpci3", 28),
    ("pci.1", 30),
    ("pci.2", 31),
];

/// Irregular slots on the bridges `pci.1` to `pci.4`.
const BRIDGED: &[(&str, u32, u32)] = &[
    ("xhci", 1, 27),
    ("pci.4", 1, 28),
    ("rng0", 1, 29),
    ("pci.2-igd", 1, 30),
    ("ivshmem", 2, 11),
    ("audio0", 2, 12),
    ("scsihw2", 4, 1),
    ("scsihw3", 4, 2),
    ("scsihw4", 4, 3),
];

/// Ranges of numbered ids: (prefix, first index, last index, bus, slot of
/// the first).
const RANGES: &[(&str, u32, u32, u32, u32)] = &[
    ("net", 6, 31, 1, 1),
    ("virtio", 6, 15, 2, 1),
    ("hostpci", 4, 15, 2, 13),
    ("virtioscsi", 0, 30, 3, 1),
];

fn slot(id: &str) -> Option<(u32, u32)> {
    if let Some((_, a)) = BUS0.iter().find(|(k, _)| *k == id) {
        return Some((0, *a));
    }
    if let Some((_, b, a)) = BRIDGED.iter().find(|(k, _, _)| *k == id) {
        return Some((*b, *a));
    }
    for (prefix, first, last, bus, start) in RANGES {
        if let Some(n) = id.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok()) {
            if (*first..=*last).contains(&n) {
                return Some((*bus, start + n - first));
            }
        }
    }
    None
}

/// `,bus=pci.N,addr=0xM` for `id` (empty for ids without a fixed slot);
/// records the bridge it needs.
pub fn pci_addr(
    id: &str,
    bridges: Option<&mut BTreeSet<u32>>,
    arch: &str,
) -> Result<String, CmdlineError> {
    if arch == "aarch64" && id.starts_with("ide") {
        return cfg_err("aarch64 cannot use IDE devices");
    }
    let Some((bus, addr)) = slot(id) else {
        return Ok(String::new());
    };
    let busname = if arch == "aarch64" && bus == 0 {
        "pcie"
    } else {
        "pci"
    };
    if let Some(b) = bridges {
        b.insert(bus);
    }
    Ok(format!(",bus={busname}.{bus},addr={addr:#x}"))
}

/// `,bus=...,addr=0xM` on q35's PCIe topology.
pub fn pcie_addr(id: &str) -> String {
    let found = match id {
        "vga" => Some(("pcie.0".to_string(), 1)),
        "ivshmem" => Some(("pcie.0".to_string(), 20)),
        _ => {
            if let Some(n) = id
                .strip_prefix("hostpci")
                .and_then(|r| r.strip_suffix("bus0"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                let addr = match n {
                    0..=3 => Some(16 + n),
                    4..=10 => Some(9 + n - 4),
                    11..=15 => Some(21 + n - 11),
                    _ => None,
                };
                addr.map(|a| ("pcie.0".to_string(), a))
            } else if let Some(n) = id
                .strip_prefix("hostpci")
                .and_then(|n| n.parse::<u32>().ok())
            {
                (n <= 15).then(|| (format!("ich9-pcie-port-{}", n + 1), 0))
            } else {
                None
            }
        }
    };
    match found {
        Some((bus, addr)) => format!(",bus={bus},addr={addr:#x}"),
        None => String::new(),
    }
}
