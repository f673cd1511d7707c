//! `pct`: containers of the local node. Each sub-command is one API call
//! (tasks are followed until they end, printing their log, as upstream's
//! CLI runs workers in the foreground); `exec`, `enter` and `console` run
//! `lxc-attach`/`lxc-console` here, as upstream does.

use crate::cli::{self, CliError};
use crate::client;
use crate::pct_local;
use oxve_schema::api::{ApiSchema, Verb};
use serde_json::{Map, Value};
use std::path::Path;

const NODE: &str = "localhost";

/// The API method behind a sub-command (`None`: runs LXC's tools here).
type Call = Option<(Verb, &'static str)>;

/// Sub-commands: name, positional arguments, API method, summary.
const COMMANDS: &[(&str, &[&str], Call, &str)] = &[
    (
        "list",
        &[],
        Some((Verb::Get, "/nodes/{node}/lxc")),
        "LXC container index (per node).",
    ),
    (
        "create",
        &["vmid", "ostemplate"],
        Some((Verb::Post, "/nodes/{node}/lxc")),
        "Create or restore a container.",
    ),
    (
        "config",
        &["vmid"],
        Some((Verb::Get, "/nodes/{node}/lxc/{vmid}/config")),
        "Get container configuration.",
    ),
    (
        "set",
        &["vmid"],
        Some((Verb::Put, "/nodes/{node}/lxc/{vmid}/config")),
        "Set container options.",
    ),
    (
        "pending",
        &["vmid"],
        Some((Verb::Get, "/nodes/{node}/lxc/{vmid}/pending")),
        "Get container configuration, including pending changes.",
    ),
    (
        "status",
        &["vmid"],
        Some((Verb::Get, "/nodes/{node}/lxc/{vmid}/status/current")),
        "Show CT status.",
    ),
    (
        "start",
        &["vmid"],
        Some((Verb::Post, "/nodes/{node}/lxc/{vmid}/status/start")),
        "Start the container.",
    ),
    (
        "stop",
        &["vmid"],
        Some((Verb::Post, "/nodes/{node}/lxc/{vmid}/status/stop")),
        "Stop the container. This will abruptly stop all processes running in the container.",
    ),
    (
        "shutdown",
        &["vmid"],
        Some((Verb::Post, "/nodes/{node}/lxc/{vmid}/status/shutdown")),
        "Shutdown the container. This will trigger a clean shutdown of the container.",
    ),
    (
        "reboot",
        &["vmid"],
        Some((Verb::Post, "/nodes/{node}/lxc/{vmid}/status/reboot")),
        "Reboot the container by shutting it down, and starting it again.",
    ),
    (
        "suspend",
        &["vmid"],
        Some((Verb::Post, "/nodes/{node}/lxc/{vmid}/status/suspend")),
        "Suspend the container.",
    ),
    (
        "resume",
        &["vmid"],
        Some((Verb::Post, "/nodes/{node}/lxc/{vmid}/status/resume")),
        "Resume the container.",
    ),
    (
        "destroy",
        &["vmid"],
        Some((Verb::Delete, "/nodes/{node}/lxc/{vmid}")),
        "Destroy the container (also delete all uses files).",
    ),
    (
        "snapshot",
        &["vmid", "snapname"],
        Some((Verb::Post, "/nodes/{node}/lxc/{vmid}/snapshot")),
        "Snapshot a container.",
    ),
    (
        "listsnapshot",
        &["vmid"],
        Some((Verb::Get, "/nodes/{node}/lxc/{vmid}/snapshot")),
        "List all snapshots.",
    ),
    (
        "rollback",
        &["vmid", "snapname"],
        Some((
            Verb::Post,
            "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback",
        )),
        "Rollback LXC state to specified snapshot.",
    ),
    (
        "delsnapshot",
        &["vmid", "snapname"],
        Some((Verb::Delete, "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}")),
        "Delete a LXC snapshot.",
    ),
    (
        "clone",
        &["vmid", "newid"],
        Some((Verb::Post, "/nodes/{node}/lxc/{vmid}/clone")),
        "Create a container clone/copy",
    ),
    (
        "template",
        &["vmid"],
        Some((Verb::Post, "/nodes/{node}/lxc/{vmid}/template")),
        "Create a Template.",
    ),
    (
        "resize",
        &["vmid", "disk", "size"],
        Some((Verb::Put, "/nodes/{node}/lxc/{vmid}/resize")),
        "Resize a container mount point.",
    ),
    (
        "move-volume",
        &["vmid", "volume", "storage"],
        Some((Verb::Post, "/nodes/{node}/lxc/{vmid}/move_volume")),
        "Move a rootfs-/mp-volume to a different storage",
    ),
    (
        "push",
        &["vmid", "file", "destination"],
        None,
        "Copy a local file to the container.",
    ),
    (
        "pull",
        &["vmid", "path", "destination"],
        None,
        "Copy a file from the container to the local system.",
    ),
    (
        "exec",
        &["vmid"],
        None,
        "Launch a command inside the specified container: pct exec <vmid> [-- <command> [args]]",
    ),
    (
        "enter",
        &["vmid"],
        None,
        "Launch a shell for the specified container.",
    ),
    (
        "console",
        &["vmid"],
        None,
        "Launch a console for the specified container.",
    ),
    (
        "mount",
        &["vmid"],
        None,
        "Mount the container's filesystem on the host. This will hold a lock on the container and is meant for emergency maintenance only as it will prevent further operations on the container other than start and stop.",
    ),
    (
        "unmount",
        &["vmid"],
        None,
        "Unmount the container's filesystem.",
    ),
    ("unlock", &["vmid"], None, "Unlock the VM."),
    (
        "fsck",
        &["vmid"],
        None,
        "Run a filesystem check (fsck) on a container volume.",
    ),
];

pub fn main(root: &Path, args: Vec<String>) -> Result<(), CliError> {
    let name = args.first().map(String::as_str).unwrap_or("help");
    let Some((_, positional, method, summary)) = COMMANDS.iter().find(|c| c.0 == name) else {
        if matches!(name, "help" | "--help" | "-h") {
            println!("{}", usage());
            return Ok(());
        }
        return Err(CliError::Usage(format!(
            "unknown command 'pct {name}'\n{}",
            usage()
        )));
    };
    let (rest, command): (&[String], &[String]) = match args[1..].iter().position(|a| a == "--") {
        Some(i) => (&args[1..1 + i], &args[2 + i..]),
        None => (&args[1..], &[]),
    };
    let schema = method.and_then(|(verb, path)| ApiSchema::embedded().method(verb, path));
    if cli::wants_help(rest) {
        println!(
            "USAGE: pct {name} {}\n\n  {summary}",
            positional
                .iter()
                .map(|p| format!("<{p}>"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        if let Some(m) = schema {
            let hidden: Vec<&str> = positional.iter().copied().chain(["node"]).collect();
            print!("{}", cli::describe_params(m, &hidden));
        } else {
            print!("{}", pct_local::options_help(name));
        }
        return Ok(());
    }
    let flags = if method.is_none() {
        pct_local::FLAGS
    } else {
        &[]
    };
    let parsed = cli::parse_args(rest, schema, flags)?;
    if parsed.positional.len() != positional.len() {
        return Err(CliError::Usage(format!(
            "pct {name}: expected {} argument(s): {}",
            positional.len(),
            positional
                .iter()
                .map(|p| format!("<{p}>"))
                .collect::<Vec<_>>()
                .join(" ")
        )));
    }
    let mut params = parsed.options;
    for (key, value) in positional.iter().zip(&parsed.positional) {
        params.insert((*key).to_string(), Value::String(value.clone()));
    }
    let Some((verb, template)) = method else {
        let vmid: u32 = parsed.positional[0].parse().map_err(|_| {
            CliError::Usage(format!(
                "pct {name}: '{}' is not a VM id",
                parsed.positional[0]
            ))
        })?;
        if matches!(name, "mount" | "unmount" | "unlock" | "fsck") {
            return pct_local::run(root, name, vmid, &params);
        }
        if name == "push" || name == "pull" {
            return transfer(
                root,
                name,
                vmid,
                &parsed.positional[1],
                &parsed.positional[2],
                &params,
            );
        }
        return attach(root, name, vmid, command);
    };
    let path = client::fill_path(template, NODE, positional, &mut params);
    let data = client::call(root, verb.as_str(), &path, &params)?;
    match name {
        "list" => print_list(&data),
        "config" => print_config(&data),
        "pending" => print_pending(&data),
        "status" => {
            println!(
                "status: {}",
                data.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
            );
        }
        "set" | "template" => {}
        "listsnapshot" => print_snapshots(&data),
        _ => {
            if let Some(upid) = data.as_str().filter(|s| s.starts_with("UPID:")) {
                client::follow_task(root, upid)?;
            }
        }
    }
    Ok(())
}

fn usage() -> String {
    let mut out = String::from("USAGE: pct <COMMAND> [ARGS] [OPTIONS]\n\n");
    for (name, positional, _, _) in COMMANDS {
        let args: Vec<String> = positional.iter().map(|p| format!("<{p}>")).collect();
        out.push_str(&format!("       pct {name} {}\n", args.join(" ")));
    }
    out.push_str("\n       pct help [<extra-args>] [OPTIONS]");
    out
}

/// Upstream's `pct list` table: VMID, Status, Lock, Name.
fn print_list(data: &Value) {
    let mut rows: Vec<&Value> = data
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    rows.sort_by_key(|r| r.get("vmid").and_then(Value::as_u64).unwrap_or(0));
    println!(
        "{:<10} {:<10} {:<12} {:<20}",
        "VMID", "Status", "Lock", "Name"
    );
    for r in rows {
        let s = |k: &str| r.get(k).map(client::scalar).unwrap_or_default();
        println!(
            "{:<10} {:<10} {:<12} {:<20}",
            s("vmid"),
            s("status"),
            s("lock"),
            s("name")
        );
    }
}

/// `key: value` lines, sorted, description first as comment-free text.
fn print_config(data: &Value) {
    let Some(map) = data.as_object() else {
        return;
    };
    let mut keys: Vec<&String> = map.keys().filter(|k| *k != "digest").collect();
    keys.sort();
    for key in keys {
        if key == "lxc" {
            for pair in map[key].as_array().into_iter().flatten() {
                let k = pair.get(0).map(client::scalar).unwrap_or_default();
                let v = pair.get(1).map(client::scalar).unwrap_or_default();
                println!("{k}: {v}");
            }
            continue;
        }
        println!("{key}: {}", client::scalar(&map[key]));
    }
}

/// Upstream's pending view: `cur`, `new` and `del` lines.
fn print_pending(data: &Value) {
    for item in data.as_array().into_iter().flatten() {
        let key = item.get("key").map(client::scalar).unwrap_or_default();
        if item.get("delete").is_some() {
            println!(
                "del {key}: {}",
                item.get("value").map(client::scalar).unwrap_or_default()
            );
        } else if let Some(p) = item.get("pending") {
            println!("new {key}: {}", client::scalar(p));
        } else if let Some(v) = item.get("value") {
            println!("cur {key}: {}", client::scalar(v));
        }
    }
}

/// `exec`, `enter`, `console`: run LXC's tools in the node's network
/// namespace (LXC's command sockets live there).
fn attach(root: &Path, name: &str, vmid: u32, command: &[String]) -> Result<(), CliError> {
    // The API call checks that the CT exists and runs; it also gives a
    // clean error when the daemon is not running.
    let status = client::call(
        root,
        "GET",
        &format!("/nodes/{NODE}/lxc/{vmid}/status/current"),
        &Map::new(),
    )?;
    if status.get("status").and_then(Value::as_str) != Some("running") {
        return Err(CliError::Api(format!("CT {vmid} not running")));
    }
    let host = oxve_lxc::host::LxcHost::of_node(root);
    let mut cmd = match name {
        "exec" => {
            if command.is_empty() {
                return Err(CliError::Usage(
                    "pct exec: no command given (pct exec <vmid> -- <command> [args])".into(),
                ));
            }
            host.attach(vmid, command)
        }
        "enter" => host.attach(
            vmid,
            &[
                "/bin/sh".to_string(),
                "-c".into(),
                "exec $(command -v bash || echo sh) -l".into(),
            ],
        ),
        _ => {
            let mut c = host.tool("lxc-console", vmid);
            c.args(["-t", "0", "-e", "^a"]);
            c
        }
    };
    let status = cmd
        .status()
        .map_err(|e| CliError::Api(format!("cannot run LXC tools: {e}")))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => std::process::exit(code),
        None => Err(CliError::Api(format!("command ended by {status}"))),
    }
}

/// Upstream's snapshot tree: `` `-> name  time  description``, the
/// current state last.
fn print_snapshots(data: &Value) {
    let mut snaps: Vec<&Value> = data
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    snaps.sort_by_key(|s| {
        s.get("snaptime")
            .and_then(Value::as_i64)
            .unwrap_or(i64::MAX)
    });
    for s in snaps {
        let name = s.get("name").map(client::scalar).unwrap_or_default();
        let time = s
            .get("snaptime")
            .and_then(Value::as_i64)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let descr = s.get("description").map(client::scalar).unwrap_or_default();
        println!("`-> {name:<20} {time:<20} {descr}");
    }
}

/// `push`: a local file into the running container (owned by `--user` /
/// `--group`, mode `--perms`); `pull`: a file of the container to here.
/// Both stream through `lxc-attach`, as upstream's.
fn transfer(
    root: &Path,
    name: &str,
    vmid: u32,
    from: &str,
    to: &str,
    params: &serde_json::Map<String, Value>,
) -> Result<(), CliError> {
    let status = client::call(
        root,
        "GET",
        &format!("/nodes/{NODE}/lxc/{vmid}/status/current"),
        &Map::new(),
    )?;
    if status.get("status").and_then(Value::as_str) != Some("running") {
        return Err(CliError::Api(format!("CT {vmid} not running")));
    }
    let host = oxve_lxc::host::LxcHost::of_node(root);
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let opt = |k: &str| params.get(k).map(client::scalar);
    let io = |e: std::io::Error, what: &str| CliError::Api(format!("{what}: {e}"));
    if name == "push" {
        let file =
            std::fs::File::open(from).map_err(|e| io(e, &format!("cannot open '{from}'")))?;
        let mut script = format!("cat > {}", quote(to));
        if let Some(perms) = opt("perms") {
            script.push_str(&format!(" && chmod {} {}", quote(&perms), quote(to)));
        }
        let owner = match (opt("user"), opt("group")) {
            (Some(u), Some(g)) => Some(format!("{u}:{g}")),
            (Some(u), None) => Some(u),
            (None, Some(g)) => Some(format!(":{g}")),
            _ => None,
        };
        if let Some(o) = owner {
            script.push_str(&format!(" && chown {} {}", quote(&o), quote(to)));
        }
        let st = host
            .attach(vmid, &["/bin/sh".into(), "-c".into(), script])
            .stdin(file)
            .status()
            .map_err(|e| io(e, "cannot run lxc-attach"))?;
        return if st.success() {
            Ok(())
        } else {
            Err(CliError::Api(format!("error writing '{to}' in CT {vmid}")))
        };
    }
    let out = std::fs::File::create(to).map_err(|e| io(e, &format!("cannot create '{to}'")))?;
    let st = host
        .attach(vmid, &["/bin/cat".into(), from.into()])
        .stdout(out)
        .status()
        .map_err(|e| io(e, "cannot run lxc-attach"))?;
    if st.success() {
        Ok(())
    } else {
        let _ = std::fs::remove_file(to);
        Err(CliError::Api(format!(
            "error reading '{from}' from CT {vmid}"
        )))
    }
}
