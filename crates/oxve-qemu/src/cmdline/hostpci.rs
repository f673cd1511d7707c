//! Host PCI passthrough (`hostpciN`): resolving ids and mappings to host
//! devices, choosing among alternatives, and the `vfio-pci` devices.

use super::devices::Vga;
use super::env::PciDevice;
use super::pci::{pci_addr, pcie_addr};
use super::props::Props;
use super::{push2, Ctx};
use crate::error::{cfg_err, CmdlineError};
use std::collections::{BTreeMap, BTreeSet};

/// What host PCI passthrough changes elsewhere on the command line.
#[derive(Debug, Default)]
pub struct HostPciOutcome {
    pub kvm_off: bool,
    pub gpu_passthrough: bool,
    pub legacy_igd: bool,
}

struct HostPci {
    opts: Props,
    live_migration: bool,
    multifunction: bool,
    nvidia: Option<String>,
    mdev: Option<String>,
    /// Alternatives, each a list of functions.
    alternatives: Vec<Vec<PciDevice>>,
}

fn parse(ctx: &Ctx, value: &str) -> Result<HostPci, CmdlineError> {
    let mut opts = Props::parse(value, Some("host"))?;
    let host = opts.0.remove("host");
    let mapping = opts.0.remove("mapping");
    let mut mdev = opts.0.remove("mdev");
    let mut live_migration = false;
    let mut alternatives_ids: Vec<Vec<String>> = Vec::new();
    match (host, mapping) {
        (Some(_), Some(_)) => return cfg_err("Cannot set both 'host' and 'mapping'."),
        (None, Some(name)) => {
            let found = ctx.env.pci_mappings.get(&name);
            let entries: Vec<Props> = found
                .map(|m| {
                    m.map
                        .iter()
                        .filter_map(|e| Props::parse(e, None).ok())
                        .filter(|e| e.get("node") == Some(ctx.env.node.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            if entries.is_empty() {
                return cfg_err(format!("PCI device mapping not found for '{name}'"));
            }
            live_migration = found.is_some_and(|m| m.live_migration_capable);
            for e in entries {
                let path = e.get("path").unwrap_or_default();
                for p in path.split(';') {
                    assert_mapping_valid(ctx, &name, p, &e)?;
                }
                alternatives_ids.push(path.split(';').map(str::to_string).collect());
            }
        }
        (Some(h), None) => alternatives_ids.push(h.split(';').map(str::to_string).collect()),
        (None, None) => return cfg_err("Either 'host' or 'mapping' must be set."),
    }
    let mut multifunction = false;
    let mut nvidia = None;
    let mut alternatives = Vec::new();
    for ids in alternatives_ids {
        let mut devs = Vec::new();
        for id in ids {
            let found = ctx.env.lspci(&id);
            if found.is_empty() {
                return cfg_err(format!("no PCI device found for '{id}'"));
            }
            devs.extend(found);
        }
        if devs.len() > 1 {
            multifunction = true;
            if mdev.is_some() || nvidia.is_some() {
                return cfg_err("cannot use mediated device with multifunction device");
            }
        } else if let Some(m) = mdev.clone() {
            if let Some(n) = m
                .strip_prefix("nvidia-")
                .filter(|n| devs[0].nvidia && n.chars().all(|c| c.is_ascii_digit()))
            {
                nvidia = Some(n.to_string());
                mdev = None;
            }
        }
        alternatives.push(devs);
    }
    Ok(HostPci {
        opts,
        live_migration,
        multifunction,
        nvidia,
        mdev,
        alternatives,
    })
}

fn assert_mapping_valid(
    ctx: &Ctx,
    name: &str,
    path: &str,
    entry: &Props,
) -> Result<(), CmdlineError> {
    let Some(dev) = ctx.env.pci_devices.iter().find(|d| d.id == path) else {
        return cfg_err(format!("PCI device mapping invalid (hardware probably changed): no such device '{path}' for '{name}'"));
    };
    if let (Some(id), Some(v), Some(d)) = (entry.get("id"), &dev.vendor, &dev.device) {
        let actual = format!(
            "{}:{}",
            v.trim_start_matches("0x"),
            d.trim_start_matches("0x")
        );
        if id != actual {
            return cfg_err(format!("PCI device mapping invalid (hardware probably changed): wrong id for {path}: {id} != {actual}"));
        }
    }
    if let (Some(g), Some(actual)) = (
        entry.get("iommugroup").and_then(|g| g.parse::<u32>().ok()),
        dev.iommugroup,
    ) {
        if g != actual {
            return cfg_err(format!("PCI device mapping invalid (hardware probably changed): wrong iommugroup for {path}: {g} != {actual}"));
        }
    }
    Ok(())
}

/// Adds the `vfio-pci` devices (`print_hostpci_devices`).
pub fn hostpci_devices(
    ctx: &mut Ctx,
    devices: &mut Vec<String>,
    vga: &mut Vga,
    bootorder: &BTreeMap<String, u32>,
) -> Result<HostPciOutcome, CmdlineError> {
    let mut out = HostPciOutcome::default();
    let mut parsed: Vec<(u32, HostPci)> = Vec::new();
    let mut legacy_seen = false;
    for i in 0..16u32 {
        let Some(value) = ctx
            .get(&format!("hostpci{i}"))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
        else {
            continue;
        };
        let d = parse(ctx, &value)?;
        if !ctx.q35 && d.opts.truthy("pcie") {
            return cfg_err("q35 machine model is not enabled");
        }
        if d.opts.truthy("legacy-igd") {
            check_legacy_igd(ctx, &d, legacy_seen)?;
            legacy_seen = true;
        }
        parsed.push((i, d));
    }
    // choose one alternative per device
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut chosen: Vec<(u32, HostPci, Vec<PciDevice>)> = Vec::new();
    for (i, d) in parsed {
        let ids: Vec<PciDevice> = if d.mdev.is_some() && d.nvidia.is_none() {
            d.alternatives
                .iter()
                .filter_map(|a| a.first().cloned())
                .collect()
        } else if d.alternatives.len() == 1 {
            let a = d.alternatives[0].clone();
            for dev in &a {
                if !used.insert(dev.id.clone()) {
                    return cfg_err(format!("device '{}' assigned more than once", dev.id));
                }
            }
            a
        } else {
            let Some(a) = d
                .alternatives
                .iter()
                .find(|a| a.iter().all(|dev| !used.contains(&dev.id)))
                .cloned()
            else {
                return cfg_err(format!("could not find a free device for 'hostpci{i}'"));
            };
            for dev in &a {
                used.insert(dev.id.clone());
            }
            a
        };
        chosen.push((i, d, ids));
    }
    for (i, d, ids) in chosen {
        let id = format!("hostpci{i}");
        let legacy = d.opts.truthy("legacy-igd");
        out.legacy_igd |= legacy;
        let addr = if d.opts.truthy("pcie") {
            if ctx.winversion == 7 {
                pcie_addr(&format!("{id}bus0"))
            } else {
                if i > 3 {
                    push2(devices, "-device", pcie_root_port(i));
                }
                pcie_addr(&id)
            }
        } else {
            let name = if legacy {
                "legacy-igd".to_string()
            } else {
                id.clone()
            };
            pci_addr(&name, Some(&mut ctx.bridges), &ctx.arch)?
        };
        let is_mdev = d.mdev.is_some();
        let multifunction = ids.len() > 1 && !is_mdev;
        let mut xvga = "";
        if d.opts.truthy("x-vga") {
            if ctx.get("bios") != Some("ovmf") {
                xvga = ",x-vga=on";
            }
            out.kvm_off = true;
            if ctx.get("vga").is_none() {
                vga.kind = "none".into();
            }
            out.gpu_passthrough = true;
        }
        let sysfs = is_mdev.then(|| {
            format!(
                "/sys/bus/mdev/devices/{i:08}-0000-0000-0000-{:012}",
                ctx.vmid
            )
        });
        for (j, dev) in ids.iter().enumerate() {
            let mut s = "vfio-pci".to_string();
            match &sysfs {
                Some(p) => s.push_str(&format!(",sysfsdev={p}")),
                None => s.push_str(&format!(",host={}", dev.id)),
            }
            if d.live_migration {
                s.push_str(",enable-migration=on");
            }
            let mf = if multifunction {
                format!(".{j}")
            } else {
                String::new()
            };
            s.push_str(&format!(",id={id}{mf}{addr}{mf}"));
            if j == 0 {
                if d.opts
                    .get("rombar")
                    .is_some_and(|r| !super::props::is_true(r))
                {
                    s.push_str(",rombar=0");
                }
                s.push_str(xvga);
                if multifunction {
                    s.push_str(",multifunction=on");
                }
                if let Some(rom) = d.opts.get("romfile").filter(|r| !r.is_empty()) {
                    s.push_str(&format!(",romfile={}/{rom}", ctx.env.paths.rom_dir));
                }
                if let Some(b) = bootorder.get(&id) {
                    s.push_str(&format!(",bootindex={b}"));
                }
                for o in ["vendor-id", "device-id", "sub-vendor-id", "sub-device-id"] {
                    if let Some(v) = d.opts.get(o).filter(|v| !v.is_empty()) {
                        s.push_str(&format!(",x-pci-{o}={v}"));
                    }
                }
            }
            push2(devices, "-device", s);
            if is_mdev {
                break;
            }
        }
        let _ = d.multifunction;
    }
    Ok(out)
}

fn check_legacy_igd(ctx: &Ctx, d: &HostPci, seen: bool) -> Result<(), CmdlineError> {
    if seen {
        return cfg_err("only one device can be assigned in legacy-igd mode");
    }
    if ctx.get("vga") != Some("none") {
        return cfg_err("legacy IGD assignment requires VGA mode to be 'none'");
    }
    if d.opts
        .get("rombar")
        .is_some_and(|r| !super::props::is_true(r))
    {
        return cfg_err("legacy IGD assignment requires rombar to be enabled");
    }
    if d.opts.truthy("x-vga") {
        return cfg_err("legacy IGD assignment is not compatible with x-vga");
    }
    if d.mdev.is_some() || d.nvidia.is_some() {
        return cfg_err("legacy IGD assignment is not compatible with mdev");
    }
    if ctx.q35 {
        return cfg_err("legacy IGD assignment is not compatible with q35");
    }
    if d.multifunction {
        return cfg_err("legacy IGD assignment is not compatible with multifunction devices");
    }
    if d.alternatives.len() > 1 {
        return cfg_err("legacy IGD assignment is not compatible with alternate devices");
    }
    if !d
        .alternatives
        .first()
        .and_then(|a| a.first())
        .is_some_and(|dev| dev.id.ends_with("02.0"))
    {
        return cfg_err("legacy IGD assignment only works for devices on host bus 00:02.0");
    }
    Ok(())
}

/// Extra PCIe root ports beyond the four of `pve-q35-4.0.cfg`.
fn pcie_root_port(i: u32) -> String {
    let slot = if i < 12 {
        format!("10.{}", i - 4)
    } else {
        format!("11.{}", i - 12)
    };
    let id = i + 1;
    format!("pcie-root-port,id=ich9-pcie-port-{id},addr={slot},x-speed=16,x-width=32,multifunction=on,bus=pcie.0,port={id},chassis={id}")
}
