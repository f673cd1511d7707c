//! First-start set-up of a development node: `admin@pve` with the
//! Administrator role on `/` and a generated password.

use crate::error::ApiResult;
use crate::node::{Node, SHADOW_CFG};
use oxve_access::password;
use oxve_access::usercfg::User;
use std::path::PathBuf;

const ADMIN: &str = "admin@pve";

/// Where the generated password is kept (root only).
pub fn password_file(node: &Node) -> PathBuf {
    node.path("var/lib/oxve/initial-admin-password")
}

/// Creates `admin@pve` unless it exists; returns the new password.
pub fn create_admin(node: &Node) -> ApiResult<Option<String>> {
    if node.users()?.users.contains_key(ADMIN) {
        return Ok(None);
    }
    let password = generate_password();
    let hash = password::hash_password(&password);
    node.update_text(SHADOW_CFG, |text| {
        let mut map = password::parse_shadow(text.unwrap_or(""));
        map.insert(ADMIN.into(), hash.clone());
        Ok((Some(password::write_shadow(&map)), ()))
    })?;
    node.update_users(|cfg| {
        cfg.users.entry(ADMIN.into()).or_insert(User {
            enable: true,
            comment: "created on first start".into(),
            ..Default::default()
        });
        cfg.set_acl_role("/", ADMIN, "Administrator", true);
        Ok(())
    })?;
    let file = password_file(node);
    crate::sys::write_atomic(&file, &format!("{password}\n"))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
    Ok(Some(password))
}

fn generate_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..16)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}
