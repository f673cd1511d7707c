//! `/nodes/{node}/qemu/{vmid}/cloudinit`: the cloud-init values with their
//! changes since the drive was made, regenerating the drive (a running
//! VM's medium is swapped through QMP, as upstream), and the generated
//! files (`/cloudinit/dump`). Permissions are the schema's (`VM.Audit`,
//! `VM.Config.Cloudinit`), checked by the pipeline.

use super::qemu::vmid;
use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use crate::reg;
use crate::vm::check_unlocked;
use crate::vm_cloudinit;
use oxve_qemu::cloudinit::DumpKind;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/cloudinit" => pending);
    reg!(r, PUT "/nodes/{node}/qemu/{vmid}/cloudinit" => update);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/cloudinit/dump" => dump);
}

/// How long QMP may take for one medium command.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

async fn pending(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let conf = ctx.node.load_vm(vmid)?.conf;
    Ok(vm_cloudinit::pending(&conf))
}

async fn update(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let node = ctx.node.clone();
    let _guard = ctx.node.guest_locks.lock(vmid).await;
    let loaded = node.load_vm(vmid)?;
    check_unlocked(&loaded.conf)?;
    let Some((key, _)) = vm_cloudinit::drive(vmid, &loaded.conf.main) else {
        return Ok(Value::Null);
    };
    update_drive(&node, vmid, &key).await.map(|_| Value::Null)
}

/// Regenerates VM `vmid`'s cloud-init drive `key` from its config; a
/// running VM's medium is taken out meanwhile and put back after. The
/// caller holds the guest lock.
pub async fn update_drive(node: &Arc<Node>, vmid: u32, key: &str) -> ApiResult<()> {
    let running = node.vm_pid(vmid).is_some();
    // QEMU holds the medium: take it out while the volume is rewritten.
    if running {
        let mut qmp = node
            .qemu()
            .qmp(vmid, QMP_TIMEOUT)
            .await
            .map_err(|e| ApiError::fail(e.to_string()))?;
        qmp.execute("eject", Some(json!({"id": key, "force": true})))
            .await
            .map_err(|e| ApiError::fail(format!("cannot eject {key}: {e}")))?;
        // A `-blockdev` node outlives the ejection and keeps the image
        // locked; remove it (`-drive` machines have none left).
        let node_name = format!("drive-{key}");
        let _ = qmp
            .execute("blockdev-del", Some(json!({"node-name": node_name})))
            .await;
    }
    let n = node.clone();
    let written = crate::blocking(move || {
        vm_cloudinit::regenerate(&n, vmid, &|l| tracing::info!(vmid, "{l}"))
    })
    .await;
    if running {
        let mut qmp = node
            .qemu()
            .qmp(vmid, QMP_TIMEOUT)
            .await
            .map_err(|e| ApiError::fail(e.to_string()))?;
        // Put the medium back also when writing failed.
        let n = node.clone();
        let (path, format) = match &written {
            Ok(Some((_, path, format))) => (path.clone(), format.clone()),
            _ => crate::blocking(move || medium_of(&n, vmid)).await?,
        };
        let args = json!({
            "id": key,
            "filename": path.display().to_string(),
            "format": format,
            "read-only-mode": "read-only",
        });
        qmp.execute("blockdev-change-medium", Some(args))
            .await
            .map_err(|e| ApiError::fail(format!("cannot change the medium of {key}: {e}")))?;
    }
    written.map(drop)
}

/// The path and format of the cloud-init volume of VM `vmid`.
fn medium_of(node: &crate::node::Node, vmid: u32) -> ApiResult<(std::path::PathBuf, String)> {
    let section = node.load_vm(vmid)?.conf.main;
    let (_, volid) = vm_cloudinit::drive(vmid, &section)
        .ok_or_else(|| ApiError::fail(format!("VM {vmid} has no cloud-init drive")))?;
    let vol = oxve_storage::VolumeId::parse(&volid)?;
    let plugin = node.open_storage(&vol.storage)?;
    let format = plugin
        .parse_volname(&vol.volname)?
        .format
        .unwrap_or_else(|| "raw".into());
    Ok((plugin.path(&vol.volname)?, format))
}

async fn dump(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let kind = match ctx.str("type")? {
        "user" => DumpKind::User,
        "network" => DumpKind::Network,
        _ => DumpKind::Meta,
    };
    let mask = !ctx.has_privs(&format!("/vms/{vmid}"), &["VM.Config.Cloudinit"], false);
    let node = ctx.node.clone();
    crate::blocking(move || {
        let section = node.load_vm(vmid)?.conf.main;
        vm_cloudinit::dump(&node, vmid, &section, kind, mask).map(Value::String)
    })
    .await
}
