//! `/access/roles`: built-in roles (read-only) and custom ones.

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_access::roles;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

pub fn register(r: &mut Registry) {
    reg!(r, GET "/access/roles" => list);
    reg!(r, POST "/access/roles" => create);
    reg!(r, GET "/access/roles/{roleid}" => get);
    reg!(r, PUT "/access/roles/{roleid}" => update);
    reg!(r, DELETE "/access/roles/{roleid}" => delete);
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let cfg = ctx.node.users()?;
    let mut out = Vec::new();
    for r in roles::BUILTIN_ROLES {
        let privs = roles::builtin(r).unwrap_or_default();
        out.push(json!({"roleid": r, "privs": privs.join(","), "special": 1}));
    }
    for (r, privs) in &cfg.roles {
        let privs: Vec<&str> = privs.iter().map(String::as_str).collect();
        out.push(json!({"roleid": r, "privs": privs.join(","), "special": 0}));
    }
    out.sort_by(|a, b| a["roleid"].as_str().cmp(&b["roleid"].as_str()));
    Ok(Value::Array(out))
}

/// Parses `privs`, refusing unknown privilege names as upstream.
fn privs(ctx: &Ctx) -> ApiResult<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for p in ctx
        .opt_str("privs")
        .unwrap_or("")
        .split([',', ';', ' '])
        .filter(|p| !p.is_empty())
    {
        if !roles::is_privilege(p) {
            return Err(ApiError::param("privs", format!("invalid privilege '{p}'")));
        }
        out.insert(p.to_string());
    }
    Ok(out)
}

async fn create(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("roleid")?.to_string();
    let set = privs(&ctx)?;
    if roles::is_builtin(&id) {
        return Err(ApiError::fail(format!(
            "create role failed: role '{id}' already exists"
        )));
    }
    ctx.node.update_users(|cfg| {
        if cfg.roles.contains_key(&id) {
            return Err(ApiError::fail(format!(
                "create role failed: role '{id}' already exists"
            )));
        }
        cfg.roles.insert(id.clone(), set.clone());
        Ok(())
    })?;
    Ok(Value::Null)
}

async fn get(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("roleid")?;
    let cfg = ctx.node.users()?;
    let set = cfg
        .role_privileges(id)
        .ok_or_else(|| ApiError::not_found(format!("role '{id}' does not exist")))?;
    let m: Map<String, Value> = set.into_iter().map(|p| (p, json!(1))).collect();
    Ok(Value::Object(m))
}

async fn update(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("roleid")?.to_string();
    if roles::is_builtin(&id) {
        return Err(ApiError::bad_request(format!(
            "cannot modify built-in role '{id}'"
        )));
    }
    let set = privs(&ctx)?;
    let append = ctx.flag("append");
    ctx.node.update_users(|cfg| {
        let r = cfg.roles.get_mut(&id).ok_or_else(|| {
            ApiError::fail(format!("update role failed: role '{id}' does not exist"))
        })?;
        if append {
            r.extend(set.iter().cloned());
        } else if ctx.opt_str("privs").is_some() {
            *r = set.clone();
        }
        Ok(())
    })?;
    Ok(Value::Null)
}

async fn delete(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("roleid")?.to_string();
    if roles::is_builtin(&id) {
        return Err(ApiError::bad_request(format!(
            "cannot delete built-in role '{id}'"
        )));
    }
    ctx.node.update_users(|cfg| {
        if cfg.roles.remove(&id).is_none() {
            return Err(ApiError::fail(format!(
                "delete role failed: role '{id}' does not exist"
            )));
        }
        cfg.remove_acl_role_everywhere(&id);
        Ok(())
    })?;
    Ok(Value::Null)
}
