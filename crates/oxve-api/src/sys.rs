//! Host figures from /proc and statvfs, and small file helpers.

use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Mutex;

/// One reading of the host's figures.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub cpu: f64,
    pub iowait: f64,
    pub cpus: u64,
    pub uptime: u64,
    pub loadavg: Vec<String>,
    pub mem_total: u64,
    pub mem_free: u64,
    pub mem_used: u64,
    pub mem_available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    pub root_total: u64,
    pub root_used: u64,
    pub root_free: u64,
    pub root_avail: u64,
    pub ksm_shared: u64,
    pub cpuinfo: Value,
}

/// CPU counters of the previous reading, to turn totals into a fraction.
static LAST_CPU: Mutex<Option<(u64, u64, u64)>> = Mutex::new(None);

/// Reads the host's figures now. CPU usage is the fraction since the
/// previous reading (since boot for the first).
pub fn sample(node: &Node) -> Sample {
    let mut s = Sample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        if let Some(line) = stat.lines().next() {
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0);
            let iowait = v.get(4).copied().unwrap_or(0);
            let mut last = LAST_CPU.lock().unwrap_or_else(|p| p.into_inner());
            let (t0, i0, w0) = last.unwrap_or((0, 0, 0));
            let dt = total.saturating_sub(t0);
            if dt > 0 {
                let busy = dt.saturating_sub(idle.saturating_sub(i0) + iowait.saturating_sub(w0));
                s.cpu = busy as f64 / dt as f64;
                s.iowait = iowait.saturating_sub(w0) as f64 / dt as f64;
            }
            *last = Some((total, idle, iowait));
        }
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |name: &str| -> u64 {
        meminfo
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    s.mem_total = kb("MemTotal");
    s.mem_free = kb("MemFree");
    s.mem_available = kb("MemAvailable");
    s.mem_used = s.mem_total.saturating_sub(s.mem_available);
    s.swap_total = kb("SwapTotal");
    s.swap_free = kb("SwapFree");
    s.uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split('.').next().and_then(|x| x.parse().ok()))
        .unwrap_or(0);
    s.loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .map(String::from)
        .collect();
    if let Ok(st) = nix::sys::statvfs::statvfs(&node.root) {
        let frag = st.fragment_size();
        s.root_total = st.blocks() * frag;
        s.root_free = st.blocks_free() * frag;
        s.root_avail = st.blocks_available() * frag;
        s.root_used = s.root_total.saturating_sub(s.root_free);
    }
    s.ksm_shared = std::fs::read_to_string("/sys/kernel/mm/ksm/pages_sharing")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 4096;
    s.cpuinfo = cpuinfo();
    s.cpus = s.cpuinfo["cpus"].as_u64().unwrap_or(1);
    s
}

/// `cpuinfo` of the node status: model, sockets, cores, threads, flags.
fn cpuinfo() -> Value {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut model = String::new();
    let mut mhz = String::new();
    let mut flags = String::new();
    let mut cpus = 0u64;
    let mut sockets = std::collections::BTreeSet::new();
    let mut cores = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => cpus += 1,
            "model name" if model.is_empty() => model = v.to_string(),
            "cpu MHz" if mhz.is_empty() => mhz = v.to_string(),
            "flags" if flags.is_empty() => flags = v.to_string(),
            "physical id" => {
                sockets.insert(v.to_string());
            }
            "core id" => {
                cores.insert((sockets.len(), v.to_string()));
            }
            _ => {}
        }
    }
    let hvm = flags.split(' ').any(|f| f == "vmx" || f == "svm");
    json!({
        "model": model,
        "mhz": mhz,
        "cpus": cpus.max(1),
        "sockets": sockets.len().max(1),
        "cores": cores.len().max(1),
        "hvm": if hvm { "1" } else { "0" },
        "flags": flags,
        "user_hz": 100,
    })
}

/// Writes a file atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, text: &str) -> ApiResult<()> {
    use std::io::Write;
    let fail =
        |e: std::io::Error| ApiError::fail(format!("unable to write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp.oxve");
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Lines of the host's journal (journalctl), or of the classic syslog file
/// on hosts without systemd's journal.
pub async fn journal_lines(args: &[String]) -> Vec<String> {
    let out = tokio::process::Command::new("journalctl")
        .args(args)
        .output()
        .await;
    if let Ok(out) = out {
        if out.status.success() && !out.stdout.is_empty() {
            return String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from)
                .collect();
        }
    }
    for file in ["/var/log/syslog", "/var/log/messages"] {
        if let Ok(text) = tokio::fs::read_to_string(file).await {
            return text.lines().map(String::from).collect();
        }
    }
    vec!["no journal or syslog available on this host".to_string()]
}
