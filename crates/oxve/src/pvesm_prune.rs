//! `pvesm prune-backups <storage>`: upstream's retention flags
//! (`--keep-last 3 --keep-daily 7 ...`) become the API's `prune-backups`
//! property string. `--dry-run` prints upstream's table of what would be
//! kept; otherwise the `prunebackups` task runs and its log is printed.

use crate::cli::{self, CliError};
use crate::client;
use crate::pvesm::NODE;
use serde_json::{json, Map, Value};
use std::path::Path;

/// The retention flags, as upstream's `prune-backups` format names them.
const KEEP: &[&str] = &[
    "keep-all",
    "keep-last",
    "keep-hourly",
    "keep-daily",
    "keep-weekly",
    "keep-monthly",
    "keep-yearly",
];

pub const USAGE: &str = "USAGE: pvesm prune-backups <storage> [--dry-run] [--keep-all <0|1>] \
[--keep-last N] [--keep-hourly N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N] \
[--keep-yearly N] [--type <qemu|lxc>] [--vmid <vmid>]\n\
Without --keep-* options the storage's own prune-backups setting applies.";

pub fn main(root: &Path, args: &[String]) -> Result<(), CliError> {
    if cli::wants_help(args) {
        println!("{USAGE}");
        return Ok(());
    }
    let parsed = cli::parse_args(args, None, &["dry-run", "keep-all"])?;
    let [storage] = parsed.positional.as_slice() else {
        return Err(CliError::Usage(format!(
            "pvesm prune-backups: expected exactly one <storage>\n{USAGE}"
        )));
    };
    let mut options = parsed.options;
    let dry_run = options
        .remove("dry-run")
        .is_some_and(|v| truthy(&client::scalar(&v)));
    let mut keep = Vec::new();
    for key in KEEP {
        if let Some(v) = options.remove(*key) {
            let v = client::scalar(&v);
            let v = match (*key, oxve_schema::format::parse_boolean(&v)) {
                ("keep-all", Some(b)) => u8::from(b).to_string(),
                _ => v,
            };
            keep.push(format!("{key}={v}"));
        }
    }
    let mut params = Map::new();
    if !keep.is_empty() {
        params.insert("prune-backups".into(), json!(keep.join(",")));
    }
    for key in ["type", "vmid"] {
        if let Some(v) = options.remove(key) {
            params.insert(key.into(), v);
        }
    }
    if let Some(unknown) = options.keys().next() {
        return Err(CliError::Usage(format!(
            "pvesm prune-backups: unknown option '--{unknown}'\n{USAGE}"
        )));
    }
    let path = format!("/nodes/{NODE}/storage/{storage}/prunebackups");
    if dry_run {
        let data = client::call(root, "GET", &path, &params)?;
        let rows = data.as_array().cloned().unwrap_or_default();
        print!("{}", dry_run_table(&rows));
        return Ok(());
    }
    let upid = client::call(root, "DELETE", &path, &params)?;
    client::follow_task(root, &client::scalar(&upid))
}

fn truthy(v: &str) -> bool {
    oxve_schema::format::parse_boolean(v).unwrap_or(false)
}

/// Upstream's dry-run output: a note, then volume id, `type/vmid` and mark,
/// sorted by guest (backups without one first) and time.
pub fn dry_run_table(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "No backups found\n".into();
    }
    let mut sorted: Vec<&Value> = rows.iter().collect();
    sorted.sort_by_key(|r| {
        (
            r.get("vmid").and_then(Value::as_u64),
            r.get("ctime").and_then(Value::as_i64).unwrap_or(0),
        )
    });
    let text = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let width = sorted
        .iter()
        .map(|r| text(r, "volid").len())
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = String::from(
        "NOTE: this is only a preview and might not be what a subsequent\n\
         prune call does if backups are removed/added in the meantime.\n\n",
    );
    out.push_str(&format!(
        "{:<width$} {:>15} {:>10}\n",
        "Backup", "Backup-ID", "Prune-Mark"
    ));
    for r in sorted {
        let kind = text(r, "type");
        let id = match r.get("vmid").and_then(Value::as_u64) {
            Some(vmid) => format!("{kind}/{vmid}"),
            None => kind,
        };
        out.push_str(&format!(
            "{:<width$} {:>15} {:>10}\n",
            text(r, "volid"),
            id,
            text(r, "mark")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sorted_by_guest_then_time() {
        let rows = vec![
            json!({"volid": "local:backup/vzdump-qemu-101-2024_01_02-00_00_00.vma", "vmid": 101,
                   "type": "qemu", "ctime": 20, "mark": "keep"}),
            json!({"volid": "local:backup/vzdump-qemu-100-2024_01_02-00_00_00.vma", "vmid": 100,
                   "type": "qemu", "ctime": 20, "mark": "keep"}),
            json!({"volid": "local:backup/vzdump-qemu-100-2024_01_01-00_00_00.vma", "vmid": 100,
                   "type": "qemu", "ctime": 10, "mark": "remove"}),
            json!({"volid": "local:backup/vzdump-lxc-x.tar", "type": "lxc",
                   "ctime": 5, "mark": "renamed"}),
        ];
        let text = dry_run_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NOTE: this is only a preview and might not be what a subsequent"
        );
        assert_eq!(lines[2], "");
        let w = "local:backup/vzdump-qemu-101-2024_01_02-00_00_00.vma".len() + 1;
        assert_eq!(
            lines[3],
            format!("{:<w$} {:>15} {:>10}", "Backup", "Backup-ID", "Prune-Mark")
        );
        assert!(
            lines[4].starts_with("local:backup/vzdump-lxc-x.tar ")
                && lines[4].ends_with("lxc    renamed")
        );
        assert!(lines[5].contains("100-2024_01_01") && lines[5].ends_with("qemu/100     remove"));
        assert!(lines[6].contains("100-2024_01_02") && lines[6].ends_with("qemu/100       keep"));
        assert!(lines[7].contains("qemu-101"));
        assert_eq!(dry_run_table(&[]), "No backups found\n");
    }
}
