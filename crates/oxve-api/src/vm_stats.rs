//! Figures of a running VM from its QEMU process: memory, uptime, CPU
//! load since the previous reading, and the traffic of its taps (read in
//! QEMU's own network namespace through `/proc/<pid>/net/dev`).

use crate::node::Node;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Clock ticks per second of `/proc` times (USER_HZ, fixed on Linux).
const TICKS: f64 = 100.0;

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcStats {
    /// Resident memory, bytes.
    pub mem: u64,
    /// Seconds since QEMU started.
    pub uptime: u64,
    /// CPU load since the previous reading, as a fraction of the VM's
    /// vCPUs (0 on the first reading).
    pub cpu: f64,
    /// CPU time used so far, seconds.
    pub cputime: f64,
    /// Bytes the guest received and sent over its taps.
    pub netin: u64,
    pub netout: u64,
}

/// A CPU reading: QEMU's pid, when, ticks used so far.
type Reading = (u32, Instant, u64);

/// Last CPU reading per VM.
static LAST: Mutex<Option<HashMap<u32, Reading>>> = Mutex::new(None);

/// Reads the figures of VM `vmid`'s QEMU `pid`.
pub fn process(node: &Node, vmid: u32, pid: u32) -> ProcStats {
    let mut s = ProcStats::default();
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        s.mem = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or(0);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: state is field 3, utime 14, stime 15,
    // starttime 22 (1-based over the whole line).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = field(14).unwrap_or(0) + field(15).unwrap_or(0);
    s.cputime = ticks as f64 / TICKS;
    let boot_secs: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    if let Some(start) = field(22) {
        s.uptime = (boot_secs - start as f64 / TICKS).max(0.0) as u64;
    }
    let cpus = node
        .load_vm(vmid)
        .ok()
        .map(|l| {
            let n = |k: &str| l.conf.main.get(k).and_then(|v| v.parse::<u64>().ok());
            n("vcpus").unwrap_or(n("sockets").unwrap_or(1) * n("cores").unwrap_or(1))
        })
        .unwrap_or(1)
        .max(1);
    let now = Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let map = last.get_or_insert_with(HashMap::new);
    if let Some((lpid, when, lticks)) = map.get(&vmid) {
        let secs = now.duration_since(*when).as_secs_f64();
        if *lpid == pid && secs > 0.0 && ticks >= *lticks {
            s.cpu = ((ticks - lticks) as f64 / TICKS / secs / cpus as f64).min(1.0);
        }
    }
    map.insert(vmid, (pid, now, ticks));
    let (netin, netout) = tap_traffic(pid, vmid);
    s.netin = netin;
    s.netout = netout;
    s
}

/// Traffic of `tap<vmid>i*` in QEMU's namespace: what the tap transmits
/// the guest receives (`netin`), what it receives the guest sent.
pub fn tap_traffic(pid: u32, vmid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let prefix = format!("tap{vmid}i");
    let (mut netin, mut netout) = (0, 0);
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().starts_with(&prefix) {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() >= 9 {
            netout += v[0];
            netin += v[8];
        }
    }
    (netin, netout)
}
