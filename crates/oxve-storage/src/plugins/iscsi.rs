//! `iscsi`: the LUNs of one target, through the kernel's iSCSI initiator
//! (open-iscsi). Activation discovers the target and logs in; each LUN is
//! a volume `<channel>.<id>.<lun>.<by-id name>` whose path is its stable
//! `/dev/disk/by-id/` link. LUNs are made and removed on the target, so
//! nothing is allocated or freed here (LVM on top of a LUN uses `base`).

use super::lvm::{check_raw_export, device_size, export_block_device};
use super::required;
use crate::config::StorageDef;
use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::exec::Cmd;
use crate::plugin::{Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
use crate::volume::VolName;
use regex::Regex;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

pub struct IscsiPlugin {
    def: StorageDef,
    env: Env,
}

const BY_ID: &str = "/dev/disk/by-id";
/// Rescans of logged-in sessions at most this often (they are slow and
/// activation runs on every status poll).
const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

impl IscsiPlugin {
    pub fn new(def: StorageDef, env: Env) -> IscsiPlugin {
        IscsiPlugin { def, env }
    }

    fn target(&self) -> Result<&str> {
        required(&self.def, "target")
    }

    fn iscsiadm(&self, args: &[&str]) -> Result<String> {
        self.env.runner.run(&Cmd::new("iscsiadm").args(args))
    }

    /// The sessions to our target (several with multipath).
    fn sessions(&self) -> Result<Vec<IscsiSession>> {
        let target = self.target()?;
        match self.iscsiadm(&["--mode", "session"]) {
            Ok(out) => Ok(parse_sessions(&out)
                .into_iter()
                .filter(|s| s.target == target)
                .collect()),
            Err(StorageError::Command { message, .. })
                if message.contains("No active sessions") =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// The portals the node database knows for our target; the configured
    /// one before the first discovery.
    fn portals(&self) -> Result<Vec<String>> {
        let target = self.target()?;
        let known: Vec<String> = self
            .iscsiadm(&["--mode", "node"])
            .map(|out| {
                parse_targets(&out)
                    .into_iter()
                    .filter(|(_, t)| t == target)
                    .map(|(p, _)| p)
                    .collect()
            })
            .unwrap_or_default();
        if known.is_empty() {
            return Ok(vec![with_port(required(&self.def, "portal")?)]);
        }
        Ok(known)
    }

    fn login(&self, portals: &[String]) -> Result<()> {
        let target = self.target()?;
        // Any portal that answers lists all portals of a multipath target.
        for portal in portals {
            let found = self.iscsiadm(&[
                "--mode",
                "discovery",
                "--type",
                "sendtargets",
                "--portal",
                portal,
            ]);
            if found.is_ok_and(|out| !parse_targets(&out).is_empty()) {
                break;
            }
        }
        // No login retries: an unreachable target must not block activation
        // for minutes; the next activation tries again.
        let _ = self.iscsiadm(&[
            "--mode",
            "node",
            "--targetname",
            target,
            "--op",
            "update",
            "--name",
            "node.session.initial_login_retry_max",
            "--value",
            "0",
        ]);
        match self.iscsiadm(&["--mode", "node", "--targetname", target, "--login"]) {
            Err(StorageError::Command { message, .. }) if message.contains("already present") => {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// Rescans the sessions for new LUNs, at most every [`RESCAN_INTERVAL`].
    fn rescan(&self, sessions: &[IscsiSession]) -> Result<()> {
        let stamp = self.env.run_dir.join("iscsi-rescan.stamp");
        let recent = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < RESCAN_INTERVAL);
        if recent {
            return Ok(());
        }
        let _ = std::fs::create_dir_all(&self.env.run_dir);
        let _ = std::fs::write(&stamp, b"");
        for s in sessions {
            self.iscsiadm(&["--mode", "session", "--sid", &s.id, "--rescan"])?;
        }
        Ok(())
    }

    fn image(&self, volname: &str) -> Result<VolName> {
        self.parse_volname(volname)
    }

    fn managed_on_target(&self, op: &str) -> StorageError {
        StorageError::Other(format!(
            "cannot {op} on iSCSI storage '{}' - LUNs are managed on the target",
            self.def.id
        ))
    }
}

impl StoragePlugin for IscsiPlugin {
    fn def(&self) -> &StorageDef {
        &self.def
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: false,
            linked_clones: false,
            resize: false,
            rename: false,
            export_formats: &["raw+size"],
            import_formats: &[],
        }
    }

    /// Logs in when a portal has no session yet, else rescans for LUNs.
    fn activate(&self) -> Result<()> {
        let sessions = self.sessions()?;
        let portals = self.portals()?;
        let complete = !sessions.is_empty()
            && portals
                .iter()
                .all(|p| sessions.iter().any(|s| &s.portal == p));
        if complete {
            self.rescan(&sessions)
        } else {
            self.login(&portals)
        }
    }

    fn deactivate(&self) -> Result<()> {
        if self.sessions()?.is_empty() {
            return Ok(());
        }
        self.iscsiadm(&["--mode", "node", "--targetname", self.target()?, "--logout"])
            .map(drop)
    }

    fn activate_volume(&self, volname: &str) -> Result<()> {
        let path = self.path(volname)?;
        if !path.exists() {
            return Err(StorageError::Other(format!(
                "volume '{volname}' not found at '{}' - is storage '{}' logged in?",
                path.display(),
                self.def.id
            )));
        }
        Ok(())
    }

    /// A target has no space of its own to report; active while logged in.
    fn status(&self) -> Result<Usage> {
        if self.sessions()?.is_empty() {
            return Err(StorageError::Other(format!(
                "storage '{}' is not active - no session to target '{}'",
                self.def.id,
                self.target()?
            )));
        }
        Ok(Usage::default())
    }

    fn parse_volname(&self, volname: &str) -> Result<VolName> {
        static LUN: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^\d+\.\d+\.\d+\.([^/\s]+)$").expect("static regex"));
        let caps = LUN.captures(volname).ok_or_else(|| {
            StorageError::bad_volume(volname, "expected <channel>.<id>.<lun>.<device id>")
        })?;
        if caps[1].starts_with('.') {
            return Err(StorageError::bad_volume(volname, "invalid device id"));
        }
        Ok(VolName {
            content: Content::Images,
            name: caps[1].to_string(),
            vmid: None,
            base: None,
            is_base: false,
            format: Some("raw".into()),
        })
    }

    fn path(&self, volname: &str) -> Result<PathBuf> {
        Ok(Path::new(BY_ID).join(self.image(volname)?.name))
    }

    /// LUNs belong to no guest: listed only when all volumes are asked for.
    fn list_images(&self, vmid: Option<u32>) -> Result<Vec<VolumeInfo>> {
        if vmid.is_some() {
            return Ok(Vec::new());
        }
        let luns = scan_luns(Path::new("/sys"), Path::new(BY_ID));
        Ok(luns
            .get(self.target()?)
            .into_iter()
            .flatten()
            .map(|lun| VolumeInfo::lun(&self.def.id, &lun.volname, lun.size))
            .collect())
    }

    fn create_image(
        &self,
        _vmid: u32,
        _name: &str,
        _format: &str,
        _size_kib: u64,
    ) -> Result<String> {
        Err(self.managed_on_target("allocate images"))
    }

    fn free_image(&self, _volname: &str) -> Result<()> {
        Err(self.managed_on_target("free images"))
    }

    fn volume_size(&self, volname: &str) -> Result<(u64, u64)> {
        let size = device_size(&*self.env.runner, &self.path(volname)?)?;
        Ok((size, size))
    }

    fn export(
        &self,
        volname: &str,
        format: &str,
        snapshot: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<()> {
        check_raw_export(volname, format, snapshot)?;
        export_block_device(&*self.env.runner, &self.path(volname)?, out)
    }
}

/// `10.0.0.1` → `10.0.0.1:3260` (how iscsiadm lists portals).
fn with_port(portal: &str) -> String {
    if portal.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{portal}]:3260");
    }
    let has_port = match portal.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':')
        }
        None => false,
    };
    if has_port {
        portal.to_string()
    } else {
        format!("{portal}:3260")
    }
}

/// One line of `iscsiadm --mode session`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiSession {
    pub id: String,
    /// `address:port`.
    pub portal: String,
    pub target: String,
}

/// Parses `iscsiadm --mode session`
/// (`tcp: [1] 10.0.0.20:3260,1 iqn.2003-01.org.example:target (non-flash)`).
pub fn parse_sessions(text: &str) -> Vec<IscsiSession> {
    static RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^tcp:\s+\[(\S+)\]\s+(\S+:\d+),\S+\s+(\S+)(?:\s+\S+)?\s*$")
            .expect("static regex")
    });
    text.lines()
        .filter_map(|l| RE.captures(l.trim()))
        .map(|c| IscsiSession {
            id: c[1].to_string(),
            portal: c[2].to_string(),
            target: c[3].to_string(),
        })
        .collect()
}

/// Parses `iscsiadm --mode node` and `--mode discovery` output
/// (`10.0.0.20:3260,1 iqn.2003-01.org.example:target`): (portal, target).
pub fn parse_targets(text: &str) -> Vec<(String, String)> {
    static RE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^(\S+:\d+),\S+\s+(\S+)\s*$").expect("static regex"));
    text.lines()
        .filter_map(|l| RE.captures(l.trim()))
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect()
}

/// One disk LUN of a logged-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiLun {
    /// `<channel>.<id>.<lun>.<by-id name>`.
    pub volname: String,
    /// Bytes.
    pub size: u64,
}

/// The disk LUNs of every logged-in target, by target name, read from
/// sysfs (`sys`, normally `/sys`) and the stable device links in `by_id`
/// (normally `/dev/disk/by-id`). A LUN behind multipath is reported as
/// its multipath device. LUNs without a stable link are left out.
pub fn scan_luns(sys: &Path, by_id: &Path) -> BTreeMap<String, Vec<IscsiLun>> {
    let stable = stable_names(by_id);
    let mut out: BTreeMap<String, Vec<IscsiLun>> = BTreeMap::new();
    let sessions = sys.join("class/iscsi_session");
    for session in entries(&sessions)
        .into_iter()
        .filter(|n| is_numbered(n, "session"))
    {
        let Some(target) = first_line(&sessions.join(&session).join("targetname")) else {
            continue;
        };
        // session<N>/device/target<host>:<channel>:<id>
        let Some(host) = entries(&sessions.join(&session).join("device"))
            .into_iter()
            .find_map(|n| {
                n.strip_prefix("target")
                    .and_then(|r| r.split(':').next())
                    .map(str::to_string)
            })
        else {
            continue;
        };
        let devices = sys.join("bus/scsi/devices");
        let mut luns = Vec::new();
        for dev in entries(&devices) {
            let parts: Vec<&str> = dev.split(':').collect();
            let [h, channel, id, lun] = parts.as_slice() else {
                continue;
            };
            if *h != host || ![channel, id, lun].iter().all(|p| p.parse::<u32>().is_ok()) {
                continue;
            }
            let dir = devices.join(&dev);
            if first_line(&dir.join("type")).as_deref() != Some("0") {
                continue; // disks only
            }
            let Some(mut bdev) = block_device(&dir) else {
                continue;
            };
            if let Some(holder) = entries(&sys.join("block").join(&bdev).join("holders"))
                .into_iter()
                .next()
            {
                bdev = holder;
            }
            let Some(name) = stable.get(&bdev) else {
                continue;
            };
            let Some(sectors) = first_line(&sys.join("block").join(&bdev).join("size"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            luns.push(IscsiLun {
                volname: format!("{channel}.{id}.{lun}.{name}"),
                size: sectors * 512,
            });
        }
        out.entry(target).or_default().extend(luns);
    }
    out
}

/// The kernel name of a SCSI device's block device (`sdb`).
fn block_device(scsi_dev: &Path) -> Option<String> {
    let block = scsi_dev.join("block");
    if block.is_dir() {
        return entries(&block)
            .into_iter()
            .find(|n| n.starts_with(|c: char| c.is_ascii_alphabetic()));
    }
    // Old kernels: a `block:sdb` link in the device directory.
    entries(scsi_dev)
        .into_iter()
        .find_map(|n| n.strip_prefix("block:").map(str::to_string))
}

/// Kernel device name → its stable `scsi-*`/`dm-uuid-mpath-*` link name
/// (partitions excluded; of several links the last in sorted order wins).
fn stable_names(by_id: &Path) -> BTreeMap<String, String> {
    let mut names = entries(by_id);
    names.sort();
    let mut out = BTreeMap::new();
    for name in names {
        let partition = name
            .rsplit_once("-part")
            .is_some_and(|(_, n)| n.parse::<u32>().is_ok());
        if partition || !(name.starts_with("scsi-") || name.starts_with("dm-uuid-mpath-")) {
            continue;
        }
        let Ok(dest) = std::fs::read_link(by_id.join(&name)) else {
            continue;
        };
        if let Some(dev) = dest
            .to_string_lossy()
            .strip_prefix("../../")
            .filter(|d| !d.contains('/'))
        {
            out.insert(dev.to_string(), name);
        }
    }
    out
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn is_numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn first_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().next()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}
