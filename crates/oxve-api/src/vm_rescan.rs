//! `qm disk rescan`: brings VM configs in line with the storages, as
//! upstream's — a drive's `size=` is set to its volume's real size, and a
//! volume a VM owns but no config section names is added as `unused<n>`.
//! Runs in the `qm` process on the node's config store (each config is
//! changed in one store transaction, so the daemon's own changes are not
//! lost), like upstream's, which works on the files under its config lock.

use crate::error::{ApiError, ApiResult};
use crate::vm::{config_key, is_cdrom};
use oxve_schema::vmconfig::{drive_file, is_drive_key, VmConfig, VmSection};
use oxve_storage::{Content, StorageConfig, VolumeId};
use std::collections::BTreeMap;
use std::path::Path;

/// Volumes by owner VM: volume id → virtual size in bytes.
type Volumes = BTreeMap<u32, BTreeMap<String, u64>>;

/// Rescans the VMs `vmids` of node `node` (rooted at `root`); with
/// `dryrun` only says what it would change.
pub fn rescan_at(
    root: &Path,
    node: &str,
    vmids: &[u32],
    dryrun: bool,
    log: &mut dyn FnMut(&str),
) -> ApiResult<()> {
    let store = crate::storage::open_store_at(root)?;
    let text = store
        .get(crate::storage::STORAGE_CFG)?
        .map(|e| e.text)
        .unwrap_or_default();
    let storage = StorageConfig::parse(&text);
    log("rescan volumes...");
    let mut volumes = Volumes::new();
    for def in storage.storages() {
        if !def.enabled_on(node) || !def.content().contains(Content::Images) {
            continue;
        }
        let listed = crate::storage::open_storage_at(root, &def.id)
            .and_then(|plugin| {
                plugin.activate()?;
                Ok(plugin.list_images(None)?)
            })
            .map_err(|e| e.message);
        match listed {
            Ok(list) => {
                for vol in list {
                    if let Some(vmid) = vol.vmid {
                        volumes.entry(vmid).or_default().insert(vol.volid, vol.size);
                    }
                }
            }
            Err(e) => log(&format!("storage '{}' skipped: {e}", def.id)),
        }
    }
    for &vmid in vmids {
        let key = config_key(node, vmid);
        let owned = volumes.remove(&vmid).unwrap_or_default();
        let mut lines = Vec::new();
        let changed = store.update(&key, |current| {
            let Some(text) = current else {
                return Err(ApiError::fail(format!("VM {vmid} does not exist")));
            };
            let (mut conf, _) =
                VmConfig::parse(vmid, text, false).map_err(|e| ApiError::fail(e.0))?;
            lines = update_config(vmid, &mut conf, &owned);
            if lines.is_empty() || dryrun {
                return Ok(None);
            }
            conf.prepare_write().map_err(|e| ApiError::fail(e.0))?;
            Ok(Some(conf.write()))
        });
        if let Err(e) = changed {
            log(&format!("VM {vmid}: {}", e.message));
            continue;
        }
        for line in lines {
            log(&line);
        }
    }
    Ok(())
}

/// The sections of a config, where volumes may be named.
fn sections(conf: &VmConfig) -> impl Iterator<Item = &VmSection> {
    std::iter::once(&conf.main)
        .chain(conf.snapshots.values())
        .chain(std::iter::once(&conf.pending))
}

/// Whether `section` names volume `volid` (a drive, unused entry or state).
fn names(section: &VmSection, volid: &str) -> bool {
    section.props.iter().any(|(k, v)| {
        (is_drive_key(k) && drive_file(v) == Some(volid))
            || ((k.starts_with("unused") || k == "vmstate") && v == volid)
    })
}

/// Applies the storages' view (`owned`: the VM's volumes and sizes) to
/// `conf`; returns upstream's lines for what changed.
fn update_config(vmid: u32, conf: &mut VmConfig, owned: &BTreeMap<String, u64>) -> Vec<String> {
    let mut lines = Vec::new();
    let keys: Vec<String> = conf.main.props.keys().cloned().collect();
    for key in keys.iter().filter(|k| is_drive_key(k)) {
        let value = conf.main.props[key].clone();
        if is_cdrom(&value) {
            continue;
        }
        let Some(file) = drive_file(&value) else {
            continue;
        };
        // A volume of another VM (a linked clone's base) is left alone.
        let Some(&size) = owned.get(file) else {
            continue;
        };
        let new_size = oxve_schema::format::format_size(size);
        let old_size = value
            .split(',')
            .find_map(|p| p.strip_prefix("size="))
            .map(str::to_string);
        if old_size.as_deref() == Some(new_size.as_str()) {
            continue;
        }
        let mut parts: Vec<String> = value
            .split(',')
            .filter(|p| !p.starts_with("size="))
            .map(str::to_string)
            .collect();
        parts.push(format!("size={new_size}"));
        conf.main.props.insert(key.clone(), parts.join(","));
        lines.push(format!(
            "VM {vmid} ({key}): size of disk '{file}' updated from {} to {new_size}",
            old_size.unwrap_or_else(|| "0".into())
        ));
    }
    for volid in owned.keys() {
        if VolumeId::parse(volid).is_err() || sections(conf).any(|s| names(s, volid)) {
            continue;
        }
        let slot = (0..256)
            .map(|i| format!("unused{i}"))
            .find(|k| !conf.main.props.contains_key(k) && !conf.pending.props.contains_key(k));
        let Some(slot) = slot else {
            lines.push(format!("VM {vmid}: no free unused slot for '{volid}'"));
            continue;
        };
        conf.main.props.insert(slot.clone(), volid.clone());
        lines.push(format!(
            "VM {vmid}: add unreferenced volume '{volid}' as '{slot}' to config"
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_unreferenced_volumes() {
        let text = "scsi0: local:100/vm-100-disk-0.qcow2,size=1G\n\
                    ide2: local:iso/x.iso,media=cdrom\n\
                    unused0: local:100/vm-100-disk-2.raw\n\
                    \n[snap]\nscsi0: local:100/vm-100-disk-0.qcow2,size=1G\n\
                    vmstate: local:100/vm-100-state-snap.raw\n";
        let (mut conf, _) = VmConfig::parse(100, text, false).unwrap();
        let owned: BTreeMap<String, u64> = [
            ("local:100/vm-100-disk-0.qcow2", 2u64 << 30),
            ("local:100/vm-100-disk-1.raw", 1 << 30),
            ("local:100/vm-100-disk-2.raw", 1 << 30),
            ("local:100/vm-100-state-snap.raw", 1 << 20),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let lines = update_config(100, &mut conf, &owned);
        assert_eq!(
            lines,
            [
                "VM 100 (scsi0): size of disk 'local:100/vm-100-disk-0.qcow2' updated from 1G to 2G",
                "VM 100: add unreferenced volume 'local:100/vm-100-disk-1.raw' as 'unused1' to config",
            ]
        );
        assert_eq!(
            conf.main.get("scsi0"),
            Some("local:100/vm-100-disk-0.qcow2,size=2G")
        );
        assert_eq!(
            conf.main.get("unused1"),
            Some("local:100/vm-100-disk-1.raw")
        );
        assert!(update_config(100, &mut conf, &owned).is_empty());
    }
}
