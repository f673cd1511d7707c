//! `pveum`: users, groups, roles, ACLs, pools, realms, tokens and passwords
//! with upstream's sub-commands, each a thin mapping onto an API method.

use crate::cli::{self, CliError};
use crate::client;
use crate::output::{self, OutputOptions};
use oxve_schema::api::{ApiSchema, Verb};
use serde_json::{json, Value};
use std::path::Path;

/// One sub-command: words, API method, positional parameter names, and
/// fixed parameters it adds.
struct Command {
    words: &'static [&'static str],
    verb: Verb,
    path: &'static str,
    positional: &'static [&'static str],
    fixed: &'static [(&'static str, &'static str)],
}

const fn cmd(
    words: &'static [&'static str],
    verb: Verb,
    path: &'static str,
    positional: &'static [&'static str],
) -> Command {
    Command {
        words,
        verb,
        path,
        positional,
        fixed: &[],
    }
}

const COMMANDS: &[Command] = &[
    cmd(&["user", "add"], Verb::Post, "/access/users", &["userid"]),
    cmd(
        &["user", "modify"],
        Verb::Put,
        "/access/users/{userid}",
        &["userid"],
    ),
    cmd(
        &["user", "delete"],
        Verb::Delete,
        "/access/users/{userid}",
        &["userid"],
    ),
    cmd(&["user", "list"], Verb::Get, "/access/users", &[]),
    cmd(
        &["user", "permissions"],
        Verb::Get,
        "/access/permissions",
        &["userid"],
    ),
    cmd(
        &["user", "tfa", "list"],
        Verb::Get,
        "/access/tfa/{userid}",
        &["userid"],
    ),
    cmd(
        &["user", "tfa", "delete"],
        Verb::Delete,
        "/access/tfa/{userid}/{id}",
        &["userid", "id"],
    ),
    cmd(
        &["user", "tfa", "unlock"],
        Verb::Put,
        "/access/users/{userid}/unlock-tfa",
        &["userid"],
    ),
    cmd(
        &["user", "token", "add"],
        Verb::Post,
        "/access/users/{userid}/token/{tokenid}",
        &["userid", "tokenid"],
    ),
    cmd(
        &["user", "token", "modify"],
        Verb::Put,
        "/access/users/{userid}/token/{tokenid}",
        &["userid", "tokenid"],
    ),
    cmd(
        &["user", "token", "remove"],
        Verb::Delete,
        "/access/users/{userid}/token/{tokenid}",
        &["userid", "tokenid"],
    ),
    cmd(
        &["user", "token", "list"],
        Verb::Get,
        "/access/users/{userid}/token",
        &["userid"],
    ),
    cmd(
        &["user", "token", "permissions"],
        Verb::Get,
        "/access/permissions",
        &["userid", "tokenid"],
    ),
    cmd(
        &["group", "add"],
        Verb::Post,
        "/access/groups",
        &["groupid"],
    ),
    cmd(
        &["group", "modify"],
        Verb::Put,
        "/access/groups/{groupid}",
        &["groupid"],
    ),
    cmd(
        &["group", "delete"],
        Verb::Delete,
        "/access/groups/{groupid}",
        &["groupid"],
    ),
    cmd(&["group", "list"], Verb::Get, "/access/groups", &[]),
    cmd(&["role", "add"], Verb::Post, "/access/roles", &["roleid"]),
    cmd(
        &["role", "modify"],
        Verb::Put,
        "/access/roles/{roleid}",
        &["roleid"],
    ),
    cmd(
        &["role", "delete"],
        Verb::Delete,
        "/access/roles/{roleid}",
        &["roleid"],
    ),
    cmd(&["role", "list"], Verb::Get, "/access/roles", &[]),
    cmd(&["acl", "modify"], Verb::Put, "/access/acl", &["path"]),
    Command {
        words: &["acl", "delete"],
        verb: Verb::Put,
        path: "/access/acl",
        positional: &["path"],
        fixed: &[("delete", "1")],
    },
    cmd(&["acl", "list"], Verb::Get, "/access/acl", &[]),
    cmd(&["pool", "add"], Verb::Post, "/pools", &["poolid"]),
    cmd(
        &["pool", "modify"],
        Verb::Put,
        "/pools/{poolid}",
        &["poolid"],
    ),
    cmd(
        &["pool", "delete"],
        Verb::Delete,
        "/pools/{poolid}",
        &["poolid"],
    ),
    cmd(&["pool", "list"], Verb::Get, "/pools", &[]),
    cmd(&["realm", "add"], Verb::Post, "/access/domains", &["realm"]),
    cmd(
        &["realm", "modify"],
        Verb::Put,
        "/access/domains/{realm}",
        &["realm"],
    ),
    cmd(
        &["realm", "delete"],
        Verb::Delete,
        "/access/domains/{realm}",
        &["realm"],
    ),
    cmd(&["realm", "list"], Verb::Get, "/access/domains", &[]),
    cmd(&["passwd"], Verb::Put, "/access/password", &["userid"]),
    // Upstream's short aliases.
    cmd(&["useradd"], Verb::Post, "/access/users", &["userid"]),
    cmd(
        &["usermod"],
        Verb::Put,
        "/access/users/{userid}",
        &["userid"],
    ),
    cmd(
        &["userdel"],
        Verb::Delete,
        "/access/users/{userid}",
        &["userid"],
    ),
    cmd(&["groupadd"], Verb::Post, "/access/groups", &["groupid"]),
    cmd(
        &["groupmod"],
        Verb::Put,
        "/access/groups/{groupid}",
        &["groupid"],
    ),
    cmd(
        &["groupdel"],
        Verb::Delete,
        "/access/groups/{groupid}",
        &["groupid"],
    ),
    cmd(&["roleadd"], Verb::Post, "/access/roles", &["roleid"]),
    cmd(
        &["rolemod"],
        Verb::Put,
        "/access/roles/{roleid}",
        &["roleid"],
    ),
    cmd(
        &["roledel"],
        Verb::Delete,
        "/access/roles/{roleid}",
        &["roleid"],
    ),
    cmd(&["aclmod"], Verb::Put, "/access/acl", &["path"]),
    Command {
        words: &["acldel"],
        verb: Verb::Put,
        path: "/access/acl",
        positional: &["path"],
        fixed: &[("delete", "1")],
    },
];

pub fn main(root: &Path, args: Vec<String>) -> Result<(), CliError> {
    let words: Vec<&str> = args
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let command = COMMANDS
        .iter()
        .filter(|c| words.len() >= c.words.len() && words[..c.words.len()] == *c.words)
        .max_by_key(|c| c.words.len());
    let Some(command) = command else {
        if args.is_empty() || cli::wants_help(&args) || words.first() == Some(&"help") {
            println!("{}", usage(&words));
            return Ok(());
        }
        return Err(CliError::Usage(format!(
            "unknown command 'pveum {}'\n{}",
            words.join(" "),
            usage(&words)
        )));
    };
    let method = ApiSchema::embedded()
        .method(command.verb, command.path)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no API method for pveum {}",
                command.words.join(" ")
            ))
        })?;
    let rest = &args[command.words.len()..];
    if cli::wants_help(rest) {
        println!(
            "USAGE: pveum {} {}[OPTIONS]\n{}",
            command.words.join(" "),
            command
                .positional
                .iter()
                .map(|p| format!("<{p}> "))
                .collect::<String>(),
            cli::describe_params(method, command.positional)
        );
        return Ok(());
    }
    let mut parsed = cli::parse_args(rest, Some(method), &["noborder", "noheader"])?;
    let opts = OutputOptions::take(&mut parsed.options)?;
    let mut params = parsed.options;
    let optional_trailing = matches!(command.words, ["user", "permissions"]);
    for (i, name) in command.positional.iter().enumerate() {
        match parsed.positional.get(i) {
            Some(v) => {
                params.insert((*name).to_string(), Value::String(v.clone()));
            }
            None if optional_trailing => {}
            None => {
                return Err(CliError::Usage(format!(
                    "pveum {}: missing argument <{name}>",
                    command.words.join(" ")
                )))
            }
        }
    }
    if let Some(extra) = parsed.positional.get(command.positional.len()) {
        return Err(CliError::Usage(format!("unexpected argument '{extra}'")));
    }
    for (k, v) in command.fixed {
        params.insert((*k).to_string(), json!(v));
    }
    // `user token permissions <userid> <tokenid>` asks for the token's own view.
    if command.words == ["user", "token", "permissions"] {
        let user = params.remove("userid").unwrap_or(Value::Null);
        let token = params.remove("tokenid").unwrap_or(Value::Null);
        params.insert(
            "userid".into(),
            json!(format!(
                "{}!{}",
                client::scalar(&user),
                client::scalar(&token)
            )),
        );
    }
    if command.words == ["passwd"] && !params.contains_key("password") {
        let password = read_password()?;
        params.insert("password".into(), Value::String(password));
    }
    // Fill `{var}` path segments from the parameters.
    let mut path = command.path.to_string();
    for seg in command.path.split('/').filter(|s| s.starts_with('{')) {
        let name = seg.trim_matches(['{', '}']);
        let value = params.get(name).map(client::scalar).unwrap_or_default();
        path = path.replace(seg, &value);
    }
    let data = client::call(root, command.verb.as_str(), &path, &params)?;
    let columns = crate::pvesh::columns_of(method);
    match (command.words.last(), &data) {
        (Some(&"add"), Value::Object(_)) if command.words.contains(&"token") => {
            output::print(&data, opts, &columns)
        }
        (_, Value::Null) => {}
        _ => output::print(&data, opts, &columns),
    }
    Ok(())
}

/// Reads a new password twice from the terminal, or once from a pipe.
pub(crate) fn read_password() -> Result<String, CliError> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Usage(format!("cannot read password: {e}")))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let first = prompt("Enter new password: ")?;
    let second = prompt("Retype new password: ")?;
    if first != second {
        return Err(CliError::Usage("passwords do not match".into()));
    }
    Ok(first)
}

pub(crate) fn prompt(text: &str) -> Result<String, CliError> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::{BufRead, Write};
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).map_err(|e| CliError::Usage(format!("terminal: {e}")))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read.map_err(|e| CliError::Usage(format!("cannot read password: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn usage(prefix: &[&str]) -> String {
    let mut out = String::from("USAGE: pveum <COMMAND> [ARGS] [OPTIONS]\n");
    for c in COMMANDS {
        if prefix.is_empty()
            || prefix.iter().zip(c.words).all(|(a, b)| a == b)
            || prefix == ["help"]
        {
            out.push_str(&format!(
                "       pveum {} {}[OPTIONS]\n",
                c.words.join(" "),
                c.positional
                    .iter()
                    .map(|p| format!("<{p}> "))
                    .collect::<String>()
            ));
        }
    }
    out.push_str("Add --help to a command for its options.");
    out
}
