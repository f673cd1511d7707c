//! Property strings as the VM config holds them (`local:100/x.qcow2,size=4G`),
//! read into a key → raw value map. Values stay text; the typed views
//! (`flag`, `truthy`, `int`) interpret them the way upstream's parsed values
//! behave.

use crate::error::{cfg_err, CmdlineError};
use std::collections::BTreeMap;

/// A parsed property string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props(pub BTreeMap<String, String>);

impl Props {
    /// Parses `text`; a part without `=` is the value of `default_key`.
    pub fn parse(text: &str, default_key: Option<&str>) -> Result<Props, CmdlineError> {
        let mut map = BTreeMap::new();
        for part in text.split(',') {
            if part.trim().is_empty() {
                continue;
            }
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => match default_key {
                    Some(dk) if !map.contains_key(dk) => (dk.to_string(), part.to_string()),
                    _ => {
                        return cfg_err(format!(
                            "value without key, but schema does not define a default key: {part}"
                        ))
                    }
                },
            };
            if map.contains_key(&key) {
                return cfg_err(format!(
                    "duplicate key in comma-separated list property: {key}"
                ));
            }
            map.insert(key, value);
        }
        Ok(Props(map))
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean option (`1/on/yes/true`).
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.get(key).map(is_true)
    }

    /// Perl truthiness of the parsed value: set, not empty and not `0`
    /// (booleans normalized first).
    pub fn truthy(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => match parse_bool(v) {
                Some(b) => b,
                None => !v.is_empty() && v != "0",
            },
        }
    }

    /// An integer option.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(|v| v.parse().ok())
    }
}

/// Upstream's boolean words.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// Whether `v` is a true boolean word.
pub fn is_true(v: &str) -> bool {
    parse_bool(v).unwrap_or(false)
}

/// Perl truthiness of a raw config value.
pub fn perl_true(v: Option<&str>) -> bool {
    matches!(v, Some(s) if !s.is_empty() && s != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_key_and_flags() {
        let p = Props::parse("local:1/a.raw,discard=on,iothread=1", Some("file")).unwrap();
        assert_eq!(p.get("file"), Some("local:1/a.raw"));
        assert!(p.truthy("iothread"));
        assert!(p.truthy("discard"));
        assert_eq!(p.flag("ssd"), None);
    }
}
