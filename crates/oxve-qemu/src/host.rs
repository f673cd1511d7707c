//! Running QEMU processes of a node: where their pid files and sockets
//! live, whether a VM runs, starting the daemonized QEMU and ending it.
//!
//! A VM runs when its pid file names a live process whose command line
//! names that pid file (`-pidfile <run dir>/<vmid>.pid`): this survives
//! daemon restarts, which is how a restarted daemon adopts its guests.
//!
//! The command line is upstream's, made for Proxmox's QEMU build; Debian's
//! stock QEMU lacks two of its additions, which [`for_stock_qemu`] takes
//! out before the start.

use crate::qmp::{Qmp, QmpError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The run directory of a node's VMs.
#[derive(Debug, Clone)]
pub struct QemuHost {
    run_dir: PathBuf,
}

/// Why QEMU did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot run '{binary}': {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    /// QEMU exited with an error; its own message.
    #[error("{0}")]
    Qemu(String),
}

impl QemuHost {
    /// The VMs of the node whose run directory is `run_dir`.
    pub fn new(run_dir: impl Into<PathBuf>) -> QemuHost {
        QemuHost {
            run_dir: run_dir.into(),
        }
    }

    /// The directory of every socket and pid file.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    fn file(&self, vmid: u32, suffix: &str) -> PathBuf {
        self.run_dir.join(format!("{vmid}.{suffix}"))
    }

    pub fn pid_file(&self, vmid: u32) -> PathBuf {
        self.file(vmid, "pid")
    }

    pub fn qmp_socket(&self, vmid: u32) -> PathBuf {
        self.file(vmid, "qmp")
    }

    pub fn vnc_socket(&self, vmid: u32) -> PathBuf {
        self.file(vmid, "vnc")
    }

    pub fn qga_socket(&self, vmid: u32) -> PathBuf {
        self.file(vmid, "qga")
    }

    pub fn serial_socket(&self, vmid: u32, index: u32) -> PathBuf {
        self.file(vmid, &format!("serial{index}"))
    }

    /// Where the bridge hook finds how to plug NIC `index` of `vmid`.
    pub fn plug_file(&self, vmid: u32, index: u32) -> PathBuf {
        self.file(vmid, &format!("net{index}.plug"))
    }

    /// The pid of VM `vmid`'s QEMU, if it runs.
    pub fn pid(&self, vmid: u32) -> Option<u32> {
        let pid_file = self.pid_file(vmid);
        let text = std::fs::read_to_string(&pid_file).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        (pid_file_of(pid).as_deref() == Some(pid_file.as_path())).then_some(pid)
    }

    /// Creates the run directory.
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.run_dir)
    }

    /// Removes what a stopped VM left behind: pid file, sockets, plugs.
    pub fn remove_files(&self, vmid: u32) {
        let prefix = format!("{vmid}.");
        if let Ok(entries) = std::fs::read_dir(&self.run_dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Runs a daemonizing QEMU command (`-daemonize` among its arguments)
    /// and waits for its first process to return: QEMU has then opened its
    /// sockets and devices, or failed with a message on stderr.
    pub fn run_daemonizing(cmd: &mut Command) -> Result<(), StartError> {
        let binary = cmd.get_program().to_string_lossy().into_owned();
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| StartError::Spawn { binary, source })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let text: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        Err(StartError::Qemu(if text.is_empty() {
            format!("QEMU exited with {}", out.status)
        } else {
            text.join("\n")
        }))
    }

    /// Connects to VM `vmid`'s QMP socket (waiting while another client
    /// holds it, up to `timeout`).
    pub async fn qmp(&self, vmid: u32, timeout: Duration) -> Result<Qmp, QmpError> {
        Qmp::connect(&self.qmp_socket(vmid), timeout).await
    }

    /// Waits until process `pid` is gone; `false` when `timeout` passed.
    pub async fn wait_exit(pid: u32, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if !alive(pid) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ends QEMU process `pid`: SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(pid: u32, grace: Duration) {
        signal(pid, libc_signal::TERM);
        if !Self::wait_exit(pid, grace).await {
            signal(pid, libc_signal::KILL);
            Self::wait_exit(pid, Duration::from_secs(5)).await;
        }
    }
}

mod libc_signal {
    pub const TERM: i32 = 15;
    pub const KILL: i32 = 9;
}

fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The `-pidfile` of live process `pid`, if it has one.
pub fn pid_file_of(pid: u32) -> Option<PathBuf> {
    if !alive(pid) {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    args.windows(2)
        .find(|w| w[0] == b"-pidfile")
        .and_then(|w| std::str::from_utf8(w[1]).ok())
        .map(PathBuf::from)
}

/// The VM id of QEMU process `pid` (from its `<vmid>.pid` pid file).
pub fn vmid_of(pid: u32) -> Option<u32> {
    pid_file_of(pid)?
        .file_name()?
        .to_str()?
        .strip_suffix(".pid")?
        .parse()
        .ok()
}

/// Upstream's command line made runnable by Debian's stock QEMU: without
/// Proxmox's `-id <vmid>` option and with the plain machine version
/// instead of Proxmox's `+pve<n>` revisions of it.
pub fn for_stock_qemu(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        if arg == "-id" {
            it.next();
            continue;
        }
        if arg == "-machine" {
            out.push(arg.clone());
            if let Some(value) = it.next() {
                out.push(strip_pve_revision(value));
            }
            continue;
        }
        out.push(arg.clone());
    }
    out
}

/// `type=pc-i440fx-10.0+pve1,...` → `type=pc-i440fx-10.0,...`.
fn strip_pve_revision(machine: &str) -> String {
    machine
        .split(',')
        .map(|part| match part.find("+pve") {
            Some(at) if part[at + 4..].chars().all(|c| c.is_ascii_digit()) => &part[..at],
            _ => part,
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_not_qemu() {
        let me = std::process::id();
        assert!(alive(me));
        assert_eq!(pid_file_of(me), None);
        assert_eq!(vmid_of(me), None);
        assert!(!alive(u32::MAX - 1));
    }

    #[test]
    fn stock_qemu_command_line() {
        let args: Vec<String> = [
            "/usr/bin/kvm",
            "-id",
            "100",
            "-name",
            "vm100,debug-threads=on",
            "-machine",
            "hpet=off,type=pc-i440fx-10.0+pve1",
            "-m",
            "512",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            for_stock_qemu(&args),
            [
                "/usr/bin/kvm",
                "-name",
                "vm100,debug-threads=on",
                "-machine",
                "hpet=off,type=pc-i440fx-10.0",
                "-m",
                "512"
            ]
        );
    }

    #[test]
    fn pid_needs_a_live_qemu_of_the_vm() {
        let dir = std::env::temp_dir().join(format!("oxve-qemu-host-{}", std::process::id()));
        let host = QemuHost::new(&dir);
        host.prepare().unwrap();
        assert_eq!(host.pid(100), None);
        std::fs::write(host.pid_file(100), format!("{}\n", std::process::id())).unwrap();
        // A live process that is not QEMU of VM 100 does not count.
        assert_eq!(host.pid(100), None);
        host.remove_files(100);
        assert!(!host.pid_file(100).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
