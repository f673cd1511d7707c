//! Permission evaluation, as upstream: roles per path with propagation,
//! user-over-group precedence, `NoAccess`, pools and privilege-separated
//! tokens.

use crate::usercfg::{normalize_path, UserConfig};
use crate::userid::Authid;
use std::collections::{BTreeMap, BTreeSet};

/// The roles effective for `authid` on `path` (role → propagate). Pools are
/// not considered here, as upstream's `roles`.
pub fn roles(cfg: &UserConfig, authid: &Authid, path: &str) -> BTreeMap<String, bool> {
    if authid.user() == "root@pam" && !authid.is_token() {
        return BTreeMap::from([("Administrator".to_string(), true)]);
    }
    if let Some(token) = authid.token() {
        let info = cfg
            .users
            .get(authid.user())
            .and_then(|u| u.tokens.get(token));
        match info {
            None => return BTreeMap::new(),
            Some(t) if !t.privsep => {
                let user = Authid::parse(authid.user()).ok();
                return user.map(|u| roles(cfg, &u, path)).unwrap_or_default();
            }
            Some(_) => {}
        }
    }
    let member = authid.to_string();
    let path = normalize_path(path);
    let mut prefixes = vec!["/".to_string()];
    let mut acc = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        acc.push('/');
        acc.push_str(part);
        prefixes.push(acc.clone());
    }
    let mut current: BTreeMap<String, bool> = BTreeMap::new();
    let last = prefixes.len() - 1;
    for (i, p) in prefixes.iter().enumerate() {
        let fin = i == last;
        let Some(entries) = cfg.acl.get(p) else {
            continue;
        };
        let own = if authid.is_token() {
            entries.tokens.get(&member)
        } else {
            entries.users.get(&member)
        };
        if let Some(ri) = own {
            let new: BTreeMap<String, bool> = ri
                .iter()
                .filter(|(_, prop)| fin || **prop)
                .map(|(r, p)| (r.clone(), *p))
                .collect();
            if !new.is_empty() {
                current = new;
                continue;
            }
        }
        if authid.is_token() {
            continue;
        }
        let mut new = BTreeMap::new();
        for (g, ri) in &entries.groups {
            if !cfg
                .groups
                .get(g)
                .is_some_and(|g| g.members.contains(&member))
            {
                continue;
            }
            for (r, prop) in ri {
                if fin || *prop {
                    new.insert(r.clone(), *prop);
                }
            }
        }
        if !new.is_empty() {
            current = new;
        }
    }
    if let Some(p) = current.get("NoAccess") {
        return BTreeMap::from([("NoAccess".to_string(), *p)]);
    }
    current
}

/// The privileges `authid` holds on `path` (privilege → propagate).
pub fn permissions(
    cfg: &UserConfig,
    authid: &Authid,
    path: &str,
    now: i64,
) -> BTreeMap<String, bool> {
    if authid.user() == "root@pam" && !authid.is_token() {
        return crate::roles::PRIVILEGES
            .iter()
            .map(|p| (p.to_string(), true))
            .collect();
    }
    if let Some(token) = authid.token() {
        if !cfg.token_valid(&authid.to_string(), now) {
            return BTreeMap::new();
        }
        let Ok(user) = Authid::parse(authid.user()) else {
            return BTreeMap::new();
        };
        let user_perms = permissions(cfg, &user, path, now);
        let privsep = cfg
            .users
            .get(authid.user())
            .and_then(|u| u.tokens.get(token))
            .is_some_and(|t| t.privsep);
        if !privsep {
            return user_perms;
        }
        let mut own = compute(cfg, authid, path);
        own.retain(|p, _| user_perms.contains_key(p));
        return own;
    }
    if !cfg.user_enabled(authid.user(), now) {
        return BTreeMap::new();
    }
    compute(cfg, authid, path)
}

/// The privilege names only.
pub fn privileges(cfg: &UserConfig, authid: &Authid, path: &str, now: i64) -> BTreeSet<String> {
    permissions(cfg, authid, path, now).into_keys().collect()
}

/// Privileges from the roles on the path, plus those reaching a guest or a
/// storage through its pool; `NoAccess` on either empties them.
fn compute(cfg: &UserConfig, authid: &Authid, path: &str) -> BTreeMap<String, bool> {
    let path = normalize_path(path);
    let mut role_sets = vec![roles(cfg, authid, &path)];
    if let Some(vmid) = path.strip_prefix("/vms/") {
        if let Some(pool) = cfg.pool_of_vm(vmid) {
            role_sets.push(roles(cfg, authid, &format!("/pool/{pool}")));
        }
    } else if let Some(storage) = path.strip_prefix("/storage/") {
        for pool in cfg.pools_of_storage(storage) {
            role_sets.push(roles(cfg, authid, &format!("/pool/{pool}")));
        }
    }
    if role_sets.iter().any(|r| r.contains_key("NoAccess")) {
        return BTreeMap::new();
    }
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    for set in role_sets {
        for (role, prop) in set {
            for privilege in cfg.role_privileges(&role).unwrap_or_default() {
                let e = out.entry(privilege).or_insert(false);
                *e = *e || prop;
            }
        }
    }
    out
}

/// Every path where `authid` holds privileges, with those privileges: the
/// data of `GET /access/permissions` (paths without any are left out, as
/// upstream does).
pub fn permission_tree(
    cfg: &UserConfig,
    authid: &Authid,
    now: i64,
) -> BTreeMap<String, BTreeMap<String, bool>> {
    let mut paths: BTreeSet<String> = cfg.acl.keys().cloned().collect();
    paths.insert("/".into());
    for (pool, p) in &cfg.pools {
        paths.insert(format!("/pool/{pool}"));
        for vm in &p.vms {
            paths.insert(format!("/vms/{vm}"));
        }
        for st in &p.storage {
            paths.insert(format!("/storage/{st}"));
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let perms = permissions(cfg, authid, &p, now);
            (p, perms)
        })
        .filter(|(_, perms)| !perms.is_empty())
        .collect()
}
