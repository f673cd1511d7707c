//! `move_volume` with `target-vmid`/`target-volume`: a mount point's
//! volume handed to another CT (or another key of the same CT) by
//! renaming it on its storage, as upstream's volume reassignment.

use super::Ctx;
use crate::ct::{self, check_unlocked};
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use oxve_lxc::host::RunState;
use oxve_lxc::model::MountKind;
use oxve_schema::ctconfig::CtConfig;
use serde_json::{json, Value};
use std::sync::Arc;

/// What a reassignment moves where.
struct Move {
    vmid: u32,
    key: String,
    target_vmid: u32,
    target_key: String,
    digest: Option<String>,
    target_digest: Option<String>,
}

/// Starts the reassignment task (`move_volume`), after the checks that
/// need no lock. Both CTs' locks are held while it runs.
pub async fn reassign(ctx: Ctx, vmid: u32) -> ApiResult<Value> {
    let key = ctx.str("volume")?.to_string();
    let target_vmid = ctx
        .opt_int("target-vmid")
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(vmid);
    let target_key = ctx
        .opt_str("target-volume")
        .map(str::to_string)
        .unwrap_or_else(|| key.clone());
    if target_vmid != vmid {
        // Upstream: the same privilege on the target CT.
        ctx.require_privs(&format!("/vms/{target_vmid}"), &["VM.Config.Disk"], false)?;
    }
    if key == "rootfs" || target_key == "rootfs" {
        return Err(ApiError::fail("Cannot move to/from 'rootfs'"));
    }
    if key.starts_with("unused") && !target_key.starts_with("unused") {
        return Err(ApiError::fail(
            "Moving an unused volume to a used one is not possible",
        ));
    }
    if !target_key.starts_with("unused") && !target_key.starts_with("mp") {
        return Err(ApiError::param(
            "target-volume",
            "must be a mount point (mp<n>) or unused<n>",
        ));
    }
    for id in [vmid, target_vmid] {
        if !ctx.node.ct_exists(id)? {
            return Err(ApiError::fail(format!("could not find CT {id}")));
        }
    }
    let mv = Move {
        vmid,
        key,
        target_vmid,
        target_key,
        digest: ctx.opt_str("digest").map(str::to_string),
        target_digest: ctx.opt_str("target-digest").map(str::to_string),
    };
    let node: Arc<Node> = ctx.node.clone();
    let upid = ctx.node.tasks.spawn(
        "move_volume",
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            // Always the lower id first: two opposite moves cannot deadlock.
            let (a, b) = (vmid.min(target_vmid), vmid.max(target_vmid));
            let _first = node.guest_locks.lock(a).await;
            let _second = if a != b {
                Some(node.guest_locks.lock(b).await)
            } else {
                None
            };
            let log = task.clone();
            tokio::task::spawn_blocking(move || run(&node, &mv, &|l| log.log(l)))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.message)
        },
    )?;
    Ok(json!(upid.to_string()))
}

fn check_digest(id: u32, want: &Option<String>, have: &str) -> ApiResult<()> {
    match want {
        Some(d) if d != have => Err(ApiError::fail(format!(
            "Container {id}: detected modified configuration - file changed by other user? Try again."
        ))),
        _ => Ok(()),
    }
}

fn run(node: &Node, mv: &Move, log: &dyn Fn(&str)) -> ApiResult<()> {
    let source = node.load_ct(mv.vmid)?;
    check_unlocked(&source.conf)?;
    let target = if mv.target_vmid == mv.vmid {
        None
    } else {
        let t = node.load_ct(mv.target_vmid)?;
        check_unlocked(&t.conf)?;
        Some(t)
    };
    let target_conf: &CtConfig = target.as_ref().map_or(&source.conf, |t| &t.conf);
    if source.conf.main.get("template") == Some("1")
        || target_conf.main.get("template") == Some("1")
    {
        return Err(ApiError::fail("Can't move volumes from or to template CT"));
    }
    check_digest(mv.vmid, &mv.digest, &source.digest)?;
    if let Some(t) = &target {
        check_digest(mv.target_vmid, &mv.target_digest, &t.digest)?;
    }
    let value = source.conf.main.get(&mv.key).ok_or_else(|| {
        ApiError::fail(format!(
            "volume '{}' for container '{}' does not exist",
            mv.key, mv.vmid
        ))
    })?;
    if target_conf.main.get(&mv.target_key).is_some() {
        return Err(ApiError::fail(format!(
            "Target volume key '{}' is already in use for container '{}'",
            mv.target_key, mv.target_vmid
        )));
    }
    let unused = mv.key.starts_with("unused");
    let (volid, spec) = if unused {
        (value.to_string(), None)
    } else {
        let mp = oxve_lxc::model::parse_mount_point(&mv.key, value)
            .map_err(|e| ApiError::fail(e.to_string()))?;
        if mp.kind() != MountKind::Volume {
            return Err(ApiError::fail(
                "Cannot move a bindmount or device mount to another container",
            ));
        }
        (mp.volume.clone(), Some(value.to_string()))
    };
    let in_snapshot = source.conf.snapshots.values().any(|s| {
        s.props
            .values()
            .any(|v| v.split(',').next().map(|f| f.trim_start_matches("volume=")) == Some(&volid))
    });
    if in_snapshot {
        return Err(ApiError::fail(
            "Cannot move volume used by a snapshot to another container",
        ));
    }
    if !unused && node.lxc().state(mv.vmid).map_err(ct::lxc_err)? != RunState::Stopped {
        return Err(ApiError::fail(
            "Cannot move in-use volume while the source CT is running - detach or shutdown first",
        ));
    }
    log(&format!(
        "moving volume '{}' from container '{}' to '{}'",
        mv.key, mv.vmid, mv.target_vmid
    ));
    let vol = oxve_storage::VolumeId::parse(&volid)?;
    let plugin = node.open_storage(&vol.storage)?;
    plugin.activate()?;
    let new_volid = if mv.target_vmid == mv.vmid {
        volid.clone()
    } else {
        let renamed = crate::guest_volumes::with_free_name(
            &*plugin,
            &*plugin,
            &vol.volname,
            mv.target_vmid,
            |name| plugin.rename(&vol.volname, mv.target_vmid, name),
        )?;
        oxve_storage::VolumeId::new(&vol.storage, &renamed).to_string()
    };
    let new_value = match &spec {
        Some(s) if !mv.target_key.starts_with("unused") => s.replacen(&volid, &new_volid, 1),
        _ => new_volid.clone(),
    };
    // The target first: should that fail, the volume is renamed back and
    // the source keeps it.
    let target_running = !mv.target_key.starts_with("unused")
        && node.lxc().state(mv.target_vmid).map_err(ct::lxc_err)? != RunState::Stopped;
    let written = node.update_ct(mv.target_vmid, |conf| {
        if conf.main.get(&mv.target_key).is_some() {
            return Err(ApiError::fail(format!(
                "Target volume key '{}' is already in use for container '{}'",
                mv.target_key, mv.target_vmid
            )));
        }
        if mv.target_vmid == mv.vmid {
            conf.main.props.remove(&mv.key);
        }
        if target_running {
            // A running CT mounts it at its next start, as other new
            // mount points.
            conf.pending
                .props
                .insert(mv.target_key.clone(), new_value.clone());
        } else {
            conf.main
                .props
                .insert(mv.target_key.clone(), new_value.clone());
        }
        Ok(())
    });
    if let Err(e) = written {
        if new_volid != volid {
            let new = oxve_storage::VolumeId::parse(&new_volid)?;
            let _ = plugin.rename(
                &new.volname,
                mv.vmid,
                vol.volname.rsplit('/').next().unwrap_or(&vol.volname),
            );
        }
        return Err(e);
    }
    if mv.target_vmid != mv.vmid {
        log(&format!(
            "removing volume '{}' from container '{}' config",
            mv.key, mv.vmid
        ));
        node.update_ct(mv.vmid, |conf| {
            conf.main.props.remove(&mv.key);
            Ok(())
        })?;
    }
    log(&format!(
        "target container '{}' updated with '{}'{}",
        mv.target_vmid,
        mv.target_key,
        if target_running {
            " (pending until its next start)"
        } else {
            ""
        }
    ));
    Ok(())
}
