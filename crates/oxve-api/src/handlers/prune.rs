//! `/nodes/{node}/storage/{storage}/prunebackups`: which backups the
//! retention options keep (GET, a dry run) and removing the rest (DELETE,
//! a `prunebackups` task). The rules live in `oxve_storage::prune`.

use super::{Ctx, Registry};
use crate::blocking;
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_storage::prune::{self, Level, PruneEntry, PruneOptions};
use oxve_storage::StoragePlugin;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/storage/{storage}/prunebackups" => dry_run);
    reg!(r, DELETE "/nodes/{node}/storage/{storage}/prunebackups" => delete);
}

/// Storage `id`, enabled on this node and activated.
pub(super) async fn open_active(ctx: &Ctx, id: &str) -> ApiResult<Arc<dyn StoragePlugin>> {
    let def = ctx.node.storage_def(id)?;
    if !def.enabled_on(&ctx.node.name) {
        return Err(ApiError::fail(format!(
            "storage '{}' is not available on node '{}'",
            def.id, ctx.node.name
        )));
    }
    let plugin: Arc<dyn StoragePlugin> = ctx.node.open_def(def)?.into();
    let p = plugin.clone();
    blocking(move || Ok(p.activate()?)).await?;
    Ok(plugin)
}

/// What the request asks to prune: the options overriding the storage's,
/// the guest type and the guest.
struct Selection {
    opts: Option<PruneOptions>,
    guest_type: Option<String>,
    vmid: Option<u32>,
}

fn selection(ctx: &Ctx) -> ApiResult<Selection> {
    let opts = match ctx.opt_str("prune-backups") {
        Some(text) => {
            Some(PruneOptions::parse(text).map_err(|e| ApiError::param("prune-backups", e))?)
        }
        None => None,
    };
    let vmid = match ctx.opt_int("vmid") {
        Some(v) => Some(u32::try_from(v).map_err(|_| ApiError::param("vmid", "invalid guest id"))?),
        None => None,
    };
    Ok(Selection {
        opts,
        guest_type: ctx.opt_str("type").map(str::to_string),
        vmid,
    })
}

fn entry_json(e: &PruneEntry) -> Value {
    let mut v = json!({
        "volid": e.volid,
        "ctime": e.ctime,
        "mark": e.mark.as_str(),
        "type": e.guest_type,
    });
    if let Some(vmid) = e.vmid {
        v["vmid"] = json!(vmid);
    }
    v
}

async fn dry_run(ctx: Ctx) -> ApiResult<Value> {
    let sel = selection(&ctx)?;
    let plugin = open_active(&ctx, ctx.str("storage")?).await?;
    let entries = blocking(move || {
        Ok(prune::prune_backups(
            &*plugin,
            sel.opts.as_ref(),
            sel.vmid,
            sel.guest_type.as_deref(),
            true,
            &mut |_, _| {},
        )?)
    })
    .await?;
    Ok(Value::Array(entries.iter().map(entry_json).collect()))
}

/// `Datastore.Allocate` on the storage; for one guest, `Datastore.AllocateSpace`
/// on the storage and `VM.Backup` on the guest suffice as well.
fn check_delete(ctx: &Ctx, storage: &str, vmid: Option<u32>) -> ApiResult<()> {
    let path = format!("/storage/{storage}");
    if ctx.has_privs(&path, &["Datastore.Allocate"], false) {
        return Ok(());
    }
    match vmid {
        Some(id) => {
            ctx.require_privs(&path, &["Datastore.AllocateSpace"], false)?;
            ctx.require_privs(&format!("/vms/{id}"), &["VM.Backup"], false)
        }
        None => ctx.require_privs(&path, &["Datastore.Allocate"], false),
    }
}

async fn delete(ctx: Ctx) -> ApiResult<Value> {
    let sel = selection(&ctx)?;
    let storage = ctx.str("storage")?.to_string();
    check_delete(&ctx, &storage, sel.vmid)?;
    let plugin = open_active(&ctx, &storage).await?;
    // What the task would only fail on is refused before it starts.
    prune::storage_options(&*plugin, sel.opts.as_ref())?;
    let id = match sel.vmid {
        Some(v) => format!("{v}@{storage}"),
        None => storage,
    };
    let upid = ctx.node.tasks.spawn(
        "prunebackups",
        Some(&id),
        &ctx.caller.authid(),
        move |task| async move {
            tokio::task::spawn_blocking(move || {
                let mut log = |level: Level, line: String| match level {
                    Level::Warn => task.warn(line),
                    Level::Info | Level::Error => task.log(line),
                };
                prune::prune_backups(
                    &*plugin,
                    sel.opts.as_ref(),
                    sel.vmid,
                    sel.guest_type.as_deref(),
                    false,
                    &mut log,
                )
                .map(drop)
                .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        },
    )?;
    Ok(json!(upid.to_string()))
}
