//! The generator that turns upstream's `apidata.json` into oxve's compact
//! schema (`data/api-schema.json`).
//!
//! The compact form keeps what the product needs — paths, methods, parameter
//! names, types, formats, constraints, defaults, return shapes and
//! permissions — and drops upstream's prose (descriptions, type texts,
//! titles). Each method is one line of the output so that a schema update
//! reads well in a diff. A test regenerates the file from `../shared` and
//! compares, so the committed file never drifts from its source.

use serde_json::{Map, Value};

/// Schema keys that only carry prose; everything else is kept.
const PROSE_KEYS: &[&str] = &[
    "description",
    "verbose_description",
    "format_description",
    "typetext",
    "title",
    "renderer",
];

/// Method-level keys kept in the compact form.
const METHOD_KEYS: &[&str] = &[
    "allowtoken",
    "protected",
    "proxyto",
    "download_allowed",
    "expose_credentials",
];

/// Where oxve accepts more than upstream (see docs/DEVIATIONS.md):
/// (path, verb, parameter, enum values added).
const ENUM_EXTENSIONS: &[(&str, &str, &str, &[&str])] = &[
    // Snippets can be uploaded and downloaded; upstream forces SSH for them.
    (
        "/nodes/{node}/storage/{storage}/upload",
        "POST",
        "content",
        &["snippets"],
    ),
    (
        "/nodes/{node}/storage/{storage}/download-url",
        "POST",
        "content",
        &["snippets"],
    ),
];

/// Parameters oxve adds to upstream's methods (see docs/DEVIATIONS.md):
/// (path, verb, parameter, its schema as JSON). They are validated like
/// upstream's and appear in the OpenAPI document.
const PARAM_EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    // Wait for IP: block until the guest agent reports a usable address.
    (
        "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
        "GET",
        "wait-for-ip",
        r#"{"type":"integer","minimum":0,"maximum":3600,"default":0,"optional":1}"#,
    ),
    (
        "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
        "GET",
        "family",
        r#"{"type":"string","enum":["inet","inet6"],"optional":1}"#,
    ),
    (
        "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
        "GET",
        "hwaddr",
        r#"{"type":"string","format":"mac-addr","optional":1}"#,
    ),
];

/// Generates the compact schema text from the text of `apidata.json`.
pub fn generate(apidata: &str) -> Result<String, serde_json::Error> {
    let tree: Value = serde_json::from_str(apidata)?;
    let mut methods = Vec::new();
    if let Value::Array(roots) = &tree {
        for node in roots {
            collect(node, &mut methods);
        }
    }
    let mut out = String::from("[\n");
    for (i, method) in methods.iter().enumerate() {
        out.push_str(&serde_json::to_string(method)?);
        out.push_str(if i + 1 < methods.len() { ",\n" } else { "\n" });
    }
    out.push_str("]\n");
    Ok(out)
}

fn collect(node: &Value, out: &mut Vec<Value>) {
    let path = node.get("path").and_then(Value::as_str).unwrap_or("");
    if let Some(Value::Object(info)) = node.get("info") {
        for verb in ["GET", "POST", "PUT", "DELETE"] {
            if let Some(Value::Object(m)) = info.get(verb) {
                out.push(compact_method(path, verb, m));
            }
        }
    }
    if let Some(Value::Array(children)) = node.get("children") {
        for child in children {
            collect(child, out);
        }
    }
}

fn compact_method(path: &str, verb: &str, m: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("path".into(), Value::String(path.into()));
    out.insert("method".into(), Value::String(verb.into()));
    if let Some(name) = m.get("name") {
        out.insert("name".into(), name.clone());
    }
    for key in METHOD_KEYS {
        if let Some(v) = m.get(*key) {
            out.insert((*key).into(), v.clone());
        }
    }
    if let Some(Value::Object(perms)) = m.get("permissions") {
        // `description` here is prose; `check` and `user` are the rule.
        let rule: Map<String, Value> = perms
            .iter()
            .filter(|(k, _)| k.as_str() != "description")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert("permissions".into(), Value::Object(rule));
    }
    let mut parameters = m.get("parameters").map(strip_schema).unwrap_or(Value::Null);
    for (p, v, param, extra) in ENUM_EXTENSIONS {
        if *p == path && *v == verb {
            if let Some(Value::Array(values)) =
                parameters.pointer_mut(&format!("/properties/{param}/enum"))
            {
                values.extend(extra.iter().map(|e| Value::String((*e).into())));
            }
        }
    }
    for (p, v, param, schema) in PARAM_EXTENSIONS {
        if *p == path && *v == verb {
            if let (Some(Value::Object(props)), Ok(schema)) = (
                parameters.pointer_mut("/properties"),
                serde_json::from_str::<Value>(schema),
            ) {
                props.insert((*param).into(), schema);
            }
        }
    }
    out.insert("parameters".into(), parameters);
    out.insert(
        "returns".into(),
        m.get("returns").map(strip_schema).unwrap_or(Value::Null),
    );
    Value::Object(out)
}

/// Strips prose from one schema node, recursing only where the structure
/// holds further schemas — so a property that happens to be *named*
/// `description` survives.
fn strip_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        if PROSE_KEYS.contains(&key.as_str()) {
            continue;
        }
        let kept = match (key.as_str(), value) {
            ("properties", Value::Object(props)) | ("format", Value::Object(props)) => {
                Value::Object(
                    props
                        .iter()
                        .map(|(k, v)| (k.clone(), strip_schema(v)))
                        .collect(),
                )
            }
            ("items", _) | ("additionalProperties", Value::Object(_)) => strip_schema(value),
            ("oneOf", Value::Array(list)) => Value::Array(list.iter().map(strip_schema).collect()),
            _ => value.clone(),
        };
        out.insert(key.clone(), kept);
    }
    Value::Object(out)
}

/// Where upstream's shared data lives: `$OXVE_SHARED`, else `../shared`
/// beside the workspace root.
pub fn shared_dir() -> std::path::PathBuf {
    match std::env::var_os("OXVE_SHARED") {
        Some(dir) => dir.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_properties_named_like_prose_keys() {
        let input = r#"[{"path":"/x","info":{"GET":{"name":"x","description":"d",
            "parameters":{"additionalProperties":0,"properties":{
              "description":{"type":"string","description":"prose","optional":1}}},
            "returns":{"type":"null"}}}}]"#;
        let out = generate(input).unwrap();
        assert!(
            out.contains(r#""description":{"type":"string","optional":1}"#),
            "{out}"
        );
        assert!(!out.contains("prose"));
    }
}
