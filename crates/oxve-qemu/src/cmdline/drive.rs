//! Disk drives: parsing a drive option, the boot order, and the controller
//! and front-end devices (`scsi-hd`, `ide-cd`, `virtio-blk-pci`, ...).

use super::props::Props;
use super::{blockdev, drive_keys, json, push2, Ctx};
use crate::error::{cfg_err, CmdlineError};
use std::collections::{BTreeMap, BTreeSet};

/// A parsed drive option (`scsi0: local:100/vm-100-disk-0.qcow2,...`).
#[derive(Debug, Clone)]
pub struct Drive {
    pub interface: String,
    pub index: u32,
    pub file: String,
    pub opts: Props,
    pub bootindex: Option<u32>,
}

impl Drive {
    /// Parses `value` of drive key `key`; `None` where upstream's
    /// `parse_drive` gives up (the drive is then ignored).
    pub fn parse(key: &str, value: &str) -> Option<Drive> {
        let split = key.find(|c: char| c.is_ascii_digit())?;
        let (interface, index) = key.split_at(split);
        let index: u32 = index.parse().ok()?;
        let opts = Props::parse(value, Some("file")).ok()?;
        let file = opts.get("file")?.to_string();
        let d = Drive {
            interface: interface.to_string(),
            index,
            file,
            opts,
            bootindex: None,
        };
        if d.is_cdrom() {
            if d.opts.get("snapshot").is_some() || d.opts.get("format").is_some() {
                return None;
            }
            if d.interface == "virtio" {
                return None;
            }
        }
        Some(d)
    }

    /// `scsi0`.
    pub fn id(&self) -> String {
        format!("{}{}", self.interface, self.index)
    }

    /// An option's raw value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.opts.get(key)
    }

    /// Perl truthiness of an option.
    pub fn truthy(&self, key: &str) -> bool {
        self.opts.truthy(key)
    }

    /// `media=cdrom`.
    pub fn is_cdrom(&self) -> bool {
        self.opts.get("media") == Some("cdrom")
    }

    /// A cloud-init drive (`vm-<id>-cloudinit`).
    pub fn is_cloudinit(&self) -> bool {
        let name = self.file.rsplit(['/', ':']).next().unwrap_or_default();
        name.strip_prefix("vm-")
            .and_then(|r| r.split_once("-cloudinit"))
            .is_some_and(|(id, _)| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
    }
}

/// Every configured drive in upstream's order.
pub fn config_drives(ctx: &Ctx) -> Vec<(String, Drive)> {
    drive_keys()
        .into_iter()
        .filter_map(|k| {
            let v = ctx.get(&k)?;
            Drive::parse(&k, v).map(|d| (k, d))
        })
        .collect()
}

/// Boot index per device (`device_bootorder`).
pub fn device_bootorder(ctx: &Ctx) -> Result<BTreeMap<String, u32>, CmdlineError> {
    let Some(boot) = ctx.get("boot") else {
        return Ok(bootorder_from_legacy(ctx, None));
    };
    let props = Props::parse(boot, Some("legacy"))?;
    let mut out = BTreeMap::new();
    if let Some(legacy) = props.get("legacy").filter(|l| !l.is_empty()) {
        return Ok(bootorder_from_legacy(ctx, Some(legacy)));
    }
    if let Some(order) = props.get("order").filter(|o| !o.is_empty()) {
        for (i, dev) in order
            .split([';', ',', ' '])
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            out.insert(dev.to_string(), 100 + i as u32);
        }
    }
    Ok(out)
}

fn bootorder_from_legacy(ctx: &Ctx, legacy: Option<&str>) -> BTreeMap<String, u32> {
    let boot = legacy.unwrap_or("cdn");
    let mut idx: BTreeMap<char, u32> = BTreeMap::new();
    for (i, c) in boot.chars().enumerate() {
        idx.insert(c, (i as u32 + 1) * 100);
    }
    let mut out = BTreeMap::new();
    let bootdisk = ctx.get("bootdisk");
    for (key, d) in config_drives(ctx) {
        if d.is_cdrom() && !d.is_cloudinit() {
            if let Some(v) = idx.get_mut(&'d') {
                out.insert(key, *v);
                *v += 1;
            }
        } else if let Some(v) = idx.get_mut(&'c') {
            if bootdisk == Some(key.as_str()) {
                out.insert(key, *v);
            }
            *v += 1;
        }
    }
    if let Some(v) = idx.get_mut(&'n') {
        for i in 0..32 {
            let name = format!("net{i}");
            if ctx.get(&name).is_some_and(|n| !n.is_empty()) {
                out.insert(name, *v);
                *v += 1;
            }
        }
    }
    out
}

/// SCSI controller geometry: (devices per controller, controller, prefix).
fn scsihw_infos(scsihw: Option<&str>, index: u32) -> (u32, u32, &'static str) {
    let maxdev = match scsihw {
        None => 7,
        Some(s) if s.starts_with("lsi") => 7,
        Some("virtio-scsi-single") => 1,
        Some(_) => 256,
    };
    let prefix = if scsihw == Some("virtio-scsi-single") {
        "virtioscsi"
    } else {
        "scsihw"
    };
    (maxdev, index / maxdev, prefix)
}

/// Adds every disk: controllers, iothreads, throttle groups, block nodes
/// and front-end devices (upstream's `foreach_volume` loop).
pub fn add_drives(
    ctx: &mut Ctx,
    bootorder: &BTreeMap<String, u32>,
    cmd: &mut Vec<String>,
    devices: &mut Vec<String>,
) -> Result<(), CmdlineError> {
    let mut scsi_controllers = BTreeSet::new();
    let mut ahci_controllers = BTreeSet::new();
    let conf_scsihw = ctx.get("scsihw").map(str::to_string);
    let scsihw = conf_scsihw.clone().unwrap_or_else(|| "lsi".into());
    for (key, mut drive) in config_drives(ctx) {
        if drive.interface == "efidisk" || drive.interface == "tpmstate" {
            continue;
        }
        drive.bootindex = bootorder.get(&key).copied().filter(|b| *b > 0);
        if drive.interface == "virtio" && drive.truthy("iothread") {
            push2(cmd, "-object", format!("iothread,id=iothread-{key}"));
        }
        if drive.interface == "scsi" {
            let (_, controller, prefix) = scsihw_infos(conf_scsihw.as_deref(), drive.index);
            if drive.index > 13 && !ctx.version_guard(4, 1, 2) {
                return cfg_err(format!(
                    "scsi{}: machine version 4.1~pve2 or higher is required to use more than 14 SCSI disks",
                    drive.index
                ));
            }
            let addr = ctx.pci_addr(&format!("{prefix}{controller}"))?;
            let kind = if scsihw.starts_with("virtio-scsi-single") {
                "virtio-scsi-pci"
            } else {
                scsihw.as_str()
            };
            let single = conf_scsihw.as_deref() == Some("virtio-scsi-single");
            let mut iothread = String::new();
            if single && drive.truthy("iothread") {
                iothread = format!(",iothread=iothread-{prefix}{controller}");
                push2(
                    cmd,
                    "-object",
                    format!("iothread,id=iothread-{prefix}{controller}"),
                );
            } else if drive.truthy("iothread") {
                ctx.notice("WARN: iothread is only valid with virtio disk or virtio-scsi-single controller, ignoring");
            }
            let queues = match drive.get("queues") {
                Some(q) if single && q != "0" => format!(",num_queues={q}"),
                _ => String::new(),
            };
            if scsi_controllers.insert(controller) {
                push2(
                    devices,
                    "-device",
                    format!("{kind},id={prefix}{controller}{addr}{iothread}{queues}"),
                );
            }
        }
        if drive.interface == "sata" {
            let controller = drive.index / 6;
            let addr = ctx.pci_addr(&format!("ahci{controller}"))?;
            if ahci_controllers.insert(controller) {
                push2(
                    devices,
                    "-device",
                    format!("ahci,id=ahci{controller},multifunction=on{addr}"),
                );
            }
        }
        if ctx.min_machine(10, 0, 0) {
            if drive.file != "none" {
                push2(
                    cmd,
                    "-object",
                    json::canonical(&blockdev::throttle_group(&drive)),
                );
                let node = blockdev::drive_blockdev(ctx, &drive, ctx.is_template, None)?;
                push2(devices, "-blockdev", json::canonical(&node));
            }
        } else {
            let mut value = blockdev::legacy_drive(ctx, &drive)?;
            if ctx.is_template && drive.interface != "ide" && drive.interface != "sata" {
                value.push_str(",readonly=on");
            }
            push2(devices, "-drive", value);
        }
        push2(devices, "-device", drive_device(ctx, &drive)?);
    }
    Ok(())
}

/// Doubles commas so QEMU keeps the value whole.
fn escape_value(v: &str) -> String {
    percent_decode(v).replace(',', ",,")
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&v[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn scsi_device_type(ctx: &Ctx, drive: &Drive) -> &'static str {
    if drive.is_cdrom() || drive.is_cloudinit() {
        return "cd";
    }
    if drive.file.starts_with('/') {
        // A real SCSI inquiry would decide `block`/`generic`; without a
        // host probe a path is a disk.
        return "hd";
    }
    let path = blockdev::volume_path(ctx, &drive.file).unwrap_or_default();
    if path.starts_with("iscsi://") && !ctx.min_machine(4, 1, 0) {
        return "generic";
    }
    "hd"
}

/// The front-end device of a drive (`print_drivedevice_full`).
pub fn drive_device(ctx: &mut Ctx, drive: &Drive) -> Result<String, CmdlineError> {
    let id = drive.id();
    let blockdev_era = ctx.min_machine(10, 0, 0);
    let with_drive = !blockdev_era || drive.file != "none";
    let mut has_write_cache = true;
    let mut dev;
    match drive.interface.as_str() {
        "virtio" => {
            let addr = ctx.pci_addr(&id)?;
            dev = "virtio-blk-pci".to_string();
            if with_drive {
                dev.push_str(&format!(",drive=drive-{id}"));
            }
            dev.push_str(&format!(",id={id}{addr}"));
            if drive.truthy("iothread") {
                dev.push_str(&format!(",iothread=iothread-{id}"));
            }
        }
        "scsi" => {
            let scsihw = ctx.get("scsihw");
            let (maxdev, controller, prefix) = scsihw_infos(scsihw, drive.index);
            let unit = drive.index % maxdev;
            let dtype = scsi_device_type(ctx, drive);
            if scsihw.is_none_or(|s| s.starts_with("lsi") || s == "pvscsi") {
                dev = format!("scsi-{dtype},bus={prefix}{controller}.0,scsi-id={unit}");
            } else {
                dev = format!(
                    "scsi-{dtype},bus={prefix}{controller}.0,channel=0,scsi-id=0,lun={}",
                    drive.index
                );
            }
            if with_drive {
                dev.push_str(&format!(",drive=drive-{id}"));
            }
            dev.push_str(&format!(",id={id}"));
            if blockdev_era && (dtype == "cd" || dtype == "hd") {
                dev.push_str(&format!(",device_id=drive-{id}"));
            }
            if drive.truthy("ssd") && (dtype == "block" || dtype == "hd") {
                dev.push_str(",rotation_rate=1");
            }
            if let Some(wwn) = drive.get("wwn") {
                dev.push_str(&format!(",wwn={wwn}"));
            }
            if dtype == "hd" || dtype == "cd" {
                if let Some(v) = drive.get("vendor").filter(|v| !v.is_empty()) {
                    dev.push_str(&format!(",vendor={v}"));
                }
                if let Some(p) = drive.get("product").filter(|v| !v.is_empty()) {
                    dev.push_str(&format!(",product={p}"));
                }
            } else {
                has_write_cache = false;
            }
        }
        "ide" | "sata" => {
            let maxdev = if drive.interface == "sata" { 6 } else { 2 };
            let mut controller = drive.index / maxdev;
            let mut unit = drive.index % maxdev;
            if ctx.q35 && drive.interface == "ide" {
                controller += 2 * (unit % 2);
                unit = 0;
            }
            let mut dtype = if drive.is_cdrom() { "cd" } else { "hd" };
            if ctx.is_template {
                dtype = "cd";
            }
            dev = format!("ide-{dtype}");
            if drive.interface == "ide" {
                dev.push_str(&format!(",bus=ide.{controller},unit={unit}"));
            } else {
                dev.push_str(&format!(",bus=ahci{controller}.{unit}"));
            }
            if with_drive {
                dev.push_str(&format!(",drive=drive-{id}"));
            }
            dev.push_str(&format!(",id={id}"));
            if dtype == "hd" {
                if let Some(model) = drive.get("model").filter(|m| !m.is_empty()) {
                    dev.push_str(&format!(",model={}", escape_value(model)));
                }
                if drive.truthy("ssd") {
                    dev.push_str(",rotation_rate=1");
                }
            }
            if let Some(wwn) = drive.get("wwn") {
                dev.push_str(&format!(",wwn={wwn}"));
            }
        }
        other => return cfg_err(format!("unsupported interface type '{other}'")),
    }
    if let Some(b) = drive.bootindex {
        dev.push_str(&format!(",bootindex={b}"));
    }
    if let Some(serial) = drive.get("serial").filter(|s| !s.is_empty()) {
        dev.push_str(&format!(",serial={}", escape_value(serial)));
    }
    if blockdev_era {
        if !drive.is_cdrom() && has_write_cache {
            let wc = match drive.get("cache") {
                Some("writethrough" | "directsync") => "off",
                _ => "on",
            };
            dev.push_str(&format!(",write-cache={wc}"));
        }
        for o in ["rerror", "werror"] {
            if let Some(v) = drive.get(o) {
                dev.push_str(&format!(",{o}={v}"));
            }
        }
    }
    Ok(dev)
}
