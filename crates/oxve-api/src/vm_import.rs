//! Disk import: `import-from=<source>` on a new drive (`<storage>:0`) of a
//! VM create or config update, and `qm disk import`. The new volume is
//! allocated on the target storage with the source's virtual size and
//! filled by `qemu-img convert` (progress in the task log); the drive
//! value keeps its options, loses `import-from` and `format`, and gets
//! the new volume and its `size`.
//!
//! Sources, as upstream's:
//! - an absolute path on the host (a file or block device): untrusted —
//!   `qemu-img info` must find no backing file, no external data file and
//!   no multi-extent VMDK; its detected format is the one converted;
//! - an `import` volume (`local:import/disk.qcow2`): untrusted likewise;
//!   disks inside an OVA need extracting first (not built);
//! - an `images` volume (another VM's disk, `local:100/vm-100-disk-0.raw`):
//!   copied like a full clone of it. Its owner VM is locked meanwhile —
//!   shared when stopped, exclusive when running — and a running owner's
//!   attached disk is copied by QEMU itself (drive-mirror, cancelled once in
//!   step), so the copy is consistent and the VM keeps its image.

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::node::Node;
use crate::vm_clone::{self, CloneSpec};
use oxve_schema::vmconfig::drive_file;
use oxve_storage::{Content, StorageDef, StoragePlugin, VolumeId};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where an import reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSource {
    /// A file or block device of the host (an absolute path).
    Path(PathBuf),
    /// A volume of a storage (`images` or `import` content).
    Volume(VolumeId),
}

impl ImportSource {
    /// Parses an `import-from` value: an absolute path or a volume id.
    pub fn parse(text: &str) -> Result<ImportSource, String> {
        if text.starts_with('/') {
            return Ok(ImportSource::Path(PathBuf::from(text)));
        }
        VolumeId::parse(text)
            .map(ImportSource::Volume)
            .map_err(|e| e.to_string())
    }
}

/// A parsed `<storage>:0,import-from=<source>` drive value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRequest {
    /// The storage of the new volume.
    pub storage: String,
    pub source: ImportSource,
    /// The requested format of the new volume (`format=`).
    pub format: Option<String>,
}

/// How long an import waits for the lock of the source's owner VM (as
/// upstream's config lock).
const OWNER_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The `import-from` option of a drive value, when it has one.
pub fn import_from(value: &str) -> Option<&str> {
    drive_opt(value, "import-from")
}

/// One option of a drive property string.
fn drive_opt<'a>(value: &'a str, key: &str) -> Option<&'a str> {
    value
        .split(',')
        .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
}

/// Parses drive `key`'s import value with upstream's rules: the file must
/// be `<storage>:0`, an EFI disk names its `efitype` and
/// `pre-enrolled-keys`, a TPM state its `version`.
pub fn parse_request(key: &str, value: &str) -> ApiResult<ImportRequest> {
    let source = import_from(value).ok_or_else(|| ApiError::param(key, "no 'import-from'"))?;
    let special = || {
        ApiError::param(
            key,
            "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>",
        )
    };
    let file = drive_file(value).ok_or_else(special)?;
    let (storage, size) = file.split_once(':').ok_or_else(special)?;
    if !is_zero_size(size) || !oxve_storage::volume::is_storage_id(storage) {
        return Err(special());
    }
    if crate::vm::is_cdrom(value) {
        return Err(ApiError::param(
            key,
            "'import-from' makes a disk, not a CD-ROM",
        ));
    }
    let required: &[&str] = match key {
        "efidisk0" => &["efitype", "pre-enrolled-keys"],
        "tpmstate0" => &["version"],
        _ => &[],
    };
    for r in required {
        if drive_opt(value, r).is_none() {
            return Err(ApiError::param(
                key,
                format!("need to specify '{r}' when using 'import-from'"),
            ));
        }
    }
    let source = ImportSource::parse(source)
        .map_err(|e| ApiError::param(key, format!("invalid 'import-from': {e}")))?;
    Ok(ImportRequest {
        storage: storage.to_string(),
        source,
        format: drive_opt(value, "format").map(str::to_string),
    })
}

/// Whether a new disk's size is upstream's `\d+(\.\d+)?` and zero.
fn is_zero_size(size: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let number = match size.split_once('.') {
        Some((int, frac)) => digits(int) && digits(frac),
        None => digits(size),
    };
    number && size.bytes().all(|b| b == b'0' || b == b'.')
}

/// The API-edge checks of an import drive (upstream's
/// `check_storage_access`): `Datastore.AllocateSpace` on the target
/// storage, which must hold images; for a source volume of a VM
/// `VM.Clone` on that VM, for an `import` volume `Datastore.Allocate`, or
/// `Datastore.AllocateSpace` or `Datastore.Audit`, on its storage; a host
/// path is root@pam's upstream and `Sys.Modify` on `/` here (as other host
/// paths of a drive).
pub fn check_drive(ctx: &Ctx, key: &str, value: &str) -> ApiResult<()> {
    let req = parse_request(key, value)?;
    if ctx.flag("live-restore") {
        return Err(ApiError::not_implemented_msg(
            "live import (live-restore with import-from) is not built yet",
        ));
    }
    let def = ctx.node.storage_def(&req.storage)?;
    if !def.content().contains(Content::Images) {
        return Err(ApiError::param(
            key,
            format!("storage '{}' does not support vm images", req.storage),
        ));
    }
    ctx.require_privs(
        &format!("/storage/{}", req.storage),
        &["Datastore.AllocateSpace"],
        false,
    )?;
    match &req.source {
        ImportSource::Path(_) => {
            if !ctx.caller.is_root() {
                ctx.require_privs("/", &["Sys.Modify"], false)?;
            }
        }
        ImportSource::Volume(vol) => {
            let plugin = ctx.node.open_storage(&vol.storage)?;
            let parsed = plugin
                .parse_volname(&vol.volname)
                .map_err(|e| ApiError::param(key, e.to_string()))?;
            match (parsed.content, parsed.vmid) {
                (Content::Images, Some(owner)) => {
                    ctx.require_privs(&format!("/vms/{owner}"), &["VM.Clone"], false)?;
                }
                (Content::Import, _) => {
                    import_volume_format(vol, parsed.format.as_deref()).map_err(|e| {
                        match e.status {
                            http::StatusCode::NOT_IMPLEMENTED => e,
                            _ => ApiError::param(key, e.message),
                        }
                    })?;
                    let path = format!("/storage/{}", vol.storage);
                    if !ctx.has_privs(&path, &["Datastore.Allocate"], false) {
                        ctx.require_privs(
                            &path,
                            &["Datastore.AllocateSpace", "Datastore.Audit"],
                            true,
                        )?;
                    }
                }
                (Content::Images, None) => {
                    ctx.require_privs(
                        &format!("/storage/{}", vol.storage),
                        &["Datastore.Allocate"],
                        false,
                    )?;
                }
                (other, _) => {
                    return Err(ApiError::param(
                        key,
                        format!(
                            "{vol} has wrong type '{other}' - needs to be 'images' or 'import'"
                        ),
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The format of an `import` volume as `qemu-img` reads it (`None`:
/// detect, for `.img`); an OVA's member disks need extracting first,
/// which is not built, and OVA or OVF files themselves are no disk image.
fn import_volume_format(vol: &VolumeId, format: Option<&str>) -> ApiResult<Option<String>> {
    if vol.volname.contains(".ova/") {
        return Err(ApiError::not_implemented_msg(format!(
            "importing a disk from inside an OVA ('{vol}') is not built yet - extract the disk image and import that"
        )));
    }
    match format {
        Some("ova" | "ovf") => Err(ApiError::fail(format!(
            "'{vol}' is an appliance (OVA/OVF), not a disk image"
        ))),
        Some("img") | None => Ok(None),
        Some(f) => Ok(Some(f.to_string())),
    }
}

/// The work of an import (in a task): allocates and fills the new volume
/// of drive `key`; returns its volume id and the drive's new value. What
/// it allocated is freed again on failure.
pub fn import_drive(
    node: &Node,
    vmid: u32,
    key: &str,
    value: &str,
    log: &dyn Fn(&str),
) -> ApiResult<(String, String)> {
    let req = parse_request(key, value).map_err(|e| ApiError::fail(e.to_string()))?;
    let dst = node.open_storage(&req.storage)?;
    dst.activate()?;
    let volid = match &req.source {
        ImportSource::Path(path) => {
            let src = host_image(path)?;
            let format = target_format(dst.def(), key, req.format.as_deref(), None, log)?;
            let volname = import_image(&*dst, vmid, &src, &format, log)?;
            VolumeId::new(&req.storage, &volname).to_string()
        }
        ImportSource::Volume(vol) => import_volume(node, vmid, key, vol, &req, &*dst, log)
            .map_err(|e| ApiError::fail(format!("cannot import from '{vol}' - {}", e.message)))?,
    };
    let volname = &VolumeId::parse(&volid)?.volname;
    let size = match dst.volume_size(volname) {
        Ok((size, _)) => size,
        Err(e) => {
            let _ = dst.free_image(volname);
            return Err(ApiError::fail(format!("{key}: {e}")));
        }
    };
    let new = imported_value(value, &volid, size);
    log(&format!("{key}: successfully created disk '{new}'"));
    Ok((volid, new))
}

/// Imports from storage volume `vol`; returns the new volume id.
fn import_volume(
    node: &Node,
    vmid: u32,
    key: &str,
    vol: &VolumeId,
    req: &ImportRequest,
    dst: &dyn StoragePlugin,
    log: &dyn Fn(&str),
) -> ApiResult<String> {
    let (src, volname) = crate::guest_volumes::open(node, &vol.to_string())?;
    let parsed = src.parse_volname(&volname)?;
    match parsed.content {
        Content::Import => {
            let format = import_volume_format(vol, parsed.format.as_deref())?;
            src.activate_volume(&volname)?;
            let path = src.path(&volname)?;
            if !path.is_file() {
                return Err(ApiError::fail(format!(
                    "can't find file '{}'",
                    path.display()
                )));
            }
            let image = inspect_untrusted(&path, format.as_deref())?;
            let format = target_format(
                dst.def(),
                key,
                req.format.as_deref(),
                Some(&image.format),
                log,
            )?;
            let name = import_image(dst, vmid, &image, &format, log)?;
            Ok(VolumeId::new(&req.storage, &name).to_string())
        }
        Content::Images => {
            let volid = vol.to_string();
            if crate::vm_cloudinit::is_cloudinit_drive(&volid) {
                return Err(ApiError::fail("cannot import from cloudinit disk"));
            }
            let format = target_format(
                dst.def(),
                key,
                req.format.as_deref(),
                parsed.format.as_deref(),
                log,
            )?;
            let owner = parsed.vmid.filter(|o| *o != vmid);
            let _locks = match owner {
                Some(o) => lock_owner(node, o, &volid)?,
                None => OwnerLock::default(),
            };
            let owner_id = parsed.vmid.unwrap_or(vmid);
            // The drive the owner has the volume on (named in the log, as
            // upstream); while the owner runs, its QEMU copies that disk.
            let src_key = node.load_vm(owner_id).ok().and_then(|l| {
                crate::vm::drive_volumes(&l.conf.main)
                    .into_iter()
                    .find(|(_, v)| *v == volid)
                    .map(|(k, _)| k)
            });
            let attached = src_key.clone().filter(|_| node.vm_pid(owner_id).is_some());
            if attached.as_deref() == Some("tpmstate0") {
                return Err(ApiError::fail("cannot copy TPM state while VM is running"));
            }
            let spec = CloneSpec {
                vmid: owner_id,
                newid: vmid,
                full: true,
                storage: Some(&req.storage),
                format: Some(&format),
                snapname: None,
                bwlimit_kib: None,
                running: match &attached {
                    Some(_) => Some(tokio::runtime::Handle::try_current().map_err(|e| {
                        ApiError::fail(format!("no runtime to copy a running disk: {e}"))
                    })?),
                    None => None,
                },
            };
            vm_clone::copy_disk(node, src_key.as_deref().unwrap_or(key), &volid, &spec, log)
        }
        other => Err(ApiError::fail(format!(
            "{vol} has wrong type '{other}' - needs to be 'images' or 'import'"
        ))),
    }
}

/// What an import holds of the source's owner VM while it copies.
#[derive(Default)]
struct OwnerLock {
    _shared: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
    _exclusive: Option<tokio::sync::OwnedRwLockWriteGuard<()>>,
}

/// Locks VM `owner` (when it is a VM of this node): shared while it is
/// stopped, exclusive while it runs, as upstream; fails when that takes
/// longer than [`OWNER_LOCK_TIMEOUT`] or the VM started or stopped
/// meanwhile.
fn lock_owner(node: &Node, owner: u32, volid: &str) -> ApiResult<OwnerLock> {
    if !node.vm_exists(owner)? {
        if node.ct_exists(owner)? {
            return Err(ApiError::fail(format!(
                "'{volid}' belongs to container {owner}, not to a VM"
            )));
        }
        return Ok(OwnerLock::default());
    }
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|e| ApiError::fail(format!("cannot lock VM {owner}: {e}")))?;
    let running = node.vm_pid(owner).is_some();
    let locks = &node.guest_locks;
    let held = rt.block_on(async {
        let lock = async {
            if running {
                OwnerLock {
                    _exclusive: Some(locks.lock(owner).await),
                    ..Default::default()
                }
            } else {
                OwnerLock {
                    _shared: Some(locks.lock_shared(owner).await),
                    ..Default::default()
                }
            }
        };
        tokio::time::timeout(OWNER_LOCK_TIMEOUT, lock).await
    });
    let held = held.map_err(|_| {
        ApiError::fail(format!(
            "cannot lock owner VM {owner} - got timeout after {} s",
            OWNER_LOCK_TIMEOUT.as_secs()
        ))
    })?;
    if node.vm_pid(owner).is_some() != running {
        return Err(ApiError::fail(format!(
            "owner VM {owner} changed state unexpectedly"
        )));
    }
    Ok(held)
}

/// An image that oxve did not write, as `qemu-img info` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceImage {
    pub path: PathBuf,
    /// The format `qemu-img` converts it from.
    pub format: String,
    /// Virtual size in bytes.
    pub size: u64,
}

/// A host path to import from: it must be a file or block device.
fn host_image(path: &Path) -> ApiResult<SourceImage> {
    let meta = std::fs::metadata(path);
    let usable = meta.as_ref().is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.is_file() || m.file_type().is_block_device()
    });
    if !usable {
        return Err(ApiError::fail(format!(
            "can't find file '{}'",
            path.display()
        )));
    }
    let path = std::fs::canonicalize(path)
        .map_err(|e| ApiError::fail(format!("{}: {e}", path.display())))?;
    inspect_untrusted(&path, None)
}

/// Reads an untrusted image with `qemu-img info` (format detected unless
/// given) and refuses what could make `qemu-img` read other files: a
/// backing file, an external data file, a VMDK of several extents.
pub fn inspect_untrusted(path: &Path, format: Option<&str>) -> ApiResult<SourceImage> {
    let mut cmd = std::process::Command::new("qemu-img");
    cmd.args(["info", "--output=json"]);
    if let Some(f) = format {
        cmd.args(["-f", f]);
    }
    let out = cmd
        .arg(path)
        .output()
        .map_err(|e| ApiError::fail(format!("cannot run qemu-img: {e}")))?;
    if !out.status.success() {
        return Err(ApiError::fail(format!(
            "failed to query file information with qemu-img: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let info: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| ApiError::fail(format!("cannot parse qemu-img info output: {e}")))?;
    let (format, size) = check_untrusted(&info, &path.display().to_string())?;
    Ok(SourceImage {
        path: path.to_path_buf(),
        format,
        size,
    })
}

/// The format and virtual size of `qemu-img info`'s answer for an
/// untrusted image `name`, or why it is refused.
fn check_untrusted(info: &Value, name: &str) -> ApiResult<(String, u64)> {
    let specific = &info["format-specific"];
    match specific["type"].as_str() {
        Some("qcow2") if !specific["data"]["data-file"].is_null() => {
            return Err(ApiError::fail(format!(
                "{name}: 'data-file' references are not allowed!"
            )));
        }
        Some("vmdk") => {
            let many = |v: &Value| v.as_array().is_some_and(|a| a.len() > 1);
            if many(&specific["data"]["extents"]) || many(&info["children"]) {
                return Err(ApiError::fail(format!(
                    "{name}: multiple children or extents are not allowed!"
                )));
            }
        }
        _ => {}
    }
    if !info["backing-filename"].is_null() {
        return Err(ApiError::fail(format!(
            "backing file not allowed for untrusted image '{name}'!"
        )));
    }
    let format = info["format"]
        .as_str()
        .filter(|f| !f.is_empty() && !f.contains(char::is_whitespace))
        .ok_or_else(|| ApiError::fail(format!("{name}: qemu-img reports no format")))?;
    let size = info["virtual-size"]
        .as_u64()
        .filter(|s| *s > 0)
        .ok_or_else(|| ApiError::fail(format!("could not get file size of {name}")))?;
    Ok((format.to_string(), size))
}

/// The format of the new volume: the requested one, else the source's
/// (`hint`), when the storage has it; else the storage's default (a
/// requested format the storage lacks is logged, as upstream warns). A
/// TPM state is always raw (swtpm reads a plain file).
pub fn target_format(
    def: &StorageDef,
    key: &str,
    requested: Option<&str>,
    hint: Option<&str>,
    log: &dyn Fn(&str),
) -> ApiResult<String> {
    if key == "tpmstate0" {
        return Ok("raw".into());
    }
    let formats = def.kind.info().formats;
    let default = def
        .default_format()
        .ok_or_else(|| ApiError::fail(format!("storage '{}' does not support vm images", def.id)))?
        .to_string();
    let supported = |f: &&str| formats.contains(f) && *f != "subvol";
    Ok(match requested {
        Some(f) if supported(&f) => f.to_string(),
        Some(f) => {
            log(&format!(
                "WARN: format '{f}' is not supported by the target storage - using '{default}' instead"
            ));
            default
        }
        None => hint
            .filter(supported)
            .map(str::to_string)
            .unwrap_or(default),
    })
}

/// Allocates a volume of `vmid` on `dst` of `src`'s size in `format` and
/// converts `src` into it; returns the volume name. The volume is freed
/// again when the copy fails.
pub fn import_image(
    dst: &dyn StoragePlugin,
    vmid: u32,
    src: &SourceImage,
    format: &str,
    log: &dyn Fn(&str),
) -> ApiResult<String> {
    let volname = dst
        .alloc_for(
            Some(Content::Images),
            vmid,
            Some(format),
            None,
            src.size.div_ceil(1024),
        )
        .map_err(|e| ApiError::fail(e.to_string()))?;
    log(&format!(
        "importing '{}' ({}) into '{}:{volname}'",
        src.path.display(),
        src.format,
        dst.def().id
    ));
    let copied = (|| {
        dst.activate_volume(&volname)?;
        let to = dst.path(&volname)?;
        vm_clone::convert(
            &src.path,
            &src.format,
            None,
            &to,
            format,
            vm_clone::zero_initialized(dst),
            None,
            log,
        )
    })();
    if let Err(e) = copied {
        if let Err(f) = dst.free_image(&volname) {
            log(&format!("could not free volume '{volname}': {f}"));
        }
        return Err(e);
    }
    Ok(volname)
}

/// The drive value after an import: the new volume, the other options
/// kept, `import-from`, `format` and `size` replaced by the new size.
fn imported_value(value: &str, volid: &str, size: u64) -> String {
    let file = drive_file(value);
    let mut out = volid.to_string();
    for part in value.split(',') {
        let name = part.split_once('=').map(|(k, _)| k);
        let is_file = match name {
            None => Some(part) == file,
            Some(k) => k == "file" || k == "volume",
        };
        if is_file || matches!(name, Some("import-from" | "format" | "size")) || part.is_empty() {
            continue;
        }
        out.push(',');
        out.push_str(part);
    }
    out.push_str(",size=");
    out.push_str(&oxve_schema::format::format_size(size));
    out
}

/// `qm disk import` of a host file into a new volume of VM `vmid` on
/// `storage`, run by root on the node itself as upstream's CLI does (the
/// caller then adds the volume as `unused<n>` through the API). Checks
/// that the VM exists and is not locked and that the storage is enabled
/// here and holds images; returns the new volume id.
pub fn import_file_at(
    root: &Path,
    vmid: u32,
    source: &Path,
    storage: &str,
    format: Option<&str>,
    log: &dyn Fn(&str),
) -> ApiResult<String> {
    let store = crate::storage::open_store_at(root)?;
    let suffix = format!("/qemu-server/{vmid}.conf");
    let entry = store
        .list("nodes/")?
        .into_iter()
        .find(|m| m.key.starts_with("nodes/") && m.key.ends_with(&suffix))
        .ok_or_else(|| ApiError::fail(format!("VM {vmid} does not exist on this node")))?;
    let node_name = &entry.key["nodes/".len()..entry.key.len() - suffix.len()];
    let text = store.get(&entry.key)?.map(|e| e.text).unwrap_or_default();
    let (conf, _) = oxve_schema::vmconfig::VmConfig::parse(vmid, &text, false)
        .map_err(|e| ApiError::fail(e.0))?;
    crate::vm::check_unlocked(&conf)?;
    let dst = crate::storage::open_storage_at(root, storage)?;
    check_target_enabled(dst.def(), node_name)?;
    dst.activate()?;
    let src = host_image(source)?;
    let format = target_format(dst.def(), "unused", format, None, log)?;
    let volname = import_image(&*dst, vmid, &src, &format, log)?;
    Ok(VolumeId::new(storage, &volname).to_string())
}

/// Upstream's checks of a target storage for a CLI import.
fn check_target_enabled(def: &StorageDef, node: &str) -> ApiResult<()> {
    if def.flag("disable") {
        return Err(ApiError::fail(format!("storage '{}' is disabled", def.id)));
    }
    if !def.enabled_on(node) {
        return Err(ApiError::fail(format!(
            "storage '{}' is not available on node '{node}'",
            def.id
        )));
    }
    if !def.content().contains(Content::Images) {
        return Err(ApiError::fail(format!(
            "storage {} does not support vm images",
            def.id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_as_upstream() {
        let r = parse_request("scsi0", "local:0,import-from=/srv/disk.qcow2,format=qcow2").unwrap();
        assert_eq!(r.storage, "local");
        assert_eq!(r.source, ImportSource::Path("/srv/disk.qcow2".into()));
        assert_eq!(r.format.as_deref(), Some("qcow2"));
        let r = parse_request(
            "virtio1",
            "file=local:0.0,import-from=local:100/vm-100-disk-0.raw",
        )
        .unwrap();
        assert_eq!(
            r.source,
            ImportSource::Volume(VolumeId::new("local", "100/vm-100-disk-0.raw"))
        );
        for bad in [
            "local:1,import-from=/x",
            "0,import-from=/x",
            "local:vm-1-disk-0.raw,import-from=/x",
            "local:0x,import-from=/x",
        ] {
            let e = parse_request("scsi0", bad).unwrap_err();
            let msg = e.errors.unwrap_or_default()["scsi0"].clone();
            assert!(msg.contains("requires special syntax"), "{bad}: {msg}");
        }
        assert!(parse_request("scsi0", "local:0,import-from=relative/x").is_err());
        assert!(
            is_zero_size("00") && is_zero_size("0.0") && !is_zero_size("0.") && !is_zero_size("")
        );
        assert!(parse_request("ide2", "local:0,import-from=/x,media=cdrom").is_err());
        let e = parse_request("efidisk0", "local:0,import-from=/x,efitype=4m").unwrap_err();
        assert!(
            format!("{e}").contains("need to specify 'pre-enrolled-keys'"),
            "{e}"
        );
        assert!(parse_request("tpmstate0", "local:0,import-from=/x").is_err());
        assert!(parse_request("tpmstate0", "local:0,import-from=/x,version=v2.0").is_ok());
    }

    #[test]
    fn imported_values_keep_options() {
        assert_eq!(
            imported_value(
                "local:0,import-from=/x.qcow2,format=qcow2,iothread=1,discard=on",
                "local:7/vm-7-disk-0.qcow2",
                64 << 20
            ),
            "local:7/vm-7-disk-0.qcow2,iothread=1,discard=on,size=64M"
        );
        assert_eq!(
            imported_value(
                "import-from=local:9/vm-9-disk-1.raw,file=local:0,size=1G",
                "lvm:vm-7-disk-0",
                1_000_448
            ),
            "lvm:vm-7-disk-0,size=977K"
        );
    }

    #[test]
    fn untrusted_images_are_checked() {
        let plain = json!({"format": "qcow2", "virtual-size": 1048576,
            "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}});
        assert_eq!(
            check_untrusted(&plain, "a").unwrap(),
            ("qcow2".to_string(), 1_048_576)
        );
        let backing =
            json!({"format": "qcow2", "virtual-size": 1, "backing-filename": "/etc/shadow"});
        assert!(check_untrusted(&backing, "b")
            .unwrap_err()
            .message
            .contains("backing file"));
        let data_file = json!({"format": "qcow2", "virtual-size": 1,
            "format-specific": {"type": "qcow2", "data": {"data-file": "/dev/sda"}}});
        assert!(check_untrusted(&data_file, "c")
            .unwrap_err()
            .message
            .contains("data-file"));
        let vmdk = json!({"format": "vmdk", "virtual-size": 1,
            "format-specific": {"type": "vmdk", "data": {"extents": [{}, {}]}}});
        assert!(check_untrusted(&vmdk, "d")
            .unwrap_err()
            .message
            .contains("extents"));
        let empty = json!({"format": "raw", "virtual-size": 0});
        assert!(check_untrusted(&empty, "e")
            .unwrap_err()
            .message
            .contains("file size"));
    }

    #[test]
    fn target_formats() {
        let cfg = oxve_storage::StorageConfig::parse(
            "dir: local\n\tpath /var/lib/vz\n\tcontent images\n\nlvmthin: thin\n\tvgname pve\n\tthinpool data\n\tcontent images\n",
        );
        let dir = cfg.get("local").unwrap();
        let thin = cfg.get("thin").unwrap();
        let warned = std::cell::RefCell::new(Vec::new());
        let log = |l: &str| warned.borrow_mut().push(l.to_string());
        assert_eq!(
            target_format(&dir, "scsi0", None, None, &log).unwrap(),
            "raw"
        );
        assert_eq!(
            target_format(&dir, "scsi0", None, Some("qcow2"), &log).unwrap(),
            "qcow2"
        );
        assert_eq!(
            target_format(&dir, "scsi0", Some("vmdk"), Some("qcow2"), &log).unwrap(),
            "vmdk"
        );
        assert_eq!(
            target_format(&thin, "scsi0", None, Some("qcow2"), &log).unwrap(),
            "raw"
        );
        assert!(warned.borrow().is_empty());
        assert_eq!(
            target_format(&thin, "scsi0", Some("qcow2"), None, &log).unwrap(),
            "raw"
        );
        assert!(warned.borrow()[0].contains("format 'qcow2' is not supported"));
        assert_eq!(
            target_format(&dir, "tpmstate0", Some("qcow2"), None, &log).unwrap(),
            "raw"
        );
    }

    #[test]
    fn import_volumes() {
        let v = VolumeId::new("local", "import/a.ova/disk1.vmdk");
        let e = import_volume_format(&v, Some("vmdk")).unwrap_err();
        assert_eq!(e.status, http::StatusCode::NOT_IMPLEMENTED);
        let v = VolumeId::new("local", "import/a.ova");
        assert!(import_volume_format(&v, Some("ova")).is_err());
        let v = VolumeId::new("local", "import/a.img");
        assert_eq!(import_volume_format(&v, Some("img")).unwrap(), None);
        let v = VolumeId::new("local", "import/a.qcow2");
        assert_eq!(
            import_volume_format(&v, Some("qcow2")).unwrap().as_deref(),
            Some("qcow2")
        );
    }
}
