//! Cloud-init drives of VMs: the glue between the VM config in the store,
//! the storages and `oxve_qemu::cloudinit` (which renders the seed and
//! makes the ISO).
//!
//! As upstream, the drive is a 4 MiB volume `vm-<vmid>-cloudinit` (qcow2
//! on file storages, raw on block storages) attached as a CD-ROM; a config
//! names a new one `<storage>:cloudinit`. The ISO is written into it at
//! every start ([`prepare`]) and on `PUT .../cloudinit` ([`regenerate`]).
//! Changes of cloud-init options on a running VM take effect in the config
//! at once and are recorded in `[special:cloudinit]` (the values the drive
//! was made from) until the drive is regenerated ([`record_change`],
//! [`pending`]). `cipassword` is stored hashed ([`check_changes`]).

use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use oxve_qemu::cloudinit::{self, CloudInitError, DumpKind, HostDns};
use oxve_schema::vmconfig::{drive_file, is_drive_key, VmConfig, VmSection};
use oxve_storage::{Content, VolumeId};
use serde_json::{json, Value};
use std::path::PathBuf;

/// The cloud-init options of the config (upstream's `$cloudinitoptions`;
/// `ipconfig<n>` besides).
pub const OPTIONS: &[&str] = &[
    "cicustom",
    "cipassword",
    "citype",
    "ciuser",
    "ciupgrade",
    "nameserver",
    "searchdomain",
    "sshkeys",
];

/// Whether `key` is a cloud-init option (which a running VM takes at once,
/// as upstream's "fast plug" options).
pub fn is_option(key: &str) -> bool {
    OPTIONS.contains(&key) || is_ipconfig(key)
}

fn is_ipconfig(key: &str) -> bool {
    key.strip_prefix("ipconfig")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Whether a change of `key` changes what the drive holds (upstream's
/// `cloudinit_pending_properties`: the options and `name`).
fn changes_seed(key: &str) -> bool {
    is_option(key) || key == "name"
}

/// Whether a drive value is a cloud-init drive (upstream's
/// `drive_is_cloudinit`: `[:/](vm-<n>-)cloudinit(.<format>)` at the end of
/// its file).
pub fn is_cloudinit_drive(value: &str) -> bool {
    let Some(file) = drive_file(value) else {
        return false;
    };
    let name = file.rsplit([':', '/']).next().unwrap_or_default();
    if name.len() == file.len() {
        return false;
    }
    let stem = match name.rsplit_once('.') {
        Some((s, ext)) if ["raw", "qcow", "qcow2", "qed", "vmdk", "cloop"].contains(&ext) => s,
        _ => name,
    };
    let stem = stem
        .strip_prefix("vm-")
        .and_then(|r| r.split_once('-'))
        .filter(|(id, _)| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
        .map_or(stem, |(_, rest)| rest);
    stem == "cloudinit"
}

/// `<storage>:cloudinit` (a new cloud-init drive) as a drive's file: the
/// storage.
pub fn new_drive_storage(file: &str) -> Option<&str> {
    let storage = file.strip_suffix(":cloudinit")?;
    oxve_storage::volume::is_storage_id(storage).then_some(storage)
}

/// The volume of `old` when it is a cloud-init drive that `new` (the
/// replacing value, `None` when deleted) does not keep: upstream frees it
/// at once rather than keeping it as `unused<n>`.
pub fn replaced_volume(old: &str, new: Option<&str>) -> Option<String> {
    if !is_cloudinit_drive(old) {
        return None;
    }
    let file = drive_file(old)?;
    VolumeId::parse(file).ok()?;
    (new.and_then(drive_file) != Some(file)).then(|| file.to_string())
}

/// VM `vmid`'s own cloud-init drive in `section`: drive key and volume id.
pub fn drive(vmid: u32, section: &VmSection) -> Option<(String, String)> {
    let own = format!("vm-{vmid}-cloudinit");
    section
        .props
        .iter()
        .filter(|(k, v)| is_drive_key(k) && is_cloudinit_drive(v))
        .find_map(|(k, v)| {
            let file = drive_file(v)?;
            let vol = VolumeId::parse(file).ok()?;
            vol.volname
                .contains(&own)
                .then(|| (k.clone(), file.to_string()))
        })
}

/// Allocates a new cloud-init drive for drive `key` from its
/// `<storage>:cloudinit` value: `vm-<vmid>-cloudinit` of 4 MiB (qcow2
/// on file storages unless `format=` says otherwise, raw elsewhere).
/// Returns the volume id and the drive value (`<volid>,media=cdrom`).
pub fn alloc_drive(node: &Node, vmid: u32, key: &str, value: &str) -> ApiResult<(String, String)> {
    let file = drive_file(value).unwrap_or_default();
    let storage = new_drive_storage(file)
        .ok_or_else(|| ApiError::param(key, "not a new cloud-init drive"))?;
    if let Ok(loaded) = node.load_vm(vmid) {
        for section in [&loaded.conf.main, &loaded.conf.pending] {
            if let Some((other, _)) = section
                .props
                .iter()
                .find(|(k, v)| k.as_str() != key && is_drive_key(k) && is_cloudinit_drive(v))
            {
                return Err(ApiError::fail(format!(
                    "{key} - cloud-init drive is already attached at '{other}'"
                )));
            }
        }
    }
    let opt = |name: &str| {
        value
            .split(',')
            .skip(1)
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
    };
    let plugin = node.open_storage(storage)?;
    plugin.activate()?;
    let format = match opt("format") {
        Some(f) => f,
        None if plugin.def().kind.is_file_based() => "qcow2",
        None => "raw",
    };
    let volname = plugin
        .alloc_for(
            Some(Content::Images),
            vmid,
            Some(format),
            Some(&format!("vm-{vmid}-cloudinit")),
            cloudinit::DISK_SIZE / 1024,
        )
        .map_err(|e| ApiError::fail(format!("{key}: {e}")))?;
    let volid = VolumeId::new(storage, &volname).to_string();
    let mut new = format!("{volid},media=cdrom");
    for part in value.split(',').skip(1) {
        let name = part.split('=').next().unwrap_or_default();
        if !["media", "format", "size"].contains(&name) {
            new.push(',');
            new.push_str(part);
        }
    }
    Ok((volid, new))
}

/// Checks and normalizes the cloud-init options of a create or config
/// update before anything is stored: `cipassword` is hashed (SHA-512
/// crypt) unless already a crypt hash or the VM runs Windows
/// (cloudbase-init needs the password itself), as upstream at set time;
/// every `cicustom` volume must name a snippet on an existing storage.
/// `ostype`: the VM's current one (a new one among `changes` wins).
pub fn check_changes(
    node: &Node,
    ostype: Option<&str>,
    changes: &mut [(String, String)],
) -> ApiResult<()> {
    let ostype = changes
        .iter()
        .find(|(k, _)| k == "ostype")
        .map(|(_, v)| v.clone())
        .or(ostype.map(str::to_string));
    for (key, value) in changes.iter_mut() {
        match key.as_str() {
            "cipassword"
                if cloudinit::windows_version(ostype.as_deref()) == 0 && !is_crypt_hash(value) =>
            {
                *value = oxve_access::password::hash_password(value);
            }
            "cicustom" => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    let volid = part.split_once('=').map(|(_, v)| v).unwrap_or(part);
                    snippet_path(node, volid).map_err(|e| ApiError::param("cicustom", e))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// [`check_changes`] for the options of a new VM's config section.
pub fn check_section(node: &Node, section: &mut VmSection) -> ApiResult<()> {
    let mut changes: Vec<(String, String)> = section
        .props
        .iter()
        .filter(|(k, _)| *k == "cipassword" || *k == "cicustom")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    check_changes(node, section.get("ostype"), &mut changes)?;
    section.props.extend(changes);
    Ok(())
}

/// A crypt hash as cloud-init recognizes one (`$1$`, `$2a$`, `$2y$`,
/// `$5$`, `$6$` followed by salt and hash).
fn is_crypt_hash(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('$') else {
        return false;
    };
    let rest = ["1$", "2a$", "2y$", "5$", "6$"]
        .iter()
        .find_map(|p| rest.strip_prefix(p));
    rest.and_then(|r| r.split_once('$'))
        .is_some_and(|(salt, hash)| !salt.is_empty() && !hash.is_empty())
}

/// Records that cloud-init option `key` of a running VM changes from `old`
/// to `new` (`None`: unset) in `[special:cloudinit]`, which keeps the
/// values the drive was made from and the list of options `added` since
/// (upstream's `cloudinit_record_changed`).
pub fn record_change(conf: &mut VmConfig, key: &str, old: Option<&str>, new: Option<&str>) {
    if !changes_seed(key) {
        return;
    }
    let ci = conf.special.entry("cloudinit".into()).or_default();
    let recorded = ci.props.get(key).cloned();
    let mut added: Vec<String> = ci
        .props
        .remove("added")
        .map(|a| {
            oxve_schema::format::split_list(&a)
                .into_iter()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let is_added = added.iter().any(|a| a == key);
    match (old, new) {
        (_, Some(new)) if recorded.as_deref() == Some(new) => {
            // Back to what the drive holds.
            ci.props.remove(key);
            added.retain(|a| a != key);
        }
        (_, Some(_)) if recorded.is_some() || is_added => {}
        (Some(old), Some(_)) => {
            ci.props.insert(key.into(), old.into());
        }
        (None, Some(_)) => added.push(key.into()),
        (None, None) => {}
        (Some(_), None) if recorded.is_some() => {}
        (Some(_), None) if is_added => added.retain(|a| a != key),
        (Some(old), None) => {
            ci.props.insert(key.into(), old.into());
        }
    }
    added.sort();
    added.dedup();
    if !added.is_empty() {
        ci.props.insert("added".into(), added.join(","));
    }
    if ci.is_empty() {
        conf.special.remove("cloudinit");
    }
}

/// `GET .../cloudinit`: each cloud-init value as the drive holds it
/// (`value`) and as the config has it now (`pending`), or `delete` when
/// it was removed since; passwords masked.
pub fn pending(conf: &VmConfig) -> Value {
    let mask = |k: &str, v: &str| {
        if k == "cipassword" {
            "**********".to_string()
        } else {
            v.to_string()
        }
    };
    let main = &conf.main;
    let ci = conf.special.get("cloudinit").cloned().unwrap_or_default();
    let added: Vec<String> = ci
        .get("added")
        .map(|a| {
            oxve_schema::format::split_list(a)
                .into_iter()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for key in &added {
        let mut item = json!({ "key": key });
        if let Some(v) = main.get(key) {
            item["pending"] = json!(mask(key, v));
        }
        out.push(item);
    }
    for (key, value) in &main.props {
        if !changes_seed(key) || value.is_empty() || value == "0" || added.contains(key) {
            continue;
        }
        let item = match ci.get(key).filter(|v| !v.is_empty() && *v != "0") {
            Some(old) => json!({"key": key, "value": mask(key, old), "pending": mask(key, value)}),
            None => json!({"key": key, "value": mask(key, value)}),
        };
        out.push(item);
    }
    for key in ci.props.keys() {
        if key == "added" || main.get(key).is_some_and(|v| !v.is_empty() && v != "0") {
            continue;
        }
        out.push(json!({"key": key, "delete": 1}));
    }
    Value::Array(out)
}

/// Writes VM `vmid`'s cloud-init drive for its next start, when `section`
/// (the config it starts with) has one, and forgets the recorded changes.
pub fn prepare(node: &Node, vmid: u32, section: &VmSection, log: &dyn Fn(&str)) -> ApiResult<()> {
    let Some((_, volid)) = drive(vmid, section) else {
        return Ok(());
    };
    write_drive(node, vmid, section, &volid, log)?;
    forget_changes(node, vmid)
}

/// Regenerates the drive of stopped VM `vmid` from its current config
/// (`PUT .../cloudinit`); returns the drive key, volume path and format
/// for a running VM's medium change, `None` when it has no drive.
pub fn regenerate(
    node: &Node,
    vmid: u32,
    log: &dyn Fn(&str),
) -> ApiResult<Option<(String, PathBuf, String)>> {
    let section = node.load_vm(vmid)?.conf.main;
    let Some((key, volid)) = drive(vmid, &section) else {
        return Ok(None);
    };
    let (path, format) = write_drive(node, vmid, &section, &volid, log)?;
    forget_changes(node, vmid)?;
    Ok(Some((key, path, format)))
}

/// The text `qm cloudinit dump` shows.
pub fn dump(
    node: &Node,
    vmid: u32,
    section: &VmSection,
    kind: DumpKind,
    mask_password: bool,
) -> ApiResult<String> {
    let resolve = |volid: &str| snippet_path(node, volid);
    cloudinit::dump(
        vmid,
        section,
        &host_dns(node),
        kind,
        mask_password,
        &resolve,
    )
    .map_err(ci_error)
}

/// Renders the seed and writes its ISO into the drive's volume (made anew
/// when it is missing, as upstream); returns the volume's path and format.
fn write_drive(
    node: &Node,
    vmid: u32,
    section: &VmSection,
    volid: &str,
    log: &dyn Fn(&str),
) -> ApiResult<(PathBuf, String)> {
    let resolve = |v: &str| snippet_path(node, v);
    let seed = cloudinit::render(vmid, section, &host_dns(node), &resolve).map_err(ci_error)?;
    let vol = VolumeId::parse(volid)?;
    let plugin = node.open_storage(&vol.storage)?;
    plugin.activate()?;
    let parsed = plugin.parse_volname(&vol.volname)?;
    let format = parsed.format.clone().unwrap_or_else(|| "raw".into());
    let activated = plugin.activate_volume(&vol.volname);
    let size = match (plugin.volume_size(&vol.volname), activated) {
        (Ok((size, _)), Ok(())) if size > 0 => size,
        // It exists, so its activation must work.
        (Ok((size, _)), Err(e)) if size > 0 => return Err(e.into()),
        _ => {
            log(&format!(
                "cloud-init volume '{volid}' is missing - allocating it"
            ));
            let stem = parsed
                .name
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string();
            plugin.alloc_for(
                Some(Content::Images),
                vmid,
                Some(&format),
                Some(&stem),
                cloudinit::DISK_SIZE / 1024,
            )?;
            plugin.activate_volume(&vol.volname)?;
            cloudinit::DISK_SIZE
        }
    };
    let path = plugin.path(&vol.volname)?;
    log("generating cloud-init ISO");
    let run = node.path("run/oxve/cloudinit");
    std::fs::create_dir_all(&run)
        .map_err(|e| ApiError::fail(format!("cannot create '{}': {e}", run.display())))?;
    let iso = run.join(format!("{vmid}.iso"));
    let result = cloudinit::build_iso(&seed, &run.join(vmid.to_string()), &iso)
        .and_then(|()| cloudinit::write_volume(&iso, &path, &format, size));
    let _ = std::fs::remove_file(&iso);
    result.map_err(ci_error)?;
    Ok((path, format))
}

/// Drops `[special:cloudinit]`: the drive now holds the config's values.
fn forget_changes(node: &Node, vmid: u32) -> ApiResult<()> {
    if !node.load_vm(vmid)?.conf.special.contains_key("cloudinit") {
        return Ok(());
    }
    node.update_vm(vmid, |conf| {
        conf.special.remove("cloudinit");
        Ok(())
    })
}

/// The host path of snippet volume `volid`, or why it cannot be one.
fn snippet_path(node: &Node, volid: &str) -> Result<PathBuf, String> {
    let vol = VolumeId::parse(volid).map_err(|e| e.to_string())?;
    let plugin = node.open_storage(&vol.storage).map_err(|e| e.message)?;
    let parsed = plugin
        .parse_volname(&vol.volname)
        .map_err(|e| e.to_string())?;
    if parsed.content != Content::Snippets {
        return Err(format!("{volid} is not in the snippets directory"));
    }
    plugin.activate().map_err(|e| e.to_string())?;
    plugin.path(&vol.volname).map_err(|e| e.to_string())
}

/// The node's DNS settings (`etc/resolv.conf` below its root, what
/// `/nodes/{node}/dns` edits).
fn host_dns(node: &Node) -> HostDns {
    let text = std::fs::read_to_string(node.path("etc/resolv.conf")).unwrap_or_default();
    HostDns::parse_resolv_conf(&text)
}

fn ci_error(e: CloudInitError) -> ApiError {
    ApiError::fail(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudinit_drives_recognized_as_upstream() {
        assert!(is_cloudinit_drive(
            "local:100/vm-100-cloudinit.qcow2,media=cdrom"
        ));
        assert!(is_cloudinit_drive("lvm:vm-120-cloudinit,media=cdrom"));
        assert!(is_cloudinit_drive("local:cloudinit"));
        assert!(!is_cloudinit_drive("local:iso/cloudinit.iso,media=cdrom"));
        assert!(!is_cloudinit_drive("local:100/vm-100-disk-0.qcow2"));
        assert_eq!(new_drive_storage("local-lvm:cloudinit"), Some("local-lvm"));
        assert_eq!(new_drive_storage("local:100/vm-100-cloudinit.qcow2"), None);
    }

    #[test]
    fn own_drive_found() {
        let mut s = VmSection::default();
        s.props.insert(
            "ide2".into(),
            "local:7/vm-7-cloudinit.qcow2,media=cdrom".into(),
        );
        assert_eq!(
            drive(7, &s),
            Some(("ide2".into(), "local:7/vm-7-cloudinit.qcow2".into()))
        );
        assert_eq!(drive(8, &s), None);
    }

    #[test]
    fn replaced_cloudinit_volumes_are_freed() {
        let old = "local:7/vm-7-cloudinit.qcow2,media=cdrom";
        assert_eq!(
            replaced_volume(old, None).as_deref(),
            Some("local:7/vm-7-cloudinit.qcow2")
        );
        assert_eq!(replaced_volume(old, Some(old)), None);
        assert_eq!(replaced_volume("local:iso/a.iso,media=cdrom", None), None);
    }

    #[test]
    fn crypt_hashes() {
        assert!(is_crypt_hash("$6$salt$hash"));
        assert!(is_crypt_hash("$5$salt$hash"));
        assert!(!is_crypt_hash("$6$salt"));
        assert!(!is_crypt_hash("secret"));
    }

    fn conf(pairs: &[(&str, &str)]) -> VmConfig {
        let mut c = VmConfig::default();
        for (k, v) in pairs {
            c.main.props.insert(k.to_string(), v.to_string());
        }
        c
    }

    #[test]
    fn changes_recorded_as_upstream() {
        let mut c = conf(&[("ciuser", "a"), ("name", "x")]);
        record_change(&mut c, "ciuser", Some("a"), Some("b"));
        c.main.props.insert("ciuser".into(), "b".into());
        record_change(&mut c, "ciuser", Some("b"), Some("c"));
        c.main.props.insert("ciuser".into(), "c".into());
        record_change(&mut c, "sshkeys", None, Some("k"));
        c.main.props.insert("sshkeys".into(), "k".into());
        record_change(&mut c, "name", Some("x"), None);
        c.main.props.remove("name");
        record_change(&mut c, "memory", Some("1"), Some("2"));
        let ci = &c.special["cloudinit"];
        assert_eq!(ci.get("ciuser"), Some("a"));
        assert_eq!(ci.get("added"), Some("sshkeys"));
        assert_eq!(ci.get("name"), Some("x"));
        assert_eq!(ci.get("memory"), None);
        assert_eq!(
            pending(&c),
            json!([
                {"key": "sshkeys", "pending": "k"},
                {"key": "ciuser", "value": "a", "pending": "c"},
                {"key": "name", "delete": 1},
            ])
        );
        // Reverting to the drive's values clears the record.
        record_change(&mut c, "ciuser", Some("c"), Some("a"));
        record_change(&mut c, "sshkeys", Some("k"), None);
        record_change(&mut c, "name", None, Some("x"));
        assert!(!c.special.contains_key("cloudinit"), "{:?}", c.special);
    }
}
