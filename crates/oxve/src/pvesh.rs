//! `pvesh`: any API path from the command line, generic over the schema.

use crate::cli::{self, CliError};
use crate::client;
use crate::output::{self, OutputOptions};
use oxve_schema::api::{ApiSchema, Route, Verb};
use serde_json::Value;
use std::path::Path;

const USAGE: &str =
    "USAGE: pvesh <get|set|create|delete|ls|usage|help> <api_path> [OPTIONS] [FORMAT_OPTIONS]

  get     GET the path          set     PUT to the path
  create  POST to the path      delete  DELETE the path
  ls      list child objects    usage   print the method's parameters

  Options are the method's parameters as --name value.
  FORMAT_OPTIONS: --output-format text|json|json-pretty|yaml, --noborder, --noheader";

pub fn main(root: &Path, args: Vec<String>) -> Result<(), CliError> {
    let Some(cmd) = args.first().cloned() else {
        return Err(CliError::Usage(USAGE.into()));
    };
    if matches!(cmd.as_str(), "help" | "--help" | "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let verb = match cmd.as_str() {
        "get" | "ls" => Verb::Get,
        "set" => Verb::Put,
        "create" => Verb::Post,
        "delete" => Verb::Delete,
        "usage" => return usage(&args[1..]),
        other => {
            return Err(CliError::Usage(format!(
                "unknown command '{other}'\n{USAGE}"
            )))
        }
    };
    let rest = &args[1..];
    let path = rest
        .iter()
        .find(|a| a.starts_with('/') || !a.starts_with('-'))
        .cloned()
        .ok_or_else(|| CliError::Usage(format!("pvesh {cmd}: missing api_path\n{USAGE}")))?;
    let path = normalize(&path);
    let method = match ApiSchema::embedded().route(verb, &path) {
        Route::Found(m, _) => Some(m),
        Route::NoSuchMethod if cmd != "ls" => {
            return Err(CliError::Usage(format!(
                "no '{}' handler for '{path}'",
                cmd
            )))
        }
        // The API root is an index of its own, outside the schema.
        Route::NoSuchPath if path == "/" && verb == Verb::Get => None,
        Route::NoSuchPath => return Err(CliError::Usage(format!("no such path '{path}'"))),
        _ => None,
    };
    if cli::wants_help(rest) {
        if let Some(m) = method {
            print!(
                "USAGE: pvesh {cmd} {} [OPTIONS]\n{}",
                m.path,
                cli::describe_params(m, &[])
            );
        }
        return Ok(());
    }
    let others: Vec<String> = rest
        .iter()
        .filter(|a| **a != path && normalize(a) != path)
        .cloned()
        .collect();
    let mut parsed = cli::parse_args(&others, method, &["noborder", "noheader"])?;
    let opts = OutputOptions::take(&mut parsed.options)?;
    if let Some(extra) = parsed.positional.first() {
        return Err(CliError::Usage(format!("unexpected argument '{extra}'")));
    }
    let data = client::call(root, verb.as_str(), &path, &parsed.options)?;
    if cmd == "ls" {
        return ls(&path, method, &data, opts);
    }
    let columns = method.map(columns_of).unwrap_or_default();
    output::print(&data, opts, &columns);
    Ok(())
}

/// `/nodes/` or `nodes` → `/nodes`.
fn normalize(path: &str) -> String {
    let p = format!("/{}", path.trim_matches('/'));
    if p.len() > 1 {
        p
    } else {
        "/".into()
    }
}

/// Table columns from the return schema: item properties in schema order.
/// The key named by the schema's `links` (`{userid}`) comes first.
pub fn columns_of(method: &oxve_schema::api::Method) -> Vec<String> {
    let mut cols: Vec<String> = method
        .returns
        .get("items")
        .and_then(|i| i.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let key = method.child_key();
    if let Some(pos) = key.and_then(|k| cols.iter().position(|c| *c == k)) {
        let k = cols.remove(pos);
        cols.insert(0, k);
    }
    cols
}

fn ls(
    path: &str,
    method: Option<&oxve_schema::api::Method>,
    data: &Value,
    opts: OutputOptions,
) -> Result<(), CliError> {
    let key = match method {
        None => "subdir".to_string(),
        Some(m) => m.child_key().unwrap_or_else(|| "name".into()),
    };
    let schema = ApiSchema::embedded();
    let mut rows = Vec::new();
    for item in data.as_array().into_iter().flatten() {
        let Some(name) = item.get(&key).map(client::scalar) else {
            continue;
        };
        let child = format!("{}/{}", path.trim_end_matches('/'), name);
        let child = child.as_str();
        let has = |v: Verb| matches!(schema.route(v, child), Route::Found(..));
        let dir = has(Verb::Get)
            && matches!(schema.route(Verb::Get, child), Route::Found(m, _) if m.returns.get("links").is_some());
        let flags = format!(
            "{}{}{}{}{}",
            if dir { 'D' } else { '-' },
            if has(Verb::Get) { 'r' } else { '-' },
            if has(Verb::Put) { 'w' } else { '-' },
            if has(Verb::Post) { 'c' } else { '-' },
            if has(Verb::Delete) { 'd' } else { '-' },
        );
        rows.push(serde_json::json!({"perms": flags, "name": name}));
    }
    if opts.format == output::Format::Text {
        for r in &rows {
            println!(
                "{:<13}{}",
                r["perms"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            );
        }
    } else {
        output::print(&Value::Array(rows), opts, &[]);
    }
    Ok(())
}

fn usage(args: &[String]) -> Result<(), CliError> {
    let parsed = cli::parse_args(args, None, &["verbose"])?;
    let path = parsed
        .positional
        .first()
        .map(|p| normalize(p))
        .ok_or_else(|| {
            CliError::Usage(
                "USAGE: pvesh usage <api_path> [--command get|set|create|delete] [--verbose]"
                    .into(),
            )
        })?;
    let only = parsed.options.get("command").and_then(Value::as_str);
    let mut found = false;
    for (cmd, verb) in [
        ("get", Verb::Get),
        ("set", Verb::Put),
        ("create", Verb::Post),
        ("delete", Verb::Delete),
    ] {
        if only.is_some_and(|c| c != cmd) {
            continue;
        }
        if let Route::Found(m, _) = ApiSchema::embedded().route(verb, &path) {
            found = true;
            println!("USAGE: pvesh {cmd} {} [OPTIONS]", m.path);
            if parsed.options.contains_key("verbose") {
                print!("{}", cli::describe_params(m, &[]));
            }
        }
    }
    if found {
        Ok(())
    } else {
        Err(CliError::Usage(format!("no such path '{path}'")))
    }
}
