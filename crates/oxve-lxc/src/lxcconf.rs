//! CT config → LXC config (`<lxcpath>/<vmid>/config`), the file
//! `lxc-start` reads.
//!
//! The distribution's `common.conf` is not included: its lxcfs hooks sleep
//! half a second on every stop and reboot (DESIGN.md's measured trap). The
//! settings of it that matter (device allow list, dropped capabilities,
//! automatic mounts, seccomp) are written here instead.

use crate::idmap::IdMap;
use crate::model::Ct;
use crate::mount::BlockDevice;
use std::fmt::Write;
use std::path::PathBuf;

/// What the generated config depends on besides the CT config: host facts
/// and paths chosen by the caller.
#[derive(Debug, Clone)]
pub struct HostEnv {
    /// Where the root file system is mounted before start.
    pub rootfs: PathBuf,
    /// The LXC log file.
    pub log_file: PathBuf,
    /// The hook command (`<oxve> __lxc-hook <root>`); LXC appends its own
    /// arguments. `None`: no hooks.
    pub hook: Option<String>,
    /// Whether the host mounts cgroup v2 only (`lxc.cgroup2.*` keys).
    pub cgroup_v2: bool,
    /// Whether `memory.memsw.*` exists (swap accounting on cgroup v1).
    pub memsw: bool,
    /// The seccomp profile to load, when the host has one.
    pub seccomp: Option<PathBuf>,
    /// Whether the kernel has AppArmor.
    pub apparmor: bool,
    /// Host CPUs, for `cores`.
    pub host_cpus: u32,
    /// The id mapping of an unprivileged container.
    pub idmap: Option<IdMap>,
    /// Block devices of the mounts with quotas: the container gets their
    /// nodes and may use them (`quotacheck`, `quotaon`), as upstream.
    pub quota_devices: Vec<BlockDevice>,
}

/// Devices every container may use (as LXC's common.conf and upstream).
const DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 136:* rwm",
    "c 10:229 rwm",
];

/// Capabilities no container keeps (upstream adds `sys_time` and
/// `sys_module` and `sys_rawio` to LXC's list).
const CAP_DROP: &str = "mac_admin mac_override sys_time sys_module sys_rawio";

const MIB: u64 = 1024 * 1024;

/// Renders the LXC config of `ct`.
pub fn render(ct: &Ct, env: &HostEnv) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(out, "{k} = {v}");
    };
    line("lxc.arch", &ct.arch);
    line("lxc.uts.name", &ct.hostname);
    line("lxc.rootfs.path", &format!("dir:{}", env.rootfs.display()));
    line("lxc.log.file", &env.log_file.display().to_string());
    line("lxc.log.level", if ct.debug { "DEBUG" } else { "WARN" });
    line("lxc.monitor.unshare", "1");
    // Privileged containers keep their ttys in /dev/lxc (upstream's
    // layout, which the OS setup's inittab and securetty follow).
    if !ct.unprivileged {
        line("lxc.tty.dir", "lxc");
    }
    line("lxc.tty.max", &ct.tty.to_string());
    line("lxc.pty.max", "1024");
    if !ct.console {
        line("lxc.console.path", "none");
    }
    // busybox init (Alpine) halts on SIGUSR1 and ignores LXC's SIGPWR.
    if ct.ostype.as_deref() == Some("alpine") {
        line("lxc.signal.halt", "SIGUSR1");
    }
    line("lxc.environment", "TERM=linux");
    for var in &ct.env {
        line("lxc.environment", var);
    }
    if let Some(cmd) = &ct.entrypoint {
        line("lxc.init.cmd", cmd);
    }
    line("lxc.cap.drop", CAP_DROP);
    if env.apparmor {
        line(
            "lxc.apparmor.profile",
            if ct.features.nesting {
                "unconfined"
            } else {
                "generated"
            },
        );
        line(
            "lxc.apparmor.allow_nesting",
            if ct.features.nesting { "1" } else { "0" },
        );
    }
    if let Some(profile) = &env.seccomp {
        line("lxc.seccomp.profile", &profile.display().to_string());
    }
    let auto = if ct.features.nesting {
        "proc:rw sys:rw cgroup:rw:force"
    } else if ct.features.force_rw_sys {
        "proc:mixed sys:rw cgroup:mixed"
    } else {
        "proc:mixed sys:mixed cgroup:mixed"
    };
    line("lxc.mount.auto", auto);
    line(
        "lxc.mount.entry",
        "/sys/fs/fuse/connections sys/fs/fuse/connections none bind,optional 0 0",
    );
    if ct.features.fuse {
        line(
            "lxc.mount.entry",
            "/dev/fuse dev/fuse none bind,create=file,optional 0 0",
        );
    }
    let cg = if env.cgroup_v2 {
        "lxc.cgroup2"
    } else {
        "lxc.cgroup"
    };
    line(&format!("{cg}.devices.deny"), "a");
    for dev in DEVICES {
        line(&format!("{cg}.devices.allow"), dev);
    }
    for dev in &env.quota_devices {
        line(
            &format!("{cg}.devices.allow"),
            &format!("b {}:{} rwm", dev.major, dev.minor),
        );
    }
    for dev in &ct.devs {
        line(
            "lxc.mount.entry",
            &format!(
                "{} {} none bind,create=file,optional 0 0",
                dev.path,
                dev.path.trim_start_matches('/')
            ),
        );
    }
    for dev in &env.quota_devices {
        let path = dev.path.display().to_string();
        line(
            "lxc.mount.entry",
            &format!(
                "{path} {} none bind,create=file 0 0",
                path.trim_start_matches('/')
            ),
        );
    }
    cgroup_limits(ct, env, &mut line);
    if let Some(map) = &env.idmap {
        for entry in map.lxc_lines() {
            line("lxc.idmap", &entry);
        }
    }
    if let Some(hook) = &env.hook {
        line("lxc.hook.post-stop", &format!("{hook} post-stop"));
    }
    for net in &ct.nets {
        let n = net.index;
        let key = |k: &str| format!("lxc.net.{n}.{k}");
        line(&key("type"), "veth");
        line(&key("veth.pair"), &veth_name(ct.vmid, n));
        // LXC's own bridge attach looks at /sys, which shows the host's
        // namespace, not the node's: the up hook attaches by netlink.
        if let (Some(hook), Some(plug)) = (&env.hook, crate::net::Plug::of(net)) {
            line(
                &key("script.up"),
                &format!("{hook} net-up {}", plug.to_args()),
            );
        }
        line(&key("name"), &net.name);
        if let Some(mac) = &net.hwaddr {
            line(&key("hwaddr"), mac);
        }
        if let Some(mtu) = net.mtu {
            line(&key("mtu"), &mtu.to_string());
        }
        if !net.link_down {
            line(&key("flags"), "up");
        }
    }
    // The user's raw keys come last so that they win, as upstream.
    for (k, v) in &ct.lxc {
        line(k, v);
    }
    out
}

pub(crate) fn cgroup_limits(ct: &Ct, env: &HostEnv, line: &mut impl FnMut(&str, &str)) {
    let memory = ct.memory * MIB;
    let swap = ct.swap * MIB;
    let cpuunits = ct.cpuunits;
    if env.cgroup_v2 {
        line("lxc.cgroup2.memory.max", &memory.to_string());
        line("lxc.cgroup2.memory.swap.max", &swap.to_string());
        line(
            "lxc.cgroup2.cpu.weight",
            &cpuunits.unwrap_or(100).to_string(),
        );
        if ct.cpulimit > 0.0 {
            line(
                "lxc.cgroup2.cpu.max",
                &format!("{} 100000", (ct.cpulimit * 100_000.0) as u64),
            );
        }
    } else {
        line("lxc.cgroup.memory.limit_in_bytes", &memory.to_string());
        if env.memsw {
            line(
                "lxc.cgroup.memory.memsw.limit_in_bytes",
                &(memory + swap).to_string(),
            );
        }
        line(
            "lxc.cgroup.cpu.shares",
            &cpuunits.unwrap_or(1024).to_string(),
        );
        if ct.cpulimit > 0.0 {
            line("lxc.cgroup.cpu.cfs_period_us", "100000");
            line(
                "lxc.cgroup.cpu.cfs_quota_us",
                &((ct.cpulimit * 100_000.0) as u64).to_string(),
            );
        }
    }
    if let Some(cores) = ct.cores {
        let cores = cores.min(env.host_cpus).max(1);
        let key = if env.cgroup_v2 {
            "lxc.cgroup2.cpuset.cpus"
        } else {
            "lxc.cgroup.cpuset.cpus"
        };
        let cpus = if cores == 1 {
            "0".to_string()
        } else {
            format!("0-{}", cores - 1)
        };
        line(key, &cpus);
    }
}

/// The host side of a CT NIC, as upstream names it: `veth<vmid>i<n>`.
pub fn veth_name(vmid: u32, index: u32) -> String {
    format!("veth{vmid}i{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_devices_are_allowed_and_bound_into_the_container() {
        let (conf, _) = oxve_schema::ctconfig::CtConfig::parse(
            "hostname: q\nrootfs: local:100/vm-100-disk-0.raw,size=1G,quota=1\n",
            true,
        )
        .unwrap();
        let ct = Ct::from_section(100, &conf.main).unwrap();
        let env = HostEnv {
            rootfs: PathBuf::from("/r"),
            log_file: PathBuf::from("/l"),
            hook: None,
            cgroup_v2: true,
            memsw: false,
            seccomp: None,
            apparmor: false,
            host_cpus: 1,
            idmap: None,
            quota_devices: vec![BlockDevice {
                path: PathBuf::from("/dev/loop3"),
                major: 7,
                minor: 3,
            }],
        };
        let text = render(&ct, &env);
        assert!(
            text.contains("lxc.cgroup2.devices.allow = b 7:3 rwm\n"),
            "{text}"
        );
        assert!(
            text.contains("lxc.mount.entry = /dev/loop3 dev/loop3 none bind,create=file 0 0\n"),
            "{text}"
        );
    }
}
