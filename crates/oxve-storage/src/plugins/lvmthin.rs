//! `lvmthin`: every image is a thin volume in one thin pool. Snapshots
//! are thin snapshots `snap_<volume>_<name>`; a template's disk is renamed
//! to `base-...` and made read-only, and linked clones are writable thin
//! snapshots of it. As upstream, a clone's volume name does not record its
//! base (thin snapshots do not depend on their origin), so a clone is just
//! `vm-<vmid>-disk-<n>`.

use super::lvm::{
    check_raw_export, check_raw_import, export_block_device, lv_info, parse_lv_volname,
    read_size_header, write_block_device, LogicalVolume, Vg, MISSING, RAW_STREAM, TAKEN,
};
use super::{check_snap_name, is_missing, required, taken_if};
use crate::config::StorageDef;
use crate::error::{Result, StorageError};
use crate::exec::Cmd;
use crate::plugin::{Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
use crate::volume::{VolName, VolumeId};
use std::io::{Read, Write};
use std::path::PathBuf;

pub struct LvmThinPlugin {
    def: StorageDef,
    env: Env,
}

impl LvmThinPlugin {
    pub fn new(def: StorageDef, env: Env) -> LvmThinPlugin {
        LvmThinPlugin { def, env }
    }

    fn vg(&self) -> Result<Vg<'_>> {
        Ok(Vg {
            runner: &*self.env.runner,
            name: required(&self.def, "vgname")?,
        })
    }

    fn pool(&self) -> Result<&str> {
        required(&self.def, "thinpool")
    }

    fn image(&self, volname: &str) -> Result<VolName> {
        parse_lv_volname(volname, true)
    }

    fn no_such(&self, volname: &str) -> StorageError {
        StorageError::NoSuchVolume(VolumeId::new(&self.def.id, volname).to_string())
    }

    /// The logical volume of snapshot `snap` of volume `name`.
    fn snap_lv(name: &str, snap: &str) -> Result<String> {
        check_snap_name(snap)?;
        Ok(format!("snap_{name}_{snap}"))
    }

    /// Activates `lv` unless it is active already (`-K`: also when it is
    /// flagged to be skipped, as base volumes and snapshots are).
    fn activate_lv(&self, vg: &Vg<'_>, lvs: &[LogicalVolume], lv: &str) -> Result<()> {
        let found = lvs.iter().find(|l| l.name == lv).ok_or_else(|| {
            StorageError::Other(format!("no such logical volume {}", vg.lv_path(lv)))
        })?;
        if found.active {
            return Ok(());
        }
        vg.run(Cmd::new("lvchange").args(["-ay", "-K", &vg.lv_path(lv)]))
            .map(drop)
    }

    /// Thin volumes are created without auto-activation in lvcreate's
    /// sense (it does not accept the flag for them), so it is set after.
    fn no_autoactivation(&self, vg: &Vg<'_>, lv: &str) {
        let _ = vg.run(Cmd::new("lvchange").args(["--setautoactivation", "n", &vg.lv_path(lv)]));
    }
}

impl StoragePlugin for LvmThinPlugin {
    fn def(&self) -> &StorageDef {
        &self.def
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            linked_clones: true,
            resize: true,
            rename: true,
            export_formats: RAW_STREAM,
            import_formats: RAW_STREAM,
        }
    }

    fn activate(&self) -> Result<()> {
        let vg = self.vg()?;
        vg.activate()?;
        self.activate_lv(&vg, &vg.lvs()?, self.pool()?)
    }

    fn activate_volume(&self, volname: &str) -> Result<()> {
        let vol = self.image(volname)?;
        let vg = self.vg()?;
        self.activate_lv(&vg, &vg.lvs()?, &vol.name)
    }

    fn deactivate_volume(&self, volname: &str) -> Result<()> {
        let vol = self.image(volname)?;
        // Working volumes stay active; a base volume only needs to be
        // active while a clone is made from it.
        if !vol.is_base {
            return Ok(());
        }
        let vg = self.vg()?;
        vg.run(Cmd::new("lvchange").args(["-an", &vg.lv_path(&vol.name)]))
            .map(drop)
    }

    fn status(&self) -> Result<Usage> {
        let (vg, pool) = (self.vg()?, self.pool()?);
        let lvs = vg.lvs()?;
        let info = lvs
            .iter()
            .find(|l| l.name == pool && l.kind == 't')
            .ok_or_else(|| {
                StorageError::Other(format!("thin pool '{}' not found", vg.lv_path(pool)))
            })?;
        let used = info.used.unwrap_or(0).min(info.size);
        Ok(Usage {
            total: info.size,
            used,
            avail: info.size - used,
        })
    }

    fn parse_volname(&self, volname: &str) -> Result<VolName> {
        self.image(volname)
    }

    fn path(&self, volname: &str) -> Result<PathBuf> {
        let vol = self.image(volname)?;
        Ok(self.vg()?.device(&vol.name))
    }

    fn list_images(&self, vmid: Option<u32>) -> Result<Vec<VolumeInfo>> {
        let pool = self.pool()?;
        let mut out = Vec::new();
        for lv in self.vg()?.lvs()? {
            if lv.kind != 'V' || lv.pool.as_deref() != Some(pool) {
                continue;
            }
            let Ok(vol) = self.image(&lv.name) else {
                continue;
            };
            if vmid.is_some_and(|id| vol.vmid != Some(id)) {
                continue;
            }
            out.push(lv_info(&self.def.id, &lv, vol.vmid, lv.used));
        }
        Ok(out)
    }

    fn create_image(&self, vmid: u32, name: &str, format: &str, size_kib: u64) -> Result<String> {
        let vol = self.image(name)?;
        if vol.vmid != Some(vmid) || vol.is_base || format != "raw" {
            return Err(StorageError::bad_volume(
                name,
                format!("not a raw image 'vm-{vmid}-...'"),
            ));
        }
        let (vg, pool) = (self.vg()?, self.pool()?);
        let cmd = Cmd::new("lvcreate")
            .args(["-aly", "-V"])
            .arg(format!("{size_kib}k"))
            .args(["--name", name, "--thinpool", &vg.lv_path(pool)]);
        vg.run(cmd).map_err(|e| taken_if(e, TAKEN, name))?;
        self.no_autoactivation(&vg, name);
        Ok(name.to_string())
    }

    fn free_image(&self, volname: &str) -> Result<()> {
        let vol = self.image(volname)?;
        let vg = self.vg()?;
        let lvs = vg.lvs()?;
        let prefix = format!("snap_{}_", vol.name);
        for lv in &lvs {
            if lv
                .name
                .strip_prefix(&prefix)
                .is_some_and(|s| check_snap_name(s).is_ok())
            {
                vg.remove(&lv.name)?;
            }
        }
        if !lvs.iter().any(|l| l.name == vol.name) {
            return Err(self.no_such(volname));
        }
        vg.remove(&vol.name).map_err(|e| {
            if is_missing(&e, MISSING) {
                self.no_such(volname)
            } else {
                e
            }
        })
    }

    fn volume_size(&self, volname: &str) -> Result<(u64, u64)> {
        let vol = self.image(volname)?;
        let (size, used) = self.vg()?.size(&vol.name)?;
        Ok((size, used.unwrap_or(size)))
    }

    fn resize(&self, volname: &str, size: u64) -> Result<()> {
        let vol = self.image(volname)?;
        self.vg()?.extend(&vol.name, size)
    }

    fn snapshot(&self, volname: &str, snap: &str) -> Result<()> {
        let vol = self.image(volname)?;
        let vg = self.vg()?;
        let snap_lv = Self::snap_lv(&vol.name, snap)?;
        vg.run(Cmd::new("lvcreate").args(["-n", &snap_lv, "-pr", "-s", &vg.lv_path(&vol.name)]))
            .map(drop)
    }

    fn rollback(&self, volname: &str, snap: &str) -> Result<()> {
        let vol = self.image(volname)?;
        let vg = self.vg()?;
        let snap_lv = Self::snap_lv(&vol.name, snap)?;
        if !vg.lvs()?.iter().any(|l| l.name == snap_lv) {
            return Err(StorageError::Other(format!(
                "snapshot '{snap}' of '{volname}' does not exist"
            )));
        }
        // The volume becomes a fresh writable snapshot of the snapshot.
        vg.remove(&vol.name)?;
        vg.run(Cmd::new("lvcreate").args(["-kn", "-n", &vol.name, "-s", &vg.lv_path(&snap_lv)]))?;
        self.no_autoactivation(&vg, &vol.name);
        Ok(())
    }

    fn delete_snapshot(&self, volname: &str, snap: &str) -> Result<()> {
        let vol = self.image(volname)?;
        self.vg()?.remove(&Self::snap_lv(&vol.name, snap)?)
    }

    fn create_base(&self, volname: &str) -> Result<String> {
        let vol = self.image(volname)?;
        let rest = vol
            .name
            .strip_prefix("vm-")
            .ok_or_else(|| StorageError::Other(format!("'{volname}' is already a base image")))?;
        let vg = self.vg()?;
        let prefix = format!("snap_{}_", vol.name);
        if let Some(snap) = vg.lvs()?.iter().find(|l| l.name.starts_with(&prefix)) {
            return Err(StorageError::Other(format!(
                "unable to create base volume - found snapshot '{}'",
                snap.name
            )));
        }
        let newname = format!("base-{rest}");
        vg.rename(&vol.name, &newname)?;
        // Read-only and skipped by activation; then inactive (LVM warns when
        // both change at once). Neither failure makes the base unusable.
        let lv = vg.lv_path(&newname);
        let _ = vg.run(Cmd::new("lvchange").args(["-pr", "-ky", &lv]));
        let _ = vg.run(Cmd::new("lvchange").args(["-an", &lv]));
        Ok(newname)
    }

    fn clone_image(&self, volname: &str, vmid: u32, name: &str) -> Result<String> {
        let base = self.image(volname)?;
        if !base.is_base {
            return Err(StorageError::Other(format!(
                "linked clones need a base image ('{volname}' is not one)"
            )));
        }
        let target = self.image(name)?;
        if target.vmid != Some(vmid) || target.is_base {
            return Err(StorageError::bad_volume(
                name,
                format!("name must begin with 'vm-{vmid}-'"),
            ));
        }
        let vg = self.vg()?;
        vg.run(Cmd::new("lvcreate").args([
            "-n",
            name,
            "-prw",
            "-kn",
            "-s",
            &vg.lv_path(&base.name),
        ]))
        .map_err(|e| taken_if(e, TAKEN, name))?;
        self.no_autoactivation(&vg, name);
        Ok(name.to_string())
    }

    fn rename(&self, volname: &str, vmid: u32, name: &str) -> Result<String> {
        let vol = self.image(volname)?;
        let target = self.image(name)?;
        if target.vmid != Some(vmid) || target.is_base != vol.is_base {
            return Err(StorageError::bad_volume(
                name,
                format!("name must begin with 'vm-{vmid}-'"),
            ));
        }
        self.vg()?.rename_image(&vol, &target)?;
        Ok(target.name)
    }

    fn export(
        &self,
        volname: &str,
        format: &str,
        snapshot: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<()> {
        check_raw_export(volname, format, snapshot)?;
        let vol = self.image(volname)?;
        let vg = self.vg()?;
        export_block_device(vg.runner, &vg.device(&vol.name), out)
    }

    /// A base image arrives as a working volume that then becomes the base.
    fn import(&self, vmid: u32, name: &str, format: &str, input: &mut dyn Read) -> Result<String> {
        check_raw_import(name, format)?;
        let wanted = self.image(name)?;
        let working = match wanted.name.strip_prefix("base-") {
            Some(rest) => format!("vm-{rest}"),
            None => wanted.name.clone(),
        };
        let size = read_size_header(input)?;
        let volname = self.create_image(vmid, &working, "raw", size.div_ceil(1024))?;
        let vg = self.vg()?;
        if let Err(e) = write_block_device(vg.runner, &vg.device(&volname), size, input, true) {
            let _ = self.free_image(&volname);
            return Err(e);
        }
        if wanted.is_base {
            return self.create_base(&volname);
        }
        Ok(volname)
    }
}
