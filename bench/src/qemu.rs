//! Virtual machines with real QEMU: start through the API against the same
//! QEMU command line run by hand, linked clones of a template against
//! `qemu-img create -b`, full clones against `qemu-img convert`, and many
//! linked clones at once against the same clones one after another.
//!
//! The VMs boot the test guest of tests/qemu/build-guest.sh (a kernel and
//! an initramfs given through `args`); their NICs hang on a bridge made
//! inside the daemon's network namespace, never the host's. Every VM is
//! stopped and destroyed through the API before the daemon stops; the
//! QEMU processes the bench starts by hand are ended by their pid, and
//! whatever still runs at the end is killed by the pid its pid file names.

mod clone;
mod qmp;
mod start;

pub use clone::{
    FullCloneFigures, LinkedCloneFigures, ParallelCloneFigures, FIRST_PARALLEL, FIRST_SEQUENTIAL,
    FULL_SOURCE_VMID, PARALLEL_POLL, TEMPLATE_VMID,
};
pub use start::{StartFigures, VMID as START_VMID};

use crate::api::{self, Ticket};
use crate::daemon::Daemon;
use crate::error::{BenchError, Result};
use crate::lxc::http::Client;
use crate::lxc::{segment, task_id};
use crate::report::Outcome;
use oxve_lxc::host::LxcHost;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The user the VM benchmarks log in as.
const USER: &str = "benchvm@pve";
const PASSWORD: &str = "benchpass123";
/// Its role, on `/`. `args` (how the test guest's kernel is given) is an
/// option upstream reserves to root@pam; oxve grants it with
/// `VM.Config.HWType` and `Sys.Modify` on `/`, which PVEAdmin lacks.
pub const ROLE: &str = "Administrator";
/// The bridge in the daemon's network namespace (made unless it exists).
pub const BRIDGE: &str = "vmbr0";
/// Every VM's memory, MiB.
pub const MEMORY_MIB: u32 = 256;
/// Every VM's disk: a new 1 GiB qcow2 image on `local`.
pub const DISK: &str = "local:1,format=qcow2";
/// How long a task may run before the bench gives up on it.
const TASK_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a task is polled when one call is timed alone.
pub const POLL: Duration = Duration::from_millis(5);

/// Every VM figure of a run; each part is measured, or says why not.
pub struct QemuFigures {
    /// API start against the same command line run by hand.
    pub start: Outcome<StartFigures>,
    /// Linked clones of a template against `qemu-img create -b`.
    pub linked: Outcome<LinkedCloneFigures>,
    /// Full clones against `qemu-img convert`.
    pub full: Outcome<FullCloneFigures>,
    /// Many linked clones at once against the same one after another.
    pub parallel: Outcome<ParallelCloneFigures>,
}

impl QemuFigures {
    /// No VM figures, all for the same reason.
    pub fn skipped(why: &str) -> QemuFigures {
        QemuFigures {
            start: Err(why.to_string()),
            linked: Err(why.to_string()),
            full: Err(why.to_string()),
            parallel: Err(why.to_string()),
        }
    }

    /// Whether every part was measured.
    pub fn complete(&self) -> bool {
        self.start.is_ok() && self.linked.is_ok() && self.full.is_ok() && self.parallel.is_ok()
    }
}

/// Options of the VM benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Linked clones fired at once.
    pub parallel: usize,
}

/// Runs the VM benchmarks against `daemon`, then stops and destroys every
/// VM it made.
pub fn with_daemon(daemon: &Daemon, node: &str, plan: Plan) -> QemuFigures {
    let bench = match Bench::prepare(daemon, node) {
        Ok(b) => b,
        Err(e) => return QemuFigures::skipped(&e.to_string()),
    };
    let _teardown = Teardown(vec![bench.run_dir.clone(), bench.own_run_dir()]);
    let start = start::run(&bench).map_err(|e| e.to_string());
    let (linked, parallel) = match clone::template(&bench) {
        Ok(base) => (
            clone::linked(&bench, &base).map_err(|e| e.to_string()),
            clone::parallel(&bench, plan.parallel).map_err(|e| e.to_string()),
        ),
        Err(e) => (Err(e.to_string()), Err(e.to_string())),
    };
    let full = clone::full(&bench).map_err(|e| e.to_string());
    if let Err(e) = bench.destroy_all() {
        eprintln!("oxve-bench: warning: VM cleanup: {e}");
    }
    QemuFigures {
        start,
        linked,
        full,
        parallel,
    }
}

/// What every VM benchmark needs: a logged in user, the bridge, the test
/// guest and the daemon's QEMU run directory.
struct Bench<'a> {
    daemon: &'a Daemon,
    node: String,
    ticket: Ticket,
    /// The daemon's network namespace, for the QEMU started by hand.
    host: LxcHost,
    /// The test guest's directory (`vmlinuz`, `initrd.img`).
    guest: PathBuf,
    /// The daemon's QEMU run directory (pid files, sockets, NIC plugs).
    run_dir: PathBuf,
    /// The bench's own files, below the daemon's root.
    own: PathBuf,
}

impl<'a> Bench<'a> {
    fn prepare(daemon: &'a Daemon, node: &str) -> Result<Bench<'a>> {
        for (tool, package) in [
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("qemu-img", "qemu-utils"),
            ("qemu-io", "qemu-utils"),
        ] {
            if Command::new(tool).arg("--version").output().is_err() {
                return Err(BenchError::Missing(format!(
                    "'{tool}' cannot run: install {package} (scripts/install-deps.sh does)"
                )));
            }
        }
        let host = LxcHost::of_node(daemon.root());
        let Some(netns) = host.netns.clone() else {
            return Err(BenchError::Daemon(format!(
                "no network namespace recorded in {}",
                host.lxcpath.join("netns").display()
            )));
        };
        daemon.cli(&["pveum", "user", "add", USER, "--password", PASSWORD])?;
        daemon.cli(&[
            "pveum", "acl", "modify", "/", "--users", USER, "--roles", ROLE,
        ])?;
        let ticket = api::login(&api::base_url(daemon), USER, PASSWORD)?;
        let exists = Command::new("ip")
            .args(["-n", &netns, "link", "show", BRIDGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            for args in [
                vec!["link", "add", BRIDGE, "type", "bridge"],
                vec!["link", "set", BRIDGE, "up"],
            ] {
                api::run_tool(
                    &format!("ip -n {netns} {}", args.join(" ")),
                    Command::new("ip").args(["-n", &netns]).args(&args),
                )?;
            }
        }
        let own = daemon.root().join("bench-qemu");
        std::fs::create_dir_all(&own).map_err(BenchError::file(&own))?;
        Ok(Bench {
            daemon,
            node: node.to_string(),
            ticket,
            host,
            guest: build_guest()?,
            run_dir: daemon.root().join("run/oxve/qemu"),
            own,
        })
    }

    /// A new client of the daemon with the bench user's ticket.
    fn client(&self) -> Result<Client> {
        Client::new(self.daemon.port, &self.ticket)
    }

    /// `/nodes/<node>`, encoded.
    fn node_path(&self) -> String {
        format!("/nodes/{}", segment(&self.node))
    }

    /// `/nodes/<node>/qemu/<vmid>`.
    fn vm_path(&self, vmid: u32) -> String {
        format!("{}/qemu/{vmid}", self.node_path())
    }

    /// The root the bench's own QEMU run directory hangs below, as the
    /// daemon's hangs below its root.
    fn own_root(&self) -> PathBuf {
        self.own.join("root")
    }

    /// The bench's own QEMU run directory.
    fn own_run_dir(&self) -> PathBuf {
        self.own_root().join("run/oxve/qemu")
    }

    /// The test guest's kernel and initramfs as a VM's `args`.
    fn kernel_args(&self) -> String {
        let dir = self.guest.display();
        format!("-kernel {dir}/vmlinuz -initrd {dir}/initrd.img -append 'console=ttyS0 quiet'")
    }

    /// Calls `method path` with `form`, which answers a task, and waits
    /// (polling every `every`) until the task ended OK.
    fn task(
        &self,
        client: &mut Client,
        method: &str,
        path: &str,
        form: &[(&str, &str)],
        every: Duration,
    ) -> Result<()> {
        let upid = task_id(client.call(method, path, form)?)?;
        client.wait_task(&self.node_path(), &upid, every, TASK_TIMEOUT)
    }

    /// Creates VM `vmid`: the test guest, [`MEMORY_MIB`], one core, a
    /// [`DISK`] on `scsi0` and a virtio NIC on [`BRIDGE`].
    fn create(&self, client: &mut Client, vmid: u32) -> Result<()> {
        let vmid_text = vmid.to_string();
        let name = format!("bench{vmid}");
        let memory = MEMORY_MIB.to_string();
        let net0 = format!("virtio,bridge={BRIDGE}");
        let args = self.kernel_args();
        let form = [
            ("vmid", vmid_text.as_str()),
            ("name", &name),
            ("memory", &memory),
            ("cores", "1"),
            ("scsi0", DISK),
            ("net0", &net0),
            ("args", &args),
        ];
        let path = format!("{}/qemu", self.node_path());
        self.task(client, "POST", &path, &form, POLL)
    }

    /// Stops VM `vmid` through the API.
    fn stop(&self, client: &mut Client, vmid: u32) -> Result<()> {
        let path = format!("{}/status/stop", self.vm_path(vmid));
        self.task(client, "POST", &path, &[], POLL)
    }

    /// Destroys (stopped) VM `vmid` through the API.
    fn destroy(&self, client: &mut Client, vmid: u32) -> Result<()> {
        self.task(client, "DELETE", &self.vm_path(vmid), &[], POLL)
    }

    /// The VMs of the node with their status.
    fn list(&self, client: &mut Client) -> Result<Vec<(u32, String)>> {
        let listed = client.call("GET", &format!("{}/qemu", self.node_path()), &[])?;
        Ok(listed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|vm| {
                let vmid = u32::try_from(vm["vmid"].as_u64()?).ok()?;
                Some((vmid, vm["status"].as_str().unwrap_or_default().to_string()))
            })
            .collect())
    }

    /// The volume id and host path of drive `key` of VM `vmid`.
    fn volume(&self, client: &mut Client, vmid: u32, key: &str) -> Result<(String, PathBuf)> {
        let config = client.call("GET", &format!("{}/config", self.vm_path(vmid)), &[])?;
        let value = config[key].as_str().unwrap_or_default();
        let volid = value.split(',').next().unwrap_or_default().to_string();
        let Some((storage, _)) = volid.split_once(':') else {
            return Err(BenchError::Parse {
                what: "a VM's config",
                detail: format!("VM {vmid}'s {key} '{value}' is not a volume"),
            });
        };
        let info = client.call(
            "GET",
            &format!(
                "{}/storage/{}/content/{}",
                self.node_path(),
                segment(storage),
                segment(&volid)
            ),
            &[],
        )?;
        let path = PathBuf::from(info["path"].as_str().unwrap_or_default());
        if !path.is_file() {
            return Err(BenchError::Tool {
                tool: format!("VM {vmid}'s {key}"),
                detail: format!("'{volid}' at '{}' is not a file", path.display()),
            });
        }
        Ok((volid, path))
    }

    /// Stops and destroys every VM of the node, newest id first (linked
    /// clones before their template); best effort.
    fn destroy_all(&self) -> Result<()> {
        let mut client = self.client()?;
        let mut vms = self.list(&mut client)?;
        vms.sort_by_key(|vm| std::cmp::Reverse(vm.0));
        let mut failed = Vec::new();
        for (vmid, status) in vms {
            let result = if status == "running" {
                self.stop(&mut client, vmid)
            } else {
                Ok(())
            };
            if let Err(e) = result.and_then(|()| self.destroy(&mut client, vmid)) {
                failed.push(format!("VM {vmid}: {e}"));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(BenchError::Tool {
                tool: "destroying the bench's VMs".into(),
                detail: failed.join("; "),
            })
        }
    }
}

/// Builds (or finds cached) the test guest; its directory.
fn build_guest() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/qemu/build-guest.sh");
    eprintln!("building (or finding cached) the VM test guest");
    let out = api::run_tool(
        "tests/qemu/build-guest.sh",
        Command::new(&script).stderr(Stdio::inherit()),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| BenchError::Parse {
            what: "build-guest.sh's output",
            detail: "no guest directory on its last line".into(),
        })?;
    for file in ["vmlinuz", "initrd.img"] {
        if !dir.join(file).is_file() {
            return Err(BenchError::Missing(format!(
                "the test guest has no {file} in {}",
                dir.display()
            )));
        }
    }
    Ok(dir)
}

/// Kills, whatever happened before, every QEMU still running from a pid
/// file in these run directories: the daemon's VMs outlive it, and the
/// root they run from is removed afterwards.
struct Teardown(Vec<PathBuf>);

impl Drop for Teardown {
    fn drop(&mut self) {
        for dir in &self.0 {
            let pid_files = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pid"));
            for pid_file in pid_files {
                if let Some(pid) = qemu_pid(&pid_file) {
                    eprintln!(
                        "oxve-bench: killing QEMU {pid} left running ({})",
                        pid_file.display()
                    );
                    kill(pid);
                }
            }
        }
    }
}

/// The pid in `pid_file` if it names a live process whose command line
/// has that pid file: a QEMU the bench (or the daemon for it) started.
fn qemu_pid(pid_file: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let named = args
        .windows(2)
        .any(|w| w[0] == b"-pidfile" && w[1] == pid_file.as_os_str().as_encoded_bytes());
    named.then_some(pid)
}

/// SIGKILL to `pid`.
fn kill(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory effects; `pid` is a single positive
        // process id (never 0 or -1, which would signal groups).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Whether process `pid` is gone (or a zombie).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X")
        })
        .unwrap_or(true)
}

/// Waits up to `timeout` for `pid` to end; kills it if it did not.
fn end(pid: u32, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while !gone(pid) {
        if std::time::Instant::now() > deadline {
            kill(pid);
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_is_incomplete() {
        assert!(!QemuFigures::skipped("no").complete());
    }

    #[test]
    fn only_a_live_process_naming_the_pid_file_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("100.pid");
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).expect("write");
        // This test process is alive but has no such -pidfile.
        assert_eq!(qemu_pid(&pid_file), None);
        std::fs::write(&pid_file, "nonsense").expect("write");
        assert_eq!(qemu_pid(&pid_file), None);
        assert!(!gone(std::process::id()));
    }
}
