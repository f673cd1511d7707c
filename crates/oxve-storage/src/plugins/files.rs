//! Image files in `images/<vmid>/` — the layout shared by `dir`, `nfs`,
//! `cifs` (and btrfs's non-subvolume parts): raw, qcow2 and vmdk files
//! driven with `qemu-img`, subvolume directories for containers.

use crate::config::StorageDef;
use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::exec::{Cmd, Runner};
use crate::plugin::VolumeInfo;
use crate::volume::{self, VolName, VolumeId};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The image directory of one file-based storage.
pub struct ImageFiles<'a> {
    pub def: &'a StorageDef,
    pub runner: &'a dyn Runner,
    /// `<path>/images` (or its `content-dirs` override).
    pub root: PathBuf,
}

/// Stream formats for file images (upstream's names); `tar+size` carries
/// container subvolume directories.
pub const EXPORT_FORMATS: &[&str] = &["raw+size", "qcow2+size", "tar+size"];

/// `tar` options that keep a container's files as they are: numeric
/// owners (an unprivileged container's shifted ids), modes, ACLs, extended
/// attributes (file capabilities), sparse files; one file system only.
const TAR_KEEP: &[&str] = &[
    "--numeric-owner",
    "--acls",
    "--xattrs",
    "--xattrs-include=*",
    "--sparse",
];

/// Writes `tar+size`: an 8-byte little-endian size (the subvolume's quota,
/// 0 for none), then a tar stream of `dir`'s contents.
pub(crate) fn tar_export(
    runner: &dyn Runner,
    dir: &Path,
    size: u64,
    out: &mut dyn Write,
) -> Result<()> {
    out.write_all(&size.to_le_bytes())
        .map_err(|e| StorageError::io("writing the stream header", e))?;
    runner.run_to(
        &Cmd::new("tar")
            .args(TAR_KEEP)
            .arg("--one-file-system")
            .arg("-C")
            .arg(dir.to_string_lossy())
            .args(["-cpf", "-", "."]),
        out,
    )
}

/// Reads `tar+size` into the existing, empty directory `dir`; returns the
/// size from the header.
pub(crate) fn tar_import(runner: &dyn Runner, dir: &Path, input: &mut dyn Read) -> Result<u64> {
    let mut header = [0u8; 8];
    input
        .read_exact(&mut header)
        .map_err(|e| StorageError::io("reading the stream header", e))?;
    runner.run_from(
        &Cmd::new("tar")
            .args(TAR_KEEP)
            .arg("-C")
            .arg(dir.to_string_lossy())
            .args(["-xpf", "-"]),
        input,
    )?;
    Ok(u64::from_le_bytes(header))
}

impl ImageFiles<'_> {
    pub fn dir(&self, vmid: u32) -> PathBuf {
        self.root.join(vmid.to_string())
    }

    /// The file of a parsed image name.
    pub fn path(&self, vol: &VolName) -> PathBuf {
        self.dir(vol.vmid.unwrap_or_default()).join(&vol.name)
    }

    /// Creates an image file; a taken name is [`StorageError::AlreadyExists`].
    pub fn create(&self, vmid: u32, name: &str, format: &str, size_kib: u64) -> Result<String> {
        let (owner, fmt, _) = volume::parse_image_file(name)?;
        if owner != vmid || fmt != format {
            return Err(StorageError::bad_volume(
                name,
                format!("not a {format} image of guest {vmid}"),
            ));
        }
        let dir = self.dir(vmid);
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(format!("unable to create '{}'", dir.display()), e))?;
        let path = dir.join(name);
        let volname = format!("{vmid}/{name}");
        if format == "subvol" {
            return match std::fs::create_dir(&path) {
                Ok(()) => Ok(volname),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(StorageError::AlreadyExists(volname))
                }
                Err(e) => Err(StorageError::io(
                    format!("unable to create '{}'", path.display()),
                    e,
                )),
            };
        }
        // Reserving the name with O_EXCL makes concurrent allocations safe.
        let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::AlreadyExists(volname))
            }
            Err(e) => {
                return Err(StorageError::io(
                    format!("unable to create '{}'", path.display()),
                    e,
                ))
            }
        };
        let result = self.fill(&file, &path, format, size_kib);
        if let Err(e) = result {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(volname)
    }

    fn prealloc(&self) -> &str {
        self.def.get("preallocation").unwrap_or("metadata")
    }

    fn fill(&self, file: &std::fs::File, path: &Path, format: &str, size_kib: u64) -> Result<()> {
        let bytes = size_kib * 1024;
        if format == "raw" {
            file.set_len(bytes)
                .map_err(|e| StorageError::io(format!("unable to size '{}'", path.display()), e))?;
            if matches!(self.prealloc(), "falloc" | "full") {
                allocate(file, bytes).map_err(|e| {
                    StorageError::io(format!("unable to allocate '{}'", path.display()), e)
                })?;
            }
            return Ok(());
        }
        let mut cmd = Cmd::new("qemu-img").args(["create"]);
        if format == "qcow2" {
            cmd = cmd.args(["-o", &format!("preallocation={}", self.prealloc())]);
        }
        self.runner.run(
            &cmd.args(["-f", format])
                .arg(path.to_string_lossy())
                .arg(format!("{size_kib}K")),
        )?;
        Ok(())
    }

    /// Every image file (of `vmid`).
    pub fn list(&self, vmid: Option<u32>) -> Result<Vec<VolumeInfo>> {
        let dirs: Vec<u32> = match vmid {
            Some(id) => vec![id],
            None => match std::fs::read_dir(&self.root) {
                Ok(rd) => rd
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    return Err(StorageError::io(
                        format!("unable to read '{}'", self.root.display()),
                        e,
                    ))
                }
            },
        };
        let mut out = Vec::new();
        for id in dirs {
            let Ok(rd) = std::fs::read_dir(self.dir(id)) else {
                continue;
            };
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok((owner, format, _)) = volume::parse_image_file(&name) else {
                    continue;
                };
                if owner != id {
                    continue;
                }
                let path = entry.path();
                let (size, used, parent) = self.info(&path, &format).unwrap_or((0, 0, None));
                let volname = match &parent {
                    Some(base) => match base_of(base) {
                        Some((basevmid, basename)) => format!("{basevmid}/{basename}/{id}/{name}"),
                        None => format!("{id}/{name}"),
                    },
                    None => format!("{id}/{name}"),
                };
                out.push(VolumeInfo {
                    volid: VolumeId::new(&self.def.id, &volname).to_string(),
                    content: Content::Images,
                    format,
                    size,
                    used: Some(used),
                    vmid: Some(id),
                    ctime: entry
                        .metadata()
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs() as i64),
                    parent: parent.and_then(|p| base_of(&p).map(|(_, n)| n)),
                    notes: None,
                    protected: false,
                });
            }
        }
        Ok(out)
    }

    /// (virtual size, used bytes, backing file) of an image file.
    pub fn info(&self, path: &Path, format: &str) -> Result<(u64, u64, Option<String>)> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StorageError::NoSuchVolume(path.display().to_string()),
            _ => StorageError::io(format!("unable to stat '{}'", path.display()), e),
        })?;
        use std::os::unix::fs::MetadataExt;
        match format {
            "raw" => Ok((meta.len(), meta.blocks() * 512, None)),
            "subvol" => Ok((0, 0, None)),
            _ => {
                // -U: the image may be open in a running VM.
                let out = self.runner.run(
                    &Cmd::new("qemu-img")
                        .args(["info", "-U", "--output=json", "-f", format])
                        .arg(path.to_string_lossy()),
                )?;
                parse_qemu_img_info(&out)
            }
        }
    }

    pub fn free(&self, vol: &VolName, all: &[VolumeInfo]) -> Result<()> {
        if vol.is_base {
            let users: Vec<&str> = all
                .iter()
                .filter(|v| v.parent.as_deref() == Some(vol.name.as_str()))
                .map(|v| v.volid.as_str())
                .collect();
            if !users.is_empty() {
                return Err(StorageError::Other(format!(
                    "base volume '{}' is still in use by linked clones: {}",
                    vol.name,
                    users.join(", ")
                )));
            }
        }
        let path = self.path(vol);
        let result = if vol.format.as_deref() == Some("subvol") {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StorageError::NoSuchVolume(path.display().to_string()),
            _ => StorageError::io(format!("unable to delete '{}'", path.display()), e),
        })
    }

    pub fn resize(&self, vol: &VolName, size: u64) -> Result<()> {
        let path = self.path(vol);
        let format = vol.format.as_deref().unwrap_or("raw");
        let (current, _, _) = self.info(&path, format)?;
        if size < current {
            return Err(StorageError::Other(format!(
                "shrinking disks is not supported ({} bytes < {current} bytes)",
                size
            )));
        }
        match format {
            "raw" => OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(size))
                .map_err(|e| StorageError::io(format!("unable to resize '{}'", path.display()), e)),
            "subvol" => Ok(()),
            _ => self
                .runner
                .run(
                    &Cmd::new("qemu-img")
                        .args(["resize", "-f", format])
                        .arg(path.to_string_lossy())
                        .arg(size.to_string()),
                )
                .map(drop),
        }
    }

    /// Internal qcow2 snapshots: `op` is `-c` (create), `-a` (apply) or `-d` (delete).
    pub fn qcow2_snapshot(&self, vol: &VolName, op: &str, snap: &str) -> Result<()> {
        if vol.format.as_deref() != Some("qcow2") {
            return Err(StorageError::Other(format!(
                "snapshots of '{}' need format qcow2 (it is {})",
                vol.name,
                vol.format.as_deref().unwrap_or("unknown")
            )));
        }
        self.runner
            .run(
                &Cmd::new("qemu-img")
                    .args(["snapshot", op, snap])
                    .arg(self.path(vol).to_string_lossy()),
            )
            .map(drop)
    }

    /// Renames `vm-<id>-...` to `base-<id>-...` and makes it read-only.
    pub fn create_base(&self, vol: &VolName) -> Result<String> {
        if vol.is_base || vol.base.is_some() {
            return Err(StorageError::Other(format!(
                "'{}' is already a base image or a linked clone",
                vol.name
            )));
        }
        let rest = vol.name.strip_prefix("vm-").ok_or_else(|| {
            StorageError::bad_volume(&vol.name, "only vm-<id>- images can become base images")
        })?;
        let new_name = format!("base-{rest}");
        let vmid = vol.vmid.unwrap_or_default();
        let from = self.path(vol);
        let to = self.dir(vmid).join(&new_name);
        rename_noreplace(&from, &to)?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o444));
        Ok(format!("{vmid}/{new_name}"))
    }

    /// A qcow2 linked clone of base image `vol` for `vmid`.
    pub fn clone(&self, vol: &VolName, vmid: u32, name: &str) -> Result<String> {
        if !vol.is_base || vol.format.as_deref() != Some("qcow2") {
            return Err(StorageError::Other(format!(
                "linked clones need a qcow2 base image ('{}' is not one)",
                vol.name
            )));
        }
        let basevmid = vol.vmid.unwrap_or_default();
        let dir = self.dir(vmid);
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(format!("unable to create '{}'", dir.display()), e))?;
        let path = dir.join(name);
        let volname = format!("{basevmid}/{}/{vmid}/{name}", vol.name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::AlreadyExists(volname))
            }
            Err(e) => {
                return Err(StorageError::io(
                    format!("unable to create '{}'", path.display()),
                    e,
                ))
            }
        }
        let backing = format!("../{basevmid}/{}", vol.name);
        let run = self.runner.run(
            &Cmd::new("qemu-img")
                .args(["create", "-b", &backing, "-F", "qcow2", "-f", "qcow2"])
                .arg(path.to_string_lossy()),
        );
        if let Err(e) = run {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(volname)
    }

    pub fn rename(&self, vol: &VolName, vmid: u32, name: &str) -> Result<String> {
        let (owner, format, _) = volume::parse_image_file(name)?;
        if owner != vmid || Some(format.as_str()) != vol.format.as_deref() {
            return Err(StorageError::bad_volume(
                name,
                format!(
                    "must be a {} image of guest {vmid}",
                    vol.format.as_deref().unwrap_or("raw")
                ),
            ));
        }
        let dir = self.dir(vmid);
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(format!("unable to create '{}'", dir.display()), e))?;
        rename_noreplace(&self.path(vol), &dir.join(name))?;
        Ok(format!("{vmid}/{name}"))
    }

    /// `raw+size` / `qcow2+size`: an 8-byte little-endian size, then the
    /// file; `tar+size` for subvolume directories.
    pub fn export(&self, vol: &VolName, format: &str, out: &mut dyn Write) -> Result<()> {
        let want = match vol.format.as_deref().unwrap_or("raw") {
            "subvol" => "tar+size".to_string(),
            f => format!("{f}+size"),
        };
        if format != want {
            return Err(StorageError::Other(format!(
                "cannot export '{}' as {format} (use {want})",
                vol.name
            )));
        }
        let path = self.path(vol);
        if format == "tar+size" {
            return tar_export(self.runner, &path, 0, out);
        }
        let mut file = std::fs::File::open(&path)
            .map_err(|e| StorageError::io(format!("unable to open '{}'", path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| StorageError::io(format!("unable to stat '{}'", path.display()), e))?
            .len();
        out.write_all(&size.to_le_bytes())
            .and_then(|_| copy_exact(&mut file, out, size))
            .map_err(|e| StorageError::io(format!("exporting '{}'", vol.name), e))
    }

    pub fn import(
        &self,
        vmid: u32,
        name: &str,
        format: &str,
        input: &mut dyn Read,
    ) -> Result<String> {
        let file_format = match format {
            "raw+size" => "raw",
            "qcow2+size" => "qcow2",
            "tar+size" => {
                let volname = self.create(vmid, name, "subvol", 0)?;
                let path = self.path(&volume::parse_file_volname(&volname)?);
                if let Err(e) = tar_import(self.runner, &path, input) {
                    let _ = std::fs::remove_dir_all(&path);
                    return Err(e);
                }
                return Ok(volname);
            }
            _ => {
                return Err(StorageError::Other(format!(
                    "cannot import stream format '{format}'"
                )))
            }
        };
        let mut header = [0u8; 8];
        input
            .read_exact(&mut header)
            .map_err(|e| StorageError::io("reading the stream header", e))?;
        let size = u64::from_le_bytes(header);
        let volname = self.create(vmid, name, file_format, 0)?;
        let vol = volume::parse_file_volname(&volname)?;
        let path = self.path(&vol);
        let result = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| copy_exact(input, &mut f, size).and_then(|_| f.sync_all()));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&path);
            return Err(StorageError::io(format!("importing '{name}'"), e));
        }
        Ok(volname)
    }
}

/// Copies exactly `size` bytes; a short input is an error.
fn copy_exact(input: &mut dyn Read, out: &mut dyn Write, size: u64) -> std::io::Result<()> {
    let copied = std::io::copy(&mut input.take(size), out)?;
    if copied != size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("stream ended after {copied} of {size} bytes"),
        ));
    }
    Ok(())
}

/// Renames without replacing an existing target.
fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        return Err(StorageError::AlreadyExists(to.display().to_string()));
    }
    std::fs::rename(from, to).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StorageError::NoSuchVolume(from.display().to_string()),
        _ => StorageError::io(format!("unable to rename '{}'", from.display()), e),
    })
}

/// `../100/base-100-disk-0.qcow2` → (100, `base-100-disk-0.qcow2`).
fn base_of(backing: &str) -> Option<(u32, String)> {
    let mut parts = backing.rsplit('/');
    let name = parts.next()?;
    let vmid = parts.next()?.parse().ok()?;
    volume::parse_image_file(name).ok()?;
    Some((vmid, name.to_string()))
}

/// Reads `qemu-img info --output=json`.
pub fn parse_qemu_img_info(json: &str) -> Result<(u64, u64, Option<String>)> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| StorageError::Other(format!("unable to parse qemu-img info output: {e}")))?;
    let size = v["virtual-size"].as_u64().unwrap_or(0);
    let used = v["actual-size"].as_u64().unwrap_or(0);
    let backing = v["backing-filename"].as_str().map(str::to_string);
    Ok((size, used, backing))
}

fn allocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len =
        i64::try_from(len).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: the fd is owned by `file`, which outlives the call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}
