//! `/nodes/{node}/qemu/{vmid}/snapshot`, `template`, `clone` and
//! `feature`: snapshots with or without RAM, templates, linked and full
//! clones. Each long step is a task holding the VM's lock.

use super::qemu::vmid;
use super::qemu_status::power_task;
use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use crate::vm_clone::{self, CloneSpec};
use crate::vm_snapshot;
use crate::{guest, reg, vm};
use oxve_schema::vmconfig::VmSection;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/snapshot" => list);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/snapshot" => create);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}" => snap_index);
    reg!(r, DELETE "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}" => delete);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback" => rollback);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config" => get_config);
    reg!(r, PUT "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config" => set_config);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/template" => template);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/clone" => clone);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/feature" => feature);
}

/// A task for work that blocks (storage and `qemu-img` calls), holding
/// the VM's lock.
fn blocking_task(
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
            tokio::task::spawn_blocking(move || work(&node, &|l| task.log(l)))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.message)
        },
    )?;
    Ok(json!(upid.to_string()))
}

fn snapshot(ctx: &Ctx, vmid: u32, name: &str) -> ApiResult<VmSection> {
    ctx.node
        .load_vm(vmid)?
        .conf
        .snapshots
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::fail(format!("snapshot '{name}' does not exist")))
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let loaded = ctx.node.load_vm(vmid)?;
    let conf = loaded.conf;
    let mut out = Vec::new();
    for (name, snap) in &conf.snapshots {
        let mut v = json!({"name": name, "description": snap.description.trim_end()});
        if let Some(t) = snap.get("snaptime").and_then(|t| t.parse::<i64>().ok()) {
            v["snaptime"] = json!(t);
        }
        if let Some(p) = snap.get("parent") {
            v["parent"] = json!(p);
        }
        if snap.get("vmstate").is_some() {
            v["vmstate"] = json!(1);
        }
        out.push(v);
    }
    let running = ctx.node.vm_pid(vmid).is_some();
    let mut current = json!({
        "name": "current",
        "description": "You are here!",
        "running": u8::from(running),
        "digest": loaded.digest,
    });
    if let Some(p) = conf.main.get("parent") {
        current["parent"] = json!(p);
    }
    out.push(current);
    Ok(Value::Array(out))
}

async fn create(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let name = ctx.str("snapname")?.to_string();
    let description = ctx.opt_str("description").map(str::to_string);
    let vmstate = ctx.flag("vmstate");
    let conf = ctx.node.load_vm(vmid)?.conf;
    if conf.snapshots.contains_key(&name) {
        return Err(ApiError::fail(format!(
            "snapshot name '{name}' already used"
        )));
    }
    power_task(
        ctx,
        "qmsnapshot",
        Box::new(move |node, vmid, log| {
            Box::pin(async move {
                log(&format!("snapshotting VM {vmid} as '{name}'"));
                vm_snapshot::create(node, vmid, name, description, vmstate, log).await
            })
        }),
    )
    .await
}

async fn snap_index(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    snapshot(&ctx, vmid, ctx.str("snapname")?)?;
    Ok(json!([{"cmd": "rollback"}, {"cmd": "config"}]))
}

async fn delete(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let name = ctx.str("snapname")?.to_string();
    let force = ctx.flag("force");
    snapshot(&ctx, vmid, &name)?;
    power_task(
        ctx,
        "qmdelsnapshot",
        Box::new(move |node, vmid, log| {
            Box::pin(async move { vm_snapshot::delete(node, vmid, &name, force, log).await })
        }),
    )
    .await
}

async fn rollback(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let name = ctx.str("snapname")?.to_string();
    let start = ctx.flag("start");
    snapshot(&ctx, vmid, &name)?;
    power_task(
        ctx,
        "qmrollback",
        Box::new(move |node, vmid, log| {
            Box::pin(async move { vm_snapshot::rollback(node, vmid, &name, start, log).await })
        }),
    )
    .await
}

async fn get_config(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let snap = snapshot(&ctx, vmid, ctx.str("snapname")?)?;
    let mut out = snap.to_json();
    if out.contains_key("cipassword") {
        out.insert("cipassword".into(), json!("**********"));
    }
    Ok(Value::Object(out))
}

async fn set_config(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let name = ctx.str("snapname")?.to_string();
    let description = ctx.opt_str("description").unwrap_or("").to_string();
    let _guard = ctx.node.guest_locks.lock(vmid).await;
    ctx.node.update_vm(vmid, |conf| {
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
    let disk = ctx.opt_str("disk").map(str::to_string);
    let conf = ctx.node.load_vm(vmid)?.conf;
    vm::check_unlocked(&conf)?;
    if ctx.node.vm_pid(vmid).is_some() {
        return Err(ApiError::fail(
            "you can't convert a VM to template if VM is running",
        ));
    }
    blocking_task(&ctx, "qmtemplate", vmid, move |node, log| {
        vm_clone::template(node, vmid, disk.as_deref(), log)
    })
}

/// `hasFeature` of the VM's volumes (or of snapshot `snapname`'s):
/// `snapshot` (qcow2 or native snapshots), `clone` (a template's base
/// volumes), `copy` (always).
async fn feature(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let feature = ctx.str("feature")?.to_string();
    let conf = ctx.node.load_vm(vmid)?.conf;
    let section = match ctx.opt_str("snapname") {
        Some(name) => snapshot(&ctx, vmid, name)?,
        None => conf.main,
    };
    let node = ctx.node.clone();
    let has = crate::blocking(move || {
        let template = section.get("template") == Some("1");
        let mut has = true;
        for (_, volid) in vm_snapshot::snap_volumes(&section) {
            has &= match feature.as_str() {
                "snapshot" => vm_snapshot::snapshot_possible(&node, &volid),
                "clone" => template && vm_clone::is_base(&node, &volid),
                _ => true,
            };
        }
        Ok(has)
    })
    .await?;
    Ok(json!({ "hasFeature": has, "nodes": [] }))
}

async fn clone(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let newid = ctx
        .opt_int("newid")
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| ApiError::param("newid", "property is missing and it is not optional"))?;
    if newid == vmid {
        return Err(ApiError::param("newid", "the new VM id must differ"));
    }
    if let Some(target) = ctx.opt_str("target") {
        if target != ctx.node.name && target != "localhost" {
            return Err(ApiError::param(
                "target",
                "cloning to another node needs a cluster (not built yet)",
            ));
        }
    }
    let snapname = ctx.opt_str("snapname").map(str::to_string);
    let conf = ctx.node.load_vm(vmid)?.conf;
    vm::check_unlocked(&conf)?;
    let is_template = conf.main.get("template") == Some("1");
    let full = ctx.opt_bool("full").unwrap_or(!is_template);
    let storage = ctx.opt_str("storage").map(str::to_string);
    let format = ctx.opt_str("format").map(str::to_string);
    if !full {
        if storage.is_some() {
            return Err(ApiError::fail(
                "parameter 'storage' not allowed for linked clones",
            ));
        }
        if format.is_some() {
            return Err(ApiError::fail(
                "parameter 'format' not allowed for linked clones",
            ));
        }
        if !is_template {
            return Err(ApiError::fail(
                "linked clone is only possible from a template",
            ));
        }
    }
    let source = match &snapname {
        Some(name) => snapshot(&ctx, vmid, name)?,
        None => conf.main.clone(),
    };
    let pool = ctx.opt_str("pool").map(str::to_string);
    guest::check_allocate(&ctx, newid, pool.as_deref())?;
    let mut storages: Vec<String> = match &storage {
        Some(s) => vec![s.clone()],
        None => vm::drive_volumes(&source)
            .iter()
            .filter_map(|(_, v)| oxve_storage::VolumeId::parse(v).ok().map(|v| v.storage))
            .collect(),
    };
    storages.dedup();
    for s in &storages {
        ctx.require_privs(
            &format!("/storage/{s}"),
            &["Datastore.AllocateSpace"],
            false,
        )?;
    }
    let name = ctx.opt_str("name").map(str::to_string);
    let description = ctx.opt_str("description").map(str::to_string);
    let bwlimit = ctx.opt_int("bwlimit").and_then(|b| u64::try_from(b).ok());
    let node = ctx.node.clone();
    let guard = ctx.node.guest_locks.lock(newid).await;
    let mut claim_section = source.clone();
    claim_section.props.remove("lock");
    let key = vm::claim(&ctx.node, newid, &claim_section)?;
    let upid = ctx.node.tasks.spawn(
        "qmclone",
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = guard;
            // A template does not change: its clones share its lock and
            // run side by side; any other source is held for the copy.
            let (_shared, _exclusive) = if is_template {
                (Some(node.guest_locks.lock_shared(vmid).await), None)
            } else {
                (None, Some(node.guest_locks.lock(vmid).await))
            };
            let log = task.clone();
            let n = node.clone();
            let result = tokio::task::spawn_blocking(move || {
                let src = n.load_vm(vmid)?.conf;
                let source = match &snapname {
                    Some(name) => src.snapshots.get(name).cloned().ok_or_else(|| {
                        ApiError::fail(format!("snapshot '{name}' does not exist"))
                    })?,
                    None => src.main,
                };
                let spec = CloneSpec {
                    vmid,
                    newid,
                    full,
                    storage: storage.as_deref(),
                    format: format.as_deref(),
                    snapname: snapname.as_deref(),
                    bwlimit_kib: bwlimit,
                    running: (snapname.is_none() && n.vm_pid(vmid).is_some())
                        .then(tokio::runtime::Handle::current),
                };
                log.log(format!(
                    "create {} clone of VM {vmid} as VM {newid}",
                    if full { "full" } else { "linked" }
                ));
                let mut section = vm_clone::clone_section(&n, &source, &spec, &|l| log.log(l))?;
                vm_clone::new_identity(&mut section, vmid, name.as_deref());
                if let Some(d) = description {
                    section.description = d;
                }
                let made = crate::handlers::qemu::owned_volumes(&oxve_schema::vmconfig::VmConfig {
                    main: section.clone(),
                    ..Default::default()
                });
                let written = n.update_vm(newid, |conf| {
                    conf.main = section.clone();
                    Ok(())
                });
                if let Err(e) = written {
                    guest::free_allocated(&n, &made, &|l| log.log(l));
                    return Err(e);
                }
                if let Some(p) = &pool {
                    super::lxc::add_to_pool(&n, p, newid)?;
                }
                Ok::<_, ApiError>(())
            })
            .await
            .map_err(|e| e.to_string())?;
            if let Err(e) = result {
                guest::discard_config(&node, &key);
                return Err(e.message);
            }
            Ok(())
        },
    )?;
    Ok(json!(upid.to_string()))
}
