//! Virtual machines of this node: the glue between the API and
//! `oxve-qemu` — the VM config in the store, the host facts for the
//! command line, disks through the storage plugins, and the start, stop
//! and shutdown flows that tasks run.
//!
//! Locks work as for containers (see `ct.rs`): every read-modify-write of
//! a VM config and every guest operation holds the VM's async mutex, so
//! concurrent callers queue; long operations also set the config's `lock`.

use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use oxve_qemu::cmdline::{self, HostEnv, Paths, VmInput};
use oxve_qemu::host::QemuHost;
use oxve_qemu::probe::QemuProbe;
use oxve_schema::vmconfig::{drive_file, is_drive_key, VmConfig, VmSection};
use oxve_storage::{Content, VolumeId};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Store key of VM `vmid`'s config on `node`.
pub fn config_key(node: &str, vmid: u32) -> String {
    format!("nodes/{node}/qemu-server/{vmid}.conf")
}

/// A loaded VM config with the digest of its text.
pub struct LoadedVm {
    pub conf: VmConfig,
    pub digest: String,
}

/// How long QMP may take to answer a lifecycle command.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

impl Node {
    /// The QEMU side of this node: its run directory.
    pub fn qemu(&self) -> QemuHost {
        QemuHost::new(self.path("run/oxve/qemu"))
    }

    /// Where this node's command lines point QEMU (see [`paths_at`]).
    pub fn qemu_paths(&self) -> Paths {
        paths_at(&self.root)
    }

    /// The QEMU probe (version, KVM), run once per daemon.
    pub fn qemu_probe(&self) -> ApiResult<QemuProbe> {
        self.qemu_probe
            .get_or_init(|| oxve_qemu::probe::probe(oxve_qemu::probe::QEMU_X86_64))
            .clone()
            .map_err(ApiError::fail)
    }

    /// Whether VM `vmid` exists on this node.
    pub fn vm_exists(&self, vmid: u32) -> ApiResult<bool> {
        Ok(self.store.get(&config_key(&self.name, vmid))?.is_some())
    }

    /// VM `vmid`'s config; upstream's error when there is none.
    pub fn load_vm(&self, vmid: u32) -> ApiResult<LoadedVm> {
        let key = config_key(&self.name, vmid);
        let Some(entry) = self.store.get(&key)? else {
            return Err(ApiError::fail(format!(
                "Configuration file '{key}' does not exist"
            )));
        };
        let (conf, _) =
            VmConfig::parse(vmid, &entry.text, false).map_err(|e| ApiError::fail(e.0))?;
        Ok(LoadedVm {
            conf,
            digest: oxve_config::digest(&entry.text),
        })
    }

    /// Read-modify-write of VM `vmid`'s config (it must exist). The
    /// result is normalized and type-checked as upstream's writer does.
    pub fn update_vm<T>(
        &self,
        vmid: u32,
        mut f: impl FnMut(&mut VmConfig) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let key = config_key(&self.name, vmid);
        self.update_text(&key, |text| {
            let Some(text) = text else {
                return Err(ApiError::fail(format!(
                    "Configuration file '{key}' does not exist"
                )));
            };
            let (mut conf, _) =
                VmConfig::parse(vmid, text, false).map_err(|e| ApiError::fail(e.0))?;
            let out = f(&mut conf)?;
            conf.prepare_write().map_err(|e| ApiError::fail(e.0))?;
            Ok((Some(conf.write()), out))
        })
    }

    /// Sets (`Some`) or clears the config's `lock`; setting fails with
    /// upstream's error when another lock is held.
    pub fn set_vm_lock(&self, vmid: u32, lock: Option<&str>) -> ApiResult<()> {
        self.update_vm(vmid, |conf| {
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

    /// VM ids of this node, sorted.
    pub fn vm_ids(&self) -> ApiResult<Vec<u32>> {
        let prefix = format!("nodes/{}/qemu-server/", self.name);
        let mut ids: Vec<u32> = self
            .store
            .list(&prefix)?
            .iter()
            .filter_map(|m| m.key[prefix.len()..].strip_suffix(".conf")?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The pid of VM `vmid`'s QEMU when it runs.
    pub fn vm_pid(&self, vmid: u32) -> Option<u32> {
        self.qemu().pid(vmid)
    }
}

/// Where the command lines of the node rooted at `root` point QEMU:
/// sockets, hooks and device files under the node's root, firmware from
/// Debian's `ovmf`.
pub fn paths_at(root: &Path) -> Paths {
    let run = root.join("run/oxve/qemu").display().to_string();
    Paths {
        event_socket: format!("{run}/qmeventd.sock"),
        bridge_up: format!("{run}/oxve-bridge-up"),
        bridge_down: format!("{run}/oxve-bridge-down"),
        share_dir: root.join("run/oxve/qemu-share").display().to_string(),
        rom_dir: "/usr/share/kvm".into(),
        firmware_dir: "/usr/share/OVMF/".into(),
        run_dir: run,
    }
}

/// Upstream's refusal while a `lock` is set.
pub fn check_unlocked(conf: &VmConfig) -> ApiResult<()> {
    match conf.main.get("lock") {
        Some(lock) => Err(ApiError::fail(format!("VM is locked ({lock})"))),
        None => Ok(()),
    }
}

/// Claims id `vmid` for a new VM: its config appears atomically with
/// `lock: create` (or the call fails when any guest has the id). Returns
/// the config's store key. The caller holds the guest lock.
pub fn claim(node: &Node, vmid: u32, section: &VmSection) -> ApiResult<String> {
    let mut claim = VmConfig {
        main: section.clone(),
        ..Default::default()
    };
    claim.main.props.insert("lock".into(), "create".into());
    crate::guest::claim(
        node,
        vmid,
        config_key(&node.name, vmid),
        claim.write(),
        "VM",
    )
}

/// A random UUID (version 4) in its text form.
pub fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Drive keys in upstream's boot-device order: IDE, SATA, SCSI, VirtIO.
fn boot_drive_keys() -> impl Iterator<Item = String> {
    (0..4)
        .map(|i| format!("ide{i}"))
        .chain((0..6).map(|i| format!("sata{i}")))
        .chain((0..31).map(|i| format!("scsi{i}")))
        .chain((0..16).map(|i| format!("virtio{i}")))
}

/// Whether a drive value is a CD-ROM (`media=cdrom`).
pub fn is_cdrom(value: &str) -> bool {
    value.split(',').any(|p| p == "media=cdrom")
}

/// Upstream's default boot order of a new VM: the first disk, the first
/// CD-ROM, the first NIC (`order=scsi0;ide2;net0`); `None` when it has
/// none of them.
pub fn default_boot_order(main: &VmSection) -> Option<String> {
    let first =
        |cdrom: bool| boot_drive_keys().find(|k| main.get(k).is_some_and(|v| is_cdrom(v) == cdrom));
    let net = (0..32)
        .map(|i| format!("net{i}"))
        .find(|k| main.props.contains_key(k));
    let devs: Vec<String> = [first(false), first(true), net]
        .into_iter()
        .flatten()
        .collect();
    (!devs.is_empty()).then(|| format!("order={}", devs.join(";")))
}

/// The volumes of a section's drives that live on a storage (not `none`,
/// host paths or devices): `(key, volid)`.
pub fn drive_volumes(section: &VmSection) -> Vec<(String, String)> {
    section
        .props
        .iter()
        .filter(|(k, _)| is_drive_key(k))
        .filter_map(|(k, v)| {
            let file = drive_file(v)?;
            VolumeId::parse(file)
                .ok()
                .map(|_| (k.clone(), file.to_string()))
        })
        .collect()
}

/// `storage:size` (a new volume of `size` GiB) as a drive's file.
pub fn new_disk_spec(file: &str) -> Option<(String, f64)> {
    let (storage, size) = file.split_once(':')?;
    let size: f64 = size.parse().ok()?;
    (oxve_storage::volume::is_storage_id(storage) && size > 0.0)
        .then(|| (storage.to_string(), size))
}

/// One drive option of a property string (`format=qcow2`).
fn drive_opt<'a>(value: &'a str, key: &str) -> Option<&'a str> {
    value
        .split(',')
        .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
}

/// Allocates a new disk for drive `key` from its `storage:size` value
/// (or imports one, `storage:0,import-from=...`, see `vm_import`);
/// returns the volume id and the new drive value (`local:vm-100-disk-0.qcow2,
/// ...,size=8G`).
pub fn alloc_disk(
    node: &Node,
    vmid: u32,
    key: &str,
    value: &str,
    log: &dyn Fn(&str),
) -> ApiResult<Option<(String, String)>> {
    let Some(file) = drive_file(value) else {
        return Ok(None);
    };
    if crate::vm_import::import_from(value).is_some() {
        return crate::vm_import::import_drive(node, vmid, key, value, log).map(Some);
    }
    if crate::vm_cloudinit::new_drive_storage(file).is_some() {
        return crate::vm_cloudinit::alloc_drive(node, vmid, key, value).map(Some);
    }
    let Some((storage, size_gib)) = new_disk_spec(file) else {
        return Ok(None);
    };
    // An EFI disk holds the firmware's variables: the size and first
    // content of upstream's template, whatever size was asked for.
    let efi_vars = (key == "efidisk0").then(|| {
        let dir = node.qemu_paths().firmware_dir;
        PathBuf::from(format!(
            "{}/{}",
            dir.trim_end_matches('/'),
            cmdline::vars_template(value)
        ))
    });
    let efi_len = match &efi_vars {
        Some(path) => Some(
            std::fs::metadata(path)
                .map_err(|e| {
                    ApiError::fail(format!(
                        "{key}: EFI variables template {} missing (Debian package ovmf): {e}",
                        path.display()
                    ))
                })?
                .len(),
        ),
        None => None,
    };
    let plugin = node.open_storage(&storage)?;
    plugin.activate()?;
    let tpm = key == "tpmstate0";
    // swtpm keeps its state in a plain file or device: always raw.
    let format = if tpm {
        Some("raw")
    } else {
        drive_opt(value, "format")
    };
    let size_kib = match efi_len {
        Some(len) => len.div_ceil(1024),
        None if tpm => crate::vm_tpm::STATE_SIZE_KIB,
        None => (size_gib * 1024.0 * 1024.0) as u64,
    };
    let volname = plugin
        .alloc_for(Some(Content::Images), vmid, format, None, size_kib)
        .map_err(|e| ApiError::fail(format!("{key}: {e}")))?;
    let volid = VolumeId::new(&storage, &volname).to_string();
    if let Some(template) = &efi_vars {
        let written = write_efi_vars(&*plugin, &volname, template);
        if let Err(e) = written {
            let _ = plugin.free_image(&volname);
            return Err(ApiError::fail(format!("{key}: {}", e.message)));
        }
    }
    let rest: Vec<&str> = value
        .split(',')
        .skip(1)
        .filter(|p| !p.starts_with("size=") && !p.starts_with("format="))
        .collect();
    let mut new = volid.clone();
    for p in rest {
        new.push(',');
        new.push_str(p);
    }
    let size = match efi_len {
        Some(len) => oxve_schema::format::format_size(len.div_ceil(1024) * 1024),
        None if tpm => oxve_schema::format::format_size(crate::vm_tpm::STATE_SIZE_KIB * 1024),
        None => crate::ct::size_text(size_gib),
    };
    new.push_str(&format!(",size={size}"));
    Ok(Some((volid, new)))
}

/// Copies the EFI variables `template` into the new volume `volname`.
fn write_efi_vars(
    plugin: &dyn oxve_storage::StoragePlugin,
    volname: &str,
    template: &Path,
) -> ApiResult<()> {
    plugin.activate_volume(volname)?;
    let path = plugin.path(volname)?;
    let format = plugin
        .parse_volname(volname)?
        .format
        .unwrap_or_else(|| "raw".into());
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", &format])
        .arg(template)
        .arg(&path)
        .output()
        .map_err(|e| ApiError::fail(format!("cannot run qemu-img: {e}")))?;
    if !out.status.success() {
        return Err(ApiError::fail(format!(
            "writing the EFI variables failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Frees a volume by id.
pub fn free_volume(node: &Node, volid: &str) -> ApiResult<()> {
    crate::ct::free_volume(node, volid)
}

/// The host as the command line sees it for `section`: the probe, the
/// storages, and the MTU of each bridge its NICs use (read in the node's
/// network namespace).
pub fn host_env(node: &Node, section: &VmSection) -> ApiResult<HostEnv> {
    let (storage, _) = node.storage_config()?;
    let probe = node.qemu_probe()?;
    Ok(host_env_with(
        &node.name,
        &node.root,
        &probe,
        storage,
        &node.lxc(),
        section,
    ))
}

fn host_env_with(
    name: &str,
    root: &Path,
    probe: &QemuProbe,
    storage: oxve_storage::StorageConfig,
    lxc: &oxve_lxc::host::LxcHost,
    section: &VmSection,
) -> HostEnv {
    let mut env = oxve_qemu::probe::host_env(name, probe, storage, paths_at(root));
    for (key, value) in &section.props {
        if !key.starts_with("net") {
            continue;
        }
        if let Some(bridge) = drive_opt(value, "bridge") {
            if let Some(mtu) = bridge_mtu(lxc, bridge) {
                env.bridge_mtu.insert(bridge.to_string(), mtu);
            }
        }
    }
    env
}

/// The MTU of interface `name` in the node's network namespace.
fn bridge_mtu(lxc: &oxve_lxc::host::LxcHost, name: &str) -> Option<u32> {
    let out = lxc
        .in_netns(|| {
            std::process::Command::new("ip")
                .args(["-o", "link", "show", "dev", name])
                .output()
        })
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

/// The command line of VM `vmid` for `section`, with the generator's
/// warnings. `kvm_fallback`: run under TCG when KVM is unusable instead
/// of failing (what a start does); returns the reason when it did.
pub fn command_line(
    node: &Node,
    vmid: u32,
    section: &VmSection,
    kvm_fallback: bool,
) -> ApiResult<(cmdline::Generated, Option<String>)> {
    let env = host_env(node, section)?;
    let probe = node.qemu_probe()?;
    generate(&env, &probe, vmid, section, kvm_fallback)
}

fn generate(
    env: &HostEnv,
    probe: &QemuProbe,
    vmid: u32,
    section: &VmSection,
    kvm_fallback: bool,
) -> ApiResult<(cmdline::Generated, Option<String>)> {
    let mut conf = section.props.clone();
    let mut tcg = None;
    if kvm_fallback && !env.kvm_available && conf.get("kvm").map(String::as_str) != Some("0") {
        conf.insert("kvm".into(), "0".into());
        tcg = Some(probe.kvm_unusable.clone().unwrap_or_default());
    }
    let input = VmInput { vmid, conf };
    let generated = cmdline::build(&input, env).map_err(|e| ApiError::fail(e.to_string()))?;
    Ok((generated, tcg))
}

/// `qm showcmd` on the node rooted at `root` (no daemon needed): the
/// command line a start of VM `vmid` (or of its `snapshot`'s config)
/// would run, as one line or one option per line (`pretty`).
pub fn showcmd_at(
    root: &Path,
    vmid: u32,
    snapshot: Option<&str>,
    pretty: bool,
) -> ApiResult<String> {
    let store = crate::storage::open_store_at(root)?;
    let suffix = format!("/qemu-server/{vmid}.conf");
    let entry = store
        .list("nodes/")?
        .into_iter()
        .find(|m| m.key.ends_with(&suffix))
        .ok_or_else(|| ApiError::fail(format!("VM {vmid} does not exist on this node")))?;
    let node_name = entry.key["nodes/".len()..entry.key.len() - suffix.len()].to_string();
    let text = store.get(&entry.key)?.map(|e| e.text).unwrap_or_default();
    let (conf, _) = VmConfig::parse(vmid, &text, false).map_err(|e| ApiError::fail(e.0))?;
    let section = match snapshot {
        Some(s) => conf
            .snapshots
            .get(s)
            .cloned()
            .ok_or_else(|| ApiError::fail(format!("snapshot '{s}' does not exist")))?,
        None => conf.main,
    };
    let storage_text = store
        .get(crate::storage::STORAGE_CFG)?
        .map(|e| e.text)
        .unwrap_or_default();
    let storage = oxve_storage::StorageConfig::parse(&storage_text);
    let probe = oxve_qemu::probe::probe(oxve_qemu::probe::QEMU_X86_64).map_err(ApiError::fail)?;
    let lxc = oxve_lxc::host::LxcHost::of_node(root);
    let env = host_env_with(&node_name, root, &probe, storage, &lxc, &section);
    let (generated, _) = generate(&env, &probe, vmid, &section, true)?;
    let args = oxve_qemu::host::for_stock_qemu(&generated.args);
    Ok(if pretty {
        cmdline::pretty(&args)
    } else {
        cmdline::to_command_string(&args)
    })
}

/// The main section with pending values applied and pending deletions
/// removed: what the VM will look like after its next start.
pub fn with_pending(conf: &VmConfig) -> VmSection {
    let mut s = conf.main.clone();
    for (k, v) in &conf.pending.props {
        if k != "delete" {
            s.props.insert(k.clone(), v.clone());
        }
    }
    for k in conf.pending_deletes().keys() {
        s.props.remove(k);
    }
    s
}

/// Applies the pending section to the main one (at start, as upstream);
/// volumes of replaced or deleted drives become `unused<n>`.
pub fn apply_pending(conf: &mut VmConfig) {
    let pending = std::mem::take(&mut conf.pending);
    let deletes = oxve_schema::vmconfig::parse_pending_delete(pending.get("delete").unwrap_or(""));
    for key in deletes.keys() {
        if let Some(old) = conf.main.props.remove(key) {
            keep_unused(conf, key, &old);
        }
    }
    for (key, value) in pending.props {
        if key == "delete" {
            continue;
        }
        if let Some(old) = conf.main.props.get(&key).cloned() {
            if old != value {
                keep_unused(conf, &key, &old);
            }
        }
        conf.main.props.insert(key, value);
    }
}

/// Keeps a replaced or removed drive's volume as `unused<n>` (not
/// CD-ROMs, whose ISO belongs to no VM).
pub fn keep_unused(conf: &mut VmConfig, key: &str, old: &str) {
    if !is_drive_key(key) || is_cdrom(old) {
        return;
    }
    let Some(file) = drive_file(old) else {
        return;
    };
    if VolumeId::parse(file).is_err() {
        return;
    }
    if conf.main.props.values().any(|v| v == file) {
        return;
    }
    let n = (0..)
        .find(|i| !conf.main.props.contains_key(&format!("unused{i}")))
        .unwrap_or(0);
    conf.main
        .props
        .insert(format!("unused{n}"), file.to_string());
}

/// Activates the storages and volumes of a VM's drives.
fn activate_volumes(node: &Node, section: &VmSection) -> ApiResult<()> {
    for (_, volid) in drive_volumes(section) {
        let vol = VolumeId::parse(&volid)?;
        let plugin = node.open_storage(&vol.storage)?;
        plugin.activate()?;
        plugin.activate_volume(&vol.volname)?;
    }
    Ok(())
}

/// Deactivates them again after the VM stopped; failures are logged.
pub fn deactivate_volumes(node: &Node, vmid: u32, section: &VmSection) {
    for (_, volid) in drive_volumes(section) {
        let result = (|| -> ApiResult<()> {
            let vol = VolumeId::parse(&volid)?;
            Ok(node
                .open_storage(&vol.storage)?
                .deactivate_volume(&vol.volname)?)
        })();
        if let Err(e) = result {
            tracing::warn!(vmid, volume = %volid, "cannot deactivate: {e}");
        }
    }
}

/// Writes the bridge hook scripts QEMU runs for taps, and the device
/// files the command line reads. Done once at daemon start and before
/// every VM start (the run directory may have been cleaned).
pub fn install_runtime(node: &Node) -> ApiResult<()> {
    let paths = node.qemu_paths();
    let host = node.qemu();
    host.prepare()
        .map_err(|e| ApiError::fail(format!("cannot create the QEMU run directory: {e}")))?;
    oxve_qemu::readconfig::install(std::path::Path::new(&paths.share_dir))
        .map_err(|e| ApiError::fail(format!("cannot write QEMU device files: {e}")))?;
    let exe = std::env::current_exe()
        .map_err(|e| ApiError::fail(format!("cannot find own binary: {e}")))?;
    for (path, action) in [(&paths.bridge_up, "up"), (&paths.bridge_down, "down")] {
        let text = format!(
            "#!/bin/sh\nexec {} __qemu-bridge {} {action} \"$1\"\n",
            oxve_qemu::cmdline::shell_quote(&exe.display().to_string()),
            oxve_qemu::cmdline::shell_quote(&node.root.display().to_string()),
        );
        if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
            let tmp = PathBuf::from(format!("{path}.tmp"));
            std::fs::write(&tmp, &text)
                .and_then(|_| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                })
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|e| ApiError::fail(format!("cannot write '{path}': {e}")))?;
        }
    }
    Ok(())
}

/// Writes, for each NIC on a bridge, what the bridge hook applies to its
/// tap (bridge, VLANs, rate), and checks the bridges exist.
pub fn write_plugs(node: &Node, vmid: u32, section: &VmSection) -> ApiResult<()> {
    let host = node.qemu();
    for (key, value) in &section.props {
        let Some(index) = key.strip_prefix("net").and_then(|i| i.parse::<u32>().ok()) else {
            continue;
        };
        let Some(bridge) = drive_opt(value, "bridge") else {
            continue;
        };
        if !node.lxc().has_interface(bridge) {
            return Err(ApiError::fail(format!(
                "{key}: bridge '{bridge}' does not exist{}",
                node.netns
                    .as_ref()
                    .map(|n| format!(" (in network namespace '{n}')"))
                    .unwrap_or_default()
            )));
        }
        let plug = oxve_lxc::net::Plug {
            bridge: bridge.to_string(),
            tag: drive_opt(value, "tag").and_then(|t| t.parse().ok()),
            trunks: drive_opt(value, "trunks")
                .and_then(|t| oxve_lxc::net::parse_trunks(t, ';'))
                .unwrap_or_default(),
            rate: drive_opt(value, "rate").and_then(|r| r.parse().ok()),
        };
        std::fs::write(host.plug_file(vmid, index), plug.to_args())
            .map_err(|e| ApiError::fail(format!("cannot write the plug of {key}: {e}")))?;
    }
    Ok(())
}

/// Starts VM `vmid`: applies pending changes, builds the command line,
/// activates the volumes, runs QEMU stopped (`-S`) in the node's network
/// namespace, and lets it run once it answers on QMP. On failure nothing
/// is left running or active. The caller holds the guest lock.
pub async fn start(
    node: &std::sync::Arc<Node>,
    vmid: u32,
    log: &(dyn Fn(&str) + Sync),
) -> ApiResult<()> {
    start_with(node, vmid, StartOptions::default(), log).await
}

/// How a start differs from a plain one.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Load this saved RAM state (a snapshot's `vmstate` file) before the
    /// VM runs.
    pub statefile: Option<PathBuf>,
    /// Run this machine version (a snapshot's `runningmachine`) instead of
    /// the config's, so that the saved state fits.
    pub forcemachine: Option<String>,
    /// Run this CPU (`runningcpu`, the `-cpu` value) instead of the
    /// config's.
    pub forcecpu: Option<String>,
    /// Start although the config has this lock (`suspended`).
    pub allow_lock: Option<&'static str>,
}

/// [`start`] with [`StartOptions`].
pub async fn start_with(
    node: &std::sync::Arc<Node>,
    vmid: u32,
    opts: StartOptions,
    log: &(dyn Fn(&str) + Sync),
) -> ApiResult<()> {
    let n = node.clone();
    let forcemachine = opts.forcemachine.clone();
    let forcecpu = opts.forcecpu.clone();
    let allow_lock = opts.allow_lock;
    let prepared = tokio::task::spawn_blocking(move || -> ApiResult<_> {
        let loaded = n.load_vm(vmid)?;
        if allow_lock.is_none() || loaded.conf.main.get("lock") != allow_lock {
            check_unlocked(&loaded.conf)?;
        }
        if n.vm_pid(vmid).is_some() {
            return Err(ApiError::fail(format!("VM {vmid} already running")));
        }
        if loaded.conf.main.get("template") == Some("1") {
            return Err(ApiError::fail("you can't start a vm if it's a template"));
        }
        if !loaded.conf.pending.is_empty() {
            // A cloud-init drive the pending changes drop is freed, not
            // kept as unused (as upstream).
            let conf = &loaded.conf;
            let dropped: Vec<String> = conf
                .main
                .props
                .iter()
                .filter(|(k, _)| {
                    conf.pending.props.contains_key(*k) || conf.pending_deletes().contains_key(*k)
                })
                .filter_map(|(k, old)| {
                    let new = conf.pending.get(k);
                    crate::vm_cloudinit::replaced_volume(old, new)
                })
                .collect();
            n.update_vm(vmid, |conf| {
                apply_pending(conf);
                Ok(())
            })?;
            for volid in dropped {
                if let Err(e) = free_volume(&n, &volid) {
                    tracing::warn!(vmid, "cannot free cloud-init volume {volid}: {}", e.message);
                }
            }
        }
        let section = n.load_vm(vmid)?.conf.main;
        crate::vm_cloudinit::prepare(&n, vmid, &section, &|l| tracing::info!(vmid, "{l}"))?;
        install_runtime(&n)?;
        let mut run = section.clone();
        // A saved state is loaded through `-incoming defer` (`statefile`),
        // not by the command line (upstream's `-loadstate`).
        run.props.remove("vmstate");
        if let Some(m) = &forcemachine {
            run.props
                .insert("machine".into(), force_machine(section.get("machine"), m));
        }
        let (mut generated, tcg) = command_line(&n, vmid, &run, true)?;
        if let Some(cpu) = forcecpu {
            if let Some(i) = generated.args.iter().position(|a| a == "-cpu") {
                generated.args[i + 1] = cpu;
            }
        }
        let host = n.qemu();
        host.remove_files(vmid);
        write_plugs(&n, vmid, &section)?;
        activate_volumes(&n, &section)?;
        let tpm = crate::vm_tpm::start(&n, vmid, &section)?;
        Ok((section, generated, tcg, tpm))
    })
    .await
    .map_err(|e| ApiError::fail(e.to_string()))?;
    let (section, generated, tcg, tpm) = match prepared {
        Ok(p) => p,
        Err(e) => {
            node.qemu().remove_files(vmid);
            return Err(e);
        }
    };
    for line in &tpm {
        log(line);
    }
    if let Some(reason) = &tcg {
        log(&format!(
            "KVM is not usable on this host ({reason}): VM {vmid} runs under TCG emulation, which is much slower"
        ));
    }
    for w in generated.warnings.iter().chain(&generated.notices) {
        log(w);
    }
    let mut args = oxve_qemu::host::for_stock_qemu(&generated.args);
    args.push("-S".into());
    if opts.statefile.is_some() {
        args.extend(["-incoming".into(), "defer".into()]);
    }
    let n = node.clone();
    let spawned = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(&args[0]);
        cmd.args(&args[1..]);
        n.lxc()
            .in_netns(|| Ok(QemuHost::run_daemonizing(&mut cmd)))
            .map_err(|e| ApiError::fail(format!("cannot enter the node's network namespace: {e}")))?
            .map_err(|e| ApiError::fail(format!("start failed: {e}")))
    })
    .await
    .map_err(|e| ApiError::fail(e.to_string()))?;
    let result = match spawned {
        Ok(()) => resume_after_start(node, vmid, opts.statefile.as_deref(), log).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        if let Some(pid) = node.vm_pid(vmid) {
            QemuHost::terminate(pid, Duration::from_secs(5)).await;
        }
        let n = node.clone();
        let _ = tokio::task::spawn_blocking(move || cleanup(&n, vmid, &section)).await;
        return Err(e.clone());
    }
    result
}

/// Lets a freshly started (`-S`) QEMU run, after loading `statefile`.
async fn resume_after_start(
    node: &Node,
    vmid: u32,
    statefile: Option<&Path>,
    log: &(dyn Fn(&str) + Sync),
) -> ApiResult<()> {
    let mut qmp = node
        .qemu()
        .qmp(vmid, QMP_TIMEOUT)
        .await
        .map_err(|e| ApiError::fail(format!("start failed: {e}")))?;
    if let Some(path) = statefile {
        log(&format!("loading the VM state from {}", path.display()));
        crate::vm_state::load(&mut qmp, path).await?;
    }
    qmp.cont()
        .await
        .map_err(|e| ApiError::fail(format!("start failed: {e}")))
}

/// The config's `machine` value with its type replaced by `machine`
/// (other machine options kept).
pub fn force_machine(current: Option<&str>, machine: &str) -> String {
    let mut parts = vec![format!("type={machine}")];
    for (i, part) in current.unwrap_or("").split(',').enumerate() {
        let is_type = part.starts_with("type=") || (i == 0 && !part.contains('='));
        if !part.is_empty() && !is_type {
            parts.push(part.to_string());
        }
    }
    parts.join(",")
}

/// What a stopped VM leaves: its volumes deactivated, its run files gone.
pub fn cleanup(node: &Node, vmid: u32, section: &VmSection) {
    crate::vm_tpm::stop(node, vmid);
    deactivate_volumes(node, vmid, section);
    node.qemu().remove_files(vmid);
}

/// Cleans up after VM `vmid` if its QEMU has gone away.
pub fn cleanup_if_stopped(node: &Node, vmid: u32) {
    if node.vm_pid(vmid).is_some() {
        return;
    }
    if let Ok(loaded) = node.load_vm(vmid) {
        cleanup(node, vmid, &loaded.conf.main);
    } else {
        node.qemu().remove_files(vmid);
    }
}

/// Stops VM `vmid` at once: QMP `quit`, then signals if QEMU does not
/// exit within `timeout`.
pub async fn stop(node: &std::sync::Arc<Node>, vmid: u32, timeout: Duration) -> ApiResult<()> {
    let Some(pid) = node.vm_pid(vmid) else {
        return Err(ApiError::fail(format!("VM {vmid} not running")));
    };
    if let Ok(mut qmp) = node.qemu().qmp(vmid, Duration::from_secs(3)).await {
        let _ = qmp.quit().await;
    }
    if !QemuHost::wait_exit(pid, timeout).await {
        QemuHost::terminate(pid, Duration::from_secs(5)).await;
    }
    let n = node.clone();
    tokio::task::spawn_blocking(move || cleanup_if_stopped(&n, vmid))
        .await
        .map_err(|e| ApiError::fail(e.to_string()))
}

/// Shuts VM `vmid` down by ACPI power button and waits up to `timeout`
/// for it to go; then stops it when `force_stop`, else fails (the VM keeps
/// running).
pub async fn shutdown(
    node: &std::sync::Arc<Node>,
    vmid: u32,
    timeout: Duration,
    force_stop: bool,
    log: &(dyn Fn(&str) + Sync),
) -> ApiResult<()> {
    let Some(pid) = node.vm_pid(vmid) else {
        return Err(ApiError::fail(format!("VM {vmid} not running")));
    };
    {
        let mut qmp = node
            .qemu()
            .qmp(vmid, QMP_TIMEOUT)
            .await
            .map_err(|e| ApiError::fail(e.to_string()))?;
        qmp.powerdown()
            .await
            .map_err(|e| ApiError::fail(e.to_string()))?;
    }
    // The event listener quits QEMU once the guest has powered off
    // (QEMU runs with -no-shutdown); should it not be connected, the
    // `shutdown` run state says the same.
    let until = std::time::Instant::now() + timeout;
    loop {
        if QemuHost::wait_exit(pid, Duration::from_millis(500)).await {
            break;
        }
        if let Ok(mut qmp) = node.qemu().qmp(vmid, Duration::from_secs(2)).await {
            if qmp.status().await.is_ok_and(|s| s.status == "shutdown") {
                let _ = qmp.quit().await;
            }
        }
        if std::time::Instant::now() >= until {
            if !force_stop {
                return Err(ApiError::fail(format!(
                    "VM {vmid} did not shut down within {} s",
                    timeout.as_secs()
                )));
            }
            log(&format!(
                "VM {vmid} did not shut down within {} s - stopping it",
                timeout.as_secs()
            ));
            return stop(node, vmid, Duration::from_secs(5)).await;
        }
    }
    let n = node.clone();
    tokio::task::spawn_blocking(move || cleanup_if_stopped(&n, vmid))
        .await
        .map_err(|e| ApiError::fail(e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A section of `key: value` pairs.
    pub(crate) fn section(pairs: &[(&str, &str)]) -> VmSection {
        VmSection {
            description: String::new(),
            props: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn boot_order_as_upstream() {
        let s = section(&[
            ("scsi1", "local:vm-1-disk-1.raw"),
            ("virtio0", "local:vm-1-disk-0.raw"),
            ("ide2", "local:iso/a.iso,media=cdrom"),
            ("net1", "virtio,bridge=vmbr0"),
        ]);
        assert_eq!(
            default_boot_order(&s).as_deref(),
            Some("order=scsi1;ide2;net1")
        );
        assert_eq!(default_boot_order(&section(&[("memory", "512")])), None);
    }

    #[test]
    fn uuids_are_version_4() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, random_uuid());
    }

    #[test]
    fn pending_applied_keeps_old_disks() {
        let mut conf = VmConfig {
            main: section(&[
                ("scsi0", "local:vm-1-disk-0.raw,size=1G"),
                ("memory", "512"),
            ]),
            ..Default::default()
        };
        conf.pending = section(&[
            ("scsi0", "local:vm-1-disk-1.raw,size=2G"),
            ("delete", "memory"),
            ("cores", "2"),
        ]);
        apply_pending(&mut conf);
        assert!(conf.pending.is_empty());
        assert_eq!(
            conf.main.get("scsi0"),
            Some("local:vm-1-disk-1.raw,size=2G")
        );
        assert_eq!(conf.main.get("unused0"), Some("local:vm-1-disk-0.raw"));
        assert_eq!(conf.main.get("memory"), None);
        assert_eq!(conf.main.get("cores"), Some("2"));
    }

    #[test]
    fn forced_machine_keeps_options() {
        assert_eq!(
            force_machine(None, "pc-i440fx-10.0+pve0"),
            "type=pc-i440fx-10.0+pve0"
        );
        assert_eq!(
            force_machine(Some("q35,viommu=intel"), "pc-q35-10.0+pve0"),
            "type=pc-q35-10.0+pve0,viommu=intel"
        );
        assert_eq!(
            force_machine(Some("viommu=virtio,type=q35"), "pc-q35-9.2+pve0"),
            "type=pc-q35-9.2+pve0,viommu=virtio"
        );
    }

    #[test]
    fn new_disk_specs() {
        assert_eq!(new_disk_spec("local:8"), Some(("local".into(), 8.0)));
        assert_eq!(new_disk_spec("local:0.5"), Some(("local".into(), 0.5)));
        assert_eq!(new_disk_spec("local:vm-1-disk-0.raw"), None);
        assert_eq!(new_disk_spec("local:0"), None);
    }
}
