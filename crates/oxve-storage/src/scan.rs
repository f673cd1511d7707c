//! Storage scans (`/nodes/{node}/scan/*`, `pvesm scan`): what a server
//! offers (NFS exports, SMB shares, iSCSI targets) or this host holds (LVM
//! volume groups and thin pools, ZFS file systems) that a storage can be
//! made of.
//!
//! Each scan runs the tool of the plugin that owns it through the
//! [`Runner`] and reads its output with that plugin's parser. Host names are
//! resolved and iSCSI portals probed through [`Network`], so golden tests
//! need neither DNS nor a network. A tool that is not installed is an error
//! naming the package, never an empty answer.

use crate::error::{Result, StorageError};
use crate::exec::{Cmd, Runner};
use crate::plugins::cifs::{parse_smbclient_list, CifsShare};
use crate::plugins::iscsi::parse_targets;
use crate::plugins::lvm::{self, parse_vgs, Vg, VGS_COLUMNS};
use crate::plugins::nfs::{parse_showmount, NfsExport};
use crate::plugins::write_private_file;
use crate::plugins::zfspool::parse_zfs_filesystems;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an iSCSI portal may take to accept a TCP connection before the
/// scan gives up on it (upstream's limit too).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The iSCSI port when a portal names none.
const ISCSI_PORT: u16 = 3260;

/// Name resolution and reachability, the scans' only network access
/// besides the tools themselves.
pub trait Network: Send + Sync {
    /// The first address of `host`; an IP literal is itself.
    fn resolve(&self, host: &str) -> std::io::Result<IpAddr>;

    /// Opens (and closes) a TCP connection to `addr` within [`PROBE_TIMEOUT`].
    fn probe(&self, addr: SocketAddr) -> std::io::Result<()>;
}

/// The real resolver and TCP stack.
#[derive(Debug, Default)]
pub struct SystemNetwork;

impl Network for SystemNetwork {
    fn resolve(&self, host: &str) -> std::io::Result<IpAddr> {
        (host, 0)
            .to_socket_addrs()?
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| std::io::Error::other("no address"))
    }

    fn probe(&self, addr: SocketAddr) -> std::io::Result<()> {
        TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map(drop)
    }
}

/// Who to log on to an SMB server as; all optional (guest without).
#[derive(Debug, Clone, Copy, Default)]
pub struct CifsLogin<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub domain: Option<&'a str>,
}

/// One target an iSCSI portal offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IscsiTarget {
    /// The target's IQN.
    pub target: String,
    /// Its portals (`address:port`), comma-separated (several with multipath).
    pub portal: String,
}

/// One LVM volume group of this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeGroupEntry {
    pub vg: String,
    /// Bytes.
    pub size: u64,
    /// Bytes not allocated to logical volumes.
    pub free: u64,
    pub lvcount: u64,
}

/// One LVM thin pool of a volume group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThinPoolEntry {
    /// The thin pool's logical volume name.
    pub lv: String,
    pub vg: String,
    /// Bytes.
    pub lv_size: u64,
    /// Bytes of data used.
    pub used: u64,
    /// Always `t` (upstream's field).
    pub lv_type: String,
    /// `a` when active, `-` when not.
    pub lv_state: String,
    /// Creation time, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctime: Option<i64>,
}

/// One ZFS file system a `zfspool` storage could use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZfsPoolEntry {
    /// The dataset name (`rpool`, `rpool/data`).
    pub pool: String,
    /// Bytes: used plus available.
    pub size: u64,
    /// Bytes available.
    pub free: u64,
}

/// Runs the scans with one runner, network and run directory.
pub struct Scanner<'a> {
    runner: &'a dyn Runner,
    net: &'a dyn Network,
    run_dir: &'a Path,
}

impl<'a> Scanner<'a> {
    /// `run_dir` holds short-lived private files (the SMB credentials of a
    /// CIFS scan, removed when it ends).
    pub fn new(runner: &'a dyn Runner, net: &'a dyn Network, run_dir: &'a Path) -> Scanner<'a> {
        Scanner {
            runner,
            net,
            run_dir,
        }
    }

    /// The exports of NFS server `server`, sorted by path
    /// (`showmount --no-headers --exports`).
    pub fn nfs(&self, server: &str) -> Result<Vec<NfsExport>> {
        let ip = self.resolve_server("server", server)?;
        let cmd = Cmd::new("showmount")
            .args(["--no-headers", "--exports"])
            .arg(ip.to_string());
        let out = self.run(&cmd, "nfs-common")?;
        let mut exports: BTreeMap<String, NfsExport> = BTreeMap::new();
        for e in parse_showmount(&out) {
            exports.insert(e.path.clone(), e);
        }
        Ok(exports.into_values().collect())
    }

    /// The disk shares of SMB server `server`, sorted by name
    /// (`smbclient -L`, SMB 3). The password reaches smbclient in a 0600
    /// credentials file that is removed when the scan ends, never on its
    /// command line. Shares that were listed are the answer even when a
    /// later step (the workgroup query) failed; with none, a failure is an
    /// error with smbclient's NT status.
    pub fn cifs(&self, server: &str, login: &CifsLogin<'_>) -> Result<Vec<CifsShare>> {
        let ip = self.resolve_server("server", server)?;
        let mut cmd = Cmd::new("smbclient")
            .args(["-m", "smb3", "-d", "1", "-g", "-L"])
            .arg(ip.to_string());
        if let Some(domain) = login.domain.filter(|d| !d.is_empty()) {
            check_arg("domain", domain)?;
            cmd = cmd.args(["-W", domain]);
        }
        let credentials = self.credentials_file(login)?;
        if let Some(file) = &credentials {
            cmd = cmd.arg("-A").arg(file.path.to_string_lossy());
        }
        if login.password.is_none() {
            cmd = cmd.arg("-N");
        }
        let mut out = Vec::new();
        let ran = self.runner.run_to(&cmd, &mut out);
        drop(credentials);
        let list = parse_smbclient_list(&String::from_utf8_lossy(&out));
        if !list.shares.is_empty() {
            let sorted: BTreeMap<String, CifsShare> = list
                .shares
                .into_iter()
                .map(|s| (s.share.clone(), s))
                .collect();
            return Ok(sorted.into_values().collect());
        }
        match ran {
            Err(StorageError::Command { command, message }) if !list.failures.is_empty() => {
                Err(StorageError::Command {
                    command,
                    message: format!("{}\n{message}", list.failures.join("\n")),
                })
            }
            Err(e) => Err(not_installed(e, "smbclient")),
            Ok(()) if !list.failures.is_empty() => Err(StorageError::Other(format!(
                "smbclient on '{server}': {}",
                list.failures.join("; ")
            ))),
            Ok(()) => Ok(Vec::new()),
        }
    }

    /// The targets iSCSI portal `portal` (`host[:port]`) offers, sorted by
    /// name (`iscsiadm --mode discovery --type sendtargets`). The portal
    /// must accept a TCP connection within [`PROBE_TIMEOUT`] first, so an
    /// unreachable one fails fast instead of after iscsiadm's retries.
    pub fn iscsi(&self, portal: &str) -> Result<Vec<IscsiTarget>> {
        let (host, port) = split_portal(portal).ok_or_else(|| StorageError::Option {
            key: "portal".into(),
            message: format!("unable to parse portal address '{portal}'"),
        })?;
        check_arg("portal", host)?;
        let ip = self.net.resolve(host).map_err(|_| StorageError::Option {
            key: "portal".into(),
            message: format!("unable to resolve portal address '{portal}'"),
        })?;
        let addr = SocketAddr::new(ip, port.unwrap_or(ISCSI_PORT));
        if let Err(e) = self.net.probe(addr) {
            return Err(StorageError::Other(format!(
                "iSCSI portal '{portal}' ({addr}) is not reachable: {e}"
            )));
        }
        let resolved = match (ip, port) {
            (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
            (IpAddr::V6(v6), None) => format!("[{v6}]"),
            (ip, Some(p)) => format!("{ip}:{p}"),
            (ip, None) => ip.to_string(),
        };
        let cmd = Cmd::new("iscsiadm").args([
            "--mode",
            "discovery",
            "--type",
            "sendtargets",
            "--portal",
            &resolved,
        ]);
        let out = self.run(&cmd, "open-iscsi")?;
        let mut targets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (portal, target) in parse_targets(&out) {
            let portals = targets.entry(target).or_default();
            if !portals.contains(&portal) {
                portals.push(portal);
            }
        }
        Ok(targets
            .into_iter()
            .map(|(target, portals)| IscsiTarget {
                target,
                portal: portals.join(","),
            })
            .collect())
    }

    /// This host's LVM volume groups, sorted by name (`vgs`). As upstream,
    /// a `vgs` that fails after reporting groups (exit 5 for clustered VGs
    /// it cannot lock) still answers with what it reported.
    pub fn lvm(&self) -> Result<Vec<VolumeGroupEntry>> {
        let cmd = lvm::report("vgs").args(["--options", VGS_COLUMNS]);
        let mut out = Vec::new();
        let ran = self.runner.run_to(&cmd, &mut out);
        let groups = parse_vgs(&String::from_utf8_lossy(&out));
        if let Err(e) = ran {
            if groups.is_empty() {
                return Err(not_installed(e, "lvm2"));
            }
        }
        let sorted: BTreeMap<String, VolumeGroupEntry> = groups
            .into_iter()
            .map(|g| {
                let entry = VolumeGroupEntry {
                    vg: g.name.clone(),
                    size: g.size,
                    free: g.free,
                    lvcount: g.lv_count,
                };
                (g.name, entry)
            })
            .collect();
        Ok(sorted.into_values().collect())
    }

    /// The thin pools of volume group `vg`, sorted by name (`lvs`); a
    /// group LVM does not know is an error.
    pub fn lvmthin(&self, vg: &str) -> Result<Vec<ThinPoolEntry>> {
        check_arg("vg", vg)?;
        let group = Vg {
            runner: self.runner,
            name: vg,
        };
        let mut pools: Vec<ThinPoolEntry> = group
            .lvs()
            .map_err(|e| not_installed(e, "lvm2"))?
            .into_iter()
            .filter(|lv| lv.kind == 't')
            .map(|lv| ThinPoolEntry {
                lv: lv.name,
                vg: lv.vg,
                lv_size: lv.size,
                used: lv.used.unwrap_or(0),
                lv_type: "t".into(),
                lv_state: if lv.active { "a" } else { "-" }.into(),
                ctime: lv.ctime,
            })
            .collect();
        pools.sort_by(|a, b| a.lv.cmp(&b.lv));
        Ok(pools)
    }

    /// The ZFS file systems of this host a `zfspool` storage could use, in
    /// `zfs list` order; guest subvolumes (`subvol-*`, `basevol-*`) are left
    /// out.
    pub fn zfs(&self) -> Result<Vec<ZfsPoolEntry>> {
        let cmd =
            Cmd::new("zfs").args(["list", "-t", "filesystem", "-Hp", "-o", "name,avail,used"]);
        let out = self.run(&cmd, "zfsutils-linux")?;
        Ok(parse_zfs_filesystems(&out)
            .into_iter()
            .filter(|fs| !is_guest_subvolume(&fs.name))
            .map(|fs| ZfsPoolEntry {
                size: fs.avail.saturating_add(fs.used),
                free: fs.avail,
                pool: fs.name,
            })
            .collect())
    }

    fn run(&self, cmd: &Cmd, package: &str) -> Result<String> {
        self.runner.run(cmd).map_err(|e| not_installed(e, package))
    }

    /// The first address of a server named in parameter `key`.
    fn resolve_server(&self, key: &str, server: &str) -> Result<IpAddr> {
        check_arg(key, server)?;
        self.net.resolve(server).map_err(|_| {
            StorageError::Other(format!("unable to resolve address for server '{server}'"))
        })
    }

    /// Writes the credentials file for a CIFS scan with a user or password.
    fn credentials_file(&self, login: &CifsLogin<'_>) -> Result<Option<PrivateFile>> {
        let username = login.username.filter(|u| !u.is_empty());
        if username.is_none() && login.password.is_none() {
            return Ok(None);
        }
        let mut text = String::new();
        for (key, value) in [("username", username), ("password", login.password)] {
            let Some(value) = value else { continue };
            // One `key=value` per line; smbclient drops leading blanks of a value.
            if value.contains(['\n', '\r', '\0']) || value.starts_with([' ', '\t']) {
                return Err(StorageError::Option {
                    key: key.into(),
                    message: "must not begin with a blank or contain a line break \
                              (smbclient's credentials file cannot carry it)"
                        .into(),
                });
            }
            text.push_str(&format!("{key}={value}\n"));
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .run_dir
            .join(format!("smbclient-{}-{n}.cred", std::process::id()));
        let file = PrivateFile { path };
        write_private_file(&file.path, &text)?;
        Ok(Some(file))
    }
}

/// A private file removed when dropped.
struct PrivateFile {
    path: PathBuf,
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Turns "the program could not be started because it is not there" into
/// `<tool> not installed - install the <package> package`.
fn not_installed(err: StorageError, package: &str) -> StorageError {
    let enoent = std::io::Error::from_raw_os_error(libc::ENOENT).to_string();
    match err {
        StorageError::Command { command, message } if message == enoent => {
            let tool = command.split(' ').next().unwrap_or(&command);
            StorageError::Other(format!(
                "{tool} not installed - install the {package} package"
            ))
        }
        other => other,
    }
}

/// Refuses a value that a tool would read as an option.
fn check_arg(key: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.starts_with('-') {
        return Err(StorageError::Option {
            key: key.into(),
            message: format!("invalid value '{value}'"),
        });
    }
    Ok(())
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
fn split_portal(portal: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = portal.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host, port));
    }
    if portal.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((portal, None));
    }
    match portal.split_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((portal, None)),
    }
}

/// Datasets the zfspool plugin makes for containers (`.../subvol-100-disk-0`).
fn is_guest_subvolume(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    name.contains('/')
        && ["subvol-", "basevol-"].iter().any(|prefix| {
            last.strip_prefix(prefix).is_some_and(|rest| {
                rest.split_once('-').is_some_and(|(id, name)| {
                    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
                })
            })
        })
}
