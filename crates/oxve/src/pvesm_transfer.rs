//! `pvesm export` / `pvesm import`: stream a volume out of or into a
//! storage of this node (`-` is stdout / stdin), the building blocks of
//! moving volumes between nodes. As upstream, they run in the CLI process
//! itself (as root, on the node's root directory), not through the daemon:
//! the stream never passes the API.

use crate::cli::{self, CliError};
use oxve_storage::{StoragePlugin, VolumeId};
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

/// Upstream's known stream formats (what the plugin accepts is its own).
const FORMATS: &[&str] = &[
    "raw+size",
    "tar+size",
    "qcow2+size",
    "vmdk+size",
    "zfs",
    "btrfs",
];

const EXPORT_USAGE: &str = "USAGE: pvesm export <volume> <format> <filename> \
[--snapshot NAME] [--base NAME] [--with-snapshots <0|1>] [--snapshot-list LIST]\n\
<format>: raw+size | tar+size | qcow2+size | vmdk+size | zfs | btrfs; <filename> '-' is stdout";

const IMPORT_USAGE: &str = "USAGE: pvesm import <volume> <format> <filename> \
[--base NAME] [--with-snapshots <0|1>] [--delete-snapshot NAME] [--allow-rename <0|1>] \
[--snapshot NAME]\n\
<format>: raw+size | tar+size | qcow2+size | vmdk+size | zfs | btrfs; <filename> '-' is stdin";

/// `pvesm export`.
pub fn export(root: &Path, args: &[String]) -> Result<(), CliError> {
    if cli::wants_help(args) {
        println!("{EXPORT_USAGE}");
        return Ok(());
    }
    let call = Call::parse(
        args,
        &["with-snapshots"],
        &["snapshot", "base", "with-snapshots", "snapshot-list"],
        EXPORT_USAGE,
    )?;
    let snapshot = call.snapshot_option("snapshot", 40)?;
    call.refuse_incremental()?;
    let with_snapshots = call.flag("with-snapshots") || call.options.contains_key("snapshot-list");
    call.check_snapshots(with_snapshots)?;
    let plugin = call.open(root)?;
    let filename = call.filename.clone();
    let mut out: Box<dyn Write> = if filename == "-" {
        // Only the stream may reach stdout.
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| CliError::Api(format!("unable to dup() STDOUT - {e}")))?;
        Box::new(BufWriter::with_capacity(1 << 20, File::from(fd)))
    } else {
        let f =
            File::create(&filename).map_err(|e| CliError::Api(format!("open({filename}): {e}")))?;
        Box::new(BufWriter::with_capacity(1 << 20, f))
    };
    let result = plugin
        .export(
            &call.id.volname,
            &call.format,
            snapshot.as_deref(),
            &mut out,
        )
        .map_err(|e| CliError::Api(e.to_string()))
        .and_then(|_| {
            out.flush()
                .map_err(|e| CliError::Api(format!("write: {e}")))
        });
    drop(out);
    if result.is_err() && filename != "-" {
        let _ = std::fs::remove_file(&filename);
    }
    result
}

/// `pvesm import`.
pub fn import(root: &Path, args: &[String]) -> Result<(), CliError> {
    if cli::wants_help(args) {
        println!("{IMPORT_USAGE}");
        return Ok(());
    }
    let call = Call::parse(
        args,
        &["with-snapshots", "allow-rename"],
        &[
            "base",
            "with-snapshots",
            "delete-snapshot",
            "allow-rename",
            "snapshot",
        ],
        IMPORT_USAGE,
    )?;
    call.snapshot_option("snapshot", 40)?;
    let delete = call.snapshot_option("delete-snapshot", 80)?;
    call.refuse_incremental()?;
    let with_snapshots = call.flag("with-snapshots");
    call.check_snapshots(with_snapshots)?;
    let allow_rename = call.flag("allow-rename");
    let filename = call.filename.clone();
    if filename.starts_with("tcp://") || filename.starts_with("unix://") {
        return Err(CliError::Api(format!(
            "import from '{filename}' is not supported by oxve yet (use '-' or a file)"
        )));
    }
    let plugin = call.open(root)?;
    let api = |e: oxve_storage::StorageError| CliError::Api(e.to_string());
    let vol = plugin.parse_volname(&call.id.volname).map_err(api)?;
    plugin.check_content(vol.content).map_err(api)?;
    if vol.base.is_some() {
        return Err(CliError::Api(format!(
            "cannot import into linked clone '{}'",
            call.id
        )));
    }
    let name = oxve_storage::copy::import_name(&*plugin, &vol, allow_rename).map_err(api)?;
    let mut input: Box<dyn Read> = if filename == "-" {
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| CliError::Api(format!("unable to dup() STDIN - {e}")))?;
        Box::new(BufReader::with_capacity(1 << 20, File::from(fd)))
    } else {
        let f =
            File::open(&filename).map_err(|e| CliError::Api(format!("open({filename}): {e}")))?;
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    let vmid = vol.vmid.unwrap_or_default();
    let volname = plugin
        .import(vmid, &name, &call.format, &mut input)
        .map_err(api)?;
    if let Some(snap) = delete {
        plugin.delete_snapshot(&volname, &snap).map_err(api)?;
    }
    println!(
        "successfully imported '{}'",
        VolumeId::new(&call.id.storage, &volname)
    );
    Ok(())
}

/// The parsed arguments both commands share.
struct Call {
    id: VolumeId,
    format: String,
    filename: String,
    options: Map<String, Value>,
}

impl Call {
    fn parse(
        args: &[String],
        flags: &[&str],
        known: &[&str],
        usage: &str,
    ) -> Result<Call, CliError> {
        let parsed = cli::parse_args(args, None, flags)?;
        let [volume, format, filename] = parsed.positional.as_slice() else {
            return Err(CliError::Usage(format!(
                "expected <volume> <format> <filename>\n{usage}"
            )));
        };
        if let Some(unknown) = parsed.options.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(CliError::Usage(format!(
                "unknown option '--{unknown}'\n{usage}"
            )));
        }
        if !FORMATS.contains(&format.as_str()) {
            return Err(CliError::Usage(format!(
                "format: value '{format}' does not have a value in the enumeration '{}'",
                FORMATS.join(", ")
            )));
        }
        let id = VolumeId::parse(volume).map_err(|e| CliError::Usage(format!("volume: {e}")))?;
        Ok(Call {
            id,
            format: format.clone(),
            filename: filename.clone(),
            options: parsed.options,
        })
    }

    fn text(&self, key: &str) -> Option<String> {
        self.options.get(key).map(crate::client::scalar)
    }

    fn flag(&self, key: &str) -> bool {
        self.text(key)
            .and_then(|v| oxve_schema::format::parse_boolean(&v))
            .unwrap_or(false)
    }

    /// A snapshot name option, checked as upstream's schema does.
    fn snapshot_option(&self, key: &str, max: usize) -> Result<Option<String>, CliError> {
        let Some(v) = self.text(key) else {
            return Ok(None);
        };
        let ok = !v.is_empty()
            && v.len() <= max
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(CliError::Usage(format!(
                "{key}: value does not match the regex pattern [a-z0-9_-]{{1,{max}}}"
            )));
        }
        Ok(Some(v))
    }

    fn refuse_incremental(&self) -> Result<(), CliError> {
        if self.options.contains_key("base") {
            return Err(CliError::Api(
                "incremental streams (--base) are not supported by oxve yet".into(),
            ));
        }
        Ok(())
    }

    /// A qcow2 file carries its snapshots in the stream; the other formats
    /// oxve's plugins write carry one state only.
    fn check_snapshots(&self, with_snapshots: bool) -> Result<(), CliError> {
        if with_snapshots && self.format != "qcow2+size" {
            return Err(CliError::Api(format!(
                "cannot transfer format {} with snapshots",
                self.format
            )));
        }
        Ok(())
    }

    /// The volume's storage, opened from the node's config store and activated.
    fn open(&self, root: &Path) -> Result<Box<dyn StoragePlugin>, CliError> {
        let plugin = oxve_api::storage::open_storage_at(root, &self.id.storage)
            .map_err(|e| CliError::Api(e.to_string()))?;
        plugin
            .activate()
            .map_err(|e| CliError::Api(e.to_string()))?;
        Ok(plugin)
    }
}
