//! Store keys: relative paths in the `/etc/pve` tree.

use crate::error::{ConfigError, Result};

/// Checks that `key` is a clean relative path: not empty, no leading or
/// trailing `/`, no empty, `.` or `..` components, no NUL.
pub fn validate_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        Some("must not be empty")
    } else if key.starts_with('/') {
        Some("must be relative (no leading '/')")
    } else if key.contains('\0') {
        Some("must not contain NUL")
    } else if key.split('/').any(str::is_empty) {
        Some("must not contain empty path components")
    } else if key.split('/').any(|c| c == "." || c == "..") {
        Some("must not contain '.' or '..' components")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ConfigError::InvalidKey {
            key: key.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::validate_key;

    #[test]
    fn accepts_clean_paths() {
        for k in [
            "user.cfg",
            "nodes/pve1/qemu-server/100.conf",
            "priv/shadow.cfg",
        ] {
            assert!(validate_key(k).is_ok(), "{k}");
        }
    }

    #[test]
    fn rejects_unclean_paths() {
        for k in [
            "",
            "/user.cfg",
            "a//b",
            "a/",
            "../x",
            "a/../b",
            "./a",
            "a\0b",
        ] {
            assert!(validate_key(k).is_err(), "{k:?}");
        }
    }
}
