//! Containers of this node: the glue between the API and `oxve-lxc` — the
//! CT config in the store, volumes through the storage plugins, per-CT
//! locks, and the create/start/stop flows that tasks run.
//!
//! Locks: every read-modify-write of a CT config holds that CT's async
//! mutex, so concurrent callers queue instead of failing after a timeout
//! (upstream's trap). Long operations also set the config's `lock`
//! property, which other operations refuse with upstream's
//! `CT is locked (<lock>)` error.

use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use oxve_lxc::host::{LxcHost, RunState};
use oxve_lxc::lxcconf::HostEnv;
use oxve_lxc::model::{MountKind, MountPoint};
use oxve_lxc::mount::{BlockDevice, MountSource};
use oxve_lxc::Ct;
use oxve_schema::ctconfig::CtConfig;
use oxve_storage::{Content, StoragePlugin, StorageType, VolumeId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Store key of CT `vmid`'s config on `node`.
pub fn config_key(node: &str, vmid: u32) -> String {
    format!("nodes/{node}/lxc/{vmid}.conf")
}

/// Per-guest locks: holders of one guest's lock queue behind each other
/// (fairly, in arrival order) instead of timing out. Clones of a template
/// share its lock, so they run side by side while anything that changes
/// the template waits for them.
#[derive(Default)]
pub struct GuestLocks {
    map: Mutex<HashMap<u32, Arc<tokio::sync::RwLock<()>>>>,
}

impl GuestLocks {
    fn entry(&self, vmid: u32) -> Arc<tokio::sync::RwLock<()>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(vmid)
            .or_default()
            .clone()
    }

    /// Waits for guest `vmid`'s lock.
    pub async fn lock(&self, vmid: u32) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.entry(vmid).write_owned().await
    }

    /// Waits for a share of guest `vmid`'s lock (readers of a guest that
    /// does not change, such as clones of a template).
    pub async fn lock_shared(&self, vmid: u32) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.entry(vmid).read_owned().await
    }
}

/// A loaded CT config with the digest of its text.
pub struct Loaded {
    pub conf: CtConfig,
    pub digest: String,
}

impl Node {
    /// The LXC side of this node.
    pub fn lxc(&self) -> LxcHost {
        LxcHost::new(&self.root, self.netns.clone())
    }

    /// Whether CT `vmid` exists on this node.
    pub fn ct_exists(&self, vmid: u32) -> ApiResult<bool> {
        Ok(self.store.get(&config_key(&self.name, vmid))?.is_some())
    }

    /// CT `vmid`'s config; upstream's error when there is none.
    pub fn load_ct(&self, vmid: u32) -> ApiResult<Loaded> {
        let key = config_key(&self.name, vmid);
        let Some(entry) = self.store.get(&key)? else {
            return Err(ApiError::fail(format!(
                "Configuration file '{key}' does not exist"
            )));
        };
        let (conf, _) = CtConfig::parse(&entry.text, false).map_err(|e| ApiError::fail(e.0))?;
        Ok(Loaded {
            conf,
            digest: oxve_config::digest(&entry.text),
        })
    }

    /// Read-modify-write of CT `vmid`'s config (it must exist).
    pub fn update_ct<T>(
        &self,
        vmid: u32,
        mut f: impl FnMut(&mut CtConfig) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let key = config_key(&self.name, vmid);
        self.update_text(&key, |text| {
            let Some(text) = text else {
                return Err(ApiError::fail(format!(
                    "Configuration file '{key}' does not exist"
                )));
            };
            let (mut conf, _) = CtConfig::parse(text, false).map_err(|e| ApiError::fail(e.0))?;
            let out = f(&mut conf)?;
            Ok((Some(conf.write()), out))
        })
    }

    /// Sets (`Some`) or clears the config's `lock` property; setting fails
    /// with upstream's error when another lock is held.
    pub fn set_ct_lock(&self, vmid: u32, lock: Option<&str>) -> ApiResult<()> {
        self.update_ct(vmid, |conf| {
            match lock {
                Some(l) => {
                    check_unlocked(conf)?;
                    conf.main.props.insert("lock".into(), l.into());
                }
                None => {
                    conf.main.props.remove("lock");
                }
            }
            Ok(())
        })
    }

    /// The typed main section of CT `vmid`.
    pub fn ct(&self, vmid: u32) -> ApiResult<Ct> {
        let loaded = self.load_ct(vmid)?;
        Ct::from_section(vmid, &loaded.conf.main).map_err(|e| ApiError::fail(e.to_string()))
    }

    /// CT ids of this node, sorted.
    pub fn ct_ids(&self) -> ApiResult<Vec<u32>> {
        let prefix = format!("nodes/{}/lxc/", self.name);
        let mut ids: Vec<u32> = self
            .store
            .list(&prefix)?
            .iter()
            .filter_map(|m| m.key[prefix.len()..].strip_suffix(".conf")?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Whether any guest (CT or VM) of this node has id `vmid`.
    pub fn guest_exists(&self, vmid: u32) -> ApiResult<Option<&'static str>> {
        if self.ct_exists(vmid)? {
            return Ok(Some("CT"));
        }
        let vm = format!("nodes/{}/qemu-server/{vmid}.conf", self.name);
        Ok(self.store.get(&vm)?.is_some().then_some("VM"))
    }
}

/// Claims id `vmid` for a new CT: its config appears atomically with
/// `lock: create` (or the call fails when any guest has the id). Returns
/// the config's store key. The caller holds the guest lock.
pub fn claim(
    node: &Node,
    vmid: u32,
    section: &oxve_schema::ctconfig::CtSection,
) -> ApiResult<String> {
    let mut claim = CtConfig {
        main: section.clone(),
        ..Default::default()
    };
    claim.main.props.insert("lock".into(), "create".into());
    crate::guest::claim(
        node,
        vmid,
        config_key(&node.name, vmid),
        claim.write(),
        "CT",
    )
}

/// Upstream's refusal while a `lock` is set.
pub fn check_unlocked(conf: &CtConfig) -> ApiResult<()> {
    match conf.main.get("lock") {
        Some(lock) => Err(ApiError::fail(format!("CT is locked ({lock})"))),
        None => Ok(()),
    }
}

/// Host facts for the generated LXC config.
pub fn host_env(node: &Node, ct: &Ct) -> ApiResult<HostEnv> {
    let lxc = node.lxc();
    let idmap = if ct.unprivileged {
        Some(ct_idmap(ct)?)
    } else {
        None
    };
    let exe = std::env::current_exe()
        .map_err(|e| ApiError::fail(format!("cannot find own binary: {e}")))?;
    let seccomp = PathBuf::from("/usr/share/lxc/config/common.seccomp");
    Ok(HostEnv {
        rootfs: lxc.rootfs_dir(ct.vmid),
        log_file: lxc.log_file(ct.vmid),
        hook: Some(format!(
            "{} __lxc-hook {}",
            exe.display(),
            node.root.display()
        )),
        cgroup_v2: !Path::new("/sys/fs/cgroup/memory").is_dir(),
        memsw: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists(),
        seccomp: seccomp.exists().then_some(seccomp),
        apparmor: apparmor_enabled(),
        host_cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        idmap,
        quota_devices: Vec::new(),
    })
}

/// The id mapping of an unprivileged CT: its own `lxc.idmap` keys, or
/// root's range from `/etc/subuid` and `/etc/subgid`.
pub fn ct_idmap(ct: &Ct) -> ApiResult<oxve_lxc::idmap::IdMap> {
    let raw = ct.raw_values("lxc.idmap");
    let err = |e: oxve_lxc::LxcError| ApiError::fail(e.to_string());
    match oxve_lxc::idmap::IdMap::from_raw(&raw).map_err(err)? {
        Some(map) => Ok(map),
        None => oxve_lxc::idmap::IdMap::from_host().map_err(err),
    }
}

/// Whether LXC can confine containers with AppArmor: the module enabled
/// and its securityfs interface mounted (LXC checks both).
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y")
        && Path::new("/sys/kernel/security/apparmor").exists()
}

/// Resolves a mount point to what is mounted: a volume through its
/// storage plugin (activated), a bind-mounted host directory or a device.
/// `warn` gets upstream's warnings (quotas asked for on a directory).
pub fn resolve_mount(
    node: &Node,
    mp: &MountPoint,
    warn: &mut dyn FnMut(&str),
) -> ApiResult<MountSource> {
    let volume_path = match mp.kind() {
        MountKind::Volume => {
            let vol = VolumeId::parse(&mp.volume)?;
            let plugin = node.open_storage(&vol.storage)?;
            plugin.activate()?;
            plugin.activate_volume(&vol.volname)?;
            Some(plugin.path(&vol.volname)?)
        }
        MountKind::Bind | MountKind::Device => None,
    };
    MountSource::of(mp, volume_path.as_deref(), warn).map_err(lxc_err)
}

/// Mounts every mount point of `ct` under its run directory's rootfs
/// (what is mounted there already, e.g. by `pct mount`, is unmounted
/// first). Warnings go to the daemon's log.
pub fn mount_ct(node: &Node, ct: &Ct) -> ApiResult<PathBuf> {
    let warn = &mut |w: &str| tracing::warn!(vmid = ct.vmid, "{w}");
    mount_ct_logged(node, ct, warn).map(|(rootfs, _)| rootfs)
}

/// [`mount_ct`] with the warnings for a task log; also returns the block
/// devices of mounts with quotas, which the started CT gets.
pub fn mount_ct_logged(
    node: &Node,
    ct: &Ct,
    warn: &mut dyn FnMut(&str),
) -> ApiResult<(PathBuf, Vec<BlockDevice>)> {
    let lxc = node.lxc();
    lxc.prepare_dir(ct.vmid).map_err(lxc_err)?;
    let rootfs = lxc.rootfs_dir(ct.vmid);
    oxve_lxc::mount::unmount_all(&rootfs).map_err(lxc_err)?;
    if ct.rootfs.is_none() {
        return Err(ApiError::fail(format!("CT {} has no rootfs", ct.vmid)));
    }
    let mounts = ct
        .mount_points()
        .map(|mp| resolve_mount(node, mp, warn))
        .collect::<ApiResult<Vec<_>>>()?;
    let devices = oxve_lxc::mount::mount_all(&rootfs, &mounts, root_ids(ct)?).map_err(lxc_err)?;
    Ok((rootfs, devices))
}

/// An `oxve-lxc` error as an API error.
pub fn lxc_err(e: oxve_lxc::LxcError) -> ApiError {
    match e {
        oxve_lxc::LxcError::Storage(s) => s.into(),
        other => ApiError::fail(other.to_string()),
    }
}

/// The OS setup's view of a container.
pub fn setup_params(ct: &Ct, root_ids: (u32, u32)) -> oxve_lxc::setup::SetupParams {
    oxve_lxc::setup::SetupParams {
        vmid: ct.vmid,
        hostname: ct.hostname.clone(),
        ostype: ct.ostype.clone(),
        nets: ct
            .nets
            .iter()
            .map(|n| oxve_lxc::setup::NetParams {
                index: n.index,
                name: n.name.clone(),
                hwaddr: n.hwaddr.clone(),
                ip: n.ip.clone(),
                gw: n.gw.clone(),
                ip6: n.ip6.clone(),
                gw6: n.gw6.clone(),
                mtu: n.mtu,
            })
            .collect(),
        nameservers: if ct.nameservers.is_empty() {
            host_dns("nameserver")
        } else {
            ct.nameservers.clone()
        },
        searchdomains: if ct.searchdomains.is_empty() {
            host_dns("search")
        } else {
            ct.searchdomains.clone()
        },
        timezone: ct.timezone.clone(),
        root_uid: root_ids.0,
        root_gid: root_ids.1,
        tty: Some(ct.tty),
        unprivileged: ct.unprivileged,
        random_seed: None,
    }
}

/// The host's DNS settings (`nameserver` or `search` lines of
/// `/etc/resolv.conf`), which a CT without its own gets, as upstream.
fn host_dns(key: &str) -> Vec<String> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix(key).filter(|r| r.starts_with([' ', '\t'])))
        .flat_map(|r| r.split_whitespace().map(str::to_string))
        .take(if key == "nameserver" { 3 } else { 6 })
        .collect()
}

/// Host uid/gid of the CT's root (0/0 when privileged).
pub fn root_ids(ct: &Ct) -> ApiResult<(u32, u32)> {
    if !ct.unprivileged {
        return Ok((0, 0));
    }
    let map = ct_idmap(ct)?;
    match (map.host_uid(0), map.host_gid(0)) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => Err(ApiError::fail(
            "the id mapping does not map the container's root",
        )),
    }
}

/// Checks that the bridges of the CT's NICs exist in the node's network
/// namespace; LXC's own error for a missing bridge is obscure.
pub fn check_bridges(node: &Node, ct: &Ct) -> ApiResult<()> {
    for net in &ct.nets {
        let Some(bridge) = &net.bridge else {
            continue;
        };
        if !node.lxc().has_interface(bridge) {
            return Err(ApiError::fail(format!(
                "net{}: bridge '{bridge}' does not exist{}",
                net.index,
                node.netns
                    .as_ref()
                    .map(|n| format!(" (in network namespace '{n}')"))
                    .unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// Starts CT `vmid` (blocking): mounts, runs the OS pre-start setup,
/// writes the LXC config and runs `lxc-start`. On failure nothing stays
/// mounted.
pub fn start(node: &Node, vmid: u32, log: &dyn Fn(&str)) -> ApiResult<()> {
    let loaded = node.load_ct(vmid)?;
    // A CT mounted by `pct mount` starts (its mounts are replaced by the
    // start's own), as upstream.
    if loaded.conf.main.get("lock") != Some("mounted") {
        check_unlocked(&loaded.conf)?;
    }
    let ct =
        Ct::from_section(vmid, &loaded.conf.main).map_err(|e| ApiError::fail(e.to_string()))?;
    let lxc = node.lxc();
    // Callers have checked that the CT is stopped; should it have been
    // started in between, lxc-start refuses with its own error.
    if ct.template {
        return Err(ApiError::fail(format!(
            "CT {vmid} is a template, clone it instead"
        )));
    }
    // quotactl(2) needs CAP_SYS_ADMIN of the host's user namespace.
    if ct.unprivileged && ct.mount_points().any(|mp| mp.quota) {
        return Err(ApiError::fail(
            "Quotas are not supported by unprivileged containers.",
        ));
    }
    check_bridges(node, &ct)?;
    let mut env = host_env(node, &ct)?;
    let warn = &mut |w: &str| log(&format!("WARN: {w}"));
    let (rootfs, quota_devices) = mount_ct_logged(node, &ct, warn)?;
    env.quota_devices = quota_devices;
    let result = (|| {
        if ct.ostype.as_deref() != Some("unmanaged") {
            oxve_lxc::setup::pre_start(&rootfs, &setup_params(&ct, root_ids(&ct)?))
                .map_err(|e| ApiError::fail(format!("OS setup failed: {e}")))?;
        }
        lxc.write_config(vmid, &oxve_lxc::lxcconf::render(&ct, &env))
            .map_err(lxc_err)?;
        log(&format!("starting CT {vmid}"));
        lxc.start(vmid, ct.debug).map_err(lxc_err)
    })();
    if result.is_err() {
        let _ = oxve_lxc::mount::unmount_all(&rootfs);
        deactivate_volumes(node, &ct);
    }
    result
}

/// Deactivates the volumes of a stopped CT (LVM volumes go inactive, as
/// upstream's stop cleanup does); failures are only logged: the CT is
/// stopped either way.
pub fn deactivate_volumes(node: &Node, ct: &Ct) {
    for mp in ct.mount_points() {
        if mp.kind() != MountKind::Volume {
            continue;
        }
        let result = (|| -> ApiResult<()> {
            let vol = VolumeId::parse(&mp.volume)?;
            Ok(node
                .open_storage(&vol.storage)?
                .deactivate_volume(&vol.volname)?)
        })();
        if let Err(e) = result {
            tracing::warn!(vmid = ct.vmid, volume = %mp.volume, "cannot deactivate: {e}");
        }
    }
}

/// Stops CT `vmid` (blocking): at once (`kill`) or by shutdown with a
/// timeout; then unmounts what is left.
pub fn stop(node: &Node, vmid: u32, kill: bool, timeout: u64, force: bool) -> ApiResult<()> {
    let lxc = node.lxc();
    if lxc.state(vmid).map_err(lxc_err)? == RunState::Stopped {
        return Err(ApiError::fail(format!("CT {vmid} not running")));
    }
    lxc.stop(vmid, kill, timeout, !force).map_err(|e| {
        if !kill && !force {
            ApiError::fail(format!(
                "shutdown of CT {vmid} timed out after {timeout} s ({e})"
            ))
        } else {
            lxc_err(e)
        }
    })?;
    oxve_lxc::mount::unmount_all(&lxc.rootfs_dir(vmid)).map_err(lxc_err)?;
    if let Ok(ct) = node.load_ct(vmid).and_then(|l| {
        Ct::from_section(vmid, &l.conf.main).map_err(|e| ApiError::fail(e.to_string()))
    }) {
        deactivate_volumes(node, &ct);
    }
    Ok(())
}

/// Storage types whose container volumes are subvolumes rather than raw
/// images with ext4.
fn prefers_subvol(kind: StorageType) -> bool {
    matches!(kind, StorageType::Btrfs | StorageType::ZfsPool)
}

/// Allocates a new container volume of `size_gib` on `storage` (`0`: a
/// subvolume without size limit), with an ext4 file system for raw
/// images owned by the CT's root. Returns the volume id and its size text.
pub fn alloc_volume(
    node: &Node,
    storage: &str,
    vmid: u32,
    size_gib: f64,
    root_owner: (u32, u32),
) -> ApiResult<(String, String)> {
    let plugin = node.open_storage(storage)?;
    plugin.activate()?;
    let kind = plugin.def().kind;
    let size_kib = (size_gib * 1024.0 * 1024.0) as u64;
    let subvol = size_gib == 0.0 || prefers_subvol(kind);
    let format = if subvol { "subvol" } else { "raw" };
    let volname = plugin.alloc_for(Some(Content::Rootdir), vmid, Some(format), None, size_kib)?;
    let volid = VolumeId::new(storage, &volname).to_string();
    let result = (|| {
        let path = plugin.path(&volname)?;
        if subvol {
            std::os::unix::fs::chown(&path, Some(root_owner.0), Some(root_owner.1))
                .map_err(|e| ApiError::fail(format!("cannot chown '{}': {e}", path.display())))?;
        } else {
            plugin.activate_volume(&volname)?;
            oxve_lxc::create::make_filesystem(&path, root_owner).map_err(lxc_err)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = free_volume(node, &volid);
        return Err(e);
    }
    Ok((volid, size_text(size_gib)))
}

/// Frees a volume by id.
pub fn free_volume(node: &Node, volid: &str) -> ApiResult<()> {
    let vol = VolumeId::parse(volid)?;
    let plugin: Box<dyn StoragePlugin> = node.open_storage(&vol.storage)?;
    plugin.free_image(&vol.volname)?;
    Ok(())
}

/// `4G`, `512M`, `0T` as upstream writes sizes.
pub fn size_text(gib: f64) -> String {
    if gib == 0.0 {
        "0T".into()
    } else if gib.fract() == 0.0 {
        format!("{}G", gib as u64)
    } else {
        format!("{}M", (gib * 1024.0).round() as u64)
    }
}

/// `storage:size` (a new volume of `size` GiB) in a mount point's volume.
pub fn new_volume_spec(volume: &str) -> Option<(String, f64)> {
    let (storage, size) = volume.split_once(':')?;
    let size: f64 = size.parse().ok()?;
    (oxve_storage::volume::is_storage_id(storage) && size >= 0.0)
        .then(|| (storage.to_string(), size))
}
