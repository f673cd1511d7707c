//! `/nodes/{node}/qemu/{vmid}/status`: current state and figures, and the
//! power actions — start, stop, shutdown, reboot, reset, suspend, resume
//! — each a task holding the VM's lock.

use super::qemu::{list_entry, vmid};
use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use crate::reg;
use crate::vm;
use crate::vm_suspend;
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/status" => super::schema_index);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/status/current" => current);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/status/start" => start);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/status/stop" => stop);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/status/shutdown" => shutdown);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/status/reboot" => reboot);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/status/reset" => reset);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/status/suspend" => suspend);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/status/resume" => resume);
}

/// How long a QMP query of the status may wait for the monitor.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

async fn current(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let node = ctx.node.clone();
    let mut v = crate::blocking(move || list_entry(&node, vmid)).await?;
    v["ha"] = json!({"managed": 0});
    let conf = ctx.node.load_vm(vmid)?.conf.main;
    if conf
        .get("agent")
        .is_some_and(|a| a.split(',').next() == Some("1") || a.contains("enabled=1"))
    {
        v["agent"] = json!(1);
    }
    if v.get("pid").is_none() {
        return Ok(v);
    }
    // Running: QEMU's own view, when the monitor answers in time.
    let Ok(mut qmp) = ctx.node.qemu().qmp(vmid, QUERY_TIMEOUT).await else {
        return Ok(v);
    };
    let ver = qmp.version;
    v["running-qemu"] = json!(format!("{}.{}.{}", ver.major, ver.minor, ver.micro));
    if let Ok(s) = qmp.status().await {
        v["qmpstatus"] = json!(s.status);
    }
    if let Ok(machines) = qmp.execute("query-machines", None).await {
        if let Some(m) = machines
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m.get("is-current").and_then(Value::as_bool) == Some(true))
        {
            v["running-machine"] = m.get("name").cloned().unwrap_or(Value::Null);
        }
    }
    if let Ok(stats) = qmp.execute("query-blockstats", None).await {
        let mut read = 0u64;
        let mut written = 0u64;
        let mut per_drive = serde_json::Map::new();
        for s in stats.as_array().into_iter().flatten() {
            let st = &s["stats"];
            read += st["rd_bytes"].as_u64().unwrap_or(0);
            written += st["wr_bytes"].as_u64().unwrap_or(0);
            let name = s
                .get("qdev")
                .and_then(Value::as_str)
                .map(|q| {
                    q.trim_start_matches("/machine/peripheral/")
                        .split('/')
                        .next()
                        .unwrap_or(q)
                })
                .or(s.get("device").and_then(Value::as_str))
                .unwrap_or("")
                .trim_start_matches("drive-")
                .to_string();
            if !name.is_empty() {
                per_drive.insert(name, st.clone());
            }
        }
        v["diskread"] = json!(read);
        v["diskwrite"] = json!(written);
        v["blockstat"] = Value::Object(per_drive);
    }
    if conf.get("balloon") != Some("0") {
        if let Ok(b) = qmp.execute("query-balloon", None).await {
            if let Some(actual) = b.get("actual").and_then(Value::as_u64) {
                v["balloon"] = json!(actual);
                v["ballooninfo"] = json!({"actual": actual, "max_mem": v["maxmem"]});
            }
        }
    }
    Ok(v)
}

/// A power action (or any other async VM action): runs in a task of
/// `worker` type holding the VM's lock.
pub(super) type Action = Box<
    dyn for<'a> FnOnce(
            &'a Arc<Node>,
            u32,
            &'a (dyn Fn(&str) + Sync),
        ) -> BoxFuture<'a, ApiResult<()>>
        + Send,
>;

pub(super) async fn power_task(ctx: Ctx, worker: &'static str, action: Action) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    ctx.node.load_vm(vmid)?;
    let node: Arc<Node> = ctx.node.clone();
    let upid = ctx.node.tasks.spawn(
        worker,
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = node.guest_locks.lock(vmid).await;
            let log = move |l: &str| task.log(l);
            action(&node, vmid, &log).await.map_err(|e| e.message)
        },
    )?;
    Ok(json!(upid.to_string()))
}

fn check_skiplock(ctx: &Ctx) -> ApiResult<bool> {
    let skiplock = ctx.flag("skiplock");
    if skiplock && !ctx.caller.is_root() {
        return Err(ApiError::forbidden("only root can use skiplock"));
    }
    Ok(skiplock)
}

fn ensure_running(ctx: &Ctx, vmid: u32) -> ApiResult<u32> {
    ctx.node.load_vm(vmid)?;
    ctx.node
        .vm_pid(vmid)
        .ok_or_else(|| ApiError::fail(format!("VM {vmid} not running")))
}

/// Refuses while the config is locked (unless `skiplock`).
fn ensure_unlocked(ctx: &Ctx, vmid: u32, skiplock: bool) -> ApiResult<()> {
    if !skiplock {
        vm::check_unlocked(&ctx.node.load_vm(vmid)?.conf)?;
    }
    Ok(())
}

async fn start(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let skiplock = check_skiplock(&ctx)?;
    for unsupported in ["migratedfrom", "stateuri", "targetstorage", "nets-host-mtu"] {
        if ctx.params.contains_key(unsupported) {
            return Err(ApiError::not_implemented_msg(format!(
                "'{unsupported}' belongs to migration, which is not built yet"
            )));
        }
    }
    // A VM suspended to disk keeps `lock: suspended`; its start resumes it.
    if !vm_suspend::is_suspended(&ctx.node.load_vm(vmid)?.conf.main) {
        ensure_unlocked(&ctx, vmid, skiplock)?;
    }
    if ctx.node.vm_pid(vmid).is_some() {
        return Err(ApiError::fail(format!("VM {vmid} already running")));
    }
    power_task(
        ctx,
        "qmstart",
        Box::new(move |node, vmid, log| {
            Box::pin(async move {
                log(&format!("starting VM {vmid}"));
                vm_suspend::start(node, vmid, log).await
            })
        }),
    )
    .await
}

async fn stop(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let skiplock = check_skiplock(&ctx)?;
    ensure_running(&ctx, vmid)?;
    ensure_unlocked(&ctx, vmid, skiplock)?;
    let timeout = ctx.opt_int("timeout").unwrap_or(10).max(0) as u64;
    power_task(
        ctx,
        "qmstop",
        Box::new(move |node, vmid, log| {
            Box::pin(async move {
                log(&format!("stopping VM {vmid}"));
                vm::stop(node, vmid, Duration::from_secs(timeout)).await
            })
        }),
    )
    .await
}

async fn shutdown(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let skiplock = check_skiplock(&ctx)?;
    ensure_running(&ctx, vmid)?;
    ensure_unlocked(&ctx, vmid, skiplock)?;
    let timeout = ctx.opt_int("timeout").unwrap_or(600).max(0) as u64;
    let force = ctx.flag("forceStop");
    power_task(
        ctx,
        "qmshutdown",
        Box::new(move |node, vmid, log| {
            Box::pin(async move {
                log(&format!("shutting down VM {vmid} (timeout {timeout} s)"));
                vm::shutdown(node, vmid, Duration::from_secs(timeout), force, log).await
            })
        }),
    )
    .await
}

async fn reboot(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    ensure_running(&ctx, vmid)?;
    ensure_unlocked(&ctx, vmid, false)?;
    let timeout = ctx.opt_int("timeout").unwrap_or(600).max(0) as u64;
    // Shutdown and start, as upstream, so that pending changes apply.
    power_task(
        ctx,
        "qmreboot",
        Box::new(move |node, vmid, log| {
            Box::pin(async move {
                log(&format!("rebooting VM {vmid}"));
                vm::shutdown(node, vmid, Duration::from_secs(timeout), false, log).await?;
                vm::start(node, vmid, log).await
            })
        }),
    )
    .await
}

/// A QMP command on a running VM, as a task.
async fn qmp_action(
    ctx: Ctx,
    worker: &'static str,
    command: &'static str,
    skiplock: bool,
) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    ensure_running(&ctx, vmid)?;
    ensure_unlocked(&ctx, vmid, skiplock)?;
    power_task(
        ctx,
        worker,
        Box::new(move |node, vmid, _log| {
            Box::pin(async move {
                let mut qmp = node
                    .qemu()
                    .qmp(vmid, Duration::from_secs(10))
                    .await
                    .map_err(|e| ApiError::fail(e.to_string()))?;
                qmp.execute(command, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| ApiError::fail(e.to_string()))
            })
        }),
    )
    .await
}

async fn reset(ctx: Ctx) -> ApiResult<Value> {
    let skiplock = check_skiplock(&ctx)?;
    qmp_action(ctx, "qmreset", "system_reset", skiplock).await
}

async fn suspend(ctx: Ctx) -> ApiResult<Value> {
    let skiplock = check_skiplock(&ctx)?;
    let statestorage = ctx.opt_str("statestorage").map(str::to_string);
    if !ctx.flag("todisk") {
        if statestorage.is_some() {
            return Err(ApiError::param(
                "statestorage",
                "missing property 'todisk' - 'statestorage' needs it",
            ));
        }
        return qmp_action(ctx, "qmsuspend", "stop", skiplock).await;
    }
    // Early checks for a clear answer (upstream's): the state is a disk
    // of the VM, on a storage the caller may allocate on.
    let vmid = vmid(&ctx)?;
    ctx.require_privs(&format!("/vms/{vmid}"), &["VM.Config.Disk"], false)?;
    if let Some(storage) = &statestorage {
        ctx.node.storage_def(storage)?;
        ctx.require_privs(
            &format!("/storage/{storage}"),
            &["Datastore.AllocateSpace"],
            false,
        )?;
    } else {
        let main = ctx.node.load_vm(vmid)?.conf.main;
        let storage = crate::vm_snapshot::state_storage(&main);
        ctx.require_privs(
            &format!("/storage/{storage}"),
            &["Datastore.AllocateSpace"],
            false,
        )?;
    }
    ensure_running(&ctx, vmid)?;
    ensure_unlocked(&ctx, vmid, skiplock)?;
    power_task(
        ctx,
        "qmsuspend",
        Box::new(move |node, vmid, log| {
            Box::pin(async move {
                log(&format!("suspending VM {vmid} to disk"));
                vm_suspend::to_disk(node, vmid, statestorage, skiplock, log).await
            })
        }),
    )
    .await
}

async fn resume(ctx: Ctx) -> ApiResult<Value> {
    let skiplock = check_skiplock(&ctx)?;
    let vmid = vmid(&ctx)?;
    // Upstream: resuming a VM suspended to disk starts it from its state.
    if ctx.node.vm_pid(vmid).is_none()
        && vm_suspend::is_suspended(&ctx.node.load_vm(vmid)?.conf.main)
    {
        return power_task(
            ctx,
            "qmresume",
            Box::new(move |node, vmid, log| {
                Box::pin(async move { vm_suspend::resume_from_disk(node, vmid, log).await })
            }),
        )
        .await;
    }
    qmp_action(ctx, "qmresume", "cont", skiplock).await
}
