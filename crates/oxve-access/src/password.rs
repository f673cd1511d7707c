//! Password hashes of the `pve` realm (`priv/shadow.cfg`, `userid:hash:`
//! lines): SHA-512-crypt, as upstream writes them; `$5$` is read too.

use std::collections::BTreeMap;

/// Hashes a password with SHA-512-crypt and a random salt.
pub fn hash_password(password: &str) -> String {
    let params = sha_crypt::Sha512Params::new(5000).expect("5000 rounds are valid");
    sha_crypt::sha512_simple(password, &params).expect("hashing a password does not fail")
}

/// Checks a password against a crypt hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    if hash.starts_with("$6$") {
        sha_crypt::sha512_check(password, hash).is_ok()
    } else if hash.starts_with("$5$") {
        sha_crypt::sha256_check(password, hash).is_ok()
    } else {
        false
    }
}

/// Parses `shadow.cfg`.
pub fn parse_shadow(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .filter(|(u, h)| !u.is_empty() && !h.is_empty())
        .collect()
}

/// Writes `shadow.cfg`.
pub fn write_shadow(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(u, h)| format!("{u}:{h}:\n")).collect()
}

/// Whether a password is acceptable (upstream: at least 8 characters for
/// the pve realm, and not longer than 64).
pub fn check_new_password(password: &str) -> Result<(), String> {
    if password.chars().count() < 8 {
        return Err("Password must be at least 8 characters long".into());
    }
    if password.len() > 64 {
        return Err("Password may only be 64 characters long".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify() {
        let h = hash_password("s3cret-pass");
        assert!(h.starts_with("$6$"));
        assert!(verify_password("s3cret-pass", &h));
        assert!(!verify_password("wrong", &h));
        let map = parse_shadow(&format!("alice@pve:{h}:\n"));
        assert_eq!(write_shadow(&map), format!("alice@pve:{h}:\n"));
    }
}
