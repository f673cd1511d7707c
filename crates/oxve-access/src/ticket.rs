//! Tickets and CSRF tokens.
//!
//! Tickets keep upstream's shape, `PVE:<userid>:<8 hex digit time>::<sig>`,
//! signed with Ed25519; half-logins waiting for a second factor carry
//! `!tfa!` before the user id. CSRF tokens are `<hex time>:<HMAC-SHA256>`.
//! Both are valid from 5 minutes before to 2 hours after their time.

use crate::AccessError;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a ticket or CSRF token is valid (upstream: 2 h).
pub const TICKET_LIFETIME: i64 = 7200;
/// Allowed clock skew into the future.
const MIN_AGE: i64 = -300;
/// Marks a ticket that still needs its second factor.
const TFA_MARK: &str = "!tfa!";

/// The node's signing key and CSRF secret.
pub struct TicketKeys {
    signing: SigningKey,
    csrf_secret: [u8; 32],
}

impl TicketKeys {
    /// Fresh random keys.
    pub fn generate() -> TicketKeys {
        let mut rng = rand::rngs::OsRng;
        let signing = SigningKey::generate(&mut rng);
        let mut csrf_secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rng, &mut csrf_secret);
        TicketKeys {
            signing,
            csrf_secret,
        }
    }

    /// Serializes both keys (kept in the store at `priv/authkey.key`).
    pub fn to_text(&self) -> String {
        format!(
            "ed25519 {}\ncsrf {}\n",
            B64.encode(self.signing.to_bytes()),
            B64.encode(self.csrf_secret)
        )
    }

    /// Parses what [`TicketKeys::to_text`] wrote.
    pub fn from_text(text: &str) -> Result<TicketKeys, AccessError> {
        let bad = || AccessError::Parse("invalid ticket key file".into());
        let mut signing = None;
        let mut csrf = None;
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("ed25519", v)) => {
                    let bytes: [u8; 32] = B64
                        .decode(v.trim())
                        .map_err(|_| bad())?
                        .try_into()
                        .map_err(|_| bad())?;
                    signing = Some(SigningKey::from_bytes(&bytes));
                }
                Some(("csrf", v)) => {
                    csrf = Some(
                        B64.decode(v.trim())
                            .map_err(|_| bad())?
                            .try_into()
                            .map_err(|_| bad())?,
                    );
                }
                _ => {}
            }
        }
        Ok(TicketKeys {
            signing: signing.ok_or_else(bad)?,
            csrf_secret: csrf.ok_or_else(bad)?,
        })
    }

    /// A full login ticket for `userid`.
    pub fn create_ticket(&self, userid: &str, now: i64) -> String {
        self.sign(&format!("PVE:{userid}:{:08X}", now))
    }

    /// A half-login ticket: password verified, second factor pending.
    pub fn create_tfa_ticket(&self, userid: &str, now: i64) -> String {
        self.sign(&format!("PVE:{TFA_MARK}{userid}:{:08X}", now))
    }

    fn sign(&self, data: &str) -> String {
        let sig = self.signing.sign(data.as_bytes());
        format!("{data}::{}", B64.encode(sig.to_bytes()))
    }

    /// Verifies a full ticket and returns its user id.
    pub fn verify_ticket(&self, ticket: &str, now: i64) -> Result<String, AccessError> {
        let user = self.verify(ticket, now)?;
        if user.starts_with(TFA_MARK) {
            return Err(AccessError::AuthFailed);
        }
        Ok(user)
    }

    /// Verifies a half-login ticket and returns its user id.
    pub fn verify_tfa_ticket(&self, ticket: &str, now: i64) -> Result<String, AccessError> {
        let user = self.verify(ticket, now)?;
        user.strip_prefix(TFA_MARK)
            .map(String::from)
            .ok_or(AccessError::AuthFailed)
    }

    fn verify(&self, ticket: &str, now: i64) -> Result<String, AccessError> {
        let (data, sig) = ticket.rsplit_once("::").ok_or(AccessError::AuthFailed)?;
        let sig: [u8; 64] = B64
            .decode(sig.trim_end_matches('='))
            .map_err(|_| AccessError::AuthFailed)?
            .try_into()
            .map_err(|_| AccessError::AuthFailed)?;
        self.signing
            .verifying_key()
            .verify(data.as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| AccessError::AuthFailed)?;
        let rest = data.strip_prefix("PVE:").ok_or(AccessError::AuthFailed)?;
        let (user, time) = rest.rsplit_once(':').ok_or(AccessError::AuthFailed)?;
        let time = i64::from_str_radix(time, 16).map_err(|_| AccessError::AuthFailed)?;
        let age = now - time;
        if !(MIN_AGE..=TICKET_LIFETIME).contains(&age) {
            return Err(AccessError::AuthFailed);
        }
        Ok(user.to_string())
    }

    /// A CSRF prevention token for `userid`.
    pub fn create_csrf_token(&self, userid: &str, now: i64) -> String {
        let time = format!("{:08X}", now);
        format!("{time}:{}", B64.encode(self.csrf_mac(&time, userid)))
    }

    /// Whether `token` is a valid CSRF token of `userid` now.
    pub fn verify_csrf_token(&self, userid: &str, token: &str, now: i64) -> bool {
        let Some((time, mac)) = token.split_once(':') else {
            return false;
        };
        let Ok(t) = i64::from_str_radix(time, 16) else {
            return false;
        };
        let age = now - t;
        if !(MIN_AGE..=TICKET_LIFETIME).contains(&age) {
            return false;
        }
        let Ok(given) = B64.decode(mac.trim_end_matches('=')) else {
            return false;
        };
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.csrf_secret) else {
            return false;
        };
        m.update(format!("{time}:{userid}").as_bytes());
        m.verify_slice(&given).is_ok()
    }

    fn csrf_mac(&self, time: &str, userid: &str) -> Vec<u8> {
        let mut m =
            Hmac::<Sha256>::new_from_slice(&self.csrf_secret).expect("HMAC takes any key length");
        m.update(format!("{time}:{userid}").as_bytes());
        m.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_verify_within_their_lifetime() {
        let keys = TicketKeys::generate();
        let t = keys.create_ticket("alice@pve", 1_000_000);
        assert!(t.starts_with("PVE:alice@pve:000F4240::"));
        assert_eq!(
            keys.verify_ticket(&t, 1_000_000 + 7200).unwrap(),
            "alice@pve"
        );
        assert!(keys.verify_ticket(&t, 1_000_000 + 7201).is_err());
        assert!(keys.verify_ticket(&t, 1_000_000 - 301).is_err());
        let forged = t.replace("alice", "admin");
        assert!(keys.verify_ticket(&forged, 1_000_000).is_err());
        let other = TicketKeys::generate();
        assert!(other.verify_ticket(&t, 1_000_000).is_err());
        let again = TicketKeys::from_text(&keys.to_text()).unwrap();
        assert!(again.verify_ticket(&t, 1_000_000).is_ok());
    }

    #[test]
    fn tfa_tickets_are_not_logins() {
        let keys = TicketKeys::generate();
        let t = keys.create_tfa_ticket("bob@pve", 50);
        assert!(keys.verify_ticket(&t, 50).is_err());
        assert_eq!(keys.verify_tfa_ticket(&t, 50).unwrap(), "bob@pve");
        let full = keys.create_ticket("bob@pve", 50);
        assert!(keys.verify_tfa_ticket(&full, 50).is_err());
    }

    #[test]
    fn csrf_tokens_bind_user_and_time() {
        let keys = TicketKeys::generate();
        let c = keys.create_csrf_token("alice@pve", 100);
        assert!(keys.verify_csrf_token("alice@pve", &c, 100));
        assert!(!keys.verify_csrf_token("bob@pve", &c, 100));
        assert!(!keys.verify_csrf_token("alice@pve", &c, 100 + 7201));
        assert!(!keys.verify_csrf_token("alice@pve", "", 100));
    }
}
