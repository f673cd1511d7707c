//! User and token ids: `name@realm` and `name@realm!token`.

use crate::AccessError;

/// Checks a user id as upstream's `pve-userid` format does.
pub fn check_userid(s: &str) -> Result<(), AccessError> {
    let bad = |why: &str| AccessError::InvalidUserid(s.to_string(), why.to_string());
    let (name, realm) = s
        .rsplit_once('@')
        .ok_or_else(|| bad("no realm (expected name@realm)"))?;
    if name.is_empty() || name.len() > 60 {
        return Err(bad("user name must have 1 to 60 characters"));
    }
    if name
        .chars()
        .any(|c| c == ':' || c == '!' || c == '@' || c == '/' || c.is_control())
    {
        return Err(bad("user name contains an invalid character"));
    }
    check_realm(realm).map_err(|_| bad("invalid realm"))
}

/// Checks a realm name (`pve-realm`).
pub fn check_realm(realm: &str) -> Result<(), AccessError> {
    let ok = realm.len() >= 2
        && realm.len() <= 32
        && realm.starts_with(|c: char| c.is_ascii_alphabetic())
        && realm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(AccessError::NoSuchRealm(realm.to_string()))
    }
}

/// Checks a token name (the part after `!`).
pub fn check_token_name(name: &str) -> Result<(), AccessError> {
    let ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(AccessError::Invalid(format!("invalid token name '{name}'")))
    }
}

/// Whom permissions are evaluated for: a user, or one of its API tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Authid {
    user: String,
    token: Option<String>,
}

impl Authid {
    /// Parses `user@realm` or `user@realm!token`.
    pub fn parse(s: &str) -> Result<Authid, AccessError> {
        match s.split_once('!') {
            Some((user, token)) => {
                check_userid(user)?;
                check_token_name(token)?;
                Ok(Authid {
                    user: user.into(),
                    token: Some(token.into()),
                })
            }
            None => {
                check_userid(s)?;
                Ok(Authid {
                    user: s.into(),
                    token: None,
                })
            }
        }
    }

    /// The user id (a token's owner).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The token name, for tokens.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn is_token(&self) -> bool {
        self.token.is_some()
    }

    /// The realm of the user.
    pub fn realm(&self) -> &str {
        self.user.rsplit_once('@').map(|(_, r)| r).unwrap_or("")
    }
}

impl std::fmt::Display for Authid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.token {
            Some(t) => write!(f, "{}!{t}", self.user),
            None => write!(f, "{}", self.user),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_and_tokens() {
        let a = Authid::parse("alice@pve").unwrap();
        assert_eq!((a.user(), a.token(), a.realm()), ("alice@pve", None, "pve"));
        let t = Authid::parse("root@pam!ci").unwrap();
        assert_eq!((t.user(), t.token()), ("root@pam", Some("ci")));
        assert_eq!(t.to_string(), "root@pam!ci");
        for bad in [
            "alice", "@pve", "a:b@pve", "a@p", "a@1pve", "a@pve!", "a@pve!1x",
        ] {
            assert!(Authid::parse(bad).is_err(), "{bad}");
        }
    }
}
