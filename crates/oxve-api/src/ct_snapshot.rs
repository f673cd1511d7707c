//! Container snapshots, templates and clones: the config state machine of
//! upstream's snapshots (`snapstate: prepare` → commit, `parent` chain),
//! carried out with the storage plugins' volume snapshots. Every step
//! that fails undoes what it did and says so.

use crate::ct::{self, check_unlocked, lxc_err};
use crate::error::{ApiError, ApiResult};
use crate::guest_volumes::{full_copy, linked_clone, open, reparent};
use crate::node::Node;
use oxve_lxc::host::RunState;
use oxve_lxc::model::{MountKind, MountPoint};
use oxve_lxc::Ct;
use oxve_schema::ctconfig::CtSection;
use oxve_storage::{StorageType, VolumeId};

/// Keys a snapshot section does not copy from the main section.
const NOT_IN_SNAPSHOT: &[&str] = &["lock", "snapstate"];

/// Volume mount points of a section (rootfs and `mp<n>` on storages).
fn volumes(vmid: u32, section: &CtSection) -> ApiResult<Vec<MountPoint>> {
    let ct = Ct::from_section(vmid, section).map_err(|e| ApiError::fail(e.to_string()))?;
    Ok(ct
        .mount_points()
        .filter(|m| m.kind() == MountKind::Volume)
        .cloned()
        .collect())
}

/// Whether every mount point of `ct` supports `feature`, as upstream's
/// `has_feature`: `snapshot` and linked `clone` need volumes their storage
/// can snapshot or clone natively (container volumes are raw images or
/// subvolumes, which file storages cannot); bind and device mounts have
/// neither; `copy` works everywhere.
pub fn has_feature(node: &Node, ct: &Ct, feature: &str) -> ApiResult<bool> {
    let mut has = true;
    for mp in ct.mount_points() {
        if mp.kind() != MountKind::Volume {
            has &= feature == "copy";
            continue;
        }
        let vol = VolumeId::parse(&mp.volume)?;
        let plugin = node.open_storage(&vol.storage)?;
        let parsed = plugin.parse_volname(&vol.volname)?;
        let caps = plugin.capabilities();
        let native = !plugin.def().kind.is_file_based() || plugin.def().kind == StorageType::Btrfs;
        has &= match feature {
            "snapshot" => caps.snapshots && native,
            "clone" => ct.template && parsed.is_base && caps.linked_clones && native,
            _ => true,
        };
    }
    Ok(has)
}

/// Creates snapshot `name` of CT `vmid` (freezing a running CT while its
/// volumes are snapshotted).
pub fn create(
    node: &Node,
    vmid: u32,
    name: &str,
    description: Option<&str>,
    log: &dyn Fn(&str),
) -> ApiResult<()> {
    if name == "current" || name == "vzdump" {
        return Err(ApiError::param(
            "snapname",
            format!("snapshot name '{name}' is reserved"),
        ));
    }
    let snaptime = crate::auth::now();
    node.update_ct(vmid, |conf| {
        check_unlocked(conf)?;
        let ct = Ct::from_section(vmid, &conf.main).map_err(|e| ApiError::fail(e.to_string()))?;
        if !has_feature(node, &ct, "snapshot")? {
            return Err(ApiError::fail("snapshot feature is not available"));
        }
        if conf.snapshots.contains_key(name) {
            return Err(ApiError::fail(format!(
                "snapshot name '{name}' already used"
            )));
        }
        let mut snap = conf.main.clone();
        for key in NOT_IN_SNAPSHOT {
            snap.props.remove(*key);
        }
        snap.description = description.map(str::to_string).unwrap_or_default();
        snap.props.insert("snapstate".into(), "prepare".into());
        snap.props.insert("snaptime".into(), snaptime.to_string());
        conf.snapshots.insert(name.to_string(), snap);
        conf.main.props.insert("lock".into(), "snapshot".into());
        Ok(())
    })?;
    let result = snapshot_volumes(node, vmid, name, log);
    match result {
        Ok(()) => node.update_ct(vmid, |conf| {
            if let Some(snap) = conf.snapshots.get_mut(name) {
                snap.props.remove("snapstate");
            }
            conf.main.props.insert("parent".into(), name.to_string());
            conf.main.props.remove("lock");
            Ok(())
        }),
        Err(e) => {
            log(&format!(
                "snapshot failed, removing it again: {}",
                e.message
            ));
            node.update_ct(vmid, |conf| {
                conf.snapshots.remove(name);
                conf.main.props.remove("lock");
                Ok(())
            })?;
            Err(e)
        }
    }
}

fn snapshot_volumes(node: &Node, vmid: u32, name: &str, log: &dyn Fn(&str)) -> ApiResult<()> {
    let conf = node.load_ct(vmid)?.conf;
    let vols = volumes(vmid, &conf.main)?;
    let lxc = node.lxc();
    let running = lxc.state(vmid).map_err(lxc_err)? != RunState::Stopped;
    if running {
        log("freezing the container");
        lxc.freeze(vmid, true).map_err(lxc_err)?;
        nix::unistd::sync();
    }
    let mut done: Vec<&MountPoint> = Vec::new();
    let mut result = Ok(());
    for mp in &vols {
        log(&format!("snapshotting '{}' ({})", mp.key, mp.volume));
        let step = open(node, &mp.volume).and_then(|(p, volname)| Ok(p.snapshot(&volname, name)?));
        match step {
            Ok(()) => done.push(mp),
            Err(e) => {
                result = Err(snapshot_error(mp, e));
                break;
            }
        }
    }
    if running {
        log("thawing the container");
        lxc.freeze(vmid, false).map_err(lxc_err)?;
    }
    if result.is_err() {
        for mp in done.into_iter().rev() {
            let undo = open(node, &mp.volume).and_then(|(p, v)| Ok(p.delete_snapshot(&v, name)?));
            if let Err(e) = undo {
                log(&format!(
                    "could not remove the snapshot of '{}': {}",
                    mp.volume, e.message
                ));
            }
        }
    }
    result
}

/// Names the mount point in a storage refusal (raw images on a directory
/// storage cannot be snapshotted).
fn snapshot_error(mp: &MountPoint, e: ApiError) -> ApiError {
    ApiError::fail(format!(
        "snapshot of {} ('{}') failed: {}",
        mp.key, mp.volume, e.message
    ))
}

/// Rolls CT `vmid` back to snapshot `name`; a running CT is stopped
/// first, as upstream does.
pub fn rollback(node: &Node, vmid: u32, name: &str, log: &dyn Fn(&str)) -> ApiResult<()> {
    let snap = node.update_ct(vmid, |conf| {
        check_unlocked(conf)?;
        let snap = conf
            .snapshots
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::fail(format!("snapshot '{name}' does not exist")))?;
        if snap.get("snapstate").is_some() {
            return Err(ApiError::fail(format!(
                "unable to rollback to incomplete snapshot (snapstate = {})",
                snap.get("snapstate").unwrap_or("")
            )));
        }
        conf.main.props.insert("lock".into(), "rollback".into());
        Ok(snap)
    })?;
    let result = (|| {
        let lxc = node.lxc();
        if lxc.state(vmid).map_err(lxc_err)? != RunState::Stopped {
            log(&format!("stopping CT {vmid}"));
            ct::stop(node, vmid, true, 0, true)?;
        }
        for mp in volumes(vmid, &snap)? {
            log(&format!("rolling back '{}' ({})", mp.key, mp.volume));
            let (plugin, volname) = open(node, &mp.volume)?;
            plugin
                .rollback(&volname, name)
                .map_err(|e| snapshot_error(&mp, e.into()))?;
        }
        Ok(())
    })();
    node.update_ct(vmid, |conf| {
        if result.is_ok() {
            let mut main = snap.clone();
            main.props.remove("snaptime");
            main.props.insert("parent".into(), name.to_string());
            main.description = conf.main.description.clone();
            conf.main = main;
            conf.pending = CtSection::default();
        }
        conf.main.props.remove("lock");
        Ok(())
    })?;
    result
}

/// Deletes snapshot `name`; `force` removes it from the config even when a
/// volume snapshot cannot be deleted.
pub fn delete(
    node: &Node,
    vmid: u32,
    name: &str,
    force: bool,
    log: &dyn Fn(&str),
) -> ApiResult<()> {
    let snap = node.update_ct(vmid, |conf| {
        if !force {
            check_unlocked(conf)?;
        }
        let snap = conf
            .snapshots
            .get_mut(name)
            .ok_or_else(|| ApiError::fail(format!("snapshot '{name}' does not exist")))?;
        snap.props.insert("snapstate".into(), "delete".into());
        let copy = snap.clone();
        conf.main
            .props
            .insert("lock".into(), "snapshot-delete".into());
        Ok(copy)
    })?;
    let mut result = Ok(());
    for mp in volumes(vmid, &snap)? {
        log(&format!(
            "removing the snapshot of '{}' ({})",
            mp.key, mp.volume
        ));
        let step = open(node, &mp.volume).and_then(|(p, v)| Ok(p.delete_snapshot(&v, name)?));
        if let Err(e) = step {
            if force {
                log(&format!("ignoring: {}", e.message));
            } else {
                result = Err(snapshot_error(&mp, e));
                break;
            }
        }
    }
    node.update_ct(vmid, |conf| {
        conf.main.props.remove("lock");
        if result.is_err() {
            return Ok(());
        }
        let parent = conf
            .snapshots
            .get(name)
            .and_then(|s| s.get("parent").map(str::to_string));
        conf.snapshots.remove(name);
        let sections = std::iter::once(&mut conf.main).chain(conf.snapshots.values_mut());
        reparent(sections.map(|s| &mut s.props), name, parent.as_deref());
        Ok(())
    })?;
    result
}

/// Converts stopped CT `vmid` into a template: its volumes become base
/// volumes, from which linked clones are made.
pub fn template(node: &Node, vmid: u32, log: &dyn Fn(&str)) -> ApiResult<()> {
    let loaded = node.load_ct(vmid)?;
    check_unlocked(&loaded.conf)?;
    if node.lxc().state(vmid).map_err(lxc_err)? != RunState::Stopped {
        return Err(ApiError::fail(
            "you can't convert a CT to template if the CT is running",
        ));
    }
    if !loaded.conf.snapshots.is_empty() {
        return Err(ApiError::fail(
            "you can't convert a CT with snapshots to a template",
        ));
    }
    let mut main = loaded.conf.main.clone();
    for mp in volumes(vmid, &main)? {
        let vol = VolumeId::parse(&mp.volume)?;
        let (plugin, volname) = open(node, &mp.volume)?;
        let base = plugin.create_base(&volname)?;
        let volid = VolumeId::new(&vol.storage, &base).to_string();
        log(&format!(
            "{}: {} is now the base volume {volid}",
            mp.key, mp.volume
        ));
        let value = main.props[&mp.key].replacen(&mp.volume, &volid, 1);
        main.props.insert(mp.key.clone(), value);
    }
    main.props.insert("template".into(), "1".into());
    node.update_ct(vmid, |conf| {
        conf.main = main.clone();
        Ok(())
    })
}

/// Clones CT `vmid`'s volumes for `newid`: linked clones of a template's
/// base volumes, or full copies (onto `storage` when given) of the
/// volumes as they are, or as they were at `snapname`. Returns the new
/// config section; volumes already made are freed on failure.
pub fn clone_volumes(
    node: &Node,
    vmid: u32,
    newid: u32,
    full: bool,
    storage: Option<&str>,
    snapname: Option<&str>,
    log: &dyn Fn(&str),
) -> ApiResult<CtSection> {
    let conf = node.load_ct(vmid)?.conf;
    let src = match snapname {
        None => conf.main,
        Some(name) => conf
            .snapshots
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::fail(format!("snapshot '{name}' does not exist")))?,
    };
    let mut section = src.clone();
    for key in ["lock", "parent", "template", "snaptime", "snapstate"] {
        section.props.remove(key);
    }
    section.props.retain(|k, _| !k.starts_with("unused"));
    let mut made: Vec<String> = Vec::new();
    let result = (|| {
        for mp in volumes(vmid, &src)? {
            let vol = VolumeId::parse(&mp.volume)?;
            let (plugin, volname) = open(node, &mp.volume)?;
            let new_volid = if full {
                let target_storage = storage.unwrap_or(&vol.storage);
                let target = node.open_storage(target_storage)?;
                target.activate()?;
                let at = snapname
                    .map(|n| format!(" at snapshot '{n}'"))
                    .unwrap_or_default();
                log(&format!(
                    "full copy of {} ({}){at} to storage '{target_storage}'",
                    mp.key, mp.volume
                ));
                let new = full_copy(&*plugin, &volname, snapname, &*target, newid)?;
                VolumeId::new(target_storage, &new).to_string()
            } else {
                log(&format!("linked clone of {} ({})", mp.key, mp.volume));
                let new = linked_clone(&*plugin, &volname, newid)?;
                VolumeId::new(&vol.storage, &new).to_string()
            };
            made.push(new_volid.clone());
            let value = section.props[&mp.key].replacen(&mp.volume, &new_volid, 1);
            section.props.insert(mp.key.clone(), value);
        }
        Ok(())
    })();
    if let Err(e) = result {
        for volid in made.iter().rev() {
            let _ = ct::free_volume(node, volid);
        }
        return Err(e);
    }
    Ok(section)
}
