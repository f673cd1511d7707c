//! Hot-plug: pending changes of a running VM that QEMU can take at once
//! (per the VM's `hotplug` option, as upstream): NICs added, removed or
//! re-plugged, SCSI and VirtIO disks added or removed, CD-ROM media
//! changed. The devices plugged are the ones a fresh start would create:
//! their arguments are taken from the command line generated for the
//! config with the change applied. What cannot be plugged stays in
//! `[PENDING]` and the task log says why.

use crate::blocking;
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use crate::vm::{self, is_cdrom};
use oxve_qemu::qmp::Qmp;
use oxve_schema::vmconfig::{drive_file, VmSection};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

type Log<'a> = &'a (dyn Fn(&str) + Sync);

/// What a `hotplug` value allows (upstream's default: network, disk, usb).
fn allows(hotplug: Option<&str>, what: &str) -> bool {
    match hotplug.unwrap_or("network,disk,usb") {
        "0" => false,
        "1" => ["network", "disk", "usb"].contains(&what),
        list => list.split(',').any(|w| w == what),
    }
}

/// The kind of device a key names, when it can be hot-plugged.
fn kind(key: &str) -> Option<&'static str> {
    let index = |p: &str| key.strip_prefix(p).and_then(|i| i.parse::<u32>().ok());
    if index("net").is_some() {
        Some("network")
    } else if index("scsi").is_some() || index("virtio").is_some() {
        Some("disk")
    } else if index("ide").is_some() || index("sata").is_some() {
        Some("cdrom")
    } else {
        None
    }
}

fn fail(what: &str) -> impl Fn(oxve_qemu::qmp::QmpError) -> ApiError + '_ {
    move |e| ApiError::fail(format!("{what}: {e}"))
}

/// The arguments of `option` (`-device`, `-netdev`, ...) in `args` whose
/// value names `id` (`id=<id>`, `"node-name":"<id>"`, `"id":"<id>"`).
fn arg_for(args: &[String], option: &str, id: &str) -> Option<String> {
    args.windows(2).find_map(|w| {
        let v = &w[1];
        let named = v.split(',').any(|p| p == format!("id={id}"))
            || v.contains(&format!("\"node-name\":\"{id}\""))
            || v.contains(&format!("\"id\":\"{id}\""));
        (w[0] == option && named).then(|| v.clone())
    })
}

async fn hmp(qmp: &mut Qmp, line: &str) -> ApiResult<()> {
    let out = qmp
        .execute(
            "human-monitor-command",
            Some(json!({ "command-line": line })),
        )
        .await
        .map_err(fail(line))?;
    let text = out.as_str().unwrap_or("").trim();
    if text.is_empty() {
        Ok(())
    } else {
        Err(ApiError::fail(format!("{line}: {text}")))
    }
}

/// Ids of the devices QEMU has (`/machine/peripheral`).
async fn device_ids(qmp: &mut Qmp) -> ApiResult<Vec<String>> {
    let list = qmp
        .execute("qom-list", Some(json!({"path": "/machine/peripheral"})))
        .await
        .map_err(fail("qom-list"))?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let t = p.get("type").and_then(Value::as_str)?;
            t.starts_with("child<")
                .then(|| p.get("name").and_then(Value::as_str).map(str::to_string))?
        })
        .collect())
}

/// Removes device `id` and waits until the guest let it go.
async fn device_del(qmp: &mut Qmp, id: &str) -> ApiResult<()> {
    qmp.take_events();
    qmp.execute("device_del", Some(json!({ "id": id })))
        .await
        .map_err(fail("device_del"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if !device_ids(qmp).await?.iter().any(|d| d == id) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(ApiError::fail(format!(
                "the guest did not release device '{id}' (no ACPI hot-plug support?)"
            )));
        }
        let _ = qmp
            .wait_event("DEVICE_DELETED", Duration::from_millis(500))
            .await;
    }
}

/// Plugs `key` as the command line generated for `section` has it.
async fn plug(qmp: &mut Qmp, key: &str, args: &[String]) -> ApiResult<()> {
    let present = device_ids(qmp).await?;
    if key.starts_with("net") {
        let netdev = arg_for(args, "-netdev", key)
            .ok_or_else(|| ApiError::fail(format!("{key}: no netdev generated")))?;
        hmp(qmp, &format!("netdev_add {netdev}")).await?;
    } else {
        if let Some(obj) = arg_for(args, "-object", &format!("throttle-drive-{key}")) {
            let v: Value = serde_json::from_str(&obj).map_err(|e| ApiError::fail(e.to_string()))?;
            qmp.execute("object-add", Some(v))
                .await
                .map_err(fail("object-add"))?;
        }
        let bd = arg_for(args, "-blockdev", &format!("drive-{key}"))
            .ok_or_else(|| ApiError::fail(format!("{key}: no block device generated")))?;
        let v: Value = serde_json::from_str(&bd).map_err(|e| ApiError::fail(e.to_string()))?;
        qmp.execute("blockdev-add", Some(v))
            .await
            .map_err(fail("blockdev-add"))?;
    }
    let device = arg_for(args, "-device", key)
        .ok_or_else(|| ApiError::fail(format!("{key}: no device generated")))?;
    // A disk may need its own controller (virtio-scsi-single) first.
    if let Some(bus) = device
        .split(',')
        .find_map(|p| p.strip_prefix("bus="))
        .and_then(|b| b.strip_suffix(".0"))
        .filter(|b| b.starts_with("virtioscsi") || b.starts_with("scsihw"))
    {
        if !present.iter().any(|d| d == bus) {
            let ctrl = arg_for(args, "-device", bus)
                .ok_or_else(|| ApiError::fail(format!("{key}: no controller {bus}")))?;
            hmp(qmp, &format!("device_add {ctrl}")).await?;
        }
    }
    hmp(qmp, &format!("device_add {device}")).await
}

/// Unplugs `key` and what backs it (with `controller`, the disk's own
/// SCSI controller too).
async fn unplug(qmp: &mut Qmp, key: &str, controller: Option<&str>) -> ApiResult<()> {
    device_del(qmp, key).await?;
    if key.starts_with("net") {
        hmp(qmp, &format!("netdev_del {key}")).await
    } else {
        if let Some(c) = controller {
            if device_ids(qmp).await?.iter().any(|d| d == c) {
                device_del(qmp, c).await?;
            }
        }
        // The device lets go of its node asynchronously.
        let node = json!({"node-name": format!("drive-{key}")});
        let mut tries = 0;
        loop {
            match qmp.execute("blockdev-del", Some(node.clone())).await {
                Ok(_) => break,
                Err(e) if tries < 25 && e.to_string().contains("in use") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(fail("blockdev-del")(e)),
            }
        }
        let _ = qmp
            .execute(
                "object-del",
                Some(json!({"id": format!("throttle-drive-{key}")})),
            )
            .await;
        Ok(())
    }
}

/// A NIC value's options other than those a re-plug changes live.
fn nic_identity(value: &str) -> Vec<&str> {
    let live = [
        "bridge=",
        "tag=",
        "trunks=",
        "rate=",
        "firewall=",
        "link_down=",
    ];
    let mut parts: Vec<&str> = value
        .split(',')
        .filter(|p| !live.iter().any(|l| p.starts_with(l)))
        .collect();
    parts.sort_unstable();
    parts
}

fn opt<'a>(value: &'a str, key: &str) -> Option<&'a str> {
    value
        .split(',')
        .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
}

/// Applies one pending change of a running VM; `Ok(false)` when it
/// cannot be done live.
async fn apply_one(
    node: &Arc<Node>,
    qmp: &mut Qmp,
    vmid: u32,
    key: &str,
    old: Option<&str>,
    new: Option<&str>,
    section: &VmSection,
) -> ApiResult<bool> {
    let n = node.clone();
    let s = section.clone();
    let args = blocking(move || {
        vm::write_plugs(&n, vmid, &s)?;
        Ok(vm::command_line(&n, vmid, &s, true)?.0.args)
    })
    .await?;
    match (kind(key), old, new) {
        (Some("cdrom"), Some(o), Some(v)) if is_cdrom(o) && is_cdrom(v) => {
            let file = drive_file(v).unwrap_or("none");
            if file == "none" || file == "cdrom" {
                qmp.execute("eject", Some(json!({"id": key, "force": true})))
                    .await
                    .map_err(fail("eject"))?;
                return Ok(true);
            }
            let (n, f) = (node.clone(), file.to_string());
            let path = blocking(move || {
                if f.starts_with('/') {
                    return Ok(std::path::PathBuf::from(f));
                }
                let (p, name) = crate::guest_volumes::open(&n, &f)?;
                Ok(p.path(&name)?)
            })
            .await?;
            qmp.execute(
                "blockdev-change-medium",
                Some(json!({"id": key, "filename": path.to_string_lossy(), "format": "raw"})),
            )
            .await
            .map_err(fail("blockdev-change-medium"))?;
            Ok(true)
        }
        (Some("cdrom"), _, _) => Ok(false),
        (Some("network"), Some(o), Some(v)) if nic_identity(o) == nic_identity(v) => {
            // Same device: move the tap to its new bridge/VLAN/rate.
            let index: u32 = key[3..].parse().unwrap_or(0);
            let tap = format!("tap{vmid}i{index}");
            let plug_file = node.qemu().plug_file(vmid, index);
            let n = node.clone();
            blocking(move || {
                let text = std::fs::read_to_string(&plug_file)
                    .map_err(|e| ApiError::fail(format!("plug file: {e}")))?;
                let args: Vec<String> = text.split_whitespace().map(str::to_string).collect();
                let plug = oxve_lxc::net::Plug::from_args(&args)
                    .map_err(|e| ApiError::fail(e.to_string()))?;
                n.lxc()
                    .in_netns(|| Ok(plug.apply(&tap)))
                    .map_err(|e| ApiError::fail(e.to_string()))?
                    .map_err(|e| ApiError::fail(e.to_string()))
            })
            .await?;
            let up = opt(v, "link_down") != Some("1");
            qmp.execute("set_link", Some(json!({"name": key, "up": up})))
                .await
                .map_err(fail("set_link"))?;
            Ok(true)
        }
        (Some(_), Some(o), Some(_)) if is_cdrom(o) => Ok(false),
        (Some("disk"), Some(_), Some(_)) => Ok(false),
        (Some(_), Some(_), Some(_)) => {
            unplug(qmp, key, None).await?;
            plug(qmp, key, &args).await.map(|_| true)
        }
        (Some(_), None, Some(_)) => plug(qmp, key, &args).await.map(|_| true),
        (Some(_), Some(_), None) => {
            // A disk of virtio-scsi-single has a controller of its own.
            let own = key
                .strip_prefix("scsi")
                .filter(|_| section.get("scsihw") == Some("virtio-scsi-single"))
                .map(|i| format!("virtioscsi{i}"));
            unplug(qmp, key, own.as_deref()).await.map(|_| true)
        }
        _ => Ok(false),
    }
}

/// Plugs what it can of VM `vmid`'s pending changes and moves them from
/// `[PENDING]` into the config; the rest waits for the next start.
pub async fn apply_pending(node: &Arc<Node>, vmid: u32, log: Log<'_>) -> ApiResult<()> {
    if node.vm_pid(vmid).is_none() {
        return Ok(());
    }
    let conf = node.load_vm(vmid)?.conf;
    let hotplug = conf.main.get("hotplug").map(str::to_string);
    let mut keys: Vec<(String, bool)> = conf
        .pending
        .props
        .keys()
        .filter(|k| *k != "delete")
        .map(|k| (k.clone(), false))
        .chain(conf.pending_deletes().into_keys().map(|k| (k, true)))
        .collect();
    keys.sort();
    let todo: Vec<(String, bool)> = keys
        .into_iter()
        .filter(|(k, _)| {
            kind(k)
                .is_some_and(|w| allows(hotplug.as_deref(), if w == "cdrom" { "disk" } else { w }))
        })
        .collect();
    if todo.is_empty() {
        return cloudinit(node, vmid, hotplug.as_deref(), log).await;
    }
    let mut qmp = node
        .qemu()
        .qmp(vmid, Duration::from_secs(10))
        .await
        .map_err(|e| ApiError::fail(format!("VM {vmid} qmp: {e}")))?;
    for (key, delete) in todo {
        let conf = node.load_vm(vmid)?.conf;
        let old = conf.main.get(&key).map(str::to_string);
        let new = (!delete)
            .then(|| conf.pending.get(&key).map(str::to_string))
            .flatten();
        let mut section = conf.main.clone();
        match &new {
            Some(v) => section.props.insert(key.clone(), v.clone()),
            None => section.props.remove(&key),
        };
        let done = apply_one(
            node,
            &mut qmp,
            vmid,
            &key,
            old.as_deref(),
            new.as_deref(),
            &section,
        )
        .await;
        match done {
            Ok(true) => {
                let (n, k) = (node.clone(), key.clone());
                blocking(move || {
                    n.update_vm(vmid, |conf| {
                        let old = conf.main.props.remove(&k);
                        match conf.pending.props.remove(&k) {
                            Some(v) if !delete => {
                                conf.main.props.insert(k.clone(), v);
                            }
                            _ => {}
                        }
                        conf.remove_pending_delete(&k);
                        if let Some(o) = old {
                            if conf.main.get(&k) != Some(o.as_str()) {
                                vm::keep_unused(conf, &k, &o);
                            }
                        }
                        Ok(())
                    })
                })
                .await?;
                log(&format!("hotplug: {key} applied"));
            }
            Ok(false) => log(&format!(
                "{key}: cannot be changed live, pending until the next start"
            )),
            Err(e) => log(&format!("hotplug problem - {key}: {}", e.message)),
        }
    }
    cloudinit(node, vmid, hotplug.as_deref(), log).await
}

/// With `hotplug: cloudinit`, changed cloud-init values reach the running
/// VM's drive at once (upstream's), as `PUT .../cloudinit` does.
async fn cloudinit(
    node: &Arc<Node>,
    vmid: u32,
    hotplug: Option<&str>,
    log: Log<'_>,
) -> ApiResult<()> {
    if !allows(hotplug, "cloudinit") {
        return Ok(());
    }
    let conf = node.load_vm(vmid)?.conf;
    if !conf.special.contains_key("cloudinit") {
        return Ok(());
    }
    let Some((key, _)) = crate::vm_cloudinit::drive(vmid, &conf.main) else {
        return Ok(());
    };
    match crate::handlers::qemu_cloudinit::update_drive(node, vmid, &key).await {
        Ok(()) => log(&format!("hotplug: cloud-init drive {key} regenerated")),
        Err(e) => log(&format!("hotplug problem - cloudinit: {}", e.message)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hotplug_option_as_upstream() {
        assert!(allows(None, "network") && allows(None, "disk") && !allows(None, "cpu"));
        assert!(!allows(Some("0"), "disk"));
        assert!(allows(Some("1"), "disk"));
        assert!(allows(Some("network,cpu"), "cpu") && !allows(Some("network,cpu"), "disk"));
    }

    #[test]
    fn args_are_found_by_id() {
        let args: Vec<String> = [
            "-netdev",
            "type=tap,id=net1,ifname=tap1i1",
            "-device",
            "virtio-net-pci,mac=x,netdev=net1,id=net1",
            "-blockdev",
            r#"{"driver":"throttle","node-name":"drive-scsi1"}"#,
            "-device",
            "scsi-hd,drive=drive-scsi1,id=scsi1",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            arg_for(&args, "-device", "scsi1").as_deref(),
            Some("scsi-hd,drive=drive-scsi1,id=scsi1")
        );
        assert!(arg_for(&args, "-blockdev", "drive-scsi1").is_some());
        assert!(arg_for(&args, "-netdev", "net1").is_some());
        assert!(arg_for(&args, "-device", "net2").is_none());
    }

    #[test]
    fn nic_replug_needs_same_model_and_mac() {
        assert_eq!(
            nic_identity("virtio=AA,bridge=vmbr0"),
            nic_identity("virtio=AA,bridge=vmbr1,tag=5")
        );
        assert_ne!(
            nic_identity("virtio=AA,bridge=vmbr0"),
            nic_identity("e1000=AA,bridge=vmbr0")
        );
    }
}
