//! `-blockdev` trees (throttle → format → file) and where a volume lives,
//! as upstream's Blockdev.pm and the storage plugins' `qemu_blockdev_options`.

use super::drive::Drive;
use super::Ctx;
use crate::error::{cfg_err, CmdlineError};
use oxve_storage::{Content, StorageDef, StorageType};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Where and what a storage volume is.
#[derive(Debug, Clone)]
pub struct Volume {
    pub def: StorageDef,
    pub content: Content,
    /// The base node (`driver` + location) of the file layer.
    pub node: Map<String, Value>,
    /// Path as `PVE::Storage::path` gives it.
    pub path: String,
    pub format: String,
}

fn storage_path(def: &StorageDef) -> String {
    def.get("path").unwrap_or_default().to_string()
}

/// Resolves a volume id (`local:100/vm-100-disk-0.qcow2`).
pub fn volume(ctx: &Ctx, volid: &str, snapshot: Option<&str>) -> Result<Volume, CmdlineError> {
    let Some((storeid, volname)) = volid.split_once(':') else {
        return cfg_err(format!("unable to parse volume ID '{volid}'"));
    };
    let def = ctx
        .env
        .storage
        .get(storeid)
        .map_err(|_| CmdlineError::Config(format!("storage '{storeid}' does not exist")))?;
    let mut node = Map::new();
    let (content, path, format) = match def.kind {
        StorageType::Dir
        | StorageType::Nfs
        | StorageType::Cifs
        | StorageType::CephFs
        | StorageType::Btrfs => {
            let base = storage_path(&def);
            if let Some(iso) = volname.strip_prefix("iso/") {
                (
                    Content::Iso,
                    format!("{base}/template/iso/{iso}"),
                    "raw".to_string(),
                )
            } else if let Some(imp) = volname.strip_prefix("import/") {
                (
                    Content::Import,
                    format!("{base}/import/{imp}"),
                    "raw".to_string(),
                )
            } else {
                let parts: Vec<&str> = volname.split('/').collect();
                if parts.len() != 2 && parts.len() != 4 {
                    return cfg_err(format!("unable to parse directory volume name '{volname}'"));
                }
                let vmid = parts[parts.len() - 2];
                let name = parts[parts.len() - 1];
                let format = name.rsplit_once('.').map_or("raw", |(_, e)| e).to_string();
                let path = if def.kind == StorageType::Btrfs && format == "raw" {
                    let stem = name.trim_end_matches(".raw");
                    format!("{base}/images/{vmid}/{stem}/disk.raw")
                } else {
                    format!("{base}/images/{vmid}/{name}")
                };
                (Content::Images, path, format)
            }
        }
        StorageType::Lvm | StorageType::LvmThin => {
            let vg = def.get("vgname").unwrap_or_default();
            let format = if volname.ends_with(".qcow2") {
                "qcow2"
            } else {
                "raw"
            };
            (
                Content::Images,
                format!("/dev/{vg}/{volname}"),
                format.to_string(),
            )
        }
        StorageType::ZfsPool => {
            let pool = def.get("pool").unwrap_or_default();
            (
                Content::Images,
                format!("/dev/zvol/{pool}/{volname}"),
                "raw".to_string(),
            )
        }
        StorageType::Rbd => {
            let pool = def.get("pool").unwrap_or("rbd");
            let fsid = def.get("fsid").unwrap_or_default();
            let path = format!("/dev/rbd-pve/{fsid}/{pool}/{volname}");
            (Content::Images, path, "raw".to_string())
        }
        StorageType::Zfs => {
            let portal = def.get("portal").unwrap_or_default();
            let target = def.get("target").unwrap_or_default();
            let lun = ctx.env.iscsi_luns.get(volid).copied().unwrap_or(0);
            (
                Content::Images,
                format!("iscsi://{portal}/{target}/{lun}"),
                "raw".to_string(),
            )
        }
        other => {
            return Err(CmdlineError::Unsupported(format!(
                "volumes on storage type '{}'",
                other.as_str()
            )))
        }
    };
    if !def.content().contains(content) {
        return cfg_err(format!(
            "storage '{storeid}' does not support content-type '{}'",
            content.as_str()
        ));
    }
    match def.kind {
        StorageType::Rbd if !def.flag("krbd") => {
            let pool = def.get("pool").unwrap_or("rbd");
            node.insert("driver".into(), "rbd".into());
            node.insert("pool".into(), pool.into());
            node.insert("image".into(), volname.into());
            if let Some(ns) = def.get("namespace") {
                node.insert("namespace".into(), ns.into());
            }
            if let Some(s) = snapshot {
                node.insert("snapshot".into(), s.into());
            }
            if let Some(monhost) = def.get("monhost") {
                let servers: Vec<Value> = monhost
                    .split([',', ';', ' '])
                    .filter(|s| !s.is_empty())
                    .map(|m| {
                        let (host, port) = host_and_port(m);
                        json!({"host": host, "port": port.unwrap_or("3300")})
                    })
                    .collect();
                node.insert("server".into(), Value::Array(servers));
                node.insert("auth-client-required".into(), json!(["none"]));
            }
        }
        StorageType::Zfs => {
            node.insert("driver".into(), "iscsi".into());
            node.insert("transport".into(), "tcp".into());
            node.insert(
                "portal".into(),
                def.get("portal").unwrap_or_default().into(),
            );
            node.insert(
                "target".into(),
                def.get("target").unwrap_or_default().into(),
            );
            let lun = ctx.env.iscsi_luns.get(volid).copied().unwrap_or(0);
            node.insert("lun".into(), lun.into());
        }
        _ => {
            let driver = if path.starts_with("/dev/") {
                "host_device"
            } else {
                "file"
            };
            node.insert("driver".into(), driver.into());
            node.insert("filename".into(), path.clone().into());
        }
    }
    Ok(Volume {
        def,
        content,
        node,
        path,
        format,
    })
}

/// `host[:port]`, `[v6]:port` or a bare IPv6 address.
fn host_and_port(text: &str) -> (&str, Option<&str>) {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            return (h, p.strip_prefix(':'));
        }
    }
    if text.matches(':').count() == 1 {
        if let Some((h, p)) = text.split_once(':') {
            return (h, Some(p));
        }
    }
    (text, None)
}

/// `PVE::Storage::path` of a volume id, if it is one.
pub fn volume_path(ctx: &Ctx, volid: &str) -> Option<String> {
    volume(ctx, volid, None).ok().map(|v| v.path)
}

/// Upstream's block node name: a letter for the node type and 30 hex
/// digits of SHA-256 over `drive=<id>,[snap=<name>,]volid=<volid>`.
pub fn node_name(prefix: char, drive_id: &str, volid: &str, snap: Option<&str>) -> String {
    let mut info = format!("drive={drive_id},");
    if let Some(s) = snap {
        info.push_str(&format!("snap={s},"));
    }
    info.push_str(&format!("volid={volid}"));
    let hex: String = Sha256::digest(info.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}{}", &hex[..30])
}

/// I/O limits of a drive in upstream's order: QMP name, integer value and
/// the value as configured.
fn throttle_limits(drive: &Drive) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for (dir, qmp) in [("", "-total"), ("_rd", "-read"), ("_wr", "-write")] {
        let mut add = |key: String, name: String, mib: bool| {
            let Some(raw) = drive.get(&key) else { return };
            let Ok(v) = raw.parse::<f64>() else { return };
            if v == 0.0 {
                return;
            }
            let int = if mib {
                (v * 1024.0 * 1024.0) as i64
            } else {
                v as i64
            };
            let shown = if mib {
                int.to_string()
            } else {
                raw.to_string()
            };
            out.push((name, int, shown));
        };
        add(format!("mbps{dir}"), format!("bps{qmp}"), true);
        add(format!("mbps{dir}_max"), format!("bps{qmp}-max"), true);
        add(
            format!("bps{dir}_max_length"),
            format!("bps{qmp}-max-length"),
            false,
        );
        add(format!("iops{dir}"), format!("iops{qmp}"), false);
        add(format!("iops{dir}_max"), format!("iops{qmp}-max"), false);
        add(
            format!("iops{dir}_max_length"),
            format!("iops{qmp}-max-length"),
            false,
        );
    }
    out
}

/// The `throttle-group` object of a drive.
pub fn throttle_group(drive: &Drive) -> Value {
    let mut limits = Map::new();
    for (name, v, _) in throttle_limits(drive) {
        limits.insert(name, v.into());
    }
    json!({"id": format!("throttle-drive-{}", drive.id()), "limits": limits, "qom-type": "throttle-group"})
}

fn cache_direct(drive: &Drive, def: Option<&StorageDef>) -> bool {
    if let Some(cache) = drive.get("cache").filter(|c| !c.is_empty()) {
        return matches!(cache, "off" | "none" | "directsync");
    }
    let btrfs_cow = def.is_some_and(|d| d.kind == StorageType::Btrfs && !d.flag("nocow"));
    !drive.is_cdrom() && !btrfs_cow
}

fn aio(drive: &Drive, def: Option<&StorageDef>, direct: bool) -> String {
    if let Some(a) = drive.get("aio").filter(|a| !a.is_empty()) {
        return a.to_string();
    }
    let uring_ok = match def {
        Some(d) if d.kind == StorageType::Rbd && d.flag("krbd") && !direct => false,
        Some(d) if d.kind == StorageType::Lvm || d.kind == StorageType::Cifs => false,
        _ => true,
    };
    if uring_ok {
        "io_uring".into()
    } else if direct {
        "native".into()
    } else {
        "threads".into()
    }
}

fn detect_zeroes(drive: &Drive) -> &'static str {
    if drive
        .get("detect_zeroes")
        .is_some_and(|v| !super::props::is_true(v))
    {
        "off"
    } else if let Some(d) = drive.get("discard").filter(|d| !d.is_empty()) {
        if d == "on" {
            "unmap"
        } else {
            "on"
        }
    } else {
        "on"
    }
}

fn add_common(node: &mut Map<String, Value>, drive: &Drive, read_only: bool) {
    if !drive.is_cdrom() {
        let discard = if drive.get("discard") == Some("on") {
            "unmap"
        } else {
            "ignore"
        };
        node.insert("discard".into(), discard.into());
        node.insert("detect-zeroes".into(), detect_zeroes(drive).into());
    }
    let ro = drive.truthy("ro") || drive.is_cdrom() || read_only;
    node.insert("read-only".into(), ro.into());
}

/// The file layer of a drive.
fn file_blockdev(
    ctx: &Ctx,
    drive: &Drive,
    read_only: bool,
    snap: Option<&str>,
) -> Result<(Map<String, Value>, Option<StorageDef>), CmdlineError> {
    let snap = snap.filter(|s| *s != "current");
    let id = drive.id();
    if drive.truthy("snapshot") {
        return cfg_err("'snapshot' option is not yet supported for '-blockdev'");
    }
    let mut def = None;
    let mut node = Map::new();
    if drive.file.starts_with("nbd:") {
        return Err(CmdlineError::Unsupported("NBD drives".into()));
    } else if drive.file == "cdrom" {
        node.insert("driver".into(), "host_cdrom".into());
        node.insert(
            "filename".into(),
            ctx.env.cdrom_path.clone().unwrap_or_default().into(),
        );
    } else if drive.file.starts_with('/') {
        let driver = if ctx.env.is_device_path(&drive.file) {
            if drive.is_cdrom() {
                "host_cdrom"
            } else {
                "host_device"
            }
        } else {
            "file"
        };
        node.insert("driver".into(), driver.into());
        node.insert("filename".into(), drive.file.clone().into());
    } else {
        let vol = volume(ctx, &drive.file, snap)?;
        if drive.get("media").is_none() && vol.content == Content::Iso {
            return cfg_err(format!(
                "{id}: explicit media parameter is required for iso images"
            ));
        }
        node = vol.node;
        def = Some(vol.def);
    }
    let driver = node
        .get("driver")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let direct = if driver == "rbd" && drive.interface == "efidisk" {
        false
    } else {
        cache_direct(drive, def.as_ref())
    };
    let no_flush = drive.get("cache") == Some("unsafe");
    node.insert(
        "cache".into(),
        json!({"direct": direct, "no-flush": no_flush}),
    );
    if matches!(driver.as_str(), "file" | "host_cdrom" | "host_device") {
        node.insert("aio".into(), aio(drive, def.as_ref(), direct).into());
    }
    node.insert(
        "node-name".into(),
        node_name('e', &id, &drive.file, snap).into(),
    );
    add_common(&mut node, drive, read_only);
    Ok((node, def))
}

fn format_of(ctx: &Ctx, drive: &Drive) -> Result<String, CmdlineError> {
    if drive.file.starts_with('/') || drive.file == "cdrom" || !drive.file.contains(':') {
        return Ok(drive.get("format").unwrap_or("raw").to_string());
    }
    let vol = volume(ctx, &drive.file, None)?;
    if let Some(f) = drive.get("format").filter(|f| *f != vol.format) {
        return cfg_err(format!(
            "drive '{}' - volume '{}' - 'format={f}' option different from storage format '{}'",
            drive.id(),
            drive.file,
            vol.format
        ));
    }
    Ok(vol.format)
}

fn format_blockdev(
    ctx: &Ctx,
    drive: &Drive,
    child: Map<String, Value>,
    def: Option<&StorageDef>,
    read_only: bool,
    size: Option<u64>,
    snap: Option<&str>,
) -> Result<Map<String, Value>, CmdlineError> {
    let snap = snap.filter(|s| *s != "current");
    let format = format_of(ctx, drive)?;
    let mut node = Map::new();
    node.insert(
        "node-name".into(),
        node_name('f', &drive.id(), &drive.file, snap).into(),
    );
    node.insert("driver".into(), format.clone().into());
    if let Some(c) = child.get("cache") {
        node.insert("cache".into(), c.clone());
    }
    node.insert("file".into(), Value::Object(child));
    add_common(&mut node, drive, read_only);
    if let Some(size) = size {
        if format != "raw" {
            return cfg_err("blockdev: 'size' is only supported for 'raw' format");
        }
        node.insert("size".into(), size.into());
    }
    if def.is_some_and(|d| d.flag("snapshot-as-volume-chain")) && format == "qcow2" {
        node.insert("discard-no-unref".into(), true.into());
    }
    Ok(node)
}

fn uses_volume_chain(def: &StorageDef, format: &str) -> bool {
    format == "qcow2"
        && match def.kind {
            StorageType::Lvm => true,
            StorageType::Dir | StorageType::Nfs | StorageType::Cifs => {
                def.flag("snapshot-as-volume-chain")
            }
            _ => false,
        }
}

fn backing_blockdev(
    ctx: &Ctx,
    drive: &Drive,
    snap: &str,
    depth: u32,
) -> Result<Map<String, Value>, CmdlineError> {
    let Some(link) = ctx
        .env
        .volume_chains
        .get(&drive.file)
        .and_then(|c| c.get(snap))
        .cloned()
    else {
        return cfg_err(format!("snapshot '{snap}' of '{}' not found", drive.file));
    };
    if depth > 256 {
        return cfg_err("snapshot chain too long");
    }
    let (mut file, def) = file_blockdev(ctx, drive, false, Some(snap))?;
    file.insert("filename".into(), link.file.clone().into());
    let mut fmt = format_blockdev(ctx, drive, file, def.as_ref(), false, None, Some(snap))?;
    if let Some(parent) = link.parent.as_deref() {
        fmt.insert(
            "backing".into(),
            Value::Object(backing_blockdev(ctx, drive, parent, depth + 1)?),
        );
    }
    Ok(fmt)
}

/// The whole block node tree of a drive (`generate_drive_blockdev`).
pub fn drive_blockdev(
    ctx: &Ctx,
    drive: &Drive,
    read_only: bool,
    size: Option<u64>,
) -> Result<Value, CmdlineError> {
    let id = drive.id();
    let (file, def) = file_blockdev(ctx, drive, read_only, None)?;
    let mut child = format_blockdev(ctx, drive, file, def.as_ref(), read_only, size, None)?;
    if let Some(def) = def.as_ref() {
        let format = child
            .get("driver")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if uses_volume_chain(def, &format) {
            let parent = ctx
                .env
                .volume_chains
                .get(&drive.file)
                .and_then(|c| c.get("current"))
                .and_then(|l| l.parent.clone());
            if let Some(parent) = parent {
                child.insert(
                    "backing".into(),
                    Value::Object(backing_blockdev(ctx, drive, &parent, 0)?),
                );
            }
        }
    }
    if drive.truthy("scsiblock") {
        child.insert("node-name".into(), format!("drive-{id}").into());
        return Ok(Value::Object(child));
    }
    let mut top = Map::new();
    top.insert("driver".into(), "throttle".into());
    top.insert("node-name".into(), format!("drive-{id}").into());
    top.insert(
        "throttle-group".into(),
        format!("throttle-drive-{id}").into(),
    );
    top.insert("file".into(), Value::Object(child));
    add_common(&mut top, drive, read_only);
    Ok(Value::Object(top))
}

/// Path and format of a drive as `get_path_and_format` gives them (path
/// empty for an empty CD-ROM).
pub fn path_and_format(
    ctx: &Ctx,
    drive: &Drive,
) -> Result<(String, Option<String>, Option<Volume>), CmdlineError> {
    let managed = !drive.file.starts_with('/') && drive.file.contains(':');
    if drive.is_cdrom() {
        let path = match drive.file.as_str() {
            "cdrom" => ctx.env.cdrom_path.clone().unwrap_or_default(),
            "none" => String::new(),
            f if f.starts_with('/') => f.to_string(),
            f => volume(ctx, f, None)?.path,
        };
        if path.is_empty() {
            return Ok((path, None, None));
        }
        if !managed {
            return Ok((
                path,
                Some(drive.get("format").unwrap_or("raw").to_string()),
                None,
            ));
        }
    }
    if managed {
        let vol = volume(ctx, &drive.file, None)?;
        if let Some(f) = drive.get("format").filter(|f| *f != vol.format) {
            return cfg_err(format!(
                "drive '{}' - volume '{}' - 'format={f}' option different from storage format '{}'",
                drive.id(),
                drive.file,
                vol.format
            ));
        }
        return Ok((vol.path.clone(), Some(vol.format.clone()), Some(vol)));
    }
    Ok((
        drive.file.clone(),
        Some(drive.get("format").unwrap_or("raw").to_string()),
        None,
    ))
}

/// The `-drive` value used before machine version 10.0
/// (`print_drive_commandline_full`).
pub fn legacy_drive(ctx: &Ctx, drive: &Drive) -> Result<String, CmdlineError> {
    let id = drive.id();
    let (path, format, vol) = path_and_format(ctx, drive)?;
    let def = vol.as_ref().map(|v| v.def.clone());
    if let (Some(d), Some("qcow2")) = (def.as_ref(), format.as_deref()) {
        if d.flag("snapshot-as-volume-chain") {
            return cfg_err(format!(
                "storage for '{}' is configured for snapshots as a volume chain - this requires QEMU machine version >= 10.0. See https://pve.proxmox.com/wiki/QEMU_Machine_Version_Upgrade",
                drive.file
            ));
        }
    }
    if def
        .as_ref()
        .is_some_and(|d| d.kind == StorageType::Rbd && !d.flag("krbd"))
    {
        return Err(CmdlineError::Unsupported(
            "librbd drives with -drive syntax".into(),
        ));
    }
    let mut opts = String::new();
    for o in ["media", "cache", "rerror", "werror", "discard"] {
        if let Some(v) = drive.get(o) {
            opts.push_str(&format!(",{o}={v}"));
        }
    }
    if let Some(v) = drive.get("snapshot") {
        opts.push_str(&format!(
            ",snapshot={}",
            if super::props::perl_true(Some(v)) && v != "off" {
                "on"
            } else {
                "off"
            }
        ));
    }
    if let Some(v) = drive.opts.flag("ro") {
        opts.push_str(&format!(",readonly={}", if v { "on" } else { "off" }));
    }
    for (name, _, shown) in throttle_limits(drive) {
        opts.push_str(&format!(",throttling.{name}={shown}"));
    }
    if let Some(f) = &format {
        opts.push_str(&format!(",format={f}"));
    }
    let direct = cache_direct(drive, def.as_ref());
    if drive.get("cache").is_none_or(str::is_empty) && direct {
        opts.push_str(",cache=none");
    }
    opts.push_str(&format!(",aio={}", aio(drive, def.as_ref(), direct)));
    if drive.get("media").is_none() && vol.as_ref().is_some_and(|v| v.content == Content::Iso) {
        return cfg_err(format!(
            "{id}: explicit media parameter is required for iso images"
        ));
    }
    if !drive.is_cdrom() {
        opts.push_str(&format!(",detect-zeroes={}", detect_zeroes(drive)));
    }
    let pathinfo = if path.is_empty() {
        String::new()
    } else {
        format!("file={path},")
    };
    Ok(format!("{pathinfo}if=none,id=drive-{id}{opts}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_match_upstream_scheme() {
        let volid = "local:8006/vm-8006-disk-0.qcow2";
        assert_eq!(
            node_name('e', "scsi0", volid, None),
            "ecd04be4259153b8293415fefa2a84c"
        );
        assert_eq!(
            node_name('f', "scsi0", volid, None),
            "fcd04be4259153b8293415fefa2a84c"
        );
    }
}
