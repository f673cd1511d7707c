//! `lvm`: every image is a thick logical volume `vm-<vmid>-disk-<n>` in
//! one volume group, created with `lvcreate` and tagged `pve-vm-<vmid>`.
//! No snapshots and no linked clones (that is `lvmthin`). Volumes are not
//! auto-activated; [`StoragePlugin::activate_volume`] activates them one by
//! one, so a VG shared between nodes is only active where it is used.
//!
//! Also the home of what the LVM-based and block-device plugins share: the
//! `vgs`/`lvs` report parsers, a `Vg` handle for the common LV
//! operations, and the `raw+size` stream of a block device.

use super::{check_snap_name, is_missing, required, taken_if};
use crate::config::StorageDef;
use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::exec::{Cmd, Runner};
use crate::plugin::{Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
use crate::volume::{self, VolName, VolumeId};
use regex::Regex;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

pub struct LvmPlugin {
    def: StorageDef,
    env: Env,
}

/// The `raw+size` stream: an 8-byte little-endian size, then the bytes.
pub const RAW_STREAM: &[&str] = &["raw+size"];

/// Columns of the `lvs` report, in the order [`parse_lvs`] reads them.
pub const LVS_COLUMNS: &str = "vg_name,lv_name,lv_size,lv_attr,pool_lv,data_percent,metadata_percent,snap_percent,uuid,tags,metadata_size,time";

/// Columns of the `vgs` report, in the order [`parse_vgs`] reads them.
pub const VGS_COLUMNS: &str = "vg_name,vg_size,vg_free,lv_count";

/// How `lvcreate`/`lvrename` say the name is taken.
pub(crate) const TAKEN: &[&str] = &["already exists"];
/// How the LVM tools say a logical volume is not there.
pub(crate) const MISSING: &[&str] = &["Failed to find logical volume", "not found in volume group"];

impl LvmPlugin {
    pub fn new(def: StorageDef, env: Env) -> LvmPlugin {
        LvmPlugin { def, env }
    }

    fn vg(&self) -> Result<Vg<'_>> {
        Ok(Vg {
            runner: &*self.env.runner,
            name: required(&self.def, "vgname")?,
        })
    }

    fn image(&self, volname: &str) -> Result<VolName> {
        parse_lv_volname(volname, false)
    }

    fn no_such(&self, volname: &str) -> StorageError {
        StorageError::NoSuchVolume(VolumeId::new(&self.def.id, volname).to_string())
    }
}

impl StoragePlugin for LvmPlugin {
    fn def(&self) -> &StorageDef {
        &self.def
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: false,
            linked_clones: false,
            resize: true,
            rename: true,
            export_formats: RAW_STREAM,
            import_formats: RAW_STREAM,
        }
    }

    fn activate(&self) -> Result<()> {
        self.vg()?.activate()
    }

    fn deactivate(&self) -> Result<()> {
        let vg = self.vg()?;
        vg.run(Cmd::new("vgchange").args(["-aln", vg.name]))
            .map(drop)
    }

    fn activate_volume(&self, volname: &str) -> Result<()> {
        let vol = self.image(volname)?;
        let vg = self.vg()?;
        let dev = vg.device(&vol.name).to_string_lossy().into_owned();
        vg.run(Cmd::new("lvchange").args(["-aey", &dev]))?;
        vg.run(Cmd::new("lvchange").args(["--refresh", &dev]))
            .map(drop)
    }

    fn deactivate_volume(&self, volname: &str) -> Result<()> {
        let vol = self.image(volname)?;
        let vg = self.vg()?;
        let dev = vg.device(&vol.name);
        if !dev.exists() {
            return Ok(());
        }
        vg.run(Cmd::new("lvchange").arg("-aln").arg(dev.to_string_lossy()))
            .map(drop)
    }

    fn status(&self) -> Result<Usage> {
        let vg = self.vg()?;
        let info = vg
            .info()?
            .ok_or_else(|| StorageError::Other(format!("volume group '{}' not found", vg.name)))?;
        Ok(Usage {
            total: info.size,
            used: info.size.saturating_sub(info.free),
            avail: info.free,
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
        let tagged_only = self.def.flag("tagged_only");
        let mut out = Vec::new();
        for lv in self.vg()?.lvs()? {
            // Plain, mirrored and RAID volumes; not thin pools, snapshots or metadata.
            if !matches!(lv.kind, '-' | 'm' | 'M' | 'r' | 'R') {
                continue;
            }
            let Ok(vol) = self.image(&lv.name) else {
                continue;
            };
            if vmid.is_some_and(|id| vol.vmid != Some(id)) {
                continue;
            }
            if tagged_only && !lv.tags.iter().any(|t| is_vm_tag(t)) {
                continue;
            }
            out.push(lv_info(&self.def.id, &lv, vol.vmid, None));
        }
        Ok(out)
    }

    fn create_image(&self, vmid: u32, name: &str, format: &str, size_kib: u64) -> Result<String> {
        let vol = self.image(name)?;
        if vol.vmid != Some(vmid) || format != "raw" {
            return Err(StorageError::bad_volume(
                name,
                format!("not a raw image of guest {vmid} (lvm holds raw volumes only)"),
            ));
        }
        let vg = self.vg()?;
        let cmd = Cmd::new("lvcreate")
            .args(["-aly", "-Wy", "--yes", "--size"])
            .arg(format!("{size_kib}k"))
            .args(["--name", name, "--setautoactivation", "n", "--addtag"])
            .arg(format!("pve-vm-{vmid}"))
            .arg(vg.name);
        vg.run(cmd).map_err(|e| taken_if(e, TAKEN, name))?;
        Ok(name.to_string())
    }

    fn free_image(&self, volname: &str) -> Result<()> {
        let vol = self.image(volname)?;
        let vg = self.vg()?;
        let missing = |e: StorageError| {
            if is_missing(&e, MISSING) {
                self.no_such(volname)
            } else {
                e
            }
        };
        if !self.def.flag("saferemove") {
            return vg.remove(&vol.name).map_err(missing);
        }
        // Take the name out of use first, so a new disk can reuse it at once.
        let doomed = format!("del-{}", vol.name);
        vg.rename(&vol.name, &doomed).map_err(missing)?;
        vg.zero_out(&doomed, self.def.get("saferemove-stepsize"))?;
        vg.remove(&doomed)
    }

    fn volume_size(&self, volname: &str) -> Result<(u64, u64)> {
        let vol = self.image(volname)?;
        let size = self.vg()?.size(&vol.name)?.0;
        Ok((size, size))
    }

    fn resize(&self, volname: &str, size: u64) -> Result<()> {
        let vol = self.image(volname)?;
        self.vg()?.extend(&vol.name, size)
    }

    fn rename(&self, volname: &str, vmid: u32, name: &str) -> Result<String> {
        let vol = self.image(volname)?;
        let target = self.image(name)?;
        if target.vmid != Some(vmid) {
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

    fn import(&self, vmid: u32, name: &str, format: &str, input: &mut dyn Read) -> Result<String> {
        check_raw_import(name, format)?;
        let size = read_size_header(input)?;
        let volname = self.create_image(vmid, name, "raw", size.div_ceil(1024))?;
        let vg = self.vg()?;
        if let Err(e) = write_block_device(vg.runner, &vg.device(&volname), size, input, false) {
            let _ = self.free_image(&volname);
            return Err(e);
        }
        Ok(volname)
    }
}

// ---- shared with lvmthin, zfspool, iscsi ----

/// One volume group, as the LVM tools see it.
pub(crate) struct Vg<'a> {
    pub runner: &'a dyn Runner,
    pub name: &'a str,
}

impl Vg<'_> {
    pub fn run(&self, cmd: Cmd) -> Result<String> {
        self.runner.run(&cmd)
    }

    /// `/dev/<vg>/<lv>`.
    pub fn device(&self, lv: &str) -> PathBuf {
        PathBuf::from(format!("/dev/{}/{lv}", self.name))
    }

    /// `<vg>/<lv>`, how most LVM tools name a volume.
    pub fn lv_path(&self, lv: &str) -> String {
        format!("{}/{lv}", self.name)
    }

    /// Size and free space of the group; `None` when LVM does not know it.
    pub fn info(&self) -> Result<Option<VolumeGroup>> {
        let out = self.run(report("vgs").args(["--options", VGS_COLUMNS]))?;
        Ok(parse_vgs(&out).into_iter().find(|g| g.name == self.name))
    }

    /// Rescans for the group when LVM does not know it yet (a freshly
    /// attached disk); volumes are activated one by one, not here.
    pub fn activate(&self) -> Result<()> {
        if self.info()?.is_none() {
            self.run(Cmd::new("vgscan").args(["--ignorelockingfailure", "--mknodes"]))?;
        }
        Ok(())
    }

    /// Every logical volume of the group.
    pub fn lvs(&self) -> Result<Vec<LogicalVolume>> {
        let out = self.run(
            report("lvs")
                .args([
                    "--config",
                    "report/time_format=\"%s\"",
                    "--options",
                    LVS_COLUMNS,
                ])
                .arg(self.name),
        )?;
        Ok(parse_lvs(&out)
            .into_iter()
            .filter(|lv| lv.vg == self.name)
            .collect())
    }

    /// (size, bytes used) of one volume; used is only known for thin volumes.
    pub fn size(&self, lv: &str) -> Result<(u64, Option<u64>)> {
        let out = self.run(
            report("lvs")
                .args(["--options", "lv_size,data_percent"])
                .arg(self.device(lv).to_string_lossy()),
        )?;
        let line = out
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let mut cols = line.split(':');
        let size = cols
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                StorageError::Other(format!(
                    "unexpected output of lvs for '{}': '{line}'",
                    self.lv_path(lv)
                ))
            })?;
        Ok((size, cols.next().and_then(|p| percent_of(p, size))))
    }

    pub fn remove(&self, lv: &str) -> Result<()> {
        self.run(Cmd::new("lvremove").args(["-f", &self.lv_path(lv)]))
            .map(drop)
    }

    /// Renames a volume; a taken target is [`StorageError::AlreadyExists`].
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.run(Cmd::new("lvrename").args([self.name, from, to]))
            .map(drop)
            .map_err(|e| taken_if(e, TAKEN, to))
    }

    /// Renames an image to (possibly) another guest and moves its owner tag.
    pub fn rename_image(&self, from: &VolName, to: &VolName) -> Result<()> {
        self.rename(&from.name, &to.name)?;
        if let (Some(old), Some(new)) = (from.vmid, to.vmid) {
            if old != new {
                // The tag only matters for `tagged_only`; a failure leaves the
                // volume usable, so it does not undo the rename.
                let _ = self.run(
                    Cmd::new("lvchange")
                        .args([
                            "--addtag",
                            &format!("pve-vm-{new}"),
                            "--deltag",
                            &format!("pve-vm-{old}"),
                        ])
                        .arg(self.lv_path(&to.name)),
                );
            }
        }
        Ok(())
    }

    /// Grows a volume to `size` bytes (LVM refuses to shrink with `lvextend`).
    pub fn extend(&self, lv: &str, size: u64) -> Result<()> {
        self.run(
            Cmd::new("lvextend")
                .arg("-L")
                .arg(format!("{}k", size.div_ceil(1024)))
                .arg(self.device(lv).to_string_lossy()),
        )
        .map(drop)
    }

    /// Overwrites a volume with zeroes (`saferemove`). `blkdiscard --zeroout`
    /// uses the device's write-zeroes support and falls back to writing
    /// zero pages, so it works on every device.
    fn zero_out(&self, lv: &str, stepsize_mib: Option<&str>) -> Result<()> {
        let step = stepsize_mib
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(32)
            * 1024
            * 1024;
        let dev = self.device(lv).to_string_lossy().into_owned();
        self.run(Cmd::new("lvchange").args(["-aly", &dev]))?;
        self.run(Cmd::new("blkdiscard").args(["--zeroout", "--step", &step.to_string(), &dev]))
            .map(drop)
    }
}

/// One line of the `vgs` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup {
    pub name: String,
    pub size: u64,
    pub free: u64,
    pub lv_count: u64,
}

/// One line of the `lvs` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalVolume {
    pub vg: String,
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// The volume type (first `lv_attr` letter): `-` plain, `t` thin pool,
    /// `V` thin volume, `s` snapshot, `m`/`M` mirror, `r`/`R` RAID.
    pub kind: char,
    /// Whether the volume is active (fifth `lv_attr` letter `a`).
    pub active: bool,
    /// The thin pool of a thin volume.
    pub pool: Option<String>,
    pub tags: Vec<String>,
    /// Creation time, seconds since the epoch.
    pub ctime: Option<i64>,
    /// Bytes of data used, for thin pools and thin volumes.
    pub used: Option<u64>,
}

/// Parses `vgs --separator : --noheadings --units b --nosuffix` with [`VGS_COLUMNS`].
pub fn parse_vgs(text: &str) -> Vec<VolumeGroup> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.trim().split(':').collect();
            let num = |i: usize| cols.get(i).and_then(|v| v.trim().parse::<u64>().ok());
            Some(VolumeGroup {
                name: cols.first().filter(|n| !n.is_empty())?.to_string(),
                size: num(1)?,
                free: num(2)?,
                lv_count: num(3).unwrap_or(0),
            })
        })
        .collect()
}

/// Parses `lvs --separator : --noheadings --units b --nosuffix` with [`LVS_COLUMNS`].
pub fn parse_lvs(text: &str) -> Vec<LogicalVolume> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.trim().split(':').collect();
            let col = |i: usize| cols.get(i).copied().unwrap_or("").trim();
            let (vg, name) = (col(0), col(1));
            if vg.is_empty() || name.is_empty() {
                return None;
            }
            let size = col(2).parse::<u64>().unwrap_or(0);
            let attr: Vec<char> = col(3).chars().collect();
            let kind = attr.first().copied().unwrap_or('-');
            let used = match kind {
                't' | 'V' => Some(percent_of(col(5), size).unwrap_or(0)),
                _ => None,
            };
            Some(LogicalVolume {
                vg: vg.into(),
                name: name.into(),
                size,
                kind,
                active: attr.get(4) == Some(&'a'),
                pool: Some(col(4)).filter(|p| !p.is_empty()).map(str::to_string),
                tags: col(9)
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect(),
                ctime: col(11).parse().ok(),
                used,
            })
        })
        .collect()
}

/// `percent` (`"12.50"`) of `size`, rounded down.
fn percent_of(percent: &str, size: u64) -> Option<u64> {
    let p = percent.trim().parse::<f64>().ok()?;
    Some((p * size as f64 / 100.0) as u64)
}

/// An LVM report command with machine-readable output.
pub(crate) fn report(tool: &str) -> Cmd {
    Cmd::new(tool).args([
        "--separator",
        ":",
        "--noheadings",
        "--units",
        "b",
        "--unbuffered",
        "--nosuffix",
    ])
}

fn is_vm_tag(tag: &str) -> bool {
    tag.strip_prefix("pve-vm-")
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses the volume name of an LVM storage: `vm-<vmid>-<name>` (and, for
/// thin pools, `base-<vmid>-<name>`), in the characters LVM allows.
pub(crate) fn parse_lv_volname(volname: &str, allow_base: bool) -> Result<VolName> {
    static LV_NAME: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)^[a-z0-9][a-z0-9\-_.]*[a-z0-9]$").expect("static regex"));
    let vol = volume::parse_block_volname(volname, "raw")?;
    let expected = if allow_base {
        "vm-<vmid>-<name> or base-<vmid>-<name>"
    } else {
        "vm-<vmid>-<name>"
    };
    if vol.base.is_some() || vol.format.as_deref() != Some("raw") || (vol.is_base && !allow_base) {
        return Err(StorageError::bad_volume(
            volname,
            format!("expected {expected}"),
        ));
    }
    if !LV_NAME.is_match(volname) {
        return Err(StorageError::bad_volume(
            volname,
            "contains characters LVM does not allow",
        ));
    }
    Ok(vol)
}

/// The listing entry of one logical volume.
pub(crate) fn lv_info(
    storage: &str,
    lv: &LogicalVolume,
    vmid: Option<u32>,
    used: Option<u64>,
) -> VolumeInfo {
    VolumeInfo {
        volid: VolumeId::new(storage, &lv.name).to_string(),
        content: Content::Images,
        format: "raw".into(),
        size: lv.size,
        used,
        vmid,
        ctime: lv.ctime,
        parent: None,
        notes: None,
        protected: false,
    }
}

/// Refuses what a `raw+size` export of a block volume cannot do.
pub(crate) fn check_raw_export(volname: &str, format: &str, snapshot: Option<&str>) -> Result<()> {
    if format != "raw+size" {
        return Err(StorageError::Other(format!(
            "cannot export '{volname}' as {format} (use raw+size)"
        )));
    }
    if let Some(snap) = snapshot {
        check_snap_name(snap)?;
        return Err(StorageError::Other(format!(
            "cannot export snapshot '{snap}' of '{volname}' as raw+size"
        )));
    }
    Ok(())
}

pub(crate) fn check_raw_import(name: &str, format: &str) -> Result<()> {
    if format != "raw+size" {
        return Err(StorageError::Other(format!(
            "cannot import '{name}' from stream format '{format}' (use raw+size)"
        )));
    }
    Ok(())
}

/// The size of a block device in bytes (`blockdev --getsize64`).
pub(crate) fn device_size(runner: &dyn Runner, dev: &Path) -> Result<u64> {
    let out = runner.run(
        &Cmd::new("blockdev")
            .arg("--getsize64")
            .arg(dev.to_string_lossy()),
    )?;
    out.trim().parse().map_err(|_| {
        StorageError::Other(format!(
            "unexpected output from blockdev for '{}': '{}'",
            dev.display(),
            out.trim()
        ))
    })
}

/// Writes a `raw+size` stream of block device `dev` to `out`.
pub(crate) fn export_block_device(
    runner: &dyn Runner,
    dev: &Path,
    out: &mut dyn Write,
) -> Result<()> {
    let size = device_size(runner, dev)?;
    out.write_all(&size.to_le_bytes())
        .map_err(|e| StorageError::io(format!("exporting '{}'", dev.display()), e))?;
    // status=none: progress on a pipe nobody reads would eventually block dd.
    let dd = Cmd::new("dd")
        .arg(format!("if={}", dev.display()))
        .args(["bs=64k", "status=none"]);
    runner.run_to(&dd, out)
}

/// Reads the size header of a `raw+size` stream.
pub(crate) fn read_size_header(input: &mut dyn Read) -> Result<u64> {
    let mut header = [0u8; 8];
    input
        .read_exact(&mut header)
        .map_err(|e| StorageError::io("reading the raw+size stream header", e))?;
    Ok(u64::from_le_bytes(header))
}

/// Copies exactly `size` bytes of `input` onto block device `dev`; a short
/// stream is an error. `conv=nocreat` makes a missing device an error
/// instead of a regular file in `/dev`; `sparse` skips zero blocks (thin
/// volumes read back zeroes where nothing was written).
pub(crate) fn write_block_device(
    runner: &dyn Runner,
    dev: &Path,
    size: u64,
    input: &mut dyn Read,
    sparse: bool,
) -> Result<()> {
    let conv = if sparse {
        "conv=sparse,nocreat"
    } else {
        "conv=nocreat"
    };
    let dd =
        Cmd::new("dd")
            .arg(format!("of={}", dev.display()))
            .args(["bs=64k", conv, "status=none"]);
    run_from_exact(runner, &dd, input, size)
}

/// Runs `cmd` with exactly the next `size` bytes of `input` as its
/// standard input; a stream that ends early is an error.
pub(crate) fn run_from_exact(
    runner: &dyn Runner,
    cmd: &Cmd,
    input: &mut dyn Read,
    size: u64,
) -> Result<()> {
    let mut counted = Counted {
        inner: input.take(size),
        count: 0,
    };
    runner.run_from(cmd, &mut counted)?;
    if counted.count != size {
        return Err(StorageError::Other(format!(
            "'{}' failed: the stream ended after {} of {size} bytes",
            cmd.program, counted.count
        )));
    }
    Ok(())
}

/// A reader that counts what passes through.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}
