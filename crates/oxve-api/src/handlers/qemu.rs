//! `/nodes/{node}/qemu`: virtual machines — list, create (new disks
//! allocated), config read and update (with `digest` and pending
//! changes), destroy.

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::guest::{check_allocate, config_text, discard_config, list_param};
use crate::node::Node;
use crate::reg;
use crate::vm::{self, check_unlocked};
use oxve_schema::vmconfig::{drive_file, is_drive_key, VmConfig, VmSection};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/qemu" => index);
    reg!(r, POST "/nodes/{node}/qemu" => create);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}" => super::schema_index);
    reg!(r, DELETE "/nodes/{node}/qemu/{vmid}" => destroy);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/config" => get_config);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/config" => set_config_async);
    reg!(r, PUT "/nodes/{node}/qemu/{vmid}/config" => set_config_sync);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/pending" => pending);
}

/// The `vmid` path parameter.
pub fn vmid(ctx: &Ctx) -> ApiResult<u32> {
    super::lxc::vmid(ctx)
}

/// Parameters of create that are not config options.
const CREATE_ONLY: &[&str] = &[
    "node",
    "vmid",
    "archive",
    "storage",
    "pool",
    "start",
    "force",
    "unique",
    "live-restore",
    "bwlimit",
    "import-working-storage",
    "ha-managed",
];

/// Parameters of a config update that are not config options.
const UPDATE_ONLY: &[&str] = &[
    "node",
    "vmid",
    "delete",
    "revert",
    "digest",
    "skiplock",
    "background_delay",
    "force",
];

/// One `GET /nodes/{node}/qemu` entry (also used by `/cluster/resources`).
pub fn list_entry(node: &Node, vmid: u32) -> ApiResult<Value> {
    let loaded = node.load_vm(vmid)?;
    let main = &loaded.conf.main;
    let num = |k: &str, d: u64| main.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let sockets = num("sockets", 1);
    let cores = num("cores", 1);
    let cpus = main
        .get("vcpus")
        .and_then(|v| v.parse().ok())
        .unwrap_or(sockets * cores);
    let maxdisk = boot_disk_size(main);
    let pid = node.vm_pid(vmid);
    let mut v = json!({
        "vmid": vmid,
        "name": main.get("name").map(str::to_string).unwrap_or_else(|| format!("VM {vmid}")),
        "status": if pid.is_some() { "running" } else { "stopped" },
        "cpus": cpus,
        "maxmem": num("memory", 2048) * 1024 * 1024,
        "maxdisk": maxdisk,
        "disk": 0, "mem": 0, "cpu": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
        "uptime": 0,
    });
    if let Some(lock) = main.get("lock") {
        v["lock"] = json!(lock);
    }
    if let Some(tags) = main.get("tags") {
        v["tags"] = json!(tags);
    }
    if main.get("template") == Some("1") {
        v["template"] = json!(1);
    }
    if let Some(pid) = pid {
        let s = crate::vm_stats::process(node, vmid, pid);
        v["pid"] = json!(pid);
        v["mem"] = json!(s.mem);
        v["uptime"] = json!(s.uptime);
        v["cpu"] = json!(s.cpu);
        v["netin"] = json!(s.netin);
        v["netout"] = json!(s.netout);
    }
    Ok(v)
}

/// Size of the boot disk (the first disk of the boot order, else the
/// first disk), from its `size=` option.
fn boot_disk_size(main: &VmSection) -> u64 {
    let order: Vec<String> = main
        .get("boot")
        .and_then(|b| b.split(',').find_map(|p| p.strip_prefix("order=")))
        .map(|o| o.split(';').map(str::to_string).collect())
        .unwrap_or_default();
    let disk = order
        .iter()
        .filter_map(|k| main.get(k))
        .chain(
            main.props
                .iter()
                .filter(|(k, _)| {
                    is_drive_key(k) && k.as_str() != "efidisk0" && k.as_str() != "tpmstate0"
                })
                .map(|(_, v)| v.as_str()),
        )
        .find(|v| !vm::is_cdrom(v));
    disk.and_then(|v| v.split(',').find_map(|p| p.strip_prefix("size=")))
        .and_then(oxve_schema::format::parse_size)
        .unwrap_or(0)
}

async fn index(ctx: Ctx) -> ApiResult<Value> {
    let node = ctx.node.clone();
    let ids: Vec<u32> = node
        .vm_ids()?
        .into_iter()
        .filter(|id| ctx.has_privs(&format!("/vms/{id}"), &["VM.Audit"], false))
        .collect();
    crate::blocking(move || {
        Ok(Value::Array(
            ids.into_iter()
                .filter_map(|id| list_entry(&node, id).ok())
                .collect(),
        ))
    })
    .await
}

/// Which privilege a config key needs (upstream's grouping). `None`:
/// upstream reserves it to root@pam; oxve grants it with `Sys.Modify` on
/// `/` (see docs/DEVIATIONS.md).
fn key_privilege(key: &str) -> Option<&'static [&'static str]> {
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let indexed = base.len() < key.len();
    Some(match key {
        "cores" | "cpu" | "cpulimit" | "cpuunits" | "numa" | "smp" | "sockets" | "vcpus" => {
            &["VM.Config.CPU"]
        }
        "memory" | "balloon" | "shares" | "allow-ksm" => &["VM.Config.Memory"],
        "acpi" | "hotplug" | "kvm" | "machine" | "scsihw" | "smbios1" | "tablet" | "vga"
        | "watchdog" | "audio0" | "rng0" => &["VM.Config.HWType"],
        "agent" | "autostart" | "bios" | "description" | "keyboard" | "localtime"
        | "migrate_downtime" | "migrate_speed" | "name" | "onboot" | "ostype" | "protection"
        | "reboot" | "startdate" | "startup" | "tdf" | "template" | "tags" => {
            &["VM.Config.Options"]
        }
        "freeze" => &["VM.PowerMgmt"],
        "boot" | "bootdisk" | "vmstatestorage" | "cdrom" => &["VM.Config.Disk"],
        "cicustom" | "cipassword" | "citype" | "ciuser" | "ciupgrade" | "nameserver"
        | "searchdomain" | "sshkeys" => &["VM.Config.Cloudinit", "VM.Config.Network"],
        _ if is_drive_key(key) || (indexed && base == "unused") => &["VM.Config.Disk"],
        _ if indexed && base == "numa" => &["VM.Config.CPU"],
        _ if indexed && base == "net" => &["VM.Config.Network"],
        _ if indexed && base == "ipconfig" => &["VM.Config.Cloudinit", "VM.Config.Network"],
        _ if indexed && base == "serial" => &["VM.Config.HWType"],
        _ => return None,
    })
}

/// Checks the caller may set or delete `keys` (with the new `values`
/// where given).
fn check_key_perms(ctx: &Ctx, vmid: u32, keys: &[(String, Option<String>)]) -> ApiResult<()> {
    if ctx.caller.is_root() {
        return Ok(());
    }
    let path = format!("/vms/{vmid}");
    for (key, value) in keys {
        match key_privilege(key) {
            Some(privs) => {
                let any = privs.len() > 1;
                ctx.require_privs(&path, privs, any)?;
            }
            None => {
                ctx.require_privs(&path, &["VM.Config.HWType"], false)?;
                ctx.require_privs("/", &["Sys.Modify"], false)?;
            }
        }
        if key == "startup" {
            ctx.require_privs("/", &["Sys.Modify"], false)?;
        }
        // A serial port on a host device (not `socket`) is host access.
        if key.starts_with("serial") && value.as_deref().is_some_and(|v| v != "socket") {
            ctx.require_privs("/", &["Sys.Modify"], false)?;
        }
    }
    Ok(())
}

/// Checks a drive's volume: a new disk needs `Datastore.AllocateSpace`
/// on its storage, an existing volume (an ISO) `Datastore.Audit` or
/// `AllocateSpace`; host paths are for `Sys.Modify` holders.
fn check_drive(ctx: &Ctx, key: &str, value: &str) -> ApiResult<()> {
    let Some(file) = drive_file(value) else {
        return Err(ApiError::param(key, "missing volume"));
    };
    if crate::vm_import::import_from(value).is_some() {
        return crate::vm_import::check_drive(ctx, key, value);
    }
    if file == "none" || file == "cdrom" {
        return Ok(());
    }
    if file.starts_with('/') {
        if !ctx.caller.is_root() {
            ctx.require_privs("/", &["Sys.Modify"], false)?;
        }
        return Ok(());
    }
    if let Some(storage) = crate::vm_cloudinit::new_drive_storage(file) {
        ctx.node.storage_def(storage)?;
        return ctx.require_privs(
            &format!("/storage/{storage}"),
            &["Datastore.AllocateSpace"],
            false,
        );
    }
    if let Some((storage, _)) = vm::new_disk_spec(file) {
        ctx.node.storage_def(&storage)?;
        return ctx.require_privs(
            &format!("/storage/{storage}"),
            &["Datastore.AllocateSpace"],
            false,
        );
    }
    let vol =
        oxve_storage::VolumeId::parse(file).map_err(|e| ApiError::param(key, e.to_string()))?;
    ctx.require_privs(
        &format!("/storage/{}", vol.storage),
        &["Datastore.AllocateSpace", "Datastore.Audit"],
        true,
    )?;
    let plugin = ctx.node.open_storage(&vol.storage)?;
    let path = plugin
        .path(&vol.volname)
        .map_err(|e| ApiError::param(key, e.to_string()))?;
    if vm::is_cdrom(value) && !path.exists() {
        return Err(ApiError::param(
            key,
            format!("volume '{file}' does not exist"),
        ));
    }
    Ok(())
}

/// Puts a MAC address on a NIC without one, upstream's `BC:24:11` prefix:
/// `virtio,bridge=vmbr0` → `virtio=BC:24:11:..,bridge=vmbr0`.
pub fn fill_mac(value: &str) -> String {
    let mut parts: Vec<String> = value.split(',').map(str::to_string).collect();
    let models = oxve_qemu::cmdline::NIC_MODELS;
    let mac_at = parts.iter().position(|p| p.starts_with("macaddr="));
    let model_at = parts.iter().position(|p| {
        let name = p.split('=').next().unwrap_or("");
        models.contains(&name) || p.starts_with("model=")
    });
    let Some(model_at) = model_at else {
        return value.to_string();
    };
    let model_part = parts[model_at].clone();
    let (name, mac) = match model_part.split_once('=') {
        Some(("model", m)) => (m.to_string(), None),
        Some((n, m)) => (n.to_string(), Some(m.to_string())),
        None => (model_part.clone(), None),
    };
    let mac = mac
        .or_else(|| mac_at.map(|i| parts[i]["macaddr=".len()..].to_string()))
        .unwrap_or_else(|| {
            let r: [u8; 3] = rand::random();
            format!("BC:24:11:{:02X}:{:02X}:{:02X}", r[0], r[1], r[2])
        });
    parts[model_at] = format!("{name}={mac}");
    if let Some(i) = mac_at {
        parts.remove(i);
    }
    parts.join(",")
}

async fn create(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let pool = ctx.opt_str("pool").map(str::to_string);
    check_allocate(&ctx, vmid, pool.as_deref())?;
    if ctx.opt_str("archive").is_some() {
        return Err(ApiError::not_implemented_msg(
            "restoring a VM from a backup comes with the backup support (not built yet)",
        ));
    }
    if ctx.flag("force") {
        return Err(ApiError::not_implemented_msg(
            "overwriting an existing VM (force) is not built yet",
        ));
    }
    let mut section = VmSection::default();
    for (key, value) in &ctx.params {
        if CREATE_ONLY.contains(&key.as_str()) {
            continue;
        }
        let text = config_text(value);
        match key.as_str() {
            "description" => section.description = text,
            k if k.starts_with("net") => {
                section.props.insert(key.clone(), fill_mac(&text));
            }
            _ => {
                section.props.insert(key.clone(), text);
            }
        }
    }
    let keys: Vec<(String, Option<String>)> = section
        .props
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    check_key_perms(&ctx, vmid, &keys)?;
    for (key, value) in section.props.iter().filter(|(k, _)| is_drive_key(k)) {
        check_drive(&ctx, key, value)?;
    }
    check_bridge_perms(&ctx, vmid, &section)?;
    crate::vm_cloudinit::check_section(&ctx.node, &mut section)?;
    if let Some(p) = &pool {
        if !ctx.node.users()?.pools.contains_key(p) {
            return Err(ApiError::param(
                "pool",
                format!("pool '{p}' does not exist"),
            ));
        }
    }
    let start_after = ctx.flag("start");
    let guard = ctx.node.guest_locks.lock(vmid).await;
    let key = vm::claim(&ctx.node, vmid, &section)?;
    let node = ctx.node.clone();
    let upid = ctx.node.tasks.spawn(
        "qmcreate",
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = guard;
            let log = task.clone();
            let n = node.clone();
            let created = tokio::task::spawn_blocking(move || {
                create_blocking(&n, vmid, section, &|l| log.log(l))
            })
            .await
            .map_err(|e| e.to_string())?;
            if let Err(e) = created {
                discard_config(&node, &key);
                return Err(e.message);
            }
            if let Some(p) = &pool {
                super::lxc::add_to_pool(&node, p, vmid).map_err(|e| e.message)?;
            }
            if start_after {
                let log = task.clone();
                vm::start(&node, vmid, &move |l: &str| log.log(l))
                    .await
                    .map_err(|e| e.message)?;
            }
            Ok(())
        },
    )?;
    Ok(json!(upid.to_string()))
}

/// NICs on a bridge need `SDN.Use` on the bridge's zone path, as
/// upstream (or `VM.Allocate` on the VM, which implies it here).
fn check_bridge_perms(ctx: &Ctx, vmid: u32, section: &VmSection) -> ApiResult<()> {
    for (key, value) in &section.props {
        if !key.starts_with("net") {
            continue;
        }
        if let Some(bridge) = value.split(',').find_map(|p| p.strip_prefix("bridge=")) {
            let path = format!("/sdn/zones/localnetwork/{bridge}");
            if !ctx.has_privs(&path, &["SDN.Use"], false)
                && !ctx.has_privs(&format!("/vms/{vmid}"), &["VM.Allocate"], false)
            {
                return Err(ApiError::forbidden(format!("{path}, SDN.Use")));
            }
        }
    }
    Ok(())
}

/// The work of a create task: new disks allocated, upstream's defaults
/// added (`meta`, `smbios1`, `vmgenid`, `boot`), the config written
/// unlocked. Every volume it allocated is freed again on failure; the
/// caller removes the claimed config.
fn create_blocking(
    node: &Node,
    vmid: u32,
    mut section: VmSection,
    log: &dyn Fn(&str),
) -> ApiResult<()> {
    let mut allocated: Vec<String> = Vec::new();
    let result: ApiResult<()> = (|| {
        let drives: Vec<(String, String)> = section
            .props
            .iter()
            .filter(|(k, _)| is_drive_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, value) in drives {
            if let Some((volid, new)) = vm::alloc_disk(node, vmid, &key, &value, log)? {
                log(&format!("{key}: allocated volume '{volid}'"));
                allocated.push(volid);
                section.props.insert(key, new);
            }
        }
        let probe = node.qemu_probe()?;
        let v = probe.version;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        section.props.insert(
            "meta".into(),
            format!(
                "creation-qemu={}.{}.{},ctime={now}",
                v.major, v.minor, v.micro
            ),
        );
        if !section.props.contains_key("boot") {
            if let Some(order) = vm::default_boot_order(&section) {
                section.props.insert("boot".into(), order);
            }
        }
        section
            .props
            .entry("smbios1".into())
            .or_insert_with(|| format!("uuid={}", vm::random_uuid()));
        if section.get("vmgenid").is_none_or(|g| g == "1") {
            section.props.insert("vmgenid".into(), vm::random_uuid());
        }
        node.update_vm(vmid, |conf| {
            conf.main = section.clone();
            Ok(())
        })?;
        log(&format!("VM {vmid} created"));
        Ok(())
    })();
    if let Err(e) = &result {
        log(&format!("create failed: {}", e.message));
        crate::guest::free_allocated(node, &allocated, log);
    }
    result
}

async fn get_config(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let loaded = ctx.node.load_vm(vmid)?;
    let section = match ctx.opt_str("snapshot") {
        Some(snap) => loaded
            .conf
            .snapshots
            .get(snap)
            .cloned()
            .ok_or_else(|| ApiError::fail(format!("snapshot '{snap}' does not exist")))?,
        None if ctx.flag("current") => loaded.conf.main.clone(),
        None => vm::with_pending(&loaded.conf),
    };
    let mut out = section.to_json();
    out.remove("snapstate");
    // The cloud-init password stays hidden, as upstream.
    if out.contains_key("cipassword") {
        out.insert("cipassword".into(), json!("**********"));
    }
    out.insert("digest".into(), json!(loaded.digest));
    Ok(Value::Object(out))
}

async fn pending(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let conf = ctx.node.load_vm(vmid)?.conf;
    Ok(crate::guest::pending_list(
        &conf.main.to_json(),
        &conf.pending.to_json(),
        &conf.pending_deletes(),
        &["cipassword"],
    ))
}

/// Options a running VM takes at once (upstream's "fast plug" options);
/// the rest wait in `[PENDING]` for the next start.
const LIVE_KEYS: &[&str] = &[
    "lock",
    "name",
    "onboot",
    "shares",
    "startup",
    "description",
    "protection",
    "vmstatestorage",
    "hookscript",
    "tags",
];

/// A parsed config update.
struct Update {
    changes: Vec<(String, String)>,
    deletes: Vec<String>,
    reverts: Vec<String>,
    force: bool,
    digest: Option<String>,
    skiplock: bool,
}

fn parse_update(ctx: &Ctx, vmid: u32) -> ApiResult<Update> {
    let mut changes: Vec<(String, String)> = Vec::new();
    for (key, value) in &ctx.params {
        if UPDATE_ONLY.contains(&key.as_str()) {
            continue;
        }
        let text = config_text(value);
        let text = if key.starts_with("net") {
            fill_mac(&text)
        } else {
            text
        };
        changes.push((key.clone(), text));
    }
    let deletes = list_param(ctx, "delete");
    let reverts = list_param(ctx, "revert");
    if changes.is_empty() && deletes.is_empty() && reverts.is_empty() {
        return Err(ApiError::bad_request("no options specified"));
    }
    for d in &deletes {
        if changes.iter().any(|(k, _)| k == d) {
            return Err(ApiError::param(
                d,
                format!("unable to delete and set option '{d}' at the same time"),
            ));
        }
    }
    for r in &reverts {
        if changes.iter().any(|(k, _)| k == r) || deletes.contains(r) {
            return Err(ApiError::param(
                r,
                format!("unable to revert and set or delete option '{r}' at the same time"),
            ));
        }
    }
    let skiplock = ctx.flag("skiplock");
    if skiplock && !ctx.caller.is_root() {
        return Err(ApiError::forbidden("only root can use skiplock"));
    }
    let keys: Vec<(String, Option<String>)> = changes
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .chain(deletes.iter().chain(&reverts).map(|k| (k.clone(), None)))
        .collect();
    check_key_perms(ctx, vmid, &keys)?;
    for (key, value) in changes.iter().filter(|(k, _)| is_drive_key(k)) {
        check_drive(ctx, key, value)?;
    }
    let current = ctx.node.load_vm(vmid).ok();
    let ostype = current.as_ref().and_then(|l| l.conf.main.get("ostype"));
    crate::vm_cloudinit::check_changes(&ctx.node, ostype, &mut changes)?;
    let mut sec = VmSection::default();
    sec.props.extend(changes.iter().cloned());
    check_bridge_perms(ctx, vmid, &sec)?;
    Ok(Update {
        changes,
        deletes,
        reverts,
        force: ctx.flag("force"),
        digest: ctx.opt_str("digest").map(str::to_string),
        skiplock,
    })
}

/// Applies an update (blocking): new disks allocated, values set at once
/// when stopped (or for live keys), into `[PENDING]` when running.
/// Volumes of deleted `unused<n>` entries (and, with `force`, of deleted
/// disks) are freed after the config no longer names them.
fn apply_update(node: &Node, vmid: u32, up: Update, log: &dyn Fn(&str)) -> ApiResult<()> {
    let loaded = node.load_vm(vmid)?;
    if let Some(d) = &up.digest {
        if *d != loaded.digest {
            return Err(ApiError::fail(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
    }
    let lock_only = up.reverts.is_empty()
        && up.changes.iter().all(|(k, _)| k == "lock")
        && up.deletes.iter().all(|k| k == "lock");
    if !up.skiplock && !lock_only {
        check_unlocked(&loaded.conf)?;
    }
    let running = node.vm_pid(vmid).is_some();
    let mut changes = up.changes.clone();
    let mut allocated = Vec::new();
    let alloc: ApiResult<()> = (|| {
        for (key, value) in changes.iter_mut().filter(|(k, _)| is_drive_key(k)) {
            if let Some((volid, new)) = vm::alloc_disk(node, vmid, key, value, log)? {
                log(&format!("{key}: allocated volume '{volid}'"));
                allocated.push(volid);
                *value = new;
            }
        }
        Ok(())
    })();
    let mut to_free: Vec<String> = Vec::new();
    let result = alloc.and_then(|()| {
        node.update_vm(vmid, |conf| {
            to_free.clear();
            apply_changes(
                conf,
                &changes,
                &up.deletes,
                &up.reverts,
                running,
                up.force,
                &mut to_free,
            )?;
            oxve_schema::vmconfig::validate_section(&vm::with_pending(conf))
                .map_err(|errors| ApiError::params(errors.0))?;
            Ok(())
        })
    });
    if let Err(e) = result {
        for volid in &allocated {
            let _ = vm::free_volume(node, volid);
        }
        return Err(e);
    }
    for volid in to_free {
        match vm::free_volume(node, &volid) {
            Ok(()) => log(&format!("removed volume '{volid}'")),
            Err(e) => log(&format!("could not remove volume '{volid}': {}", e.message)),
        }
    }
    Ok(())
}

/// The config edit of an update. Values of running VMs go to `[PENDING]`
/// except live keys; a replaced or removed disk becomes `unused<n>`; a
/// removed `unused<n>` (or a disk removed with `force`) is listed in
/// `to_free`.
fn apply_changes(
    conf: &mut VmConfig,
    changes: &[(String, String)],
    deletes: &[String],
    reverts: &[String],
    running: bool,
    force: bool,
    to_free: &mut Vec<String>,
) -> ApiResult<()> {
    for key in reverts {
        conf.pending.props.remove(key);
        conf.remove_pending_delete(key);
    }
    for (key, value) in changes {
        // An `unused<n>` entry does not touch the running VM (as deleting
        // one does not): `qm disk import` adds one at once, as upstream's.
        let live = LIVE_KEYS.contains(&key.as_str())
            || key.starts_with("unused")
            || crate::vm_cloudinit::is_option(key);
        if running && !live {
            conf.pending.props.insert(key.clone(), value.clone());
            conf.remove_pending_delete(key);
            continue;
        }
        if key == "description" {
            conf.main.description = value.clone();
            continue;
        }
        let old = conf.main.props.get(key).cloned();
        if running {
            crate::vm_cloudinit::record_change(conf, key, old.as_deref(), Some(value));
        }
        if let Some(old) = old {
            if old != *value {
                vm::keep_unused(conf, key, &old);
                to_free.extend(crate::vm_cloudinit::replaced_volume(&old, Some(value)));
            }
        }
        conf.main.props.insert(key.clone(), value.clone());
        conf.pending.props.remove(key);
    }
    for key in deletes {
        let live = LIVE_KEYS.contains(&key.as_str()) || crate::vm_cloudinit::is_option(key);
        if running && !live && !key.starts_with("unused") {
            conf.pending.props.remove(key);
            conf.add_pending_delete(key, force);
            continue;
        }
        if key == "description" {
            conf.main.description.clear();
            continue;
        }
        conf.pending.props.remove(key);
        if let Some(old) = conf.main.props.remove(key) {
            if running {
                crate::vm_cloudinit::record_change(conf, key, Some(&old), None);
            }
            if key.starts_with("unused") {
                to_free.push(old);
            } else if force && is_drive_key(key) && !vm::is_cdrom(&old) {
                if let Some(f) =
                    drive_file(&old).filter(|f| oxve_storage::VolumeId::parse(f).is_ok())
                {
                    to_free.push(f.to_string());
                }
            } else if let Some(volid) = crate::vm_cloudinit::replaced_volume(&old, None) {
                to_free.push(volid);
            } else {
                vm::keep_unused(conf, key, &old);
            }
        }
    }
    // A volume still named by a snapshot is not freed.
    to_free.retain(|v| {
        !conf
            .snapshots
            .values()
            .any(|s| s.props.values().any(|x| drive_file(x) == Some(v.as_str())))
    });
    Ok(())
}

pub async fn set_config_sync(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let up = parse_update(&ctx, vmid)?;
    let node = ctx.node.clone();
    let _guard = ctx.node.guest_locks.lock(vmid).await;
    crate::blocking(move || {
        apply_update(&node, vmid, up, &|l| tracing::info!(vmid, "{l}"))?;
        Ok(Value::Null)
    })
    .await?;
    crate::vm_hotplug::apply_pending(&ctx.node, vmid, &|l| tracing::info!(vmid, "{l}")).await?;
    Ok(Value::Null)
}

async fn set_config_async(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let up = parse_update(&ctx, vmid)?;
    ctx.node.load_vm(vmid)?;
    let node: Arc<Node> = ctx.node.clone();
    let upid = ctx.node.tasks.spawn(
        "qmconfig",
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = node.guest_locks.lock(vmid).await;
            let log = task.clone();
            let n = node.clone();
            tokio::task::spawn_blocking(move || apply_update(&n, vmid, up, &|l| log.log(l)))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.message)?;
            crate::vm_hotplug::apply_pending(&node, vmid, &|l| task.log(l))
                .await
                .map_err(|e| e.message)
        },
    )?;
    Ok(json!(upid.to_string()))
}

/// Volumes a VM owns: its disks (not CD-ROMs) and `unused<n>` entries,
/// also those only named by snapshots or pending changes.
pub fn owned_volumes(conf: &VmConfig) -> Vec<String> {
    let mut out = Vec::new();
    for section in std::iter::once(&conf.main)
        .chain(conf.snapshots.values())
        .chain(std::iter::once(&conf.pending))
    {
        for (key, value) in &section.props {
            let cloudinit = crate::vm_cloudinit::is_cloudinit_drive(value);
            let volume = if is_drive_key(key) && (!vm::is_cdrom(value) || cloudinit) {
                drive_file(value)
                    .filter(|f| oxve_storage::VolumeId::parse(f).is_ok())
                    .map(str::to_string)
            } else if key.starts_with("unused") || key == "vmstate" {
                Some(value.clone())
            } else {
                None
            };
            if let Some(v) = volume {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}

async fn destroy(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let purge = ctx.flag("purge");
    let skiplock = ctx.flag("skiplock");
    if skiplock && !ctx.caller.is_root() {
        return Err(ApiError::forbidden("only root can use skiplock"));
    }
    let loaded = ctx.node.load_vm(vmid)?;
    if !skiplock {
        check_unlocked(&loaded.conf)?;
    }
    if loaded.conf.main.get("protection") == Some("1") {
        return Err(ApiError::fail(format!(
            "can't remove VM {vmid} - protection mode enabled"
        )));
    }
    if ctx.node.vm_pid(vmid).is_some() {
        return Err(ApiError::fail(format!(
            "VM {vmid} is running - destroy failed"
        )));
    }
    let node = ctx.node.clone();
    let guard = ctx.node.guest_locks.lock(vmid).await;
    let upid = ctx.node.tasks.spawn(
        "qmdestroy",
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = guard;
            let log = task.clone();
            tokio::task::spawn_blocking(move || {
                if node.vm_pid(vmid).is_some() {
                    return Err(ApiError::fail(format!(
                        "VM {vmid} is running - destroy failed"
                    )));
                }
                node.update_vm(vmid, |conf| {
                    conf.main.props.insert("lock".into(), "destroyed".into());
                    Ok(())
                })?;
                let conf = node.load_vm(vmid)?.conf;
                for volid in owned_volumes(&conf) {
                    match vm::free_volume(&node, &volid) {
                        Ok(()) => log.log(format!("removed volume '{volid}'")),
                        Err(e) => {
                            log.warn(format!("could not remove volume '{volid}': {}", e.message))
                        }
                    }
                }
                discard_config(&node, &vm::config_key(&node.name, vmid));
                crate::guest::forget(&node, vmid, purge)?;
                Ok::<_, ApiError>(())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.message)
        },
    )?;
    Ok(json!(upid.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_filled_as_upstream() {
        let v = fill_mac("virtio,bridge=vmbr0");
        assert!(v.starts_with("virtio=BC:24:11:"), "{v}");
        assert!(v.ends_with(",bridge=vmbr0"));
        assert_eq!(
            fill_mac("e1000=AA:BB:CC:DD:EE:FF,bridge=b"),
            "e1000=AA:BB:CC:DD:EE:FF,bridge=b"
        );
        assert_eq!(
            fill_mac("model=virtio,macaddr=AA:BB:CC:DD:EE:FF,bridge=b"),
            "virtio=AA:BB:CC:DD:EE:FF,bridge=b"
        );
    }

    #[test]
    fn privileges_by_key() {
        assert_eq!(key_privilege("memory"), Some(&["VM.Config.Memory"][..]));
        assert_eq!(key_privilege("scsi3"), Some(&["VM.Config.Disk"][..]));
        assert_eq!(key_privilege("net0"), Some(&["VM.Config.Network"][..]));
        assert_eq!(key_privilege("args"), None);
        assert_eq!(key_privilege("hookscript"), None);
        assert_eq!(key_privilege("numa1"), Some(&["VM.Config.CPU"][..]));
    }

    #[test]
    fn deleting_disks() {
        let mut conf = VmConfig::default();
        conf.main
            .props
            .insert("scsi0".into(), "local:vm-1-disk-0.raw,size=1G".into());
        conf.main
            .props
            .insert("unused0".into(), "local:vm-1-disk-1.raw".into());
        let mut free = Vec::new();
        apply_changes(
            &mut conf,
            &[],
            &["scsi0".into(), "unused0".into()],
            &[],
            false,
            false,
            &mut free,
        )
        .unwrap();
        assert_eq!(free, vec!["local:vm-1-disk-1.raw".to_string()]);
        assert_eq!(conf.main.get("unused1"), Some("local:vm-1-disk-0.raw"));
        assert_eq!(conf.main.get("unused0"), None);
        assert_eq!(conf.main.get("scsi0"), None);
    }
}
