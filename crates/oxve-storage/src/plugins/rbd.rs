//! `rbd`: every image is a Ceph RBD image (format 2) in `pool` (default
//! `rbd`), optionally in a `namespace` and with a separate `data-pool`.
//! QEMU opens images itself through librbd (`rbd:` URLs); with `krbd` the
//! kernel maps them to `/dev/rbd-pve/<fsid>/<pool>/<image>` instead.
//! Snapshots are RBD snapshots; a template's image is renamed to `base-`,
//! snapshotted as `@__base__` and protected, and linked clones are `rbd
//! clone`s of that snapshot, named `<base>/<clone>`.
//!
//! Without `monhost` the storage is the node's own hyper-converged cluster
//! (`/etc/pve/ceph.conf`); with it, an external cluster reached with the
//! storage's keyring (see `cephfs::CephConnection`).

use super::cephfs::{hostlist, parse_ceph_conf, CephConnection, KeyFile, LOCAL_CEPH_CONF};
use super::lvm::{read_size_header, run_from_exact};
use super::{check_snap_name, is_missing, taken_if};
use crate::config::StorageDef;
use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::exec::Cmd;
use crate::plugin::{Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
use crate::volume::{self, VolName, VolumeId};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;

pub struct RbdPlugin {
    def: StorageDef,
    env: Env,
}

const BASE_SNAP: &str = "__base__";
const TAKEN: &[&str] = &["File exists", "(17)"];
const MISSING: &[&str] = &["No such file or directory", "(2)"];
const RAW_STREAM: &[&str] = &["raw+size"];

impl RbdPlugin {
    pub fn new(def: StorageDef, env: Env) -> RbdPlugin {
        RbdPlugin { def, env }
    }

    fn pool(&self) -> &str {
        self.def
            .get("pool")
            .filter(|p| !p.is_empty())
            .unwrap_or("rbd")
    }

    fn namespace(&self) -> Option<&str> {
        self.def.get("namespace").filter(|n| !n.is_empty())
    }

    /// `<pool>[/<namespace>]/<name>`: how `rbd` and the kernel name an image.
    fn image_spec(&self, name: &str) -> String {
        match self.namespace() {
            Some(ns) => format!("{}/{ns}/{name}", self.pool()),
            None => format!("{}/{name}", self.pool()),
        }
    }

    fn conn(&self) -> Result<CephConnection> {
        CephConnection::open(&self.def, &self.env, KeyFile::Keyring)
    }

    /// `rbd -p <pool> [--namespace <ns>] <connection> <args...>`.
    fn rbd_cmd(&self, args: &[&str]) -> Result<Cmd> {
        let op = args.first().copied().unwrap_or("");
        let mut cmd = Cmd::new("rbd");
        cmd = if op == "import" {
            cmd.args(["--dest-pool", self.pool()])
        } else {
            cmd.args(["-p", self.pool()])
        };
        if let Some(ns) = self.namespace().filter(|_| op != "unmap") {
            cmd = cmd.args(["--namespace", ns]);
        }
        Ok(cmd.args(self.conn()?.args()).args(args))
    }

    fn rbd(&self, args: &[&str]) -> Result<String> {
        self.env.runner.run(&self.rbd_cmd(args)?)
    }

    fn image(&self, volname: &str) -> Result<VolName> {
        let vol = volume::parse_block_volname(volname, "raw")?;
        if vol.format.as_deref() != Some("raw") {
            return Err(StorageError::bad_volume(
                volname,
                "expected vm-<vmid>-<name> or base-<vmid>-<name>",
            ));
        }
        Ok(vol)
    }

    fn no_such(&self, volname: &str) -> StorageError {
        StorageError::NoSuchVolume(VolumeId::new(&self.def.id, volname).to_string())
    }

    fn info(&self, name: &str, snap: Option<&str>) -> Result<RbdInfo> {
        let mut args = vec!["info", name, "--format", "json"];
        if let Some(s) = snap {
            args.extend(["--snap", s]);
        }
        parse_rbd_info(&self.rbd(&args)?)
    }

    /// The cluster's fsid: from ceph.conf for the local cluster, from the
    /// monitors for an external one.
    fn fsid(&self) -> Result<String> {
        let fsid = if self.def.get("monhost").is_some() {
            let cmd = Cmd::new("ceph")
                .args(self.conn()?.args())
                .args(["fsid", "--format", "json"]);
            let out = self.env.runner.run(&cmd)?;
            json(&out, "ceph fsid")?["fsid"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        } else {
            let text = std::fs::read_to_string(LOCAL_CEPH_CONF)
                .map_err(|e| StorageError::io(format!("unable to read '{LOCAL_CEPH_CONF}'"), e))?;
            parse_ceph_conf(&text)
                .get("global")
                .and_then(|g| g.get("fsid"))
                .cloned()
                .unwrap_or_default()
        };
        let is_uuid = fsid.len() == 36
            && fsid.char_indices().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        if !is_uuid {
            return Err(StorageError::Other(format!(
                "cluster fsid of storage '{}' has an invalid format",
                self.def.id
            )));
        }
        Ok(fsid.to_ascii_lowercase())
    }

    /// The kernel device of a mapped image (udev's `rbd-pve` link).
    fn krbd_device(&self, name: &str) -> Result<PathBuf> {
        Ok(PathBuf::from(format!(
            "/dev/rbd-pve/{}/{}",
            self.fsid()?,
            self.image_spec(name)
        )))
    }

    fn unmap(&self, name: &str) -> Result<()> {
        if !self.def.flag("krbd") {
            return Ok(());
        }
        let dev = self.krbd_device(name)?;
        if dev.exists() {
            self.rbd(&["unmap", &dev.to_string_lossy()])?;
        }
        Ok(())
    }

    fn check_target(&self, name: &str, vmid: u32) -> Result<VolName> {
        let target = self.image(name)?;
        if target.vmid != Some(vmid) || target.is_base || target.base.is_some() {
            return Err(StorageError::bad_volume(
                name,
                format!("illegal name - should be 'vm-{vmid}-*'"),
            ));
        }
        Ok(target)
    }

    fn with_base(vol: &VolName, name: &str) -> String {
        match &vol.base {
            Some((_, base)) => format!("{base}/{name}"),
            None => name.to_string(),
        }
    }
}

impl StoragePlugin for RbdPlugin {
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

    fn activate_volume(&self, volname: &str) -> Result<()> {
        if !self.def.flag("krbd") {
            return Ok(());
        }
        let vol = self.image(volname)?;
        if !self.krbd_device(&vol.name)?.exists() {
            self.rbd(&["map", &vol.name])?;
        }
        Ok(())
    }

    fn deactivate_volume(&self, volname: &str) -> Result<()> {
        self.unmap(&self.image(volname)?.name)
    }

    /// Space of the (data) pool as `ceph df` reports it: stored data
    /// without replication, and what can still be stored.
    fn status(&self) -> Result<Usage> {
        let pool = self
            .def
            .get("data-pool")
            .filter(|p| !p.is_empty())
            .unwrap_or(self.pool());
        let cmd = Cmd::new("ceph")
            .args(self.conn()?.args())
            .args(["df", "--format", "json"]);
        parse_ceph_df(&self.env.runner.run(&cmd)?, pool)?.ok_or_else(|| {
            StorageError::Other(format!("could not get usage stats for pool '{pool}'"))
        })
    }

    fn parse_volname(&self, volname: &str) -> Result<VolName> {
        self.image(volname)
    }

    /// With `krbd` the mapped device; else QEMU's `rbd:` URL, where `:`
    /// separates options (so monitor ports are escaped as `\:`).
    fn path(&self, volname: &str) -> Result<PathBuf> {
        let vol = self.image(volname)?;
        if self.def.flag("krbd") {
            return self.krbd_device(&vol.name);
        }
        let conn = self.conn()?;
        let mut url = format!("rbd:{}", self.image_spec(&vol.name));
        if let Some(conf) = &conn.conf {
            url.push_str(&format!(":conf={}", conf.display()));
        }
        if let Some(monhost) = self.def.get("monhost") {
            url.push_str(&format!(
                ":mon_host={}",
                hostlist(monhost, ";").replace(':', "\\:")
            ));
            url.push_str(&format!(":auth_supported={}", conn.auth.unwrap_or("none")));
        }
        if let Some(keyring) = &conn.keyring {
            url.push_str(&format!(":id={}:keyring={}", conn.user, keyring.display()));
        }
        Ok(PathBuf::from(url))
    }

    fn list_images(&self, vmid: Option<u32>) -> Result<Vec<VolumeInfo>> {
        let mut out = Vec::new();
        for img in parse_rbd_ls(&self.rbd(&["ls", "-l", "--format", "json"])?)? {
            let Ok(vol) = self.image(&img.name) else {
                continue;
            };
            if vmid.is_some_and(|id| vol.vmid != Some(id)) {
                continue;
            }
            let base = img
                .parent
                .as_deref()
                .and_then(|p| p.strip_suffix(&format!("@{BASE_SNAP}")))
                .filter(|b| b.starts_with("base-"));
            let volname = match base {
                Some(b) => format!("{b}/{}", img.name),
                None => img.name.clone(),
            };
            out.push(VolumeInfo {
                volid: VolumeId::new(&self.def.id, &volname).to_string(),
                content: Content::Images,
                format: "raw".into(),
                size: img.size,
                used: None,
                vmid: vol.vmid,
                ctime: None,
                parent: base.map(str::to_string),
                notes: None,
                protected: false,
            });
        }
        Ok(out)
    }

    fn create_image(&self, vmid: u32, name: &str, format: &str, size_kib: u64) -> Result<String> {
        self.check_target(name, vmid)?;
        if format != "raw" {
            return Err(StorageError::Other(format!(
                "unsupported format '{format}' on rbd (raw only)"
            )));
        }
        let mib = size_kib.div_ceil(1024).to_string();
        let mut args = vec!["create", "--image-format", "2", "--size", &mib];
        if let Some(dp) = self.def.get("data-pool").filter(|p| !p.is_empty()) {
            args.extend(["--data-pool", dp]);
        }
        args.push(name);
        self.rbd(&args).map_err(|e| taken_if(e, TAKEN, name))?;
        Ok(name.to_string())
    }

    fn free_image(&self, volname: &str) -> Result<()> {
        let vol = self.image(volname)?;
        let name = vol.name.as_str();
        let missing = |e: StorageError| {
            if is_missing(&e, MISSING) {
                self.no_such(volname)
            } else {
                e
            }
        };
        let snaps = parse_rbd_snaps(
            &self
                .rbd(&["snap", "ls", name, "--format", "json"])
                .map_err(missing)?,
        )?;
        for (snap, protected) in snaps {
            if protected {
                self.rbd(&["snap", "unprotect", name, "--snap", &snap])?;
            }
        }
        self.unmap(name)?;
        self.rbd(&["snap", "purge", name])?;
        self.rbd(&["rm", name]).map(drop)
    }

    fn volume_size(&self, volname: &str) -> Result<(u64, u64)> {
        let vol = self.image(volname)?;
        let info = self.info(&vol.name, None).map_err(|e| {
            if is_missing(&e, MISSING) {
                self.no_such(volname)
            } else {
                e
            }
        })?;
        let used = parse_rbd_du(
            &self.rbd(&["du", &vol.name, "--format", "json"])?,
            &vol.name,
        )?;
        Ok((info.size, used))
    }

    fn resize(&self, volname: &str, size: u64) -> Result<()> {
        let vol = self.image(volname)?;
        let mib = size.div_ceil(1024 * 1024).to_string();
        self.rbd(&["resize", "--size", &mib, &vol.name]).map(drop)
    }

    fn snapshot(&self, volname: &str, snap: &str) -> Result<()> {
        check_snap_name(snap)?;
        let vol = self.image(volname)?;
        self.rbd(&["snap", "create", "--snap", snap, &vol.name])
            .map(drop)
    }

    fn rollback(&self, volname: &str, snap: &str) -> Result<()> {
        check_snap_name(snap)?;
        let vol = self.image(volname)?;
        self.rbd(&["snap", "rollback", "--snap", snap, &vol.name])
            .map(drop)
    }

    fn delete_snapshot(&self, volname: &str, snap: &str) -> Result<()> {
        check_snap_name(snap)?;
        let vol = self.image(volname)?;
        if self.info(&vol.name, Some(snap))?.protected {
            self.rbd(&["snap", "unprotect", &vol.name, "--snap", snap])?;
        }
        self.rbd(&["snap", "rm", "--snap", snap, &vol.name])
            .map(drop)
    }

    fn create_base(&self, volname: &str) -> Result<String> {
        let vol = self.image(volname)?;
        let rest = vol
            .name
            .strip_prefix("vm-")
            .ok_or_else(|| StorageError::Other(format!("'{volname}' is already a base image")))?;
        let info = self.info(&vol.name, None)?;
        if info.format != 2 {
            return Err(StorageError::Other(format!(
                "rbd image '{}' must be of format 2",
                vol.name
            )));
        }
        if let Some((_, base)) = &vol.base {
            if info.parent.as_deref() != Some(&format!("{base}@{BASE_SNAP}")) {
                return Err(StorageError::Other(format!(
                    "volume name '{volname}' does not match the image's parent ({})",
                    info.parent.as_deref().unwrap_or("none")
                )));
            }
        }
        let newname = format!("base-{rest}");
        self.rbd(&[
            "rename",
            &self.image_spec(&vol.name),
            &self.image_spec(&newname),
        ])
        .map_err(|e| taken_if(e, TAKEN, &newname))?;
        let _ = self.unmap(&vol.name);
        self.rbd(&["snap", "create", "--snap", BASE_SNAP, &newname])?;
        self.rbd(&["snap", "protect", &newname, "--snap", BASE_SNAP])?;
        Ok(Self::with_base(&vol, &newname))
    }

    fn clone_image(&self, volname: &str, vmid: u32, name: &str) -> Result<String> {
        let base = self.image(volname)?;
        if !base.is_base {
            return Err(StorageError::Other(format!(
                "linked clones need a base image ('{volname}' is not one)"
            )));
        }
        self.check_target(name, vmid)?;
        let (from, to) = (self.image_spec(&base.name), self.image_spec(name));
        let mut args = vec!["clone", &from, "--snap", BASE_SNAP];
        if let Some(dp) = self.def.get("data-pool").filter(|p| !p.is_empty()) {
            args.extend(["--data-pool", dp]);
        }
        args.push(&to);
        self.rbd(&args).map_err(|e| taken_if(e, TAKEN, name))?;
        Ok(format!("{}/{name}", base.name))
    }

    fn rename(&self, volname: &str, vmid: u32, name: &str) -> Result<String> {
        let vol = self.image(volname)?;
        let target = self.image(name)?;
        if target.vmid != Some(vmid) || target.base.is_some() || target.is_base != vol.is_base {
            return Err(StorageError::bad_volume(
                name,
                format!("illegal name - should be 'vm-{vmid}-*'"),
            ));
        }
        self.rbd(&["rename", &vol.name, name])
            .map_err(|e| taken_if(e, TAKEN, name))?;
        let _ = self.unmap(&vol.name);
        Ok(Self::with_base(&vol, name))
    }

    fn export(
        &self,
        volname: &str,
        format: &str,
        snapshot: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<()> {
        if format != "raw+size" || snapshot.is_some() {
            return Err(StorageError::Other(format!(
                "cannot export '{volname}' as {format}{} (use raw+size of the current state)",
                snapshot
                    .map(|s| format!(" at snapshot '{s}'"))
                    .unwrap_or_default()
            )));
        }
        let vol = self.image(volname)?;
        let size = self.info(&vol.name, None)?.size;
        out.write_all(&size.to_le_bytes())
            .map_err(|e| StorageError::io(format!("exporting '{volname}'"), e))?;
        let cmd = self.rbd_cmd(&["export", "--export-format", "1", &vol.name, "-"])?;
        self.env.runner.run_to(&cmd, out)
    }

    fn import(&self, vmid: u32, name: &str, format: &str, input: &mut dyn Read) -> Result<String> {
        if format != "raw+size" {
            return Err(StorageError::Other(format!(
                "cannot import '{name}' from stream format '{format}' (use raw+size)"
            )));
        }
        self.check_target(name, vmid)?;
        let names = json(&self.rbd(&["ls", "--format", "json"])?, "rbd ls")?;
        if names
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n.as_str() == Some(name)))
        {
            return Err(StorageError::AlreadyExists(name.into()));
        }
        let size = read_size_header(input)?;
        let cmd = self.rbd_cmd(&["import", "--export-format", "1", "-", name])?;
        if let Err(e) = run_from_exact(&*self.env.runner, &cmd, input, size) {
            let _ = self.free_image(name);
            return Err(e);
        }
        Ok(name.to_string())
    }
}

// ---- tool output ----

/// One image of `rbd ls -l --format json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdImage {
    pub name: String,
    pub size: u64,
    /// `<image>@<snapshot>` of a clone's parent.
    pub parent: Option<String>,
}

/// What `rbd info --format json` says about an image (or snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdInfo {
    pub size: u64,
    pub parent: Option<String>,
    pub format: u64,
    pub protected: bool,
    pub features: Vec<String>,
}

fn json(text: &str, what: &str) -> Result<Value> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|e| StorageError::Other(format!("unexpected output of '{what}': {e}")))
}

fn parent_name(v: &Value) -> Option<String> {
    Some(format!(
        "{}@{}",
        v.get("image")?.as_str()?,
        v.get("snapshot")?.as_str()?
    ))
}

/// `"true"` (how `rbd` prints it) or `true`.
fn truthy(v: &Value) -> bool {
    v.as_bool().unwrap_or(false) || v.as_str() == Some("true")
}

/// Parses `rbd ls -l --format json`: the images, not their snapshots.
pub fn parse_rbd_ls(text: &str) -> Result<Vec<RbdImage>> {
    let v = json(text, "rbd ls")?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e.get("snapshot").is_none())
        .filter_map(|e| {
            Some(RbdImage {
                name: e.get("image")?.as_str()?.to_string(),
                size: e.get("size").and_then(Value::as_u64).unwrap_or(0),
                parent: e.get("parent").and_then(parent_name),
            })
        })
        .collect())
}

/// Parses `rbd info --format json`.
pub fn parse_rbd_info(text: &str) -> Result<RbdInfo> {
    let v = json(text, "rbd info")?;
    Ok(RbdInfo {
        size: v["size"].as_u64().unwrap_or(0),
        parent: v.get("parent").and_then(parent_name),
        format: v["format"].as_u64().unwrap_or(0),
        protected: truthy(&v["protected"]),
        features: v["features"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect(),
    })
}

/// Parses `rbd snap ls --format json`: (name, protected) per snapshot.
pub fn parse_rbd_snaps(text: &str) -> Result<Vec<(String, bool)>> {
    let v = json(text, "rbd snap ls")?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s.get("name")?.as_str()?.to_string(),
                truthy(&s["protected"]),
            ))
        })
        .collect())
}

/// Parses `rbd du <image> --format json`: the bytes `image` itself uses.
pub fn parse_rbd_du(text: &str, image: &str) -> Result<u64> {
    let v = json(text, "rbd du")?;
    v["images"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i.get("snapshot").is_none() && i["name"].as_str() == Some(image))
        .and_then(|i| i["used_size"].as_u64())
        .ok_or_else(|| StorageError::Other(format!("rbd du reported no usage for '{image}'")))
}

/// Parses `ceph df --format json` for `pool`: `stored` (data without
/// replication) as used, `max_avail` as available.
pub fn parse_ceph_df(text: &str, pool: &str) -> Result<Option<Usage>> {
    let v = json(text, "ceph df")?;
    let Some(stats) = v["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some(pool))
        .map(|p| &p["stats"])
    else {
        return Ok(None);
    };
    let avail = stats["max_avail"].as_u64().unwrap_or(0);
    let used = stats["stored"]
        .as_u64()
        .or_else(|| stats["bytes_used"].as_u64())
        .unwrap_or(0);
    Ok(Some(Usage {
        total: used + avail,
        used,
        avail,
    }))
}
