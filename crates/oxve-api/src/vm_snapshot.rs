//! VM snapshots: upstream's config state machine (`snapstate: prepare`
//! → commit, `parent` chain, `lock: snapshot`), carried out on the disks
//! — qcow2 images by QEMU itself while the VM runs, other volumes by
//! their storage while the VM is paused — optionally with the RAM state
//! in a `vm-<vmid>-state-<snap>` volume. Every step that fails undoes
//! what it did and says so.

use crate::blocking;
use crate::error::{ApiError, ApiResult};
use crate::guest_volumes::{open, reparent};
use crate::node::Node;
use crate::vm::{self, check_unlocked, is_cdrom, StartOptions};
use crate::vm_state;
use oxve_qemu::qmp::Qmp;
use oxve_schema::vmconfig::{drive_file, is_drive_key, VmSection};
use oxve_storage::{Content, StorageType, VolumeId};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// A saved RAM state: its volume, `runningmachine` and `runningcpu`.
type SavedState = (String, String, Option<String>);

/// Keys a snapshot section does not copy from the main section.
const NOT_IN_SNAPSHOT: &[&str] = &["lock", "snapstate"];
/// Keys only a snapshot has; a rollback does not carry them over.
const SNAPSHOT_ONLY: &[&str] = &[
    "snaptime",
    "snapstate",
    "vmstate",
    "runningmachine",
    "runningcpu",
    "running-nets-host-mtu",
];
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

type Log<'a> = &'a (dyn Fn(&str) + Sync);

/// The volumes a snapshot covers: drives on storages, not CD-ROMs (ISO
/// images, cloud-init drives).
pub fn snap_volumes(section: &VmSection) -> Vec<(String, String)> {
    vm::drive_volumes(section)
        .into_iter()
        .filter(|(key, _)| !section.get(key).is_some_and(is_cdrom))
        .collect()
}

/// How a volume is snapshotted while its VM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// An internal qcow2 snapshot, taken by QEMU.
    Qemu,
    /// The storage's own snapshot.
    Storage,
}

/// Whether `volid` can be snapshotted, and how (upstream's `snapshot`
/// feature: qcow2 images anywhere, raw volumes on storages with native
/// snapshots).
fn method(node: &Node, key: &str, volid: &str) -> ApiResult<Method> {
    let vol = VolumeId::parse(volid)?;
    let plugin = node.open_storage(&vol.storage)?;
    let parsed = plugin.parse_volname(&vol.volname)?;
    if parsed.format.as_deref() == Some("qcow2") {
        return Ok(Method::Qemu);
    }
    let kind = plugin.def().kind;
    let native = !kind.is_file_based() || kind == StorageType::Btrfs;
    if native && plugin.capabilities().snapshots && parsed.content == Content::Images {
        return Ok(Method::Storage);
    }
    Err(ApiError::fail(format!(
        "snapshot feature is not available: {key} ('{volid}') is a {} volume on a '{}' storage (use qcow2, or a storage with snapshots)",
        parsed.format.as_deref().unwrap_or("raw"),
        kind.as_str()
    )))
}

/// Whether `volid` can be snapshotted (the `snapshot` feature).
pub fn snapshot_possible(node: &Node, volid: &str) -> bool {
    method(node, "", volid).is_ok()
}

async fn connect(node: &Node, vmid: u32) -> ApiResult<Qmp> {
    node.qemu()
        .qmp(vmid, QMP_TIMEOUT)
        .await
        .map_err(|e| ApiError::fail(format!("VM {vmid} qmp: {e}")))
}

/// Snapshots (`delete: false`) or removes the snapshot of (`delete:
/// true`) drive `key`'s volume, through QEMU when it has the image open.
async fn volume_step(
    node: &Arc<Node>,
    qmp: Option<&mut Qmp>,
    key: &str,
    volid: &str,
    name: &str,
    delete: bool,
) -> ApiResult<()> {
    let how = {
        let (n, k, v) = (node.clone(), key.to_string(), volid.to_string());
        blocking(move || method(&n, &k, &v)).await?
    };
    if let (Some(qmp), Method::Qemu) = (qmp, how) {
        let command = if delete {
            "blockdev-snapshot-delete-internal-sync"
        } else {
            "blockdev-snapshot-internal-sync"
        };
        return qmp
            .execute_within(
                command,
                Some(json!({"device": format!("drive-{key}"), "name": name})),
                Duration::from_secs(600),
            )
            .await
            .map(drop)
            .map_err(|e| ApiError::fail(format!("{key} ('{volid}'): {e}")));
    }
    let (n, v, s) = (node.clone(), volid.to_string(), name.to_string());
    blocking(move || {
        let (plugin, volname) = open(&n, &v)?;
        if delete {
            plugin.delete_snapshot(&volname, &s)?;
        } else {
            plugin.snapshot(&volname, &s)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| ApiError::fail(format!("{key} ('{volid}'): {}", e.message)))
}

/// The storage for a snapshot's RAM state: `vmstatestorage`, else the
/// first disk's storage, else `local` (as upstream).
pub(crate) fn state_storage(section: &VmSection) -> String {
    if let Some(s) = section.get("vmstatestorage") {
        return s.to_string();
    }
    snap_volumes(section)
        .first()
        .and_then(|(_, volid)| VolumeId::parse(volid).ok())
        .map(|v| v.storage)
        .unwrap_or_else(|| "local".into())
}

/// Allocates the raw `vm-<vmid>-state-<name>` volume; returns its id
/// and host path.
pub(crate) fn alloc_state(
    node: &Node,
    vmid: u32,
    name: &str,
    section: &VmSection,
) -> ApiResult<String> {
    let storage = state_storage(section);
    let plugin = node.open_storage(&storage)?;
    plugin.activate()?;
    let memory = section
        .get("memory")
        .and_then(|m| {
            m.split(',')
                .find_map(|p| p.strip_prefix("current=").or(Some(p)))
        })
        .and_then(|m| m.parse().ok())
        .unwrap_or(512);
    let volname = plugin
        .alloc_for(
            Some(Content::Images),
            vmid,
            Some("raw"),
            Some(&format!("vm-{vmid}-state-{name}")),
            vm_state::volume_size_kib(memory),
        )
        .map_err(|e| ApiError::fail(format!("cannot allocate the state volume: {e}")))?;
    Ok(VolumeId::new(&storage, &volname).to_string())
}

pub(crate) fn volume_path(node: &Node, volid: &str) -> ApiResult<std::path::PathBuf> {
    let (plugin, volname) = open(node, volid)?;
    plugin.activate_volume(&volname)?;
    Ok(plugin.path(&volname)?)
}

/// Creates snapshot `name` of VM `vmid`; with `vmstate` (and a running
/// VM) its RAM state too. A running VM is paused while its disks are
/// snapshotted, so that they agree with each other (and with the RAM).
pub async fn create(
    node: &Arc<Node>,
    vmid: u32,
    name: String,
    description: Option<String>,
    vmstate: bool,
    log: Log<'_>,
) -> ApiResult<()> {
    if name == "current" || name == "vzdump" || name == "pending" {
        return Err(ApiError::param(
            "snapname",
            format!("snapshot name '{name}' is reserved"),
        ));
    }
    let pid = node.vm_pid(vmid);
    let with_state = vmstate && pid.is_some();
    let snaptime = crate::auth::now();
    let snap = {
        let (n, name) = (node.clone(), name.clone());
        blocking(move || {
            n.update_vm(vmid, |conf| {
                check_unlocked(conf)?;
                if conf.main.get("template") == Some("1") {
                    return Err(ApiError::fail(
                        "you can't take a snapshot if it's a template",
                    ));
                }
                if conf.snapshots.contains_key(&name) {
                    return Err(ApiError::fail(format!(
                        "snapshot name '{name}' already used"
                    )));
                }
                for (key, volid) in snap_volumes(&conf.main) {
                    method(&n, &key, &volid)?;
                }
                let mut snap = conf.main.clone();
                for key in NOT_IN_SNAPSHOT {
                    snap.props.remove(*key);
                }
                snap.description = description.clone().unwrap_or_default();
                snap.props.insert("snapstate".into(), "prepare".into());
                snap.props.insert("snaptime".into(), snaptime.to_string());
                conf.snapshots.insert(name.clone(), snap.clone());
                conf.main.props.insert("lock".into(), "snapshot".into());
                Ok(snap)
            })
        })
        .await?
    };
    let result = take(node, vmid, &name, &snap, with_state, log).await;
    let (n, nm) = (node.clone(), name.clone());
    match result {
        Ok(state) => {
            blocking(move || {
                n.update_vm(vmid, |conf| {
                    if let Some(snap) = conf.snapshots.get_mut(&nm) {
                        snap.props.remove("snapstate");
                        if let Some((volid, machine, cpu)) = &state {
                            snap.props.insert("vmstate".into(), volid.clone());
                            snap.props.insert("runningmachine".into(), machine.clone());
                            if let Some(cpu) = cpu {
                                snap.props.insert("runningcpu".into(), cpu.clone());
                            }
                        }
                    }
                    conf.main.props.insert("parent".into(), nm.clone());
                    conf.main.props.remove("lock");
                    Ok(())
                })
            })
            .await
        }
        Err(e) => {
            log(&format!(
                "snapshot failed, removing it again: {}",
                e.message
            ));
            blocking(move || {
                n.update_vm(vmid, |conf| {
                    conf.snapshots.remove(&nm);
                    conf.main.props.remove("lock");
                    Ok(())
                })
            })
            .await?;
            Err(e)
        }
    }
}

/// Takes the volume snapshots (and `with_state`, the RAM state); undoes them on failure. Returns the state volume and the
/// running machine when saved.
async fn take(
    node: &Arc<Node>,
    vmid: u32,
    name: &str,
    snap: &VmSection,
    with_state: bool,
    log: Log<'_>,
) -> ApiResult<Option<SavedState>> {
    let vols = snap_volumes(snap);
    let mut qmp = match node.vm_pid(vmid) {
        Some(_) => Some(connect(node, vmid).await?),
        None => None,
    };
    let mut was_running = false;
    let mut frozen = None;
    if let Some(q) = qmp.as_mut() {
        was_running = q.status().await.map(|s| s.running).unwrap_or(false);
        if was_running && !with_state {
            // Consistent file systems on the disks (a RAM snapshot has the
            // guest's caches anyway).
            frozen = crate::vm_freeze::freeze(node, vmid, snap, log).await;
        }
        if was_running {
            log("pausing the VM while its disks are snapshotted");
            if let Err(e) = q.stop().await {
                crate::vm_freeze::thaw(frozen, log).await;
                return Err(ApiError::fail(format!("cannot pause the VM: {e}")));
            }
        }
    }
    let mut done: Vec<&(String, String)> = Vec::new();
    let mut result: ApiResult<Option<SavedState>> = Ok(None);
    for vol in &vols {
        log(&format!("snapshotting 'drive-{}' ({})", vol.0, vol.1));
        match volume_step(node, qmp.as_mut(), &vol.0, &vol.1, name, false).await {
            Ok(()) => done.push(vol),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let mut state_volid = None;
    if let (Ok(_), true, Some(q)) = (&result, with_state, qmp.as_mut()) {
        result = save_state(node, q, vmid, name, snap, log, &mut state_volid).await;
    }
    if let Some(q) = qmp.as_mut() {
        if was_running {
            log("resuming the VM");
            if let Err(e) = q.cont().await {
                log(&format!("could not resume the VM: {e}"));
            }
            crate::vm_freeze::thaw(frozen, log).await;
        } else if state_volid.is_some() {
            vm_state::reactivate(q).await;
        }
    }
    if result.is_err() {
        for (key, volid) in done.into_iter().rev() {
            if let Err(e) = volume_step(node, qmp.as_mut(), key, volid, name, true).await {
                log(&format!(
                    "could not remove the snapshot of '{volid}': {}",
                    e.message
                ));
            }
        }
        if let Some(volid) = state_volid {
            let n = node.clone();
            let _ = blocking(move || vm::free_volume(&n, &volid)).await;
        }
    }
    result
}

/// Allocates the state volume (its id goes to `volid` at once, so that a
/// failure frees it) and saves the paused VM's state into it.
#[allow(clippy::too_many_arguments)]
async fn save_state(
    node: &Arc<Node>,
    qmp: &mut Qmp,
    vmid: u32,
    name: &str,
    snap: &VmSection,
    log: Log<'_>,
    volid: &mut Option<String>,
) -> ApiResult<Option<SavedState>> {
    let n = node.clone();
    let generated = blocking(move || {
        let main = n.load_vm(vmid)?.conf.main;
        Ok(vm::command_line(&n, vmid, &main, true)?.0.args)
    })
    .await?;
    let machine = vm_state::running_machine(qmp, &generated).await?;
    let cpu = crate::vm_suspend::running_cpu(&generated);
    let (n, nm, s) = (node.clone(), name.to_string(), snap.clone());
    let id = blocking(move || alloc_state(&n, vmid, &nm, &s)).await?;
    *volid = Some(id.clone());
    let (n, i) = (node.clone(), id.clone());
    let path = blocking(move || volume_path(&n, &i)).await?;
    log(&format!("saving VM state and RAM to '{id}'"));
    vm_state::save(qmp, &path, log).await?;
    Ok(Some((id, machine, cpu)))
}

/// Rolls VM `vmid` back to snapshot `name`. A running VM is stopped
/// first; with a saved RAM state the VM runs again from that state,
/// else it starts when `start` is set.
pub async fn rollback(
    node: &Arc<Node>,
    vmid: u32,
    name: &str,
    start: bool,
    log: Log<'_>,
) -> ApiResult<()> {
    let (n, nm) = (node.clone(), name.to_string());
    let snap = blocking(move || {
        n.update_vm(vmid, |conf| {
            check_unlocked(conf)?;
            let snap = conf
                .snapshots
                .get(&nm)
                .cloned()
                .ok_or_else(|| ApiError::fail(format!("snapshot '{nm}' does not exist")))?;
            if let Some(state) = snap.get("snapstate") {
                return Err(ApiError::fail(format!(
                    "unable to rollback to incomplete snapshot (snapstate = {state})"
                )));
            }
            conf.main.props.insert("lock".into(), "rollback".into());
            Ok(snap)
        })
    })
    .await?;
    let result = async {
        if node.vm_pid(vmid).is_some() {
            log(&format!("stopping VM {vmid}"));
            vm::stop(node, vmid, Duration::from_secs(5)).await?;
        }
        for (key, volid) in snap_volumes(&snap) {
            log(&format!("rolling back '{key}' ({volid})"));
            let (n, nm, v) = (node.clone(), name.to_string(), volid.clone());
            blocking(move || {
                let (plugin, volname) = open(&n, &v)?;
                Ok(plugin.rollback(&volname, &nm)?)
            })
            .await
            .map_err(|e| ApiError::fail(format!("{key} ('{volid}'): {}", e.message)))?;
        }
        Ok::<_, ApiError>(())
    }
    .await;
    let (n, nm, s) = (node.clone(), name.to_string(), snap.clone());
    let ok = result.is_ok();
    blocking(move || {
        n.update_vm(vmid, |conf| {
            if ok {
                restore_main(conf, &nm, &s);
            }
            conf.main.props.remove("lock");
            Ok(())
        })
    })
    .await?;
    result?;
    let statefile = match snap.get("vmstate") {
        Some(volid) => {
            let (n, v) = (node.clone(), volid.to_string());
            Some(blocking(move || volume_path(&n, &v)).await?)
        }
        None => None,
    };
    if statefile.is_some() || start {
        log(&format!("starting VM {vmid}"));
        let opts = StartOptions {
            statefile,
            forcemachine: snap.get("runningmachine").map(str::to_string),
            forcecpu: snap.get("runningcpu").map(str::to_string),
            allow_lock: None,
        };
        vm::start_with(node, vmid, opts, log).await?;
    }
    Ok(())
}

/// The main section after a rollback to `snap`: the snapshot's settings
/// with the current description and unused volumes; volumes the current
/// config has and the snapshot has not become unused; a new `vmgenid`
/// tells the guest it was rolled back (as upstream).
fn restore_main(conf: &mut oxve_schema::vmconfig::VmConfig, name: &str, snap: &VmSection) {
    let old = std::mem::take(&mut conf.main);
    let mut main = snap.clone();
    for key in SNAPSHOT_ONLY {
        main.props.remove(*key);
    }
    main.props.retain(|k, _| !k.starts_with("unused"));
    main.description = old.description.clone();
    main.props.insert("parent".into(), name.to_string());
    if main.props.contains_key("vmgenid") {
        main.props.insert("vmgenid".into(), vm::random_uuid());
    }
    let in_snap: Vec<&str> = snap
        .props
        .iter()
        .filter(|(k, _)| is_drive_key(k))
        .filter_map(|(_, v)| drive_file(v))
        .collect();
    for (k, v) in old.props.iter().filter(|(k, _)| k.starts_with("unused")) {
        main.props.insert(k.clone(), v.clone());
    }
    for (key, volid) in vm::drive_volumes(&old) {
        let cdrom = old.get(&key).is_some_and(is_cdrom) && !volid.contains("-cloudinit");
        let known = main
            .props
            .iter()
            .any(|(k, v)| k.starts_with("unused") && *v == volid);
        if !cdrom && !in_snap.contains(&volid.as_str()) && !known {
            let free = (0..)
                .map(|i| format!("unused{i}"))
                .find(|k| !main.props.contains_key(k))
                .unwrap_or_default();
            main.props.insert(free, volid);
        }
    }
    conf.main = main;
    conf.pending = VmSection::default();
}

/// Deletes snapshot `name`: its volume snapshots (through QEMU for
/// images a running VM has open) and its state volume. `force` removes
/// it from the config even when a volume snapshot cannot be deleted.
pub async fn delete(
    node: &Arc<Node>,
    vmid: u32,
    name: &str,
    force: bool,
    log: Log<'_>,
) -> ApiResult<()> {
    let (n, nm) = (node.clone(), name.to_string());
    let (snap, main) = blocking(move || {
        n.update_vm(vmid, |conf| {
            if !force {
                check_unlocked(conf)?;
            }
            let snap = conf
                .snapshots
                .get_mut(&nm)
                .ok_or_else(|| ApiError::fail(format!("snapshot '{nm}' does not exist")))?;
            snap.props.insert("snapstate".into(), "delete".into());
            let copy = snap.clone();
            conf.main
                .props
                .insert("lock".into(), "snapshot-delete".into());
            Ok((copy, conf.main.clone()))
        })
    })
    .await?;
    let mut qmp = match node.vm_pid(vmid) {
        Some(_) => connect(node, vmid).await.ok(),
        None => None,
    };
    let attached = vm::drive_volumes(&main);
    let mut result = Ok(());
    for (key, volid) in snap_volumes(&snap) {
        log(&format!("removing the snapshot of '{key}' ({volid})"));
        // QEMU has the image open under the key the running config uses.
        let open_as = attached.iter().find(|(_, v)| *v == volid).map(|(k, _)| k);
        let step = match open_as {
            Some(k) => volume_step(node, qmp.as_mut(), k, &volid, name, true).await,
            None => volume_step(node, None, &key, &volid, name, true).await,
        };
        if let Err(e) = step {
            if force {
                log(&format!("ignoring: {}", e.message));
            } else {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        if let Some(volid) = snap.get("vmstate").map(str::to_string) {
            log(&format!("removing the state volume '{volid}'"));
            let n = node.clone();
            if let Err(e) = blocking(move || vm::free_volume(&n, &volid)).await {
                if force {
                    log(&format!("ignoring: {}", e.message));
                } else {
                    result = Err(e);
                }
            }
        }
    }
    let (n, nm, ok) = (node.clone(), name.to_string(), result.is_ok());
    blocking(move || {
        n.update_vm(vmid, |conf| {
            conf.main.props.remove("lock");
            if !ok {
                if let Some(s) = conf.snapshots.get_mut(&nm) {
                    s.props.remove("snapstate");
                }
                return Ok(());
            }
            let parent = conf
                .snapshots
                .remove(&nm)
                .and_then(|s| s.get("parent").map(str::to_string));
            let sections = std::iter::once(&mut conf.main).chain(conf.snapshots.values_mut());
            reparent(sections.map(|s| &mut s.props), &nm, parent.as_deref());
            Ok(())
        })
    })
    .await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::tests::section;
    use oxve_schema::vmconfig::VmConfig;

    #[test]
    fn snapshots_skip_cdroms() {
        let s = section(&[
            ("scsi0", "local:100/vm-100-disk-0.qcow2,size=1G"),
            ("ide2", "local:iso/debian.iso,media=cdrom"),
            ("ide0", "local:100/vm-100-cloudinit.qcow2,media=cdrom"),
            ("virtio1", "/dev/sdb"),
        ]);
        assert_eq!(
            snap_volumes(&s),
            vec![(
                "scsi0".to_string(),
                "local:100/vm-100-disk-0.qcow2".to_string()
            )]
        );
    }

    #[test]
    fn rollback_restores_and_keeps_unused() {
        let mut conf = VmConfig {
            main: section(&[
                ("scsi0", "local:100/vm-100-disk-0.qcow2,size=1G"),
                ("scsi1", "local:100/vm-100-disk-1.qcow2,size=1G"),
                ("memory", "1024"),
                ("unused0", "local:100/vm-100-disk-2.qcow2"),
                ("vmgenid", "00000000-0000-4000-8000-000000000000"),
            ]),
            ..Default::default()
        };
        conf.main.description = "now".into();
        let mut snap = section(&[
            ("scsi0", "local:100/vm-100-disk-0.qcow2,size=1G"),
            ("memory", "512"),
            ("snaptime", "1"),
            ("vmstate", "local:100/vm-100-state-a.raw"),
            ("runningmachine", "pc-i440fx-10.0+pve0"),
            ("vmgenid", "00000000-0000-4000-8000-000000000000"),
        ]);
        snap.description = "then".into();
        restore_main(&mut conf, "a", &snap);
        let m = &conf.main;
        assert_eq!(m.get("memory"), Some("512"));
        assert_eq!(m.get("parent"), Some("a"));
        assert_eq!(m.get("unused0"), Some("local:100/vm-100-disk-2.qcow2"));
        assert_eq!(m.get("unused1"), Some("local:100/vm-100-disk-1.qcow2"));
        assert_eq!(m.get("scsi1"), None);
        for key in ["snaptime", "vmstate", "runningmachine"] {
            assert_eq!(m.get(key), None, "{key}");
        }
        assert_ne!(
            m.get("vmgenid"),
            Some("00000000-0000-4000-8000-000000000000")
        );
        assert_eq!(m.description, "now");
    }
}
