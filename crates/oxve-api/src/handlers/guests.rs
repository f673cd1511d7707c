//! Bulk guest actions of a node: `startall` and `stopall` as worker tasks.
//!
//! They walk the guest configs of this node in the store, in upstream's
//! order: by `startup` order (guests without one last), then by id, with
//! the `up` delay after each start; `stopall` goes the other way and gives
//! each guest its `down` timeout (default 180 s). Containers are driven by
//! LXC; VMs wait for the QEMU driver and fail the task with a clear message
//! instead of pretending to start them.

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, POST "/nodes/{node}/startall" => startall);
    reg!(r, POST "/nodes/{node}/stopall" => stopall);
}

/// A guest of this node: kind (`qemu`/`lxc`), id, and its config text.
struct Guest {
    kind: &'static str,
    vmid: u32,
    config: String,
}

fn guests(ctx: &Ctx) -> ApiResult<Vec<Guest>> {
    let mut out = Vec::new();
    for (dir, kind) in [("qemu-server", "qemu"), ("lxc", "lxc")] {
        let prefix = format!("nodes/{}/{dir}/", ctx.node.name);
        for meta in ctx.node.store.list(&prefix)? {
            let Some(vmid) = meta.key[prefix.len()..]
                .strip_suffix(".conf")
                .and_then(|v| v.parse().ok())
            else {
                continue;
            };
            let config = ctx.node.read_text(&meta.key)?;
            out.push(Guest { kind, vmid, config });
        }
    }
    out.sort_by_key(|g| g.vmid);
    Ok(out)
}

/// `vms=100,101` or every guest; checks `VM.PowerMgmt` as upstream.
fn selected(ctx: &Ctx) -> ApiResult<Vec<Guest>> {
    let wanted: Option<Vec<u32>> = ctx.opt_str("vms").map(|list| {
        list.split([',', ';', ' '])
            .filter_map(|v| v.trim().parse().ok())
            .collect()
    });
    match &wanted {
        Some(ids) => {
            for id in ids {
                if !ctx.has_privs("/", &["VM.PowerMgmt"], false)
                    && !ctx.has_privs(&format!("/vms/{id}"), &["VM.PowerMgmt"], false)
                {
                    return Err(ApiError::forbidden(format!("/vms/{id}, VM.PowerMgmt")));
                }
            }
        }
        None => ctx.require_privs("/", &["VM.PowerMgmt"], false)?,
    }
    Ok(guests(ctx)?
        .into_iter()
        .filter(|g| wanted.as_ref().is_none_or(|ids| ids.contains(&g.vmid)))
        .collect())
}

fn onboot(config: &str) -> bool {
    config
        .lines()
        .take_while(|l| !l.starts_with('['))
        .any(|l| l.trim() == "onboot: 1")
}

async fn startall(ctx: Ctx) -> ApiResult<Value> {
    let force = ctx.flag("force");
    let list: Vec<Guest> = selected(&ctx)?
        .into_iter()
        .filter(|g| force || onboot(&g.config))
        .collect();
    bulk(ctx, "startall", "start", list).await
}

async fn stopall(ctx: Ctx) -> ApiResult<Value> {
    let list = selected(&ctx)?;
    bulk(ctx, "stopall", "stop", list).await
}

/// `order`, `up` and `down` of a guest's `startup` option.
fn startup(config: &str) -> (Option<i64>, u64, u64) {
    let value = config
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("startup:"))
        .map(str::trim)
        .unwrap_or("");
    let parsed = oxve_schema::format::parse_startup_order(value).unwrap_or_default();
    let num = |k: &str| parsed.get(k).and_then(Value::as_i64);
    (
        num("order"),
        num("up").unwrap_or(0).max(0) as u64,
        num("down").unwrap_or(180).max(0) as u64,
    )
}

async fn bulk(ctx: Ctx, worker: &str, action: &'static str, list: Vec<Guest>) -> ApiResult<Value> {
    let mut todo: Vec<(&'static str, u32, Option<i64>, u64, u64)> = list
        .iter()
        .map(|g| {
            let (order, up, down) = startup(&g.config);
            (g.kind, g.vmid, order, up, down)
        })
        .collect();
    todo.sort_by_key(|(_, vmid, order, _, _)| (order.unwrap_or(i64::MAX), *vmid));
    if action == "stop" {
        todo.reverse();
    }
    let node = ctx.node.clone();
    let upid =
        ctx.node
            .tasks
            .spawn(worker, None, &ctx.caller.authid(), move |task| async move {
                if todo.is_empty() {
                    task.log(format!("no guests to {action}"));
                    return Ok(());
                }
                let mut failed = Vec::new();
                for (kind, vmid, _, up, down) in todo {
                    let _guard = node.guest_locks.lock(vmid).await;
                    let result = if kind == "lxc" {
                        let n = node.clone();
                        let log = task.clone();
                        tokio::task::spawn_blocking(move || {
                            let running = n.lxc().state(vmid).map_err(crate::ct::lxc_err)?
                                != oxve_lxc::host::RunState::Stopped;
                            match (action, running) {
                                ("start", false) => {
                                    log.log(format!("Starting CT {vmid}"));
                                    super::lxc_status::apply_pending(&n, vmid)?;
                                    crate::ct::start(&n, vmid, &|l| log.log(l))
                                }
                                ("stop", true) => {
                                    log.log(format!(
                                        "Stopping CT {vmid} (timeout = {down} seconds)"
                                    ));
                                    crate::ct::stop(&n, vmid, false, down, true)
                                }
                                _ => Ok(()),
                            }
                        })
                        .await
                        .map_err(|e| e.to_string())?
                    } else {
                        let running = node.vm_pid(vmid).is_some();
                        let log = task.clone();
                        let log = move |l: &str| log.log(l);
                        match (action, running) {
                            ("start", false) => {
                                task.log(format!("Starting VM {vmid}"));
                                crate::vm_suspend::start(&node, vmid, &log).await
                            }
                            ("stop", true) => {
                                task.log(format!("Stopping VM {vmid} (timeout = {down} seconds)"));
                                crate::vm::shutdown(
                                    &node,
                                    vmid,
                                    std::time::Duration::from_secs(down),
                                    true,
                                    &log,
                                )
                                .await
                            }
                            _ => Ok(()),
                        }
                    };
                    let what = if kind == "lxc" { "CT" } else { "VM" };
                    match result {
                        Ok(()) if action == "start" && up > 0 => {
                            task.log(format!("Waiting for {up} seconds (startup delay)"));
                            tokio::time::sleep(std::time::Duration::from_secs(up)).await;
                        }
                        Ok(()) => {}
                        Err(e) => {
                            task.warn(format!("{action} of {what} {vmid} failed: {}", e.message));
                            failed.push(vmid);
                        }
                    }
                }
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "could not {action} guests {}",
                        failed
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            })?;
    Ok(json!(upid.to_string()))
}
