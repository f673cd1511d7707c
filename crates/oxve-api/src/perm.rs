//! Evaluates a method's permission rule from the schema (`check`, `user`)
//! for a caller and the call's parameters, as upstream's
//! `check_api2_permissions` does.

use crate::auth::{now, Caller};
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use oxve_schema::api::Method;
use serde_json::{Map, Value};

/// What the rule allows before the handler runs.
pub fn check_method(
    node: &Node,
    caller: &Caller,
    method: &Method,
    params: &Map<String, Value>,
) -> ApiResult<()> {
    let Some(perms) = &method.permissions else {
        // No rule: root only, as upstream.
        return if caller.is_root() {
            Ok(())
        } else {
            Err(ApiError::forbidden(""))
        };
    };
    match perms.user.as_deref() {
        Some("world") => return Ok(()),
        Some("all") if perms.check.is_none() => return Ok(()),
        Some("all") | None => {}
        Some(user) => {
            return if caller.userid() == user || caller.is_root() {
                Ok(())
            } else {
                Err(ApiError::forbidden(""))
            }
        }
    }
    match &perms.check {
        None => Ok(()),
        Some(check) => {
            if eval(node, caller, check, params)? {
                Ok(())
            } else {
                Err(ApiError::forbidden(describe(check, params)))
            }
        }
    }
}

fn eval(
    node: &Node,
    caller: &Caller,
    check: &Value,
    params: &Map<String, Value>,
) -> ApiResult<bool> {
    let Some(list) = check.as_array() else {
        return Ok(false);
    };
    let op = list.first().and_then(Value::as_str).unwrap_or("");
    let args = &list[1.min(list.len())..];
    Ok(match op {
        "and" => {
            for sub in args {
                if !eval(node, caller, sub, params)? {
                    return Ok(false);
                }
            }
            true
        }
        "or" => {
            for sub in args {
                if eval(node, caller, sub, params)? {
                    return Ok(true);
                }
            }
            false
        }
        "perm" => {
            let path = substitute(args.first().and_then(Value::as_str).unwrap_or("/"), params);
            let privs = str_list(args.get(1));
            let opts = options(&args[2.min(args.len())..]);
            let any = opts.iter().any(|(k, v)| k == "any" && truthy(v));
            if let Some((_, Value::String(p))) = opts.iter().find(|(k, _)| k == "require_param") {
                if !params.contains_key(p) {
                    return Ok(true);
                }
            }
            has_privs(
                node,
                caller,
                &path,
                &privs.iter().map(String::as_str).collect::<Vec<_>>(),
                any,
            )?
        }
        "perm-modify" => {
            let path = substitute(args.first().and_then(Value::as_str).unwrap_or("/"), params);
            perm_modify(node, caller, &path)?
        }
        "userid-param" => {
            let target = params.get("userid").and_then(Value::as_str).unwrap_or("");
            match args.first().and_then(Value::as_str) {
                Some("self") => caller.userid() == target,
                Some(privilege) => {
                    let realm = target.rsplit_once('@').map(|(_, r)| r).unwrap_or("");
                    has_privs(
                        node,
                        caller,
                        &format!("/access/realm/{realm}"),
                        &[privilege],
                        false,
                    )?
                }
                None => false,
            }
        }
        "userid-group" => {
            let privs = str_list(args.first());
            let privs: Vec<&str> = privs.iter().map(String::as_str).collect();
            let opts = options(&args[1.min(args.len())..]);
            let groups_param = opts
                .iter()
                .find(|(k, _)| k == "groups_param")
                .and_then(|(_, v)| v.as_str())
                .map(|_| "groups");
            userid_group(node, caller, params, &privs, groups_param)?
        }
        _ => false,
    })
}

/// Upstream's `userid-group` rule: privileges on `/access/groups`, or on a
/// group the target user belongs to (or is being put into).
fn userid_group(
    node: &Node,
    caller: &Caller,
    params: &Map<String, Value>,
    privs: &[&str],
    groups_param: Option<&str>,
) -> ApiResult<bool> {
    if has_privs(node, caller, "/access/groups", privs, false)? {
        return Ok(true);
    }
    let mut groups: Vec<String> = Vec::new();
    if let Some(target) = params.get("userid").and_then(Value::as_str) {
        groups.extend(node.users()?.groups_of(target));
    }
    if let Some(p) = groups_param {
        if let Some(list) = params.get(p).and_then(Value::as_str) {
            groups.extend(
                list.split([',', ';', ' '])
                    .filter(|g| !g.is_empty())
                    .map(String::from),
            );
        }
    }
    for g in &groups {
        if has_privs(node, caller, &format!("/access/groups/{g}"), privs, false)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Upstream's `check_perm_modify`: `Permissions.Modify`, or the allocate
/// privilege of the object kind the path names.
pub fn perm_modify(node: &Node, caller: &Caller, path: &str) -> ApiResult<bool> {
    let mut privs = vec!["Permissions.Modify"];
    if path.starts_with("/storage/") {
        privs.push("Datastore.Allocate");
    } else if path.starts_with("/vms/") {
        privs.push("VM.Allocate");
    } else if path.starts_with("/pool/") {
        privs.push("Pool.Allocate");
    }
    has_privs(node, caller, path, &privs, true)
}

/// Whether the caller holds `privs` (all, or any with `any`) on `path`.
pub fn has_privs(
    node: &Node,
    caller: &Caller,
    path: &str,
    privs: &[&str],
    any: bool,
) -> ApiResult<bool> {
    if caller.is_root() {
        return Ok(true);
    }
    if !caller.is_authenticated() {
        return Ok(false);
    }
    let users = node.users()?;
    let authid = oxve_access::userid::Authid::parse(&caller.authid())
        .map_err(|e| ApiError::fail(e.to_string()))?;
    let held = oxve_access::acl::privileges(&users, &authid, path, now());
    Ok(if any {
        privs.iter().any(|p| held.contains(*p))
    } else {
        privs.iter().all(|p| held.contains(*p))
    })
}

/// Replaces `{name}` in a permission path with the parameter's value.
fn substitute(template: &str, params: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 1..start + len];
        match params.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(v) => out.push_str(&v.to_string()),
            None => {}
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn options(rest: &[Value]) -> Vec<(String, Value)> {
    rest.chunks(2)
        .filter_map(|c| {
            Some((
                c.first()?.as_str()?.to_string(),
                c.get(1).cloned().unwrap_or(Value::Null),
            ))
        })
        .collect()
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
        Value::String(s) => s != "0" && !s.is_empty(),
        _ => false,
    }
}

/// The `(path, privileges)` part of a refusal, as upstream reports it.
fn describe(check: &Value, params: &Map<String, Value>) -> String {
    let Some(list) = check.as_array() else {
        return String::new();
    };
    match list.first().and_then(Value::as_str) {
        Some("perm") => {
            let path = substitute(list.get(1).and_then(Value::as_str).unwrap_or("/"), params);
            format!("{path}, {}", str_list(list.get(2)).join("|"))
        }
        Some("perm-modify") => {
            let path = substitute(list.get(1).and_then(Value::as_str).unwrap_or("/"), params);
            format!("{path}, Permissions.Modify")
        }
        _ => String::new(),
    }
}
