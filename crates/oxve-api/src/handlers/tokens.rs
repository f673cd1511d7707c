//! `/access/users/{userid}/token`: API tokens. The secret is returned once,
//! at creation; only its hash is stored.

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::node::TOKEN_CFG;
use crate::reg;
use oxve_access::usercfg::Token;
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/access/users/{userid}/token" => list);
    reg!(r, GET "/access/users/{userid}/token/{tokenid}" => get);
    reg!(r, POST "/access/users/{userid}/token/{tokenid}" => create);
    reg!(r, PUT "/access/users/{userid}/token/{tokenid}" => update);
    reg!(r, DELETE "/access/users/{userid}/token/{tokenid}" => delete);
}

fn info(t: &Token) -> Value {
    let mut v = json!({"expire": t.expire, "privsep": u8::from(t.privsep)});
    if !t.comment.is_empty() {
        v["comment"] = json!(t.comment);
    }
    v
}

fn ids(ctx: &Ctx) -> ApiResult<(String, String)> {
    Ok((
        ctx.str("userid")?.to_string(),
        ctx.opt_str("tokenid").unwrap_or("").to_string(),
    ))
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let (userid, _) = ids(&ctx)?;
    let cfg = ctx.node.users()?;
    let u = cfg
        .users
        .get(&userid)
        .ok_or_else(|| ApiError::not_found(format!("user '{userid}' does not exist")))?;
    Ok(Value::Array(
        u.tokens
            .iter()
            .map(|(name, t)| {
                let mut v = info(t);
                v["tokenid"] = json!(name);
                v
            })
            .collect(),
    ))
}

async fn get(ctx: Ctx) -> ApiResult<Value> {
    let (userid, name) = ids(&ctx)?;
    let cfg = ctx.node.users()?;
    let t = cfg
        .users
        .get(&userid)
        .and_then(|u| u.tokens.get(&name))
        .ok_or_else(|| {
            ApiError::not_found(format!("no such token '{name}' for user '{userid}'"))
        })?;
    Ok(info(t))
}

async fn create(ctx: Ctx) -> ApiResult<Value> {
    let (userid, name) = ids(&ctx)?;
    oxve_access::userid::check_token_name(&name)
        .map_err(|e| ApiError::param("tokenid", e.to_string()))?;
    let token = Token {
        expire: ctx.opt_int("expire").unwrap_or(0),
        privsep: ctx.opt_bool("privsep").unwrap_or(true),
        comment: ctx.opt_str("comment").unwrap_or("").to_string(),
    };
    let full = format!("{userid}!{name}");
    let secret = oxve_access::token::generate_secret();
    let hash = oxve_access::token::hash_secret(&secret);
    // The secret goes in first: a token that is listed always works.
    ctx.node.update_text(TOKEN_CFG, |text| {
        let mut map = oxve_access::token::parse(text.unwrap_or(""));
        map.insert(full.clone(), hash.clone());
        Ok((Some(oxve_access::token::write(&map)), ()))
    })?;
    let created = ctx.node.update_users(|cfg| {
        let u = cfg
            .users
            .get_mut(&userid)
            .ok_or_else(|| ApiError::fail(format!("user '{userid}' does not exist")))?;
        if u.tokens.contains_key(&name) {
            return Err(ApiError::fail("Token already exists."));
        }
        u.tokens.insert(name.clone(), token.clone());
        Ok(())
    });
    if let Err(e) = created {
        if !e.message.contains("already exists") {
            let _ = remove_secret(&ctx, &full);
        }
        return Err(e);
    }
    Ok(json!({"full-tokenid": full, "info": info(&token), "value": secret}))
}

async fn update(ctx: Ctx) -> ApiResult<Value> {
    let (userid, name) = ids(&ctx)?;
    let deletes: Vec<String> = ctx
        .opt_str("delete")
        .map(|d| {
            d.split([',', ';', ' '])
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let t = ctx.node.update_users(|cfg| {
        let t = cfg
            .users
            .get_mut(&userid)
            .and_then(|u| u.tokens.get_mut(&name))
            .ok_or_else(|| ApiError::fail(format!("no such token '{name}' for user '{userid}'")))?;
        for d in &deletes {
            match d.as_str() {
                "comment" => t.comment.clear(),
                "expire" => t.expire = 0,
                other => {
                    return Err(ApiError::param(
                        "delete",
                        format!("cannot delete '{other}'"),
                    ))
                }
            }
        }
        if let Some(e) = ctx.opt_int("expire") {
            t.expire = e;
        }
        if let Some(p) = ctx.opt_bool("privsep") {
            t.privsep = p;
        }
        if let Some(c) = ctx.opt_str("comment") {
            t.comment = c.to_string();
        }
        Ok(t.clone())
    })?;
    Ok(info(&t))
}

fn remove_secret(ctx: &Ctx, full: &str) -> ApiResult<()> {
    ctx.node.update_text(TOKEN_CFG, |text| {
        let mut map = oxve_access::token::parse(text.unwrap_or(""));
        let had = map.remove(full).is_some();
        Ok((had.then(|| oxve_access::token::write(&map)), ()))
    })
}

async fn delete(ctx: Ctx) -> ApiResult<Value> {
    let (userid, name) = ids(&ctx)?;
    let full = format!("{userid}!{name}");
    ctx.node.update_users(|cfg| {
        let u = cfg
            .users
            .get_mut(&userid)
            .ok_or_else(|| ApiError::fail(format!("user '{userid}' does not exist")))?;
        if u.tokens.remove(&name).is_none() {
            return Err(ApiError::fail(format!(
                "no such token '{name}' for user '{userid}'"
            )));
        }
        cfg.remove_acl_member(&full);
        Ok(())
    })?;
    remove_secret(&ctx, &full)?;
    Ok(Value::Null)
}
