//! `/nodes/{node}/tasks`: the task list, status, log and stop.

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_tasks::{TaskFilter, Upid};
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/tasks" => list);
    reg!(r, GET "/nodes/{node}/tasks/{upid}" => super::schema_index);
    reg!(r, GET "/nodes/{node}/tasks/{upid}/status" => status);
    reg!(r, GET "/nodes/{node}/tasks/{upid}/log" => log);
    reg!(r, DELETE "/nodes/{node}/tasks/{upid}" => stop);
}

/// Whether the caller may see every task of the node, not just their own.
fn sees_all(ctx: &Ctx) -> bool {
    ctx.has_privs(&format!("/nodes/{}", ctx.node.name), &["Sys.Audit"], false)
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let filter = TaskFilter {
        start: ctx.opt_int("start").unwrap_or(0).max(0) as u64,
        limit: ctx.opt_int("limit").unwrap_or(50).max(0) as u64,
        userfilter: ctx.opt_str("userfilter").map(String::from),
        typefilter: ctx.opt_str("typefilter").map(String::from),
        vmid: ctx.opt_int("vmid").map(|v| v as u32),
        errors: ctx.flag("errors"),
        source: ctx
            .opt_str("source")
            .unwrap_or("archive")
            .parse()
            .unwrap_or_default(),
        statusfilter: ctx.opt_str("statusfilter").map(String::from),
        since: ctx.opt_int("since"),
        until: ctx.opt_int("until"),
        only_user: (!sees_all(&ctx)).then(|| ctx.caller.authid()),
    };
    let tasks = ctx.node.tasks.list(&filter)?;
    serde_json::to_value(tasks).map_err(|e| ApiError::fail(e.to_string()))
}

/// Parses the UPID parameter and checks that the caller may see the task:
/// their own, or any with `Sys.Audit` on the node.
fn task(ctx: &Ctx) -> ApiResult<Upid> {
    let upid: Upid = ctx
        .str("upid")?
        .parse()
        .map_err(|_| ApiError::param("upid", "unable to parse worker upid"))?;
    if upid.node != ctx.node.name {
        return Err(ApiError::param("upid", "task is not from this node"));
    }
    let own = upid.user == ctx.caller.authid() || upid.user == ctx.userid();
    if !own && !sees_all(ctx) {
        return Err(ApiError::forbidden(format!(
            "/nodes/{}, Sys.Audit",
            ctx.node.name
        )));
    }
    Ok(upid)
}

async fn status(ctx: Ctx) -> ApiResult<Value> {
    let upid = task(&ctx)?;
    let st = ctx.node.tasks.status(&upid)?;
    serde_json::to_value(st).map_err(|e| ApiError::fail(e.to_string()))
}

async fn log(ctx: Ctx) -> ApiResult<Value> {
    let upid = task(&ctx)?;
    let start = ctx.opt_int("start").unwrap_or(0).max(0) as u64;
    let limit = ctx.opt_int("limit").unwrap_or(50).max(0) as u64;
    let (lines, _total) = ctx.node.tasks.read_log(&upid, start, limit)?;
    Ok(json!(lines
        .into_iter()
        .map(|l| json!({"n": l.n, "t": l.t}))
        .collect::<Vec<_>>()))
}

async fn stop(ctx: Ctx) -> ApiResult<Value> {
    let upid = task(&ctx)?;
    let own = upid.user == ctx.caller.authid() || upid.user == ctx.userid();
    if !own {
        ctx.require_privs(&format!("/nodes/{}", ctx.node.name), &["Sys.Modify"], false)?;
    }
    ctx.node.tasks.stop(&upid)?;
    Ok(Value::Null)
}
