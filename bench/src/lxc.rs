//! Containers with real LXC: start through the API against raw
//! `lxc-start` of the same container with the same generated config,
//! create from a cached template against `tar -x` of the same archive,
//! linked clones of a template on btrfs against `btrfs subvolume
//! snapshot`, and many creates at once.
//!
//! The containers' NICs hang on a bridge made inside the daemon's network
//! namespace, never the host's; everything is stopped, unmounted and
//! destroyed before the daemon stops (which removes the namespace).

mod clone;
mod create;
pub(crate) mod http;
mod start;

pub use clone::{LinkedCloneFigures, STORAGE as CLONE_STORAGE, TEMPLATE_VMID};
pub use create::{CreateFigures, ParallelFigures, FIRST_PARALLEL, PARALLEL_POLL};
pub use start::{StartFigures, VMID as START_VMID};

use crate::api::{self, Ticket};
use crate::daemon::Daemon;
use crate::error::{BenchError, Result};
use crate::report::Outcome;
use http::Client;
use oxve_lxc::host::LxcHost;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The user the container benchmarks log in as.
const USER: &str = "benchct@pve";
const PASSWORD: &str = "benchpass123";
/// Its role, on `/`: may create, start and destroy CTs on any storage.
const ROLE: &str = "PVEAdmin";
/// The bridge made in the daemon's network namespace.
pub const BRIDGE: &str = "vmbr0";
/// The template every CT is created from (built by tests/lxc/build-templates.sh).
pub const TEMPLATE: &str = "busybox-1.0_amd64.tar.gz";
/// The rootfs of the CTs started and created: a subvolume on `local`.
const ROOTFS: &str = "local:0";
/// How long a task may run before the bench gives up on it.
const TASK_TIMEOUT: Duration = Duration::from_secs(600);

/// Every container figure of a run; each part is measured, or says why not.
pub struct LxcFigures {
    /// API start against raw `lxc-start` + `lxc-wait`.
    pub start: Outcome<StartFigures>,
    /// Create from the cached template against `tar -xpf`.
    pub create: Outcome<CreateFigures>,
    /// Linked clones of a template on btrfs against `btrfs subvolume snapshot`.
    pub clone: Outcome<LinkedCloneFigures>,
    /// Many creates at once, then as many destroys.
    pub parallel: Outcome<ParallelFigures>,
}

impl LxcFigures {
    /// No container figures, all for the same reason.
    pub fn skipped(why: &str) -> LxcFigures {
        LxcFigures {
            start: Err(why.to_string()),
            create: Err(why.to_string()),
            parallel: Err(why.to_string()),
            clone: Err(why.to_string()),
        }
    }

    /// Whether every part was measured.
    pub fn complete(&self) -> bool {
        self.start.is_ok() && self.create.is_ok() && self.parallel.is_ok() && self.clone.is_ok()
    }
}

/// Options of the container benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Creates fired at once.
    pub parallel: usize,
}

/// Runs the container benchmarks against `daemon`, then stops, unmounts
/// and destroys every container it made.
pub fn with_daemon(daemon: &Daemon, node: &str, plan: Plan) -> LxcFigures {
    let bench = match Bench::prepare(daemon, node) {
        Ok(b) => b,
        Err(e) => return LxcFigures::skipped(&e.to_string()),
    };
    let _teardown = Teardown(&bench.host, daemon.root().to_path_buf());
    let start = start::run(&bench).map_err(|e| e.to_string());
    let create = create::sequential(&bench).map_err(|e| e.to_string());
    let clone = clone::run(&bench).map_err(|e| e.to_string());
    let sequential_ms = create.as_ref().ok().map(|c| c.api.p50_ms);
    let parallel =
        create::parallel(&bench, plan.parallel, sequential_ms).map_err(|e| e.to_string());
    if let Err(e) = bench.destroy_all() {
        eprintln!("oxve-bench: warning: container cleanup: {e}");
    }
    LxcFigures {
        start,
        create,
        clone,
        parallel,
    }
}

/// What every container benchmark needs: the daemon's LXC side, a logged
/// in user, the bridge and the template.
struct Bench<'a> {
    daemon: &'a Daemon,
    node: String,
    host: LxcHost,
    ticket: Ticket,
    /// The template's host path in `local`'s cache.
    template: PathBuf,
}

impl<'a> Bench<'a> {
    fn prepare(daemon: &'a Daemon, node: &str) -> Result<Bench<'a>> {
        for tool in ["lxc-start", "lxc-wait", "lxc-stop", "lxc-info"] {
            need(tool)?;
        }
        let host = LxcHost::of_node(daemon.root());
        let Some(netns) = host.netns.clone() else {
            return Err(BenchError::Daemon(format!(
                "no network namespace recorded in {}",
                host.lxcpath.join("netns").display()
            )));
        };
        open_path_for_unprivileged(daemon.root())?;
        daemon.cli(&["pveum", "user", "add", USER, "--password", PASSWORD])?;
        daemon.cli(&[
            "pveum", "acl", "modify", "/", "--users", USER, "--roles", ROLE,
        ])?;
        let ticket = api::login(&api::base_url(daemon), USER, PASSWORD)?;
        for args in [
            vec!["link", "add", BRIDGE, "type", "bridge"],
            vec!["link", "set", BRIDGE, "up"],
        ] {
            api::run_tool(
                &format!("ip -n {netns} {}", args.join(" ")),
                Command::new("ip").args(["-n", &netns]).args(&args),
            )?;
        }
        let mut bench = Bench {
            daemon,
            node: node.to_string(),
            host,
            ticket,
            template: PathBuf::new(),
        };
        bench.template = bench.install_template()?;
        Ok(bench)
    }

    /// Builds (or finds cached) the busybox template and copies it into
    /// `local`'s template cache.
    fn install_template(&self) -> Result<PathBuf> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lxc/build-templates.sh");
        eprintln!("building (or finding cached) the busybox template");
        let out = api::run_tool(
            "tests/lxc/build-templates.sh --only busybox",
            Command::new(&script)
                .args(["--only", "busybox"])
                .stderr(Stdio::inherit()),
        )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = stdout
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| BenchError::Parse {
                what: "build-templates.sh's output",
                detail: "no template directory on its last line".into(),
            })?;
        let local = self.client()?.call("GET", "/storage/local", &[])?;
        let cache = local["path"]
            .as_str()
            .map(|p| Path::new(p).join("template/cache"))
            .ok_or_else(|| BenchError::Parse {
                what: "GET /storage/local",
                detail: format!("no path in {local}"),
            })?;
        std::fs::create_dir_all(&cache).map_err(BenchError::file(&cache))?;
        let target = cache.join(TEMPLATE);
        std::fs::copy(dir.join(TEMPLATE), &target).map_err(BenchError::file(dir.join(TEMPLATE)))?;
        Ok(target)
    }

    /// A new client of the daemon with the bench user's ticket.
    fn client(&self) -> Result<Client> {
        Client::new(self.daemon.port, &self.ticket)
    }

    /// `/nodes/<node>`, encoded.
    fn node_path(&self) -> String {
        format!("/nodes/{}", segment(&self.node))
    }

    /// The create parameters of CT `vmid`: busybox, `rootfs` (a new
    /// volume: `<storage>:<GiB>`), a NIC on the bridge.
    fn create_form(vmid: u32, rootfs: &str) -> Vec<(&'static str, String)> {
        vec![
            ("vmid", vmid.to_string()),
            ("ostemplate", format!("local:vztmpl/{TEMPLATE}")),
            ("rootfs", rootfs.into()),
            ("hostname", format!("ct{vmid}")),
            (
                "net0",
                format!(
                    "name=eth0,bridge={BRIDGE},ip=10.77.{}.{}/16",
                    vmid / 250,
                    vmid % 250 + 2
                ),
            ),
            ("memory", "128".into()),
            ("swap", "0".into()),
        ]
    }

    /// `POST /nodes/<node>/lxc` for CT `vmid` with `rootfs`; returns the
    /// task id.
    fn post_create(&self, client: &mut Client, vmid: u32, rootfs: &str) -> Result<String> {
        let form = Bench::create_form(vmid, rootfs);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let upid = client.call("POST", &format!("{}/lxc", self.node_path()), &form)?;
        task_id(upid)
    }

    /// `DELETE /nodes/<node>/lxc/<vmid>`; returns the task id.
    fn post_destroy(&self, client: &mut Client, vmid: u32) -> Result<String> {
        let upid = client.call("DELETE", &format!("{}/lxc/{vmid}", self.node_path()), &[])?;
        task_id(upid)
    }

    /// Polls task `upid` every `every` until it has stopped; fails unless
    /// it ended OK.
    fn wait_task(&self, client: &mut Client, upid: &str, every: Duration) -> Result<()> {
        client.wait_task(&self.node_path(), upid, every, TASK_TIMEOUT)
    }

    /// Creates CT `vmid` on a subvolume of `local` and waits for its task.
    fn create(&self, client: &mut Client, vmid: u32) -> Result<()> {
        self.create_on(client, vmid, ROOTFS)
    }

    /// Creates CT `vmid` with `rootfs` and waits for its task.
    fn create_on(&self, client: &mut Client, vmid: u32, rootfs: &str) -> Result<()> {
        let upid = self.post_create(client, vmid, rootfs)?;
        self.wait_task(client, &upid, Duration::from_millis(5))
    }

    /// Destroys CT `vmid` and waits for its task.
    fn destroy(&self, client: &mut Client, vmid: u32) -> Result<()> {
        let upid = self.post_destroy(client, vmid)?;
        self.wait_task(client, &upid, Duration::from_millis(5))
    }

    /// Runs `lxc-<tool> -n vmid -P lxcpath ARGS` in the daemon's network
    /// namespace, as the daemon runs it, and waits for it.
    fn lxc(&self, tool: &str, vmid: u32, args: &[&str]) -> Result<()> {
        let mut cmd = self.host.tool(tool, vmid);
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        api::run_tool(&format!("{tool} -n {vmid} {}", args.join(" ")), &mut cmd).map(|_| ())
    }

    /// Kills CT `vmid` if it runs and unmounts what is left of it.
    fn kill(&self, vmid: u32) -> Result<()> {
        if self.host.state(vmid).map_err(lxc_error)? != oxve_lxc::host::RunState::Stopped {
            self.host.stop(vmid, true, 0, false).map_err(lxc_error)?;
        }
        oxve_lxc::mount::unmount_all(&self.host.rootfs_dir(vmid)).map_err(lxc_error)
    }

    /// Stops and destroys every CT of the node (best effort, in order).
    fn destroy_all(&self) -> Result<()> {
        let mut client = self.client()?;
        let listed = client.call("GET", &format!("{}/lxc", self.node_path()), &[])?;
        let mut failed = Vec::new();
        for vmid in listed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["vmid"].as_u64())
            .filter_map(|v| u32::try_from(v).ok())
        {
            if let Err(e) = self
                .kill(vmid)
                .and_then(|()| self.destroy(&mut client, vmid))
            {
                failed.push(format!("CT {vmid}: {e}"));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(BenchError::Tool {
                tool: "destroying the bench's containers".into(),
                detail: failed.join("; "),
            })
        }
    }
}

/// Kills every container below the node's LXC path and unmounts
/// everything below its root, whatever happened before: the root is
/// removed afterwards, and must not reach through a mount.
struct Teardown<'a>(&'a LxcHost, PathBuf);

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        let Teardown(host, root) = self;
        let ids = std::fs::read_dir(&host.lxcpath)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
        for vmid in ids {
            let _ = host.stop(vmid, true, 0, false);
        }
        if let Err(e) = oxve_lxc::mount::unmount_all(root) {
            eprintln!("oxve-bench: warning: {e}");
        }
    }
}

/// An unprivileged CT's root (uid 100000) must reach its rootfs below the
/// node's root, as it reaches upstream's /var/lib/lxc: the daemon's root
/// and the bench's directory holding it are opened to others; every other
/// directory above must already be.
fn open_path_for_unprivileged(root: &Path) -> Result<()> {
    for dir in [root.parent(), Some(root)].into_iter().flatten() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(BenchError::file(dir))?;
    }
    for dir in root.ancestors() {
        let mode = std::fs::metadata(dir)
            .map_err(BenchError::file(dir))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(BenchError::Missing(format!(
                "{} is not searchable by others (mode {:o}): an unprivileged container \
                 cannot reach its root file system below it; choose another --scratch",
                dir.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// A task id from an API answer's data.
pub(crate) fn task_id(data: Value) -> Result<String> {
    data.as_str()
        .map(str::to_string)
        .ok_or_else(|| BenchError::Parse {
            what: "the API's answer",
            detail: format!("data is not a task id: {data}"),
        })
}

/// One path segment, percent-encoded.
pub(crate) fn segment(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

fn lxc_error(e: oxve_lxc::LxcError) -> BenchError {
    BenchError::Tool {
        tool: "LXC".into(),
        detail: e.to_string(),
    }
}

/// Fails with [`BenchError::Missing`] unless `tool` is on the PATH.
fn need(tool: &str) -> Result<()> {
    match Command::new(tool).arg("--version").output() {
        Ok(_) => Ok(()),
        Err(e) => Err(BenchError::Missing(format!(
            "'{tool}' cannot run ({e}): install lxc (scripts/install-deps.sh does)"
        ))),
    }
}

/// Milliseconds since `start`.
pub(crate) fn elapsed_ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_form_gives_each_ct_its_own_address() {
        let form = Bench::create_form(300, ROOTFS);
        let get = |k: &str| {
            form.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("rootfs"), "local:0");
        assert_eq!(get("ostemplate"), "local:vztmpl/busybox-1.0_amd64.tar.gz");
        assert_eq!(get("net0"), "name=eth0,bridge=vmbr0,ip=10.77.1.52/16");
        assert_ne!(
            Bench::create_form(301, ROOTFS)[4].1,
            Bench::create_form(551, ROOTFS)[4].1
        );
    }

    #[test]
    fn skipped_is_incomplete() {
        assert!(!LxcFigures::skipped("no").complete());
    }

    #[test]
    fn task_ids_are_strings() {
        assert_eq!(
            task_id(Value::String("UPID:x".into())).expect("id"),
            "UPID:x"
        );
        assert!(task_id(Value::Null).is_err());
    }
}
