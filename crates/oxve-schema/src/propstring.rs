//! Property strings: `key=value,key=value` texts with an optional default
//! key written without `key=` (e.g. `virtio=AA:BB:..,bridge=vmbr0` or
//! `local-lvm:32,ssd=1`), described by a format sub-schema (a map of key to
//! property schema) as upstream's `parse_property_string` and
//! `print_property_string` handle them.
//!
//! Errors are upstream's `die` texts without the final newline; schema
//! violations come as upstream's `format error` exception prints them:
//! `format error\n<key>: <message>`.

use crate::format;
use crate::validate::{check_object, scalar_text, ParamErrors};
use serde_json::{Map, Value};

/// Parses `text` by the format sub-schema `format` and returns the values,
/// typed by their schemas (integers and numbers as JSON numbers, booleans as
/// JSON booleans). Booleans accept `1/0/on/off/yes/no/true/false`.
///
/// ```
/// use serde_json::json;
/// let fmt = json!({
///     "order": {"type": "integer", "default_key": 1, "optional": 1},
///     "up": {"type": "integer", "optional": 1},
/// });
/// let fmt = fmt.as_object().unwrap();
/// let v = oxve_schema::propstring::parse(fmt, "3,up=20").unwrap();
/// assert_eq!(serde_json::Value::Object(v), json!({"order": 3, "up": 20}));
/// ```
pub fn parse(format: &Map<String, Value>, text: &str) -> Result<Map<String, Value>, String> {
    let mut res = Map::new();
    let mut default_key: Option<&str> = None;
    for part in text.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                insert_keyed(format, &mut res, k, v)?;
            }
            Some(_) => return Err("missing key in comma-separated list property".into()),
            None => {
                if let Some(dk) = default_key {
                    return Err(format!(
                        "duplicate key in comma-separated list property: {dk}"
                    ));
                }
                let (dk, schema) = format
                    .iter()
                    .find(|(_, s)| s.get("default_key").is_some_and(truthy))
                    .ok_or("value without key, but schema does not define a default key")?;
                default_key = Some(dk);
                if res.get(dk).is_some_and(truthy) {
                    return Err(format!(
                        "duplicate key in comma-separated list property: {dk}"
                    ));
                }
                res.insert(dk.clone(), Value::String(bool_text(schema, part)));
            }
        }
    }
    let mut errors = ParamErrors::default();
    let out = check_object("", format, &res, Some(&Value::from(0)), &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(format_error(&errors))
    }
}

/// Prints `values` as a property string in upstream's order: the default
/// key first (value only), then the required keys sorted, then the rest
/// sorted. Values are checked against `format` first; a value containing a
/// comma cannot be printed.
///
/// ```
/// use serde_json::json;
/// let fmt = json!({
///     "model": {"type": "string", "default_key": 1},
///     "bridge": {"type": "string", "optional": 1},
///     "firewall": {"type": "boolean", "optional": 1},
/// });
/// let fmt = fmt.as_object().unwrap();
/// let values = json!({"firewall": true, "bridge": "vmbr0", "model": "virtio"});
/// let text = oxve_schema::propstring::print(fmt, values.as_object().unwrap()).unwrap();
/// assert_eq!(text, "virtio,bridge=vmbr0,firewall=1");
/// ```
pub fn print(format: &Map<String, Value>, values: &Map<String, Value>) -> Result<String, String> {
    let mut errors = ParamErrors::default();
    check_object("", format, values, None, &mut errors);
    if !errors.is_empty() {
        return Err(format_error(&errors));
    }
    let default_key = format
        .iter()
        .find(|(_, s)| s.get("default_key").is_some_and(truthy))
        .map(|(k, _)| k.as_str());
    // keyAlias name -> the alias target it combines with.
    let key_alias_props: Map<String, Value> = format
        .values()
        .filter_map(|s| {
            let key_alias = s.get("keyAlias")?.as_str()?;
            let alias = s.get("alias")?;
            Some((key_alias.to_string(), alias.clone()))
        })
        .collect();

    let mut keys: Vec<&String> = values.keys().collect();
    keys.sort();
    let mut order: Vec<(&str, bool)> = Vec::new();
    if let Some(dk) = default_key {
        order.push((dk, true));
    }
    let required = |k: &str| {
        format
            .get(k)
            .is_some_and(|s| !s.get("optional").is_some_and(truthy))
    };
    order.extend(
        keys.iter()
            .filter(|k| required(k))
            .map(|k| (k.as_str(), false)),
    );
    order.extend(keys.iter().map(|k| (k.as_str(), false)));

    let mut done: Vec<&str> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    for (key, is_default) in order {
        if done.contains(&key) {
            continue;
        }
        done.push(key);
        let Some(value) = values.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let mut schema = format.get(key);
        if let Some(combine) = key_alias_props.get(key).and_then(Value::as_str) {
            if let Some(other) = values.get(combine).filter(|v| !v.is_null()) {
                let this = value_text(key, value, schema)?;
                let other = value_text(combine, other, format.get(combine))?;
                parts.push(format!("{this}={other}"));
                if let Some((k, _)) = format.get_key_value(combine) {
                    done.push(k);
                }
                continue;
            }
        }
        if let Some(alias) = schema.and_then(|s| s.get("alias")).and_then(Value::as_str) {
            schema = format.get(alias);
        }
        if schema.is_none() {
            return Err(format!("invalid key '{key}'"));
        }
        let text = value_text(key, value, schema)?;
        parts.push(if is_default {
            text
        } else {
            format!("{key}={text}")
        });
    }
    Ok(parts.join(","))
}

fn insert_keyed(
    format: &Map<String, Value>,
    res: &mut Map<String, Value>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    if res.contains_key(key) {
        return Err(format!(
            "duplicate key in comma-separated list property: {key}"
        ));
    }
    let mut key = key.to_string();
    let mut schema = format.get(&key);
    if let Some(alias) = schema.and_then(|s| s.get("alias")).and_then(Value::as_str) {
        if let Some(key_alias) = schema
            .and_then(|s| s.get("keyAlias"))
            .and_then(Value::as_str)
        {
            if res.contains_key(key_alias) {
                return Err(format!("key alias '{key_alias}' is already defined"));
            }
            res.insert(key_alias.to_string(), Value::String(key.clone()));
        }
        key = alias.to_string();
        schema = format.get(&key);
        if res.contains_key(&key) {
            return Err(format!("key '{key}' is already defined (via alias)"));
        }
    }
    let schema =
        schema.ok_or_else(|| format!("invalid key in comma-separated list property: {key}"))?;
    res.insert(key, Value::String(bool_text(schema, value)));
    Ok(())
}

/// Booleans are turned into `1`/`0` before the schema check, as upstream.
fn bool_text(schema: &Value, text: &str) -> String {
    if schema.get("type").and_then(Value::as_str) == Some("boolean") {
        if let Some(b) = format::parse_boolean(text) {
            return if b { "1" } else { "0" }.to_string();
        }
    }
    text.to_string()
}

fn value_text(key: &str, value: &Value, schema: Option<&Value>) -> Result<String, String> {
    let is_size = schema.and_then(|s| s.get("format")).and_then(Value::as_str) == Some("disk-size");
    let text = match value {
        Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        Value::Number(n) if is_size => n
            .as_u64()
            .map(format::format_size)
            .unwrap_or_else(|| n.to_string()),
        Value::String(s) if is_size => format::parse_size(s)
            .map(format::format_size)
            .unwrap_or_else(|| s.clone()),
        Value::Array(_) | Value::Object(_) => {
            return Err(format!("invalid value for {key}: not a scalar"))
        }
        other => scalar_text(other),
    };
    if text.contains(',') {
        return Err(format!("illegal value with commas for {key}"));
    }
    Ok(text)
}

/// Perl truthiness of a schema flag (`1`, `"1"`, `true`).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !(s.is_empty() || s == "0"),
        Value::Null => false,
        _ => true,
    }
}

/// The text of upstream's `format error` exception, final newline removed.
fn format_error(errors: &ParamErrors) -> String {
    let mut msg = String::from("format error\n");
    for (k, v) in &errors.0 {
        msg.push_str(&format!("{k}: {v}\n"));
    }
    msg.pop();
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net_format() -> Map<String, Value> {
        match json!({
            "model": {"type": "string", "enum": ["virtio", "e1000"], "default_key": 1},
            "macaddr": {"type": "string", "format": "mac-addr", "optional": 1},
            "virtio": {"alias": "macaddr", "keyAlias": "model", "optional": 1},
            "e1000": {"alias": "macaddr", "keyAlias": "model", "optional": 1},
            "bridge": {"type": "string", "format": "pve-bridge-id", "optional": 1},
            "firewall": {"type": "boolean", "optional": 1},
            "tag": {"type": "integer", "minimum": 1, "maximum": 4094, "optional": 1},
            "rate": {"type": "number", "minimum": 0, "optional": 1},
            "size": {"type": "string", "format": "disk-size", "optional": 1},
        }) {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn parses_key_alias_and_types() {
        let fmt = net_format();
        let v = parse(
            &fmt,
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=on,tag=5",
        )
        .unwrap();
        assert_eq!(
            Value::Object(v),
            json!({"model": "virtio", "macaddr": "BC:24:11:00:00:01", "bridge": "vmbr0",
                   "firewall": true, "tag": 5})
        );
        let v = parse(&fmt, "e1000,rate=1.5, ,firewall=FALSE").unwrap();
        assert_eq!(v["model"], json!("e1000"));
        assert_eq!(v["rate"], json!(1.5));
        assert_eq!(v["firewall"], json!(false));
    }

    #[test]
    fn parse_errors_as_upstream() {
        let fmt = net_format();
        assert_eq!(
            parse(&fmt, "virtio,e1000").unwrap_err(),
            "duplicate key in comma-separated list property: model"
        );
        assert_eq!(
            parse(&fmt, "virtio,foo=1").unwrap_err(),
            "invalid key in comma-separated list property: foo"
        );
        assert_eq!(
            parse(&fmt, "virtio,bridge=").unwrap_err(),
            "missing key in comma-separated list property"
        );
        assert_eq!(
            parse(&fmt, "virtio,tag=1,tag=2").unwrap_err(),
            "duplicate key in comma-separated list property: tag"
        );
        assert_eq!(
            parse(&fmt, "virtio=BC:24:11:00:00:01,e1000=BC:24:11:00:00:02").unwrap_err(),
            "key alias 'model' is already defined"
        );
        assert_eq!(
            parse(&fmt, "bridge=vmbr0").unwrap_err(),
            "format error\nmodel: property is missing and it is not optional"
        );
        assert_eq!(
            parse(&fmt, "virtio,tag=5000,firewall=2").unwrap_err(),
            "format error\nfirewall: type check ('boolean') failed - got '2'\n\
             tag: value must have a maximum value of 4094"
        );
        assert_eq!(
            parse(&fmt, "virtio,macaddr=01:00:00:00:00:00").unwrap_err(),
            "format error\nmacaddr: invalid format - value does not look like a valid unicast MAC address\n"
        );
        let no_default = match json!({"a": {"type": "string"}}) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        assert_eq!(
            parse(&no_default, "x").unwrap_err(),
            "value without key, but schema does not define a default key"
        );
    }

    #[test]
    fn prints_in_upstream_order() {
        let fmt = net_format();
        let values = json!({"tag": 5, "firewall": true, "model": "virtio",
                            "macaddr": "BC:24:11:00:00:01", "bridge": "vmbr0"});
        let text = print(&fmt, values.as_object().unwrap()).unwrap();
        assert_eq!(
            text,
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=5"
        );
        let values = json!({"model": "e1000", "size": 34359738368u64});
        assert_eq!(
            print(&fmt, values.as_object().unwrap()).unwrap(),
            "e1000,size=32G"
        );
        let values = json!({"model": "e1000", "bridge": "a,b"});
        assert!(print(&fmt, values.as_object().unwrap()).is_err());
    }

    #[test]
    fn round_trips() {
        let fmt = net_format();
        for text in [
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=5",
            "e1000,bridge=vmbr1",
            "virtio,rate=2.5,size=4G",
        ] {
            let parsed = parse(&fmt, text).unwrap();
            assert_eq!(print(&fmt, &parsed).unwrap(), text);
        }
    }
}
