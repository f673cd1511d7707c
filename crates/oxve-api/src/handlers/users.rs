//! `/access/users` and `/access/groups`.

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::node::{DOMAINS_CFG, SHADOW_CFG, TFA_CFG, TOKEN_CFG};
use crate::reg;
use oxve_access::domains::Domains;
use oxve_access::usercfg::{Group, User, UserConfig};
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/access/users" => list);
    reg!(r, POST "/access/users" => create);
    reg!(r, GET "/access/users/{userid}" => get);
    reg!(r, PUT "/access/users/{userid}" => update);
    reg!(r, DELETE "/access/users/{userid}" => delete);
    reg!(r, GET "/access/users/{userid}/tfa" => tfa_types);
    reg!(r, PUT "/access/users/{userid}/unlock-tfa" => unlock_tfa);
    reg!(r, GET "/access/groups" => list_groups);
    reg!(r, POST "/access/groups" => create_group);
    reg!(r, GET "/access/groups/{groupid}" => get_group);
    reg!(r, PUT "/access/groups/{groupid}" => update_group);
    reg!(r, DELETE "/access/groups/{groupid}" => delete_group);
}

fn list_param(ctx: &Ctx, name: &str) -> Option<Vec<String>> {
    ctx.opt_str(name).map(|s| {
        s.split([',', ';', ' '])
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    })
}

/// Whether the caller may see/administer `userid`: User.Modify or Sys.Audit
/// on /access/groups or on one of the user's groups, or it is themselves.
fn may_see(ctx: &Ctx, cfg: &UserConfig, userid: &str) -> bool {
    if ctx.userid() == userid
        || ctx.has_privs("/access/groups", &["User.Modify", "Sys.Audit"], true)
    {
        return true;
    }
    cfg.groups_of(userid).iter().any(|g| {
        ctx.has_privs(
            &format!("/access/groups/{g}"),
            &["User.Modify", "Sys.Audit"],
            true,
        )
    })
}

fn user_json(
    cfg: &UserConfig,
    userid: &str,
    u: &User,
    realm_type: Option<&str>,
    full: bool,
) -> Value {
    let mut v = json!({
        "userid": userid,
        "enable": u8::from(u.enable),
        "expire": u.expire,
        "groups": cfg.groups_of(userid).join(","),
    });
    for (k, val) in [
        ("firstname", &u.firstname),
        ("lastname", &u.lastname),
        ("email", &u.email),
        ("comment", &u.comment),
        ("keys", &u.keys),
    ] {
        if !val.is_empty() {
            v[k] = json!(val);
        }
    }
    if let Some(t) = realm_type {
        v["realm-type"] = json!(t);
    }
    if full {
        v["tokens"] = json!(u
            .tokens
            .iter()
            .map(|(name, t)| json!({"tokenid": name, "expire": t.expire, "privsep": u8::from(t.privsep), "comment": t.comment}))
            .collect::<Vec<_>>());
    }
    v
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let cfg = ctx.node.users()?;
    let domains = Domains::parse(&ctx.node.read_text(DOMAINS_CFG)?);
    let enabled_only = ctx.opt_bool("enabled");
    let full = ctx.flag("full");
    let mut out = Vec::new();
    for (id, u) in &cfg.users {
        if enabled_only == Some(true) && !u.enable || enabled_only == Some(false) && u.enable {
            continue;
        }
        if !may_see(&ctx, &cfg, id) {
            continue;
        }
        let realm = id.rsplit_once('@').map(|(_, r)| r).unwrap_or("");
        out.push(user_json(&cfg, id, u, domains.realm_type(realm), full));
    }
    Ok(Value::Array(out))
}

fn fill_user(ctx: &Ctx, u: &mut User) {
    if let Some(b) = ctx.opt_bool("enable") {
        u.enable = b;
    }
    if let Some(e) = ctx.opt_int("expire") {
        u.expire = e;
    }
    for (k, field) in [
        ("firstname", &mut u.firstname),
        ("lastname", &mut u.lastname),
        ("email", &mut u.email),
        ("comment", &mut u.comment),
        ("keys", &mut u.keys),
    ] {
        if let Some(v) = ctx.opt_str(k) {
            *field = v.to_string();
        }
    }
}

async fn create(ctx: Ctx) -> ApiResult<Value> {
    let userid = ctx.str("userid")?.to_string();
    let realm = userid
        .rsplit_once('@')
        .map(|(_, r)| r.to_string())
        .unwrap_or_default();
    let domains = Domains::parse(&ctx.node.read_text(DOMAINS_CFG)?);
    if domains.realm(&realm).is_none() {
        return Err(ApiError::param(
            "userid",
            format!("no such realm '{realm}'"),
        ));
    }
    let password = ctx.opt_str("password").map(String::from);
    if password.is_some() && domains.realm_type(&realm) != Some("pve") {
        return Err(ApiError::param(
            "password",
            format!("passwords can only be set for the 'pve' realm here ('{realm}' users authenticate on their own realm)"),
        ));
    }
    let groups = list_param(&ctx, "groups").unwrap_or_default();
    ctx.node.update_users(|cfg| {
        if cfg.users.contains_key(&userid) {
            return Err(ApiError::fail(format!(
                "create user failed: user '{userid}' already exists"
            )));
        }
        let mut u = User {
            enable: true,
            ..Default::default()
        };
        fill_user(&ctx, &mut u);
        cfg.users.insert(userid.clone(), u);
        cfg.set_user_groups(&userid, &groups, true)
            .map_err(|e| ApiError::param("groups", e.to_string()))?;
        Ok(())
    })?;
    if let Some(pw) = password {
        if let Err(e) = super::access::set_password(&ctx.node, &userid, &pw) {
            // Roll back: a user without the password asked for is not what was requested.
            let _ = ctx
                .node
                .update_users(|cfg| cfg.delete_user(&userid).map_err(ApiError::from));
            return Err(e);
        }
    }
    Ok(Value::Null)
}

async fn get(ctx: Ctx) -> ApiResult<Value> {
    let userid = ctx.str("userid")?;
    let cfg = ctx.node.users()?;
    let u = cfg
        .users
        .get(userid)
        .ok_or_else(|| ApiError::not_found(format!("user '{userid}' does not exist")))?;
    let mut v = user_json(&cfg, userid, u, None, false);
    v.as_object_mut().map(|m| m.remove("userid"));
    v["groups"] = json!(cfg.groups_of(userid));
    let tokens: serde_json::Map<String, Value> = u
        .tokens
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                json!({"expire": t.expire, "privsep": u8::from(t.privsep), "comment": t.comment}),
            )
        })
        .collect();
    v["tokens"] = Value::Object(tokens);
    Ok(v)
}

async fn update(ctx: Ctx) -> ApiResult<Value> {
    let userid = ctx.str("userid")?.to_string();
    let groups = list_param(&ctx, "groups");
    let append = ctx.flag("append");
    if append && groups.is_none() {
        return Err(ApiError::param(
            "append",
            "parameter 'append' requires 'groups'",
        ));
    }
    ctx.node.update_users(|cfg| {
        let u = cfg.users.get_mut(&userid).ok_or_else(|| {
            ApiError::fail(format!(
                "update user failed: user '{userid}' does not exist"
            ))
        })?;
        fill_user(&ctx, u);
        if let Some(g) = &groups {
            cfg.set_user_groups(&userid, g, append)
                .map_err(|e| ApiError::param("groups", e.to_string()))?;
        }
        Ok(())
    })?;
    Ok(Value::Null)
}

async fn delete(ctx: Ctx) -> ApiResult<Value> {
    let userid = ctx.str("userid")?.to_string();
    if userid == "root@pam" {
        return Err(ApiError::bad_request("the root@pam user cannot be deleted"));
    }
    let tokens: Vec<String> = ctx
        .node
        .users()?
        .users
        .get(&userid)
        .map(|u| u.tokens.keys().map(|t| format!("{userid}!{t}")).collect())
        .unwrap_or_default();
    ctx.node.update_users(|cfg| {
        cfg.delete_user(&userid)
            .map_err(|e| ApiError::fail(format!("delete user failed: {e}")))
    })?;
    ctx.node.update_text(SHADOW_CFG, |text| {
        let mut map = oxve_access::password::parse_shadow(text.unwrap_or(""));
        let changed = map.remove(&userid).is_some();
        Ok((
            changed.then(|| oxve_access::password::write_shadow(&map)),
            (),
        ))
    })?;
    ctx.node.update_text(TOKEN_CFG, |text| {
        let mut map = oxve_access::token::parse(text.unwrap_or(""));
        let before = map.len();
        map.retain(|k, _| !tokens.contains(k));
        Ok((
            (map.len() != before).then(|| oxve_access::token::write(&map)),
            (),
        ))
    })?;
    ctx.node.update_text(TFA_CFG, |text| {
        let mut tfa = oxve_access::tfa::TfaConfig::parse(text.unwrap_or(""))?;
        let had = tfa.users.contains_key(&userid);
        tfa.remove_user(&userid);
        Ok((had.then(|| tfa.write()), ()))
    })?;
    Ok(Value::Null)
}

async fn tfa_types(ctx: Ctx) -> ApiResult<Value> {
    let userid = ctx.str("userid")?;
    let tfa = oxve_access::tfa::TfaConfig::parse(&ctx.node.read_text(TFA_CFG)?)?;
    let mut types: Vec<&str> = tfa
        .entries(userid)
        .iter()
        .filter(|e| e.enable)
        .map(|e| e.kind.as_str())
        .collect();
    types.sort_unstable();
    types.dedup();
    if ctx.flag("multiple") {
        Ok(json!({ "types": types }))
    } else {
        let mut v = json!({});
        if types.contains(&"totp") {
            v["user"] = json!("oath");
        }
        Ok(v)
    }
}

/// This build does not lock TFA after failed attempts (it delays instead),
/// so there is never anything to unlock.
async fn unlock_tfa(ctx: Ctx) -> ApiResult<Value> {
    let userid = ctx.str("userid")?;
    if !ctx.node.users()?.users.contains_key(userid) {
        return Err(ApiError::param(
            "userid",
            format!("user '{userid}' does not exist"),
        ));
    }
    Ok(json!(false))
}

async fn list_groups(ctx: Ctx) -> ApiResult<Value> {
    let cfg = ctx.node.users()?;
    let all = ctx.has_privs("/access/groups", &["Sys.Audit", "Group.Allocate"], true);
    Ok(Value::Array(
        cfg.groups
            .iter()
            .filter(|(g, _)| all || ctx.has_privs(&format!("/access/groups/{g}"), &["Sys.Audit", "Group.Allocate"], true))
            .map(|(g, grp)| {
                let mut v = json!({"groupid": g, "users": grp.members.iter().cloned().collect::<Vec<_>>().join(",")});
                if !grp.comment.is_empty() {
                    v["comment"] = json!(grp.comment);
                }
                v
            })
            .collect(),
    ))
}

async fn create_group(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("groupid")?.to_string();
    let comment = ctx.opt_str("comment").unwrap_or("").to_string();
    ctx.node.update_users(|cfg| {
        if cfg.groups.contains_key(&id) {
            return Err(ApiError::fail(format!(
                "create group failed: group '{id}' already exists"
            )));
        }
        cfg.groups.insert(
            id.clone(),
            Group {
                comment: comment.clone(),
                ..Default::default()
            },
        );
        Ok(())
    })?;
    Ok(Value::Null)
}

async fn get_group(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("groupid")?;
    let cfg = ctx.node.users()?;
    let g = cfg
        .groups
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("group '{id}' does not exist")))?;
    let mut v = json!({"members": g.members.iter().collect::<Vec<_>>()});
    if !g.comment.is_empty() {
        v["comment"] = json!(g.comment);
    }
    Ok(v)
}

async fn update_group(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("groupid")?.to_string();
    ctx.node.update_users(|cfg| {
        let g = cfg.groups.get_mut(&id).ok_or_else(|| {
            ApiError::fail(format!("update group failed: group '{id}' does not exist"))
        })?;
        if let Some(c) = ctx.opt_str("comment") {
            g.comment = c.to_string();
        }
        Ok(())
    })?;
    Ok(Value::Null)
}

async fn delete_group(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("groupid")?.to_string();
    ctx.node.update_users(|cfg| {
        if cfg.groups.remove(&id).is_none() {
            return Err(ApiError::fail(format!(
                "delete group failed: group '{id}' does not exist"
            )));
        }
        cfg.remove_acl_member(&format!("@{id}"));
        Ok(())
    })?;
    Ok(Value::Null)
}
