//! `/cluster`: status, resources, tasks and `nextid` with reservations.
//!
//! Upstream's `nextid` only looks for a free id, so two clients that ask at
//! once get the same one and the second create fails. Here every answer is
//! also a reservation (a lock in the config store, five minutes), so
//! concurrent callers always get different ids; creating the guest consumes
//! the reservation (see docs/DEVIATIONS.md).

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use serde_json::{json, Value};
use std::time::Duration;

/// How long an id handed out by `nextid` stays reserved.
pub const RESERVATION_TTL: Duration = Duration::from_secs(300);
/// Upstream's default range for `nextid`.
const FIRST_ID: u32 = 100;
const LAST_ID: u32 = 999_999_999;

/// Serializes id searches inside this process (the store lock makes them
/// atomic across processes and, later, nodes).
#[derive(Default)]
pub struct Reservations(tokio::sync::Mutex<()>);

pub fn register(r: &mut Registry) {
    reg!(r, GET "/cluster" => super::schema_index);
    reg!(r, GET "/cluster/status" => status);
    reg!(r, GET "/cluster/resources" => resources);
    reg!(r, GET "/cluster/nextid" => nextid);
    reg!(r, GET "/cluster/tasks" => tasks);
}

async fn status(ctx: Ctx) -> ApiResult<Value> {
    Ok(json!([{
        "type": "node",
        "id": format!("node/{}", ctx.node.name),
        "name": ctx.node.name,
        "nodeid": 0,
        "local": 1,
        "online": 1,
        "level": "",
        "ip": local_ip(),
    }]))
}

fn local_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .ok()
        .and_then(|s| {
            // Never sends anything: connect() on UDP only picks a source address.
            s.connect("192.0.2.1:9").ok()?;
            s.local_addr().ok()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into())
}

async fn resources(ctx: Ctx) -> ApiResult<Value> {
    let mut out = Vec::new();
    let wanted = ctx.opt_str("type");
    if wanted.is_none() || wanted == Some("node") {
        let path = format!("/nodes/{}", ctx.node.name);
        if ctx.has_privs(&path, &["Sys.Audit"], false) {
            let s = crate::sys::sample(&ctx.node);
            out.push(json!({
                "id": format!("node/{}", ctx.node.name),
                "type": "node",
                "node": ctx.node.name,
                "status": "online",
                "level": "",
                "cpu": s.cpu,
                "maxcpu": s.cpus,
                "mem": s.mem_used,
                "maxmem": s.mem_total,
                "disk": s.root_used,
                "maxdisk": s.root_total,
                "uptime": s.uptime,
                "cgroup-mode": cgroup_mode(),
            }));
        }
    }
    if wanted.is_none() || wanted == Some("storage") {
        let (cfg, _) = ctx.node.storage_config()?;
        let defs: Vec<_> = cfg
            .storages()
            .into_iter()
            .filter(|d| d.enabled_on(&ctx.node.name))
            .filter(|d| {
                ctx.has_privs(
                    &format!("/storage/{}", d.id),
                    &["Datastore.Audit", "Datastore.AllocateSpace"],
                    true,
                )
            })
            .collect();
        let node = ctx.node.clone();
        let storages = crate::blocking(move || {
            Ok(defs
                .iter()
                .map(|d| {
                    let st = super::node_storage::status_entry(&node, d);
                    let active = st["active"] == json!(1);
                    json!({
                        "id": format!("storage/{}/{}", node.name, d.id),
                        "type": "storage",
                        "storage": d.id,
                        "node": node.name,
                        "plugintype": d.kind.as_str(),
                        "content": d.content().to_string(),
                        "shared": u8::from(d.shared()),
                        "status": if active { "available" } else { "unknown" },
                        "disk": st.get("used").cloned().unwrap_or(json!(0)),
                        "maxdisk": st.get("total").cloned().unwrap_or(json!(0)),
                    })
                })
                .collect::<Vec<_>>())
        })
        .await?;
        out.extend(storages);
    }
    if wanted.is_none() || wanted == Some("vm") || wanted == Some("lxc") || wanted == Some("qemu") {
        let audit = |id: &u32| ctx.has_privs(&format!("/vms/{id}"), &["VM.Audit"], false);
        let cts: Vec<u32> = if wanted.is_none() || wanted == Some("vm") || wanted == Some("lxc") {
            ctx.node.ct_ids()?.into_iter().filter(audit).collect()
        } else {
            Vec::new()
        };
        let vms: Vec<u32> = if wanted.is_none() || wanted == Some("vm") || wanted == Some("qemu") {
            ctx.node.vm_ids()?.into_iter().filter(audit).collect()
        } else {
            Vec::new()
        };
        let node = ctx.node.clone();
        let pools = ctx.node.users()?;
        let guests = crate::blocking(move || {
            let entries = cts
                .into_iter()
                .filter_map(|id| {
                    let mut v = super::lxc::list_entry(&node, id).ok()?;
                    v["type"] = json!("lxc");
                    v["id"] = json!(format!("lxc/{id}"));
                    Some((id, v))
                })
                .chain(vms.into_iter().filter_map(|id| {
                    let mut v = super::qemu::list_entry(&node, id).ok()?;
                    v["type"] = json!("qemu");
                    v["id"] = json!(format!("qemu/{id}"));
                    Some((id, v))
                }));
            Ok(entries
                .map(|(id, mut v)| {
                    v["node"] = json!(node.name);
                    if let Some((pool, _)) = pools
                        .pools
                        .iter()
                        .find(|(_, p)| p.vms.contains(&id.to_string()))
                    {
                        v["pool"] = json!(pool);
                    }
                    v
                })
                .collect::<Vec<_>>())
        })
        .await?;
        out.extend(guests);
    }
    Ok(Value::Array(out))
}

/// 2 on a pure cgroup v2 host, 1 on a legacy/hybrid one (upstream's figure).
fn cgroup_mode() -> u8 {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        2
    } else {
        1
    }
}

/// Guest ids that have a config anywhere in the store.
fn used_ids(ctx: &Ctx) -> ApiResult<std::collections::BTreeSet<u32>> {
    let mut ids = std::collections::BTreeSet::new();
    for meta in ctx.node.store.list("nodes/")? {
        let mut parts = meta.key.split('/');
        let (_, _, kind, file) = (parts.next(), parts.next(), parts.next(), parts.next());
        if matches!(kind, Some("qemu-server") | Some("lxc")) {
            if let Some(id) = file
                .and_then(|f| f.strip_suffix(".conf"))
                .and_then(|f| f.parse().ok())
            {
                ids.insert(id);
            }
        }
    }
    Ok(ids)
}

/// The store lock that reserves a guest id.
pub fn reservation_lock(vmid: u32) -> String {
    format!("vmid-reservation/{vmid}")
}

async fn nextid(ctx: Ctx) -> ApiResult<Value> {
    let _serial = ctx.node.nextid.0.lock().await;
    let used = used_ids(&ctx)?;
    // Each answer is its own reservation, even for the same user.
    let owner = format!("{}#{:016x}", ctx.caller.authid(), rand::random::<u64>());
    if let Some(vmid) = ctx.opt_int("vmid") {
        let vmid = vmid as u32;
        if used.contains(&vmid) {
            return Err(ApiError::param("vmid", format!("VM {vmid} already exists")));
        }
        if !ctx
            .node
            .store
            .lock(&reservation_lock(vmid), &owner, RESERVATION_TTL)?
        {
            return Err(ApiError::param(
                "vmid",
                format!("VM {vmid} is reserved by another caller"),
            ));
        }
        return Ok(json!(vmid));
    }
    for vmid in FIRST_ID..=LAST_ID {
        if used.contains(&vmid) {
            continue;
        }
        if ctx
            .node
            .store
            .lock(&reservation_lock(vmid), &owner, RESERVATION_TTL)?
        {
            return Ok(json!(vmid));
        }
    }
    Err(ApiError::fail(
        "unable to get any free VMID in range [100, 999999999]",
    ))
}

async fn tasks(ctx: Ctx) -> ApiResult<Value> {
    let sees_all = ctx.has_privs(&format!("/nodes/{}", ctx.node.name), &["Sys.Audit"], false);
    let filter = oxve_tasks::TaskFilter {
        limit: 50,
        source: oxve_tasks::TaskSource::All,
        only_user: (!sees_all).then(|| ctx.caller.authid()),
        ..Default::default()
    };
    let tasks = ctx.node.tasks.list(&filter)?;
    serde_json::to_value(tasks).map_err(|e| ApiError::fail(e.to_string()))
}
