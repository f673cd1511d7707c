//! `/access/tfa`: TOTP second factors. WebAuthn, Yubico and recovery keys
//! come with a later access issue; asking for them is a clear 400.

use super::{Ctx, Registry};
use crate::auth::now;
use crate::error::{ApiError, ApiResult};
use crate::node::TFA_CFG;
use crate::reg;
use oxve_access::tfa::{TfaConfig, TfaEntry};
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/access/tfa" => list_all);
    reg!(r, GET "/access/tfa/{userid}" => list);
    reg!(r, POST "/access/tfa/{userid}" => add);
    reg!(r, GET "/access/tfa/{userid}/{id}" => get);
    reg!(r, PUT "/access/tfa/{userid}/{id}" => update);
    reg!(r, DELETE "/access/tfa/{userid}/{id}" => delete);
}

/// An entry as the API shows it (never the secret).
fn entry(e: &TfaEntry) -> Value {
    json!({"id": e.id, "type": e.kind, "description": e.description, "created": e.created, "enable": u8::from(e.enable)})
}

fn load(ctx: &Ctx) -> ApiResult<TfaConfig> {
    Ok(TfaConfig::parse(&ctx.node.read_text(TFA_CFG)?)?)
}

async fn list_all(ctx: Ctx) -> ApiResult<Value> {
    let tfa = load(&ctx)?;
    let sees_all = ctx.has_privs("/access/groups", &["User.Modify", "Sys.Audit"], true);
    let me = ctx.userid();
    Ok(Value::Array(
        tfa.users
            .iter()
            .filter(|(u, _)| sees_all || **u == me)
            .map(|(u, list)| json!({"userid": u, "entries": list.iter().map(entry).collect::<Vec<_>>()}))
            .collect(),
    ))
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let userid = ctx.str("userid")?;
    let tfa = load(&ctx)?;
    Ok(json!(tfa
        .entries(userid)
        .iter()
        .map(entry)
        .collect::<Vec<_>>()))
}

async fn add(ctx: Ctx) -> ApiResult<Value> {
    let userid = ctx.str("userid")?.to_string();
    if !ctx.node.users()?.users.contains_key(&userid) {
        return Err(ApiError::param(
            "userid",
            format!("user '{userid}' does not exist"),
        ));
    }
    let kind = ctx.str("type")?;
    if kind != "totp" {
        return Err(ApiError::param(
            "type",
            format!("TFA type '{kind}' is not supported by this build yet (totp is)"),
        ));
    }
    let uri = ctx
        .opt_str("totp")
        .ok_or_else(|| ApiError::param("totp", "a TOTP URI (otpauth://totp/...) is required"))?
        .to_string();
    let code = ctx
        .opt_str("value")
        .ok_or_else(|| ApiError::param("value", "the current TOTP code is required"))?
        .to_string();
    let description = ctx.opt_str("description").unwrap_or("").to_string();
    let id = ctx.node.update_text(TFA_CFG, |text| {
        let mut tfa = TfaConfig::parse(text.unwrap_or(""))?;
        let id = tfa
            .add_totp(&userid, &uri, &code, &description, now())
            .map_err(|e| ApiError::param("value", e.to_string()))?;
        Ok((Some(tfa.write()), id))
    })?;
    Ok(json!({"id": id}))
}

async fn get(ctx: Ctx) -> ApiResult<Value> {
    let (userid, id) = (ctx.str("userid")?, ctx.str("id")?);
    let tfa = load(&ctx)?;
    tfa.entries(userid)
        .iter()
        .find(|e| e.id == id)
        .map(entry)
        .ok_or_else(|| ApiError::not_found(format!("no such tfa entry '{id}'")))
}

async fn update(ctx: Ctx) -> ApiResult<Value> {
    let (userid, id) = (ctx.str("userid")?.to_string(), ctx.str("id")?.to_string());
    ctx.node.update_text(TFA_CFG, |text| {
        let mut tfa = TfaConfig::parse(text.unwrap_or(""))?;
        let e = tfa
            .entry_mut(&userid, &id)
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        if let Some(d) = ctx.opt_str("description") {
            e.description = d.to_string();
        }
        if let Some(en) = ctx.opt_bool("enable") {
            e.enable = en;
        }
        Ok((Some(tfa.write()), ()))
    })?;
    Ok(Value::Null)
}

async fn delete(ctx: Ctx) -> ApiResult<Value> {
    let (userid, id) = (ctx.str("userid")?.to_string(), ctx.str("id")?.to_string());
    ctx.node.update_text(TFA_CFG, |text| {
        let mut tfa = TfaConfig::parse(text.unwrap_or(""))?;
        tfa.delete(&userid, &id)
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        Ok((Some(tfa.write()), ()))
    })?;
    Ok(Value::Null)
}
