//! API token secrets: `PVEAPIToken=user@realm!name=secret`. Secrets are
//! UUIDs shown once at creation; `priv/token.cfg` keeps their SHA-256
//! (upstream keeps them in plain text — see docs/DEVIATIONS.md).

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A fresh secret.
pub fn generate_secret() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Splits the part after `PVEAPIToken=` into token id and secret.
pub fn parse_header(value: &str) -> Option<(String, String)> {
    let (tokenid, secret) = value.trim().split_once('=')?;
    if !tokenid.contains('!') || secret.is_empty() {
        return None;
    }
    Some((tokenid.to_string(), secret.to_string()))
}

/// Parses `token.cfg`: one `tokenid hash` per line.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Writes `token.cfg`.
pub fn write(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
}

/// Whether `secret` is the secret of `tokenid` in `token.cfg` text.
pub fn verify_secret(text: &str, tokenid: &str, secret: &str) -> bool {
    let want = hash_secret(secret);
    parse(text).get(tokenid).is_some_and(|have| {
        have.len() == want.len()
            && have
                .bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_verify_by_hash() {
        let s = generate_secret();
        let mut map = BTreeMap::new();
        map.insert("a@pve!ci".to_string(), hash_secret(&s));
        let text = write(&map);
        assert!(!text.contains(&s));
        assert!(verify_secret(&text, "a@pve!ci", &s));
        assert!(!verify_secret(&text, "a@pve!ci", "wrong"));
        assert!(!verify_secret(&text, "a@pve!other", &s));
        assert_eq!(
            parse_header("a@pve!ci=1234"),
            Some(("a@pve!ci".to_string(), "1234".to_string()))
        );
        assert_eq!(parse_header("a@pve=1234"), None);
    }
}
