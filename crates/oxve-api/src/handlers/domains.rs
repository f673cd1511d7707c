//! `/access/domains`: the realms. `pam` and `pve` are built in; adding
//! LDAP, AD and OpenID realms comes with a later access issue (501 here).

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::node::DOMAINS_CFG;
use crate::reg;
use oxve_access::domains::Domains;
use serde_json::{json, Map, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/access/domains" => list);
    reg!(r, GET "/access/domains/{realm}" => get);
    reg!(r, PUT "/access/domains/{realm}" => update);
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let d = Domains::parse(&ctx.node.read_text(DOMAINS_CFG)?);
    Ok(Value::Array(
        d.realms()
            .map(|s| {
                let mut v = json!({"realm": s.id, "type": s.ty});
                for key in ["comment", "tfa"] {
                    if let Some(val) = s.get(key) {
                        v[key] = json!(val);
                    }
                }
                if s.get("default").is_some_and(|d| d == "1") {
                    v["default"] = json!(1);
                }
                v
            })
            .collect(),
    ))
}

async fn get(ctx: Ctx) -> ApiResult<Value> {
    let text = ctx.node.read_text(DOMAINS_CFG)?;
    let d = Domains::parse(&text);
    let realm = ctx.str("realm")?;
    let s = d
        .realm(realm)
        .ok_or_else(|| ApiError::not_found(format!("domain '{realm}' does not exist")))?;
    let mut m = Map::new();
    m.insert("type".into(), json!(s.ty));
    for (k, v) in &s.props {
        // Bind passwords and client keys live in priv/, never here.
        if k != "password" && k != "client-key" {
            m.insert(k.clone(), json!(v));
        }
    }
    m.insert("digest".into(), json!(oxve_config::digest(&text)));
    Ok(Value::Object(m))
}

async fn update(ctx: Ctx) -> ApiResult<Value> {
    let realm = ctx.str("realm")?.to_string();
    let allowed = ["comment", "default", "tfa"];
    for key in ctx.params.keys() {
        if !matches!(key.as_str(), "realm" | "digest" | "delete")
            && !allowed.contains(&key.as_str())
        {
            return Err(ApiError::param(
                key,
                format!("option '{key}' is not supported for this realm type by this build"),
            ));
        }
    }
    let deletes: Vec<String> = ctx
        .opt_str("delete")
        .map(|s| {
            s.split([',', ';', ' '])
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let digest = ctx.opt_str("digest").map(String::from);
    ctx.node.update_text(DOMAINS_CFG, |text| {
        let text = text.unwrap_or("");
        if let Some(d) = &digest {
            if *d != oxve_config::digest(text) {
                return Err(ApiError::fail(
                    "detected modified configuration - file changed by other user? Try again.",
                ));
            }
        }
        let mut d = Domains::parse(text);
        if d.realm(&realm).is_none() {
            return Err(ApiError::fail(format!("domain '{realm}' does not exist")));
        }
        let make_default = ctx.opt_bool("default") == Some(true);
        if make_default {
            for s in d.config.sections.iter_mut() {
                s.remove("default");
            }
        }
        let s = d
            .config
            .sections
            .iter_mut()
            .find(|s| s.id == realm)
            .ok_or_else(|| ApiError::fail(format!("domain '{realm}' does not exist")))?;
        for k in &deletes {
            s.remove(k);
        }
        if let Some(c) = ctx.opt_str("comment") {
            s.set("comment", c);
        }
        if let Some(t) = ctx.opt_str("tfa") {
            s.set("tfa", t);
        }
        match ctx.opt_bool("default") {
            Some(true) => s.set("default", "1"),
            Some(false) => {
                s.remove("default");
            }
            None => {}
        }
        Ok((Some(d.write()?), ()))
    })?;
    Ok(Value::Null)
}
