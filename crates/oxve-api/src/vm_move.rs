//! Moving a VM disk to another storage (or format): offline with
//! `qemu-img convert`, online with QMP `drive-mirror` — the guest keeps
//! running and writing, and at the end QEMU switches to the copy. The
//! same mirror, cancelled once in step instead of switched, copies the
//! disks of a running VM for a full clone.

use crate::blocking;
use crate::error::{ApiError, ApiResult};
use crate::guest_volumes::open;
use crate::node::Node;
use crate::vm::{self, check_unlocked};
use crate::vm_clone::{copy_disk, CloneSpec};
use oxve_qemu::qmp::Qmp;
use oxve_schema::vmconfig::drive_file;
use oxve_storage::{Content, VolumeId};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

type Log<'a> = &'a (dyn Fn(&str) + Sync);

fn qmp_err(what: &'static str) -> impl Fn(oxve_qemu::qmp::QmpError) -> ApiError {
    move |e| ApiError::fail(format!("{what}: {e}"))
}

/// A new volume on `storage` for VM `vmid` as large as `src_volid`, in
/// `format` (default: the source's if the storage has it). Returns its
/// id, host path and format.
pub fn alloc_like(
    node: &Node,
    vmid: u32,
    src_volid: &str,
    storage: &str,
    format: Option<&str>,
) -> ApiResult<(String, std::path::PathBuf, String)> {
    let (src, volname) = open(node, src_volid)?;
    let src_format = src
        .parse_volname(&volname)?
        .format
        .unwrap_or_else(|| "raw".into());
    let (size, _) = src.volume_size(&volname)?;
    let dst = node.open_storage(storage)?;
    dst.activate()?;
    let formats = dst.def().kind.info().formats;
    let format = match format {
        Some(f) => f.to_string(),
        None if formats.contains(&src_format.as_str()) => src_format,
        None => dst.def().default_format().unwrap_or("raw").to_string(),
    };
    let name = dst.alloc_for(
        Some(Content::Images),
        vmid,
        Some(&format),
        None,
        size.div_ceil(1024),
    )?;
    dst.activate_volume(&name)?;
    let path = dst.path(&name)?;
    Ok((VolumeId::new(storage, &name).to_string(), path, format))
}

/// The node name of the image under drive `key`'s throttle node: the
/// node QEMU's `query-named-block-nodes` lists with the drive's file.
async fn format_node(qmp: &mut Qmp, key: &str, path: &std::path::Path) -> ApiResult<String> {
    let nodes = qmp
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .await
        .map_err(qmp_err("query-named-block-nodes"))?;
    let file = path.to_string_lossy();
    nodes
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| {
            n.get("file").and_then(Value::as_str) == Some(&*file)
                && n.get("drv").and_then(Value::as_str) != Some("file")
                && n.get("drv").and_then(Value::as_str) != Some("host_device")
                && n.get("drv").and_then(Value::as_str) != Some("throttle")
        })
        .and_then(|n| n.get("node-name").and_then(Value::as_str))
        .map(str::to_string)
        .ok_or_else(|| ApiError::fail(format!("QEMU has no image node for {key}")))
}

/// Mirrors running drive `key` (whose image is `src_path`) into the
/// existing `target` (`format`), logging progress. With `switch` the
/// drive uses the target from then on; else the job is cancelled once
/// in step, leaving a consistent copy.
#[allow(clippy::too_many_arguments)]
pub async fn mirror(
    qmp: &mut Qmp,
    key: &str,
    src_path: &std::path::Path,
    target: &std::path::Path,
    format: &str,
    switch: bool,
    bwlimit_kib: Option<u64>,
    log: Log<'_>,
) -> ApiResult<()> {
    let job = format!("mirror-{key}");
    let mut args = json!({
        "job-id": job,
        "device": format!("drive-{key}"),
        "target": target.to_string_lossy(),
        "format": format,
        "mode": "existing",
        "sync": "full",
        "auto-dismiss": false,
    });
    if switch {
        // The throttle node stays; its image child is replaced.
        args["replaces"] = json!(format_node(qmp, key, src_path).await?);
        let id: u64 = rand::random();
        args["node-name"] = json!(format!("f{id:016x}"));
    }
    if let Some(limit) = bwlimit_kib.filter(|l| *l > 0) {
        args["speed"] = json!(limit * 1024);
    }
    qmp.execute("drive-mirror", Some(args))
        .await
        .map_err(qmp_err("drive-mirror"))?;
    let started = std::time::Instant::now();
    let mut next_pct = 10;
    loop {
        let jobs = qmp
            .execute("query-block-jobs", None)
            .await
            .map_err(qmp_err("query-block-jobs"))?;
        let Some(info) = jobs
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j.get("device").and_then(Value::as_str) == Some(job.as_str()))
            .cloned()
        else {
            return Err(ApiError::fail(format!("{key}: mirror job vanished")));
        };
        if info.get("status").and_then(Value::as_str) == Some("concluded") {
            let why = info
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("job ended early");
            let _ = qmp.execute("job-dismiss", Some(json!({"id": job}))).await;
            return Err(ApiError::fail(format!("{key}: mirror failed: {why}")));
        }
        let len = info.get("len").and_then(Value::as_u64).unwrap_or(0);
        let offset = info.get("offset").and_then(Value::as_u64).unwrap_or(0);
        let pct = (offset * 100).checked_div(len).unwrap_or(0);
        if pct >= next_pct {
            log(&format!(
                "{key}: transferred {} MiB of {} MiB ({pct}%)",
                offset >> 20,
                len >> 20
            ));
            next_pct = pct - pct % 10 + 10;
        }
        if info.get("ready").and_then(Value::as_bool) == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (command, done) = if switch {
        ("job-complete", "switched to the copy")
    } else {
        ("job-cancel", "copy complete")
    };
    qmp.execute(command, Some(json!({"id": job})))
        .await
        .map_err(qmp_err("finishing the mirror"))?;
    loop {
        let jobs = qmp
            .execute("query-jobs", None)
            .await
            .map_err(qmp_err("query-jobs"))?;
        let info = jobs
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j.get("id").and_then(Value::as_str) == Some(job.as_str()))
            .cloned();
        match info {
            Some(j) if j.get("status").and_then(Value::as_str) == Some("concluded") => {
                let _ = qmp.execute("job-dismiss", Some(json!({"id": job}))).await;
                // A cancelled mirror that was in step is a good copy.
                if let Some(e) = j.get("error").and_then(Value::as_str) {
                    if switch || !e.contains("cancel") {
                        return Err(ApiError::fail(format!("{key}: mirror failed: {e}")));
                    }
                }
                break;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            None => break,
        }
    }
    log(&format!(
        "{key}: {done} in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Moves drive (or `unused<n>`) `key` of VM `vmid` to `storage`; the old
/// volume is freed with `delete`, else kept as `unused<n>` (as upstream).
#[allow(clippy::too_many_arguments)]
pub async fn move_disk(
    node: &Arc<Node>,
    vmid: u32,
    key: &str,
    storage: &str,
    format: Option<&str>,
    delete: bool,
    bwlimit_kib: Option<u64>,
    log: Log<'_>,
) -> ApiResult<()> {
    let conf = node.load_vm(vmid)?.conf;
    check_unlocked(&conf)?;
    let value = conf
        .main
        .get(key)
        .ok_or_else(|| ApiError::param("disk", format!("disk '{key}' does not exist")))?
        .to_string();
    let volid = drive_file(&value)
        .filter(|f| VolumeId::parse(f).is_ok() && !vm::is_cdrom(&value))
        .ok_or_else(|| ApiError::fail(format!("you can't move '{key}': it is not a disk volume")))?
        .to_string();
    let old = VolumeId::parse(&volid)?;
    if old.storage == storage && format.is_none() {
        return Err(ApiError::fail(format!(
            "you can't move to the same storage with same format ('{key}' is on '{storage}')"
        )));
    }
    let running = node.vm_pid(vmid).is_some() && !key.starts_with("unused");
    log(&format!(
        "moving {key} ({volid}) to storage '{storage}'{}",
        if running { " while the VM runs" } else { "" }
    ));
    let new_volid = if running {
        let (n, v, s, f) = (
            node.clone(),
            volid.clone(),
            storage.to_string(),
            format.map(str::to_string),
        );
        let (new_volid, target, new_format) =
            blocking(move || alloc_like(&n, vmid, &v, &s, f.as_deref())).await?;
        let (n, v) = (node.clone(), volid.clone());
        let src_path = blocking(move || {
            let (p, name) = open(&n, &v)?;
            Ok(p.path(&name)?)
        })
        .await?;
        let mut qmp = node
            .qemu()
            .qmp(vmid, Duration::from_secs(10))
            .await
            .map_err(|e| ApiError::fail(format!("VM {vmid} qmp: {e}")))?;
        let mirrored = mirror(
            &mut qmp,
            key,
            &src_path,
            &target,
            &new_format,
            true,
            bwlimit_kib,
            log,
        )
        .await;
        if let Err(e) = mirrored {
            let (n, v) = (node.clone(), new_volid.clone());
            let _ = blocking(move || vm::free_volume(&n, &v)).await;
            return Err(e);
        }
        new_volid
    } else {
        let (n, k, v, s, f) = (
            node.clone(),
            key.to_string(),
            volid.clone(),
            storage.to_string(),
            format.map(str::to_string),
        );
        let lines = std::sync::Mutex::new(Vec::<String>::new());
        let (copied, lines) = blocking(move || {
            let spec = CloneSpec {
                vmid,
                newid: vmid,
                full: true,
                storage: Some(&s),
                format: f.as_deref(),
                snapname: None,
                bwlimit_kib,
                running: None,
            };
            let r = copy_disk(&n, &k, &v, &spec, &|l| {
                lines
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(l.to_string())
            });
            Ok((r, lines.into_inner().unwrap_or_default()))
        })
        .await?;
        for l in &lines {
            log(l);
        }
        copied?
    };
    let (n, k, v, nv) = (
        node.clone(),
        key.to_string(),
        volid.clone(),
        new_volid.clone(),
    );
    let updated = blocking(move || {
        n.update_vm(vmid, |conf| {
            let current = conf.main.get(&k).unwrap_or_default().to_string();
            if drive_file(&current) != Some(v.as_str()) {
                return Err(ApiError::fail(format!("{k} changed while it was copied")));
            }
            let moved: Vec<&str> = current
                .split(',')
                .filter(|p| !p.starts_with("format="))
                .collect();
            let new_value = moved.join(",").replacen(&v, &nv, 1);
            conf.main.props.insert(k.clone(), new_value);
            if !delete {
                let free = (0..)
                    .map(|i| format!("unused{i}"))
                    .find(|u| !conf.main.props.contains_key(u))
                    .unwrap_or_default();
                conf.main.props.insert(free, v.clone());
            }
            Ok(())
        })
    })
    .await;
    if let Err(e) = updated {
        if !running {
            let (n, v) = (node.clone(), new_volid.clone());
            let _ = blocking(move || vm::free_volume(&n, &v)).await;
        }
        return Err(e);
    }
    log(&format!("{key} is now {new_volid}"));
    if delete {
        let (n, v) = (node.clone(), volid.clone());
        match blocking(move || vm::free_volume(&n, &v)).await {
            Ok(()) => log(&format!("removed {volid}")),
            Err(e) => log(&format!("could not remove {volid}: {}", e.message)),
        }
    }
    Ok(())
}
