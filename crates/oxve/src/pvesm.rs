//! `pvesm`: storage definitions and volumes, with upstream's sub-commands
//! and its plain-text tables (`pvesm status`, `pvesm list`).

use crate::cli::{self, CliError};
use crate::client;
use crate::output::{self, OutputOptions};
use oxve_schema::api::{ApiSchema, Verb};
use serde_json::{json, Map, Value};
use std::path::Path;

/// The node the CLI talks about: the local one.
pub(crate) const NODE: &str = "localhost";

/// One sub-command: name, API method, positional parameter names.
struct Command {
    name: &'static str,
    verb: Verb,
    path: &'static str,
    positional: &'static [&'static str],
}

const COMMANDS: &[Command] = &[
    Command {
        name: "add",
        verb: Verb::Post,
        path: "/storage",
        positional: &["type", "storage"],
    },
    Command {
        name: "set",
        verb: Verb::Put,
        path: "/storage/{storage}",
        positional: &["storage"],
    },
    Command {
        name: "remove",
        verb: Verb::Delete,
        path: "/storage/{storage}",
        positional: &["storage"],
    },
    Command {
        name: "status",
        verb: Verb::Get,
        path: "/nodes/{node}/storage",
        positional: &[],
    },
    Command {
        name: "list",
        verb: Verb::Get,
        path: "/nodes/{node}/storage/{storage}/content",
        positional: &["storage"],
    },
    Command {
        name: "alloc",
        verb: Verb::Post,
        path: "/nodes/{node}/storage/{storage}/content",
        positional: &["storage", "vmid", "filename", "size"],
    },
    Command {
        name: "free",
        verb: Verb::Delete,
        path: "/nodes/{node}/storage/{storage}/content/{volume}",
        positional: &["volume"],
    },
    Command {
        name: "path",
        verb: Verb::Get,
        path: "/nodes/{node}/storage/{storage}/content/{volume}",
        positional: &["volume"],
    },
];

pub fn main(root: &Path, args: Vec<String>) -> Result<(), CliError> {
    let name = args.first().map(String::as_str).unwrap_or("help");
    if let Some(done) = crate::pvesm_scan::dispatch(root, &args) {
        return done;
    }
    match name {
        "prune-backups" => return crate::pvesm_prune::main(root, &args[1..]),
        "export" => return crate::pvesm_transfer::export(root, &args[1..]),
        "import" => return crate::pvesm_transfer::import(root, &args[1..]),
        _ => {}
    }
    let Some(command) = COMMANDS.iter().find(|c| c.name == name) else {
        if matches!(name, "help" | "--help" | "-h") {
            println!("{}", usage());
            return Ok(());
        }
        return Err(CliError::Usage(format!(
            "unknown command 'pvesm {name}'\n{}",
            usage()
        )));
    };
    let method = ApiSchema::embedded()
        .method(command.verb, command.path)
        .ok_or_else(|| CliError::Usage(format!("no API method for pvesm {name}")))?;
    let rest = &args[1..];
    if cli::wants_help(rest) {
        let hidden: Vec<&str> = command.positional.iter().copied().chain(["node"]).collect();
        println!(
            "USAGE: pvesm {name} {}[OPTIONS]\n{}",
            command
                .positional
                .iter()
                .map(|p| format!("<{p}> "))
                .collect::<String>(),
            cli::describe_params(method, &hidden)
        );
        return Ok(());
    }
    let mut parsed = cli::parse_args(rest, Some(method), &["noborder", "noheader"])?;
    let opts = OutputOptions::take(&mut parsed.options)?;
    let mut params = parsed.options;
    for (i, p) in command.positional.iter().enumerate() {
        let v = parsed
            .positional
            .get(i)
            .ok_or_else(|| CliError::Usage(format!("pvesm {name}: missing argument <{p}>")))?;
        params.insert((*p).to_string(), Value::String(v.clone()));
    }
    if let Some(extra) = parsed.positional.get(command.positional.len()) {
        return Err(CliError::Usage(format!("unexpected argument '{extra}'")));
    }
    if command.path.contains("{node}") {
        params.insert("node".into(), json!(NODE));
    }
    // `free` and `path` take a volume id; the storage is its prefix.
    if matches!(name, "free" | "path") {
        let volume = client::scalar(&params["volume"]);
        let storage = volume
            .split_once(':')
            .map(|(s, _)| s.to_string())
            .ok_or_else(|| {
                CliError::Usage(format!("'{volume}' is not a volume id (storage:volume)"))
            })?;
        params.insert("storage".into(), json!(storage));
    }
    if name == "free" {
        params.insert("delay".into(), json!(30));
    }
    let path = fill_path(command.path, &params);
    let call_params = without_path_vars(command.path, &params);
    let data = client::call(root, command.verb.as_str(), &path, &call_params)?;
    match name {
        "status" => print_or(&data, opts, status_table),
        "list" => print_or(&data, opts, list_table),
        "alloc" => println!("successfully created '{}'", client::scalar(&data)),
        "path" => println!(
            "{}",
            data.get("path").map(client::scalar).unwrap_or_default()
        ),
        "free" => {
            if let Value::String(upid) = &data {
                // The removal outlived the wait; it goes on as a task.
                println!("removal continues in task {upid}");
            }
        }
        _ => {
            if !data.is_null() && opts.format != output::Format::Text {
                output::print(&data, opts, &[]);
            }
        }
    }
    Ok(())
}

fn print_or(data: &Value, opts: OutputOptions, table: fn(&[Value]) -> String) {
    match (opts.format, data) {
        (output::Format::Text, Value::Array(rows)) => print!("{}", table(rows)),
        _ => output::print(data, opts, &[]),
    }
}

/// The path with `{var}` filled in. The client encodes each segment, and
/// the server routes a volume id's `/` into its variable.
fn fill_path(template: &str, params: &Map<String, Value>) -> String {
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(var) => params.get(var).map(client::scalar).unwrap_or_default(),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

fn without_path_vars(template: &str, params: &Map<String, Value>) -> Map<String, Value> {
    params
        .iter()
        .filter(|(k, _)| !template.contains(&format!("{{{k}}}")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn int(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Upstream's `pvesm status` table: sizes in KiB, usage in percent.
pub fn status_table(rows: &[Value]) -> String {
    let width = rows
        .iter()
        .filter_map(|r| r.get("storage").and_then(Value::as_str))
        .map(str::len)
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<width$} {:>10} {:>10} {:>15} {:>15} {:>15} {:>8}\n",
        "Name", "Type", "Status", "Total", "Used", "Available", "%"
    );
    let mut sorted: Vec<&Value> = rows.iter().collect();
    sorted.sort_by_key(|r| {
        r.get("storage")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    });
    for r in sorted {
        let status = match (int(r, "enabled"), int(r, "active")) {
            (Some(0), _) => "disabled",
            (_, Some(1)) => "active",
            _ => "inactive",
        };
        let (total, used, avail) = (
            int(r, "total").unwrap_or(0) / 1024,
            int(r, "used").unwrap_or(0) / 1024,
            int(r, "avail").unwrap_or(0) / 1024,
        );
        let pct = if total > 0 {
            used as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        out.push_str(&format!(
            "{:<width$} {:>10} {:>10} {:>15} {:>15} {:>15} {:>7.2}%\n",
            r.get("storage").and_then(Value::as_str).unwrap_or(""),
            r.get("type").and_then(Value::as_str).unwrap_or(""),
            status,
            total,
            used,
            avail,
            pct
        ));
    }
    out
}

/// Upstream's `pvesm list` table: volume id, format, content, size, owner.
pub fn list_table(rows: &[Value]) -> String {
    let width = rows
        .iter()
        .filter_map(|r| r.get("volid").and_then(Value::as_str))
        .map(str::len)
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<width$} {:<7} {:<13} {:>15} {}\n",
        "Volid", "Format", "Type", "Size", "VMID"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<width$} {:<7} {:<13} {:>15} {}\n",
            r.get("volid").and_then(Value::as_str).unwrap_or(""),
            r.get("format").and_then(Value::as_str).unwrap_or(""),
            r.get("content").and_then(Value::as_str).unwrap_or(""),
            int(r, "size").unwrap_or(0),
            r.get("vmid").map(client::scalar).unwrap_or_default()
        ));
    }
    out
}

fn usage() -> String {
    let mut out = String::from("USAGE: pvesm <COMMAND> [ARGS] [OPTIONS]\n");
    for c in COMMANDS {
        out.push_str(&format!(
            "       pvesm {} {}[OPTIONS]\n",
            c.name,
            c.positional
                .iter()
                .map(|p| format!("<{p}> "))
                .collect::<String>()
        ));
    }
    out.push_str("       pvesm prune-backups <storage> [OPTIONS]\n");
    out.push_str("       pvesm export|import <volume> <format> <filename> [OPTIONS]\n");
    out.push_str(crate::pvesm_scan::USAGE);
    out.push_str("Add --help to a command for its options.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_in_kib_with_percent() {
        let rows = vec![
            json!({"storage": "local", "type": "dir", "enabled": 1, "active": 1,
            "total": 1024 * 1000, "used": 1024 * 250, "avail": 1024 * 750}),
        ];
        let text = status_table(&rows);
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("local"), "{text}");
        assert!(
            line.contains(" active ") && line.contains(" 1000 ") && line.ends_with("25.00%"),
            "{text}"
        );
    }
}
