//! `/nodes/{node}/lxc/{vmid}/status`: current state and figures, start,
//! stop, shutdown, reboot, suspend and resume, each power action a task.

use super::lxc::{list_entry, vmid};
use super::{Ctx, Registry};
use crate::ct;
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use crate::reg;
use oxve_lxc::host::RunState;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/lxc/{vmid}/status" => super::schema_index);
    reg!(r, GET "/nodes/{node}/lxc/{vmid}/status/current" => current);
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/status/start" => start);
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/status/stop" => stop);
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/status/shutdown" => shutdown);
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/status/reboot" => reboot);
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/status/suspend" => suspend);
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/status/resume" => resume);
    reg!(r, GET "/nodes/{node}/lxc/{vmid}/interfaces" => interfaces);
}

/// The CT's interfaces as its own network namespace sees them (`ip -j
/// addr` run in it from the host: nothing inside the CT is trusted).
async fn interfaces(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let state = ctx.node.lxc().state(vmid).map_err(ct::lxc_err)?;
    let Some(pid) = state.pid() else {
        return Err(ApiError::fail(format!("CT {vmid} not running")));
    };
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["--", "ip", "-j", "addr", "show"])
        .output()
        .map_err(|e| ApiError::fail(format!("cannot run nsenter: {e}")))?;
    if !out.status.success() {
        return Err(ApiError::fail(format!(
            "cannot read the interfaces of CT {vmid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let links: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut result = Vec::new();
    for link in links {
        let name = link
            .get("ifname")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mac = link
            .get("address")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut entry =
            json!({"name": name, "hwaddr": mac, "hardware-address": mac, "ip-addresses": []});
        for addr in link
            .get("addr_info")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let family = addr.get("family").and_then(Value::as_str).unwrap_or("");
            let local = addr.get("local").and_then(Value::as_str).unwrap_or("");
            let prefix = addr.get("prefixlen").and_then(Value::as_u64).unwrap_or(0);
            let kind = if family == "inet6" { "ipv6" } else { "ipv4" };
            if entry.get(family).is_none() && (family == "inet" || family == "inet6") {
                entry[family] = json!(format!("{local}/{prefix}"));
            }
            if let Some(list) = entry["ip-addresses"].as_array_mut() {
                list.push(json!({"ip-address": local, "ip-address-type": kind, "prefix": prefix}));
            }
        }
        result.push(entry);
    }
    Ok(Value::Array(result))
}

async fn current(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let node = ctx.node.clone();
    crate::blocking(move || {
        let mut v = list_entry(&node, vmid)?;
        v["ha"] = json!({"managed": 0});
        Ok(v)
    })
    .await
}

/// Runs a power action as a task of `worker` type, holding the CT's lock.
async fn power_task(
    ctx: Ctx,
    worker: &'static str,
    action: impl FnOnce(&Node, u32, &dyn Fn(&str)) -> ApiResult<()> + Send + 'static,
) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    // The config must exist (upstream's error otherwise) before a task starts.
    ctx.node.load_ct(vmid)?;
    let node: Arc<Node> = ctx.node.clone();
    let upid = ctx.node.tasks.spawn(
        worker,
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = node.guest_locks.lock(vmid).await;
            let log = task.clone();
            tokio::task::spawn_blocking(move || action(&node, vmid, &|l| log.log(l)))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.message)
        },
    )?;
    Ok(json!(upid.to_string()))
}

async fn start(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let skiplock = ctx.flag("skiplock");
    if skiplock && !ctx.caller.is_root() {
        return Err(ApiError::forbidden("only root can use skiplock"));
    }
    // Refuse at once what cannot work, as upstream does before its task.
    let loaded = ctx.node.load_ct(vmid)?;
    // A CT that `pct mount` holds starts too (its mounts are redone).
    if !skiplock && loaded.conf.main.get("lock") != Some("mounted") {
        ct::check_unlocked(&loaded.conf)?;
    }
    if ctx.node.lxc().state(vmid).map_err(ct::lxc_err)? != RunState::Stopped {
        return Err(ApiError::fail(format!("CT {vmid} already running")));
    }
    power_task(ctx, "vzstart", move |node, vmid, log| {
        apply_pending(node, vmid)?;
        ct::start(node, vmid, log)
    })
    .await
}

/// Moves `[pve:pending]` into the config before a start.
pub fn apply_pending(node: &Node, vmid: u32) -> ApiResult<()> {
    if node.load_ct(vmid)?.conf.pending.is_empty() {
        return Ok(());
    }
    node.update_ct(vmid, |conf| {
        if conf.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut conf.pending);
        for (k, v) in pending.props {
            if k == "delete" {
                for key in v.split(',') {
                    conf.main.props.remove(key.trim_start_matches('!'));
                }
            } else {
                conf.main.props.insert(k, v);
            }
        }
        Ok(())
    })
}

async fn stop(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    ensure_running(&ctx, vmid)?;
    power_task(ctx, "vzstop", |node, vmid, log| {
        log(&format!("stopping CT {vmid}"));
        ct::stop(node, vmid, true, 0, true)
    })
    .await
}

async fn shutdown(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    ensure_running(&ctx, vmid)?;
    let timeout = ctx.opt_int("timeout").unwrap_or(60).max(0) as u64;
    let force = ctx.flag("forceStop");
    power_task(ctx, "vzshutdown", move |node, vmid, log| {
        log(&format!("shutting down CT {vmid} (timeout {timeout} s)"));
        ct::stop(node, vmid, false, timeout, force)
    })
    .await
}

async fn reboot(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    ensure_running(&ctx, vmid)?;
    let timeout = ctx.opt_int("timeout").unwrap_or(60).max(0) as u64;
    // A reboot is shutdown + start, as upstream, so pending changes apply.
    power_task(ctx, "vzreboot", move |node, vmid, log| {
        log(&format!("rebooting CT {vmid}"));
        ct::stop(node, vmid, false, timeout, true)?;
        apply_pending(node, vmid)?;
        ct::start(node, vmid, log)
    })
    .await
}

async fn suspend(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    ensure_running(&ctx, vmid)?;
    power_task(ctx, "vzsuspend", |node, vmid, _log| {
        node.lxc().freeze(vmid, true).map_err(ct::lxc_err)
    })
    .await
}

async fn resume(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    ensure_running(&ctx, vmid)?;
    power_task(ctx, "vzresume", |node, vmid, _log| {
        node.lxc().freeze(vmid, false).map_err(ct::lxc_err)
    })
    .await
}

fn ensure_running(ctx: &Ctx, vmid: u32) -> ApiResult<()> {
    ctx.node.load_ct(vmid)?;
    if ctx.node.lxc().state(vmid).map_err(ct::lxc_err)? == RunState::Stopped {
        return Err(ApiError::fail(format!("CT {vmid} not running")));
    }
    Ok(())
}
