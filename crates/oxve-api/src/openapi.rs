//! The OpenAPI 3.1 document of the whole API, generated from the same schema
//! that routes and validates requests.

use oxve_schema::api::{ApiSchema, Method, Verb};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// The document as text, built once.
pub fn document_text() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| document().to_string())
}

/// Builds the OpenAPI document.
pub fn document() -> Value {
    let schema = ApiSchema::embedded();
    let registry = crate::handlers::Registry::build();
    let mut paths = Map::new();
    for m in schema.methods() {
        let entry = paths
            .entry(format!("/api2/json{}", m.path))
            .or_insert_with(|| json!({}));
        entry[m.method.as_str().to_lowercase()] = operation(m, registry.is_implemented(m));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "oxve API (Proxmox VE compatible)",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "servers": [{ "url": "https://localhost:8006" }],
        "components": {
            "securitySchemes": {
                "ticket": { "type": "apiKey", "in": "cookie", "name": "PVEAuthCookie" },
                "csrf": { "type": "apiKey", "in": "header", "name": "CSRFPreventionToken" },
                "token": { "type": "apiKey", "in": "header", "name": "Authorization",
                           "description": "PVEAPIToken=USER@REALM!TOKENID=SECRET" },
            }
        },
        "paths": paths,
    })
}

fn operation(m: &Method, implemented: bool) -> Value {
    let path_vars: Vec<&str> = m
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect();
    let props = m.properties().cloned().unwrap_or_default();
    let mut parameters = Vec::new();
    let mut body_props = Map::new();
    let mut body_required = Vec::new();
    for (name, p) in &props {
        let required = !is_optional(p);
        if path_vars.contains(&name.as_str()) {
            parameters
                .push(json!({"name": name, "in": "path", "required": true, "schema": convert(p)}));
        } else if matches!(m.method, Verb::Get | Verb::Delete) {
            parameters.push(
                json!({"name": name, "in": "query", "required": required, "schema": convert(p)}),
            );
        } else {
            body_props.insert(name.clone(), convert(p));
            if required {
                body_required.push(Value::String(name.clone()));
            }
        }
    }
    let mut op = json!({
        "operationId": format!("{}_{}", m.method.as_str().to_lowercase(), m.path.trim_start_matches('/').replace(['/', '{', '}', '-'], "_")),
        "x-pve-name": m.name,
        "x-implemented": implemented,
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "success",
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"data": convert(&m.returns)}
                }}}
            },
            "400": {"description": "Parameter verification failed."},
            "401": {"description": "authentication failure"},
            "403": {"description": "Permission check failed"},
            "501": {"description": "Method not implemented"}
        }
    });
    if let Some(perms) = &m.permissions {
        op["x-permissions"] = json!({"check": perms.check, "user": perms.user});
    }
    if !body_props.is_empty() {
        let body = json!({"type": "object", "properties": body_props, "required": body_required});
        op["requestBody"] = json!({
            "content": {
                "application/json": {"schema": body},
                "application/x-www-form-urlencoded": {"schema": body},
            }
        });
    }
    op
}

fn is_optional(p: &Value) -> bool {
    match p.get("optional") {
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(Value::Bool(b)) => *b,
        _ => false,
    }
}

/// Converts one upstream schema node into JSON Schema 2020-12 (OpenAPI 3.1).
fn convert(s: &Value) -> Value {
    let Value::Object(map) = s else {
        return json!({});
    };
    let mut out = Map::new();
    for (k, v) in map {
        match k.as_str() {
            "type" => {
                let t = v.as_str().unwrap_or("string");
                let t = match t {
                    "any" => None,
                    "null" => Some("null"),
                    other => Some(other),
                };
                if let Some(t) = t {
                    out.insert("type".into(), json!(t));
                }
            }
            "enum" | "minimum" | "maximum" | "minLength" | "maxLength" | "pattern" | "default" => {
                out.insert(k.clone(), v.clone());
            }
            "format" => match v {
                Value::String(f) => {
                    out.insert("format".into(), json!(f));
                }
                Value::Object(sub) => {
                    let sub: Map<String, Value> =
                        sub.iter().map(|(k, v)| (k.clone(), convert(v))).collect();
                    out.insert("x-property-string".into(), Value::Object(sub));
                }
                _ => {}
            },
            "items" => {
                out.insert("items".into(), convert(v));
            }
            "properties" => {
                let mut props = Map::new();
                let mut required = Vec::new();
                for (name, p) in v.as_object().into_iter().flatten() {
                    if !is_optional(p) {
                        required.push(json!(name));
                    }
                    props.insert(name.clone(), convert(p));
                }
                out.insert("properties".into(), Value::Object(props));
                if !required.is_empty() {
                    out.insert("required".into(), Value::Array(required));
                }
            }
            _ => {}
        }
    }
    Value::Object(out)
}
