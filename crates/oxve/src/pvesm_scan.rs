//! `pvesm scan <kind>` and upstream's older aliases (`pvesm nfsscan ...`):
//! the `/nodes/{node}/scan/*` calls on the local node, printed as upstream
//! prints them — `path options`, `share description` and `target portal`
//! in aligned columns, one volume group, thin pool or ZFS pool per line.

use crate::cli::{self, CliError};
use crate::client;
use crate::output::{self, OutputOptions};
use crate::pvesm::NODE;
use oxve_schema::api::{ApiSchema, Verb};
use serde_json::Value;
use std::path::Path;

/// The scan kinds: name and positional parameters.
const KINDS: &[(&str, &[&str])] = &[
    ("nfs", &["server"]),
    ("cifs", &["server"]),
    ("iscsi", &["portal"]),
    ("lvm", &[]),
    ("lvmthin", &["vg"]),
    ("pbs", &["server", "username"]),
    ("zfs", &[]),
];

/// The lines `pvesm help` shows for the scans.
pub const USAGE: &str =
    "       pvesm scan nfs|cifs <server> | iscsi <portal> | lvm | lvmthin <vg> | zfs [OPTIONS]\n";

/// Runs `args` (everything after `pvesm`) when they are a scan command;
/// `None` when they are not.
pub fn dispatch(root: &Path, args: &[String]) -> Option<Result<(), CliError>> {
    let first = args.first()?;
    if first == "scan" {
        return Some(match args.get(1) {
            Some(kind) if !kind.starts_with('-') => run(root, kind, &args[2..]),
            _ if cli::wants_help(&args[1..]) => {
                print!("{}", usage());
                Ok(())
            }
            _ => Err(CliError::Usage(format!(
                "pvesm scan: missing scan type\n{}",
                usage()
            ))),
        });
    }
    // `nfsscan`, `cifsscan`, ... (upstream keeps them as aliases)
    let kind = first.strip_suffix("scan")?;
    KINDS
        .iter()
        .any(|(k, _)| *k == kind)
        .then(|| run(root, kind, &args[1..]))
}

fn usage() -> String {
    let mut out = String::from("USAGE: pvesm scan <TYPE> [ARGS] [OPTIONS]\n");
    for (kind, positional) in KINDS {
        out.push_str(&format!(
            "       pvesm scan {kind} {}[OPTIONS]\n",
            positional
                .iter()
                .map(|p| format!("<{p}> "))
                .collect::<String>()
        ));
    }
    out
}

fn run(root: &Path, kind: &str, args: &[String]) -> Result<(), CliError> {
    let Some((_, positional)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        return Err(CliError::Usage(format!(
            "unknown scan type '{kind}'\n{}",
            usage()
        )));
    };
    let path = format!("/nodes/{{node}}/scan/{kind}");
    let method = ApiSchema::embedded()
        .method(Verb::Get, &path)
        .ok_or_else(|| CliError::Usage(format!("no API method for pvesm scan {kind}")))?;
    if cli::wants_help(args) {
        let hidden: Vec<&str> = positional.iter().copied().chain(["node"]).collect();
        println!(
            "USAGE: pvesm scan {kind} {}[OPTIONS]\n{}",
            positional
                .iter()
                .map(|p| format!("<{p}> "))
                .collect::<String>(),
            cli::describe_params(method, &hidden)
        );
        return Ok(());
    }
    let (args, ask_password) = take_password_prompt(args);
    let extra: &[&str] = if kind == "pbs" {
        &["noborder", "noheader"]
    } else {
        &[]
    };
    let mut parsed = cli::parse_args(&args, Some(method), extra)?;
    let opts = if kind == "pbs" {
        OutputOptions::take(&mut parsed.options)?
    } else {
        OutputOptions::default()
    };
    let mut params = parsed.options;
    for (i, p) in positional.iter().enumerate() {
        let v = parsed
            .positional
            .get(i)
            .ok_or_else(|| CliError::Usage(format!("pvesm scan {kind}: missing argument <{p}>")))?;
        params.insert((*p).to_string(), Value::String(v.clone()));
    }
    if let Some(extra) = parsed.positional.get(positional.len()) {
        return Err(CliError::Usage(format!("unexpected argument '{extra}'")));
    }
    if ask_password {
        params.insert("password".into(), Value::String(read_password()?));
    }
    let data = client::call(root, "GET", &format!("/nodes/{NODE}/scan/{kind}"), &params)?;
    let rows = data.as_array().map(Vec::as_slice).unwrap_or_default();
    match kind {
        "nfs" => print!("{}", columns(rows, "path", "options")),
        "cifs" => print!("{}", columns(rows, "share", "description")),
        "iscsi" => print!("{}", columns(rows, "target", "portal")),
        "lvm" => print!("{}", lines(rows, "vg")),
        "lvmthin" => print!("{}", lines(rows, "lv")),
        "zfs" => print!("{}", lines(rows, "pool")),
        _ => output::print(&data, opts, &["store".into(), "comment".into()]),
    }
    Ok(())
}

/// Two columns, the first padded to its longest value (upstream's layout).
pub fn columns(rows: &[Value], first: &str, second: &str) -> String {
    let get = |r: &Value, key: &str| r.get(key).map(client::scalar).unwrap_or_default();
    let width = rows.iter().map(|r| get(r, first).len()).max().unwrap_or(0);
    rows.iter()
        .map(|r| format!("{:<width$} {}\n", get(r, first), get(r, second)))
        .collect()
}

/// One value per line.
pub fn lines(rows: &[Value], key: &str) -> String {
    rows.iter()
        .map(|r| format!("{}\n", r.get(key).map(client::scalar).unwrap_or_default()))
        .collect()
}

/// Takes a `--password` given without a value (upstream then asks for it)
/// out of `args`; a password given as a value stays.
fn take_password_prompt(args: &[String]) -> (Vec<String>, bool) {
    let mut out = Vec::with_capacity(args.len());
    let mut ask = false;
    for (i, arg) in args.iter().enumerate() {
        let name = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'));
        match name {
            Some("password=") => ask = true,
            Some("password")
                if args
                    .get(i + 1)
                    .is_none_or(|next| next.starts_with('-') && next.len() > 1) =>
            {
                ask = true
            }
            _ => out.push(arg.clone()),
        }
    }
    (out, ask)
}

/// Reads the password from the terminal without echo, or one line from a pipe.
fn read_password() -> Result<String, CliError> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return crate::pveum::prompt("Enter Password: ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("cannot read password: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn columns_are_padded_like_upstream() {
        let rows = vec![
            json!({"path": "/srv/nfs/backup", "options": "10.0.0.0/8"}),
            json!({"path": "/iso", "options": "*"}),
        ];
        assert_eq!(
            columns(&rows, "path", "options"),
            "/srv/nfs/backup 10.0.0.0/8\n/iso            *\n"
        );
        assert_eq!(
            lines(&[json!({"vg": "pve"}), json!({"vg": "data"})], "vg"),
            "pve\ndata\n"
        );
        assert_eq!(columns(&[], "path", "options"), "");
    }

    #[test]
    fn password_without_value_is_asked_for() {
        let (args, ask) = take_password_prompt(&strings(&["nas", "--password"]));
        assert_eq!((args, ask), (strings(&["nas"]), true));
        let (args, ask) = take_password_prompt(&strings(&["nas", "--password", "--username", "u"]));
        assert_eq!((args, ask), (strings(&["nas", "--username", "u"]), true));
        let (args, ask) = take_password_prompt(&strings(&["nas", "--password="]));
        assert_eq!((args, ask), (strings(&["nas"]), true));
        let (args, ask) = take_password_prompt(&strings(&["nas", "--password", "secret"]));
        assert_eq!(
            (args, ask),
            (strings(&["nas", "--password", "secret"]), false)
        );
        let (args, ask) = take_password_prompt(&strings(&["nas", "--password=secret"]));
        assert_eq!((args, ask), (strings(&["nas", "--password=secret"]), false));
    }
}
