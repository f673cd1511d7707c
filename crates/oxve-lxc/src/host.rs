//! Driving real LXC: `lxc-start`, `lxc-stop`, `lxc-freeze`, `lxc-attach`
//! for the containers of one node, and their state from LXC's monitor.
//!
//! Every tool runs inside the node's network namespace (`--netns`): the
//! host ends of the veths land there, and LXC's command sockets are
//! abstract Unix sockets, which belong to a network namespace — a monitor
//! started in one namespace is only reachable from the same one.

use crate::error::{io_err, LxcError};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A container's run state as LXC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Stopped,
    Running { pid: u32 },
    Frozen { pid: u32 },
}

impl RunState {
    /// Upstream's `status` value: `running` (a frozen CT counts as
    /// running) or `stopped`.
    pub fn as_status(self) -> &'static str {
        match self {
            RunState::Stopped => "stopped",
            _ => "running",
        }
    }

    /// The init pid of a running container.
    pub fn pid(self) -> Option<u32> {
        match self {
            RunState::Stopped => None,
            RunState::Running { pid } | RunState::Frozen { pid } => Some(pid),
        }
    }
}

/// The LXC side of one node: where configs and mounts live, and the
/// network namespace the tools run in.
#[derive(Debug, Clone)]
pub struct LxcHost {
    /// `<root>/run/oxve/lxc`: LXC's `lxcpath`, one directory per CT.
    pub lxcpath: PathBuf,
    /// The node's network namespace, if any (`/run/netns/<name>`).
    pub netns: Option<String>,
}

impl LxcHost {
    /// The LXC side of the node rooted at `root`.
    pub fn new(root: &Path, netns: Option<String>) -> LxcHost {
        LxcHost {
            lxcpath: root.join("run/oxve/lxc"),
            netns,
        }
    }

    /// Records the network namespace for the node's local tools (`pct
    /// exec` and `pct enter` run `lxc-attach` themselves).
    pub fn record(&self) -> Result<(), LxcError> {
        std::fs::create_dir_all(&self.lxcpath)
            .map_err(|e| io_err("cannot create", &self.lxcpath, e))?;
        let path = self.lxcpath.join("netns");
        std::fs::write(&path, self.netns.as_deref().unwrap_or(""))
            .map_err(|e| io_err("cannot write", &path, e))
    }

    /// The LXC side of the node rooted at `root` as its daemon recorded it.
    pub fn of_node(root: &Path) -> LxcHost {
        let mut host = LxcHost::new(root, None);
        let recorded = std::fs::read_to_string(host.lxcpath.join("netns")).unwrap_or_default();
        host.netns = Some(recorded.trim().to_string()).filter(|n| !n.is_empty());
        host
    }

    /// `<lxcpath>/<vmid>`: the generated config, the log and the rootfs.
    pub fn ct_dir(&self, vmid: u32) -> PathBuf {
        self.lxcpath.join(vmid.to_string())
    }

    /// Where the container's root file system is mounted while it runs.
    pub fn rootfs_dir(&self, vmid: u32) -> PathBuf {
        self.ct_dir(vmid).join("rootfs")
    }

    /// The LXC log of the container.
    /// Where oxve's own LXC hooks leave the reason they failed: LXC reports
    /// only "Script exited with status 1".
    pub fn hook_error_file(&self, vmid: u32) -> PathBuf {
        self.ct_dir(vmid).join("hook.err")
    }

    pub fn log_file(&self, vmid: u32) -> PathBuf {
        self.ct_dir(vmid).join("lxc.log")
    }

    /// Creates the CT's run directory (traversable by an unprivileged
    /// container's root, which LXC needs to reach the rootfs).
    pub fn prepare_dir(&self, vmid: u32) -> Result<PathBuf, LxcError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.ct_dir(vmid);
        std::fs::create_dir_all(self.rootfs_dir(vmid))
            .map_err(|e| io_err("cannot create", &dir, e))?;
        for d in [&self.lxcpath, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| io_err("cannot chmod", d, e))?;
        }
        Ok(dir)
    }

    /// Writes the generated LXC config.
    pub fn write_config(&self, vmid: u32, text: &str) -> Result<(), LxcError> {
        let dir = self.prepare_dir(vmid)?;
        let path = dir.join("config");
        let tmp = dir.join("config.tmp");
        std::fs::write(&tmp, text).map_err(|e| io_err("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err("cannot write", &path, e))
    }

    /// A command for an `lxc-*` tool of container `vmid`, set to run in
    /// the node's network namespace.
    pub fn tool(&self, tool: &str, vmid: u32) -> Command {
        let mut cmd = self.bare_tool(tool, vmid);
        self.enter_netns(&mut cmd);
        cmd
    }

    /// The command for an `lxc-*` tool without a namespace switch: for
    /// [`LxcHost::in_netns`].
    fn bare_tool(&self, tool: &str, vmid: u32) -> Command {
        let mut cmd = Command::new(tool);
        cmd.arg("-n")
            .arg(vmid.to_string())
            .arg("-P")
            .arg(&self.lxcpath);
        cmd
    }

    /// Runs `f` in the node's network namespace, in a short-lived thread
    /// that joined it: processes it starts are born there (a child gets
    /// the namespaces of the thread that forks it). Unlike a `pre_exec`
    /// hook this lets the standard library spawn by `posix_spawn` (vfork)
    /// instead of copying the daemon's address space for every tool.
    pub fn in_netns<T: Send>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> std::io::Result<T> {
        let Some(name) = &self.netns else {
            return f();
        };
        let path = Path::new("/run/netns").join(name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(&path)?;
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
        })
    }

    /// Makes `cmd` join the node's network namespace before it runs.
    pub fn enter_netns(&self, cmd: &mut Command) {
        let Some(name) = &self.netns else {
            return;
        };
        let path = Path::new("/run/netns").join(name);
        // SAFETY: the closure runs in the forked child before exec; it only
        // opens a file and calls setns(2), both async-signal-safe syscalls,
        // and touches no locks or allocator state of the parent.
        unsafe {
            cmd.pre_exec(move || {
                let fd = std::fs::File::open(&path)?;
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
    }

    /// Whether network interface `name` exists in the node's namespace.
    /// A short-lived thread joins the namespace (setns affects only the
    /// calling thread) and asks the kernel, without running a tool.
    pub fn has_interface(&self, name: &str) -> bool {
        let Some(ns) = self.netns.clone() else {
            return nix::net::if_::if_nametoindex(name).is_ok();
        };
        let name = name.to_string();
        std::thread::spawn(move || {
            let Ok(fd) = std::fs::File::open(Path::new("/run/netns").join(ns)) else {
                return false;
            };
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
                && nix::net::if_::if_nametoindex(name.as_str()).is_ok()
        })
        .join()
        .unwrap_or(false)
    }

    /// Starts the container (daemonized: it outlives the caller).
    pub fn start(&self, vmid: u32, debug: bool) -> Result<(), LxcError> {
        let mut cmd = self.bare_tool("lxc-start", vmid);
        cmd.arg("-d");
        if debug {
            cmd.args(["-l", "DEBUG", "-o"]).arg(self.log_file(vmid));
        }
        let _ = std::fs::remove_file(self.log_file(vmid));
        let _ = std::fs::remove_file(self.hook_error_file(vmid));
        // The monitor lives on: give it files, not pipes that would keep a
        // reader waiting for their end.
        let err_path = self.ct_dir(vmid).join("start.err");
        let err =
            std::fs::File::create(&err_path).map_err(|e| io_err("cannot create", &err_path, e))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let status = self.in_netns(|| cmd.status()).map_err(|e| {
            LxcError::Command(format!("cannot run 'lxc-start' (is lxc installed?): {e}"))
        })?;
        if status.success() {
            return Ok(());
        }
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let hook = std::fs::read_to_string(self.hook_error_file(vmid)).ok();
        let reason = hook
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| self.log_reason(vmid))
            .or_else(|| stderr.lines().next().map(str::to_string))
            .unwrap_or_else(|| status.to_string());
        Err(LxcError::Command(format!(
            "startup for container '{vmid}' failed: {reason}"
        )))
    }

    /// The most telling error line of the LXC log (the first ERROR), without
    /// LXC's source location prefix.
    pub fn log_reason(&self, vmid: u32) -> Option<String> {
        let log = std::fs::read_to_string(self.log_file(vmid)).ok()?;
        let line = log.lines().find(|l| l.contains(" ERROR "))?;
        let msg = line.split(" - ").skip(1).collect::<Vec<_>>().join(" - ");
        Some(if msg.is_empty() {
            line.to_string()
        } else {
            msg
        })
    }

    /// The container's state (`Stopped` when LXC does not know it), asked
    /// of its monitor over the command socket (see `cmdsock`). A container
    /// on its way up or down counts as running while it has an init pid.
    pub fn state(&self, vmid: u32) -> Result<RunState, LxcError> {
        use crate::cmdsock::MonitorState as M;
        let name = vmid.to_string();
        let answer =
            crate::cmdsock::query(&self.lxcpath, &name, self.netns.as_deref()).map_err(|e| {
                LxcError::Command(format!("cannot ask LXC for the state of CT {vmid}: {e}"))
            })?;
        Ok(match answer {
            Some((M::Frozen | M::Freezing, Some(pid))) => RunState::Frozen { pid },
            Some((M::Stopped | M::Aborting, _)) | Some((_, None)) | None => RunState::Stopped,
            Some((_, Some(pid))) => RunState::Running { pid },
        })
    }

    /// Stops the container: `kill` at once, or a clean shutdown (SIGPWR to
    /// init) that waits `timeout` seconds and then kills unless `nokill`.
    pub fn stop(&self, vmid: u32, kill: bool, timeout: u64, nokill: bool) -> Result<(), LxcError> {
        let mut cmd = self.bare_tool("lxc-stop", vmid);
        if kill {
            cmd.arg("-k");
        } else {
            cmd.arg("-t").arg(timeout.to_string());
            if nokill {
                cmd.arg("--nokill");
            }
        }
        let out = self.run(&mut cmd)?;
        if out.status.success() || self.state(vmid)? == RunState::Stopped {
            return Ok(());
        }
        Err(LxcError::Command(format!(
            "stopping container '{vmid}' failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    /// Reboots the container (init gets SIGINT, as `lxc-stop -r`).
    pub fn reboot(&self, vmid: u32) -> Result<(), LxcError> {
        let mut cmd = self.bare_tool("lxc-stop", vmid);
        cmd.arg("-r");
        check(self.run(&mut cmd)?, "rebooting", vmid)
    }

    /// Freezes (`true`) or thaws the container's processes.
    pub fn freeze(&self, vmid: u32, frozen: bool) -> Result<(), LxcError> {
        let tool = if frozen { "lxc-freeze" } else { "lxc-unfreeze" };
        check(
            self.run(&mut self.bare_tool(tool, vmid))?,
            if frozen { "suspending" } else { "resuming" },
            vmid,
        )
    }

    /// Runs a tool in the node's network namespace and collects its output.
    fn run(&self, cmd: &mut Command) -> Result<Output, LxcError> {
        let prog = cmd.get_program().to_string_lossy().into_owned();
        cmd.stdin(Stdio::null());
        self.in_netns(|| cmd.output())
            .map_err(|e| LxcError::Command(format!("cannot run '{prog}' (is lxc installed?): {e}")))
    }

    /// A command that runs `argv` inside the running container.
    pub fn attach(&self, vmid: u32, argv: &[String]) -> Command {
        let mut cmd = self.tool("lxc-attach", vmid);
        cmd.arg("--clear-env")
            .arg("--set-var")
            .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        cmd.arg("--").args(argv);
        cmd
    }
}

fn check(out: Output, what: &str, vmid: u32) -> Result<(), LxcError> {
    if out.status.success() {
        return Ok(());
    }
    Err(LxcError::Command(format!(
        "{what} container '{vmid}' failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
