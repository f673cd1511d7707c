//! Bulk guest actions of a node: `startall` and `stopall` as worker tasks.
//!
//! They walk the guest configs of this node in the store. Guest drivers
//! (QEMU, LXC) come with their own issues; until then a node has no guests
//! (creating one answers 501), and a config copied in by hand makes the task
//! fail with a clear message instead of pretending to start it.

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

async fn bulk(ctx: Ctx, worker: &str, action: &'static str, list: Vec<Guest>) -> ApiResult<Value> {
    let todo: Vec<(String, u32)> = list.iter().map(|g| (g.kind.to_string(), g.vmid)).collect();
    let upid =
        ctx.node
            .tasks
            .spawn(worker, None, &ctx.caller.authid(), move |task| async move {
                if todo.is_empty() {
                    task.log(format!("no guests to {action}"));
                    return Ok(());
                }
                for (kind, vmid) in &todo {
                    task.log(format!("{action} {kind} guest {vmid}"));
                }
                Err(format!(
                    "cannot {action} guests {}: this build has no {} driver yet",
                    todo.iter()
                        .map(|(_, v)| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    todo.iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join("/"),
                ))
            })?;
    Ok(json!(upid.to_string()))
}
