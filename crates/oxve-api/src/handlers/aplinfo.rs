//! `/nodes/{node}/aplinfo`: the appliances the node's downloaded indexes
//! offer, and downloading one onto a storage as a container template.
//!
//! The indexes themselves are fetched by `pveam update` (a local command,
//! as upstream — there is no API method for it); this module only reads
//! them through `oxve_storage::aplinfo`. A download runs as a `download`
//! task through the same curl pipeline as `download-url`: into a hidden
//! temporary file, verified against the index's checksum, then linked into
//! place — so a failure leaves nothing on the storage.

use super::transfer::{fetch, finish, hasher, temp_beside, Expected};
use super::{Ctx, Registry};
use crate::blocking;
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_storage::aplinfo::{self, Appliance, Checksum};
use oxve_storage::{volume, Content, StoragePlugin};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/aplinfo" => list);
    reg!(r, POST "/nodes/{node}/aplinfo" => download);
}

/// The appliances of the node's stored indexes, by template name.
async fn appliances(ctx: &Ctx) -> ApiResult<std::collections::BTreeMap<String, Appliance>> {
    let root = ctx.node.root.clone();
    let (all, warnings) =
        blocking(move || aplinfo::load(&root).map_err(|e| ApiError::fail(e.to_string()))).await?;
    for w in warnings {
        tracing::warn!("appliance index: {w}");
    }
    Ok(all)
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    Ok(Value::Array(
        appliances(&ctx)
            .await?
            .values()
            .map(|a| json!(a.fields()))
            .collect(),
    ))
}

async fn download(ctx: Ctx) -> ApiResult<Value> {
    let template = ctx.str("template")?.to_string();
    let appliance = appliances(&ctx)
        .await?
        .remove(&template)
        .ok_or_else(|| ApiError::param("template", "no such template"))?;
    let def = ctx.node.storage_def(ctx.str("storage")?)?;
    if def.flag("disable") {
        return Err(ApiError::fail(format!("storage '{}' is disabled", def.id)));
    }
    if !def.enabled_on(&ctx.node.name) {
        return Err(ApiError::fail(format!(
            "storage '{}' is not available on node '{}'",
            def.id, ctx.node.name
        )));
    }
    if !matches!(appliance.kind(), "lxc" | "openvz") {
        return Err(ApiError::fail(format!(
            "unknown template type '{}'",
            appliance.kind()
        )));
    }
    if !def.content().contains(Content::Vztmpl) {
        return Err(ApiError::fail(format!(
            "storage '{}' does not support templates",
            def.id
        )));
    }
    // The name comes from a downloaded index: it must be a plain template
    // file name before it becomes a path on the storage.
    if !volume::file_name_matches(Content::Vztmpl, &template)
        || volume::check_file_name(&template).is_err()
    {
        return Err(ApiError::fail(format!(
            "appliance index lists an invalid template name '{template}'"
        )));
    }
    let url = appliance.location().to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ApiError::fail(format!(
            "template '{template}' has an unsupported location '{url}' (http or https only)"
        )));
    }
    let plugin: Arc<dyn StoragePlugin> = ctx.node.open_def(def)?.into();
    let dir = blocking(move || {
        plugin.activate()?;
        let dir = plugin.content_dir(Content::Vztmpl).ok_or_else(|| {
            ApiError::fail(format!("storage '{}' cannot hold files", plugin.def().id))
        })?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::fail(format!("unable to create '{}': {e}", dir.display())))?;
        Ok(dir)
    })
    .await?;
    let dest = dir.join(&template);
    let checksum = appliance.checksum();
    let upid = ctx.node.tasks.spawn(
        "download",
        Some(&template),
        &ctx.caller.authid(),
        move |task| async move {
            let sum = checksum.ok_or("checksum required but not specified")?;
            if dest.exists() {
                task.log(format!("downloading {url} to {}", dest.display()));
                return check_existing(&task, dest, sum).await;
            }
            let tmp = temp_beside(&dest, "download");
            let expected = Some(Expected {
                algorithm: sum.algorithm.to_string(),
                hex: sum.hex,
            });
            let result = fetch(&task, &url, true, &tmp, &expected)
                .await
                .and_then(|_| {
                    finish(&tmp, &dest).map_err(|e| {
                        format!("unable to move download to '{}': {e}", dest.display())
                    })
                });
            let _ = std::fs::remove_file(&tmp);
            result?;
            task.log(format!(
                "download of '{url}' to '{}' finished",
                dest.display()
            ));
            Ok(())
        },
    )?;
    Ok(json!(upid.to_string()))
}

/// A template that is already there: fine when it is the same file (as
/// upstream, downloading twice is not an error), refused otherwise.
async fn check_existing(
    task: &oxve_tasks::TaskContext,
    dest: PathBuf,
    sum: Checksum,
) -> Result<(), String> {
    task.log("calculating checksum of existing file...");
    let algorithm = sum.algorithm;
    let got = tokio::task::spawn_blocking(move || file_digest(&dest, algorithm))
        .await
        .map_err(|e| e.to_string())??;
    if got == sum.hex {
        task.log("OK, got correct file already, no need to download");
        Ok(())
    } else {
        Err(format!(
            "checksum mismatch: got '{got}' != expect '{}', aborting",
            sum.hex
        ))
    }
}

/// The lower-case hex digest of a file.
fn file_digest(path: &Path, algorithm: &str) -> Result<String, String> {
    let mut hash = hasher(Some(algorithm)).ok_or("unsupported checksum algorithm")?;
    let mut file = std::fs::File::open(path)
        .map_err(|e| format!("unable to open '{}': {e}", path.display()))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("unable to read '{}': {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_a_file() {
        let path = std::env::temp_dir().join(format!("oxve-digest-{}", std::process::id()));
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            file_digest(&path, "md5").unwrap(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert!(file_digest(&path, "sha512")
            .unwrap()
            .starts_with("ddaf35a193617aba"));
        std::fs::remove_file(&path).unwrap();
    }
}
