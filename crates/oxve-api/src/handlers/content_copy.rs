//! `POST /nodes/{node}/storage/{storage}/content/{volume}`: copy a volume
//! to another name or storage of this node, as an `imgcopy` task. The
//! schema has no permission rule for it, so it is root@pam's alone, as
//! upstream. The copy itself is `oxve_storage::copy`.

use super::prune::open_active;
use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_storage::VolumeId;
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, POST "/nodes/{node}/storage/{storage}/content/{volume}" => copy);
}

/// A volume id from parameter `param`: a full `storage:volume`, or a volume
/// name on `storage`. The source must be on `storage`; the target may name
/// another storage of the node.
fn volume_id(
    storage: Option<&str>,
    text: &str,
    param: &str,
    same_storage: bool,
) -> ApiResult<VolumeId> {
    if text.contains(':') {
        let id = VolumeId::parse(text).map_err(|e| ApiError::param(param, e.to_string()))?;
        if let (true, Some(s)) = (same_storage, storage) {
            if s != id.storage {
                return Err(ApiError::param(
                    param,
                    format!("storage ID mismatch ({} != {s})", id.storage),
                ));
            }
        }
        return Ok(id);
    }
    let storage = storage
        .ok_or_else(|| ApiError::param(param, "no storage specified - incomplete volume ID"))?;
    VolumeId::parse(&format!("{storage}:{text}")).map_err(|e| ApiError::param(param, e.to_string()))
}

async fn copy(ctx: Ctx) -> ApiResult<Value> {
    if let Some(target_node) = ctx.opt_str("target_node") {
        if target_node != ctx.node.name && target_node != "localhost" {
            return Err(ApiError::not_implemented_msg(format!(
                "copying a volume to another node ('{target_node}') is not supported yet; \
                 only the local node '{}' can be the target",
                ctx.node.name
            )));
        }
    }
    let storage = ctx.opt_str("storage");
    let src = volume_id(storage, ctx.str("volume")?, "volume", true)?;
    let dst = volume_id(storage, ctx.str("target")?, "target", false)?;
    if src == dst {
        return Err(ApiError::param(
            "target",
            format!("'{dst}' is the source volume itself"),
        ));
    }
    let src_plugin = open_active(&ctx, &src.storage).await?;
    let dst_plugin = if dst.storage == src.storage {
        src_plugin.clone()
    } else {
        open_active(&ctx, &dst.storage).await?
    };
    // Names that do not parse are the caller's mistake, answered before the task.
    src_plugin
        .parse_volname(&src.volname)
        .map_err(|e| ApiError::param("volume", e.to_string()))?;
    dst_plugin
        .parse_volname(&dst.volname)
        .map_err(|e| ApiError::param("target", e.to_string()))?;
    let upid = ctx.node.tasks.spawn(
        "imgcopy",
        None,
        &ctx.caller.authid(),
        move |task| async move {
            task.log(format!("copying '{src}' to '{dst}'"));
            let target = dst.clone();
            let volname = tokio::task::spawn_blocking(move || {
                oxve_storage::copy::copy_volume(
                    &*src_plugin,
                    &src.volname,
                    &*dst_plugin,
                    &target.volname,
                )
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            task.log(format!(
                "successfully copied to '{}'",
                VolumeId::new(&dst.storage, &volname)
            ));
            Ok(())
        },
    )?;
    Ok(json!(upid.to_string()))
}
