//! `/pools`: resource pools. Members must exist: guests and storages join
//! pools once their issues exist (a pool can hold none yet).

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_access::usercfg::Pool;
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/pools" => list);
    reg!(r, POST "/pools" => create);
    reg!(r, PUT "/pools" => update);
    reg!(r, DELETE "/pools" => delete);
    reg!(r, GET "/pools/{poolid}" => get);
    reg!(r, PUT "/pools/{poolid}" => update);
    reg!(r, DELETE "/pools/{poolid}" => delete);
}

fn members(ctx: &Ctx, p: &Pool, kind: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    if kind.is_none() || kind == Some("storage") {
        for s in &p.storage {
            out.push(json!({"id": format!("storage/{}/{s}", ctx.node.name), "type": "storage", "node": ctx.node.name, "storage": s}));
        }
    }
    if kind != Some("storage") {
        for v in &p.vms {
            out.push(json!({"id": format!("vm/{v}"), "vmid": v.parse::<u64>().unwrap_or(0), "node": ctx.node.name, "type": "qemu"}));
        }
    }
    out
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let cfg = ctx.node.users()?;
    let only = ctx.opt_str("poolid");
    let kind = ctx.opt_str("type");
    let mut out = Vec::new();
    for (id, p) in &cfg.pools {
        if only.is_some_and(|o| o != id)
            || !ctx.has_privs(&format!("/pool/{id}"), &["Pool.Audit"], false)
        {
            continue;
        }
        let mut v = json!({"poolid": id});
        if !p.comment.is_empty() {
            v["comment"] = json!(p.comment);
        }
        if only.is_some() {
            v["members"] = json!(members(&ctx, p, kind));
        }
        out.push(v);
    }
    Ok(Value::Array(out))
}

async fn create(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("poolid")?.to_string();
    if let Some((parent, _)) = id.rsplit_once('/') {
        if !ctx.node.users()?.pools.contains_key(parent) {
            return Err(ApiError::param(
                "poolid",
                format!("parent pool '{parent}' does not exist"),
            ));
        }
    }
    ctx.node.update_users(|cfg| {
        if cfg.pools.contains_key(&id) {
            return Err(ApiError::fail(format!(
                "create pool failed: pool '{id}' already exists"
            )));
        }
        cfg.pools.insert(
            id.clone(),
            Pool {
                comment: ctx.opt_str("comment").unwrap_or("").into(),
                ..Default::default()
            },
        );
        Ok(())
    })?;
    Ok(Value::Null)
}

async fn get(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("poolid")?;
    let cfg = ctx.node.users()?;
    let p = cfg
        .pools
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("pool '{id}' does not exist")))?;
    let mut v = json!({"members": members(&ctx, p, ctx.opt_str("type"))});
    if !p.comment.is_empty() {
        v["comment"] = json!(p.comment);
    }
    Ok(v)
}

async fn update(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("poolid")?.to_string();
    let vms: Vec<String> = ctx
        .opt_str("vms")
        .map(|s| {
            s.split([',', ';', ' '])
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let storage: Vec<String> = ctx
        .opt_str("storage")
        .map(|s| {
            s.split([',', ';', ' '])
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let delete = ctx.flag("delete");
    // Members must exist; no guest or storage can exist before their issues.
    if !delete {
        if let Some(v) = vms.first() {
            return Err(ApiError::param("vms", format!("VM {v} does not exist")));
        }
        if let Some(s) = storage.first() {
            return Err(ApiError::param(
                "storage",
                format!("storage '{s}' does not exist"),
            ));
        }
    }
    ctx.node.update_users(|cfg| {
        let p = cfg.pools.get_mut(&id).ok_or_else(|| {
            ApiError::fail(format!("update pool failed: pool '{id}' does not exist"))
        })?;
        if let Some(c) = ctx.opt_str("comment") {
            p.comment = c.to_string();
        }
        for v in &vms {
            p.vms.remove(v);
        }
        for s in &storage {
            p.storage.remove(s);
        }
        Ok(())
    })?;
    Ok(Value::Null)
}

async fn delete(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("poolid")?.to_string();
    ctx.node.update_users(|cfg| {
        let p = cfg.pools.get(&id).ok_or_else(|| {
            ApiError::fail(format!("delete pool failed: pool '{id}' does not exist"))
        })?;
        if !p.vms.is_empty() || !p.storage.is_empty() {
            return Err(ApiError::fail(format!(
                "delete pool failed: pool '{id}' is not empty"
            )));
        }
        if cfg.pools.keys().any(|k| k.starts_with(&format!("{id}/"))) {
            return Err(ApiError::fail(format!(
                "delete pool failed: pool '{id}' has sub-pools"
            )));
        }
        cfg.pools.remove(&id);
        cfg.acl.remove(&format!("/pool/{id}"));
        Ok(())
    })?;
    Ok(Value::Null)
}
