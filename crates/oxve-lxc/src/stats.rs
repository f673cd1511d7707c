//! Live figures of a running container from its cgroups (v1 or v2), its
//! network namespace's `/proc/<pid>/net/dev` and its mounted rootfs.

use std::path::{Path, PathBuf};

/// What `status/current` reports of a running container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Memory in use, bytes.
    pub mem: u64,
    /// Swap in use, bytes.
    pub swap: u64,
    /// CPU time used since start, nanoseconds.
    pub cpu_ns: u64,
    /// Bytes received by the container's interfaces (upstream's `netin`).
    pub netin: u64,
    /// Bytes sent by them (`netout`).
    pub netout: u64,
    /// Root file system usage and size, bytes.
    pub disk: u64,
    pub maxdisk: u64,
    /// Seconds since the init process started.
    pub uptime: u64,
    /// Processes in the container.
    pub pids: u64,
}

/// Reads the figures of the container whose init is `pid`; missing sources
/// give zeros rather than errors (a container may be stopping).
pub fn read(pid: u32, rootfs: &Path) -> Stats {
    let cg = Cgroups::of(pid);
    let mut s = Stats::default();
    if let Some(dir) = cg.v1("memory") {
        let usage = read_u64(&dir.join("memory.usage_in_bytes"));
        let cache = stat_field(&dir.join("memory.stat"), "total_cache").unwrap_or(0);
        s.mem = usage.saturating_sub(cache);
        let memsw = read_u64(&dir.join("memory.memsw.usage_in_bytes"));
        s.swap = memsw.saturating_sub(usage);
    } else if let Some(dir) = &cg.unified {
        let current = read_u64(&dir.join("memory.current"));
        let file = stat_field(&dir.join("memory.stat"), "file").unwrap_or(0);
        s.mem = current.saturating_sub(file);
        s.swap = read_u64(&dir.join("memory.swap.current"));
    }
    if let Some(dir) = cg.v1("cpuacct") {
        s.cpu_ns = read_u64(&dir.join("cpuacct.usage"));
    } else if let Some(dir) = &cg.unified {
        s.cpu_ns = stat_field(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000;
    }
    if let Some(dir) = cg.v1("pids").or(cg.unified.clone()) {
        s.pids = read_u64(&dir.join("pids.current"));
    }
    let (rx, tx) = net_totals(pid);
    s.netin = rx;
    s.netout = tx;
    if let Ok(st) = nix::sys::statvfs::statvfs(rootfs) {
        let frsize = st.fragment_size();
        s.maxdisk = st.blocks() * frsize;
        s.disk = st.blocks().saturating_sub(st.blocks_free()) * frsize;
    }
    s.uptime = uptime_of(pid).unwrap_or(0);
    s
}

/// The cgroup directories of a process.
struct Cgroups {
    /// `(controllers, path)` of each v1 hierarchy line.
    v1: Vec<(String, String)>,
    unified: Option<PathBuf>,
}

impl Cgroups {
    fn of(pid: u32) -> Cgroups {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let mut v1 = Vec::new();
        let mut unified = None;
        for line in text.lines() {
            let mut f = line.splitn(3, ':');
            let (_, ctrl, path) = match (f.next(), f.next(), f.next()) {
                (Some(a), Some(b), Some(c)) => (a, b, c),
                _ => continue,
            };
            if ctrl.is_empty() {
                let base = if Path::new("/sys/fs/cgroup/unified").is_dir() {
                    "/sys/fs/cgroup/unified"
                } else {
                    "/sys/fs/cgroup"
                };
                let dir = PathBuf::from(base).join(path.trim_start_matches('/'));
                if dir.join("cgroup.procs").exists() {
                    unified = Some(dir);
                }
            } else {
                v1.push((ctrl.to_string(), path.to_string()));
            }
        }
        Cgroups { v1, unified }
    }

    /// The v1 directory of `controller`, if that hierarchy is mounted.
    fn v1(&self, controller: &str) -> Option<PathBuf> {
        let (ctrls, path) = self
            .v1
            .iter()
            .find(|(c, _)| c.split(',').any(|x| x == controller))?;
        let mount = [
            "/sys/fs/cgroup/".to_string() + ctrls,
            "/sys/fs/cgroup/".to_string() + controller,
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())?;
        let dir = mount.join(path.trim_start_matches('/'));
        dir.is_dir().then_some(dir)
    }
}

/// The cgroup directory LXC made for the container whose init is `pid`
/// (its `lxc.payload.<name>` group, where the limits are set), of v1
/// `controller`, or of the unified hierarchy when `None`. A guest's init
/// may have moved itself into a child group (systemd's `init.scope`):
/// the path is walked up to the payload group.
pub(crate) fn payload_cgroup(pid: u32, controller: Option<&str>) -> Option<PathBuf> {
    let cg = Cgroups::of(pid);
    let dir = match controller {
        Some(c) => cg.v1(c)?,
        None => cg.unified?,
    };
    let payload = dir.ancestors().find(|d| {
        d.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("lxc.payload"))
    });
    Some(payload.map(Path::to_path_buf).unwrap_or(dir))
}

fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn stat_field(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Received and sent bytes over the container's interfaces except `lo`.
fn net_totals(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let mut rx = 0;
    let mut tx = 0;
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
}

/// Seconds since `pid` started, from its start time in clock ticks.
fn uptime_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let start: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()? as u64;
    let up: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((up as u64).saturating_sub(start / ticks.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_figures() {
        let s = read(std::process::id(), Path::new("/"));
        assert!(s.maxdisk > 0);
        assert!(s.cpu_ns > 0 || s.mem > 0, "{s:?}");
    }
}
