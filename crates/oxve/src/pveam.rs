//! `pveam`: container templates. As upstream, `update` and `available` are
//! local: `update` downloads the node's appliance indexes into its root
//! (there is no API method for it, and the indexes are node-local files),
//! `available` reads them. `download` starts the node's `download` task
//! through `POST /nodes/{node}/aplinfo` and follows its log; `list` and
//! `remove` go through the storage content API.

use crate::cli::{self, CliError};
use crate::client;
use oxve_schema::api::{ApiSchema, Verb};
use oxve_storage::aplinfo::{self, Source};
use oxve_storage::{volume, Content, VolumeId};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The node the CLI talks about: the local one.
const NODE: &str = "localhost";

/// The sections `available --section` accepts (upstream's enumeration).
const SECTIONS: &[&str] = &["system", "mail", "turnkeylinux"];

/// Sub-commands: name, positional arguments, what it does.
const COMMANDS: &[(&str, &[&str], &str)] = &[
    ("update", &[], "Update Container Template Database."),
    ("available", &[], "List available templates."),
    (
        "download",
        &["storage", "template"],
        "Download appliance templates.",
    ),
    (
        "list",
        &["storage"],
        "Get list of all templates on storage.",
    ),
    ("remove", &["template_path"], "Remove a template."),
];

pub fn main(root: &Path, args: Vec<String>) -> Result<(), CliError> {
    let name = args.first().map(String::as_str).unwrap_or("help");
    let Some((_, positional, summary)) = COMMANDS.iter().find(|c| c.0 == name) else {
        if matches!(name, "help" | "--help" | "-h") {
            println!("{}", usage());
            return Ok(());
        }
        return Err(CliError::Usage(format!(
            "unknown command 'pveam {name}'\n{}",
            usage()
        )));
    };
    let rest = &args[1..];
    if cli::wants_help(rest) {
        println!("USAGE: {}\n\n  {summary}", synopsis(name, positional));
        if name == "download" {
            if let Some(m) = ApiSchema::embedded().method(Verb::Post, "/nodes/{node}/aplinfo") {
                let hidden: Vec<&str> = positional.iter().copied().chain(["node"]).collect();
                print!("{}", cli::describe_params(m, &hidden));
            }
        }
        return Ok(());
    }
    let parsed = cli::parse_args(rest, None, &[])?;
    let mut options = parsed.options;
    if parsed.positional.len() != positional.len() {
        return Err(CliError::Usage(format!(
            "pveam {name}: expected {} argument(s) - USAGE: {}",
            positional.len(),
            synopsis(name, positional)
        )));
    }
    let section = match name {
        "available" => options.remove("section").map(|v| client::scalar(&v)),
        _ => None,
    };
    if let Some(key) = options.keys().next() {
        return Err(CliError::Usage(format!(
            "pveam {name}: unknown option '--{key}'"
        )));
    }
    let arg = |i: usize| parsed.positional[i].as_str();
    match name {
        "update" => update(root),
        "available" => available(root, section.as_deref()),
        "download" => download(root, arg(0), arg(1)),
        "list" => list(root, arg(0)),
        _ => remove(root, arg(0)),
    }
}

fn synopsis(name: &str, positional: &[&str]) -> String {
    let args: String = positional.iter().map(|p| format!(" <{p}>")).collect();
    let opts = if name == "available" {
        " [--section <system | mail | turnkeylinux>]"
    } else {
        ""
    };
    format!("pveam {name}{args}{opts}")
}

fn usage() -> String {
    let mut out = String::from("USAGE: pveam <COMMAND> [ARGS] [OPTIONS]\n");
    for (name, positional, _) in COMMANDS {
        out.push_str(&format!("       {}\n", synopsis(name, positional)));
    }
    out.push_str("Add --help to a command for its description.");
    out
}

fn api(e: impl std::fmt::Display) -> CliError {
    CliError::Api(e.to_string())
}

// ---- update ---------------------------------------------------------------

/// Downloads every source's index; a source that fails keeps its previous
/// index, and the command fails naming it (upstream exits 0 then, which
/// scripts cannot see).
fn update(root: &Path) -> Result<(), CliError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(api(
            "pveam update: only root can update the appliance index",
        ));
    }
    let sources = aplinfo::read_sources(root).map_err(api)?;
    let mut log = UpdateLog::open(root)?;
    log.line("starting update");
    let mut failed = Vec::new();
    for source in &sources {
        match update_source(root, source, &mut log) {
            Ok(count) => log.line(format!(
                "update of '{}' successful: {count} appliances",
                source.url
            )),
            Err(e) => {
                log.line(&e);
                failed.push(format!("{}: {e}", source.url));
            }
        }
    }
    if failed.is_empty() {
        println!("update successful");
        Ok(())
    } else {
        Err(api(format!(
            "update failed - {} (see {} for details)",
            failed.join("; "),
            log.path.display()
        )))
    }
}

fn update_source(root: &Path, source: &Source, log: &mut UpdateLog) -> Result<usize, String> {
    let dir = root.join(aplinfo::INDEX_DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("unable to create '{}': {e}", dir.display()))?;
    let stem = format!(".pveam-{}.tmp.{}", source.stored_name(), std::process::id());
    let tmp = dir.join(&stem);
    let packed = dir.join(format!("{stem}.gz"));
    let signature = dir.join(format!("{stem}.asc"));
    let result = (|| {
        if source.compressed() {
            fetch_file(log, &source.url, &packed)?;
            gunzip(&packed, &tmp)?;
        } else {
            fetch_file(log, &source.url, &tmp)?;
        }
        match &source.keyring {
            Some(keyring) => {
                fetch_file(log, &source.signature_url(), &signature)?;
                verify_signature(log, keyring, &signature, &tmp)?;
            }
            None => log.line(format!(
                "no keyring configured for '{}': index taken without signature check",
                source.url
            )),
        }
        let bytes = std::fs::read(&tmp).map_err(|e| format!("unable to read index: {e}"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| "update failed: the index is not UTF-8 text".to_string())?;
        aplinfo::store(root, source, &text).map_err(|e| format!("update failed: {e}"))
    })();
    for f in [&tmp, &packed, &signature] {
        let _ = std::fs::remove_file(f);
    }
    result
}

/// `curl` into `dest`: http(s) only, also across redirects.
fn fetch_file(log: &mut UpdateLog, url: &str, dest: &Path) -> Result<(), String> {
    log.line(format!("start download {url}"));
    let out = Command::new("curl")
        .args([
            "--fail",
            "--location",
            "--silent",
            "--show-error",
            "--proto",
            "=http,https",
            "--proto-redir",
            "=http,https",
            "--max-time",
            "600",
            "--output",
        ])
        .arg(dest)
        .arg("--")
        .arg(url)
        .output()
        .map_err(|e| format!("unable to run curl: {e}"))?;
    if out.status.success() {
        log.line("download finished");
        Ok(())
    } else {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        log.line(format!("download failed: {why}"));
        Err(format!("download of '{url}' failed: {why}"))
    }
}

fn gunzip(from: &Path, to: &Path) -> Result<(), String> {
    let out = std::fs::File::create(to)
        .map_err(|e| format!("unable to create '{}': {e}", to.display()))?;
    let status = Command::new("gzip")
        .arg("-dc")
        .arg(from)
        .stdout(out)
        .output()
        .map_err(|e| format!("unable to run gzip: {e}"))?;
    if status.status.success() {
        Ok(())
    } else {
        Err(format!(
            "update failed: unable to unpack the index: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        ))
    }
}

/// Checks the detached signature with `sqv` (as upstream) or, without it,
/// `gpgv`, against the source's keyring only.
fn verify_signature(
    log: &mut UpdateLog,
    keyring: &Path,
    signature: &Path,
    data: &Path,
) -> Result<(), String> {
    if !keyring.is_file() {
        return Err(format!("keyring '{}' does not exist", keyring.display()));
    }
    let tool = ["sqv", "gpgv"]
        .into_iter()
        .find(|t| in_path(t))
        .ok_or("unable to verify signature - neither sqv nor gpgv is installed")?;
    let out = Command::new(tool)
        .arg("--keyring")
        .arg(keyring)
        .arg(signature)
        .arg(data)
        .output()
        .map_err(|e| format!("unable to run {tool}: {e}"))?;
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        log.line(format!("signature verification: {line}"));
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "unable to verify signature - {tool} exited with {}",
            out.status.code().unwrap_or(-1)
        ))
    }
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// The update log (upstream's `/var/log/pveam.log`), kept under 256 KiB by
/// moving it to `.0`.
struct UpdateLog {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl UpdateLog {
    fn open(root: &Path) -> Result<UpdateLog, CliError> {
        let path = root.join("var/log/oxve/pveam.log");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| api(format!("unable to create '{}': {e}", dir.display())))?;
        }
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > 256 * 1024) {
            let _ = std::fs::rename(&path, path.with_extension("log.0"));
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| api(format!("unable to open '{}': {e}", path.display())))?;
        Ok(UpdateLog {
            path,
            file: Some(file),
        })
    }

    fn line(&mut self, text: impl AsRef<str>) {
        let stamp = chrono::Local::now().format("%F %H:%M:%S");
        if let Some(f) = self.file.as_mut() {
            for line in text.as_ref().lines() {
                if writeln!(f, "{stamp} {line}").is_err() {
                    self.file = None;
                    return;
                }
            }
        }
    }
}

// ---- available ------------------------------------------------------------

fn available(root: &Path, section: Option<&str>) -> Result<(), CliError> {
    if let Some(s) = section {
        if !SECTIONS.contains(&s) {
            return Err(CliError::Usage(format!(
                "section: value '{s}' does not have a value in the enumeration '{}'",
                SECTIONS.join(", ")
            )));
        }
    }
    let sources = aplinfo::read_sources(root).map_err(api)?;
    if !sources
        .iter()
        .any(|s| aplinfo::index_path(root, s).exists())
    {
        eprintln!("no appliance index downloaded yet - run 'pveam update'");
    }
    let (all, warnings) = aplinfo::load(root).map_err(api)?;
    for w in warnings {
        eprintln!("{w}");
    }
    let mut by_section: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in all.values() {
        by_section
            .entry(a.section())
            .or_default()
            .insert(a.template());
    }
    print!("{}", available_table(&by_section, section));
    Ok(())
}

/// Upstream's listing: section and template, sorted by both.
fn available_table(by_section: &BTreeMap<&str, BTreeSet<&str>>, only: Option<&str>) -> String {
    let mut out = String::new();
    for (section, templates) in by_section {
        if only.is_some_and(|s| s != *section) {
            continue;
        }
        for t in templates {
            out.push_str(&format!("{section:<15} {t}\n"));
        }
    }
    out
}

// ---- download -------------------------------------------------------------

fn download(root: &Path, storage: &str, template: &str) -> Result<(), CliError> {
    let params = json!({"storage": storage, "template": template});
    let Value::Object(params) = params else {
        unreachable!("json! of an object")
    };
    let upid = client::call(root, "POST", &format!("/nodes/{NODE}/aplinfo"), &params)?;
    client::follow_task(root, &client::scalar(&upid))
}

// ---- list and remove ------------------------------------------------------

fn list(root: &Path, storage: &str) -> Result<(), CliError> {
    let status = client::call(
        root,
        "GET",
        &format!("/nodes/{NODE}/storage/{storage}/status"),
        &Map::new(),
    )?;
    let content = status.get("content").and_then(Value::as_str).unwrap_or("");
    if !content.split(',').any(|c| c == "vztmpl") {
        return Err(api("Storage does not support templates!"));
    }
    let mut query = Map::new();
    query.insert("content".into(), json!("vztmpl"));
    let rows = client::call(
        root,
        "GET",
        &format!("/nodes/{NODE}/storage/{storage}/content"),
        &query,
    )?;
    print!("{}", list_table(rows.as_array().map_or(&[], Vec::as_slice)));
    Ok(())
}

/// Upstream's `pveam list`: volume id and size in MiB.
fn list_table(rows: &[Value]) -> String {
    let mut out = format!("{:<60} {:<6}\n", "NAME", "SIZE");
    for r in rows {
        let size = r.get("size").and_then(Value::as_u64).unwrap_or(0);
        out.push_str(&format!(
            "{:<60} {:<4.2}MB\n",
            r.get("volid").and_then(Value::as_str).unwrap_or(""),
            size as f64 / (1024.0 * 1024.0)
        ));
    }
    out
}

fn remove(root: &Path, template_path: &str) -> Result<(), CliError> {
    let volid = VolumeId::parse(template_path).map_err(api)?;
    let is_template =
        volume::parse_file_volname(&volid.volname).is_ok_and(|v| v.content == Content::Vztmpl);
    if !is_template {
        return Err(api(format!(
            "'{template_path}' is not a container template (vztmpl) volume"
        )));
    }
    let mut query = Map::new();
    query.insert("delay".into(), json!(30));
    let data = client::call(
        root,
        "DELETE",
        &format!("/nodes/{NODE}/storage/{}/content/{volid}", volid.storage),
        &query,
    )?;
    if let Value::String(upid) = data {
        println!("removal continues in task {upid}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_is_sorted_by_section_then_template() {
        let mut m: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        m.entry("turnkeylinux").or_default().insert("z.tar.gz");
        m.entry("system").or_default().insert("b.tar.zst");
        m.entry("system").or_default().insert("a.tar.xz");
        assert_eq!(
            available_table(&m, None),
            "system          a.tar.xz\nsystem          b.tar.zst\nturnkeylinux    z.tar.gz\n"
        );
        assert_eq!(
            available_table(&m, Some("turnkeylinux")),
            "turnkeylinux    z.tar.gz\n"
        );
    }

    #[test]
    fn list_in_mib() {
        let rows = vec![json!({"volid": "local:vztmpl/a.tar.gz", "size": 3 * 1024 * 1024 / 2})];
        let text = list_table(&rows);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap().trim_end(),
            format!("{:<60} SIZE", "NAME")
        );
        assert_eq!(
            lines.next().unwrap(),
            format!("{:<60} 1.50MB", "local:vztmpl/a.tar.gz")
        );
    }
}
