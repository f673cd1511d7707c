//! `/access`: login tickets, the permission listing and password changes.

use super::{Ctx, Registry};
use crate::auth::{now, Caller};
use crate::error::{ApiError, ApiResult};
use crate::node::{Node, DOMAINS_CFG, SHADOW_CFG, TFA_CFG};
use crate::reg;
use oxve_access::domains::Domains;
use oxve_access::tfa::TfaConfig;
use oxve_access::userid::Authid;
use oxve_access::{password, AccessError};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// How long a failed login waits before it answers (slows guessing).
const FAILED_LOGIN_DELAY: Duration = Duration::from_secs(2);

pub fn register(r: &mut Registry) {
    reg!(r, GET "/access" => super::schema_index);
    reg!(r, GET "/access/ticket" => get_ticket);
    reg!(r, POST "/access/ticket" => create_ticket);
    reg!(r, GET "/access/permissions" => permissions);
    reg!(r, PUT "/access/password" => change_password);
}

async fn get_ticket(_ctx: Ctx) -> ApiResult<Value> {
    Ok(Value::Null)
}

/// Checks a user's password against its realm. Blocking work (PAM, hash
/// verification) runs off the async threads.
pub async fn check_password(node: &Node, userid: &str, password: &str) -> Result<(), AccessError> {
    let (name, realm) = userid.rsplit_once('@').ok_or(AccessError::AuthFailed)?;
    let domains = Domains::parse(
        &node
            .read_text(DOMAINS_CFG)
            .map_err(|_| AccessError::AuthFailed)?,
    );
    let ty = domains
        .realm_type(realm)
        .ok_or_else(|| AccessError::NoSuchRealm(realm.to_string()))?
        .to_string();
    let (name, password) = (name.to_string(), password.to_string());
    match ty.as_str() {
        "pam" => tokio::task::spawn_blocking(move || {
            oxve_access::pam::authenticate(oxve_access::pam::service(), &name, &password)
        })
        .await
        .map_err(|_| AccessError::AuthFailed)?,
        "pve" => {
            let shadow = password::parse_shadow(
                &node
                    .read_text(SHADOW_CFG)
                    .map_err(|_| AccessError::AuthFailed)?,
            );
            let hash = shadow.get(userid).cloned().ok_or(AccessError::AuthFailed)?;
            let ok =
                tokio::task::spawn_blocking(move || password::verify_password(&password, &hash))
                    .await
                    .unwrap_or(false);
            if ok {
                Ok(())
            } else {
                Err(AccessError::AuthFailed)
            }
        }
        other => Err(AccessError::Invalid(format!(
            "realm type '{other}' is not supported by this build"
        ))),
    }
}

async fn create_ticket(ctx: Ctx) -> ApiResult<Value> {
    let mut username = ctx.str("username")?.to_string();
    if !username.contains('@') {
        if let Some(realm) = ctx.opt_str("realm") {
            username = format!("{username}@{realm}");
        }
    }
    let password = ctx.str("password")?.to_string();
    match login(&ctx, &username, &password).await {
        Ok(answer) => Ok(answer),
        Err(e) => {
            // Never log the password; name the user and the reason.
            tracing::warn!("authentication failure; user={username} msg={e}");
            tokio::time::sleep(FAILED_LOGIN_DELAY).await;
            Err(ApiError::unauthorized("authentication failure"))
        }
    }
}

async fn login(ctx: &Ctx, userid: &str, password: &str) -> Result<Value, AccessError> {
    let node = &ctx.node;
    let now = now();
    oxve_access::userid::check_userid(userid)?;
    let users = node.users().map_err(|_| AccessError::AuthFailed)?;
    if !users.user_enabled(userid, now) {
        return Err(AccessError::Invalid(format!(
            "user '{userid}' is disabled, expired or unknown"
        )));
    }
    let tfa = TfaConfig::parse(
        &node
            .read_text(TFA_CFG)
            .map_err(|_| AccessError::AuthFailed)?,
    )?;
    // Second step of a TFA login: the challenge ticket plus a code.
    if let Some(challenge) = ctx.opt_str("tfa-challenge") {
        let who = node.keys.verify_tfa_ticket(challenge, now)?;
        if who != userid {
            return Err(AccessError::AuthFailed);
        }
        let code = password.split_once(':').map(|(_, c)| c).unwrap_or(password);
        if !tfa.verify(userid, code, now) {
            return Err(AccessError::Invalid("invalid second factor".into()));
        }
        return Ok(full_ticket(node, userid, now));
    }
    // A valid ticket as password renews it (or verifies path/privs).
    if password.starts_with("PVE:") {
        let who = node.keys.verify_ticket(password, now)?;
        if who != userid {
            return Err(AccessError::AuthFailed);
        }
        if let (Some(path), Some(privs)) = (ctx.opt_str("path"), ctx.opt_str("privs")) {
            let authid = Authid::parse(userid)?;
            let held = oxve_access::acl::privileges(&users, &authid, path, now);
            if !privs
                .split([',', ';', ' '])
                .filter(|p| !p.is_empty())
                .all(|p| held.contains(p) || userid == "root@pam")
            {
                return Err(AccessError::Invalid(format!("no permission on '{path}'")));
            }
            return Ok(json!({ "username": userid }));
        }
        return Ok(full_ticket(node, userid, now));
    }
    check_password(node, userid, password).await?;
    if tfa.needs_tfa(userid) {
        if let Some(code) = ctx.opt_str("otp") {
            if tfa.verify(userid, code, now) {
                return Ok(full_ticket(node, userid, now));
            }
            return Err(AccessError::Invalid("invalid second factor".into()));
        }
        return Ok(json!({
            "username": userid,
            "ticket": node.keys.create_tfa_ticket(userid, now),
            "CSRFPreventionToken": node.keys.create_csrf_token(userid, now),
            "NeedTFA": 1,
        }));
    }
    Ok(full_ticket(node, userid, now))
}

fn full_ticket(node: &Node, userid: &str, now: i64) -> Value {
    json!({
        "username": userid,
        "ticket": node.keys.create_ticket(userid, now),
        "CSRFPreventionToken": node.keys.create_csrf_token(userid, now),
        "cap": capabilities(node, userid),
    })
}

/// Upstream's `cap` object: the privileges held on the main object trees,
/// used by the web UI to hide what a user cannot do.
fn capabilities(node: &Node, userid: &str) -> Value {
    let Ok(users) = node.users() else {
        return json!({});
    };
    let Ok(authid) = Authid::parse(userid) else {
        return json!({});
    };
    let now = now();
    let tree = |path: &str, prefixes: &[&str]| -> Value {
        let held = oxve_access::acl::permissions(&users, &authid, path, now);
        let m: Map<String, Value> = held
            .into_iter()
            .filter(|(p, _)| prefixes.iter().any(|x| p.starts_with(x)))
            .map(|(p, prop)| (p, json!(u8::from(prop))))
            .collect();
        Value::Object(m)
    };
    json!({
        "vms": tree("/vms", &["VM.", "Permissions.Modify"]),
        "storage": tree("/storage", &["Datastore.", "Permissions.Modify"]),
        "access": tree("/access", &["User.", "Group.", "Permissions.Modify"]),
        "dc": tree("/", &["Sys.Audit", "Sys.Modify", "SDN.", "Mapping."]),
        "nodes": tree("/nodes", &["Sys.", "Permissions.Modify"]),
        "sdn": tree("/sdn", &["SDN.", "Permissions.Modify"]),
        "mapping": tree("/mapping", &["Mapping.", "Permissions.Modify"]),
    })
}

async fn permissions(ctx: Ctx) -> ApiResult<Value> {
    let caller = ctx.caller.authid();
    let target = ctx.opt_str("userid").unwrap_or(&caller).to_string();
    if target != caller {
        // Own tokens are fine for a user; everything else needs Sys.Audit on /access.
        let own_token = matches!(ctx.caller, Caller::Ticket(_) | Caller::Local(_))
            && target.split_once('!').is_some_and(|(u, _)| u == caller);
        if !own_token {
            ctx.require_privs("/access", &["Sys.Audit"], false)?;
        }
    }
    let authid = Authid::parse(&target).map_err(|e| ApiError::param("userid", e.to_string()))?;
    let users = ctx.node.users()?;
    let now = now();
    let tree = match ctx.opt_str("path") {
        Some(path) => {
            let path = oxve_access::usercfg::normalize_path(path);
            let perms = oxve_access::acl::permissions(&users, &authid, &path, now);
            std::collections::BTreeMap::from([(path, perms)])
        }
        None => oxve_access::acl::permission_tree(&users, &authid, now),
    };
    let out: Map<String, Value> = tree
        .into_iter()
        .map(|(path, perms)| {
            let m: Map<String, Value> = perms
                .into_iter()
                .map(|(p, prop)| (p, json!(u8::from(prop))))
                .collect();
            (path, Value::Object(m))
        })
        .collect();
    Ok(Value::Object(out))
}

async fn change_password(ctx: Ctx) -> ApiResult<Value> {
    let userid = ctx.str("userid")?.to_string();
    let new = ctx.str("password")?.to_string();
    let caller = ctx.userid();
    if !ctx.node.users()?.users.contains_key(&userid) {
        return Err(ApiError::param(
            "userid",
            format!("user '{userid}' does not exist"),
        ));
    }
    // Changing one's own password needs the current one (a stolen ticket
    // must not be enough), as upstream.
    if caller == userid && !ctx.caller.is_root() {
        let current = ctx.opt_str("confirmation-password").ok_or_else(|| {
            ApiError::param("confirmation-password", "the current password is required")
        })?;
        if check_password(&ctx.node, &userid, current).await.is_err() {
            tokio::time::sleep(FAILED_LOGIN_DELAY).await;
            return Err(ApiError::unauthorized("authentication failure"));
        }
    }
    set_password(&ctx.node, &userid, &new)?;
    Ok(Value::Null)
}

/// Stores a new password for a `pve` realm user.
pub fn set_password(node: &Node, userid: &str, new: &str) -> ApiResult<()> {
    let realm = userid.rsplit_once('@').map(|(_, r)| r).unwrap_or("");
    let domains = Domains::parse(&node.read_text(DOMAINS_CFG)?);
    match domains.realm_type(realm) {
        Some("pve") => {}
        Some("pam") => {
            return Err(ApiError::bad_request(format!(
                "cannot set the password of '{userid}': pam users change their password on the host (passwd)"
            )))
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!("realm type '{other}' has no passwords stored here")))
        }
        None => return Err(ApiError::param("userid", format!("no such realm '{realm}'"))),
    }
    let hash = password::hash_password(new);
    node.update_text(SHADOW_CFG, |text| {
        let mut map = password::parse_shadow(text.unwrap_or(""));
        map.insert(userid.to_string(), hash.clone());
        Ok((Some(password::write_shadow(&map)), ()))
    })
}
