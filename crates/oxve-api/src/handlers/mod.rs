//! API handlers, one module per area, and the registry that maps schema
//! methods to them. A schema method without a handler answers 501.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use futures::future::BoxFuture;
use oxve_schema::api::{Method, Verb};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

pub mod access;
pub mod acl;
pub mod aplinfo;
pub mod cluster;
pub mod console;
pub mod content_copy;
pub mod disks;
pub mod domains;
pub mod guests;
pub mod lxc;
pub mod lxc_console;
pub mod lxc_reassign;
pub mod lxc_snapshot;
pub mod lxc_status;
pub mod node_storage;
pub mod nodes;
pub mod pools;
pub mod prune;
pub mod qemu;
pub mod qemu_agent;
pub mod qemu_caps;
pub mod qemu_cloudinit;
pub mod qemu_console;
pub mod qemu_disk;
pub mod qemu_snapshot;
pub mod qemu_status;
pub mod roles;
pub mod scan;
pub mod storage;
pub mod tasks;
pub mod tfa;
pub mod tokens;
pub mod transfer;
pub mod users;

/// Everything a handler gets: the node, the authenticated caller and the
/// validated parameters (path variables included).
pub struct Ctx {
    pub node: Arc<Node>,
    pub caller: Caller,
    pub params: Map<String, Value>,
    pub method: &'static Method,
    /// The file of an upload method, streamed (see `upload.rs`).
    pub upload: Option<crate::upload::Upload>,
}

/// A handler: validated call in, `data` out.
pub type Handler = fn(Ctx) -> BoxFuture<'static, ApiResult<Value>>;

/// Maps `(verb, path template)` to handlers.
#[derive(Default)]
pub struct Registry {
    map: HashMap<(Verb, &'static str), Handler>,
}

impl Registry {
    /// The registry with every handler this build implements.
    pub fn build() -> Registry {
        let mut r = Registry::default();
        access::register(&mut r);
        users::register(&mut r);
        tokens::register(&mut r);
        tfa::register(&mut r);
        roles::register(&mut r);
        acl::register(&mut r);
        domains::register(&mut r);
        guests::register(&mut r);
        lxc::register(&mut r);
        lxc_console::register(&mut r);
        lxc_snapshot::register(&mut r);
        lxc_status::register(&mut r);
        qemu::register(&mut r);
        qemu_status::register(&mut r);
        qemu_caps::register(&mut r);
        qemu_disk::register(&mut r);
        qemu_console::register(&mut r);
        qemu_agent::register(&mut r);
        qemu_cloudinit::register(&mut r);
        qemu_snapshot::register(&mut r);
        pools::register(&mut r);
        nodes::register(&mut r);
        tasks::register(&mut r);
        cluster::register(&mut r);
        storage::register(&mut r);
        node_storage::register(&mut r);
        prune::register(&mut r);
        content_copy::register(&mut r);
        transfer::register(&mut r);
        scan::register(&mut r);
        disks::register(&mut r);
        aplinfo::register(&mut r);
        console::register(&mut r);
        r
    }

    /// Registers a handler; panics at start-up if the method is not in the
    /// schema, so a typo cannot ship.
    pub fn add(&mut self, verb: Verb, path: &'static str, handler: Handler) {
        assert!(
            oxve_schema::api::ApiSchema::embedded()
                .method(verb, path)
                .is_some(),
            "handler for {} {path} has no schema method",
            verb.as_str()
        );
        self.map.insert((verb, path), handler);
    }

    pub fn get(&self, method: &Method) -> Option<Handler> {
        self.map
            .get(&(method.method, method.path.as_str()))
            .copied()
    }

    pub fn is_implemented(&self, method: &Method) -> bool {
        self.get(method).is_some()
    }
}

/// Registers async fns: `reg!(r, GET "/version" => version::get)`.
#[macro_export]
macro_rules! reg {
    ($r:expr, GET $path:literal => $f:path) => {
        $r.add(oxve_schema::api::Verb::Get, $path, |ctx| Box::pin($f(ctx)))
    };
    ($r:expr, POST $path:literal => $f:path) => {
        $r.add(oxve_schema::api::Verb::Post, $path, |ctx| Box::pin($f(ctx)))
    };
    ($r:expr, PUT $path:literal => $f:path) => {
        $r.add(oxve_schema::api::Verb::Put, $path, |ctx| Box::pin($f(ctx)))
    };
    ($r:expr, DELETE $path:literal => $f:path) => {
        $r.add(oxve_schema::api::Verb::Delete, $path, |ctx| {
            Box::pin($f(ctx))
        })
    };
}

impl Ctx {
    /// A required string parameter (the schema guarantees presence).
    pub fn str(&self, name: &str) -> ApiResult<&str> {
        self.opt_str(name)
            .ok_or_else(|| ApiError::param(name, "property is missing and it is not optional"))
    }

    pub fn opt_str(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Value::as_str)
    }

    pub fn opt_int(&self, name: &str) -> Option<i64> {
        self.params.get(name).and_then(Value::as_i64)
    }

    pub fn opt_bool(&self, name: &str) -> Option<bool> {
        match self.params.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::Number(n)) => Some(n.as_i64().unwrap_or(0) != 0),
            _ => None,
        }
    }

    pub fn flag(&self, name: &str) -> bool {
        self.opt_bool(name).unwrap_or(false)
    }

    /// The user id behind the caller (a token's owner for tokens).
    pub fn userid(&self) -> String {
        self.caller.userid()
    }

    /// Whether the caller holds `privs` (all of them, or any with `any`) on `path`.
    pub fn has_privs(&self, path: &str, privs: &[&str], any: bool) -> bool {
        crate::perm::has_privs(&self.node, &self.caller, path, privs, any).unwrap_or(false)
    }

    /// Fails with 403 unless the caller holds `privs` on `path`.
    pub fn require_privs(&self, path: &str, privs: &[&str], any: bool) -> ApiResult<()> {
        if self.has_privs(path, privs, any) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("{path}, {}", privs.join("|"))))
        }
    }
}

/// An index method (`GET /nodes/{node}`, `/access`, `/cluster`, ...): the
/// child paths the schema has below this one, keyed as the schema's `links`
/// say (`name` or `subdir`).
pub async fn schema_index(ctx: Ctx) -> ApiResult<Value> {
    let key = ctx.method.child_key().unwrap_or_else(|| "name".into());
    let prefix = format!("{}/", ctx.method.path.trim_end_matches('/'));
    let mut children: Vec<&str> = Vec::new();
    for m in oxve_schema::api::ApiSchema::embedded().methods() {
        if let Some(rest) = m.path.strip_prefix(&prefix) {
            let child = rest.split('/').next().unwrap_or("");
            if !child.is_empty() && !child.starts_with('{') && !children.contains(&child) {
                children.push(child);
            }
        }
    }
    children.sort_unstable();
    Ok(Value::Array(
        children
            .into_iter()
            .map(|c| {
                let mut m = Map::new();
                m.insert(key.clone(), Value::String(c.to_string()));
                Value::Object(m)
            })
            .collect(),
    ))
}
