//! `/access/acl`: list and modify ACL entries.

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_access::usercfg::normalize_path;
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/access/acl" => list);
    reg!(r, PUT "/access/acl" => update);
}

/// Object trees ACLs may name, as upstream's `check_path`.
fn valid_path(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [] => true,
        ["access"] | ["access", "groups" | "realm"] | ["access", "groups" | "realm", _] => true,
        ["cluster"] | ["cluster", _] => true,
        ["nodes"] | ["nodes", _] => true,
        ["pool", rest @ ..] => rest.len() <= 3,
        ["sdn", rest @ ..] => rest.len() <= 4,
        ["mapping", rest @ ..] => rest.len() <= 2,
        ["storage"] | ["storage", _] => true,
        ["vms"] => true,
        ["vms", id] => id.parse::<u32>().is_ok_and(|v| v >= 100),
        _ => false,
    }
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let cfg = ctx.node.users()?;
    let mut out = Vec::new();
    for (path, entries) in &cfg.acl {
        if !crate::perm::perm_modify(&ctx.node, &ctx.caller, path)?
            && !ctx.has_privs(path, &["Sys.Audit"], false)
        {
            continue;
        }
        for (kind, map) in [
            ("user", &entries.users),
            ("group", &entries.groups),
            ("token", &entries.tokens),
        ] {
            for (ugid, roles) in map {
                for (role, propagate) in roles {
                    out.push(json!({
                        "path": path,
                        "type": kind,
                        "ugid": ugid,
                        "roleid": role,
                        "propagate": u8::from(*propagate),
                    }));
                }
            }
        }
    }
    Ok(Value::Array(out))
}

fn list_param(ctx: &Ctx, name: &str) -> Vec<String> {
    ctx.opt_str(name)
        .map(|s| {
            s.split([',', ';', ' '])
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

async fn update(ctx: Ctx) -> ApiResult<Value> {
    let path = normalize_path(ctx.str("path")?);
    if !valid_path(&path) {
        return Err(ApiError::param(
            "path",
            format!("invalid ACL path '{path}'"),
        ));
    }
    let roles = list_param(&ctx, "roles");
    let users = list_param(&ctx, "users");
    let groups = list_param(&ctx, "groups");
    let tokens = list_param(&ctx, "tokens");
    if users.is_empty() && groups.is_empty() && tokens.is_empty() {
        return Err(ApiError::param(
            "users",
            "at least one of 'users', 'groups' or 'tokens' is required",
        ));
    }
    let propagate = ctx.opt_bool("propagate").unwrap_or(true);
    let delete = ctx.flag("delete");
    ctx.node.update_users(|cfg| {
        for r in &roles {
            if !cfg.role_exists(r) {
                return Err(ApiError::param(
                    "roles",
                    format!("role '{r}' does not exist"),
                ));
            }
        }
        let mut members = Vec::new();
        for u in &users {
            if !cfg.users.contains_key(u) {
                return Err(ApiError::param(
                    "users",
                    format!("user '{u}' does not exist"),
                ));
            }
            members.push(u.clone());
        }
        for g in &groups {
            if !cfg.groups.contains_key(g) {
                return Err(ApiError::param(
                    "groups",
                    format!("group '{g}' does not exist"),
                ));
            }
            members.push(format!("@{g}"));
        }
        for t in &tokens {
            let exists = t
                .split_once('!')
                .and_then(|(u, n)| cfg.users.get(u).map(|u| u.tokens.contains_key(n)))
                .unwrap_or(false);
            if !exists {
                return Err(ApiError::param(
                    "tokens",
                    format!("token '{t}' does not exist"),
                ));
            }
            members.push(t.clone());
        }
        for m in &members {
            for r in &roles {
                if delete {
                    cfg.remove_acl_role(&path, m, r);
                } else {
                    cfg.set_acl_role(&path, m, r, propagate);
                }
            }
        }
        Ok(())
    })?;
    Ok(Value::Null)
}

#[cfg(test)]
mod tests {
    #[test]
    fn acl_paths_as_upstream() {
        for ok in [
            "/",
            "/vms",
            "/vms/100",
            "/storage/local",
            "/pool/dev",
            "/access/groups/admins",
            "/nodes/pve1",
            "/sdn/zones/z1",
        ] {
            assert!(super::valid_path(ok), "{ok}");
        }
        for bad in ["/foo", "/vms/abc", "/vms/5", "/storage/a/b"] {
            assert!(!super::valid_path(bad), "{bad}");
        }
    }
}
