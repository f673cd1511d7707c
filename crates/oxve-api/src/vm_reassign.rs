//! `move_disk` with `target-vmid`: a VM's disk handed to another VM by
//! renaming its volume on the storage (`vm-100-disk-0` → `vm-101-disk-N`),
//! as upstream's disk reassignment. The source must not have the disk in
//! use (stopped, or an `unused<n>`), neither VM may be locked or a
//! template, and a volume a snapshot refers to stays. A running target
//! gets a drive through its hot-plug rules (else pending until its next
//! start).

use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use crate::vm::{check_unlocked, is_cdrom};
use oxve_schema::vmconfig::{drive_file, is_drive_key, VmSection};
use oxve_storage::VolumeId;
use std::sync::Arc;

/// What a reassignment moves where.
pub struct Reassign {
    pub vmid: u32,
    pub disk: String,
    pub target_vmid: u32,
    pub target_disk: String,
    pub digest: Option<String>,
    pub target_digest: Option<String>,
}

type Log<'a> = &'a (dyn Fn(&str) + Sync);

fn check_digest(id: u32, want: &Option<String>, have: &str) -> ApiResult<()> {
    match want {
        Some(d) if d != have => Err(ApiError::fail(format!(
            "VM {id}: detected modified configuration - file changed by other user? Try again."
        ))),
        _ => Ok(()),
    }
}

/// The checks before the task (upstream's): both VMs exist, neither is
/// locked or a template, the disk exists and has a volume of its own on a
/// storage, no snapshot uses it, the source does not run it, the target
/// key is free. Returns the source volume.
pub fn check(node: &Node, mv: &Reassign) -> ApiResult<String> {
    if mv.vmid == mv.target_vmid {
        return Err(ApiError::param(
            "target-vmid",
            "must be different than source VMID to reassign disk",
        ));
    }
    if !is_drive_key(&mv.target_disk) && !mv.target_disk.starts_with("unused") {
        return Err(ApiError::param(
            "target-disk",
            "must be a disk (ide/sata/scsi/virtio<n>, efidisk0, tpmstate0) or unused<n>",
        ));
    }
    if mv.disk.starts_with("unused") && !mv.target_disk.starts_with("unused") {
        return Err(ApiError::fail(
            "Moving an unused disk to a used one is not possible",
        ));
    }
    for id in [mv.vmid, mv.target_vmid] {
        if !node.vm_exists(id)? {
            return Err(ApiError::fail(format!("could not find VM {id}")));
        }
    }
    let source = node.load_vm(mv.vmid)?;
    let target = node.load_vm(mv.target_vmid)?;
    check_unlocked(&source.conf)?;
    check_unlocked(&target.conf)?;
    if source.conf.main.get("template") == Some("1")
        || target.conf.main.get("template") == Some("1")
    {
        return Err(ApiError::fail("Can't move disks from or to template VMs"));
    }
    check_digest(mv.vmid, &mv.digest, &source.digest)?;
    check_digest(mv.target_vmid, &mv.target_digest, &target.digest)?;
    let value = source.conf.main.get(&mv.disk).ok_or_else(|| {
        ApiError::fail(format!(
            "Disk '{}' for VM '{}' does not exist",
            mv.disk, mv.vmid
        ))
    })?;
    if target.conf.main.get(&mv.target_disk).is_some()
        || target.conf.pending.get(&mv.target_disk).is_some()
    {
        return Err(ApiError::fail(format!(
            "Target disk key '{}' is already in use for VM '{}'",
            mv.target_disk, mv.target_vmid
        )));
    }
    let unused = mv.disk.starts_with("unused");
    if !unused && is_cdrom(value) {
        return Err(ApiError::fail(
            "CD drive contents can't be moved to another VM",
        ));
    }
    let volid = if unused {
        Some(value)
    } else {
        drive_file(value)
    }
    .filter(|f| *f != "none")
    .ok_or_else(|| ApiError::fail(format!("disk '{}' has no associated volume", mv.disk)))?
    .to_string();
    let vol = VolumeId::parse(&volid)
        .map_err(|_| ApiError::fail(format!("Volume '{volid}' not managed by PVE")))?;
    if source
        .conf
        .snapshots
        .values()
        .any(|s| section_uses(s, &volid))
    {
        return Err(ApiError::fail(
            "Can't move disk used by a snapshot to another VM",
        ));
    }
    if !node.open_storage(&vol.storage)?.capabilities().rename {
        return Err(ApiError::fail(
            "Storage does not support moving of this disk to another VM",
        ));
    }
    if !unused && node.vm_pid(mv.vmid).is_some() {
        return Err(ApiError::fail(
            "Cannot move disk to another VM while the source VM is running - detach first",
        ));
    }
    Ok(volid)
}

/// Whether a config section refers to volume `volid`.
fn section_uses(section: &VmSection, volid: &str) -> bool {
    section.props.iter().any(|(k, v)| {
        (is_drive_key(k) && drive_file(v) == Some(volid)) || (k.starts_with("unused") && v == volid)
    })
}

/// `boot` without `key` in its `order=`, when it was there.
fn boot_without(boot: &str, key: &str) -> Option<String> {
    let parts: Vec<String> = boot.split(',').map(str::to_string).collect();
    let mut changed = false;
    let out: Vec<String> = parts
        .into_iter()
        .map(|p| match p.strip_prefix("order=") {
            Some(list) => {
                let kept: Vec<&str> = list.split(';').filter(|d| *d != key).collect();
                changed |= kept.len() != list.split(';').count();
                format!("order={}", kept.join(";"))
            }
            None => p,
        })
        .collect();
    changed.then(|| out.join(","))
}

/// The reassignment; both VMs' guest locks are held by the caller.
pub async fn run(node: &Arc<Node>, mv: Reassign, log: Log<'_>) -> ApiResult<()> {
    let n = node.clone();
    let (target_vmid, target_disk) = (mv.target_vmid, mv.target_disk.clone());
    let (lines, result) = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        let result = rename_and_write(&n, &mv, &mut lines);
        (lines, result)
    })
    .await
    .map_err(|e| ApiError::fail(e.to_string()))?;
    for line in lines {
        log(&line);
    }
    result?;
    if node.vm_pid(target_vmid).is_some() && !target_disk.starts_with("unused") {
        crate::vm_hotplug::apply_pending(node, target_vmid, log).await?;
        let pending = node.load_vm(target_vmid)?.conf.pending;
        if pending.get(&target_disk).is_some() {
            log(&format!(
                "'{target_disk}' of VM {target_vmid} is pending until its next start"
            ));
        }
    }
    Ok(())
}

/// Renames the volume, writes the target (first: should that fail, the
/// volume is renamed back and the source keeps it), then drops the disk
/// from the source. Log lines go to `lines`.
fn rename_and_write(node: &Node, mv: &Reassign, lines: &mut Vec<String>) -> ApiResult<()> {
    let volid = check(node, mv)?;
    let source = node.load_vm(mv.vmid)?.conf.main;
    let value = source.get(&mv.disk).unwrap_or_default().to_string();
    lines.push(format!(
        "reassign disk '{}' from VM '{}' as '{}' to VM '{}'",
        mv.disk, mv.vmid, mv.target_disk, mv.target_vmid
    ));
    let vol = VolumeId::parse(&volid)?;
    let plugin = node.open_storage(&vol.storage)?;
    plugin.activate()?;
    let renamed = crate::guest_volumes::with_free_name(
        &*plugin,
        &*plugin,
        &vol.volname,
        mv.target_vmid,
        |name| plugin.rename(&vol.volname, mv.target_vmid, name),
    )?;
    let new_volid = VolumeId::new(&vol.storage, &renamed).to_string();
    let new_value = if mv.target_disk.starts_with("unused") || mv.disk.starts_with("unused") {
        new_volid.clone()
    } else {
        value.replacen(&volid, &new_volid, 1)
    };
    let target_running = node.vm_pid(mv.target_vmid).is_some();
    let written = node.update_vm(mv.target_vmid, |conf| {
        if conf.main.get(&mv.target_disk).is_some() {
            return Err(ApiError::fail(format!(
                "Target disk key '{}' is already in use for VM '{}'",
                mv.target_disk, mv.target_vmid
            )));
        }
        if target_running && !mv.target_disk.starts_with("unused") {
            conf.pending
                .props
                .insert(mv.target_disk.clone(), new_value.clone());
        } else {
            conf.main
                .props
                .insert(mv.target_disk.clone(), new_value.clone());
        }
        Ok(())
    });
    if let Err(e) = written {
        let new = VolumeId::parse(&new_volid)?;
        let old_name = vol.volname.rsplit('/').next().unwrap_or(&vol.volname);
        if let Err(back) = plugin.rename(&new.volname, mv.vmid, old_name) {
            lines.push(format!(
                "could not rename '{new_volid}' back to '{volid}': {back}"
            ));
        }
        return Err(e);
    }
    lines.push(format!(
        "removing disk '{}' from VM '{}' config",
        mv.disk, mv.vmid
    ));
    if source
        .get("boot")
        .and_then(|b| boot_without(b, &mv.disk))
        .is_some()
    {
        lines.push(format!(
            "removing disk '{}' from boot order config",
            mv.disk
        ));
    }
    node.update_vm(mv.vmid, |conf| {
        conf.main.props.remove(&mv.disk);
        if let Some(boot) = conf
            .main
            .get("boot")
            .and_then(|b| boot_without(b, &mv.disk))
        {
            conf.main.props.insert("boot".into(), boot);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_order_without_a_disk() {
        assert_eq!(
            boot_without("order=scsi0;ide2;net0", "scsi0").as_deref(),
            Some("order=ide2;net0")
        );
        assert_eq!(boot_without("order=ide2;net0", "scsi0"), None);
        assert_eq!(boot_without("cdn", "scsi0"), None);
    }

    #[test]
    fn sections_using_a_volume() {
        let mut s = VmSection::default();
        s.props.insert(
            "scsi0".into(),
            "local:100/vm-100-disk-0.qcow2,size=1G".into(),
        );
        s.props
            .insert("unused0".into(), "local:100/vm-100-disk-1.raw".into());
        assert!(section_uses(&s, "local:100/vm-100-disk-0.qcow2"));
        assert!(section_uses(&s, "local:100/vm-100-disk-1.raw"));
        assert!(!section_uses(&s, "local:100/vm-100-disk-2.raw"));
    }
}
