//! Second factors (TOTP) per user, kept as JSON in `priv/tfa.cfg`.

use crate::AccessError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One second factor of a user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TfaEntry {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub created: i64,
    pub enable: bool,
    /// The `otpauth://totp/...` URI (a secret: never returned by the API).
    pub secret: String,
}

/// All users' factors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TfaConfig {
    pub users: BTreeMap<String, Vec<TfaEntry>>,
}

impl TfaConfig {
    pub fn parse(text: &str) -> Result<TfaConfig, AccessError> {
        if text.trim().is_empty() {
            return Ok(TfaConfig::default());
        }
        serde_json::from_str(text).map_err(|e| AccessError::Parse(format!("tfa.cfg: {e}")))
    }

    pub fn write(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The user's enabled factors exist: login needs a second step.
    pub fn needs_tfa(&self, userid: &str) -> bool {
        self.users
            .get(userid)
            .is_some_and(|l| l.iter().any(|e| e.enable))
    }

    /// Adds a TOTP factor after checking that `code` is valid for `uri`.
    pub fn add_totp(
        &mut self,
        userid: &str,
        uri: &str,
        code: &str,
        description: &str,
        now: i64,
    ) -> Result<String, AccessError> {
        let totp = parse_uri(uri)?;
        if !check_code(&totp, code, now) {
            return Err(AccessError::Invalid(
                "failed to verify TOTP challenge".into(),
            ));
        }
        let id = format!("totp-{}", &uuid::Uuid::new_v4().to_string()[..8]);
        self.users
            .entry(userid.to_string())
            .or_default()
            .push(TfaEntry {
                id: id.clone(),
                kind: "totp".into(),
                description: description.to_string(),
                created: now,
                enable: true,
                secret: uri.to_string(),
            });
        Ok(id)
    }

    /// Whether `code` is a current code of one of the user's enabled factors.
    pub fn verify(&self, userid: &str, code: &str, now: i64) -> bool {
        self.users
            .get(userid)
            .into_iter()
            .flatten()
            .filter(|e| e.enable)
            .any(|e| {
                parse_uri(&e.secret)
                    .map(|t| check_code(&t, code, now))
                    .unwrap_or(false)
            })
    }

    pub fn entries(&self, userid: &str) -> &[TfaEntry] {
        self.users.get(userid).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn entry_mut(&mut self, userid: &str, id: &str) -> Result<&mut TfaEntry, AccessError> {
        self.users
            .get_mut(userid)
            .and_then(|l| l.iter_mut().find(|e| e.id == id))
            .ok_or_else(|| AccessError::Invalid(format!("no such tfa entry '{id}'")))
    }

    pub fn delete(&mut self, userid: &str, id: &str) -> Result<(), AccessError> {
        let list = self
            .users
            .get_mut(userid)
            .ok_or_else(|| AccessError::Invalid(format!("no such tfa entry '{id}'")))?;
        let before = list.len();
        list.retain(|e| e.id != id);
        if list.len() == before {
            return Err(AccessError::Invalid(format!("no such tfa entry '{id}'")));
        }
        if list.is_empty() {
            self.users.remove(userid);
        }
        Ok(())
    }

    /// Removes all factors of a user (when the user is deleted).
    pub fn remove_user(&mut self, userid: &str) {
        self.users.remove(userid);
    }
}

fn parse_uri(uri: &str) -> Result<totp_rs::TOTP, AccessError> {
    totp_rs::TOTP::from_url_unchecked(uri)
        .map_err(|e| AccessError::Invalid(format!("invalid TOTP URI: {e}")))
}

/// One step of clock skew either way, as upstream.
fn check_code(totp: &totp_rs::TOTP, code: &str, now: i64) -> bool {
    let code = code.trim();
    [-1i64, 0, 1].iter().any(|d| {
        let t = (now + d * totp.step as i64).max(0) as u64;
        totp.generate(t) == code
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str =
        "otpauth://totp/oxve:alice%40pve?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=oxve";

    #[test]
    fn totp_codes_verify_with_skew() {
        let totp = parse_uri(URI).unwrap();
        let now = 1_700_000_000;
        let code = totp.generate(now as u64);
        let mut cfg = TfaConfig::default();
        assert!(
            cfg.add_totp("alice@pve", URI, "000000", "phone", now)
                .is_err()
                || code == "000000"
        );
        let id = cfg.add_totp("alice@pve", URI, &code, "phone", now).unwrap();
        assert!(cfg.needs_tfa("alice@pve"));
        assert!(cfg.verify("alice@pve", &code, now + 30));
        assert!(!cfg.verify("alice@pve", &code, now + 120));
        let cfg = TfaConfig::parse(&cfg.write()).unwrap();
        assert_eq!(cfg.entries("alice@pve")[0].id, id);
    }
}
