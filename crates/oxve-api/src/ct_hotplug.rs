//! Hot-plug: what of a running CT's `[pve:pending]` changes takes effect
//! at once, as upstream's `vmconfig_hotplug_pending`. Options that only
//! matter at the next start move into the config; memory, swap, CPU limit,
//! shares and cores are written to the CT's cgroups; NICs are added,
//! removed, re-plugged and readdressed; deleted `unused<n>` volumes are
//! freed. Everything else (mount points, devices, features, ...) stays
//! pending for the next start. What fails stays pending too, and is
//! reported per option.

use crate::ct::{host_env, lxc_err, root_ids, setup_params};
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use oxve_lxc::model::Ct;
use oxve_schema::ctconfig::{CtConfig, CtSection};
use std::collections::BTreeMap;

/// Options that take effect by being in the config (upstream's fast-plug
/// list); `cores` is also written to the cgroup below.
const FASTPLUG: &[&str] = &[
    "description",
    "onboot",
    "startup",
    "protection",
    "hostname",
    "hookscript",
    "tags",
    "lock",
];

/// Options applied as cgroup limits.
const LIMITS: &[&str] = &["memory", "swap", "cpulimit", "cpuunits", "cores"];

/// Applies what it can of CT `vmid`'s pending changes while it runs and
/// returns the errors of the options that stay pending (empty when all
/// went in, or when the CT is not running). Callers hold the guest lock.
pub fn hotplug_pending(node: &Node, vmid: u32) -> ApiResult<BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    let lxc = node.lxc();
    let Some(pid) = lxc.state(vmid).map_err(lxc_err)?.pid() else {
        return Ok(errors);
    };
    let conf = node.load_ct(vmid)?.conf;
    if conf.pending.is_empty() {
        return Ok(errors);
    }
    let bad = |e: oxve_lxc::LxcError| ApiError::fail(e.to_string());
    let old = Ct::from_section(vmid, &conf.main).map_err(bad)?;
    let deletes = pending_deletes(&conf.pending);
    let keys: Vec<String> = conf
        .pending
        .props
        .keys()
        .filter(|k| *k != "delete")
        .cloned()
        .chain(deletes.iter().cloned())
        .collect();
    let mut done: Vec<String> = keys
        .iter()
        .filter(|k| FASTPLUG.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut fail = |key: &str, e: &dyn std::fmt::Display| {
        errors.insert(key.to_string(), format!("unable to hotplug {key}: {e}"));
    };

    let limit_keys: Vec<String> = keys
        .iter()
        .filter(|k| LIMITS.contains(&k.as_str()))
        .cloned()
        .collect();
    if !limit_keys.is_empty() {
        let result = Ct::from_section(vmid, &applied(&conf, &limit_keys))
            .map_err(|e| e.to_string())
            .and_then(|new| {
                let env = host_env(node, &new).map_err(|e| e.message)?;
                oxve_lxc::hotplug::apply_limits(pid, &new, &env).map_err(|e| e.to_string())
            });
        match result {
            Ok(()) => done.extend(limit_keys),
            Err(e) => limit_keys.iter().for_each(|k| fail(k, &e)),
        }
    }

    let mut nets_changed = false;
    for key in keys.iter().filter(|k| is_indexed(k, "net")) {
        let result = Ct::from_section(vmid, &applied(&conf, std::slice::from_ref(key)))
            .map_err(|e| e.to_string())
            .and_then(|new| {
                let index: u32 = key["net".len()..].parse().unwrap_or_default();
                let find = |ct: &Ct| ct.nets.iter().find(|n| n.index == index).cloned();
                let (before, after) = (find(&old), find(&new));
                oxve_lxc::hotplug::update_net(
                    vmid,
                    pid,
                    lxc.netns.as_deref(),
                    before.as_ref(),
                    after.as_ref(),
                )
                .map_err(|e| e.to_string())
            });
        match result {
            Ok(()) => {
                done.push(key.clone());
                nets_changed = true;
            }
            Err(e) => fail(key, &e),
        }
    }

    for key in deletes.iter().filter(|k| is_indexed(k, "unused")) {
        let Some(volid) = conf.main.props.get(key) else {
            done.push(key.clone());
            continue;
        };
        if volume_in_use(&conf, key, volid) {
            done.push(key.clone());
            continue;
        }
        match crate::ct::free_volume(node, volid) {
            Ok(()) => done.push(key.clone()),
            Err(e) => fail(key, &e.message),
        }
    }

    if done.is_empty() {
        return Ok(errors);
    }
    let conf = node.update_ct(vmid, |conf| {
        for key in &done {
            apply_one(conf, key);
        }
        Ok(conf.clone())
    })?;
    if nets_changed {
        // The guest's own network files follow, so that restarting its
        // networking keeps the new addresses.
        let new = Ct::from_section(vmid, &conf.main).map_err(bad)?;
        let rootfs = lxc.rootfs_dir(vmid);
        if new.ostype.as_deref() != Some("unmanaged") {
            if let Err(e) = oxve_lxc::setup::network(&rootfs, &setup_params(&new, root_ids(&new)?))
            {
                tracing::warn!("CT {vmid}: network config inside not updated: {e}");
            }
        }
    }
    Ok(errors)
}

/// `net3` is indexed `net`; `network` is not.
fn is_indexed(key: &str, base: &str) -> bool {
    key.strip_prefix(base)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The keys of the pending `delete` list (`!` forces, ignored here).
pub fn pending_deletes(pending: &CtSection) -> Vec<String> {
    pending
        .props
        .get("delete")
        .map(|d| {
            d.split(',')
                .filter(|k| !k.is_empty())
                .map(|k| k.trim_start_matches('!').to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The main section with the pending change of each of `keys` applied.
fn applied(conf: &CtConfig, keys: &[String]) -> CtSection {
    let mut c = conf.clone();
    for key in keys {
        apply_one(&mut c, key);
    }
    c.main
}

/// Moves the pending change of `key` (a new value or a deletion) into the
/// main section.
fn apply_one(conf: &mut CtConfig, key: &str) {
    if let Some(value) = conf.pending.props.remove(key) {
        conf.main.props.insert(key.to_string(), value);
        return;
    }
    let left: Vec<String> = conf
        .pending
        .props
        .get("delete")
        .map(|d| {
            d.split(',')
                .filter(|k| !k.is_empty() && k.trim_start_matches('!') != key)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if left.is_empty() {
        conf.pending.props.remove("delete");
    } else {
        conf.pending.props.insert("delete".into(), left.join(","));
    }
    conf.main.props.remove(key);
}

/// Whether another key of the config or a snapshot still refers to the
/// volume of `unused_key`.
fn volume_in_use(conf: &CtConfig, unused_key: &str, volid: &str) -> bool {
    let uses = |section: &CtSection, skip: Option<&str>| {
        section.props.iter().any(|(k, v)| {
            Some(k.as_str()) != skip
                && (k == "rootfs" || is_indexed(k, "mp") || is_indexed(k, "unused"))
                && v.split(',')
                    .next()
                    .map(|vol| vol.trim_start_matches("volume="))
                    == Some(volid)
        })
    };
    uses(&conf.main, Some(unused_key)) || conf.snapshots.values().any(|s| uses(s, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> CtConfig {
        CtConfig::parse(text, true).unwrap().0
    }

    #[test]
    fn applying_moves_values_and_deletions() {
        let mut c = conf(
            "memory: 512\nswap: 512\nrootfs: local:100/vm-100-disk-0.raw,size=1G\n\n\
             [pve:pending]\ndelete: swap,!cpulimit\nmemory: 1024\n",
        );
        apply_one(&mut c, "memory");
        apply_one(&mut c, "swap");
        assert_eq!(c.main.props.get("memory").map(String::as_str), Some("1024"));
        assert!(!c.main.props.contains_key("swap"));
        assert_eq!(
            c.pending.props.get("delete").map(String::as_str),
            Some("!cpulimit")
        );
        apply_one(&mut c, "cpulimit");
        assert!(c.pending.is_empty(), "{:?}", c.pending);
    }

    #[test]
    fn volumes_in_use_are_kept() {
        let c = conf(
            "rootfs: local:100/vm-100-disk-0.raw,size=1G\nunused0: local:100/vm-100-disk-1.raw\n\
             unused1: local:100/vm-100-disk-2.raw\n\n[snap]\nmp0: local:100/vm-100-disk-1.raw,mp=/a\n\
             rootfs: local:100/vm-100-disk-0.raw,size=1G\n",
        );
        assert!(volume_in_use(&c, "unused0", "local:100/vm-100-disk-1.raw"));
        assert!(!volume_in_use(&c, "unused1", "local:100/vm-100-disk-2.raw"));
    }

    #[test]
    fn indexed_keys() {
        assert!(is_indexed("net0", "net"));
        assert!(is_indexed("unused12", "unused"));
        assert!(!is_indexed("net", "net"));
        assert!(!is_indexed("network", "net"));
    }
}
