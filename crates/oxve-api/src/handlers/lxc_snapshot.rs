//! `/nodes/{node}/lxc/{vmid}/snapshot`, `template`, `clone` and `resize`:
//! snapshots on storages that have them, templates with base volumes,
//! linked and full clones, growing a mount point.

use super::lxc::vmid;
use super::{Ctx, Registry};
use crate::ct;
use crate::ct_snapshot;
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use crate::reg;
use oxve_lxc::host::RunState;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/lxc/{vmid}/snapshot" => list);
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/snapshot" => create);
    reg!(r, GET "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}" => snap_index);
    reg!(r, DELETE "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}" => delete);
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback" => rollback);
    reg!(r, GET "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/config" => get_config);
    reg!(r, PUT "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/config" => set_config);
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/template" => template);
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/clone" => clone);
    reg!(r, PUT "/nodes/{node}/lxc/{vmid}/resize" => resize);
    reg!(r, GET "/nodes/{node}/lxc/{vmid}/feature" => feature);
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/move_volume" => move_volume);
}

/// Moves a mount point's volume of a stopped CT to another storage (a full
/// copy through the storages' export/import streams); the old volume is
/// deleted with `delete`, else kept as `unused<n>`, as upstream.
async fn move_volume(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let key = ctx.str("volume")?.to_string();
    if ctx.opt_int("target-vmid").is_some() || ctx.opt_str("target-volume").is_some() {
        return super::lxc_reassign::reassign(ctx, vmid).await;
    }
    let storage = ctx
        .opt_str("storage")
        .ok_or_else(|| ApiError::param("storage", "property is missing and it is not optional"))?
        .to_string();
    ctx.require_privs(
        &format!("/storage/{storage}"),
        &["Datastore.AllocateSpace"],
        false,
    )?;
    let delete = ctx.flag("delete");
    let mp = volume_mount_point(&ctx, vmid, "volume", &key, "moved")?;
    if ctx.node.lxc().state(vmid).map_err(ct::lxc_err)? != RunState::Stopped {
        return Err(ApiError::fail(
            "moving a volume of a running container is not possible, stop it first",
        ));
    }
    task(&ctx, "move_volume", vmid, move |node, log| {
        let src = oxve_storage::VolumeId::parse(&mp.volume)?;
        let from = node.open_storage(&src.storage)?;
        from.activate()?;
        let to = node.open_storage(&storage)?;
        to.activate()?;
        log(&format!(
            "moving {key} ({}) to storage '{storage}'",
            mp.volume
        ));
        let new = crate::guest_volumes::full_copy(&*from, &src.volname, None, &*to, vmid)?;
        let new_volid = oxve_storage::VolumeId::new(&storage, &new).to_string();
        let result = node.update_ct(vmid, |conf| {
            ct::check_unlocked(conf)?;
            let current = conf.main.get(&key).unwrap_or_default().to_string();
            if !current.contains(&mp.volume) {
                return Err(ApiError::fail(format!("{key} changed while it was copied")));
            }
            conf.main
                .props
                .insert(key.clone(), current.replacen(&mp.volume, &new_volid, 1));
            if !delete {
                let n = (0..)
                    .find(|i| !conf.main.props.contains_key(&format!("unused{i}")))
                    .unwrap_or(0);
                conf.main
                    .props
                    .insert(format!("unused{n}"), mp.volume.clone());
            }
            Ok(())
        });
        if let Err(e) = result {
            let _ = ct::free_volume(node, &new_volid);
            return Err(e);
        }
        log(&format!("{key} is now {new_volid}"));
        if delete {
            from.free_image(&src.volname)?;
            log(&format!("removed {}", mp.volume));
        }
        Ok(())
    })
}

/// Whether every volume of the CT (or of snapshot `snapname`) supports
/// `feature` (see [`crate::ct_snapshot::has_feature`]).
async fn feature(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let feature = ctx.str("feature")?.to_string();
    let conf = ctx.node.load_ct(vmid)?.conf;
    let section = match ctx.opt_str("snapname") {
        Some(name) => conf
            .snapshots
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::fail(format!("snapshot '{name}' does not exist")))?,
        None => conf.main,
    };
    let ct =
        oxve_lxc::Ct::from_section(vmid, &section).map_err(|e| ApiError::fail(e.to_string()))?;
    let has = crate::ct_snapshot::has_feature(&ctx.node, &ct, &feature)?;
    Ok(json!({ "hasFeature": has }))
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let conf = ctx.node.load_ct(vmid)?.conf;
    let running = ctx.node.lxc().state(vmid).map_err(ct::lxc_err)? != RunState::Stopped;
    let mut out = Vec::new();
    for (name, snap) in &conf.snapshots {
        let mut v = json!({"name": name, "description": snap.description.trim_end()});
        if let Some(t) = snap.get("snaptime").and_then(|t| t.parse::<i64>().ok()) {
            v["snaptime"] = json!(t);
        }
        if let Some(p) = snap.get("parent") {
            v["parent"] = json!(p);
        }
        out.push(v);
    }
    let mut current =
        json!({"name": "current", "description": "You are here!", "running": u8::from(running)});
    if let Some(p) = conf.main.get("parent") {
        current["parent"] = json!(p);
    }
    out.push(current);
    Ok(Value::Array(out))
}

/// Runs `work` as a task of `worker` type on CT `vmid`, holding its lock.
fn task(
    ctx: &Ctx,
    worker: &'static str,
    vmid: u32,
    work: impl FnOnce(&Node, &dyn Fn(&str)) -> ApiResult<()> + Send + 'static,
) -> ApiResult<Value> {
    let node: Arc<Node> = ctx.node.clone();
    let upid = ctx.node.tasks.spawn(
        worker,
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = node.guest_locks.lock(vmid).await;
            let log = task.clone();
            tokio::task::spawn_blocking(move || work(&node, &|l| log.log(l)))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.message)
        },
    )?;
    Ok(json!(upid.to_string()))
}

async fn create(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let name = ctx.str("snapname")?.to_string();
    let description = ctx.opt_str("description").map(str::to_string);
    let conf = ctx.node.load_ct(vmid)?.conf;
    if conf.snapshots.contains_key(&name) {
        return Err(ApiError::fail(format!(
            "snapshot name '{name}' already used"
        )));
    }
    task(&ctx, "vzsnapshot", vmid, move |node, log| {
        ct_snapshot::create(node, vmid, &name, description.as_deref(), log)
    })
}

async fn snap_index(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let name = ctx.str("snapname")?;
    snapshot(&ctx, vmid, name)?;
    Ok(json!([{"cmd": "rollback"}, {"cmd": "config"}]))
}

fn snapshot(ctx: &Ctx, vmid: u32, name: &str) -> ApiResult<oxve_schema::ctconfig::CtSection> {
    ctx.node
        .load_ct(vmid)?
        .conf
        .snapshots
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::fail(format!("snapshot '{name}' does not exist")))
}

async fn delete(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let name = ctx.str("snapname")?.to_string();
    let force = ctx.flag("force");
    snapshot(&ctx, vmid, &name)?;
    task(&ctx, "vzdelsnapshot", vmid, move |node, log| {
        ct_snapshot::delete(node, vmid, &name, force, log)
    })
}

async fn rollback(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let name = ctx.str("snapname")?.to_string();
    let start = ctx.flag("start");
    snapshot(&ctx, vmid, &name)?;
    task(&ctx, "vzrollback", vmid, move |node, log| {
        ct_snapshot::rollback(node, vmid, &name, log)?;
        if start {
            ct::start(node, vmid, log)?;
        }
        Ok(())
    })
}

async fn get_config(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let snap = snapshot(&ctx, vmid, ctx.str("snapname")?)?;
    Ok(Value::Object(snap.to_json()))
}

async fn set_config(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let name = ctx.str("snapname")?.to_string();
    let description = ctx.opt_str("description").unwrap_or("").to_string();
    let _guard = ctx.node.guest_locks.lock(vmid).await;
    ctx.node.update_ct(vmid, |conf| {
        let snap = conf
            .snapshots
            .get_mut(&name)
            .ok_or_else(|| ApiError::fail(format!("snapshot '{name}' does not exist")))?;
        snap.description = description.clone();
        Ok(())
    })?;
    Ok(Value::Null)
}

async fn template(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let node = ctx.node.clone();
    let _guard = ctx.node.guest_locks.lock(vmid).await;
    crate::blocking(move || ct_snapshot::template(&node, vmid, &|l| tracing::info!("{l}")))
        .await
        .map(|_| Value::Null)
}

async fn clone(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let newid = ctx
        .opt_int("newid")
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| ApiError::param("newid", "property is missing and it is not optional"))?;
    if let Some(target) = ctx.opt_str("target") {
        if target != ctx.node.name && target != "localhost" {
            return Err(ApiError::param(
                "target",
                "cloning to another node needs a cluster (not built yet)",
            ));
        }
    }
    let snapname = ctx.opt_str("snapname").map(str::to_string);
    let src = ctx.node.ct(vmid)?;
    let full = ctx.opt_bool("full").unwrap_or(!src.template);
    if !full && !src.template {
        return Err(ApiError::fail(
            "linked clone is only possible from a template",
        ));
    }
    if let Some(name) = &snapname {
        if !ctx.node.load_ct(vmid)?.conf.snapshots.contains_key(name) {
            return Err(ApiError::fail(format!("snapshot '{name}' does not exist")));
        }
        if !full {
            // Templates have no snapshots in oxve (see DEVIATIONS.md).
            return Err(ApiError::fail(
                "a linked clone is made from a template, not from a snapshot: use full=1",
            ));
        }
    }
    // A snapshot is a consistent source even while the CT runs.
    if !src.template
        && snapname.is_none()
        && ctx.node.lxc().state(vmid).map_err(ct::lxc_err)? != RunState::Stopped
    {
        return Err(ApiError::fail(format!(
            "CT {vmid} is running: stop it, or convert it to a template"
        )));
    }
    let storage = ctx.opt_str("storage").map(str::to_string);
    if let Some(s) = &storage {
        ctx.require_privs(
            &format!("/storage/{s}"),
            &["Datastore.AllocateSpace"],
            false,
        )?;
    }
    let hostname = ctx.opt_str("hostname").map(str::to_string);
    let description = ctx.opt_str("description").map(str::to_string);
    let pool = ctx.opt_str("pool").map(str::to_string);
    let node = ctx.node.clone();
    let guard = ctx.node.guest_locks.lock(newid).await;
    let mut claim_section = ctx.node.load_ct(vmid)?.conf.main;
    claim_section.props.remove("lock");
    let key = ct::claim(&ctx.node, newid, &claim_section)?;
    let upid = ctx.node.tasks.spawn(
        "vzclone",
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = guard;
            let _src_guard = node.guest_locks.lock(vmid).await;
            let log = task.clone();
            let n = node.clone();
            let result = tokio::task::spawn_blocking(move || {
                let mut section = ct_snapshot::clone_volumes(
                    &n,
                    vmid,
                    newid,
                    full,
                    storage.as_deref(),
                    snapname.as_deref(),
                    &|l| log.log(l),
                )?;
                if let Some(h) = hostname {
                    section.props.insert("hostname".into(), h);
                }
                if let Some(d) = description {
                    section.description = d;
                }
                // New MAC addresses, as upstream gives clones.
                for (_, v) in section
                    .props
                    .iter_mut()
                    .filter(|(k, _)| k.starts_with("net"))
                {
                    let kept: Vec<&str> =
                        v.split(',').filter(|p| !p.starts_with("hwaddr=")).collect();
                    *v = super::lxc::fill_hwaddr(&kept.join(","));
                }
                n.update_ct(newid, |conf| {
                    conf.main = section.clone();
                    Ok(())
                })?;
                if let Some(p) = &pool {
                    super::lxc::add_to_pool(&n, p, newid)?;
                }
                log.log(format!(
                    "CT {newid} created as a {} clone of CT {vmid}",
                    if full { "full" } else { "linked" }
                ));
                Ok::<_, ApiError>(())
            })
            .await
            .map_err(|e| e.to_string())?;
            if let Err(e) = result {
                let _ = node.store.apply(oxve_config::Op::Delete {
                    key,
                    expect: oxve_config::Expect::Any,
                });
                return Err(e.message);
            }
            Ok(())
        },
    )?;
    Ok(json!(upid.to_string()))
}

/// Mount point `key` (named by parameter `param`) of the unlocked CT,
/// whose config still has the caller's `digest`; it must be a volume on a
/// storage for it to be `what` (moved, resized).
fn volume_mount_point(
    ctx: &Ctx,
    vmid: u32,
    param: &str,
    key: &str,
    what: &str,
) -> ApiResult<oxve_lxc::model::MountPoint> {
    let loaded = ctx.node.load_ct(vmid)?;
    if let Some(d) = ctx.opt_str("digest") {
        if d != loaded.digest {
            return Err(ApiError::fail(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
    }
    ct::check_unlocked(&loaded.conf)?;
    let value = loaded
        .conf
        .main
        .get(key)
        .ok_or_else(|| ApiError::param(param, format!("no such mount point '{key}'")))?;
    let mp = oxve_lxc::model::parse_mount_point(key, value)
        .map_err(|e| ApiError::param(param, e.to_string()))?;
    if mp.kind() != oxve_lxc::model::MountKind::Volume {
        return Err(ApiError::param(
            param,
            format!("only volumes on a storage can be {what}"),
        ));
    }
    Ok(mp)
}

async fn resize(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let disk = ctx.str("disk")?.to_string();
    let size = ctx.str("size")?.to_string();
    let mp = volume_mount_point(&ctx, vmid, "disk", &disk, "resized")?;
    let current = mp
        .size
        .as_deref()
        .and_then(oxve_schema::format::parse_size)
        .unwrap_or(0);
    let (grow, amount) = match size.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, size.as_str()),
    };
    let amount = oxve_schema::format::parse_size(amount)
        .ok_or_else(|| ApiError::param("size", format!("unable to parse size '{size}'")))?;
    let new_size = if grow { current + amount } else { amount };
    if new_size < current {
        return Err(ApiError::fail("shrinking disks is not supported"));
    }
    task(&ctx, "resize", vmid, move |node, log| {
        let vol = oxve_storage::VolumeId::parse(&mp.volume)?;
        let plugin = node.open_storage(&vol.storage)?;
        plugin.activate()?;
        let parsed = plugin.parse_volname(&vol.volname)?;
        let running = node.lxc().state(vmid).map_err(ct::lxc_err)? != RunState::Stopped;
        if parsed.format.as_deref() != Some("subvol") {
            log(&format!(
                "growing {} to {}{}",
                mp.volume,
                oxve_schema::format::format_size(new_size),
                if running { " (online)" } else { "" }
            ));
            let path = plugin.path(&vol.volname)?;
            let old_len = std::fs::metadata(&path)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            plugin.resize(&vol.volname, new_size)?;
            plugin.activate_volume(&vol.volname)?;
            if running {
                if let Err(e) = oxve_lxc::create::grow_mounted_filesystem(&path) {
                    // The file system did not grow: an image file goes back
                    // to its old size, so nothing changed.
                    let undone = old_len.is_some_and(|len| {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_len(len))
                            .is_ok()
                    });
                    if undone {
                        oxve_lxc::create::refresh_loop_capacity(&path);
                    }
                    return Err(ApiError::fail(format!(
                        "online resize failed: {e}; {}",
                        if undone {
                            "the image is back at its old size"
                        } else {
                            "the volume is grown, its file system is not (stop the CT and resize again)"
                        }
                    )));
                }
            } else {
                oxve_lxc::create::grow_filesystem(&path).map_err(ct::lxc_err)?;
            }
        } else {
            log(&format!(
                "{} is a subvolume: its size is a limit in the config",
                mp.volume
            ));
        }
        let size_text = oxve_schema::format::format_size(new_size);
        node.update_ct(vmid, |conf| {
            let old = conf.main.get(&disk).unwrap_or_default().to_string();
            let kept: Vec<&str> = old.split(',').filter(|p| !p.starts_with("size=")).collect();
            conf.main
                .props
                .insert(disk.clone(), format!("{},size={size_text}", kept.join(",")));
            Ok(())
        })
    })
}
