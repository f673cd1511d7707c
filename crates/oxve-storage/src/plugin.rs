//! The storage plugin trait. Each storage type implements the few
//! operations that differ (`plugins/<type>.rs`); behaviour every type
//! shares — picking a free disk name, checking content and formats,
//! listing and deleting the file content of directory-like storages — is
//! written once here, in provided methods.

use crate::config::StorageDef;
use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::exec::Runner;
use crate::volume::{self, VolName, VolumeId};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Space on a storage, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    pub used: u64,
    pub avail: u64,
}

/// One volume as a content listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub volid: String,
    pub content: Content,
    pub format: String,
    /// Size in bytes (the virtual size for images).
    pub size: u64,
    /// Bytes actually used, where the storage knows.
    pub used: Option<u64>,
    pub vmid: Option<u32>,
    /// Creation time (seconds since the epoch), for files.
    pub ctime: Option<i64>,
    /// The base image of a linked clone (`base-100-disk-0.qcow2`).
    pub parent: Option<String>,
    /// First line of the notes (backups).
    pub notes: Option<String>,
    pub protected: bool,
}

impl VolumeInfo {
    /// A raw volume that belongs to no guest: an iSCSI LUN.
    pub fn lun(storage: &str, volname: &str, size: u64) -> VolumeInfo {
        VolumeInfo {
            volid: VolumeId::new(storage, volname).to_string(),
            content: Content::Images,
            format: "raw".into(),
            size,
            used: None,
            vmid: None,
            ctime: None,
            parent: None,
            notes: None,
            protected: false,
        }
    }
}

/// What a storage type can do, for the capabilities document and for
/// refusing an operation up front with a clear message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub snapshots: bool,
    pub linked_clones: bool,
    pub resize: bool,
    pub rename: bool,
    /// Volume stream formats `export` can write (`raw+size`, `btrfs`, ...).
    pub export_formats: &'static [&'static str],
    /// Volume stream formats `import` can read.
    pub import_formats: &'static [&'static str],
}

/// What a plugin needs from its node: how to run tools, where to keep
/// run-time files (credential files for mounts), and the storage's secret
/// (CIFS password, Ceph key) read from `priv/`.
#[derive(Clone)]
pub struct Env {
    pub runner: Arc<dyn Runner>,
    pub run_dir: PathBuf,
    pub secret: Option<String>,
}

/// One storage, opened. See the module docs for what is provided.
pub trait StoragePlugin: Send + Sync {
    /// The definition this plugin was opened with.
    fn def(&self) -> &StorageDef;

    fn capabilities(&self) -> Capabilities;

    /// Makes the storage usable on this node (mount, create directories,
    /// log in). Idempotent.
    fn activate(&self) -> Result<()> {
        Ok(())
    }

    /// Undoes [`activate`](Self::activate) where that means something (unmount).
    fn deactivate(&self) -> Result<()> {
        Ok(())
    }

    /// Makes one volume usable on this node before its [`path`](Self::path)
    /// is opened: activate a logical volume, map an RBD image, mount a ZFS
    /// subvolume. Idempotent; a no-op for file-based types.
    fn activate_volume(&self, _volname: &str) -> Result<()> {
        Ok(())
    }

    /// Undoes [`activate_volume`](Self::activate_volume) where the type
    /// needs it (unmap, deactivate); a no-op otherwise.
    fn deactivate_volume(&self, _volname: &str) -> Result<()> {
        Ok(())
    }

    /// Space on the storage.
    fn status(&self) -> Result<Usage>;

    /// Parses a volume name of this storage.
    fn parse_volname(&self, volname: &str) -> Result<VolName>;

    /// The path (or device, or URL for network block devices) of a volume.
    fn path(&self, volname: &str) -> Result<PathBuf>;

    /// The images on the storage (all guests, or `vmid`'s).
    fn list_images(&self, vmid: Option<u32>) -> Result<Vec<VolumeInfo>>;

    /// Creates image `name` of `vmid`; fails with
    /// [`StorageError::AlreadyExists`] if the name is taken, so that
    /// [`alloc_image`](Self::alloc_image) can pick the next one. A failure
    /// leaves nothing behind. `size_kib` 0 means unlimited (subvolumes).
    fn create_image(&self, vmid: u32, name: &str, format: &str, size_kib: u64) -> Result<String>;

    /// Deletes an image.
    fn free_image(&self, volname: &str) -> Result<()>;

    /// Virtual size and bytes used of an image.
    fn volume_size(&self, volname: &str) -> Result<(u64, u64)>;

    /// Grows an image to `size` bytes.
    fn resize(&self, volname: &str, _size: u64) -> Result<()> {
        Err(self.unsupported("resize", volname))
    }

    fn snapshot(&self, volname: &str, _snap: &str) -> Result<()> {
        Err(self.unsupported("snapshot", volname))
    }

    fn rollback(&self, volname: &str, _snap: &str) -> Result<()> {
        Err(self.unsupported("snapshot rollback", volname))
    }

    fn delete_snapshot(&self, volname: &str, _snap: &str) -> Result<()> {
        Err(self.unsupported("snapshot delete", volname))
    }

    /// Turns an image into a read-only base image (for templates).
    fn create_base(&self, volname: &str) -> Result<String> {
        Err(self.unsupported("creating a base image", volname))
    }

    /// A linked clone of base image `volname` for `vmid`, named `name`.
    fn clone_image(&self, volname: &str, _vmid: u32, _name: &str) -> Result<String> {
        Err(self.unsupported("linked clone", volname))
    }

    /// Renames an image (to another guest).
    fn rename(&self, volname: &str, _vmid: u32, _name: &str) -> Result<String> {
        Err(self.unsupported("rename", volname))
    }

    /// Writes a volume (or its `snapshot`) to `out` in stream `format`.
    fn export(
        &self,
        volname: &str,
        _format: &str,
        _snapshot: Option<&str>,
        _out: &mut dyn Write,
    ) -> Result<()> {
        Err(self.unsupported("export", volname))
    }

    /// Creates image `name` of `vmid` from a stream in `format`.
    fn import(
        &self,
        _vmid: u32,
        name: &str,
        _format: &str,
        _input: &mut dyn Read,
    ) -> Result<String> {
        Err(self.unsupported("import", name))
    }

    // ---- provided: the same for every type ----

    /// The error for an operation this storage cannot do.
    fn unsupported(&self, op: &str, _volname: &str) -> StorageError {
        StorageError::Unsupported {
            op: op.into(),
            storage: self.def().id.clone(),
            kind: self.def().kind.as_str().into(),
        }
    }

    /// Fails unless the storage's `content` allows `content`.
    fn check_content(&self, content: Content) -> Result<()> {
        let allowed = self.def().content();
        if allowed.contains(content) {
            return Ok(());
        }
        Err(StorageError::ContentNotAllowed {
            storage: self.def().id.clone(),
            content: content.to_string(),
            allowed: allowed.to_string(),
        })
    }

    /// Allocates a new image for `vmid`: checks content and format, then
    /// takes the first free `vm-<vmid>-disk-<n>` (or `subvol-...`), or
    /// `name` when given. Creation itself is atomic per name, so two
    /// concurrent allocations never get the same disk — no storage-wide lock.
    fn alloc_image(
        &self,
        vmid: u32,
        format: Option<&str>,
        name: Option<&str>,
        size_kib: u64,
    ) -> Result<String> {
        self.alloc_for(None, vmid, format, name, size_kib)
    }

    /// [`alloc_image`](Self::alloc_image) for a given content type: a
    /// container's raw disk needs `rootdir`, not `images`. `None` derives
    /// it from the format (`subvol` → `rootdir`, others → `images`).
    fn alloc_for(
        &self,
        content: Option<Content>,
        vmid: u32,
        format: Option<&str>,
        name: Option<&str>,
        size_kib: u64,
    ) -> Result<String> {
        let info = self.def().kind.info();
        let format = match format.or(self.def().default_format()) {
            Some(f) => f.to_string(),
            None => return Err(self.unsupported("images", "")),
        };
        if !info.formats.contains(&format.as_str()) {
            return Err(StorageError::Option {
                key: "format".into(),
                message: format!(
                    "unsupported format '{format}' on storage '{}' (supported: {})",
                    self.def().id,
                    info.formats.join(", ")
                ),
            });
        }
        let content = content.unwrap_or(if format == "subvol" {
            Content::Rootdir
        } else {
            Content::Images
        });
        self.check_content(content)?;
        if format != "subvol" && size_kib == 0 {
            return Err(StorageError::Option {
                key: "size".into(),
                message: "an image needs a size larger than 0".into(),
            });
        }
        let file_based = self.def().kind.is_file_based();
        let ext = |n: &str| {
            if file_based {
                format!("{n}.{format}")
            } else {
                n.to_string()
            }
        };
        if let Some(name) = name {
            let wanted = ext(name.trim_end_matches(&format!(".{format}")));
            let owner = if file_based {
                volume::parse_image_file(&wanted)?.0
            } else {
                volume::parse_block_volname(&wanted, &format)?
                    .vmid
                    .unwrap_or_default()
            };
            if owner != vmid {
                return Err(StorageError::bad_volume(
                    &wanted,
                    format!("name must begin with 'vm-{vmid}-' or 'subvol-{vmid}-'"),
                ));
            }
            return self.create_image(vmid, &wanted, &format, size_kib);
        }
        let prefix = if format == "subvol" { "subvol" } else { "vm" };
        // Disk numbers are unique per guest across formats, as upstream:
        // vm-100-disk-0.qcow2 makes vm-100-disk-0.raw taken too.
        let taken: Vec<String> = self
            .list_images(Some(vmid))?
            .iter()
            .filter_map(|v| {
                v.volid
                    .rsplit(['/', ':'])
                    .next()
                    .map(|n| n.split('.').next().unwrap_or(n).to_string())
            })
            .collect();
        for n in 0..10_000 {
            let stem = format!("{prefix}-{vmid}-disk-{n}");
            if taken.contains(&stem) || taken.contains(&format!("base-{vmid}-disk-{n}")) {
                continue;
            }
            let candidate = ext(&stem);
            match self.create_image(vmid, &candidate, &format, size_kib) {
                Err(StorageError::AlreadyExists(_)) => continue,
                other => return other,
            }
        }
        Err(StorageError::Other(format!(
            "unable to allocate an image name for VM {vmid} in storage '{}'",
            self.def().id
        )))
    }

    /// The directory holding `content` on a file-based storage (`None`
    /// for block storages), honouring `content-dirs`.
    fn content_dir(&self, content: Content) -> Option<PathBuf> {
        let def = self.def();
        if !def.kind.is_file_based() {
            return None;
        }
        let base = def.path()?;
        let over = def.get("content-dirs").and_then(|list| {
            list.split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == content.as_str())
                .map(|(_, v)| v.trim_start_matches('/').to_string())
        });
        Some(base.join(over.unwrap_or_else(|| content.default_dir().to_string())))
    }

    /// Every volume of `content` (or all content) of `vmid` (or all guests).
    fn list_volumes(&self, content: Option<Content>, vmid: Option<u32>) -> Result<Vec<VolumeInfo>> {
        let allowed = self.def().content();
        let mut out = Vec::new();
        let want = |c: Content| content.is_none_or(|w| w == c) && allowed.contains(c);
        if want(Content::Images) || want(Content::Rootdir) {
            for v in self.list_images(vmid)? {
                let c = if v.format == "subvol" {
                    Content::Rootdir
                } else {
                    Content::Images
                };
                if want(c) {
                    out.push(VolumeInfo { content: c, ..v });
                }
            }
        }
        for c in [
            Content::Iso,
            Content::Vztmpl,
            Content::Backup,
            Content::Snippets,
            Content::Import,
        ] {
            if want(c) {
                if let Some(dir) = self.content_dir(c) {
                    out.extend(list_files(&self.def().id, c, &dir, vmid)?);
                }
            }
        }
        out.sort_by(|a, b| a.volid.cmp(&b.volid));
        Ok(out)
    }

    /// The path of a file volume (iso, vztmpl, backup, snippets, import).
    fn file_path(&self, vol: &VolName) -> Result<PathBuf> {
        let dir = self
            .content_dir(vol.content)
            .ok_or_else(|| self.unsupported(&format!("content '{}'", vol.content), &vol.name))?;
        Ok(dir.join(&vol.name))
    }

    /// Deletes a volume of any content.
    fn free_volume(&self, volname: &str) -> Result<()> {
        let vol = self.parse_volname(volname)?;
        match vol.content {
            Content::Images | Content::Rootdir => self.free_image(volname),
            _ => {
                let path = self.file_path(&vol)?;
                if vol.content == Content::Backup
                    && path.with_extension_suffix(".protected").exists()
                {
                    return Err(StorageError::Other(format!(
                        "backup '{volname}' is protected; unprotect it first"
                    )));
                }
                std::fs::remove_file(&path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => StorageError::NoSuchVolume(
                        VolumeId::new(&self.def().id, volname).to_string(),
                    ),
                    _ => StorageError::io(format!("unable to delete '{}'", path.display()), e),
                })?;
                if vol.content == Content::Backup {
                    let _ = std::fs::remove_file(path.with_extension_suffix(".notes"));
                }
                Ok(())
            }
        }
    }
}

/// `path` with a suffix appended to its file name (`x.vma.zst.notes`).
pub trait PathSuffix {
    fn with_extension_suffix(&self, suffix: &str) -> PathBuf;
}

impl PathSuffix for Path {
    fn with_extension_suffix(&self, suffix: &str) -> PathBuf {
        let mut s = self.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    }
}

/// Lists the files of one content type in `dir`; files whose names do not
/// parse as that content (partial uploads, notes) are skipped.
pub fn list_files(
    storage: &str,
    content: Content,
    dir: &Path,
    vmid: Option<u32>,
) -> Result<Vec<VolumeInfo>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StorageError::io(
                format!("unable to read '{}'", dir.display()),
                e,
            ))
        }
    };
    let prefix = volume::content_prefix(content);
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Hidden files are partial uploads and downloads.
        if name.starts_with('.') {
            continue;
        }
        let volname = format!("{prefix}/{name}");
        let Ok(vol) = volume::parse_file_volname(&volname) else {
            continue;
        };
        if vol.content != content || (vmid.is_some() && vol.vmid != vmid) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let path = entry.path();
        let notes = if content == Content::Backup {
            std::fs::read_to_string(path.with_extension_suffix(".notes"))
                .ok()
                .and_then(|n| n.lines().next().map(str::to_string))
        } else {
            None
        };
        let format = match content {
            Content::Iso => "iso".to_string(),
            Content::Vztmpl => name
                .rsplit_once(".tar.")
                .map_or("tgz".into(), |(_, z)| format!("t{z}")),
            Content::Backup => backup_format(&name),
            Content::Snippets => "snippet".to_string(),
            _ => vol.format.clone().unwrap_or_else(|| "raw".into()),
        };
        out.push(VolumeInfo {
            volid: VolumeId::new(storage, &volname).to_string(),
            content,
            format,
            size: meta.len(),
            used: None,
            vmid: vol.vmid,
            ctime: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64),
            parent: None,
            notes,
            protected: content == Content::Backup
                && path.with_extension_suffix(".protected").exists(),
        });
    }
    Ok(out)
}

/// `vma.zst`, `tar.gz`, `tgz`: the format field upstream shows for a backup.
fn backup_format(name: &str) -> String {
    for kind in ["vma", "tar"] {
        if let Some(pos) = name.rfind(&format!(".{kind}")) {
            return name[pos + 1..].to_string();
        }
    }
    "tgz".into()
}

/// File-system usage of the file system holding `path` (statvfs).
pub fn fs_usage(path: &Path) -> Result<Usage> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| StorageError::Other(format!("bad path '{}'", path.display())))?;
    // SAFETY: statvfs is a plain C struct for which all-zero bytes are valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated string and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(StorageError::io(
            format!("unable to stat file system of '{}'", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    let frsize = st.f_frsize;
    let total = st.f_blocks * frsize;
    let avail = st.f_bavail * frsize;
    let used = total.saturating_sub(st.f_bfree * frsize);
    Ok(Usage { total, used, avail })
}
