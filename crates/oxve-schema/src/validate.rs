//! Parameter validation of an API request against a method's parameter
//! schema, as upstream's `PVE::JSONSchema::validate` does after the HTTP
//! server and `PVE::RESTHandler::handle` have prepared the parameters.
//!
//! Input comes from query strings and form bodies (`Value::String`, a
//! repeated key as `Value::Array` of strings) or from JSON bodies (any JSON
//! type). The output is normalized: integers, numbers and booleans become
//! JSON numbers and booleans, defaults are *not* filled in.
//!
//! Error messages are upstream's texts, byte for byte, including the
//! trailing newline upstream keeps after `invalid format - ...` messages.
//!
//! Deliberate deviations from upstream:
//! - booleans also accept `true/false/yes/no/on/off` (case-insensitive),
//!   not only `1`/`0`;
//! - `pattern` is anchored around the whole pattern (`^(?:pattern)$`), so
//!   an alternation cannot match only a prefix or suffix;
//! - Perl's `$` also matches before a final newline; here it does not.

use crate::{format, propstring};
use regex::{Regex, RegexBuilder};
use serde_json::{Map, Number, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

/// Parameter errors, keyed by parameter name (nested paths as upstream
/// spells them: `net0`, `vms[1]`). The HTTP layer answers them as
/// `{"data":null,"errors":{...}}` with reason `Parameter verification failed.`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamErrors(pub BTreeMap<String, String>);

impl ParamErrors {
    /// The errors as a plain map.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }

    /// The error recorded for `param`, if any.
    pub fn get(&self, param: &str) -> Option<&str> {
        self.0.get(param).map(String::as_str)
    }

    /// Records an error; a second error for the same path is appended as
    /// upstream's `add_error` does (with a literal `\n`, two characters).
    pub fn add(&mut self, path: &str, msg: impl Into<String>) {
        let path = if path.is_empty() { "_root" } else { path };
        let msg = msg.into();
        self.0
            .entry(path.to_string())
            .and_modify(|old| {
                old.push_str("\\n");
                old.push_str(&msg);
            })
            .or_insert(msg);
    }

    /// Whether no error was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::error::Error for ParamErrors {}

impl fmt::Display for ParamErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Parameter verification failed.")?;
        for (k, v) in &self.0 {
            write!(f, "\n{k}: {}", v.trim_end())?;
        }
        Ok(())
    }
}

/// Validates `input` against the object schema `schema` (the `parameters`
/// of a method in apidata.json) and returns the normalized parameters.
///
/// ```
/// use serde_json::{json, Map, Value};
/// let schema = json!({"additionalProperties": 0, "properties": {
///     "vmid": {"type": "integer", "format": "pve-vmid", "minimum": 100},
///     "start": {"type": "boolean", "optional": 1}}});
/// let input: Map<String, Value> =
///     serde_json::from_value(json!({"vmid": "100", "start": "1"})).unwrap();
/// let out = oxve_schema::validate::validate_params(&schema, &input).unwrap();
/// assert_eq!(Value::Object(out), json!({"vmid": 100, "start": true}));
/// ```
pub fn validate_params(
    schema: &Value,
    input: &Map<String, Value>,
) -> Result<Map<String, Value>, ParamErrors> {
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let props = expand_indexed(props, input);
    let additional = schema.get("additionalProperties");
    let input = normalize_legacy(&props, input);
    let mut errors = ParamErrors::default();
    let out = check_object("", &props, &input, additional, &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// How many instances upstream allows of each indexed property that
/// apidata.json documents once as `<name>[n]` (qemu-server's and
/// pve-container's `MAX_*` constants, corosync's 8 links, 5 ACME domains).
pub(crate) const INDEXED_LIMITS: &[(&str, u32)] = &[
    ("acmedomain", 5),
    ("dev", 256),
    ("hostpci", 16),
    ("ide", 4),
    ("ipconfig", 32),
    ("link", 8),
    ("mp", 256),
    ("net", 32),
    ("numa", 8),
    ("parallel", 3),
    ("sata", 6),
    ("scsi", 31),
    ("serial", 4),
    ("unused", 256),
    ("usb", 14),
    ("virtio", 16),
    ("virtiofs", 10),
];

/// Replaces `<name>[n]` entries by the concrete keys the input uses
/// (`net0`, `scsi12`) within upstream's index limits; other indices stay
/// unknown and are refused like any undefined parameter.
fn expand_indexed(props: &Map<String, Value>, input: &Map<String, Value>) -> Map<String, Value> {
    if !props.keys().any(|k| k.ends_with("[n]")) {
        return props.clone();
    }
    let mut out: Map<String, Value> = props
        .iter()
        .filter(|(k, _)| !k.ends_with("[n]"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for key in input.keys() {
        if props.contains_key(key) {
            continue;
        }
        let digits_at = key.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (name, index) = key.split_at(digits_at);
        let Ok(index) = index.parse::<u32>() else {
            continue;
        };
        if index.to_string() != key[digits_at..] {
            continue; // no leading zeros: `net01` is not `net1`
        }
        let limit = INDEXED_LIMITS.iter().find(|(n, _)| *n == name);
        if let (Some(schema), Some((_, max))) = (props.get(&format!("{name}[n]")), limit) {
            if index < *max {
                out.insert(key.clone(), schema.clone());
            }
        }
    }
    out
}

/// Upstream's `$normalize_legacy_param_formats`: a repeated key for a
/// `-list` string is joined with commas, a single value for an array
/// parameter becomes a one-element array. Falsy values are left alone.
fn normalize_legacy(props: &Map<String, Value>, input: &Map<String, Value>) -> Map<String, Value> {
    let mut out = input.clone();
    for (key, value) in out.iter_mut() {
        let Some(schema) = props.get(key) else {
            continue;
        };
        if !is_truthy(value) {
            continue;
        }
        let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
        let is_list_format = schema
            .get("format")
            .and_then(Value::as_str)
            .is_some_and(|f| f.ends_with("-list"));
        match value {
            Value::Array(items) if ty == "string" && is_list_format => {
                let joined: Vec<String> = items.iter().map(scalar_text).collect();
                *value = Value::String(joined.join(","));
            }
            Value::Array(_) | Value::Object(_) => {}
            _ if ty == "array" => {
                let scalar = value.take();
                *value = Value::Array(vec![scalar]);
            }
            _ => {}
        }
    }
    out
}

/// Perl truthiness of a decoded value: undef, `""` and `"0"` are false.
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !(s.is_empty() || s == "0"),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// The text Perl would see for a scalar JSON value.
pub(crate) fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "1" } else { "" }.to_string(),
        Value::Number(n) => perl_number(n),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn perl_number(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// Upstream's `check_object`: checks every schema property, then refuses
/// unknown keys unless `additional` allows them. Returns the normalized
/// values of the keys that passed.
pub(crate) fn check_object(
    path: &str,
    props: &Map<String, Value>,
    input: &Map<String, Value>,
    additional: Option<&Value>,
    errors: &mut ParamErrors,
) -> Map<String, Value> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    // Aliased keys are remapped so that checks see canonical names.
    let mut value = input.clone();
    for (k, sub) in props {
        let Some(alias) = sub.get("alias").and_then(Value::as_str) else {
            continue;
        };
        if let Some(v) = value.shift_remove(k) {
            if value.get(alias).is_some_and(|a| !a.is_null()) {
                errors.add(
                    &join(k),
                    format!("cannot set both '{k}' and its alias target '{alias}'"),
                );
            } else {
                value.insert(alias.to_string(), v);
            }
        }
    }

    let mut out = Map::new();
    for (k, sub) in props {
        let instance_type = sub
            .get("type-property")
            .and_then(Value::as_str)
            .and_then(|tp| value.get(tp))
            .map(scalar_text);
        if let Some(v) = check_prop(
            value.get(k),
            sub,
            &join(k),
            errors,
            instance_type.as_deref(),
        ) {
            out.insert(k.clone(), v);
        }
    }

    for (k, v) in &value {
        if let Some(sub) = props.get(k) {
            if let Some(req) = sub.get("requires").and_then(Value::as_str) {
                if value.get(req).is_none_or(Value::is_null) {
                    errors.add(
                        &join(req),
                        format!("missing property required by '{}'", join(k)),
                    );
                }
            }
            if !one_of_unmatched(sub, &value) {
                continue;
            }
        }
        match additional {
            Some(schema @ Value::Object(_)) => {
                if let Some(v) = check_prop(Some(v), schema, &join(k), errors, None) {
                    out.insert(k.clone(), v);
                }
            }
            Some(flag) if !is_truthy(flag) => errors.add(
                &join(k),
                "property is not defined in schema and the schema does not allow additional properties",
            ),
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// A `oneOf` property whose alternatives do not apply to the object's type
/// counts as unknown, as upstream's `check_object` treats it.
fn one_of_unmatched(sub: &Value, value: &Map<String, Value>) -> bool {
    let Some(alternatives) = sub.get("oneOf").and_then(Value::as_array) else {
        return false;
    };
    let instance_type = sub
        .get("type-property")
        .and_then(Value::as_str)
        .and_then(|tp| value.get(tp))
        .map(scalar_text);
    !alternatives
        .iter()
        .any(|alt| match alt.get("instance-types") {
            Some(Value::Array(types)) => instance_type
                .as_deref()
                .is_some_and(|t| types.iter().any(|x| x.as_str() == Some(t))),
            _ => true,
        })
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).is_some_and(is_truthy)
}

/// Upstream's `check_prop` for one value; returns the normalized value if
/// it passed (and was present).
pub(crate) fn check_prop(
    value: Option<&Value>,
    schema: &Value,
    path: &str,
    errors: &mut ParamErrors,
    instance_type: Option<&str>,
) -> Option<Value> {
    let mut optional_for_type = false;
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        if schema.get("type-property").is_some() {
            optional_for_type = true;
            if let Some(t) = instance_type {
                for alt in alternatives {
                    let types = alt.get("instance-types").and_then(Value::as_array);
                    if types.is_some_and(|ts| ts.iter().any(|x| x.as_str() == Some(t))) {
                        optional_for_type = flag(alt, "optional");
                        return match value {
                            Some(v) if !v.is_null() => check_prop(Some(v), alt, path, errors, None),
                            _ => {
                                if !optional_for_type {
                                    errors.add(path, "property is missing and it is not optional");
                                }
                                None
                            }
                        };
                    }
                }
            }
        }
    } else if let Some(t) = instance_type {
        let types = schema.get("instance-types").and_then(Value::as_array);
        if !types.is_some_and(|ts| ts.iter().any(|x| x.as_str() == Some(t))) {
            optional_for_type = true;
        }
    }
    if schema.get("alias").is_some() {
        return None;
    }
    let value = match value {
        Some(v) if !v.is_null() => v,
        _ => {
            let ty = schema.get("type").and_then(Value::as_str);
            if ty != Some("null")
                && !flag(schema, "optional")
                && !flag(schema, "group")
                && !optional_for_type
            {
                errors.add(path, "property is missing and it is not optional");
            }
            return None;
        }
    };
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let normalized = check_type(path, ty, value, errors)?;

    match &normalized {
        Value::Array(items) => {
            let Some(item_schema) = schema.get("items") else {
                return Some(normalized);
            };
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                match check_prop(
                    Some(item),
                    item_schema,
                    &format!("{path}[{i}]"),
                    errors,
                    None,
                ) {
                    Some(v) => out.push(v),
                    None => ok = false,
                }
            }
            ok.then_some(Value::Array(out))
        }
        Value::Object(map) => {
            if schema.get("properties").is_none() && schema.get("additionalProperties").is_none() {
                return Some(normalized);
            }
            let empty = Map::new();
            let props = schema
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            let before = errors.0.len();
            let out = check_object(path, props, map, schema.get("additionalProperties"), errors);
            (errors.0.len() == before).then_some(Value::Object(out))
        }
        scalar => check_scalar(path, schema, &scalar_text(value), errors).then(|| scalar.clone()),
    }
}

/// Type check and normalization; `None` (with an error recorded) on
/// failure. Mirrors upstream's `check_type` messages.
fn check_type(path: &str, ty: &str, value: &Value, errors: &mut ParamErrors) -> Option<Value> {
    let fail = |errors: &mut ParamErrors, got: &str| {
        errors.add(path, format!("type check ('{ty}') failed{got}"));
        None
    };
    let perl_ref = match value {
        Value::Array(_) => Some("ARRAY"),
        Value::Object(_) => Some("HASH"),
        Value::Bool(_) if ty != "boolean" => Some("JSON::PP::Boolean"),
        _ => None,
    };
    match ty {
        "array" => match value {
            Value::Array(_) => Some(value.clone()),
            _ => fail(errors, ""),
        },
        "object" => match value {
            Value::Object(_) => Some(value.clone()),
            _ => fail(errors, ""),
        },
        "any" | "" => Some(value.clone()),
        _ if perl_ref.is_some() => fail(errors, &format!(" - got {}", perl_ref.unwrap_or(""))),
        "boolean" => match value {
            Value::Bool(_) => Some(value.clone()),
            _ => {
                let text = scalar_text(value);
                match parse_bool_param(&text) {
                    Some(b) => Some(Value::Bool(b)),
                    None => fail(errors, &format!(" - got '{text}'")),
                }
            }
        },
        "integer" => {
            let text = scalar_text(value);
            match parse_integer(&text) {
                Some(n) => Some(n),
                None => fail(errors, &format!(" - got '{text}'")),
            }
        }
        "number" => {
            let text = scalar_text(value);
            match parse_number(&text) {
                Some(n) => Some(n),
                None => fail(errors, &format!(" - got '{text}'")),
            }
        }
        "string" => Some(match value {
            Value::String(_) => value.clone(),
            other => Value::String(scalar_text(other)),
        }),
        // Upstream does not check unknown type names.
        _ => Some(value.clone()),
    }
}

/// Booleans: upstream's `1`/`0`, plus (deviation) `true/false/yes/no/on/off`.
fn parse_bool_param(text: &str) -> Option<bool> {
    format::parse_boolean(text)
}

/// Upstream's `is_integer`: `^[+-]?\d+$`.
pub(crate) fn parse_integer(text: &str) -> Option<Value> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let plain = text.strip_prefix('+').unwrap_or(text);
    if let Ok(n) = plain.parse::<i64>() {
        return Some(Value::from(n));
    }
    if let Ok(n) = plain.parse::<u64>() {
        return Some(Value::from(n));
    }
    plain
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

/// Upstream's `is_number`: `^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$`.
pub(crate) fn parse_number(text: &str) -> Option<Value> {
    static NUMBER: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"^[+-]?(?:\d+\.\d+|\d+\.|\.\d+|\d+)(?:[eE][+-]?\d+)?$").ok());
    if !NUMBER.as_ref().is_some_and(|r| r.is_match(text)) {
        return None;
    }
    if let Some(int) = parse_integer(text) {
        return Some(int);
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

/// Checks of a scalar's text: format, pattern, lengths, range, enum — in
/// upstream's order, stopping at the first failure (enum excepted).
fn check_scalar(path: &str, schema: &Value, text: &str, errors: &mut ParamErrors) -> bool {
    match schema.get("format") {
        Some(Value::String(name)) => {
            if let Err(e) = format::check_format(name, text) {
                errors.add(path, format!("invalid format - {e}\n"));
                return false;
            }
        }
        Some(Value::Object(sub)) => {
            if let Err(e) = propstring::parse(sub, text) {
                errors.add(path, format!("invalid format - {e}\n"));
                return false;
            }
        }
        _ => {}
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if !pattern_matches(pattern, text) {
            errors.add(path, "value does not match the regex pattern");
            return false;
        }
    }
    let len = text.chars().count();
    if let Some(max) = schema.get("maxLength").and_then(as_limit) {
        if len as f64 > max.0 {
            errors.add(path, format!("value may only be {} characters long", max.1));
            return false;
        }
    }
    if let Some(min) = schema.get("minLength").and_then(as_limit) {
        if (len as f64) < min.0 {
            errors.add(
                path,
                format!("value must be at least {} characters long", min.1),
            );
            return false;
        }
    }
    if let Some(n) = parse_number(text).and_then(|v| v.as_f64()) {
        if let Some(max) = schema.get("maximum").and_then(as_limit) {
            if n > max.0 {
                errors.add(
                    path,
                    format!("value must have a maximum value of {}", max.1),
                );
                return false;
            }
        }
        if let Some(min) = schema.get("minimum").and_then(as_limit) {
            if n < min.0 {
                errors.add(
                    path,
                    format!("value must have a minimum value of {}", min.1),
                );
                return false;
            }
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let texts: Vec<String> = values.iter().map(scalar_text).collect();
        if !texts.iter().any(|t| t == text) {
            errors.add(
                path,
                format!(
                    "value '{text}' does not have a value in the enumeration '{}'",
                    texts.join(", ")
                ),
            );
            return false;
        }
    }
    true
}

/// A numeric schema limit and its text as Perl prints it (schemas give
/// limits as numbers or numeric strings).
fn as_limit(v: &Value) -> Option<(f64, String)> {
    match v {
        Value::Number(n) => Some((n.as_f64()?, perl_number(n))),
        Value::String(s) => Some((s.trim().parse().ok()?, s.clone())),
        _ => None,
    }
}

/// Whether `text` matches the schema `pattern` as a whole.
pub(crate) fn pattern_matches(pattern: &str, text: &str) -> bool {
    compiled_pattern(pattern).is_some_and(|r| r.is_match(text))
}

/// Compiles (and caches) a schema `pattern` written in Perl syntax,
/// anchored to match a whole value; `None` if it cannot be compiled.
pub fn compiled_pattern(pattern: &str) -> Option<Arc<Regex>> {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<Arc<Regex>>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| {
            // Unicode classes under bounded repetition (`[\w\s]{0,256}`)
            // exceed the default size limit.
            RegexBuilder::new(&format!("^(?:{})$", perl_to_rust_regex(pattern)))
                .size_limit(1 << 28)
                .build()
                .ok()
                .map(Arc::new)
        })
        .clone()
}

/// Rewrites the Perl-only parts of upstream's patterns: stringified `qr//`
/// groups (`(?^:...)`, `(?^i:...)`), atomic groups `(?>...)`, `{,n}`
/// quantifiers and `\0`.
pub(crate) fn perl_to_rust_regex(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('0') => out.push_str(r"\x00"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '(' if chars.peek() == Some(&'?') => {
                out.push_str("(?");
                chars.next();
                match chars.peek() {
                    Some('^') => {
                        chars.next();
                    }
                    // An atomic group: a plain group accepts the same
                    // texts in upstream's patterns (`runningcpu`).
                    Some('>') => {
                        chars.next();
                        out.push(':');
                    }
                    _ => {}
                }
            }
            '{' if chars.peek() == Some(&',') => out.push_str("{0"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn schema() -> Value {
        json!({"additionalProperties": 0, "properties": {
            "vmid": {"type": "integer", "format": "pve-vmid", "minimum": 100, "maximum": 999999999},
            "name": {"type": "string", "optional": 1, "maxLength": 5, "minLength": 2},
            "start": {"type": "boolean", "optional": 1},
            "ratio": {"type": "number", "optional": 1, "minimum": 0.5},
            "mode": {"type": "string", "optional": 1, "enum": ["a", "b"]},
            "tag": {"type": "string", "optional": 1, "pattern": "[a-z]+|x"},
            "ids": {"type": "string", "optional": 1, "format": "pve-vmid-list"},
            "del": {"type": "array", "optional": 1, "items": {"type": "string", "format": "pve-configid"}},
            "force": {"type": "boolean", "optional": 1, "requires": "del"},
        }})
    }

    fn errs(input: Value) -> BTreeMap<String, String> {
        validate_params(&schema(), &params(input))
            .err()
            .map(ParamErrors::into_map)
            .unwrap_or_default()
    }

    #[test]
    fn normalizes_types() {
        let out = validate_params(
            &schema(),
            &params(json!({"vmid": "100", "start": "yes", "ratio": "1.5", "name": "ab"})),
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"vmid": 100, "start": true, "ratio": 1.5, "name": "ab"})
        );
        let out =
            validate_params(&schema(), &params(json!({"vmid": 100, "start": false}))).unwrap();
        assert_eq!(out["start"], json!(false));
    }

    #[test]
    fn upstream_messages() {
        let e = errs(json!({}));
        assert_eq!(e["vmid"], "property is missing and it is not optional");
        let e = errs(json!({"vmid": "100", "bogus": "1"}));
        assert_eq!(
            e["bogus"],
            "property is not defined in schema and the schema does not allow additional properties"
        );
        let e = errs(json!({"vmid": "abc"}));
        assert_eq!(e["vmid"], "type check ('integer') failed - got 'abc'");
        let e = errs(json!({"vmid": "99"}));
        assert_eq!(
            e["vmid"],
            "invalid format - value does not look like a valid VM ID\n"
        );
        let e = errs(json!({"vmid": "100", "name": "toolong"}));
        assert_eq!(e["name"], "value may only be 5 characters long");
        let e = errs(json!({"vmid": "100", "name": "a"}));
        assert_eq!(e["name"], "value must be at least 2 characters long");
        let e = errs(json!({"vmid": "100", "ratio": "0.1"}));
        assert_eq!(e["ratio"], "value must have a minimum value of 0.5");
        let e = errs(json!({"vmid": "100", "mode": "c"}));
        assert_eq!(
            e["mode"],
            "value 'c' does not have a value in the enumeration 'a, b'"
        );
        let e = errs(json!({"vmid": "100", "tag": "ab1"}));
        assert_eq!(e["tag"], "value does not match the regex pattern");
        let e = errs(json!({"vmid": "100", "start": "maybe"}));
        assert_eq!(e["start"], "type check ('boolean') failed - got 'maybe'");
        let e = errs(json!({"vmid": "100", "force": "1"}));
        assert_eq!(e["del"], "missing property required by 'force'");
        let e = errs(json!({"vmid": ["100", "101"]}));
        assert_eq!(e["vmid"], "type check ('integer') failed - got ARRAY");
        let e = errs(json!({"vmid": true}));
        assert_eq!(
            e["vmid"],
            "type check ('integer') failed - got JSON::PP::Boolean"
        );
    }

    #[test]
    fn lists_and_arrays() {
        let out = validate_params(
            &schema(),
            &params(json!({"vmid": "100", "ids": ["100", "101"], "del": "net0"})),
        )
        .unwrap();
        assert_eq!(out["ids"], json!("100,101"));
        assert_eq!(out["del"], json!(["net0"]));
        let e = errs(json!({"vmid": "100", "ids": "100;1"}));
        assert_eq!(
            e["ids"],
            "invalid format - value does not look like a valid VM ID\n"
        );
        let e = errs(json!({"vmid": "100", "del": ["net0", "0bad"]}));
        assert_eq!(
            e["del[1]"],
            "invalid format - invalid configuration ID '0bad'\n"
        );
    }

    #[test]
    fn null_counts_as_missing() {
        let e = errs(json!({"vmid": null}));
        assert_eq!(e["vmid"], "property is missing and it is not optional");
        let out = validate_params(&schema(), &params(json!({"vmid": 100, "name": null}))).unwrap();
        assert!(!out.contains_key("name"));
    }

    #[test]
    fn perl_patterns_translate() {
        assert_eq!(perl_to_rust_regex(r"(?^i:[a-z]+)"), "(?i:[a-z]+)");
        assert_eq!(perl_to_rust_regex(r"(?^:\d+)"), r"(?:\d+)");
        assert_eq!(perl_to_rust_regex(r"(?>a|b)+"), r"(?:a|b)+");
        assert_eq!(perl_to_rust_regex(r"[\w]{,8}"), r"[\w]{0,8}");
        assert!(pattern_matches(r"\w+=[^\x00]*(?:\0\w+=x)*", "a=b\0c=x"));
        assert!(pattern_matches(r"(?^i:[\(\)-_.\w\d\s]{0,256})", "a b_c"));
    }

    #[test]
    fn property_string_format() {
        let schema = json!({"properties": {"x": {"type": "string", "format": {
            "order": {"type": "integer", "default_key": 1, "optional": 1},
            "up": {"type": "integer", "optional": 1}}}}});
        assert!(validate_params(&schema, &params(json!({"x": "1,up=3"}))).is_ok());
        let e = validate_params(&schema, &params(json!({"x": "up=a"}))).unwrap_err();
        assert_eq!(
            e.get("x"),
            Some("invalid format - format error\nup: type check ('integer') failed - got 'a'\n")
        );
    }
}
