//! A client of the node's local Unix socket: the CLI tools call the same
//! API as remote clients, authenticated as root@pam by peer credentials.

use crate::cli::CliError;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use std::path::Path;

/// Calls `verb path` with `params` and returns the answer's `data`.
pub fn call(
    root: &Path,
    verb: &str,
    path: &str,
    params: &Map<String, Value>,
) -> Result<Value, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Api(format!("cannot start runtime: {e}")))?;
    rt.block_on(call_async(root, verb, path, params))
}

async fn call_async(
    root: &Path,
    verb: &str,
    path: &str,
    params: &Map<String, Value>,
) -> Result<Value, CliError> {
    let socket = oxve_api::Node::socket_path(root);
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| {
            CliError::Api(format!(
                "cannot connect to the oxve daemon at {} ({e}) - is it running with --root {}?",
                socket.display(),
                root.display()
            ))
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| CliError::Api(format!("connection to the daemon failed: {e}")))?;
    tokio::spawn(conn);
    let encoded_path: String = path
        .split('/')
        .map(|seg| percent_encoding::utf8_percent_encode(seg, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/");
    let mut uri = format!("/api2/json{encoded_path}");
    let mut builder = http::Request::builder().header(http::header::HOST, "localhost");
    let body = if verb == "GET" || verb == "DELETE" {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            match v {
                Value::Array(list) => {
                    for item in list {
                        query.append_pair(k, &scalar(item));
                    }
                }
                other => {
                    query.append_pair(k, &scalar(other));
                }
            }
        }
        let q = query.finish();
        if !q.is_empty() {
            uri.push('?');
            uri.push_str(&q);
        }
        Vec::new()
    } else {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        serde_json::to_vec(params).unwrap_or_default()
    };
    let req = builder
        .method(verb)
        .uri(uri)
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| CliError::Api(format!("bad request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| CliError::Api(format!("request to the daemon failed: {e}")))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| CliError::Api(format!("reading the answer failed: {e}")))?
        .to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(answer.get("data").cloned().unwrap_or(Value::Null));
    }
    let message = answer
        .get("message")
        .and_then(Value::as_str)
        .map(|m| m.trim_end().to_string())
        .unwrap_or_else(|| status.to_string());
    let mut line = message;
    if let Some(Value::Object(errors)) = answer.get("errors") {
        let details: Vec<String> = errors
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("")))
            .collect();
        line = format!("{line} {}", details.join("; "));
    }
    Err(CliError::Api(line))
}

/// Characters left as they are in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'@')
    .remove(b':')
    .remove(b'!');

/// A parameter value as the form encoding carries it.
/// An API path from its template: `{node}` is the local node, the other
/// `{var}`s take (and remove) the parameters named in `vars`.
pub fn fill_path(
    template: &str,
    node: &str,
    vars: &[&str],
    params: &mut serde_json::Map<String, Value>,
) -> String {
    let mut path = template.replace("{node}", node);
    for key in vars {
        let var = format!("{{{key}}}");
        if path.contains(&var) {
            if let Some(v) = params.remove(*key) {
                path = path.replace(&var, &scalar(&v));
            }
        }
    }
    path
}

pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        other => other.to_string(),
    }
}

/// Prints a task's log as it grows and fails with its error, as upstream's
/// CLI runs a worker in the foreground. The final `TASK ...` line is not
/// printed: success is the exit code, an error the one line on stderr.
pub fn follow_task(root: &Path, upid: &str) -> Result<(), CliError> {
    let base = format!("/nodes/localhost/tasks/{upid}");
    let mut printed = 0u64;
    loop {
        let status = call(root, "GET", &format!("{base}/status"), &Map::new())?;
        let stopped = status.get("status").and_then(Value::as_str) == Some("stopped");
        let mut query = Map::new();
        query.insert("start".into(), Value::from(printed));
        query.insert("limit".into(), Value::from(0));
        let lines = call(root, "GET", &format!("{base}/log"), &query)?;
        for line in lines.as_array().into_iter().flatten() {
            let n = line.get("n").and_then(Value::as_u64).unwrap_or(0);
            let t = line.get("t").and_then(Value::as_str).unwrap_or("");
            if n <= printed || (n == 1 && t == "no content") {
                continue;
            }
            printed = n;
            if !(stopped && t.starts_with("TASK ")) {
                println!("{t}");
            }
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
        if stopped {
            let exit = status
                .get("exitstatus")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            return if exit == "OK" || exit.starts_with("WARNINGS") {
                Ok(())
            } else {
                Err(CliError::Api(exit.to_string()))
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
