//! `btrfs`: every image is a subvolume (`images/<vmid>/vm-<vmid>-disk-0/disk.raw`
//! for VMs, `images/<vmid>/subvol-<vmid>-disk-0/` for containers), so
//! snapshots and linked clones are btrfs snapshots and export/import can
//! use `btrfs send`/`receive`. Snapshots are `<subvolume>@<name>`, read-only.

use super::dir::{activate_dir, image_vol};
use super::files;
use crate::config::StorageDef;
use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::exec::Cmd;
use crate::plugin::{fs_usage, Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
use crate::volume::{self, VolName, VolumeId};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::PathBuf;

pub struct BtrfsPlugin {
    def: StorageDef,
    env: Env,
}

const RAW_FILE: &str = "disk.raw";
const EXPORT_SNAP: &str = "__export__";

impl BtrfsPlugin {
    pub fn new(def: StorageDef, env: Env) -> BtrfsPlugin {
        BtrfsPlugin { def, env }
    }

    fn images_root(&self) -> Result<PathBuf> {
        self.content_dir(Content::Images)
            .ok_or_else(|| StorageError::Other(format!("storage '{}' has no path", self.def.id)))
    }

    /// The subvolume of an image: its name without the extension.
    fn subvolume(&self, vol: &VolName) -> Result<PathBuf> {
        let stem = vol
            .name
            .rsplit_once('.')
            .map_or(vol.name.as_str(), |(s, _)| s);
        Ok(self
            .images_root()?
            .join(vol.vmid.unwrap_or_default().to_string())
            .join(stem))
    }

    fn snap_path(&self, vol: &VolName, snap: &str) -> Result<PathBuf> {
        check_snap_name(snap)?;
        let sub = self.subvolume(vol)?;
        Ok(PathBuf::from(format!("{}@{snap}", sub.display())))
    }

    fn btrfs<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.env.runner.run(&Cmd::new("btrfs").args(args))
    }

    fn image(&self, volname: &str) -> Result<VolName> {
        image_vol(self, volname)
    }

    fn data_path(&self, vol: &VolName) -> Result<PathBuf> {
        let sub = self.subvolume(vol)?;
        Ok(if vol.format.as_deref() == Some("subvol") {
            sub
        } else {
            sub.join(RAW_FILE)
        })
    }
}

fn check_snap_name(snap: &str) -> Result<()> {
    if snap.is_empty() || snap.contains(['/', '@']) || snap.starts_with('.') {
        return Err(StorageError::Other(format!(
            "invalid snapshot name '{snap}'"
        )));
    }
    Ok(())
}

fn path_str(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

impl StoragePlugin for BtrfsPlugin {
    fn def(&self) -> &StorageDef {
        &self.def
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            linked_clones: true,
            resize: true,
            rename: true,
            export_formats: &["btrfs", "raw+size", "tar+size"],
            import_formats: &["btrfs", "raw+size", "tar+size"],
        }
    }

    fn activate(&self) -> Result<()> {
        activate_dir(self, &self.def)
    }

    fn status(&self) -> Result<Usage> {
        fs_usage(&self.def.path().unwrap_or_default())
    }

    fn parse_volname(&self, volname: &str) -> Result<VolName> {
        volume::parse_file_volname(volname)
    }

    fn path(&self, volname: &str) -> Result<PathBuf> {
        let vol = self.parse_volname(volname)?;
        match vol.content {
            Content::Images | Content::Rootdir => self.data_path(&vol),
            _ => self.file_path(&vol),
        }
    }

    fn list_images(&self, vmid: Option<u32>) -> Result<Vec<VolumeInfo>> {
        let root = self.images_root()?;
        let ids: Vec<u32> = match vmid {
            Some(id) => vec![id],
            None => std::fs::read_dir(&root)
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut out = Vec::new();
        for id in ids {
            let Ok(rd) = std::fs::read_dir(root.join(id.to_string())) else {
                continue;
            };
            for entry in rd.flatten() {
                let stem = entry.file_name().to_string_lossy().into_owned();
                if stem.contains('@') || !entry.path().is_dir() {
                    continue;
                }
                let ext = if stem.starts_with("subvol-") || stem.starts_with("basevol-") {
                    "subvol"
                } else {
                    "raw"
                };
                let name = format!("{stem}.{ext}");
                let Ok((owner, format, _)) = volume::parse_image_file(&name) else {
                    continue;
                };
                if owner != id {
                    continue;
                }
                let volname = format!("{id}/{name}");
                let (size, used) = self.volume_size(&volname).unwrap_or((0, 0));
                out.push(VolumeInfo {
                    volid: VolumeId::new(&self.def.id, &volname).to_string(),
                    content: Content::Images,
                    format,
                    size,
                    used: Some(used),
                    vmid: Some(id),
                    ctime: None,
                    parent: None,
                    notes: None,
                    protected: false,
                });
            }
        }
        Ok(out)
    }

    fn create_image(&self, vmid: u32, name: &str, format: &str, size_kib: u64) -> Result<String> {
        let (owner, fmt, _) = volume::parse_image_file(name)?;
        if owner != vmid || fmt != format || !matches!(format, "raw" | "subvol") {
            return Err(StorageError::bad_volume(
                name,
                format!("not a raw or subvol image of guest {vmid}"),
            ));
        }
        let volname = format!("{vmid}/{name}");
        let vol = self.parse_volname(&volname)?;
        let sub = self.subvolume(&vol)?;
        if sub.exists() {
            return Err(StorageError::AlreadyExists(volname));
        }
        let dir = sub.parent().map(PathBuf::from).unwrap_or_default();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(format!("unable to create '{}'", dir.display()), e))?;
        if let Err(e) = self.btrfs(["subvolume", "create", &path_str(&sub)]) {
            return Err(match e.to_string().contains("exists") {
                true => StorageError::AlreadyExists(volname),
                false => e,
            });
        }
        if format == "raw" {
            let file = sub.join(RAW_FILE);
            let made = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
                .and_then(|f| {
                    if self.def.flag("nocow") {
                        let _ = self
                            .env
                            .runner
                            .run(&Cmd::new("chattr").arg("+C").arg(path_str(&file)));
                    }
                    f.set_len(size_kib * 1024)
                });
            if let Err(e) = made {
                let _ = self.btrfs(["subvolume", "delete", &path_str(&sub)]);
                return Err(StorageError::io(
                    format!("unable to create '{}'", file.display()),
                    e,
                ));
            }
        }
        Ok(volname)
    }

    fn free_image(&self, volname: &str) -> Result<()> {
        let vol = self.image(volname)?;
        let sub = self.subvolume(&vol)?;
        if !sub.exists() {
            return Err(StorageError::NoSuchVolume(
                VolumeId::new(&self.def.id, volname).to_string(),
            ));
        }
        let prefix = format!("{}@", sub.file_name().unwrap_or_default().to_string_lossy());
        if let Some(dir) = sub.parent() {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    self.btrfs(["subvolume", "delete", &path_str(&entry.path())])?;
                }
            }
        }
        if vol.is_base {
            self.btrfs(["property", "set", &path_str(&sub), "ro", "false"])?;
        }
        self.btrfs(["subvolume", "delete", &path_str(&sub)])
            .map(drop)
    }

    fn volume_size(&self, volname: &str) -> Result<(u64, u64)> {
        let vol = self.image(volname)?;
        let path = self.data_path(&vol)?;
        let meta = std::fs::metadata(&path).map_err(|_| {
            StorageError::NoSuchVolume(VolumeId::new(&self.def.id, volname).to_string())
        })?;
        use std::os::unix::fs::MetadataExt;
        Ok(match vol.format.as_deref() {
            Some("subvol") => (0, 0),
            _ => (meta.len(), meta.blocks() * 512),
        })
    }

    fn resize(&self, volname: &str, size: u64) -> Result<()> {
        let vol = self.image(volname)?;
        if vol.format.as_deref() == Some("subvol") {
            return Ok(());
        }
        let path = self.data_path(&vol)?;
        let (current, _) = self.volume_size(volname)?;
        if size < current {
            return Err(StorageError::Other(format!(
                "shrinking disks is not supported ({size} bytes < {current} bytes)"
            )));
        }
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(size))
            .map_err(|e| StorageError::io(format!("unable to resize '{}'", path.display()), e))
    }

    fn snapshot(&self, volname: &str, snap: &str) -> Result<()> {
        let vol = self.image(volname)?;
        let (sub, target) = (self.subvolume(&vol)?, self.snap_path(&vol, snap)?);
        self.btrfs([
            "subvolume",
            "snapshot",
            "-r",
            &path_str(&sub),
            &path_str(&target),
        ])
        .map(drop)
    }

    fn rollback(&self, volname: &str, snap: &str) -> Result<()> {
        let vol = self.image(volname)?;
        let (sub, source) = (self.subvolume(&vol)?, self.snap_path(&vol, snap)?);
        if !source.exists() {
            return Err(StorageError::Other(format!(
                "snapshot '{snap}' of '{volname}' does not exist"
            )));
        }
        // Build the rolled-back copy first, then swap, so a failure leaves the image as it was.
        let tmp = PathBuf::from(format!("{}.rollback", sub.display()));
        self.btrfs(["subvolume", "snapshot", &path_str(&source), &path_str(&tmp)])?;
        let old = PathBuf::from(format!("{}.old", sub.display()));
        std::fs::rename(&sub, &old)
            .map_err(|e| StorageError::io(format!("unable to rename '{}'", sub.display()), e))?;
        if let Err(e) = std::fs::rename(&tmp, &sub) {
            let _ = std::fs::rename(&old, &sub);
            return Err(StorageError::io(
                format!("unable to rename '{}'", tmp.display()),
                e,
            ));
        }
        self.btrfs(["subvolume", "delete", &path_str(&old)])
            .map(drop)
    }

    fn delete_snapshot(&self, volname: &str, snap: &str) -> Result<()> {
        let vol = self.image(volname)?;
        self.btrfs([
            "subvolume",
            "delete",
            &path_str(&self.snap_path(&vol, snap)?),
        ])
        .map(drop)
    }

    fn create_base(&self, volname: &str) -> Result<String> {
        let vol = self.image(volname)?;
        let (prefix, newprefix) = match vol.format.as_deref() {
            Some("subvol") => ("subvol-", "basevol-"),
            _ => ("vm-", "base-"),
        };
        let rest = vol
            .name
            .strip_prefix(prefix)
            .ok_or_else(|| StorageError::Other(format!("'{volname}' is already a base image")))?;
        let vmid = vol.vmid.unwrap_or_default();
        let new_volname = format!("{vmid}/{newprefix}{rest}");
        let new_vol = self.parse_volname(&new_volname)?;
        let (from, to) = (self.subvolume(&vol)?, self.subvolume(&new_vol)?);
        if to.exists() {
            return Err(StorageError::AlreadyExists(new_volname));
        }
        std::fs::rename(&from, &to)
            .map_err(|e| StorageError::io(format!("unable to rename '{}'", from.display()), e))?;
        self.btrfs(["property", "set", &path_str(&to), "ro", "true"])?;
        Ok(new_volname)
    }

    fn clone_image(&self, volname: &str, vmid: u32, name: &str) -> Result<String> {
        let base = self.image(volname)?;
        if !base.is_base {
            return Err(StorageError::Other(format!(
                "linked clones need a base image ('{volname}' is not one)"
            )));
        }
        let new_volname = format!("{vmid}/{name}");
        let new_vol = self.parse_volname(&new_volname)?;
        if new_vol.vmid != Some(vmid) || new_vol.format != base.format {
            return Err(StorageError::bad_volume(
                name,
                format!(
                    "must be a {} image of guest {vmid}",
                    base.format.as_deref().unwrap_or("raw")
                ),
            ));
        }
        let target = self.subvolume(&new_vol)?;
        if target.exists() {
            return Err(StorageError::AlreadyExists(new_volname));
        }
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StorageError::io(format!("unable to create '{}'", dir.display()), e)
            })?;
        }
        match self.btrfs([
            "subvolume",
            "snapshot",
            &path_str(&self.subvolume(&base)?),
            &path_str(&target),
        ]) {
            Err(e) if e.to_string().contains("exists") => {
                Err(StorageError::AlreadyExists(new_volname))
            }
            other => other.map(|_| new_volname),
        }
    }

    fn rename(&self, volname: &str, vmid: u32, name: &str) -> Result<String> {
        let vol = self.image(volname)?;
        let new_volname = format!("{vmid}/{name}");
        let new_vol = self.parse_volname(&new_volname)?;
        if new_vol.format != vol.format {
            return Err(StorageError::bad_volume(
                name,
                "the format cannot change on rename",
            ));
        }
        let (from, to) = (self.subvolume(&vol)?, self.subvolume(&new_vol)?);
        if to.exists() {
            return Err(StorageError::AlreadyExists(new_volname));
        }
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StorageError::io(format!("unable to create '{}'", dir.display()), e)
            })?;
        }
        std::fs::rename(&from, &to)
            .map_err(|e| StorageError::io(format!("unable to rename '{}'", from.display()), e))?;
        Ok(new_volname)
    }

    fn export(
        &self,
        volname: &str,
        format: &str,
        snapshot: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<()> {
        let vol = self.image(volname)?;
        match format {
            "btrfs" => {
                let (source, temporary) = match snapshot {
                    Some(s) => (self.snap_path(&vol, s)?, false),
                    None => {
                        self.snapshot(volname, EXPORT_SNAP)?;
                        (self.snap_path(&vol, EXPORT_SNAP)?, true)
                    }
                };
                let sent = self.env.runner.run_to(
                    &Cmd::new("btrfs")
                        .args(["send", "-q"])
                        .arg(path_str(&source)),
                    out,
                );
                if temporary {
                    let _ = self.delete_snapshot(volname, EXPORT_SNAP);
                }
                sent
            }
            "tar+size" if vol.format.as_deref() == Some("subvol") => {
                let source = match snapshot {
                    Some(s) => self.snap_path(&vol, s)?,
                    None => self.subvolume(&vol)?,
                };
                files::tar_export(&*self.env.runner, &source, 0, out)
            }
            "raw+size" if vol.format.as_deref() == Some("raw") && snapshot.is_none() => {
                let path = self.data_path(&vol)?;
                let mut file = std::fs::File::open(&path).map_err(|e| {
                    StorageError::io(format!("unable to open '{}'", path.display()), e)
                })?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                out.write_all(&size.to_le_bytes())
                    .and_then(|_| std::io::copy(&mut file, out).map(drop))
                    .map_err(|e| StorageError::io(format!("exporting '{volname}'"), e))
            }
            _ => Err(StorageError::Other(format!(
                "cannot export '{volname}' as {format} (use btrfs, raw+size or tar+size)"
            ))),
        }
    }

    fn import(&self, vmid: u32, name: &str, format: &str, input: &mut dyn Read) -> Result<String> {
        match format {
            "btrfs" => {
                let volname = format!("{vmid}/{name}");
                let vol = self.parse_volname(&volname)?;
                let target = self.subvolume(&vol)?;
                if target.exists() {
                    return Err(StorageError::AlreadyExists(volname));
                }
                // Receive into a private directory, then make the received
                // (read-only) subvolume the writable image.
                let staging = self
                    .images_root()?
                    .join(vmid.to_string())
                    .join(format!(".import-{}", std::process::id()));
                std::fs::create_dir_all(&staging).map_err(|e| {
                    StorageError::io(format!("unable to create '{}'", staging.display()), e)
                })?;
                let result = (|| {
                    self.env.runner.run_from(
                        &Cmd::new("btrfs")
                            .args(["receive", "-q"])
                            .arg(path_str(&staging)),
                        input,
                    )?;
                    let received = std::fs::read_dir(&staging)
                        .map_err(|e| StorageError::io("reading the received subvolume", e))?
                        .flatten()
                        .next()
                        .ok_or_else(|| {
                            StorageError::Other("the btrfs stream held no subvolume".into())
                        })?
                        .path();
                    self.btrfs([
                        "subvolume",
                        "snapshot",
                        &path_str(&received),
                        &path_str(&target),
                    ])?;
                    self.btrfs(["subvolume", "delete", &path_str(&received)])
                        .map(drop)
                })();
                let _ = std::fs::remove_dir(&staging);
                result.map(|_| volname)
            }
            "tar+size" => {
                let volname = self.create_image(vmid, name, "subvol", 0)?;
                let target = self.subvolume(&self.image(&volname)?)?;
                match files::tar_import(&*self.env.runner, &target, input) {
                    Ok(_) => Ok(volname),
                    Err(e) => {
                        let _ = self.free_image(&volname);
                        Err(e)
                    }
                }
            }
            "raw+size" => {
                let mut header = [0u8; 8];
                input
                    .read_exact(&mut header)
                    .map_err(|e| StorageError::io("reading the stream header", e))?;
                let size = u64::from_le_bytes(header);
                let volname = self.create_image(vmid, name, "raw", size.div_ceil(1024))?;
                let path = self.path(&volname)?;
                let copied = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|mut f| std::io::copy(&mut input.take(size), &mut f));
                match copied {
                    Ok(n) if n == size => Ok(volname),
                    other => {
                        let _ = self.free_image(&volname);
                        Err(StorageError::Other(format!(
                            "import of '{name}' failed: {}",
                            match other {
                                Ok(n) => format!("stream ended after {n} of {size} bytes"),
                                Err(e) => e.to_string(),
                            }
                        )))
                    }
                }
            }
            _ => Err(StorageError::Other(format!(
                "cannot import stream format '{format}'"
            ))),
        }
    }
}
