//! Disk and monitor methods of a VM: `resize` (online through QMP
//! `block_resize`), `unlink`, `sendkey` and the human `monitor`.

use super::qemu::vmid;
use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use crate::reg;
use crate::vm;
use oxve_schema::vmconfig::{drive_file, is_drive_key};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub fn register(r: &mut Registry) {
    reg!(r, PUT "/nodes/{node}/qemu/{vmid}/resize" => resize);
    reg!(r, PUT "/nodes/{node}/qemu/{vmid}/unlink" => unlink);
    reg!(r, PUT "/nodes/{node}/qemu/{vmid}/sendkey" => sendkey);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/monitor" => monitor);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/move_disk" => move_disk);
}

/// Moves a disk to another storage or format, online (drive-mirror) when
/// the VM runs; the old volume becomes `unused<n>` unless `delete`.
async fn move_disk(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let disk = ctx.str("disk")?.to_string();
    let target_vmid = ctx
        .opt_int("target-vmid")
        .and_then(|v| u32::try_from(v).ok());
    let storage = ctx.opt_str("storage").map(str::to_string);
    match (&storage, target_vmid) {
        (Some(_), Some(_)) => {
            let msg = "either set 'storage' or 'target-vmid', but not both";
            return Err(both_params(msg));
        }
        (None, None) => {
            let msg = "both 'storage' and 'target-vmid' missing, either needs to be set";
            return Err(both_params(msg));
        }
        (None, Some(target)) => return reassign(ctx, vmid, disk, target).await,
        (Some(_), None) => {}
    }
    let storage = storage.unwrap_or_default();
    ctx.require_privs(
        &format!("/storage/{storage}"),
        &["Datastore.AllocateSpace"],
        false,
    )?;
    let loaded = ctx.node.load_vm(vmid)?;
    if ctx.opt_str("digest").is_some_and(|d| d != loaded.digest) {
        return Err(ApiError::fail(
            "detected modified configuration - file changed by other user? Try again.",
        ));
    }
    vm::check_unlocked(&loaded.conf)?;
    if loaded.conf.main.get(&disk).is_none() {
        return Err(ApiError::param(
            "disk",
            format!("disk '{disk}' does not exist"),
        ));
    }
    ctx.node.open_storage(&storage)?;
    let format = ctx.opt_str("format").map(str::to_string);
    let delete = ctx.flag("delete");
    let bwlimit = ctx.opt_int("bwlimit").and_then(|b| u64::try_from(b).ok());
    let node: Arc<Node> = ctx.node.clone();
    let upid = ctx.node.tasks.spawn(
        "qmmove",
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = node.guest_locks.lock(vmid).await;
            let log = move |l: &str| task.log(l);
            crate::vm_move::move_disk(
                &node,
                vmid,
                &disk,
                &storage,
                format.as_deref(),
                delete,
                bwlimit,
                &log,
            )
            .await
            .map_err(|e| e.message)
        },
    )?;
    Ok(json!(upid.to_string()))
}

/// `+<size>` (grow by) or `<size>` (grow to) against `current` bytes.
/// One error for both of `move_disk`'s alternatives.
fn both_params(msg: &str) -> ApiError {
    ApiError::params(
        ["target-vmid", "storage"]
            .into_iter()
            .map(|k| (k.to_string(), msg.to_string()))
            .collect(),
    )
}

/// `move_disk` to another VM: the volume renamed to the target VM's
/// (see `vm_reassign.rs`), both VMs locked meanwhile.
async fn reassign(ctx: Ctx, vmid: u32, disk: String, target_vmid: u32) -> ApiResult<Value> {
    // Upstream: the same privilege on the target VM, and space on the
    // volume's storage.
    ctx.require_privs(&format!("/vms/{target_vmid}"), &["VM.Config.Disk"], false)?;
    let mv = crate::vm_reassign::Reassign {
        vmid,
        target_disk: ctx
            .opt_str("target-disk")
            .map(str::to_string)
            .unwrap_or_else(|| disk.clone()),
        disk,
        target_vmid,
        digest: ctx.opt_str("digest").map(str::to_string),
        target_digest: ctx.opt_str("target-digest").map(str::to_string),
    };
    let volid = crate::vm_reassign::check(&ctx.node, &mv)?;
    let storage = oxve_storage::VolumeId::parse(&volid)?.storage;
    ctx.require_privs(
        &format!("/storage/{storage}"),
        &["Datastore.AllocateSpace"],
        false,
    )?;
    let task_id = format!("{vmid}-{}>{target_vmid}-{}", mv.disk, mv.target_disk);
    let node: Arc<Node> = ctx.node.clone();
    let upid = ctx.node.tasks.spawn(
        "qmmove",
        Some(&task_id),
        &ctx.caller.authid(),
        move |task| async move {
            // Always the lower id first: two opposite moves cannot deadlock.
            let (a, b) = (vmid.min(target_vmid), vmid.max(target_vmid));
            let _first = node.guest_locks.lock(a).await;
            let _second = node.guest_locks.lock(b).await;
            let log = move |l: &str| task.log(l);
            crate::vm_reassign::run(&node, mv, &log)
                .await
                .map_err(|e| e.message)
        },
    )?;
    Ok(json!(upid.to_string()))
}

fn new_size(current: u64, size: &str) -> ApiResult<u64> {
    let (grow, amount) = match size.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, size),
    };
    let amount = oxve_schema::format::parse_size(amount)
        .ok_or_else(|| ApiError::param("size", format!("unable to parse size '{size}'")))?;
    let new = if grow { current + amount } else { amount };
    if new < current {
        return Err(ApiError::fail("shrinking disks is not supported"));
    }
    Ok(new)
}

async fn resize(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let disk = ctx.str("disk")?.to_string();
    let size = ctx.str("size")?.to_string();
    let digest = ctx.opt_str("digest").map(str::to_string);
    let skiplock = ctx.flag("skiplock");
    if skiplock && !ctx.caller.is_root() {
        return Err(ApiError::forbidden("only root can use skiplock"));
    }
    let loaded = ctx.node.load_vm(vmid)?;
    if digest.as_ref().is_some_and(|d| *d != loaded.digest) {
        return Err(ApiError::fail(
            "detected modified configuration - file changed by other user? Try again.",
        ));
    }
    if !skiplock {
        vm::check_unlocked(&loaded.conf)?;
    }
    let value = loaded
        .conf
        .main
        .get(&disk)
        .filter(|_| is_drive_key(&disk))
        .ok_or_else(|| ApiError::param("disk", format!("disk '{disk}' does not exist")))?
        .to_string();
    if vm::is_cdrom(&value) {
        return Err(ApiError::fail(format!("you can't resize a cdrom ({disk})")));
    }
    let volid = drive_file(&value)
        .filter(|f| oxve_storage::VolumeId::parse(f).is_ok())
        .ok_or_else(|| ApiError::fail(format!("{disk} is not a volume on a storage")))?
        .to_string();
    let vol = oxve_storage::VolumeId::parse(&volid)?;
    ctx.require_privs(
        &format!("/storage/{}", vol.storage),
        &["Datastore.AllocateSpace"],
        false,
    )?;
    let node: Arc<Node> = ctx.node.clone();
    let upid = ctx.node.tasks.spawn(
        "resize",
        Some(&vmid.to_string()),
        &ctx.caller.authid(),
        move |task| async move {
            let _guard = node.guest_locks.lock(vmid).await;
            let n = node.clone();
            let size_text = size.clone();
            // Storage side first (blocking); a running VM's file images are
            // grown by QEMU itself, which has them open.
            let running = node.vm_pid(vmid).is_some();
            let (target, log_line) = tokio::task::spawn_blocking(move || -> ApiResult<_> {
                let plugin = n.open_storage(&vol.storage)?;
                plugin.activate()?;
                plugin.activate_volume(&vol.volname)?;
                let (current, _) = plugin.volume_size(&vol.volname)?;
                let target = new_size(current, &size_text)?;
                let path = plugin.path(&vol.volname)?;
                let file_image = path.is_file();
                if !(running && file_image) {
                    plugin.resize(&vol.volname, target)?;
                }
                Ok((
                    target,
                    format!(
                        "growing {volid} from {} to {}{}",
                        oxve_schema::format::format_size(current),
                        oxve_schema::format::format_size(target),
                        if running { " (online)" } else { "" }
                    ),
                ))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.message)?;
            task.log(log_line);
            if running {
                let mut qmp = node
                    .qemu()
                    .qmp(vmid, Duration::from_secs(10))
                    .await
                    .map_err(|e| e.to_string())?;
                let padded = target.div_ceil(1024) * 1024;
                qmp.execute(
                    "block_resize",
                    Some(json!({"node-name": format!("drive-{disk}"), "size": padded})),
                )
                .await
                .map_err(|e| format!("online resize failed: {e}"))?;
            }
            let size_text = oxve_schema::format::format_size(target);
            let n = node.clone();
            tokio::task::spawn_blocking(move || {
                n.update_vm(vmid, |conf| {
                    let old = conf.main.get(&disk).unwrap_or_default().to_string();
                    let kept: Vec<&str> =
                        old.split(',').filter(|p| !p.starts_with("size=")).collect();
                    conf.main
                        .props
                        .insert(disk.clone(), format!("{},size={size_text}", kept.join(",")));
                    Ok(())
                })
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.message)
        },
    )?;
    Ok(json!(upid.to_string()))
}

/// Removes disks from the config; their volumes become `unused<n>`, or are
/// destroyed with `force` (as upstream's `qm disk unlink`).
async fn unlink(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let ids: Vec<String> = oxve_schema::format::split_list(ctx.str("idlist")?)
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut params = serde_json::Map::new();
    params.insert("node".into(), json!(ctx.node.name));
    params.insert("vmid".into(), json!(vmid));
    params.insert("delete".into(), json!(ids.join(",")));
    if ctx.flag("force") {
        params.insert("force".into(), json!(true));
    }
    let inner = Ctx { params, ..ctx };
    super::qemu::set_config_sync(inner).await
}

async fn sendkey(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let key = ctx.str("key")?.to_string();
    if !ctx.flag("skiplock") {
        vm::check_unlocked(&ctx.node.load_vm(vmid)?.conf)?;
    } else if !ctx.caller.is_root() {
        return Err(ApiError::forbidden("only root can use skiplock"));
    }
    if ctx.node.vm_pid(vmid).is_none() {
        return Err(ApiError::fail(format!("VM {vmid} not running")));
    }
    hmp(&ctx.node, vmid, &format!("sendkey {key}")).await?;
    Ok(Value::Null)
}

/// Monitor commands that only read (upstream lets `Sys.Audit` run them).
fn read_only(command: &str) -> bool {
    let first = command.split_whitespace().next().unwrap_or("");
    matches!(first, "?" | "help" | "info")
}

async fn monitor(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let command = ctx.str("command")?.to_string();
    if !read_only(&command) {
        ctx.require_privs(&format!("/vms/{vmid}"), &["Sys.Modify"], false)?;
    }
    ctx.node.load_vm(vmid)?;
    if ctx.node.vm_pid(vmid).is_none() {
        return Err(ApiError::fail(format!("VM {vmid} not running")));
    }
    Ok(json!(hmp(&ctx.node, vmid, &command).await?))
}

/// Runs a human monitor command over QMP and returns its output.
async fn hmp(node: &Node, vmid: u32, command: &str) -> ApiResult<String> {
    let mut qmp = node
        .qemu()
        .qmp(vmid, Duration::from_secs(10))
        .await
        .map_err(|e| ApiError::fail(e.to_string()))?;
    let out = qmp
        .execute(
            "human-monitor-command",
            Some(json!({ "command-line": command })),
        )
        .await
        .map_err(|e| ApiError::fail(e.to_string()))?;
    Ok(out.as_str().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(new_size(1 << 30, "+1G").unwrap(), 2 << 30);
        assert_eq!(new_size(1 << 30, "3G").unwrap(), 3 << 30);
        assert!(new_size(2 << 30, "1G").is_err());
        assert!(new_size(0, "lots").is_err());
    }

    #[test]
    fn monitor_reads() {
        assert!(read_only("info status"));
        assert!(read_only("help"));
        assert!(!read_only("quit"));
        assert!(!read_only("system_reset"));
    }
}
