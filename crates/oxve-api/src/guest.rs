//! What containers and VMs share at the API edge: claiming an id, the
//! permission to create, parameters as config text, the pending-changes
//! listing, forgetting a destroyed guest, and the console WebSocket.

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::node::Node;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Claims id `vmid` for a new guest: the config `text` (with `lock:
/// create`) appears atomically at store key `key`, or the call fails when
/// any guest has the id. `kind` is `CT` or `VM` for the message. The
/// caller holds the guest lock.
pub fn claim(node: &Node, vmid: u32, key: String, text: String, kind: &str) -> ApiResult<String> {
    let exists = |kind: &str| {
        ApiError::fail(format!(
            "{kind} {vmid} already exists on node '{}'",
            node.name
        ))
    };
    if let Some(other) = node.guest_exists(vmid)? {
        return Err(exists(other));
    }
    let put = oxve_config::Op::Put {
        key: key.clone(),
        text,
        expect: oxve_config::Expect::Absent,
    };
    match node.store.apply(put) {
        Ok(_) => Ok(key),
        Err(oxve_config::ConfigError::VersionMismatch { .. }) => Err(exists(kind)),
        Err(e) => Err(e.into()),
    }
}

/// Removes a half-made or destroyed guest's config.
pub fn discard_config(node: &Node, key: &str) {
    let _ = node.store.apply(oxve_config::Op::Delete {
        key: key.to_string(),
        expect: oxve_config::Expect::Any,
    });
}

/// Frees the volumes a failed operation allocated, newest first, saying
/// so in the task log (a volume that cannot be freed is named there).
pub fn free_allocated(node: &Node, allocated: &[String], log: &dyn Fn(&str)) {
    for volid in allocated.iter().rev() {
        match crate::ct::free_volume(node, volid) {
            Ok(()) => log(&format!("freed volume '{volid}'")),
            Err(err) => log(&format!("could not free volume '{volid}': {}", err.message)),
        }
    }
}

/// Takes a destroyed guest out of its pools, and with `purge` drops the
/// ACL entries of its path.
pub fn forget(node: &Node, vmid: u32, purge: bool) -> ApiResult<()> {
    node.update_users(|cfg| {
        for p in cfg.pools.values_mut() {
            p.vms.retain(|v| *v != vmid.to_string());
        }
        if purge {
            cfg.acl.remove(&format!("/vms/{vmid}"));
        }
        Ok(())
    })
}

/// Upstream's check before a create: `VM.Allocate` on the guest's path,
/// or on the pool it goes into.
pub fn check_allocate(ctx: &Ctx, vmid: u32, pool: Option<&str>) -> ApiResult<()> {
    let vm_path = format!("/vms/{vmid}");
    if ctx.has_privs(&vm_path, &["VM.Allocate"], false) {
        return Ok(());
    }
    match pool {
        Some(p) => ctx.require_privs(&format!("/pool/{p}"), &["VM.Allocate"], false),
        None => Err(ApiError::forbidden(format!("{vm_path}, VM.Allocate"))),
    }
}

/// A validated parameter as config text (booleans as `1`/`0`).
pub fn config_text(v: &Value) -> String {
    match v {
        Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A list parameter (`delete=a,b`, `revert=a;b`) as its items.
pub fn list_param(ctx: &Ctx, name: &str) -> Vec<String> {
    ctx.opt_str(name)
        .map(|d| {
            oxve_schema::format::split_list(d)
                .into_iter()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `GET .../pending`: every key of the current and the pending section,
/// sorted, with `value`, `pending` and `delete` (1, or 2 when forced).
/// Values of `hidden` keys show as `**********`.
pub fn pending_list(
    current: &Map<String, Value>,
    pending: &Map<String, Value>,
    deletes: &BTreeMap<String, bool>,
    hidden: &[&str],
) -> Value {
    let mut keys: Vec<&String> = current
        .keys()
        .chain(pending.keys())
        .filter(|k| *k != "delete")
        .chain(deletes.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let shown = |key: &str, v: &Value| {
        if hidden.contains(&key) {
            json!("**********")
        } else {
            v.clone()
        }
    };
    let out = keys
        .into_iter()
        .map(|key| {
            let mut item = Map::new();
            item.insert("key".into(), json!(key));
            if let Some(v) = current.get(key) {
                item.insert("value".into(), shown(key, v));
            }
            if let Some(v) = pending.get(key) {
                item.insert("pending".into(), shown(key, v));
            }
            if let Some(force) = deletes.get(key) {
                item.insert("delete".into(), json!(if *force { 2 } else { 1 }));
            }
            Value::Object(item)
        })
        .collect();
    Value::Array(out)
}

/// A console session of guest `vmid` running `argv` (see `termproxy.rs`):
/// for holders of `VM.Console`, as upstream's `vncproxy` task.
pub fn console(ctx: &Ctx, vmid: u32, argv: Vec<String>) -> ApiResult<Value> {
    crate::termproxy::start(
        ctx,
        crate::termproxy::Terminal {
            argv,
            env: Vec::new(),
            acl_path: format!("/vms/{vmid}"),
            privs: vec!["VM.Console"],
            task_type: "vncproxy",
            task_id: Some(vmid.to_string()),
        },
    )
}

/// `GET .../vncwebsocket` of guest `vmid`: checks the console ticket (the
/// upgrade itself happens in the request pipeline).
pub fn vncwebsocket(ctx: &Ctx, vmid: u32) -> ApiResult<Value> {
    let port = ctx
        .opt_int("port")
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| ApiError::param("port", "property is missing and it is not optional"))?;
    crate::websocket::verify_ticket(
        ctx.str("vncticket")?,
        &ctx.caller.authid(),
        &format!("/vms/{vmid}"),
        port,
    )?;
    Ok(json!({ "port": port.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_listing() {
        let current: Map<String, Value> =
            serde_json::from_value(json!({"memory": 512, "cipassword": "x", "name": "a"})).unwrap();
        let pending: Map<String, Value> =
            serde_json::from_value(json!({"memory": 1024, "delete": "name"})).unwrap();
        let deletes = BTreeMap::from([("name".to_string(), false)]);
        let list = pending_list(&current, &pending, &deletes, &["cipassword"]);
        assert_eq!(
            list,
            json!([
                {"key": "cipassword", "value": "**********"},
                {"key": "memory", "value": 512, "pending": 1024},
                {"key": "name", "value": "a", "delete": 1},
            ])
        );
    }
}
