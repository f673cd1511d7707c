//! `pct mount`, `unmount`, `unlock` and `fsck`: maintenance that runs on
//! this node itself, as upstream's. The mounts and `fsck` are this
//! process's; the config is read and its `lock` set or removed through the
//! API (the config lives in the daemon's store), each change guarded by
//! the digest of what was read.

use crate::cli::CliError;
use crate::client;
use oxve_lxc::host::LxcHost;
use oxve_lxc::model::{MountKind, MountPoint};
use oxve_lxc::mount::MountSource;
use oxve_lxc::Ct;
use oxve_schema::ctconfig::CtSection;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

const NODE: &str = "localhost";

/// Options of the local sub-commands that take no value.
pub const FLAGS: &[&str] = &["force"];

/// `--help` text of a local sub-command's options.
pub fn options_help(name: &str) -> &'static str {
    match name {
        "fsck" => {
            "\n  --device <rootfs|mp[n]>   A volume on which to run the filesystem check (default rootfs)\n  \
             --force <boolean>         Force checking, even if the filesystem seems clean (default 0)\n"
        }
        _ => "",
    }
}

/// Runs local sub-command `name` for CT `vmid` with its `--options`.
pub fn run(
    root: &Path,
    name: &str,
    vmid: u32,
    params: &Map<String, Value>,
) -> Result<(), CliError> {
    let allowed: &[&str] = if name == "fsck" {
        &["device", "force"]
    } else {
        &[]
    };
    if let Some(k) = params
        .keys()
        .find(|k| *k != "vmid" && !allowed.contains(&k.as_str()))
    {
        return Err(CliError::Usage(format!(
            "pct {name}: unknown option '--{k}'"
        )));
    }
    match name {
        "mount" => mount(root, vmid),
        "unmount" => unmount(root, vmid),
        "unlock" => unlock(root, vmid),
        "fsck" => {
            let device = params.get("device").map(client::scalar);
            let force = params
                .get("force")
                .map(client::scalar)
                .map(|v| {
                    oxve_schema::format::parse_boolean(&v)
                        .ok_or_else(|| CliError::Usage(format!("--force: '{v}' is not a boolean")))
                })
                .transpose()?
                .unwrap_or(false);
            fsck(root, vmid, device.as_deref().unwrap_or("rootfs"), force)
        }
        _ => Err(CliError::Usage(format!("unknown command 'pct {name}'"))),
    }
}

/// `pct mount`: the CT's volumes under its rootfs directory, with
/// `lock: mounted` set while they are.
fn mount(root: &Path, vmid: u32) -> Result<(), CliError> {
    let conf = Config::load(root, vmid)?;
    if let Some(lock) = &conf.lock {
        return Err(api(format!("CT is locked ({lock})")));
    }
    // A running CT's volumes are mounted there already: they are its own.
    if running(root, vmid)? {
        return Err(api(format!("CT {vmid} is running")));
    }
    let ct = conf.ct()?;
    if ct.rootfs.is_none() {
        return Err(api(format!("CT {vmid} has no rootfs")));
    }
    let warn = &mut |w: &str| eprintln!("{w}");
    let mounts = ct
        .mount_points()
        .map(|mp| resolve(root, mp, warn))
        .collect::<Result<Vec<_>, _>>()?;
    let owner = oxve_api::ct::root_ids(&ct).map_err(|e| api(e.message))?;
    conf.set_lock(root, Some("mounted"))?;
    let host = LxcHost::of_node(root);
    let rootfs = host.rootfs_dir(vmid);
    // The CT may have been started before the lock was set; what is mounted
    // under a stopped CT's rootfs is a leftover.
    let mounted = match running(root, vmid) {
        Ok(false) => host
            .prepare_dir(vmid)
            .and_then(|_| oxve_lxc::mount::unmount_all(&rootfs))
            .and_then(|_| oxve_lxc::mount::mount_all(&rootfs, &mounts, owner))
            .map_err(|e| {
                // mount_all has unmounted what it mounted.
                eprintln!("mounting container failed");
                api(e.to_string())
            }),
        Ok(true) => Err(api(format!("CT {vmid} is running"))),
        Err(e) => Err(e),
    };
    if let Err(e) = mounted {
        let unlocked = Config::load(root, vmid).and_then(|c| match c.lock.as_deref() {
            Some("mounted") => c.set_lock(root, None),
            _ => Ok(()),
        });
        if let Err(unlock) = unlocked {
            eprintln!("cannot remove the 'mounted' lock: {unlock}");
        }
        return Err(e);
    }
    println!("mounted CT {vmid} in '{}'", rootfs.display());
    Ok(())
}

/// `pct unmount`: unmounts what `pct mount` mounted and removes its lock.
fn unmount(root: &Path, vmid: u32) -> Result<(), CliError> {
    let conf = Config::load(root, vmid)?;
    match conf.lock.as_deref() {
        Some("mounted") => {}
        Some(other) => {
            return Err(api(format!(
                "found lock '{other}' trying to remove 'mounted' lock"
            )))
        }
        None => return Err(api("no lock found trying to remove 'mounted' lock")),
    }
    // A CT started while mounted uses the mounts of its start; its stop
    // unmounts them.
    if !running(root, vmid)? {
        let rootfs = LxcHost::of_node(root).rootfs_dir(vmid);
        oxve_lxc::mount::unmount_all(&rootfs).map_err(|e| api(e.to_string()))?;
    }
    conf.set_lock(root, None)
}

/// `pct unlock`: removes whatever lock the config has.
fn unlock(root: &Path, vmid: u32) -> Result<(), CliError> {
    let conf = Config::load(root, vmid)?;
    if conf.lock.is_none() {
        return Err(api("no lock found trying to remove any lock"));
    }
    conf.set_lock(root, None)
}

/// `pct fsck`: `fsck -a -l [-f]` on the raw image or block device of one
/// mount point of a stopped CT, its output on this terminal.
fn fsck(root: &Path, vmid: u32, device: &str, force: bool) -> Result<(), CliError> {
    let is_key = device == "rootfs"
        || device
            .strip_prefix("mp")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n <= 255 && device == format!("mp{n}"));
    if !is_key {
        return Err(CliError::Usage(format!(
            "--device: value '{device}' does not have a value in the enumeration 'rootfs, mp0, ..., mp255'"
        )));
    }
    let conf = Config::load(root, vmid)?;
    let Some(value) = conf.section.get(device) else {
        return Err(api(format!(
            "cannot run command on non-existing mount point {device}"
        )));
    };
    let mp = oxve_lxc::model::parse_mount_point(device, value).map_err(|e| api(e.to_string()))?;
    if running(root, vmid)? {
        return Err(api("cannot run fsck when container is running"));
    }
    let path = match mp.kind() {
        MountKind::Volume => {
            let (path, format) = volume_path(root, &mp.volume)?;
            if format != "raw" {
                return Err(api(format!(
                    "unable to run fsck for '{}' (format == {format})",
                    mp.volume
                )));
            }
            path
        }
        MountKind::Bind | MountKind::Device => {
            use std::os::unix::fs::FileTypeExt;
            let path = PathBuf::from(&mp.volume);
            let block = std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_block_device());
            if !block {
                return Err(api(format!(
                    "path '{}' does not point to a block device",
                    mp.volume
                )));
            }
            path
        }
    };
    let mut cmd = std::process::Command::new("fsck");
    cmd.args(["-a", "-l"]);
    if force {
        cmd.arg("-f");
    }
    cmd.arg(&path);
    let shown = format!(
        "fsck -a -l{} {}",
        if force { " -f" } else { "" },
        path.display()
    );
    let status = cmd
        .status()
        .map_err(|e| api(format!("cannot run 'fsck' (install util-linux): {e}")))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(api(format!("command '{shown}' failed: exit code {code}"))),
        None => Err(api(format!("command '{shown}' failed: {status}"))),
    }
}

/// A CT config as the API returns it, with what the sub-commands need.
struct Config {
    vmid: u32,
    section: CtSection,
    lock: Option<String>,
    digest: String,
}

impl Config {
    /// The config without pending changes (`current=1`).
    fn load(root: &Path, vmid: u32) -> Result<Config, CliError> {
        let mut query = Map::new();
        query.insert("current".into(), Value::from(1));
        let data = client::call(
            root,
            "GET",
            &format!("/nodes/{NODE}/lxc/{vmid}/config"),
            &query,
        )?;
        let mut section = CtSection::default();
        for (key, value) in data.as_object().into_iter().flatten() {
            match key.as_str() {
                "digest" | "description" | "env" => {}
                "lxc" => {
                    for pair in value.as_array().into_iter().flatten() {
                        let part = |i: usize| pair.get(i).map(client::scalar).unwrap_or_default();
                        section.lxc.push((part(0), part(1)));
                    }
                }
                _ => {
                    section.props.insert(key.clone(), client::scalar(value));
                }
            }
        }
        Ok(Config {
            vmid,
            lock: section.get("lock").map(str::to_string),
            digest: data.get("digest").map(client::scalar).unwrap_or_default(),
            section,
        })
    }

    fn ct(&self) -> Result<Ct, CliError> {
        Ct::from_section(self.vmid, &self.section).map_err(|e| api(e.to_string()))
    }

    /// Sets or removes the `lock` property, failing when the config
    /// changed since it was read.
    fn set_lock(&self, root: &Path, lock: Option<&str>) -> Result<(), CliError> {
        let mut params = Map::new();
        match lock {
            Some(l) => params.insert("lock".into(), Value::from(l)),
            None => params.insert("delete".into(), Value::from("lock")),
        };
        params.insert("digest".into(), Value::from(self.digest.as_str()));
        client::call(
            root,
            "PUT",
            &format!("/nodes/{NODE}/lxc/{}/config", self.vmid),
            &params,
        )?;
        Ok(())
    }
}

/// Whether the CT runs.
fn running(root: &Path, vmid: u32) -> Result<bool, CliError> {
    let status = client::call(
        root,
        "GET",
        &format!("/nodes/{NODE}/lxc/{vmid}/status/current"),
        &Map::new(),
    )?;
    Ok(status.get("status").and_then(Value::as_str) != Some("stopped"))
}

/// The host path and format of storage volume `volid`, from the API; the
/// volume is activated on this node first (a stopped CT's LVM volumes are
/// inactive).
fn volume_path(root: &Path, volid: &str) -> Result<(PathBuf, String), CliError> {
    let (storage, volname) = volid
        .split_once(':')
        .ok_or_else(|| api(format!("'{volid}' is not a volume id")))?;
    let plugin = oxve_api::storage::open_storage_at(root, storage).map_err(|e| api(e.message))?;
    plugin
        .activate()
        .and_then(|()| plugin.activate_volume(volname))
        .map_err(|e| api(format!("cannot activate '{volid}': {e}")))?;
    let info = client::call(
        root,
        "GET",
        &format!("/nodes/{NODE}/storage/{storage}/content/{volid}"),
        &Map::new(),
    )?;
    let path = info
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| api(format!("volume '{volid}' has no path on this node")))?;
    let format = info
        .get("format")
        .map(client::scalar)
        .unwrap_or_else(|| "raw".into());
    Ok((PathBuf::from(path), format))
}

/// What mount point `mp` mounts; volumes by their path from the API.
fn resolve(
    root: &Path,
    mp: &MountPoint,
    warn: &mut dyn FnMut(&str),
) -> Result<MountSource, CliError> {
    let path = match mp.kind() {
        MountKind::Volume => Some(volume_path(root, &mp.volume)?.0),
        MountKind::Bind | MountKind::Device => None,
    };
    MountSource::of(mp, path.as_deref(), warn).map_err(|e| api(e.to_string()))
}

fn api(message: impl Into<String>) -> CliError {
    CliError::Api(message.into())
}
