//! VM templates and clones: a template's disks become base volumes;
//! linked clones are copy-on-write children of them, full clones are
//! copies made by `qemu-img convert` (any format to any image storage, as
//! it is now or at a snapshot). Whatever a failed clone made is freed.

use crate::error::{ApiError, ApiResult};
use crate::guest_volumes::{full_copy, linked_clone, open};
use crate::node::Node;
use crate::vm::{self, is_cdrom};
use crate::vm_snapshot::snap_volumes;
use oxve_schema::vmconfig::VmSection;
use oxve_storage::{Content, StoragePlugin, StorageType, VolumeId};
use std::io::Read;
use std::process::{Command, Stdio};

/// Keys a clone does not take from its source.
const NOT_CLONED: &[&str] = &[
    "lock",
    "parent",
    "template",
    "snaptime",
    "snapstate",
    "vmstate",
    "runningmachine",
    "runningcpu",
    "running-nets-host-mtu",
];

/// Converts stopped VM `vmid` into a template: the volumes of its disks
/// (or of `disk` only) become base volumes, from which linked clones are
/// made. Checks as upstream; the caller holds the guest lock.
pub fn template(node: &Node, vmid: u32, disk: Option<&str>, log: &dyn Fn(&str)) -> ApiResult<()> {
    let conf = node.load_vm(vmid)?.conf;
    vm::check_unlocked(&conf)?;
    if !conf.snapshots.is_empty() {
        return Err(ApiError::fail(
            "unable to create template, because VM contains snapshots",
        ));
    }
    let is_template = conf.main.get("template") == Some("1");
    if is_template && disk.is_none() {
        return Err(ApiError::fail("you can't convert a template to a template"));
    }
    if node.vm_pid(vmid).is_some() {
        return Err(ApiError::fail(
            "you can't convert a VM to template if VM is running",
        ));
    }
    let mut main = conf.main.clone();
    for (key, volid) in snap_volumes(&conf.main) {
        if disk.is_some_and(|d| d != key) || volid.contains("-cloudinit") {
            continue;
        }
        let vol = VolumeId::parse(&volid)?;
        let (plugin, volname) = open(node, &volid)?;
        if plugin.parse_volname(&volname)?.is_base {
            continue;
        }
        let base = plugin
            .create_base(&volname)
            .map_err(|e| ApiError::fail(format!("{key} ('{volid}'): {e}")))?;
        let new = VolumeId::new(&vol.storage, &base).to_string();
        log(&format!("{key}: {volid} is now the base volume {new}"));
        let value = main.props[&key].replacen(&volid, &new, 1);
        main.props.insert(key.clone(), value);
        // Written at once: a later failure must not lose the rename.
        let (k, v) = (key.clone(), main.props[&key].clone());
        node.update_vm(vmid, |conf| {
            conf.main.props.insert(k.clone(), v.clone());
            Ok(())
        })?;
    }
    node.update_vm(vmid, |conf| {
        conf.main.props.insert("template".into(), "1".into());
        Ok(())
    })
}

/// Whether `volid` is a base volume (linked clones can be made of it).
pub fn is_base(node: &Node, volid: &str) -> bool {
    open(node, volid)
        .and_then(|(p, v)| Ok(p.parse_volname(&v)?.is_base && p.capabilities().linked_clones))
        .unwrap_or(false)
}

/// What a clone is made from and how.
pub struct CloneSpec<'a> {
    pub vmid: u32,
    pub newid: u32,
    pub full: bool,
    /// Target storage of full copies (default: each disk's own).
    pub storage: Option<&'a str>,
    /// Target format of full copies (default: the source's, if the
    /// target storage has it).
    pub format: Option<&'a str>,
    pub snapname: Option<&'a str>,
    /// Bandwidth limit of full copies, KiB/s.
    pub bwlimit_kib: Option<u64>,
    /// Set when the source VM runs: full copies are then made by QEMU
    /// (drive-mirror) on this runtime, so that they are consistent.
    pub running: Option<tokio::runtime::Handle>,
}

/// The config section of clone `spec.newid` with its new volumes; the
/// volumes made so far are freed on failure.
pub fn clone_section(
    node: &Node,
    source: &VmSection,
    spec: &CloneSpec,
    log: &dyn Fn(&str),
) -> ApiResult<VmSection> {
    let mut section = source.clone();
    for key in NOT_CLONED {
        section.props.remove(*key);
    }
    section.props.retain(|k, _| !k.starts_with("unused"));
    let mut made: Vec<String> = Vec::new();
    let result = (|| {
        for (key, volid) in vm::drive_volumes(source) {
            let value = &source.props[&key];
            let cloudinit = volid.contains("-cloudinit");
            if is_cdrom(value) && !cloudinit {
                continue;
            }
            let new = if cloudinit {
                log(&format!("new cloud-init drive for {key}"));
                cloudinit_volume(node, &volid, spec.newid)?
            } else if spec.full {
                copy_disk(node, &key, &volid, spec, log)?
            } else {
                log(&format!("linked clone of {key} ({volid})"));
                let (plugin, volname) = open(node, &volid)?;
                let vol = VolumeId::parse(&volid)?;
                let name = linked_clone(&*plugin, &volname, spec.newid)
                    .map_err(|e| ApiError::fail(format!("{key} ('{volid}'): {}", e.message)))?;
                VolumeId::new(&vol.storage, &name).to_string()
            };
            made.push(new.clone());
            let mut value = value.replacen(&volid, &new, 1);
            if spec.full && !cloudinit {
                value = drop_opt(&value, "format");
            }
            section.props.insert(key, value);
        }
        Ok(())
    })();
    if let Err(e) = result {
        crate::guest::free_allocated(node, &made, log);
        return Err(e);
    }
    Ok(section)
}

/// A drive value without option `key` (a copy's format follows from its
/// volume, which may differ from the source's).
fn drop_opt(value: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    value
        .split(',')
        .filter(|p| !p.starts_with(&prefix))
        .collect::<Vec<_>>()
        .join(",")
}

/// A fresh cloud-init volume of VM `newid` next to `volid` (its content
/// is generated at start).
fn cloudinit_volume(node: &Node, volid: &str, newid: u32) -> ApiResult<String> {
    let (plugin, volname) = open(node, volid)?;
    let vol = VolumeId::parse(volid)?;
    let format = plugin.parse_volname(&volname)?.format;
    let name = plugin.alloc_for(
        Some(Content::Images),
        newid,
        format.as_deref(),
        Some(&format!("vm-{newid}-cloudinit")),
        4 * 1024,
    )?;
    Ok(VolumeId::new(&vol.storage, &name).to_string())
}

/// Whether a new volume on `storage` reads as zeros (so `qemu-img` can
/// skip writing them).
pub(crate) fn zero_initialized(storage: &dyn StoragePlugin) -> bool {
    let kind = storage.def().kind;
    kind.is_file_based()
        || matches!(
            kind,
            StorageType::LvmThin | StorageType::ZfsPool | StorageType::Rbd
        )
}

/// A full copy of drive `key`'s volume for the clone (or a move).
pub fn copy_disk(
    node: &Node,
    key: &str,
    volid: &str,
    spec: &CloneSpec,
    log: &dyn Fn(&str),
) -> ApiResult<String> {
    let vol = VolumeId::parse(volid)?;
    let (src, volname) = open(node, volid)?;
    let parsed = src.parse_volname(&volname)?;
    let src_format = parsed.format.clone().unwrap_or_else(|| "raw".into());
    let target_id = spec.storage.unwrap_or(&vol.storage);
    let dst = node.open_storage(target_id)?;
    dst.activate()?;
    let at = spec
        .snapname
        .map(|s| format!(" at snapshot '{s}'"))
        .unwrap_or_default();
    log(&format!(
        "full clone of {key} ({volid}){at} to storage '{target_id}'"
    ));
    if let (Some(rt), None) = (&spec.running, spec.snapname) {
        return mirror_copy(node, rt, key, volid, target_id, spec, log);
    }
    // A storage-native snapshot is read through the storage's own copy.
    if spec.snapname.is_some() && src_format != "qcow2" {
        let new = full_copy(&*src, &volname, spec.snapname, &*dst, spec.newid)?;
        return Ok(VolumeId::new(target_id, &new).to_string());
    }
    let formats = dst.def().kind.info().formats;
    let format = match spec.format {
        Some(f) => f.to_string(),
        None if formats.contains(&src_format.as_str()) => src_format.clone(),
        None => dst.def().default_format().unwrap_or("raw").to_string(),
    };
    let (size, _) = src.volume_size(&volname)?;
    let new = dst
        .alloc_for(
            Some(Content::Images),
            spec.newid,
            Some(&format),
            None,
            size.div_ceil(1024),
        )
        .map_err(|e| ApiError::fail(format!("{key}: {e}")))?;
    let new_volid = VolumeId::new(target_id, &new).to_string();
    let copied = (|| {
        src.activate_volume(&volname)?;
        dst.activate_volume(&new)?;
        let from = src.path(&volname)?;
        let to = dst.path(&new)?;
        convert(
            &from,
            &src_format,
            spec.snapname,
            &to,
            &format,
            zero_initialized(&*dst),
            spec.bwlimit_kib,
            log,
        )
    })();
    if let Err(e) = copied {
        let _ = dst.free_image(&new);
        return Err(ApiError::fail(format!("{key}: {}", e.message)));
    }
    log(&format!("{key}: copied to {new_volid}"));
    Ok(new_volid)
}

/// A copy of running drive `key` made by QEMU (drive-mirror, cancelled
/// once in step).
fn mirror_copy(
    node: &Node,
    rt: &tokio::runtime::Handle,
    key: &str,
    volid: &str,
    target_id: &str,
    spec: &CloneSpec,
    log: &dyn Fn(&str),
) -> ApiResult<String> {
    let (new_volid, target, format) =
        crate::vm_move::alloc_like(node, spec.newid, volid, target_id, spec.format)?;
    let (src, volname) = open(node, volid)?;
    let src_path = src.path(&volname)?;
    let lines = std::sync::Mutex::new(Vec::<String>::new());
    let copied = rt.block_on(async {
        let mut qmp = node
            .qemu()
            .qmp(spec.vmid, std::time::Duration::from_secs(10))
            .await
            .map_err(|e| ApiError::fail(format!("VM {} qmp: {e}", spec.vmid)))?;
        let log_line = |l: &str| {
            lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(l.to_string())
        };
        crate::vm_move::mirror(
            &mut qmp,
            key,
            &src_path,
            &target,
            &format,
            false,
            spec.bwlimit_kib,
            &log_line,
        )
        .await
    });
    for l in lines.into_inner().unwrap_or_default() {
        log(&l);
    }
    if let Err(e) = copied {
        let _ = vm::free_volume(node, &new_volid);
        return Err(e);
    }
    Ok(new_volid)
}

/// `qemu-img convert` of `from` into the existing `to`, logging progress
/// in 10 % steps.
#[allow(clippy::too_many_arguments)]
pub(crate) fn convert(
    from: &std::path::Path,
    from_format: &str,
    snapshot: Option<&str>,
    to: &std::path::Path,
    to_format: &str,
    target_is_zero: bool,
    bwlimit_kib: Option<u64>,
    log: &dyn Fn(&str),
) -> ApiResult<()> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-p", "-n", "-f", from_format, "-O", to_format]);
    if let Some(limit) = bwlimit_kib.filter(|l| *l > 0) {
        cmd.args(["-r", &format!("{limit}K")]);
    }
    if target_is_zero {
        cmd.arg("--target-is-zero");
    }
    if let Some(s) = snapshot {
        // The image may be open in a running QEMU; a snapshot's clusters
        // do not change under it.
        cmd.args(["-U", "-l", &format!("snapshot.name={s}")]);
    }
    cmd.arg(from).arg(to);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::fail(format!("cannot run qemu-img: {e}")))?;
    let started = std::time::Instant::now();
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| ApiError::fail("qemu-img: no stdout"))?;
    let mut buf = [0u8; 256];
    let mut line = String::new();
    let mut next = 10.0;
    while let Ok(n) = out.read(&mut buf) {
        if n == 0 {
            break;
        }
        for c in String::from_utf8_lossy(&buf[..n]).chars() {
            if c != '\r' && c != '\n' {
                line.push(c);
                continue;
            }
            // "    (12.50/100%)"
            let pct = line
                .trim()
                .trim_start_matches('(')
                .split('/')
                .next()
                .and_then(|p| p.parse::<f64>().ok());
            if let Some(p) = pct.filter(|p| *p >= next) {
                log(&format!("transferred {p:.0}%"));
                next = (p / 10.0).floor() * 10.0 + 10.0;
            }
            line.clear();
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| ApiError::fail(format!("qemu-img: {e}")))?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        return Err(ApiError::fail(format!(
            "qemu-img convert failed: {}",
            err.trim()
        )));
    }
    log(&format!(
        "copy done in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// A NIC value with a new MAC address (every clone gets its own).
pub fn new_mac(value: &str) -> String {
    let kept: Vec<String> = value
        .split(',')
        .filter(|p| !p.starts_with("macaddr="))
        .enumerate()
        .map(|(i, p)| match p.split_once('=') {
            Some((model, _)) if i == 0 && model != "model" && model != "bridge" => {
                model.to_string()
            }
            _ => p.to_string(),
        })
        .collect();
    crate::handlers::qemu::fill_mac(&kept.join(","))
}

/// The identity a clone must not share: name, MACs, SMBIOS UUID, VM
/// generation id (as upstream).
pub fn new_identity(section: &mut VmSection, source_vmid: u32, name: Option<&str>) {
    let name = match name {
        Some(n) => n.to_string(),
        None => format!(
            "Copy-of-VM-{}",
            section
                .get("name")
                .map(str::to_string)
                .unwrap_or_else(|| source_vmid.to_string())
        ),
    };
    section.props.insert("name".into(), name);
    for (key, value) in section.props.iter_mut() {
        if key.starts_with("net") && key[3..].parse::<u32>().is_ok() {
            *value = new_mac(value);
        }
    }
    if let Some(smbios) = section.props.get_mut("smbios1") {
        let rest: Vec<&str> = smbios
            .split(',')
            .filter(|p| !p.starts_with("uuid=") && !p.is_empty())
            .collect();
        let mut parts = vec![format!("uuid={}", vm::random_uuid())];
        parts.extend(rest.iter().map(|s| s.to_string()));
        *smbios = parts.join(",");
    }
    if section.props.contains_key("vmgenid") {
        section.props.insert("vmgenid".into(), vm::random_uuid());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_get_new_macs() {
        let v = new_mac("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1");
        assert!(v.starts_with("virtio=BC:24:11:"), "{v}");
        assert!(!v.contains("BC:24:11:00:00:01"));
        assert!(v.ends_with(",bridge=vmbr0,firewall=1"));
        let v = new_mac("model=e1000,macaddr=BC:24:11:00:00:02,bridge=vmbr1");
        assert!(!v.contains("00:00:02"), "{v}");
    }

    #[test]
    fn clones_get_a_new_identity() {
        let mut s = VmSection::default();
        s.props.insert("name".into(), "web".into());
        s.props
            .insert("smbios1".into(), "uuid=1-2-3,manufacturer=x".into());
        s.props.insert("vmgenid".into(), "g".into());
        new_identity(&mut s, 100, None);
        assert_eq!(s.get("name"), Some("Copy-of-VM-web"));
        let smbios = s.get("smbios1").unwrap_or_default();
        assert!(smbios.starts_with("uuid=") && smbios.ends_with(",manufacturer=x"));
        assert!(!smbios.contains("1-2-3"));
        assert_ne!(s.get("vmgenid"), Some("g"));
        new_identity(&mut s, 100, Some("db"));
        assert_eq!(s.get("name"), Some("db"));
    }

    #[test]
    fn format_option_follows_the_copy() {
        assert_eq!(
            drop_opt("lvm:vm-1-disk-0,format=raw,size=1G", "format"),
            "lvm:vm-1-disk-0,size=1G"
        );
    }
}
