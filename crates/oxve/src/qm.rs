//! `qm`: virtual machines of the local node. Each sub-command is one API
//! call over the node's socket as root@pam; a task it starts is followed
//! until it ends, its log printed, as upstream's CLI runs workers in the
//! foreground. `showcmd`, `terminal`, `monitor`, `wait` and a few others
//! work on this node itself, as upstream's do (see `qm_local`). Methods the
//! daemon has not built answer 501, and that one line is what `qm` prints.

use crate::cli::{self, CliError};
use crate::client;
use crate::qm_local;
use oxve_schema::api::{ApiSchema, Verb};
use serde_json::{Map, Value};
use std::path::Path;

const NODE: &str = "localhost";

/// An option of a sub-command that runs here: its name, the placeholder
/// of its value (`None`: a boolean flag) and what it does.
pub type LocalOpt = (&'static str, Option<&'static str>, &'static str);

/// How a sub-command runs.
#[derive(Clone, Copy)]
enum Run {
    /// One API method.
    Api(Verb, &'static str),
    /// Here, by `qm_local`, with these options.
    Local(&'static [LocalOpt]),
}

/// A sub-command: its words, positional arguments (a last `extra-args`
/// takes the rest), how it runs and a one-line summary.
struct Command {
    name: &'static str,
    args: &'static [&'static str],
    run: Run,
    summary: &'static str,
}

const fn api(
    name: &'static str,
    args: &'static [&'static str],
    verb: Verb,
    path: &'static str,
    summary: &'static str,
) -> Command {
    Command {
        name,
        args,
        run: Run::Api(verb, path),
        summary,
    }
}

const fn local(
    name: &'static str,
    args: &'static [&'static str],
    opts: &'static [LocalOpt],
    summary: &'static str,
) -> Command {
    Command {
        name,
        args,
        run: Run::Local(opts),
        summary,
    }
}

const COMMANDS: &[Command] = &[
    api("list", &[], Verb::Get, "/nodes/{node}/qemu", "List the VMs of this node."),
    api("create", &["vmid"], Verb::Post, "/nodes/{node}/qemu", "Create (or restore) a VM."),
    api("destroy", &["vmid"], Verb::Delete, "/nodes/{node}/qemu/{vmid}", "Destroy a VM and the disks it owns."),
    api("clone", &["vmid", "newid"], Verb::Post, "/nodes/{node}/qemu/{vmid}/clone", "Copy a VM or template to a new VM."),
    api("migrate", &["vmid", "target"], Verb::Post, "/nodes/{node}/qemu/{vmid}/migrate", "Move a VM to another node."),
    api("set", &["vmid"], Verb::Put, "/nodes/{node}/qemu/{vmid}/config", "Change VM options."),
    api("config", &["vmid"], Verb::Get, "/nodes/{node}/qemu/{vmid}/config", "Print the VM configuration (pending values applied unless --current)."),
    api("pending", &["vmid"], Verb::Get, "/nodes/{node}/qemu/{vmid}/pending", "Print the VM configuration with its pending changes."),
    local("showcmd", &["vmid"], &[
        ("pretty", None, "one option per line"),
        ("snapshot", Some("<name>"), "the command line of this snapshot's config"),
    ], "Print the QEMU command line that starts the VM."),
    local("status", &["vmid"], &[("verbose", None, "all status figures")], "Print the VM's status."),
    api("snapshot", &["vmid", "snapname"], Verb::Post, "/nodes/{node}/qemu/{vmid}/snapshot", "Take a snapshot of the VM."),
    api("delsnapshot", &["vmid", "snapname"], Verb::Delete, "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}", "Delete a snapshot."),
    api("listsnapshot", &["vmid"], Verb::Get, "/nodes/{node}/qemu/{vmid}/snapshot", "List the VM's snapshots as a tree."),
    api("rollback", &["vmid", "snapname"], Verb::Post, "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback", "Return the VM to a snapshot."),
    api("template", &["vmid"], Verb::Post, "/nodes/{node}/qemu/{vmid}/template", "Turn the VM into a template."),
    api("start", &["vmid"], Verb::Post, "/nodes/{node}/qemu/{vmid}/status/start", "Start the VM."),
    api("stop", &["vmid"], Verb::Post, "/nodes/{node}/qemu/{vmid}/status/stop", "Stop the VM at once (like pulling the plug)."),
    api("reset", &["vmid"], Verb::Post, "/nodes/{node}/qemu/{vmid}/status/reset", "Reset the VM."),
    api("shutdown", &["vmid"], Verb::Post, "/nodes/{node}/qemu/{vmid}/status/shutdown", "Ask the guest to power off (ACPI or guest agent)."),
    api("reboot", &["vmid"], Verb::Post, "/nodes/{node}/qemu/{vmid}/status/reboot", "Shut the VM down and start it again."),
    api("suspend", &["vmid"], Verb::Post, "/nodes/{node}/qemu/{vmid}/status/suspend", "Pause the VM (or hibernate it with --todisk)."),
    api("resume", &["vmid"], Verb::Post, "/nodes/{node}/qemu/{vmid}/status/resume", "Resume a paused VM."),
    api("sendkey", &["vmid", "key"], Verb::Put, "/nodes/{node}/qemu/{vmid}/sendkey", "Send a key event to the VM (e.g. ctrl-alt-delete)."),
    local("wait", &["vmid"], &[("timeout", Some("<seconds>"), "give up after this long (default: wait forever)")], "Wait until the VM has stopped."),
    local("unlock", &["vmid"], &[], "Remove the VM's lock."),
    local("disk import", &["vmid", "source", "storage"], &[
        ("format", Some("<raw | qcow2 | vmdk>"), "format of the new volume"),
        ("target-disk", Some("<drive>"), "the drive to import to (e.g. scsi1; default: the next unused<n>)"),
    ], "Import a disk image file into a new volume of the VM (an unused disk unless --target-disk)."),
    api("disk move", &["vmid", "disk", "storage"], Verb::Post, "/nodes/{node}/qemu/{vmid}/move_disk", "Move a disk to another storage or VM."),
    local("disk rescan", &[], &[
        ("vmid", Some("<vmid>"), "only this VM"),
        ("dryrun", None, "change no config"),
    ], "Find volumes of VMs on the storages and update disk sizes and unused entries."),
    api("disk resize", &["vmid", "disk", "size"], Verb::Put, "/nodes/{node}/qemu/{vmid}/resize", "Grow a disk (size: absolute, or +size to add)."),
    api("disk unlink", &["vmid"], Verb::Put, "/nodes/{node}/qemu/{vmid}/unlink", "Detach (and with --force delete) disks."),
    local("monitor", &["vmid"], &[], "QEMU's human monitor (HMP) of a running VM: one command per line, 'quit' ends."),
    local("vncproxy", &["vmid"], &[], "Proxy the VM's VNC server on stdin/stdout (the VNC password comes in LC_PVE_TICKET)."),
    api("guest cmd", &["vmid", "command"], Verb::Post, "/nodes/{node}/qemu/{vmid}/agent", "Run a guest agent command."),
    local("guest exec", &["vmid", "extra-args"], &[
        ("synchronous", None, "wait for the command to end (default 1)"),
        ("timeout", Some("<seconds>"), "how long to wait for it (default 30, 0: forever)"),
        ("pass-stdin", None, "send this process's stdin (at most 1 MiB) to the command"),
    ], "Run a program in the guest through the guest agent: qm guest exec <vmid> [--] <command> [args]"),
    api("guest exec-status", &["vmid", "pid"], Verb::Get, "/nodes/{node}/qemu/{vmid}/agent/exec-status", "Status of a program started by 'guest exec'."),
    api("guest passwd", &["vmid", "username"], Verb::Post, "/nodes/{node}/qemu/{vmid}/agent/set-user-password", "Set a guest user's password through the guest agent."),
    local("terminal", &["vmid"], &[
        ("iface", Some("<serial0 | serial1 | serial2 | serial3>"), "the serial port (default: the first 'socket' one)"),
        ("escape", Some("<char>"), "the key that ends the session (default ^O)"),
    ], "Connect this terminal to a serial port of the VM (serialN: socket)."),
    api("cloudinit dump", &["vmid", "type"], Verb::Get, "/nodes/{node}/qemu/{vmid}/cloudinit/dump", "Print the generated cloud-init config (user, network or meta)."),
    api("cloudinit pending", &["vmid"], Verb::Get, "/nodes/{node}/qemu/{vmid}/cloudinit", "Print the cloud-init values with their pending changes."),
    api("cloudinit update", &["vmid"], Verb::Put, "/nodes/{node}/qemu/{vmid}/cloudinit", "Regenerate the cloud-init drive."),
];

/// Upstream's old names of grouped sub-commands.
const ALIASES: &[(&str, &str)] = &[
    ("importdisk", "disk import"),
    ("move-disk", "disk move"),
    ("move_disk", "disk move"),
    ("rescan", "disk rescan"),
    ("resize", "disk resize"),
    ("unlink", "disk unlink"),
    ("agent", "guest cmd"),
];

pub fn main(root: &Path, args: Vec<String>) -> Result<(), CliError> {
    let Some((command, used)) = resolve(&args) else {
        let first = args.first().map(String::as_str).unwrap_or("help");
        if matches!(first, "help" | "--help" | "-h") {
            println!("{}", usage(None));
            return Ok(());
        }
        let group = COMMANDS
            .iter()
            .any(|c| c.name.split(' ').next() == Some(first) && c.name.contains(' '));
        if group && args.get(1).is_none_or(|a| a.starts_with('-')) {
            println!("{}", usage(Some(first)));
            return Ok(());
        }
        let words: Vec<&str> = args
            .iter()
            .take(if group { 2 } else { 1 })
            .map(String::as_str)
            .collect();
        return Err(CliError::Usage(format!(
            "unknown command 'qm {}'\n{}",
            words.join(" "),
            usage(group.then_some(first))
        )));
    };
    let name = command.name;
    let rest = &args[used..];
    let (rest, after_dashes): (&[String], &[String]) = match rest.iter().position(|a| a == "--") {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[]),
    };
    let schema = match command.run {
        Run::Api(verb, path) => ApiSchema::embedded().method(verb, path),
        Run::Local(_) => None,
    };
    if cli::wants_help(rest) {
        println!(
            "USAGE: qm {name} {}[OPTIONS]\n\n  {}\n",
            arg_list(command),
            command.summary
        );
        match command.run {
            Run::Api(..) => {
                if let Some(m) = schema {
                    let hidden: Vec<&str> = command.args.iter().copied().chain(["node"]).collect();
                    print!("{}", cli::describe_params(m, &hidden));
                }
            }
            Run::Local(opts) => {
                for (opt, value, help) in opts {
                    let value = value.unwrap_or("<boolean>");
                    println!("  --{opt} {value:<24} {help}");
                }
            }
        }
        return Ok(());
    }
    if let Run::Local(opts) = command.run {
        let unknown = rest
            .iter()
            .filter_map(|a| option_name(a))
            .find(|n| !opts.iter().any(|o| o.0 == *n));
        if let Some(n) = unknown {
            return Err(CliError::Usage(format!(
                "qm {name}: unknown option '--{n}'"
            )));
        }
    }
    let flags: Vec<&str> = match command.run {
        Run::Local(opts) => opts.iter().filter(|o| o.1.is_none()).map(|o| o.0).collect(),
        Run::Api(..) => Vec::new(),
    };
    let parsed = cli::parse_args(rest, schema, &flags)?;
    let variadic = command.args.last() == Some(&"extra-args");
    let fixed = command.args.len() - usize::from(variadic);
    let mut positional = parsed.positional;
    let mut extra: Vec<String> = Vec::new();
    if variadic {
        if positional.len() > fixed {
            extra = positional.split_off(fixed);
        }
        extra.extend(after_dashes.iter().cloned());
    } else if let Some(a) = after_dashes.first() {
        return Err(CliError::Usage(format!(
            "qm {name}: unexpected argument '{a}'"
        )));
    }
    if positional.len() != fixed {
        return Err(CliError::Usage(format!(
            "qm {name}: expected {fixed} argument(s): {}",
            arg_list(command).trim_end()
        )));
    }
    let mut params = parsed.options;
    let Run::Api(verb, template) = command.run else {
        return qm_local::run(root, name, &positional, &params, &extra);
    };
    for (key, value) in command.args.iter().zip(&positional) {
        params.insert((*key).to_string(), Value::String(value.clone()));
    }
    prepare(name, &mut params)?;
    let path = client::fill_path(template, NODE, command.args, &mut params);
    let data = client::call(root, verb.as_str(), &path, &params)?;
    match name {
        "list" => print_list(&data),
        "config" => print_config(&data),
        "pending" | "cloudinit pending" => print_pending(&data),
        "listsnapshot" => print_snapshot_tree(&data),
        "cloudinit dump" => println!("{}", client::scalar(&data)),
        "guest cmd" | "guest exec-status" => print_agent_result(&data),
        _ => {
            if let Some(upid) = data.as_str().filter(|s| s.starts_with("UPID:")) {
                client::follow_task(root, upid)?;
            }
        }
    }
    Ok(())
}

/// The sub-command `args` name (an alias expanded) and how many words it took.
fn resolve(args: &[String]) -> Option<(&'static Command, usize)> {
    let first = args.first()?.as_str();
    let first = ALIASES
        .iter()
        .find(|(alias, _)| *alias == first)
        .map_or(first, |(_, full)| full);
    if let Some(c) = COMMANDS.iter().find(|c| c.name == first) {
        return Some((c, 1));
    }
    let second = args.get(1)?;
    let full = format!("{first} {second}");
    COMMANDS.iter().find(|c| c.name == full).map(|c| (c, 2))
}

/// The name of option `arg` (`--name`, `-name`, `--name=value`), as
/// `cli::parse_args` reads it; `None` for a positional argument.
fn option_name(arg: &str) -> Option<&str> {
    let name = arg.strip_prefix("--").or_else(|| {
        arg.strip_prefix('-')
            .filter(|s| s.len() > 1 && !s.starts_with(char::is_numeric))
    })?;
    Some(name.split_once('=').map_or(name, |(n, _)| n))
}

/// `<vmid> <newid> ` as the usage lines show the positional arguments.
fn arg_list(command: &Command) -> String {
    command
        .args
        .iter()
        .map(|a| {
            if *a == "extra-args" {
                "[<extra-args>] ".to_string()
            } else {
                format!("<{a}> ")
            }
        })
        .collect()
}

/// All sub-commands, or those of one group (`disk`, `guest`, `cloudinit`).
fn usage(group: Option<&str>) -> String {
    let mut out = String::from("USAGE: qm <COMMAND> [ARGS] [OPTIONS]\n\n");
    for c in COMMANDS {
        if group.is_some_and(|g| c.name.split(' ').next() != Some(g)) {
            continue;
        }
        out.push_str(&format!("       qm {} {}[OPTIONS]\n", c.name, arg_list(c)));
    }
    out.push_str("\n       qm help\n\nAdd --help to a command for its options.");
    out
}

/// Upstream's CLI-side parameter mappings: `--sshkeys` names a file whose
/// contents are sent (URI-encoded), `guest passwd` reads the password.
fn prepare(name: &str, params: &mut Map<String, Value>) -> Result<(), CliError> {
    if matches!(name, "create" | "set") {
        if let Some(file) = params.get("sshkeys").map(client::scalar) {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::Usage(format!("--sshkeys: cannot read '{file}': {e}")))?;
            let encoded = percent_encoding::utf8_percent_encode(&text, URI_UNSAFE).to_string();
            params.insert("sshkeys".into(), Value::String(encoded));
        }
    }
    if name == "guest passwd" && !params.contains_key("password") {
        params.insert(
            "password".into(),
            Value::String(crate::pveum::read_password()?),
        );
    }
    Ok(())
}

/// What `uri_escape` encodes by default: all but unreserved characters.
const URI_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Upstream's `qm list` table: VMID, NAME, STATUS, MEM(MB),
/// BOOTDISK(GB), PID; nothing at all when there are no VMs.
fn print_list(data: &Value) {
    let mut rows: Vec<&Value> = data
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if rows.is_empty() {
        return;
    }
    rows.sort_by_key(|r| r.get("vmid").and_then(Value::as_u64).unwrap_or(0));
    println!(
        "{:>10} {:<20} {:<10} {:<10} {:>12} {:<10}",
        "VMID", "NAME", "STATUS", "MEM(MB)", "BOOTDISK(GB)", "PID"
    );
    for r in rows {
        let text = |k: &str| r.get(k).map(client::scalar).unwrap_or_default();
        let num = |k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let status = Some(text("qmpstatus"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| text("status"));
        let pid = r.get("pid").and_then(Value::as_u64).unwrap_or(0);
        println!(
            "{:>10} {:<20} {:<10} {:<10} {:>12.2} {:<10}",
            text("vmid"),
            text("name"),
            status,
            perl_number(num("maxmem") / (1024.0 * 1024.0)),
            num("maxdisk") / (1024.0 * 1024.0 * 1024.0),
            pid
        );
    }
}

/// A number as Perl prints it: integers plainly, others with 15
/// significant digits.
pub(crate) fn perl_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{}", x as i64);
    }
    let digits = 15 - (x.abs().log10().floor() as i32 + 1);
    let s = format!("{:.*}", digits.clamp(0, 30) as usize, x);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A value as a line of `qm config` shows it.
fn config_value(key: &str, v: &Value) -> String {
    let text = match v {
        Value::Number(n) => n.as_f64().map(perl_number).unwrap_or_else(|| n.to_string()),
        other => client::scalar(other),
    };
    if key == "description" {
        encode_text(&text)
    } else {
        text
    }
}

/// Upstream's `encode_text`: control and non-ASCII bytes, `:` and `%`
/// percent-encoded, so a description stays on one line.
fn encode_text(text: &str) -> String {
    const UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b':').add(b'%');
    percent_encoding::utf8_percent_encode(text, UNSAFE).to_string()
}

/// `key: value` lines sorted by key, without the digest.
fn print_config(data: &Value) {
    let Some(map) = data.as_object() else {
        return;
    };
    let mut keys: Vec<&String> = map.keys().filter(|k| *k != "digest").collect();
    keys.sort();
    for key in keys {
        if map[key].is_null() {
            continue;
        }
        println!("{key}: {}", config_value(key, &map[key]));
    }
}

/// Upstream's pending view, sorted by key: `cur`, `new` and `del` lines.
fn print_pending(data: &Value) {
    let mut items: Vec<&Value> = data
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let key_of = |i: &Value| i.get("key").map(client::scalar).unwrap_or_default();
    items.sort_by_key(|i| key_of(i));
    for item in items {
        let key = key_of(item);
        if key == "digest" {
            continue;
        }
        let get = |k: &str| {
            item.get(k)
                .filter(|v| !v.is_null())
                .map(|v| config_value(&key, v))
        };
        let deleted = item
            .get("delete")
            .is_some_and(|d| !matches!(d, Value::Null) && client::scalar(d) != "0");
        match (get("value"), get("pending")) {
            (Some(v), _) if deleted => println!("del {key}: {v}"),
            (Some(v), Some(p)) => {
                println!("cur {key}: {v}");
                println!("new {key}: {p}");
            }
            (Some(v), None) => println!("cur {key}: {v}"),
            (None, Some(p)) => println!("new {key}: {p}"),
            (None, None) => {}
        }
    }
}

/// Upstream's snapshot tree: each snapshot under its parent, ordered by
/// time with `current` (no time) last, `` `-> name  time  description``.
fn print_snapshot_tree(data: &Value) {
    let list: Vec<&Value> = data
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let name_of = |s: &Value| s.get("name").map(client::scalar).unwrap_or_default();
    let by_name: std::collections::HashMap<String, &Value> =
        list.iter().map(|s| (name_of(s), *s)).collect();
    let time_of = |n: &str| {
        by_name
            .get(n)
            .and_then(|s| s.get("snaptime"))
            .and_then(Value::as_i64)
    };
    let order = |a: &String, b: &String| match (time_of(a), time_of(b)) {
        (None, _) => std::cmp::Ordering::Greater,
        (_, None) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) => x.cmp(&y),
    };
    let mut roots: Vec<String> = Vec::new();
    let mut children: std::collections::HashMap<String, Vec<String>> = Default::default();
    for s in &list {
        let parent = s.get("parent").map(client::scalar).unwrap_or_default();
        if !parent.is_empty() && by_name.contains_key(&parent) {
            children.entry(parent).or_default().push(name_of(s));
        } else {
            roots.push(name_of(s));
        }
    }
    roots.sort_by(order);
    let mut stack: Vec<(String, String)> = roots
        .into_iter()
        .rev()
        .map(|r| ("`->".to_string(), r))
        .collect();
    while let Some((prefix, name)) = stack.pop() {
        let snap = by_name.get(&name);
        let descr = snap
            .and_then(|s| s.get("description"))
            .map(client::scalar)
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "no-description".into());
        let descr = descr.lines().next().unwrap_or("").to_string();
        let time = time_of(&name)
            .and_then(|t| chrono::TimeZone::timestamp_opt(&chrono::Local, t, 0).single())
            .map(|t| t.format("%F %H:%M:%S").to_string())
            .unwrap_or_default();
        let width = 30usize.saturating_sub(prefix.chars().count());
        println!("{prefix} {name:<width$} {time:<23} {descr}");
        if let Some(kids) = children.get(&name) {
            let mut kids = kids.clone();
            kids.sort_by(order);
            let inner = format!(" {prefix}");
            stack.extend(kids.into_iter().rev().map(|k| (inner.clone(), k)));
        }
    }
}

/// A guest agent answer as upstream prints it: its `result` as text when
/// a string, as canonical pretty JSON otherwise; nothing when empty.
pub(crate) fn print_agent_result(data: &Value) {
    let result = match data.get("result") {
        Some(r) if !r.is_null() => r,
        _ => data,
    };
    match result {
        Value::Null => {}
        Value::Object(m) if m.is_empty() => {}
        Value::String(s) => {
            let s = s.strip_suffix('\n').unwrap_or(s);
            if !s.trim().is_empty() {
                println!("{s}");
            }
        }
        Value::Number(_) | Value::Bool(_) => println!("{}", client::scalar(result)),
        other => print!("{}", perl_json(other, 0)),
    }
}

/// Perl's `to_json(..., {pretty => 1, canonical => 1})`: keys sorted,
/// three-space indents, `"key" : value`, a newline at the end.
fn perl_json(v: &Value, level: usize) -> String {
    fn inner(v: &Value, level: usize) -> String {
        let pad = "   ".repeat(level + 1);
        let close = "   ".repeat(level);
        match v {
            Value::Object(m) if !m.is_empty() => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let items: Vec<String> = keys
                    .into_iter()
                    .map(|k| {
                        format!(
                            "{pad}{} : {}",
                            Value::String(k.clone()),
                            inner(&m[k], level + 1)
                        )
                    })
                    .collect();
                format!("{{\n{}\n{close}}}", items.join(",\n"))
            }
            Value::Array(a) if !a.is_empty() => {
                let items: Vec<String> = a
                    .iter()
                    .map(|x| format!("{pad}{}", inner(x, level + 1)))
                    .collect();
                format!("[\n{}\n{close}]", items.join(",\n"))
            }
            Value::Object(_) => "{}".into(),
            Value::Array(_) => "[]".into(),
            other => other.to_string(),
        }
    }
    format!("{}\n", inner(v, level))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_aliases_resolve() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve(&args(&["start", "1"])).map(|(c, n)| (c.name, n)),
            Some(("start", 1))
        );
        assert_eq!(
            resolve(&args(&["disk", "move", "1"])).map(|(c, n)| (c.name, n)),
            Some(("disk move", 2))
        );
        assert_eq!(
            resolve(&args(&["move-disk", "1"])).map(|(c, n)| (c.name, n)),
            Some(("disk move", 1))
        );
        assert_eq!(
            resolve(&args(&["agent", "1", "ping"])).map(|(c, n)| (c.name, n)),
            Some(("guest cmd", 1))
        );
        assert!(resolve(&args(&["disk", "nosuch"])).is_none());
    }

    #[test]
    fn every_api_command_is_in_the_schema() {
        for c in COMMANDS {
            if let Run::Api(verb, path) = c.run {
                assert!(
                    ApiSchema::embedded().method(verb, path).is_some(),
                    "{} {path}",
                    c.name
                );
            }
        }
    }

    #[test]
    fn numbers_print_as_perl_does() {
        assert_eq!(perl_number(128.0), "128");
        assert_eq!(perl_number(0.5), "0.5");
        assert_eq!(perl_number(1.0 / 3.0), "0.333333333333333");
    }

    #[test]
    fn descriptions_are_encoded() {
        assert_eq!(encode_text("a: b\n100% ü"), "a%3A b%0A100%25 %C3%BC");
    }

    #[test]
    fn agent_json_as_perl_prints_it() {
        assert_eq!(
            perl_json(&json!({"b": [1, {}], "a": "x"}), 0),
            "{\n   \"a\" : \"x\",\n   \"b\" : [\n      1,\n      {}\n   ]\n}\n"
        );
    }
}
