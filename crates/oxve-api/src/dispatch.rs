//! The request pipeline for `/api2/{json,extjs}/...`: route from the schema,
//! authenticate, check CSRF, merge and validate parameters, check the
//! permission rule, run the handler, shape the answer.

use crate::auth::{self, Caller, Peer};
use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::node::Node;
use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, Method as HttpMethod, Request, Response, StatusCode};
use oxve_schema::api::{ApiSchema, Route, Verb};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Largest request body the API reads (uploads are streamed, see `upload.rs`).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Answer formats of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `/api2/json`: `{"data": ...}`, errors as HTTP status.
    Json,
    /// `/api2/extjs`: `{"success": 1, "data": ...}`, errors inside a 200.
    Extjs,
}

/// Serves one API request.
pub async fn handle(node: Arc<Node>, peer: Peer, mut req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let (format, rel) = if let Some(rest) = path.strip_prefix("/api2/json") {
        (Format::Json, rest.to_string())
    } else if let Some(rest) = path.strip_prefix("/api2/extjs") {
        (Format::Extjs, rest.to_string())
    } else {
        return plain(StatusCode::NOT_FOUND, "Not found");
    };
    let verb_name = req.method().as_str().to_string();
    let head_only = req.method() == HttpMethod::HEAD;
    // A WebSocket upgrade passes the whole pipeline first (websocket.rs).
    let upgrade = crate::websocket::Upgrade::take(&mut req);
    let mut result = run(node, peer, req, &verb_name, &rel).await;
    if let Some(upgrade) = upgrade {
        match upgrade.accept(result) {
            Ok(switching) => return switching,
            Err(r) => result = r,
        }
    }
    let mut resp = respond(format, result);
    if head_only {
        *resp.body_mut() = Body::empty();
    }
    resp
}

async fn run(
    node: Arc<Node>,
    peer: Peer,
    req: Request<Body>,
    verb_name: &str,
    rel: &str,
) -> ApiResult<Value> {
    let rel_decoded = decode_path(rel);
    let verb =
        Verb::parse(verb_name).ok_or_else(|| ApiError::not_implemented(verb_name, &rel_decoded))?;
    let schema = ApiSchema::embedded();
    if rel_decoded == "/" && verb == Verb::Get {
        let caller = auth::authenticate(&node, &peer, req.headers())?;
        auth::require_login(&caller)?;
        return Ok(root_index(schema));
    }
    let (method, vars) = match schema.route(verb, rel) {
        Route::Found(m, vars) => (m, vars),
        _ => return Err(ApiError::not_implemented(verb_name, &rel_decoded)),
    };
    let world = method.permissions.as_ref().and_then(|p| p.user.as_deref()) == Some("world");
    let (parts, body) = req.into_parts();
    // A stale cookie must not stop anyone from logging in again.
    let caller = match auth::authenticate(&node, &peer, &parts.headers) {
        Err(_) if world => Caller::Anonymous,
        other => other?,
    };
    if !world {
        auth::require_login(&caller)?;
        if verb != Verb::Get {
            auth::check_csrf(&node, &caller, &parts.headers)?;
        }
    }
    if let Caller::Token { .. } = caller {
        if !method.allowtoken {
            return Err(ApiError::forbidden("API tokens may not call this method"));
        }
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (raw, upload) = match crate::upload::boundary(content_type) {
        Some(boundary) => {
            let (fields, upload) =
                crate::upload::read(body, boundary, method.path.ends_with("/upload")).await?;
            let mut form = Vec::new();
            for (k, v) in &fields {
                form.push((k.as_str(), v.as_str().unwrap_or_default()));
            }
            let encoded = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            let headers = HeaderMap::new();
            let raw = collect_params(parts.uri.query(), &headers, &Bytes::from(encoded), &vars)?;
            (raw, upload)
        }
        None => {
            let body = axum::body::to_bytes(body, MAX_BODY)
                .await
                .map_err(|e| ApiError::bad_request(format!("unable to read request body: {e}")))?;
            (
                collect_params(parts.uri.query(), &parts.headers, &body, &vars)?,
                None,
            )
        }
    };
    let checked = check_call(&node, &caller, method, &raw).and_then(|params| {
        let handler = node.registry.get(method);
        handler
            .map(|h| (params, h))
            .ok_or_else(|| ApiError::not_implemented(verb_name, &rel_decoded))
    });
    let (params, handler) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            if let Some(upload) = upload {
                upload.discard().await;
            }
            return Err(e);
        }
    };
    handler(Ctx {
        node,
        caller,
        params,
        method,
        upload,
    })
    .await
}

/// Validation, the node check and the permission rule of one call.
fn check_call(
    node: &Node,
    caller: &Caller,
    method: &oxve_schema::api::Method,
    raw: &Map<String, Value>,
) -> ApiResult<Map<String, Value>> {
    let params = oxve_schema::validate::validate_params(&method.parameters, raw)
        .map_err(|e| ApiError::params(e.into_map()))?;
    // Calls for another node would be proxied there; this node is alone.
    if let Some(target) = method
        .proxyto
        .as_deref()
        .and_then(|p| params.get(p))
        .and_then(Value::as_str)
    {
        if target != node.name && target != "localhost" {
            return Err(ApiError::fail(format!("no such cluster node '{target}'")));
        }
    }
    crate::perm::check_method(node, caller, method, &params)?;
    Ok(params)
}

/// `GET /api2/json/`: the top-level directories, as upstream lists them.
fn root_index(schema: &ApiSchema) -> Value {
    let mut dirs: Vec<&str> = schema
        .methods()
        .iter()
        .filter_map(|m| m.path.trim_start_matches('/').split('/').next())
        .collect();
    dirs.sort_unstable();
    dirs.dedup();
    Value::Array(dirs.into_iter().map(|d| json!({ "subdir": d })).collect())
}

/// Merges query, body and path variables into one raw parameter map.
/// A key given twice with different values is refused, as upstream does.
fn collect_params(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
    vars: &[(String, String)],
) -> ApiResult<Map<String, Value>> {
    let mut params = Map::new();
    let mut errors = std::collections::BTreeMap::new();
    if let Some(q) = query {
        add_form(&mut params, q.as_bytes());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !body.is_empty() {
        let mut from_body = Map::new();
        if is_json {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => from_body = map,
                Ok(Value::Null) => {}
                Ok(_) => return Err(ApiError::bad_request("JSON body must be an object")),
                Err(e) => return Err(ApiError::bad_request(format!("invalid JSON body: {e}"))),
            }
        } else {
            add_form(&mut from_body, body);
        }
        for (k, v) in from_body {
            match params.get(&k) {
                Some(existing) if *existing != v => {
                    errors.insert(k, "duplicate parameter (query and body differ)".to_string());
                }
                _ => {
                    params.insert(k, v);
                }
            }
        }
    }
    for (k, v) in vars {
        match params.get(k) {
            Some(Value::String(s)) if s == v => {}
            Some(Value::Number(n)) if n.to_string() == *v => {}
            Some(_) => {
                errors.insert(
                    k.clone(),
                    "duplicate parameter (value in URI and body differ)".into(),
                );
            }
            None => {
                params.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    if errors.is_empty() {
        Ok(params)
    } else {
        Err(ApiError::params(errors))
    }
}

/// Adds `application/x-www-form-urlencoded` pairs; a repeated key becomes an array.
fn add_form(params: &mut Map<String, Value>, data: &[u8]) {
    for (k, v) in form_urlencoded::parse(data) {
        let v = Value::String(v.into_owned());
        match params.get_mut(k.as_ref()) {
            Some(Value::Array(list)) => list.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
            None => {
                params.insert(k.into_owned(), v);
            }
        }
    }
}

fn decode_path(rel: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(rel).decode_utf8_lossy();
    let trimmed = decoded.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Shapes a result as upstream does for the format.
pub fn respond(format: Format, result: ApiResult<Value>) -> Response<Body> {
    match (format, result) {
        (Format::Json, Ok(data)) => json_response(StatusCode::OK, None, &json!({ "data": data })),
        (Format::Extjs, Ok(data)) => {
            json_response(StatusCode::OK, None, &json!({ "success": 1, "data": data }))
        }
        (Format::Json, Err(e)) => {
            let mut body = json!({ "data": null, "message": format!("{}\n", e.message) });
            if let Some(errors) = &e.errors {
                body["errors"] = json!(errors);
            }
            json_response(e.status, Some(reason(&e.message)), &body)
        }
        (Format::Extjs, Err(e)) => {
            let mut body = json!({
                "success": 0,
                "data": null,
                "status": e.status.as_u16(),
                "message": format!("{}\n", e.message),
            });
            if let Some(errors) = &e.errors {
                body["errors"] = json!(errors);
            }
            json_response(StatusCode::OK, None, &body)
        }
    }
}

/// The HTTP reason phrase: the message's first line, as upstream sends it.
fn reason(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

fn json_response(status: StatusCode, reason: Option<String>, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("max-age=0"),
    );
    if let Some(r) = reason {
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(r.into_bytes()) {
            resp.extensions_mut().insert(phrase);
        }
    }
    resp
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp
}
