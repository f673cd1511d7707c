//! Changes a running container takes at once, as upstream's hot-plug:
//! resource limits written to its cgroups, NICs added, removed, moved to
//! another bridge or VLAN, rate-limited or readdressed.
//!
//! Host-side network commands run in a thread that has joined the node's
//! network namespace (children inherit the forking thread's namespaces);
//! commands inside the container run under `nsenter --net` of its init.

use crate::error::LxcError;
use crate::lxcconf::{cgroup_limits, veth_name, HostEnv};
use crate::model::{Ct, Net};
use crate::net::Plug;
use std::path::Path;
use std::process::Command;

/// Writes the limits of `ct` (memory, swap, CPU limit, shares, cores) to
/// the cgroups of the running container whose init is `pid`. Limits `ct`
/// no longer sets are reset (no CPU limit, all host CPUs).
pub fn apply_limits(pid: u32, ct: &Ct, env: &HostEnv) -> Result<(), LxcError> {
    let mut settings: Vec<(String, String)> = Vec::new();
    cgroup_limits(ct, env, &mut |key, value| {
        let file = key
            .trim_start_matches("lxc.cgroup2.")
            .trim_start_matches("lxc.cgroup.");
        settings.push((file.to_string(), value.to_string()));
    });
    let has = |s: &[(String, String)], f: &str| s.iter().any(|(k, _)| k == f);
    if env.cgroup_v2 {
        if !has(&settings, "cpu.max") {
            settings.push(("cpu.max".into(), "max 100000".into()));
        }
    } else if !has(&settings, "cpu.cfs_quota_us") {
        settings.push(("cpu.cfs_quota_us".into(), "-1".into()));
    }
    if !has(&settings, "cpuset.cpus") {
        let all = match env.host_cpus {
            0 | 1 => "0".to_string(),
            n => format!("0-{}", n - 1),
        };
        settings.push(("cpuset.cpus".into(), all));
    }
    // Some limits constrain each other (cgroup v1 wants memory ≤
    // memory+swap at every moment): what fails is tried once more after
    // the others are in place.
    let mut left = settings;
    for round in 0..2 {
        let mut failed = Vec::new();
        for (file, value) in left {
            if let Err(e) = write_limit(pid, env.cgroup_v2, &file, &value) {
                if round == 1 {
                    return Err(e);
                }
                failed.push((file, value));
            }
        }
        left = failed;
        if left.is_empty() {
            break;
        }
    }
    Ok(())
}

fn write_limit(pid: u32, v2: bool, file: &str, value: &str) -> Result<(), LxcError> {
    let controller = file.split('.').next().unwrap_or(file);
    let dir = crate::stats::payload_cgroup(pid, (!v2).then_some(controller)).ok_or_else(|| {
        LxcError::Command(format!(
            "no '{controller}' cgroup found for the container's init {pid}"
        ))
    })?;
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| {
        LxcError::Command(format!(
            "cannot set {file} to {value} ({}): {e}",
            path.display()
        ))
    })
}

/// Brings NIC `index` of the running container `vmid` (init `pid`) from
/// `old` to `new` (`None`: absent), as upstream's `update_net`: a new NIC
/// is created and moved in; a changed MAC or name replaces the NIC; a
/// changed bridge, VLAN or rate re-plugs the host side; changed static
/// addresses and gateways are set inside.
pub fn update_net(
    vmid: u32,
    pid: u32,
    netns: Option<&str>,
    old: Option<&Net>,
    new: Option<&Net>,
) -> Result<(), LxcError> {
    let netns = netns.map(str::to_string);
    let (old, new) = (old.cloned(), new.cloned());
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = &netns {
                let f = std::fs::File::open(Path::new("/run/netns").join(ns))
                    .map_err(|e| LxcError::Command(format!("cannot open netns '{ns}': {e}")))?;
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| LxcError::Command(format!("cannot join netns '{ns}': {e}")))?;
            }
            update_net_here(vmid, pid, old.as_ref(), new.as_ref())
        })
        .join()
        .unwrap_or_else(|_| Err(LxcError::Command("NIC hot-plug thread panicked".into())))
    })
}

fn update_net_here(
    vmid: u32,
    pid: u32,
    old: Option<&Net>,
    new: Option<&Net>,
) -> Result<(), LxcError> {
    let index = new.or(old).map(|n| n.index).unwrap_or(0);
    let veth = veth_name(vmid, index);
    let Some(new) = new else {
        return run("ip", &["link", "del", "dev", &veth]);
    };
    let old = match old {
        Some(o) if o.hwaddr != new.hwaddr || o.name != new.name => {
            run("ip", &["link", "del", "dev", &veth])?;
            None
        }
        o => o,
    };
    match old {
        None => add_nic(pid, &veth, new)?,
        Some(o) => {
            if o.bridge != new.bridge || o.tag != new.tag || o.trunks != new.trunks {
                if o.bridge.is_some() && new.bridge.is_none() {
                    run("ip", &["link", "set", "dev", &veth, "nomaster"])?;
                }
                if let Some(plug) = Plug::of(new) {
                    // The plug sets the rate anew; the old policer goes first.
                    clear_rate(&veth);
                    if let Err(e) = plug.apply(&veth) {
                        // Back to where it was, as upstream does.
                        if let Some(back) = Plug::of(o) {
                            clear_rate(&veth);
                            let _ = back.apply(&veth);
                        }
                        return Err(e);
                    }
                }
            } else if o.rate != new.rate {
                clear_rate(&veth);
                if let Some(plug) = Plug::of(new) {
                    plug.apply(&veth)?;
                }
            }
            if o.rate.is_some() && new.rate.is_none() {
                clear_rate(&veth);
            }
            if o.link_down != new.link_down {
                let state = if new.link_down { "down" } else { "up" };
                run("ip", &["link", "set", "dev", &veth, state])?;
            }
            if o.mtu != new.mtu {
                let mtu = new.mtu.unwrap_or(1500).to_string();
                run("ip", &["link", "set", "dev", &veth, "mtu", &mtu])?;
                inside(pid, &["link", "set", "dev", &new.name, "mtu", &mtu])?;
            }
        }
    }
    readdress(pid, old, new)
}

/// A veth pair: the host end plugged into the bridge, the peer moved into
/// the container and named, addressed and raised there.
fn add_nic(pid: u32, veth: &str, net: &Net) -> Result<(), LxcError> {
    let peer = format!("{veth}p");
    run(
        "ip",
        &[
            "link", "add", "name", veth, "type", "veth", "peer", "name", &peer,
        ],
    )?;
    let result = (|| {
        if let Some(mtu) = net.mtu {
            let mtu = mtu.to_string();
            run("ip", &["link", "set", "dev", veth, "mtu", &mtu])?;
            run("ip", &["link", "set", "dev", &peer, "mtu", &mtu])?;
        }
        if let Some(plug) = Plug::of(net) {
            plug.apply(veth)?;
        }
        if !net.link_down {
            run("ip", &["link", "set", "dev", veth, "up"])?;
        }
        run(
            "ip",
            &["link", "set", "dev", &peer, "netns", &pid.to_string()],
        )?;
        let mut args = vec![
            "link",
            "set",
            "dev",
            peer.as_str(),
            "name",
            net.name.as_str(),
        ];
        if let Some(mac) = &net.hwaddr {
            args.extend(["address", mac.as_str()]);
        }
        inside(pid, &args)?;
        inside(pid, &["link", "set", "dev", &net.name, "up"])
    })();
    if result.is_err() {
        let _ = run("ip", &["link", "del", "dev", veth]);
    }
    result
}

/// Static addresses and gateways inside the container: the old ones go,
/// the new ones come. `dhcp`, `auto` and `manual` are the guest's own.
fn readdress(pid: u32, old: Option<&Net>, new: &Net) -> Result<(), LxcError> {
    let dev = new.name.as_str();
    for (family, old_ip, new_ip, old_gw, new_gw) in [
        (
            "-4",
            old.and_then(|o| o.ip.as_deref()),
            new.ip.as_deref(),
            old.and_then(|o| o.gw.as_deref()),
            new.gw.as_deref(),
        ),
        (
            "-6",
            old.and_then(|o| o.ip6.as_deref()),
            new.ip6.as_deref(),
            old.and_then(|o| o.gw6.as_deref()),
            new.gw6.as_deref(),
        ),
    ] {
        if old_ip != new_ip || old_gw != new_gw {
            if let Some(gw) = old_gw {
                let _ = inside(
                    pid,
                    &[family, "route", "del", "default", "via", gw, "dev", dev],
                );
            }
        }
        if old_ip != new_ip {
            if let Some(ip) = static_ip(old_ip) {
                let _ = inside(pid, &[family, "addr", "del", ip, "dev", dev]);
            }
        }
        if let Some(ip) = static_ip(new_ip) {
            inside(pid, &[family, "addr", "replace", ip, "dev", dev])?;
        }
        if let Some(gw) = new_gw {
            let route = [family, "route", "replace", "default", "via", gw, "dev", dev];
            if inside(pid, &route).is_err() {
                // A gateway outside the subnet needs its own route first.
                inside(pid, &[family, "route", "replace", gw, "dev", dev])?;
                inside(pid, &route)?;
            }
        }
    }
    Ok(())
}

/// An address that is a CIDR, not `dhcp`/`auto`/`manual`.
fn static_ip(ip: Option<&str>) -> Option<&str> {
    ip.filter(|i| i.contains('/'))
}

fn clear_rate(veth: &str) {
    let _ = run("tc", &["qdisc", "del", "dev", veth, "root"]);
    let _ = run("tc", &["qdisc", "del", "dev", veth, "ingress"]);
}

/// `ip ARGS` in the network namespace of the container's init.
fn inside(pid: u32, args: &[&str]) -> Result<(), LxcError> {
    let net = format!("--net=/proc/{pid}/ns/net");
    let mut full = vec![net.as_str(), "ip"];
    full.extend_from_slice(args);
    run("nsenter", &full)
}

fn run(tool: &str, args: &[&str]) -> Result<(), LxcError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| LxcError::Command(format!("cannot run '{tool}': {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(LxcError::Command(format!(
        "{tool} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
