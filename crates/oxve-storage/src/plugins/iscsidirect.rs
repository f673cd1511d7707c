//! `iscsidirect`: the LUNs of one target used by QEMU's own iSCSI client
//! (libiscsi), with no kernel session: a volume `lun<N>` has the path
//! `iscsi://<portal>/<target>/<N>`. LUNs are listed with `iscsi-ls`;
//! they are made and removed on the target, never here.

use super::required;
use crate::config::StorageDef;
use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::exec::Cmd;
use crate::plugin::{Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
use crate::volume::{VolName, VolumeId};
use regex::Regex;
use std::path::PathBuf;
use std::sync::LazyLock;

pub struct IscsiDirectPlugin {
    def: StorageDef,
    env: Env,
}

impl IscsiDirectPlugin {
    pub fn new(def: StorageDef, env: Env) -> IscsiDirectPlugin {
        IscsiDirectPlugin { def, env }
    }

    /// The LUNs of our target, from `iscsi-ls -s iscsi://<portal>`.
    fn luns(&self) -> Result<Vec<DirectLun>> {
        let portal = required(&self.def, "portal")?;
        let target = required(&self.def, "target")?;
        let cmd = Cmd::new("iscsi-ls")
            .arg("-s")
            .arg(format!("iscsi://{portal}"));
        match self.env.runner.run(&cmd) {
            Ok(out) => Ok(parse_iscsi_ls(&out, target)),
            // A LUN that is not ready makes iscsi-ls fail after listing the others.
            Err(StorageError::Command { message, .. })
                if message.contains("TESTUNITREADY failed with SENSE KEY") =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    fn managed_on_target(&self, op: &str) -> StorageError {
        StorageError::Other(format!(
            "cannot {op} on iSCSI storage '{}' - LUNs are managed on the target",
            self.def.id
        ))
    }
}

impl StoragePlugin for IscsiDirectPlugin {
    fn def(&self) -> &StorageDef {
        &self.def
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: false,
            linked_clones: false,
            resize: false,
            rename: false,
            export_formats: &[],
            import_formats: &[],
        }
    }

    /// A target has no space of its own to report.
    fn status(&self) -> Result<Usage> {
        Ok(Usage::default())
    }

    fn parse_volname(&self, volname: &str) -> Result<VolName> {
        let lun = volname
            .strip_prefix("lun")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| StorageError::bad_volume(volname, "expected lun<number>"))?;
        Ok(VolName {
            content: Content::Images,
            name: lun.to_string(),
            vmid: None,
            base: None,
            is_base: false,
            format: Some("raw".into()),
        })
    }

    /// `iscsi://<portal>/<target>/<lun>`, for QEMU's iSCSI driver.
    fn path(&self, volname: &str) -> Result<PathBuf> {
        let lun = self.parse_volname(volname)?.name;
        let portal = required(&self.def, "portal")?;
        let target = required(&self.def, "target")?;
        Ok(PathBuf::from(format!("iscsi://{portal}/{target}/{lun}")))
    }

    /// LUNs belong to no guest: listed only when all volumes are asked for.
    fn list_images(&self, vmid: Option<u32>) -> Result<Vec<VolumeInfo>> {
        if vmid.is_some() {
            return Ok(Vec::new());
        }
        Ok(self
            .luns()?
            .into_iter()
            .map(|lun| VolumeInfo::lun(&self.def.id, &format!("lun{}", lun.lun), lun.size))
            .collect())
    }

    fn create_image(
        &self,
        _vmid: u32,
        _name: &str,
        _format: &str,
        _size_kib: u64,
    ) -> Result<String> {
        Err(self.managed_on_target("allocate images"))
    }

    fn free_image(&self, _volname: &str) -> Result<()> {
        Err(self.managed_on_target("free images"))
    }

    fn volume_size(&self, volname: &str) -> Result<(u64, u64)> {
        let lun: u32 = self
            .parse_volname(volname)?
            .name
            .parse()
            .map_err(|_| StorageError::bad_volume(volname, "LUN number out of range"))?;
        let found = self
            .luns()?
            .into_iter()
            .find(|l| l.lun == lun)
            .ok_or_else(|| {
                StorageError::NoSuchVolume(VolumeId::new(&self.def.id, volname).to_string())
            })?;
        Ok((found.size, found.size))
    }
}

/// One LUN as `iscsi-ls -s` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectLun {
    pub lun: u32,
    /// Bytes (`iscsi-ls` rounds to its unit).
    pub size: u64,
}

/// Parses `iscsi-ls -s` output: the LUNs listed under `target`
/// (`Target:<iqn> Portal:<addr>` lines start a target's block; output
/// without them is taken as the target's own).
pub fn parse_iscsi_ls(text: &str, target: &str) -> Vec<DirectLun> {
    static LUN: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"Lun:(\d+)\s+[A-Za-z0-9\-_.:]*\s+\(Size:([0-9.]+)([kMGT])\)")
            .expect("static regex")
    });
    let mut ours = !text.lines().any(|l| l.trim_start().starts_with("Target:"));
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Target:") {
            ours = rest.split_whitespace().next() == Some(target);
            continue;
        }
        let Some(c) = LUN.captures(line).filter(|_| ours) else {
            continue;
        };
        let (Ok(lun), Ok(num)) = (c[1].parse::<u32>(), c[2].parse::<f64>()) else {
            continue;
        };
        let unit: u64 = match &c[3] {
            "k" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => 1 << 40,
        };
        out.push(DirectLun {
            lun,
            size: (num * unit as f64) as u64,
        });
    }
    out
}
