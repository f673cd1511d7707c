//! `/nodes/{node}/storage`: what each storage holds on this node — status,
//! content listing, allocation, volume attributes and deletion.

use super::{Ctx, Registry};
use crate::blocking;
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_storage::plugin::PathSuffix;
use oxve_storage::{Content, StorageDef, StoragePlugin, VolumeId, VolumeInfo};
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/storage" => index);
    reg!(r, GET "/nodes/{node}/storage/{storage}" => diridx);
    reg!(r, GET "/nodes/{node}/storage/{storage}/status" => status);
    reg!(r, GET "/nodes/{node}/storage/{storage}/content" => content);
    reg!(r, POST "/nodes/{node}/storage/{storage}/content" => alloc);
    reg!(r, GET "/nodes/{node}/storage/{storage}/content/{volume}" => info);
    reg!(r, PUT "/nodes/{node}/storage/{storage}/content/{volume}" => set_attributes);
    reg!(r, DELETE "/nodes/{node}/storage/{storage}/content/{volume}" => delete);
}

/// The status entry of one storage, as `GET /nodes/{node}/storage` shows it.
pub fn status_entry(node: &crate::node::Node, def: &StorageDef) -> Value {
    let enabled = def.enabled_on(&node.name);
    let mut v = json!({
        "storage": def.id,
        "type": def.kind.as_str(),
        "content": def.content().to_string(),
        "shared": u8::from(def.shared()),
        "enabled": u8::from(enabled),
        "active": 0,
    });
    if !enabled {
        return v;
    }
    let usage = node
        .open_def(def.clone())
        .and_then(|p| Ok(p.activate().and_then(|_| p.status())?));
    match usage {
        Ok(u) => {
            v["active"] = json!(1);
            v["total"] = json!(u.total);
            v["used"] = json!(u.used);
            v["avail"] = json!(u.avail);
            if u.total > 0 {
                v["used_fraction"] = json!(u.used as f64 / u.total as f64);
            }
        }
        Err(e) => tracing::warn!("storage '{}' is not online: {}", def.id, e.message),
    }
    v
}

async fn index(ctx: Ctx) -> ApiResult<Value> {
    let (cfg, _) = ctx.node.storage_config()?;
    let want_content: Option<Vec<Content>> = ctx.opt_str("content").map(|list| {
        list.split([',', ';', ' '])
            .filter_map(Content::parse)
            .collect()
    });
    let only = ctx.opt_str("storage").map(str::to_string);
    let only_enabled = ctx.flag("enabled");
    let target = ctx.opt_str("target").map(str::to_string);
    let mut defs = Vec::new();
    for def in cfg.storages() {
        let visible = ctx.has_privs(
            &format!("/storage/{}", def.id),
            &["Datastore.Audit", "Datastore.AllocateSpace"],
            true,
        );
        if !visible || only.as_ref().is_some_and(|o| *o != def.id) {
            continue;
        }
        if let Some(want) = &want_content {
            let has = def.content();
            if !want.iter().any(|c| has.contains(*c)) {
                continue;
            }
        }
        if let Some(t) = &target {
            // Usable from both nodes: shared, or not restricted away from either.
            if t != &ctx.node.name && !(def.shared() && def.enabled_on(t)) {
                continue;
            }
        }
        if only_enabled && !def.enabled_on(&ctx.node.name) {
            continue;
        }
        defs.push(def);
    }
    let node = ctx.node.clone();
    let with_formats = ctx.flag("format");
    blocking(move || {
        Ok(Value::Array(
            defs.iter()
                .map(|d| {
                    let mut v = status_entry(&node, d);
                    if with_formats && !d.kind.info().formats.is_empty() {
                        let supported: serde_json::Map<String, Value> = d
                            .kind
                            .info()
                            .formats
                            .iter()
                            .map(|f| (f.to_string(), json!(1)))
                            .collect();
                        v["format"] = json!([supported, d.default_format()]);
                    }
                    v
                })
                .collect(),
        ))
    })
    .await
}

async fn diridx(_ctx: Ctx) -> ApiResult<Value> {
    let dirs = [
        "content",
        "download-url",
        "file-restore",
        "import-metadata",
        "prunebackups",
        "rrd",
        "rrddata",
        "status",
        "upload",
    ];
    Ok(Value::Array(
        dirs.iter().map(|d| json!({"subdir": d})).collect(),
    ))
}

async fn status(ctx: Ctx) -> ApiResult<Value> {
    let def = ctx.node.storage_def(ctx.str("storage")?)?;
    if !def.enabled_on(&ctx.node.name) {
        return Err(ApiError::fail(format!(
            "storage '{}' is not enabled on node '{}'",
            def.id, ctx.node.name
        )));
    }
    let node = ctx.node.clone();
    blocking(move || Ok(status_entry(&node, &def))).await
}

/// The opened, activated storage of the request.
async fn open(ctx: &Ctx) -> ApiResult<std::sync::Arc<dyn StoragePlugin>> {
    let def = ctx.node.storage_def(ctx.str("storage")?)?;
    if !def.enabled_on(&ctx.node.name) {
        return Err(ApiError::fail(format!(
            "storage '{}' is not available on node '{}'",
            def.id, ctx.node.name
        )));
    }
    let plugin: std::sync::Arc<dyn StoragePlugin> = ctx.node.open_def(def)?.into();
    let p = plugin.clone();
    blocking(move || Ok(p.activate()?)).await?;
    Ok(plugin)
}

fn volume_json(v: &VolumeInfo) -> Value {
    let mut out = json!({
        "volid": v.volid,
        "content": v.content.as_str(),
        "format": v.format,
        "size": v.size,
    });
    if let Some(used) = v.used {
        out["used"] = json!(used);
    }
    if let Some(vmid) = v.vmid {
        out["vmid"] = json!(vmid);
    }
    if let Some(ctime) = v.ctime {
        out["ctime"] = json!(ctime);
    }
    if let Some(parent) = &v.parent {
        out["parent"] = json!(parent);
    }
    if let Some(notes) = &v.notes {
        out["notes"] = json!(notes);
    }
    if v.protected {
        out["protected"] = json!(1);
    }
    out
}

async fn content(ctx: Ctx) -> ApiResult<Value> {
    let plugin = open(&ctx).await?;
    let content = match ctx.opt_str("content") {
        Some(c) => Some(
            Content::parse(c).ok_or_else(|| ApiError::param("content", "unknown content type"))?,
        ),
        None => None,
    };
    let vmid = ctx.opt_int("vmid").map(|v| v as u32);
    let p = plugin.clone();
    let vols = blocking(move || Ok(p.list_volumes(content, vmid)?)).await?;
    let storage = plugin.def().id.clone();
    let all = ctx.has_privs(
        &format!("/storage/{storage}"),
        &["Datastore.Allocate"],
        false,
    );
    Ok(Value::Array(
        vols.iter()
            .filter(|v| {
                all || v
                    .vmid
                    .is_none_or(|id| ctx.has_privs(&format!("/vms/{id}"), &["VM.Audit"], false))
            })
            .map(volume_json)
            .collect(),
    ))
}

/// `size` of an allocation: KiB, or with an `M`/`G` suffix.
fn parse_size_kib(text: &str) -> ApiResult<u64> {
    let (digits, factor) = match text.as_bytes().last() {
        Some(b'M') => (&text[..text.len() - 1], 1024),
        Some(b'G') => (&text[..text.len() - 1], 1024 * 1024),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| ApiError::param("size", "invalid size"))
}

async fn alloc(ctx: Ctx) -> ApiResult<Value> {
    let plugin = open(&ctx).await?;
    let vmid = ctx.opt_int("vmid").unwrap_or_default() as u32;
    let size = parse_size_kib(ctx.str("size")?)?;
    let name = ctx.str("filename")?.to_string();
    if !name.starts_with(&format!("vm-{vmid}-")) && !name.starts_with(&format!("subvol-{vmid}-")) {
        return Err(ApiError::param(
            "filename",
            format!("illegal name '{name}' - should be 'vm-{vmid}-*'"),
        ));
    }
    let format = ctx.opt_str("format").map(str::to_string).or_else(|| {
        name.rsplit_once('.')
            .map(|(_, ext)| ext.to_string())
            .filter(|e| ["raw", "qcow2", "vmdk", "subvol"].contains(&e.as_str()))
    });
    let p = plugin.clone();
    let volname =
        blocking(move || Ok(p.alloc_image(vmid, format.as_deref(), Some(&name), size)?)).await?;
    Ok(json!(VolumeId::new(&plugin.def().id, &volname).to_string()))
}

/// The volume of the request: `volume` is a volume id or a name on `storage`.
fn volume_of(ctx: &Ctx) -> ApiResult<VolumeId> {
    let volume = ctx.str("volume")?;
    let storage = ctx.opt_str("storage");
    if volume.contains(':') {
        let id = VolumeId::parse(volume)?;
        if let Some(s) = storage {
            if s != id.storage {
                return Err(ApiError::param(
                    "volume",
                    format!("volume '{volume}' is not on storage '{s}'"),
                ));
            }
        }
        return Ok(id);
    }
    let storage = storage
        .ok_or_else(|| ApiError::param("storage", "a storage is needed for a volume name"))?;
    Ok(VolumeId::parse(&format!("{storage}:{volume}"))?)
}

/// Read access to a volume, as upstream: `Datastore.Allocate` on the
/// storage, or audit rights on it plus the owning guest's `VM.Audit`.
fn check_read(ctx: &Ctx, id: &VolumeId, owner: Option<u32>) -> ApiResult<()> {
    let path = format!("/storage/{}", id.storage);
    if ctx.has_privs(&path, &["Datastore.Allocate"], false) {
        return Ok(());
    }
    ctx.require_privs(&path, &["Datastore.Audit", "Datastore.AllocateSpace"], true)?;
    if let Some(vmid) = owner {
        ctx.require_privs(&format!("/vms/{vmid}"), &["VM.Audit"], false)?;
    }
    Ok(())
}

async fn open_volume(
    ctx: &Ctx,
) -> ApiResult<(
    VolumeId,
    std::sync::Arc<dyn StoragePlugin>,
    oxve_storage::VolName,
)> {
    let id = volume_of(ctx)?;
    let def = ctx.node.storage_def(&id.storage)?;
    let plugin: std::sync::Arc<dyn StoragePlugin> = ctx.node.open_def(def)?.into();
    let vol = plugin.parse_volname(&id.volname)?;
    let p = plugin.clone();
    blocking(move || Ok(p.activate()?)).await?;
    Ok((id, plugin, vol))
}

async fn info(ctx: Ctx) -> ApiResult<Value> {
    let (id, plugin, vol) = open_volume(&ctx).await?;
    check_read(&ctx, &id, vol.vmid)?;
    let volname = id.volname.clone();
    blocking(move || {
        let path = plugin.path(&volname)?;
        let mut out = json!({"path": path.display().to_string(), "format": vol.format.clone().unwrap_or_else(|| "raw".into())});
        match vol.content {
            Content::Images | Content::Rootdir => {
                let (size, used) = plugin.volume_size(&volname)?;
                out["size"] = json!(size);
                out["used"] = json!(used);
            }
            _ => {
                let meta = std::fs::metadata(&path)
                    .map_err(|_| ApiError::fail(format!("volume '{id}' does not exist")))?;
                out["size"] = json!(meta.len());
                out["used"] = json!(meta.len());
                if vol.content == Content::Backup {
                    let notes = std::fs::read_to_string(path.with_extension_suffix(".notes")).unwrap_or_default();
                    out["notes"] = json!(notes);
                    out["protected"] = json!(u8::from(path.with_extension_suffix(".protected").exists()));
                }
            }
        }
        Ok(out)
    })
    .await
}

async fn set_attributes(ctx: Ctx) -> ApiResult<Value> {
    let (id, plugin, vol) = open_volume(&ctx).await?;
    check_read(&ctx, &id, vol.vmid)?;
    let notes = ctx.opt_str("notes").map(str::to_string);
    let protected = ctx.opt_bool("protected");
    if notes.is_none() && protected.is_none() {
        return Ok(Value::Null);
    }
    if vol.content != Content::Backup {
        return Err(ApiError::fail(format!(
            "notes and protection are only supported for backups ('{id}' is {})",
            vol.content
        )));
    }
    let volname = id.volname.clone();
    let max_protected = max_protected_backups(&ctx, plugin.def());
    blocking(move || {
        let path = plugin.path(&volname)?;
        if !path.exists() {
            return Err(ApiError::fail(format!("volume '{id}' does not exist")));
        }
        if let (Some(true), Some(max), Some(vmid)) = (protected, max_protected, vol.vmid) {
            let volid = id.to_string();
            let others = plugin
                .list_volumes(Some(Content::Backup), Some(vmid))?
                .into_iter()
                .filter(|v| v.protected && v.volid != volid)
                .count();
            if others >= max {
                return Err(ApiError::fail(format!(
                    "The number of protected backups per guest is limited to {max} on storage '{}'",
                    id.storage
                )));
            }
        }
        if let Some(notes) = notes {
            let file = path.with_extension_suffix(".notes");
            if notes.is_empty() {
                let _ = std::fs::remove_file(&file);
            } else {
                crate::sys::write_atomic(&file, &notes)?;
            }
        }
        if let Some(p) = protected {
            let file = path.with_extension_suffix(".protected");
            if p {
                std::fs::write(&file, b"")
                    .map_err(|e| ApiError::fail(format!("unable to protect '{id}': {e}")))?;
            } else {
                let _ = std::fs::remove_file(&file);
            }
        }
        Ok(Value::Null)
    })
    .await
}

/// How many protected backups one guest may have on `def`: its
/// `max-protected-backups` (-1: no limit), else no limit for callers with
/// `Datastore.Allocate` on the storage and 5 for others, as upstream.
fn max_protected_backups(ctx: &Ctx, def: &StorageDef) -> Option<usize> {
    let configured = def
        .get("max-protected-backups")
        .and_then(|v| v.parse::<i64>().ok());
    let max = configured.unwrap_or_else(|| {
        let path = format!("/storage/{}", def.id);
        if ctx.has_privs(&path, &["Datastore.Allocate"], false) {
            -1
        } else {
            5
        }
    });
    usize::try_from(max).ok()
}

async fn delete(ctx: Ctx) -> ApiResult<Value> {
    let (id, plugin, vol) = open_volume(&ctx).await?;
    let path = format!("/storage/{}", id.storage);
    let backup_of_own_vm = vol.content == Content::Backup
        && ctx.has_privs(&path, &["Datastore.AllocateSpace"], false)
        && vol
            .vmid
            .is_some_and(|v| ctx.has_privs(&format!("/vms/{v}"), &["VM.Backup"], false));
    if !backup_of_own_vm {
        ctx.require_privs(&path, &["Datastore.Allocate"], false)?;
    }
    let volid = id.to_string();
    let upid = ctx.node.tasks.spawn(
        "imgdel",
        // A task id holds no ':' or '/'; escape them as upstream's UPIDs do.
        Some(&volid.replace(':', "\\x3A").replace('/', "\\x2F")),
        &ctx.caller.authid(),
        move |task| async move {
            task.log(format!("removing volume '{volid}'"));
            let volname = id.volname.clone();
            tokio::task::spawn_blocking(move || plugin.free_volume(&volname))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            task.log(format!("volume '{volid}' removed"));
            Ok(())
        },
    )?;
    if let Some(delay) = ctx.opt_int("delay").filter(|d| *d > 0) {
        let wait = ctx.node.tasks.wait(&upid);
        if let Ok(done) =
            tokio::time::timeout(std::time::Duration::from_secs(delay as u64), wait).await
        {
            let status = done?;
            if status != "OK" {
                return Err(ApiError::fail(status));
            }
            return Ok(Value::Null);
        }
    }
    Ok(json!(upid.to_string()))
}
