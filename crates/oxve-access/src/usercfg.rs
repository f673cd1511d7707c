//! `user.cfg`: users, tokens, groups, pools, custom roles and ACLs, in
//! upstream's colon-separated line format, written back in upstream's order.

use crate::roles;
use crate::AccessError;
use std::collections::{BTreeMap, BTreeSet};

/// A user of any realm.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub enable: bool,
    /// Expiry as epoch seconds; 0 = never.
    pub expire: i64,
    pub firstname: String,
    pub lastname: String,
    pub email: String,
    pub comment: String,
    pub keys: String,
    /// Token name → settings.
    pub tokens: BTreeMap<String, Token>,
}

/// An API token of a user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Token {
    /// Expiry as epoch seconds; 0 = the user's.
    pub expire: i64,
    /// Privilege separation: the token gets only its own ACLs, intersected with the user's.
    pub privsep: bool,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    pub members: BTreeSet<String>,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pool {
    pub comment: String,
    pub vms: BTreeSet<String>,
    pub storage: BTreeSet<String>,
}

/// The ACL entries of one path: member → role → propagate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AclEntries {
    pub users: BTreeMap<String, BTreeMap<String, bool>>,
    pub groups: BTreeMap<String, BTreeMap<String, bool>>,
    pub tokens: BTreeMap<String, BTreeMap<String, bool>>,
}

impl AclEntries {
    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.tokens.is_empty()
    }
}

/// The parsed `user.cfg`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserConfig {
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, Group>,
    /// Custom roles only; built-in ones come from [`roles`].
    pub roles: BTreeMap<String, BTreeSet<String>>,
    pub pools: BTreeMap<String, Pool>,
    /// Normalized path → entries.
    pub acl: BTreeMap<String, AclEntries>,
    /// Lines that referred to unknown objects and were dropped, as upstream warns.
    pub warnings: Vec<String>,
}

/// Upstream's `encode_text`: control characters, `:` and non-ASCII are
/// percent-escaped (space and `%` are not).
pub fn encode_text(text: &str) -> String {
    let mut out = String::new();
    for b in text.as_bytes() {
        if (0x20..=0x39).contains(b) || (0x3b..=0x7e).contains(b) {
            out.push(*b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Upstream's `decode_text` (URI unescape).
pub fn decode_text(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// `/vms/100/` → `/vms/100`; `//a//b` → `/a/b`.
pub fn normalize_path(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split([',', ';', ' '])
        .map(str::trim)
        .filter(|x| !x.is_empty())
}

impl UserConfig {
    /// Parses `user.cfg` leniently, as upstream: lines that name unknown
    /// users, groups or roles are dropped with a warning.
    pub fn parse(text: &str) -> Result<UserConfig, AccessError> {
        let mut cfg = UserConfig::default();
        let mut acl_lines = Vec::new();
        let mut group_lines = Vec::new();
        let mut token_lines = Vec::new();
        for line in text.lines() {
            let line = line.trim_end();
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(':').collect();
            let f = |i: usize| fields.get(i).copied().unwrap_or("");
            match f(0) {
                "user" => {
                    let id = f(1);
                    if crate::userid::check_userid(id).is_err() {
                        cfg.warnings
                            .push(format!("user.cfg: invalid user id '{id}'"));
                        continue;
                    }
                    cfg.users.insert(
                        id.to_string(),
                        User {
                            enable: f(2) == "1",
                            expire: f(3).parse().unwrap_or(0),
                            firstname: decode_text(f(4)),
                            lastname: decode_text(f(5)),
                            email: decode_text(f(6)),
                            comment: decode_text(f(7)),
                            keys: f(8).to_string(),
                            tokens: BTreeMap::new(),
                        },
                    );
                }
                "group" => {
                    group_lines.push(fields.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                }
                "token" => {
                    token_lines.push(fields.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                }
                "role" => {
                    let mut privs = BTreeSet::new();
                    for p in split_list(f(2)) {
                        if roles::is_privilege(p) {
                            privs.insert(p.to_string());
                        } else {
                            cfg.warnings.push(format!(
                                "user.cfg: role '{}': invalid privilege '{p}'",
                                f(1)
                            ));
                        }
                    }
                    if !roles::is_builtin(f(1)) {
                        cfg.roles.insert(f(1).to_string(), privs);
                    }
                }
                "pool" => {
                    cfg.pools.insert(
                        f(1).to_string(),
                        Pool {
                            comment: decode_text(f(2)),
                            vms: split_list(f(3)).map(String::from).collect(),
                            storage: split_list(f(4)).map(String::from).collect(),
                        },
                    );
                }
                "acl" => acl_lines.push(fields.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                other => cfg
                    .warnings
                    .push(format!("user.cfg: unknown entry type '{other}'")),
            }
        }
        for fields in token_lines {
            let id = fields.get(1).map(String::as_str).unwrap_or("");
            let Some((user, name)) = id.split_once('!') else {
                cfg.warnings
                    .push(format!("user.cfg: invalid token id '{id}'"));
                continue;
            };
            let Some(u) = cfg.users.get_mut(user) else {
                cfg.warnings
                    .push(format!("user.cfg: token '{id}' of unknown user"));
                continue;
            };
            let get = |i: usize| fields.get(i).map(String::as_str).unwrap_or("");
            u.tokens.insert(
                name.to_string(),
                Token {
                    expire: get(2).parse().unwrap_or(0),
                    privsep: get(3) == "1",
                    comment: decode_text(get(4)),
                },
            );
        }
        for fields in group_lines {
            let get = |i: usize| fields.get(i).map(String::as_str).unwrap_or("");
            let mut group = Group {
                comment: decode_text(get(3)),
                ..Default::default()
            };
            for m in split_list(get(2)) {
                if cfg.users.contains_key(m) {
                    group.members.insert(m.to_string());
                } else {
                    cfg.warnings
                        .push(format!("user.cfg: group '{}': unknown user '{m}'", get(1)));
                }
            }
            cfg.groups.insert(get(1).to_string(), group);
        }
        for fields in acl_lines {
            let get = |i: usize| fields.get(i).map(String::as_str).unwrap_or("");
            let propagate = get(1) != "0";
            let path = normalize_path(get(2));
            let roles: Vec<&str> = split_list(get(4))
                .filter(|r| {
                    let ok = cfg.role_exists(r);
                    if !ok {
                        cfg.warnings
                            .push(format!("user.cfg: acl on '{path}': unknown role '{r}'"));
                    }
                    ok
                })
                .collect::<Vec<_>>();
            for member in split_list(get(3)) {
                let known = if let Some(g) = member.strip_prefix('@') {
                    cfg.groups.contains_key(g)
                } else if let Some((u, t)) = member.split_once('!') {
                    cfg.users.get(u).is_some_and(|u| u.tokens.contains_key(t))
                } else {
                    cfg.users.contains_key(member)
                };
                if !known {
                    cfg.warnings.push(format!(
                        "user.cfg: acl on '{path}': unknown member '{member}'"
                    ));
                    continue;
                }
                for r in &roles {
                    cfg.set_acl_role(&path, member, r, propagate);
                }
            }
        }
        Ok(cfg)
    }

    /// Writes `user.cfg` as upstream does: users (each followed by its
    /// tokens), groups, pools, custom roles, then ACLs, blocks separated by
    /// a blank line.
    pub fn write(&self) -> String {
        let mut out = String::new();
        for (id, u) in &self.users {
            out.push_str(&format!(
                "user:{id}:{}:{}:{}:{}:{}:{}:{}:\n",
                u8::from(u.enable),
                u.expire,
                encode_text(&u.firstname),
                encode_text(&u.lastname),
                encode_text(&u.email),
                encode_text(&u.comment),
                u.keys
            ));
            for (name, t) in &u.tokens {
                out.push_str(&format!(
                    "token:{id}!{name}:{}:{}:{}:\n",
                    t.expire,
                    u8::from(t.privsep),
                    encode_text(&t.comment)
                ));
            }
        }
        out.push('\n');
        for (id, g) in &self.groups {
            let members: Vec<&str> = g.members.iter().map(String::as_str).collect();
            out.push_str(&format!(
                "group:{id}:{}:{}:\n",
                members.join(","),
                encode_text(&g.comment)
            ));
        }
        out.push('\n');
        for (id, p) in &self.pools {
            let vms: Vec<&str> = p.vms.iter().map(String::as_str).collect();
            let st: Vec<&str> = p.storage.iter().map(String::as_str).collect();
            out.push_str(&format!(
                "pool:{id}:{}:{}:{}:\n",
                encode_text(&p.comment),
                vms.join(","),
                st.join(",")
            ));
        }
        out.push('\n');
        for (id, privs) in &self.roles {
            let privs: Vec<&str> = privs.iter().map(String::as_str).collect();
            out.push_str(&format!("role:{id}:{}:\n", privs.join(",")));
        }
        out.push('\n');
        // Paths in tree order (`/a`, `/a/b`, `/a-b`), as upstream walks its ACL tree.
        let mut paths: Vec<&String> = self.acl.keys().collect();
        paths.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        for path in paths {
            let entries = &self.acl[path];
            // propagate → role list → members, as upstream groups them.
            let mut collect: BTreeMap<bool, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
            // root@pam has every privilege anyway; upstream never writes it.
            let members = entries
                .users
                .iter()
                .filter(|(m, _)| m.as_str() != "root@pam")
                .map(|(m, r)| (m.clone(), r))
                .chain(entries.groups.iter().map(|(g, r)| (format!("@{g}"), r)))
                .chain(entries.tokens.iter().map(|(t, r)| (t.clone(), r)));
            for (member, roles) in members {
                for propagate in [false, true] {
                    let list: Vec<&str> = roles
                        .iter()
                        .filter(|(_, p)| **p == propagate)
                        .map(|(r, _)| r.as_str())
                        .collect();
                    if !list.is_empty() {
                        collect
                            .entry(propagate)
                            .or_default()
                            .entry(list.join(","))
                            .or_default()
                            .insert(member.clone());
                    }
                }
            }
            for (propagate, by_roles) in collect {
                for (roles, members) in by_roles {
                    let members: Vec<&str> = members.iter().map(String::as_str).collect();
                    out.push_str(&format!(
                        "acl:{}:{path}:{}:{roles}:\n",
                        u8::from(propagate),
                        members.join(",")
                    ));
                }
            }
        }
        out
    }

    /// Whether a role exists (built-in or custom).
    pub fn role_exists(&self, role: &str) -> bool {
        roles::is_builtin(role) || self.roles.contains_key(role)
    }

    /// The privileges of a role (built-in or custom).
    pub fn role_privileges(&self, role: &str) -> Option<BTreeSet<String>> {
        roles::builtin(role)
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .or_else(|| self.roles.get(role).cloned())
    }

    /// Adds a role for a member (`user@realm`, `@group`, `user@realm!token`) on a path.
    pub fn set_acl_role(&mut self, path: &str, member: &str, role: &str, propagate: bool) {
        let entries = self.acl.entry(normalize_path(path)).or_default();
        let map = if let Some(g) = member.strip_prefix('@') {
            entries.groups.entry(g.to_string()).or_default()
        } else if member.contains('!') {
            entries.tokens.entry(member.to_string()).or_default()
        } else {
            entries.users.entry(member.to_string()).or_default()
        };
        map.insert(role.to_string(), propagate);
    }

    /// Removes a role of a member on a path.
    pub fn remove_acl_role(&mut self, path: &str, member: &str, role: &str) {
        let path = normalize_path(path);
        if let Some(entries) = self.acl.get_mut(&path) {
            let map = if let Some(g) = member.strip_prefix('@') {
                entries.groups.get_mut(g)
            } else if member.contains('!') {
                entries.tokens.get_mut(member)
            } else {
                entries.users.get_mut(member)
            };
            if let Some(map) = map {
                map.remove(role);
            }
            entries.users.retain(|_, r| !r.is_empty());
            entries.groups.retain(|_, r| !r.is_empty());
            entries.tokens.retain(|_, r| !r.is_empty());
            if entries.is_empty() {
                self.acl.remove(&path);
            }
        }
    }

    /// Removes a member from every ACL (when the user, group or token goes).
    pub fn remove_acl_member(&mut self, member: &str) {
        for entries in self.acl.values_mut() {
            if let Some(g) = member.strip_prefix('@') {
                entries.groups.remove(g);
            } else if member.contains('!') {
                entries.tokens.remove(member);
            } else {
                entries.users.remove(member);
                let prefix = format!("{member}!");
                entries.tokens.retain(|t, _| !t.starts_with(&prefix));
            }
        }
        self.acl.retain(|_, e| !e.is_empty());
    }

    /// Removes a role from every ACL (when the role is deleted).
    pub fn remove_acl_role_everywhere(&mut self, role: &str) {
        for entries in self.acl.values_mut() {
            for map in entries
                .users
                .values_mut()
                .chain(entries.groups.values_mut())
                .chain(entries.tokens.values_mut())
            {
                map.remove(role);
            }
            entries.users.retain(|_, r| !r.is_empty());
            entries.groups.retain(|_, r| !r.is_empty());
            entries.tokens.retain(|_, r| !r.is_empty());
        }
        self.acl.retain(|_, e| !e.is_empty());
    }

    /// Deletes a user with its tokens, group memberships and ACL entries.
    pub fn delete_user(&mut self, userid: &str) -> Result<(), AccessError> {
        self.users
            .remove(userid)
            .ok_or_else(|| AccessError::NoSuchUser(userid.to_string()))?;
        for g in self.groups.values_mut() {
            g.members.remove(userid);
        }
        self.remove_acl_member(userid);
        Ok(())
    }

    /// Groups a user belongs to.
    pub fn groups_of(&self, userid: &str) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, g)| g.members.contains(userid))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Sets a user's groups (replacing, or adding with `append`).
    pub fn set_user_groups(
        &mut self,
        userid: &str,
        groups: &[String],
        append: bool,
    ) -> Result<(), AccessError> {
        for g in groups {
            if !self.groups.contains_key(g) {
                return Err(AccessError::NoSuchGroup(g.clone()));
            }
        }
        if !append {
            for g in self.groups.values_mut() {
                g.members.remove(userid);
            }
        }
        for g in groups {
            if let Some(group) = self.groups.get_mut(g) {
                group.members.insert(userid.to_string());
            }
        }
        Ok(())
    }

    /// Whether a user may act now: exists, enabled, not expired.
    pub fn user_enabled(&self, userid: &str, now: i64) -> bool {
        if userid == "root@pam" {
            return true;
        }
        self.users
            .get(userid)
            .is_some_and(|u| u.enable && (u.expire == 0 || u.expire > now))
    }

    /// Whether a token exists and has not expired (nor has its user).
    pub fn token_valid(&self, tokenid: &str, now: i64) -> bool {
        let Some((user, name)) = tokenid.split_once('!') else {
            return false;
        };
        if !self.user_enabled(user, now) {
            return false;
        }
        self.users
            .get(user)
            .and_then(|u| u.tokens.get(name))
            .is_some_and(|t| t.expire == 0 || t.expire > now)
    }

    /// The pool a guest belongs to.
    pub fn pool_of_vm(&self, vmid: &str) -> Option<&str> {
        self.pools
            .iter()
            .find(|(_, p)| p.vms.contains(vmid))
            .map(|(n, _)| n.as_str())
    }

    /// The pools a storage belongs to.
    pub fn pools_of_storage(&self, storage: &str) -> Vec<&str> {
        self.pools
            .iter()
            .filter(|(_, p)| p.storage.contains(storage))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITTEN: &str = "user:alice@pve:1:0:Alice:Doe:alice@example.com:a comment%3A with colon::\ntoken:alice@pve!ci:0:1:build bot:\nuser:root@pam:1:0:::root@example.com:::\n\ngroup:admins:alice@pve,root@pam:the admins:\n\npool:prod:Production:100,101:local:\n\nrole:custom:Sys.Audit,VM.Audit:\n\nacl:0:/:@admins:Administrator:\nacl:1:/vms:alice@pve,alice@pve!ci:PVEVMUser:\nacl:1:/vms/100:alice@pve:PVEAuditor,custom:\n";

    #[test]
    fn round_trips_upstream_written_text() {
        let cfg = UserConfig::parse(WRITTEN).unwrap();
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert_eq!(cfg.users["alice@pve"].comment, "a comment: with colon");
        assert!(cfg.users["alice@pve"].tokens["ci"].privsep);
        assert_eq!(cfg.write(), WRITTEN);
    }

    #[test]
    fn acls_are_written_in_tree_order() {
        let text = "user:a@pve:1:0::::::\n\n\n\n\nacl:1:/a-b:a@pve:PVEAuditor:\nacl:1:/a/b:a@pve:PVEAuditor:\nacl:1:/a:a@pve:PVEAuditor:\nacl:1:/:root@pam:PVEAuditor:\n";
        let out = UserConfig::parse(text).unwrap().write();
        assert!(out.ends_with("acl:1:/a:a@pve:PVEAuditor:\nacl:1:/a/b:a@pve:PVEAuditor:\nacl:1:/a-b:a@pve:PVEAuditor:\n"), "{out}");
        assert!(!out.contains("root@pam"));
    }

    #[test]
    fn drops_unknown_references() {
        let cfg = UserConfig::parse("user:a@pve:1:\ngroup:g:a@pve,ghost@pve:\nacl:1:/:ghost@pve:Administrator:\nacl:1:/:a@pve:NoSuchRole:\n").unwrap();
        assert_eq!(cfg.groups["g"].members.len(), 1);
        assert!(cfg.acl.is_empty());
        assert_eq!(cfg.warnings.len(), 3);
    }

    #[test]
    fn delete_user_removes_everything() {
        let mut cfg = UserConfig::parse(WRITTEN).unwrap();
        cfg.delete_user("alice@pve").unwrap();
        let text = cfg.write();
        assert!(!text.contains("alice"), "{text}");
        assert!(text.contains("acl:0:/:@admins:Administrator:"));
    }
}
