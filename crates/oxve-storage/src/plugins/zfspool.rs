//! `zfspool`: VM images are zvols (`/dev/zvol/<pool>/vm-<vmid>-disk-<n>`),
//! container volumes are file systems (`subvol-<vmid>-disk-<n>`, mounted
//! under the pool's mount point, sized by `refquota`). Snapshots are ZFS
//! snapshots; a template's volume is renamed to `base-`/`basevol-` and
//! snapshotted as `@__base__`, and linked clones are `zfs clone`s of that
//! snapshot, named `<base>/<clone>`. Volumes move as `zfs send` streams.

use super::lvm::{export_block_device, read_size_header, write_block_device};
use super::{check_snap_name, is_missing, required, taken_if};
use crate::config::StorageDef;
use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::exec::Cmd;
use crate::plugin::{Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
use crate::volume::{self, VolName, VolumeId};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub struct ZfsPoolPlugin {
    def: StorageDef,
    env: Env,
}

/// The snapshot linked clones are made from.
const BASE_SNAP: &str = "__base__";
/// Tracks a subvolume's `refquota` on its snapshots (ZFS does not roll it back).
const REFQUOTA_PROP: &str = "pve-storage:refquota";
const TAKEN: &[&str] = &["dataset already exists"];
const MISSING: &[&str] = &["dataset does not exist"];
const STREAMS: &[&str] = &["zfs", "raw+size"];

impl ZfsPoolPlugin {
    pub fn new(def: StorageDef, env: Env) -> ZfsPoolPlugin {
        ZfsPoolPlugin { def, env }
    }

    fn pool(&self) -> Result<&str> {
        required(&self.def, "pool")
    }

    /// `<pool>/<name>`.
    fn dataset(&self, name: &str) -> Result<String> {
        Ok(format!("{}/{name}", self.pool()?))
    }

    fn zfs<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.env.runner.run(&Cmd::new("zfs").args(args))
    }

    /// The values of `props` (comma-separated) of `dataset`, one per property.
    fn get(&self, props: &str, dataset: &str) -> Result<Vec<String>> {
        let out = self.zfs(["get", "-o", "value", "-Hp", props, dataset])?;
        Ok(out.lines().map(|l| l.trim().to_string()).collect())
    }

    fn image(&self, volname: &str) -> Result<VolName> {
        volume::parse_block_volname(volname, "raw")
    }

    fn no_such(&self, volname: &str) -> StorageError {
        StorageError::NoSuchVolume(VolumeId::new(&self.def.id, volname).to_string())
    }

    fn zvol_device(&self, name: &str) -> Result<PathBuf> {
        Ok(PathBuf::from(format!("/dev/zvol/{}/{name}", self.pool()?)))
    }

    fn is_subvol(vol: &VolName) -> bool {
        vol.format.as_deref() == Some("subvol")
    }

    /// Waits for udev to create a zvol's device link (it appears shortly
    /// after `zfs create`); fails when it is still missing.
    fn wait_for_zvol(&self, name: &str) -> Result<PathBuf> {
        let dev = self.zvol_device(name)?;
        let settle = Cmd::new("udevadm")
            .args(["settle", "--timeout=10"])
            .arg(format!("--exit-if-exists={}", dev.display()));
        self.env.runner.run(&settle)?;
        Ok(dev)
    }

    fn create_zvol(&self, name: &str, size_kib: u64) -> Result<()> {
        // A size that is a multiple of 1 MiB is a multiple of every volblocksize.
        let size = size_kib.div_ceil(1024) * 1024;
        let mut args = vec!["create".to_string()];
        if self.def.flag("sparse") {
            args.push("-s".into());
        }
        if let Some(bs) = self.def.get("blocksize") {
            args.extend(["-b".into(), bs.to_string()]);
        }
        args.extend(["-V".into(), format!("{size}k"), self.dataset(name)?]);
        self.zfs(args).map(drop)
    }

    fn create_subvol(&self, name: &str, size_kib: u64) -> Result<()> {
        let quota = if size_kib == 0 {
            "none".to_string()
        } else {
            format!("{size_kib}k")
        };
        self.zfs([
            "create",
            "-o",
            "acltype=posixacl",
            "-o",
            "xattr=sa",
            "-o",
            &format!("refquota={quota}"),
            &self.dataset(name)?,
        ])
        .map(drop)
    }

    /// Destroys a dataset and its snapshots; a busy dataset (just closed by
    /// QEMU, or still mounted) gets a few seconds to let go.
    fn destroy(&self, volname: &str, dataset: &str) -> Result<()> {
        for attempt in 0..6 {
            match self.zfs(["destroy", "-r", dataset]) {
                Ok(_) => return Ok(()),
                Err(e) if is_missing(&e, MISSING) => return Err(self.no_such(volname)),
                Err(e) if is_missing(&e, &["dataset is busy"]) && attempt < 5 => {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn snapshot_name(&self, vol: &VolName, snap: &str) -> Result<String> {
        Ok(format!("{}@{snap}", self.dataset(&vol.name)?))
    }

    /// `zfs snapshot`, recording a subvolume's `refquota` on the snapshot.
    fn take_snapshot(&self, vol: &VolName, snap: &str) -> Result<()> {
        let name = self.snapshot_name(vol, snap)?;
        self.zfs(["snapshot", &name])?;
        if Self::is_subvol(vol) {
            let quota = self.get("refquota", &self.dataset(&vol.name)?)?;
            let quota = quota.first().map(String::as_str).unwrap_or("0");
            self.zfs(["set", &format!("{REFQUOTA_PROP}={quota}"), &name])?;
        }
        Ok(())
    }

    /// `[<base>/]<name>`: the volume name of dataset `name` of `vol`'s lineage.
    fn with_base(vol: &VolName, name: &str) -> String {
        match &vol.base {
            Some((_, base)) => format!("{base}/{name}"),
            None => name.to_string(),
        }
    }
}

impl StoragePlugin for ZfsPoolPlugin {
    fn def(&self) -> &StorageDef {
        &self.def
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            linked_clones: true,
            resize: true,
            rename: true,
            export_formats: STREAMS,
            import_formats: STREAMS,
        }
    }

    /// Imports the pool when it is not (e.g. after boot without the cache
    /// file) and mounts its file systems.
    fn activate(&self) -> Result<()> {
        let dataset = self.pool()?;
        if dataset_mounted(dataset) {
            return Ok(());
        }
        let pool = dataset.split('/').next().unwrap_or(dataset);
        let imported = || {
            self.env
                .runner
                .run(&Cmd::new("zpool").args(["list", "-o", "name", "-H", pool]))
                .is_ok_and(|out| out.lines().any(|l| l.trim() == pool))
        };
        if !imported() {
            let import = Cmd::new("zpool").args([
                "import",
                "-d",
                "/dev/disk/by-id/",
                "-o",
                "cachefile=none",
                pool,
            ]);
            if let Err(e) = self.env.runner.run(&import) {
                // Another activation may have imported it meanwhile.
                if !imported() {
                    return Err(StorageError::Other(format!(
                        "could not activate storage '{}', {e}",
                        self.def.id
                    )));
                }
            }
        }
        self.zfs(["mount", "-a"]).map(drop)
    }

    fn activate_volume(&self, volname: &str) -> Result<()> {
        let vol = self.image(volname)?;
        if Self::is_subvol(&vol) {
            let dataset = self.dataset(&vol.name)?;
            if self.get("mounted", &dataset)?.first().map(String::as_str) != Some("yes") {
                self.zfs(["mount", &dataset])?;
            }
            return Ok(());
        }
        let dev = self.wait_for_zvol(&vol.name)?;
        if !dev.exists() {
            return Err(StorageError::Other(format!(
                "no zvol device link for '{volname}' found ({})",
                dev.display()
            )));
        }
        Ok(())
    }

    fn status(&self) -> Result<Usage> {
        let values = self.get("available,used", self.pool()?)?;
        let num = |i: usize| {
            values
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (avail, used) = (num(0), num(1));
        Ok(Usage {
            total: avail + used,
            used,
            avail,
        })
    }

    fn parse_volname(&self, volname: &str) -> Result<VolName> {
        self.image(volname)
    }

    fn path(&self, volname: &str) -> Result<PathBuf> {
        let vol = self.image(volname)?;
        if Self::is_subvol(&vol) {
            let mountpoint = match self.def.get("mountpoint") {
                Some(mp) => mp.to_string(),
                None => format!("/{}", self.pool()?),
            };
            return Ok(Path::new(&mountpoint).join(&vol.name));
        }
        self.zvol_device(&vol.name)
    }

    fn list_images(&self, vmid: Option<u32>) -> Result<Vec<VolumeInfo>> {
        let pool = self.pool()?;
        let out = self.zfs([
            "list",
            "-o",
            "name,volsize,origin,type,refquota",
            "-t",
            "volume,filesystem",
            "-d1",
            "-Hp",
            pool,
        ])?;
        let mut list = Vec::new();
        for ds in parse_zfs_list(&out, pool) {
            let Ok(vol) = self.image(&ds.name) else {
                continue;
            };
            if vmid.is_some_and(|id| vol.vmid != Some(id)) {
                continue;
            }
            let base = ds
                .origin
                .as_deref()
                .and_then(|o| o.strip_suffix(&format!("@{BASE_SNAP}")));
            let volname = match base {
                Some(b) => format!("{b}/{}", ds.name),
                None => ds.name.clone(),
            };
            list.push(VolumeInfo {
                volid: VolumeId::new(&self.def.id, &volname).to_string(),
                content: Content::Images,
                format: vol.format.unwrap_or_else(|| "raw".into()),
                size: ds.size,
                used: None,
                vmid: vol.vmid,
                ctime: None,
                parent: base.map(str::to_string),
                notes: None,
                protected: false,
            });
        }
        Ok(list)
    }

    fn create_image(&self, vmid: u32, name: &str, format: &str, size_kib: u64) -> Result<String> {
        let vol = self.image(name)?;
        let prefix = if format == "subvol" { "subvol" } else { "vm" };
        if vol.base.is_some()
            || vol.vmid != Some(vmid)
            || !vol.name.starts_with(&format!("{prefix}-{vmid}-"))
        {
            return Err(StorageError::bad_volume(
                name,
                format!("illegal name - should be '{prefix}-{vmid}-*'"),
            ));
        }
        let created = match format {
            "raw" => self.create_zvol(name, size_kib),
            "subvol" => self.create_subvol(name, size_kib),
            other => {
                return Err(StorageError::Other(format!(
                    "unsupported format '{other}' on zfspool"
                )))
            }
        };
        created.map_err(|e| taken_if(e, TAKEN, name))?;
        Ok(name.to_string())
    }

    fn free_image(&self, volname: &str) -> Result<()> {
        let vol = self.image(volname)?;
        self.destroy(volname, &self.dataset(&vol.name)?)
    }

    fn volume_size(&self, volname: &str) -> Result<(u64, u64)> {
        let vol = self.image(volname)?;
        let attr = if Self::is_subvol(&vol) {
            "refquota,usedbydataset"
        } else {
            "volsize,usedbydataset"
        };
        let values = self.get(attr, &self.dataset(&vol.name)?).map_err(|e| {
            if is_missing(&e, MISSING) {
                self.no_such(volname)
            } else {
                e
            }
        })?;
        let size = values
            .first()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                StorageError::Other(format!("could not get the size of zfs volume '{volname}'"))
            })?;
        let used = values.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((size, used))
    }

    fn resize(&self, volname: &str, size: u64) -> Result<()> {
        let vol = self.image(volname)?;
        let (attr, kib) = if Self::is_subvol(&vol) {
            ("refquota", size / 1024)
        } else {
            ("volsize", (size / 1024).div_ceil(1024) * 1024)
        };
        self.zfs(["set", &format!("{attr}={kib}k"), &self.dataset(&vol.name)?])
            .map(drop)
    }

    fn snapshot(&self, volname: &str, snap: &str) -> Result<()> {
        check_snap_name(snap)?;
        self.take_snapshot(&self.image(volname)?, snap)
    }

    fn rollback(&self, volname: &str, snap: &str) -> Result<()> {
        check_snap_name(snap)?;
        let vol = self.image(volname)?;
        let name = self.snapshot_name(&vol, snap)?;
        self.zfs(["rollback", &name])?;
        if !Self::is_subvol(&vol) {
            return Ok(());
        }
        let dataset = self.dataset(&vol.name)?;
        let tracked = self.get(REFQUOTA_PROP, &name)?;
        match tracked.first().map(String::as_str) {
            Some(q) if !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit()) => {
                let q = if q.trim_start_matches('0').is_empty() {
                    "none"
                } else {
                    q
                };
                self.zfs(["set", &format!("refquota={q}"), &dataset])?;
            }
            _ => {}
        }
        // Unmount so the kernel drops caches of the old content; the next
        // activation mounts it again.
        match self.zfs(["unmount", &dataset]) {
            Err(e) if !is_missing(&e, &["not currently mounted"]) => Err(e),
            _ => Ok(()),
        }
    }

    fn delete_snapshot(&self, volname: &str, snap: &str) -> Result<()> {
        check_snap_name(snap)?;
        let vol = self.image(volname)?;
        self.zfs(["destroy", &self.snapshot_name(&vol, snap)?])
            .map(drop)
    }

    fn create_base(&self, volname: &str) -> Result<String> {
        let vol = self.image(volname)?;
        let newname = if let Some(rest) = vol.name.strip_prefix("subvol-") {
            format!("basevol-{rest}")
        } else if let Some(rest) = vol.name.strip_prefix("vm-") {
            format!("base-{rest}")
        } else {
            return Err(StorageError::Other(format!(
                "'{volname}' is already a base image"
            )));
        };
        self.zfs([
            "rename",
            &self.dataset(&vol.name)?,
            &self.dataset(&newname)?,
        ])
        .map_err(|e| taken_if(e, TAKEN, &newname))?;
        let base = VolName {
            name: newname.clone(),
            ..vol.clone()
        };
        self.take_snapshot(&base, BASE_SNAP)?;
        Ok(Self::with_base(&vol, &newname))
    }

    fn clone_image(&self, volname: &str, vmid: u32, name: &str) -> Result<String> {
        let base = self.image(volname)?;
        if !base.is_base {
            return Err(StorageError::Other(format!(
                "linked clones need a base image ('{volname}' is not one)"
            )));
        }
        let target = self.image(name)?;
        if target.vmid != Some(vmid)
            || target.is_base
            || target.base.is_some()
            || target.format != base.format
        {
            let prefix = if Self::is_subvol(&base) {
                "subvol"
            } else {
                "vm"
            };
            return Err(StorageError::bad_volume(
                name,
                format!("name must begin with '{prefix}-{vmid}-'"),
            ));
        }
        let origin = format!("{}@{BASE_SNAP}", self.dataset(&base.name)?);
        let mut args = vec!["clone".to_string(), origin, self.dataset(name)?];
        if Self::is_subvol(&base) {
            let quota = self.get("refquota", &self.dataset(&base.name)?)?;
            let quota = match quota.first().map(String::as_str) {
                None | Some("" | "0" | "none") => "none".to_string(),
                Some(q) => q.to_string(),
            };
            args.extend(["-o".into(), format!("refquota={quota}")]);
        }
        self.zfs(args).map_err(|e| taken_if(e, TAKEN, name))?;
        Ok(format!("{}/{name}", base.name))
    }

    fn rename(&self, volname: &str, vmid: u32, name: &str) -> Result<String> {
        let vol = self.image(volname)?;
        let target = self.image(name)?;
        if target.vmid != Some(vmid) || target.base.is_some() || target.format != vol.format {
            return Err(StorageError::bad_volume(
                name,
                "must be a volume of the same kind for the target guest",
            ));
        }
        self.zfs(["rename", &self.dataset(&vol.name)?, &self.dataset(name)?])
            .map_err(|e| taken_if(e, TAKEN, name))?;
        Ok(Self::with_base(&vol, name))
    }

    /// `zfs`: a replication stream of `snapshot` (ZFS sends snapshots only).
    /// `raw+size`: the content of a zvol.
    fn export(
        &self,
        volname: &str,
        format: &str,
        snapshot: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<()> {
        let vol = self.image(volname)?;
        match (format, snapshot) {
            ("zfs", Some(snap)) => {
                check_snap_name(snap)?;
                let send = Cmd::new("zfs").args(["send", "-Rp", "--"]).arg(self.snapshot_name(&vol, snap)?);
                self.env.runner.run_to(&send, out)
            }
            ("zfs", None) => Err(StorageError::Other(format!(
                "zfspool can only export snapshots - give a snapshot of '{volname}' to export"
            ))),
            ("raw+size", None) if !Self::is_subvol(&vol) => {
                export_block_device(&*self.env.runner, &self.zvol_device(&vol.name)?, out)
            }
            _ => Err(StorageError::Other(format!(
                "cannot export '{volname}' as {format}{} (use zfs with a snapshot, or raw+size for a zvol)",
                snapshot.map(|s| format!(" at snapshot '{s}'")).unwrap_or_default()
            ))),
        }
    }

    fn import(&self, vmid: u32, name: &str, format: &str, input: &mut dyn Read) -> Result<String> {
        let vol = self.image(name)?;
        if vol.vmid != Some(vmid) || vol.base.is_some() {
            return Err(StorageError::bad_volume(
                name,
                format!("not a volume of guest {vmid}"),
            ));
        }
        match format {
            "zfs" => {
                let dataset = self.dataset(name)?;
                if self.zfs(["get", "-H", "name", &dataset]).is_ok() {
                    return Err(StorageError::AlreadyExists(name.into()));
                }
                let recv = Cmd::new("zfs").args(["recv", "-F", "-x", "encryption", "--", &dataset]);
                if let Err(e) = self.env.runner.run_from(&recv, input) {
                    let _ = self.zfs(["destroy", "-r", "--", &dataset]);
                    return Err(e);
                }
                Ok(name.to_string())
            }
            "raw+size" if !Self::is_subvol(&vol) => {
                let size = read_size_header(input)?;
                self.create_image(vmid, name, "raw", size.div_ceil(1024))?;
                let written = self
                    .wait_for_zvol(name)
                    .and_then(|dev| write_block_device(&*self.env.runner, &dev, size, input, false));
                if let Err(e) = written {
                    let _ = self.free_image(name);
                    return Err(e);
                }
                Ok(name.to_string())
            }
            _ => Err(StorageError::Other(format!(
                "cannot import '{name}' from stream format '{format}' (use zfs, or raw+size for a zvol)"
            ))),
        }
    }
}

/// One dataset of `zfs list -o name,volsize,origin,type,refquota -Hp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsDataset {
    /// The name below the pool (`vm-100-disk-0`).
    pub name: String,
    /// `volume` or `filesystem`.
    pub kind: String,
    /// Bytes: `volsize` of a zvol, `refquota` of a file system (0: none).
    pub size: u64,
    /// The origin snapshot of a clone, below the pool (`base-100-disk-0@__base__`).
    pub origin: Option<String>,
}

/// Parses `zfs list -o name,volsize,origin,type,refquota -t volume,filesystem -d1 -Hp <pool>`:
/// the direct children of `pool` named like guest volumes.
pub fn parse_zfs_list(text: &str, pool: &str) -> Vec<ZfsDataset> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split(['\t', ' ']).filter(|c| !c.is_empty()).collect();
            let [name, volsize, origin, kind, refquota] = cols.as_slice() else {
                return None;
            };
            let (parent, name) = name.rsplit_once('/')?;
            if parent != pool || volume::parse_block_volname(name, "raw").is_err() {
                return None;
            }
            let size = match *kind {
                "volume" => volsize.parse().unwrap_or(0),
                "filesystem" => refquota.parse().unwrap_or(0),
                _ => return None,
            };
            let origin = match *origin {
                "-" => None,
                o => Some(o.strip_prefix(&format!("{pool}/")).unwrap_or(o).to_string()),
            };
            Some(ZfsDataset {
                name: name.to_string(),
                kind: kind.to_string(),
                size,
                origin,
            })
        })
        .collect()
}

/// Whether `dataset` or one of its children is mounted: then the pool is
/// imported and `zfs mount -a` has run.
fn dataset_mounted(dataset: &str) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (what, fstype) = (f.next().unwrap_or(""), f.nth(1).unwrap_or(""));
        fstype == "zfs" && (what == dataset || what.starts_with(&format!("{dataset}/")))
    })
}

/// One file system of `zfs list -t filesystem -Hp -o name,avail,used`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsFilesystem {
    /// The full dataset name (`rpool/data`).
    pub name: String,
    /// Bytes available to it.
    pub avail: u64,
    /// Bytes it and its children use.
    pub used: u64,
}

/// Parses `zfs list -t filesystem -Hp -o name,avail,used` (tab-separated,
/// exact byte counts).
pub fn parse_zfs_filesystems(text: &str) -> Vec<ZfsFilesystem> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
            let [name, avail, used] = cols.as_slice() else {
                return None;
            };
            Some(ZfsFilesystem {
                name: name.to_string(),
                avail: avail.parse().ok()?,
                used: used.parse().ok()?,
            })
        })
        .collect()
}
