//! `/nodes/{node}/lxc`: containers — list, create from a template, config
//! read and update (with `digest` and pending changes), destroy.

use super::{Ctx, Registry};
use crate::ct::{self, check_unlocked, config_key};
use crate::ct_hotplug::pending_deletes;
use crate::error::{ApiError, ApiResult};
use crate::guest::{check_allocate, config_text, list_param};
use crate::reg;
use oxve_lxc::host::RunState;
use oxve_lxc::model::MountKind;
use oxve_lxc::Ct;
use oxve_schema::ctconfig::{CtConfig, CtSection};
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/lxc" => index);
    reg!(r, POST "/nodes/{node}/lxc" => create);
    reg!(r, GET "/nodes/{node}/lxc/{vmid}" => super::schema_index);
    reg!(r, DELETE "/nodes/{node}/lxc/{vmid}" => destroy);
    reg!(r, GET "/nodes/{node}/lxc/{vmid}/config" => get_config);
    reg!(r, PUT "/nodes/{node}/lxc/{vmid}/config" => set_config);
    reg!(r, GET "/nodes/{node}/lxc/{vmid}/pending" => pending);
}

/// The `vmid` path parameter.
pub fn vmid(ctx: &Ctx) -> ApiResult<u32> {
    ctx.opt_int("vmid")
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| ApiError::param("vmid", "property is missing and it is not optional"))
}

/// Parameters of create that are not config options.
const CREATE_ONLY: &[&str] = &[
    "node",
    "vmid",
    "ostemplate",
    "password",
    "ssh-public-keys",
    "storage",
    "pool",
    "start",
    "force",
    "unique",
    "restore",
    "ignore-unpack-errors",
    "bwlimit",
    "ha-managed",
];

/// One `GET /nodes/{node}/lxc` entry (also used by `/cluster/resources`).
pub fn list_entry(node: &crate::node::Node, vmid: u32) -> ApiResult<Value> {
    let loaded = node.load_ct(vmid)?;
    let main = &loaded.conf.main;
    let ct = Ct::from_section(vmid, main).ok();
    let state = node.lxc().state(vmid).unwrap_or(RunState::Stopped);
    let mut v = json!({
        "vmid": vmid,
        "type": "lxc",
        "status": state.as_status(),
        "name": main.get("hostname").map(str::to_string).unwrap_or_else(|| format!("CT{vmid}")),
        "maxmem": ct.as_ref().map(|c| c.memory * 1024 * 1024).unwrap_or(0),
        "maxswap": ct.as_ref().map(|c| c.swap * 1024 * 1024).unwrap_or(0),
        "cpus": ct.as_ref().and_then(|c| c.cores).unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)),
        "maxdisk": ct.as_ref().and_then(|c| c.rootfs.as_ref()).and_then(|r| r.size.as_deref()).and_then(oxve_schema::format::parse_size).unwrap_or(0),
        "disk": 0, "mem": 0, "swap": 0, "cpu": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0, "uptime": 0,
    });
    if let Some(lock) = main.get("lock") {
        v["lock"] = json!(lock);
    }
    if let Some(tags) = main.get("tags") {
        v["tags"] = json!(tags);
    }
    if ct.as_ref().is_some_and(|c| c.template) {
        v["template"] = json!(1);
    }
    if let Some(pid) = state.pid() {
        let s = oxve_lxc::stats::read(pid, &node.lxc().rootfs_dir(vmid));
        v["pid"] = json!(pid);
        v["mem"] = json!(s.mem);
        v["swap"] = json!(s.swap);
        v["netin"] = json!(s.netin);
        v["netout"] = json!(s.netout);
        v["disk"] = json!(s.disk);
        if s.maxdisk > 0 {
            v["maxdisk"] = json!(s.maxdisk);
        }
        v["uptime"] = json!(s.uptime);
        v["cputime"] = json!(s.cpu_ns as f64 / 1e9);
    }
    Ok(v)
}

async fn index(ctx: Ctx) -> ApiResult<Value> {
    let node = ctx.node.clone();
    let ids: Vec<u32> = node
        .ct_ids()?
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

/// Which privilege a config key needs (upstream's grouping); `None`:
/// only root@pam may set it.
fn key_privilege(key: &str) -> Option<&'static str> {
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    Some(match base {
        "rootfs" | "mp" | "unused" => "VM.Config.Disk",
        "memory" | "swap" => "VM.Config.Memory",
        "cores" | "cpulimit" | "cpuunits" => "VM.Config.CPU",
        "net" | "nameserver" | "searchdomain" | "hostname" => "VM.Config.Network",
        "lxc" | "dev" | "unprivileged" | "lock" => return None,
        _ => "VM.Config.Options",
    })
}

fn check_key_perms(ctx: &Ctx, vmid: u32, keys: &[String]) -> ApiResult<()> {
    let path = format!("/vms/{vmid}");
    for key in keys {
        match key_privilege(key) {
            Some(p) => ctx.require_privs(&path, &[p], false)?,
            None if ctx.caller.is_root() => {}
            None => {
                return Err(ApiError::forbidden(format!(
                    "only root can set '{key}' configuration"
                )))
            }
        }
        if key == "features" && !ctx.caller.is_root() {
            // Upstream lets others set only nesting/keyctl/fuse... with
            // Sys.Modify-free rules; oxve keeps it to root, like `lxc.*`.
            ctx.require_privs("/", &["Sys.Modify"], false)?;
        }
    }
    Ok(())
}

/// Checks a new value of a mount point: bind and device mounts are for
/// root@pam only (upstream), new volumes need space on their storage.
fn check_mount_perms(ctx: &Ctx, key: &str, value: &str) -> ApiResult<()> {
    let mp = oxve_lxc::model::parse_mount_point(key, value)
        .map_err(|e| ApiError::param(key, e.to_string()))?;
    match mp.kind() {
        MountKind::Bind | MountKind::Device if !ctx.caller.is_root() => Err(ApiError::forbidden(
            format!("{key}: only root can use bind and device mounts"),
        )),
        MountKind::Volume => {
            let storage = mp.volume.split(':').next().unwrap_or_default();
            ctx.require_privs(
                &format!("/storage/{storage}"),
                &["Datastore.AllocateSpace"],
                false,
            )
        }
        _ => Ok(()),
    }
}

/// Adds a random MAC (upstream's `BC:24:11` prefix) to NICs without one.
pub fn fill_hwaddr(value: &str) -> String {
    if value.split(',').any(|p| p.starts_with("hwaddr=")) {
        return value.to_string();
    }
    let r: [u8; 3] = rand::random();
    format!(
        "{value},hwaddr=BC:24:11:{:02X}:{:02X}:{:02X}",
        r[0], r[1], r[2]
    )
}

async fn create(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let pool = ctx.opt_str("pool").map(str::to_string);
    let vm_path = format!("/vms/{vmid}");
    check_allocate(&ctx, vmid, pool.as_deref())?;
    if ctx.flag("restore") {
        return Err(ApiError::not_implemented_msg(
            "restoring a container from a backup comes with the backup support (not built yet)",
        ));
    }
    if ctx.flag("force") {
        return Err(ApiError::not_implemented_msg(
            "overwriting an existing container (force) is not built yet",
        ));
    }
    let ostemplate = ctx.str("ostemplate")?.to_string();
    let storage = ctx.opt_str("storage").unwrap_or("local").to_string();

    // The config as given, plus upstream's defaults for a new CT.
    let mut section = CtSection::default();
    for (key, value) in &ctx.params {
        if CREATE_ONLY.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "description" => section.description = config_text(value),
            "env" => section.env = config_text(value).split('\0').map(str::to_string).collect(),
            k if k.starts_with("net") => {
                section
                    .props
                    .insert(key.clone(), fill_hwaddr(&config_text(value)));
            }
            _ => {
                section.props.insert(key.clone(), config_text(value));
            }
        }
    }
    section
        .props
        .entry("rootfs".into())
        .or_insert_with(|| format!("{storage}:4"));
    // Unprivileged is the default for new CTs here, as in upstream's GUI and
    // the Ansible/Terraform modules (the API schema's default is 0).
    section
        .props
        .entry("unprivileged".into())
        .or_insert_with(|| "1".into());
    let keys: Vec<String> = section.props.keys().cloned().collect();
    check_key_perms(
        &ctx,
        vmid,
        &keys
            .iter()
            .filter(|k| *k != "unprivileged")
            .cloned()
            .collect::<Vec<_>>(),
    )?;
    for key in keys
        .iter()
        .filter(|k| *k == "rootfs" || k.starts_with("mp"))
    {
        check_mount_perms(&ctx, key, &section.props[key])?;
    }
    let ct = Ct::from_section(vmid, &section).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let template = resolve_template(&ctx, &ostemplate)?;
    for net in &ct.nets {
        if let Some(bridge) = &net.bridge {
            let path = format!("/sdn/zones/localnetwork/{bridge}");
            if !ctx.has_privs(&path, &["SDN.Use"], false)
                && !ctx.has_privs(&vm_path, &["VM.Allocate"], false)
            {
                return Err(ApiError::forbidden(format!("{path}, SDN.Use")));
            }
        }
    }
    if let Some(p) = &pool {
        let users = ctx.node.users()?;
        if !users.pools.contains_key(p) {
            return Err(ApiError::param(
                "pool",
                format!("pool '{p}' does not exist"),
            ));
        }
    }
    let password = ctx
        .opt_str("password")
        .map(oxve_access::password::hash_password);
    let ssh_keys = ctx.opt_str("ssh-public-keys").map(str::to_string);
    let start_after = ctx.flag("start");

    // Claim the id: the config appears atomically with `lock: create`.
    let guard = ctx.node.guest_locks.lock(vmid).await;
    let key = ct::claim(&ctx.node, vmid, &section)?;
    let node = ctx.node.clone();
    let upid = ctx.node.tasks.spawn(
        "vzcreate",
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = guard;
            let log = task.clone();
            let n = node.clone();
            let result = tokio::task::spawn_blocking(move || {
                create_blocking(
                    &n,
                    vmid,
                    section,
                    &template,
                    password.as_deref(),
                    ssh_keys.as_deref(),
                    &|l| log.log(l),
                )
            })
            .await
            .map_err(|e| e.to_string())?;
            if let Err(e) = result {
                crate::guest::discard_config(&node, &key);
                return Err(e.message);
            }
            if let Some(p) = &pool {
                add_to_pool(&node, p, vmid).map_err(|e| e.message)?;
            }
            if start_after {
                let n = node.clone();
                let log = task.clone();
                tokio::task::spawn_blocking(move || ct::start(&n, vmid, &|l| log.log(l)))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.message)?;
            }
            Ok(())
        },
    )?;
    Ok(json!(upid.to_string()))
}

/// The host path of the template: a `vztmpl` volume (the caller needs
/// `Datastore.AllocateSpace` or `Datastore.Audit` on its storage), or an
/// absolute path for root@pam.
fn resolve_template(ctx: &Ctx, ostemplate: &str) -> ApiResult<std::path::PathBuf> {
    if ostemplate.starts_with('/') {
        if !ctx.caller.is_root() {
            return Err(ApiError::forbidden(
                "only root can use a template path outside a storage",
            ));
        }
        return Ok(ostemplate.into());
    }
    let vol = oxve_storage::VolumeId::parse(ostemplate)
        .map_err(|e| ApiError::param("ostemplate", e.to_string()))?;
    ctx.require_privs(
        &format!("/storage/{}", vol.storage),
        &["Datastore.AllocateSpace", "Datastore.Audit"],
        true,
    )?;
    let plugin = ctx.node.open_storage(&vol.storage)?;
    let parsed = plugin
        .parse_volname(&vol.volname)
        .map_err(|e| ApiError::param("ostemplate", e.to_string()))?;
    if parsed.content != oxve_storage::Content::Vztmpl {
        return Err(ApiError::param(
            "ostemplate",
            format!("'{ostemplate}' is not a container template"),
        ));
    }
    Ok(plugin.path(&vol.volname)?)
}

pub fn add_to_pool(node: &crate::node::Node, pool: &str, vmid: u32) -> ApiResult<()> {
    node.update_users(|cfg| {
        if let Some(p) = cfg.pools.get_mut(pool) {
            p.vms.insert(vmid.to_string());
        }
        Ok(())
    })
}

/// The work of a create task. Every volume it allocated is freed again on
/// failure; the caller removes the claimed config.
fn create_blocking(
    node: &crate::node::Node,
    vmid: u32,
    mut section: CtSection,
    template: &std::path::Path,
    password: Option<&str>,
    ssh_keys: Option<&str>,
    log: &dyn Fn(&str),
) -> ApiResult<()> {
    let ct = Ct::from_section(vmid, &section).map_err(|e| ApiError::fail(e.to_string()))?;
    if !template.is_file() {
        return Err(ApiError::fail(format!(
            "template '{}' does not exist",
            template.display()
        )));
    }
    let owner = ct::root_ids(&ct)?;
    let mut allocated: Vec<String> = Vec::new();
    let result: ApiResult<()> = (|| {
        for mp in ct.mount_points() {
            if let Some((storage, size)) = ct::new_volume_spec(&mp.volume) {
                log(&format!(
                    "allocating {} GiB for {} on storage '{storage}'",
                    size, mp.key
                ));
                let (volid, size) = ct::alloc_volume(node, &storage, vmid, size, owner)?;
                allocated.push(volid.clone());
                let value = section.props[&mp.key].replacen(&mp.volume, &volid, 1);
                let value = if value.contains("size=") {
                    value
                } else {
                    format!("{value},size={size}")
                };
                section.props.insert(mp.key.clone(), value);
            }
        }
        let ct = Ct::from_section(vmid, &section).map_err(|e| ApiError::fail(e.to_string()))?;
        let rootfs = ct::mount_ct(node, &ct)?;
        let filled: ApiResult<()> = (|| {
            log(&format!("extracting archive '{}'", template.display()));
            let idmap = if ct.unprivileged {
                Some(ct::ct_idmap(&ct)?)
            } else {
                None
            };
            oxve_lxc::create::extract_template(template, &rootfs, idmap.as_ref())
                .map_err(ct::lxc_err)?;
            log("Total bytes written: see storage usage");
            if !section.props.contains_key("arch") {
                if let Ok(arch) = oxve_lxc::setup::detect_arch(&rootfs) {
                    section.props.insert("arch".into(), arch);
                }
            }
            let ostype = match section.get("ostype") {
                Some(o) => o.to_string(),
                None => oxve_lxc::setup::detect_ostype(&rootfs)
                    .map_err(|e| ApiError::fail(e.to_string()))?,
            };
            log(&format!("detected OS type '{ostype}'"));
            section.props.insert("ostype".into(), ostype.clone());
            if ostype != "unmanaged" {
                let ct =
                    Ct::from_section(vmid, &section).map_err(|e| ApiError::fail(e.to_string()))?;
                oxve_lxc::setup::post_create(
                    &rootfs,
                    &ct::setup_params(&ct, owner),
                    password,
                    ssh_keys,
                )
                .map_err(|e| ApiError::fail(format!("OS setup failed: {e}")))?;
            }
            Ok(())
        })();
        let unmounted = oxve_lxc::mount::unmount_all(&rootfs).map_err(ct::lxc_err);
        filled?;
        unmounted?;
        node.update_ct(vmid, |conf| {
            conf.main = section.clone();
            Ok(())
        })?;
        log(&format!("CT {vmid} created"));
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
    let loaded = ctx.node.load_ct(vmid)?;
    let section = match ctx.opt_str("snapshot") {
        Some(snap) => loaded
            .conf
            .snapshots
            .get(snap)
            .cloned()
            .ok_or_else(|| ApiError::fail(format!("snapshot '{snap}' does not exist")))?,
        None if ctx.flag("current") => loaded.conf.main.clone(),
        None => with_pending(&loaded.conf),
    };
    let mut out = section.to_json();
    out.insert("digest".into(), json!(loaded.digest));
    Ok(Value::Object(out))
}

/// The main section with pending values applied and pending deletions
/// removed: what the CT will look like after its next start.
fn with_pending(conf: &CtConfig) -> CtSection {
    let mut s = conf.main.clone();
    for (k, v) in &conf.pending.props {
        if k != "delete" {
            s.props.insert(k.clone(), v.clone());
        }
    }
    for k in pending_deletes(&conf.pending) {
        s.props.remove(&k);
    }
    s
}

async fn pending(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let conf = ctx.node.load_ct(vmid)?.conf;
    let deletes = pending_deletes(&conf.pending)
        .into_iter()
        .map(|k| (k, false))
        .collect();
    Ok(crate::guest::pending_list(
        &conf.main.to_json(),
        &conf.pending.to_json(),
        &deletes,
        &[],
    ))
}

/// Options a running CT takes at once; the rest wait in `[pve:pending]`
/// for the next start.
const LIVE_KEYS: &[&str] = &[
    "description",
    "onboot",
    "startup",
    "protection",
    "tags",
    "hookscript",
    "lock",
];

async fn set_config(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let mut changes: Vec<(String, String)> = Vec::new();
    for (key, value) in &ctx.params {
        if matches!(
            key.as_str(),
            "node" | "vmid" | "delete" | "revert" | "digest"
        ) {
            continue;
        }
        let text = config_text(value);
        let text = if key.starts_with("net") {
            fill_hwaddr(&text)
        } else {
            text
        };
        changes.push((key.clone(), text));
    }
    let deletes = list_param(&ctx, "delete");
    let reverts = list_param(&ctx, "revert");
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
        if d == "rootfs" {
            return Err(ApiError::param(
                "delete",
                "unable to delete required option 'rootfs'",
            ));
        }
    }
    let all_keys: Vec<String> = changes
        .iter()
        .map(|(k, _)| k.clone())
        .chain(deletes.iter().cloned())
        .chain(reverts.iter().cloned())
        .collect();
    check_key_perms(&ctx, vmid, &all_keys)?;
    for (key, value) in changes
        .iter()
        .filter(|(k, _)| k.starts_with("mp") || k == "rootfs")
    {
        check_mount_perms(&ctx, key, value)?;
    }
    // Setting or removing only the lock works on a locked CT (root only, as
    // the key itself): that is how `pct mount`/`unmount`/`unlock` set and
    // clear it.
    let lock_only = reverts.is_empty()
        && changes.iter().all(|(k, _)| k == "lock")
        && deletes.iter().all(|k| k == "lock");
    let digest = ctx.opt_str("digest").map(str::to_string);
    let node = ctx.node.clone();
    let _guard = ctx.node.guest_locks.lock(vmid).await;
    crate::blocking(move || {
        let loaded = node.load_ct(vmid)?;
        if let Some(d) = &digest {
            if *d != loaded.digest {
                return Err(ApiError::fail(
                    "detected modified configuration - file changed by other user? Try again.",
                ));
            }
        }
        if !lock_only {
            check_unlocked(&loaded.conf)?;
        }
        let running = node.lxc().state(vmid).map_err(ct::lxc_err)? != RunState::Stopped;
        let mut changes = changes;
        let owner = ct::root_ids(
            &Ct::from_section(vmid, &loaded.conf.main)
                .map_err(|e| ApiError::fail(e.to_string()))?,
        )?;
        // New volumes (`mp0: local:2`) are allocated first; they are freed
        // again if the config cannot be written.
        let mut allocated = Vec::new();
        for (key, value) in changes
            .iter_mut()
            .filter(|(k, _)| k.starts_with("mp") || k == "rootfs")
        {
            let mp = oxve_lxc::model::parse_mount_point(key, value)
                .map_err(|e| ApiError::param(key, e.to_string()))?;
            if let Some((storage, size)) = ct::new_volume_spec(&mp.volume) {
                let (volid, size) = ct::alloc_volume(&node, &storage, vmid, size, owner)?;
                allocated.push(volid.clone());
                *value = format!("{},size={size}", value.replacen(&mp.volume, &volid, 1));
            }
        }
        let result = node.update_ct(vmid, |conf| {
            apply_changes(conf, &changes, &deletes, &reverts, running)?;
            Ct::from_section(vmid, &conf.main).map_err(|e| ApiError::bad_request(e.to_string()))?;
            Ok(())
        });
        if result.is_err() {
            for volid in &allocated {
                let _ = ct::free_volume(&node, volid);
            }
        }
        result?;
        // A running CT takes what it can at once; the rest stays pending,
        // and what failed to apply is reported per option (upstream's
        // parameter error), with everything that worked already in.
        if running {
            let errors = crate::ct_hotplug::hotplug_pending(&node, vmid)?;
            if !errors.is_empty() {
                return Err(ApiError::params(errors));
            }
        }
        Ok(Value::Null)
    })
    .await
}

/// Applies a config update: at once when stopped (or for live keys), to
/// `[pve:pending]` when running. A removed mount point's volume becomes
/// `unused<n>`, as upstream.
fn apply_changes(
    conf: &mut CtConfig,
    changes: &[(String, String)],
    deletes: &[String],
    reverts: &[String],
    running: bool,
) -> ApiResult<()> {
    for key in reverts {
        conf.pending.props.remove(key);
        let mut del: Vec<String> = pending_deletes(&conf.pending)
            .into_iter()
            .filter(|k| k != key)
            .collect();
        del.dedup();
        set_pending_deletes(&mut conf.pending, &del);
    }
    for (key, value) in changes {
        if running && !LIVE_KEYS.contains(&key.as_str()) {
            conf.pending.props.insert(key.clone(), value.clone());
            continue;
        }
        if key == "description" {
            conf.main.description = value.clone();
            continue;
        }
        if key.starts_with("mp") {
            if let Some(old) = conf.main.props.get(key).cloned() {
                move_to_unused(conf, key, &old);
            }
        }
        conf.main.props.insert(key.clone(), value.clone());
    }
    for key in deletes {
        if running && !LIVE_KEYS.contains(&key.as_str()) {
            let mut del = pending_deletes(&conf.pending);
            if !del.contains(key) {
                del.push(key.clone());
            }
            set_pending_deletes(&mut conf.pending, &del);
            continue;
        }
        if key == "description" {
            conf.main.description.clear();
            continue;
        }
        if let Some(old) = conf.main.props.remove(key) {
            if key.starts_with("mp") {
                move_to_unused(conf, key, &old);
            }
        }
    }
    Ok(())
}

fn set_pending_deletes(pending: &mut CtSection, keys: &[String]) {
    if keys.is_empty() {
        pending.props.remove("delete");
    } else {
        pending.props.insert("delete".into(), keys.join(","));
    }
}

/// Keeps a replaced or removed mount point's volume as `unused<n>`.
fn move_to_unused(conf: &mut CtConfig, key: &str, old: &str) {
    let Ok(mp) = oxve_lxc::model::parse_mount_point(key, old) else {
        return;
    };
    if mp.kind() != MountKind::Volume {
        return;
    }
    let n = (0..)
        .find(|i| !conf.main.props.contains_key(&format!("unused{i}")))
        .unwrap_or(0);
    conf.main.props.insert(format!("unused{n}"), mp.volume);
}

/// Volumes a CT owns: its mount point volumes and `unused<n>` entries,
/// also those only referenced by snapshots.
pub fn owned_volumes(conf: &CtConfig) -> Vec<String> {
    let mut out = Vec::new();
    for section in std::iter::once(&conf.main)
        .chain(conf.snapshots.values())
        .chain(std::iter::once(&conf.pending))
    {
        for (key, value) in &section.props {
            let volume =
                if key == "rootfs" || (key.starts_with("mp") && key[2..].parse::<u32>().is_ok()) {
                    oxve_lxc::model::parse_mount_point(key, value)
                        .ok()
                        .filter(|m| m.kind() == MountKind::Volume)
                        .map(|m| m.volume)
                } else if key.starts_with("unused") {
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
    let force = ctx.flag("force");
    let purge = ctx.flag("purge");
    let loaded = ctx.node.load_ct(vmid)?;
    check_unlocked(&loaded.conf)?;
    if oxve_schema::format::parse_boolean(loaded.conf.main.get("protection").unwrap_or("0"))
        == Some(true)
    {
        return Err(ApiError::fail(format!(
            "can't remove CT {vmid} - protection mode enabled"
        )));
    }
    let running = ctx.node.lxc().state(vmid).map_err(ct::lxc_err)? != RunState::Stopped;
    if running && !force {
        return Err(ApiError::fail(format!(
            "CT {vmid} is running - destroy failed"
        )));
    }
    let node = ctx.node.clone();
    let guard = ctx.node.guest_locks.lock(vmid).await;
    let upid = ctx.node.tasks.spawn(
        "vzdestroy",
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = guard;
            let log = task.clone();
            tokio::task::spawn_blocking(move || {
                if node.lxc().state(vmid).map_err(ct::lxc_err)? != RunState::Stopped {
                    log.log(format!("stopping CT {vmid}"));
                    ct::stop(&node, vmid, true, 0, true)?;
                }
                node.set_ct_lock(vmid, Some("destroyed"))?;
                let conf = node.load_ct(vmid)?.conf;
                for volid in owned_volumes(&conf) {
                    match ct::free_volume(&node, &volid) {
                        Ok(()) => log.log(format!("removed volume '{volid}'")),
                        Err(e) => {
                            log.warn(format!("could not remove volume '{volid}': {}", e.message))
                        }
                    }
                }
                node.store.apply(oxve_config::Op::Delete {
                    key: config_key(&node.name, vmid),
                    expect: oxve_config::Expect::Any,
                })?;
                let _ = std::fs::remove_dir_all(node.lxc().ct_dir(vmid));
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
