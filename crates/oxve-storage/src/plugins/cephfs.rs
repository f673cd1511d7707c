//! `cephfs`: a directory storage for files (ISO images, templates,
//! backups, snippets, imports) on a CephFS file system, mounted at `path`
//! with the kernel client or, with `fuse`, with `ceph-fuse`. Holds no guest
//! images. The key (the storage's secret) goes into a 0600 secret file
//! under the run directory; mount options only name that file.
//!
//! Also the home of how any Ceph client of oxve reaches a cluster
//! (`CephConnection`, shared with `rbd`): the node's own hyper-converged
//! cluster through `/etc/pve/ceph.conf`, or an external one by `monhost`.

use super::nfs::{activate_mounted, deactivate_mounted, mount_path, mounted_usage};
use super::write_private_file;
use crate::config::StorageDef;
use crate::content::Content;
use crate::error::Result;
use crate::exec::Cmd;
use crate::plugin::{Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
use crate::volume::{self, VolName};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The local hyper-converged cluster's configuration.
pub const LOCAL_CEPH_CONF: &str = "/etc/pve/ceph.conf";

pub struct CephFsPlugin {
    def: StorageDef,
    env: Env,
}

impl CephFsPlugin {
    pub fn new(def: StorageDef, env: Env) -> CephFsPlugin {
        CephFsPlugin { def, env }
    }

    /// The monitors to mount from: `monhost` of an external cluster, else
    /// those of the local cluster's ceph.conf. When that cannot be read the
    /// source names none and `mount.ceph` looks them up through `conf=`.
    fn monitors(&self, conn: &CephConnection) -> String {
        if let Some(mons) = &conn.mon_host {
            return mons.clone();
        }
        std::fs::read_to_string(LOCAL_CEPH_CONF)
            .map(|text| monaddr_list(&parse_ceph_conf(&text)))
            .unwrap_or_default()
    }

    /// `mount -t ceph|fuse.ceph <monitors>:<subdir> <path> -o <options>`.
    fn mount_cmd(&self) -> Result<Cmd> {
        let conn = CephConnection::open(&self.def, &self.env, KeyFile::Secret)?;
        let subdir = format!(
            "/{}",
            self.def.get("subdir").unwrap_or("").trim_start_matches('/')
        );
        let fuse = self.def.flag("fuse");
        // The kernel client and ceph-fuse name the same settings differently.
        let key =
            |kernel: &'static str, fuse_name: &'static str| if fuse { fuse_name } else { kernel };
        let mut opts = vec![format!("{}={}", key("name", "ceph.id"), conn.user)];
        if let Some(file) = &conn.keyring {
            opts.push(format!(
                "{}={}",
                key("secretfile", "ceph.keyfile"),
                file.display()
            ));
        }
        if let Some(conf) = &conn.conf {
            opts.push(format!("{}={}", key("conf", "ceph.conf"), conf.display()));
        }
        if let Some(fs) = self.def.get("fs-name").filter(|f| !f.is_empty()) {
            opts.push(format!("{}={fs}", key("fs", "ceph.client_fs")));
        }
        if let Some(extra) = self.def.get("options").filter(|o| !o.is_empty()) {
            opts.push(extra.to_string());
        }
        Ok(Cmd::new("mount")
            .args(["-t", if fuse { "fuse.ceph" } else { "ceph" }])
            .arg(format!("{}:{subdir}", self.monitors(&conn)))
            .arg(mount_path(&self.def)?.to_string_lossy())
            .arg("-o")
            .arg(opts.join(",")))
    }
}

impl StoragePlugin for CephFsPlugin {
    fn def(&self) -> &StorageDef {
        &self.def
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: false,
            linked_clones: false,
            resize: false,
            rename: false,
            export_formats: &[],
            import_formats: &[],
        }
    }

    fn activate(&self) -> Result<()> {
        activate_mounted(self, &*self.env.runner, || self.mount_cmd())
    }

    fn deactivate(&self) -> Result<()> {
        deactivate_mounted(&self.def, &*self.env.runner)
    }

    fn status(&self) -> Result<Usage> {
        mounted_usage(&self.def)
    }

    fn parse_volname(&self, volname: &str) -> Result<VolName> {
        let vol = volume::parse_file_volname(volname)?;
        if matches!(vol.content, Content::Images | Content::Rootdir) {
            return Err(self.unsupported("guest images", volname));
        }
        Ok(vol)
    }

    fn path(&self, volname: &str) -> Result<PathBuf> {
        self.file_path(&self.parse_volname(volname)?)
    }

    fn list_images(&self, _vmid: Option<u32>) -> Result<Vec<VolumeInfo>> {
        Ok(Vec::new())
    }

    fn create_image(
        &self,
        _vmid: u32,
        name: &str,
        _format: &str,
        _size_kib: u64,
    ) -> Result<String> {
        Err(self.unsupported("guest images", name))
    }

    fn free_image(&self, volname: &str) -> Result<()> {
        Err(self.unsupported("guest images", volname))
    }

    fn volume_size(&self, volname: &str) -> Result<(u64, u64)> {
        let path = self.path(volname)?;
        let meta = std::fs::metadata(&path).map_err(|e| {
            crate::error::StorageError::io(format!("unable to stat '{}'", path.display()), e)
        })?;
        Ok((meta.len(), meta.len()))
    }
}

// ---- the Ceph connection, shared with rbd ----

/// Which key file a storage type uses: a keyring (`[client.x] key = ...`)
/// for `rbd`, the bare key (`secretfile=`) for the CephFS kernel client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyFile {
    Keyring,
    Secret,
}

/// How the Ceph tools reach the cluster of one storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CephConnection {
    /// `-c`: the local cluster's ceph.conf, or the storage's own file for
    /// an external cluster (so the node's `/etc/ceph/ceph.conf` never mixes in).
    pub conf: Option<PathBuf>,
    /// `-m`: monitors of an external cluster, comma-separated.
    pub mon_host: Option<String>,
    pub keyring: Option<PathBuf>,
    /// `--auth_supported`: `cephx` with a key, `none` for an external
    /// cluster without; unset for the local cluster without a key of its
    /// own (its ceph.conf names the admin keyring).
    pub auth: Option<&'static str>,
    /// The client name without `client.` (default `admin`).
    pub user: String,
}

impl CephConnection {
    /// The connection of `def`, writing its key (the storage's secret)
    /// and, for an external cluster, its ceph.conf under the run directory.
    pub fn open(def: &StorageDef, env: &Env, kind: KeyFile) -> Result<CephConnection> {
        let user = def
            .get("username")
            .filter(|u| !u.is_empty())
            .unwrap_or("admin")
            .to_string();
        let dir = env.run_dir.join("ceph");
        let keyring = match &env.secret {
            Some(secret) => {
                let (path, content) = match kind {
                    KeyFile::Keyring => (
                        dir.join(format!("{}.keyring", def.id)),
                        keyring_text(secret, &user),
                    ),
                    KeyFile::Secret => (
                        dir.join(format!("{}.secret", def.id)),
                        format!("{}\n", bare_key(secret)),
                    ),
                };
                write_private_file(&path, &content)?;
                Some(path)
            }
            None => None,
        };
        let external = def.get("monhost").filter(|m| !m.is_empty());
        let conf = match (external, &keyring) {
            (None, _) => Some(PathBuf::from(LOCAL_CEPH_CONF)),
            (Some(_), Some(key)) if kind == KeyFile::Keyring => {
                let conf = dir.join(format!("{}.conf", def.id));
                write_private_file(&conf, &format!("[global]\n\tkeyring = {}\n", key.display()))?;
                Some(conf)
            }
            (Some(_), _) => None,
        };
        let auth = match (&keyring, external) {
            (Some(_), _) => Some("cephx"),
            (None, Some(_)) => Some("none"),
            (None, None) => None,
        };
        Ok(CephConnection {
            conf,
            mon_host: external.map(|m| hostlist(m, ",")),
            keyring,
            auth,
            user,
        })
    }

    /// The common arguments of `rbd` and `ceph`.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(conf) = &self.conf {
            args.extend(["-c".into(), conf.display().to_string()]);
        }
        if let Some(mon) = &self.mon_host {
            args.extend(["-m".into(), mon.clone()]);
        }
        if let Some(auth) = self.auth {
            args.extend(["--auth_supported".into(), auth.into()]);
        }
        args.extend(["-n".into(), format!("client.{}", self.user)]);
        if let Some(key) = &self.keyring {
            args.extend(["--keyring".into(), key.display().to_string()]);
        }
        args
    }
}

/// A keyring file's text: the secret as given when it is a keyring, else
/// the bare key wrapped for `client.<user>`.
fn keyring_text(secret: &str, user: &str) -> String {
    let secret = secret.trim();
    if secret.starts_with('[') {
        format!("{secret}\n")
    } else {
        format!("[client.{user}]\n\tkey = {secret}\n")
    }
}

/// The bare key of a secret given either as the key or as a keyring.
fn bare_key(secret: &str) -> &str {
    secret
        .lines()
        .filter_map(|l| l.trim().strip_prefix("key"))
        .find_map(|rest| rest.trim_start().strip_prefix('='))
        .map(str::trim)
        .unwrap_or(secret.trim())
}

/// A monitor list (`10.0.0.1 10.0.0.2:6789,[fd00::1]:3300;mon.example`)
/// joined with `separator`, IPv6 addresses in brackets, entries that are
/// not `host[:port]` dropped.
pub fn hostlist(list: &str, separator: &str) -> String {
    list.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|s| !s.is_empty())
        .filter_map(host_and_port)
        .collect::<Vec<_>>()
        .join(separator)
}

/// `host[:port]` with an IPv6 host in brackets; `None` when `addr` is none
/// of `[host]:port`, an IPv6 address (with `.port`), `host:port` or `host`.
fn host_and_port(addr: &str) -> Option<String> {
    let join = |host: &str, port: Option<&str>| {
        let host = super::bracket_ipv6(host);
        match port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    };
    let is_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        return match tail.strip_prefix(':') {
            Some(p) if is_port(p) => Some(join(host, Some(p))),
            None if tail.is_empty() => Some(join(host, None)),
            _ => None,
        };
    }
    if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some(join(addr, None));
    }
    if let Some((host, port)) = addr.rsplit_once('.') {
        if host.parse::<std::net::Ipv6Addr>().is_ok() && is_port(port) {
            return Some(join(host, Some(port)));
        }
    }
    let (host, port) = match addr.split_once(':') {
        Some((h, p)) if is_port(p) => (h, Some(p)),
        Some(_) => return None,
        None => (addr, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    host_ok.then(|| join(host, port))
}

/// Parses a ceph.conf into sections of settings. Keys are normalised as
/// Ceph does (`mon host` = `mon_host`); comments (`#`, `;`) and quotes go.
pub fn parse_ceph_conf(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for raw in text.lines() {
        let line = raw.split(['#', ';']).next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            section = Some(name);
            continue;
        }
        let (Some(sec), Some((key, value))) = (&section, line.split_once('=')) else {
            continue;
        };
        let key = key.split_whitespace().collect::<Vec<_>>().join("_");
        let value = value
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_string();
        out.entry(sec.clone()).or_default().insert(key, value);
    }
    out
}

/// The monitor addresses of a ceph.conf, comma-separated: `mon_host` of
/// `[global]` (messenger-v2 vectors reduced to their addresses) and the
/// `mon_addr` of every `[mon.*]` section.
pub fn monaddr_list(conf: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    let mut addrs = BTreeSet::new();
    let mon_host = conf
        .get("global")
        .and_then(|g| g.get("mon_host"))
        .map(String::as_str)
        .unwrap_or("");
    for entry in mon_host.split([' ', ',', ';']).filter(|e| !e.is_empty()) {
        let entry = entry.trim_start_matches('[');
        let entry = match entry.split_once(':') {
            Some((v, rest)) if v.len() == 2 && v.starts_with('v') => rest,
            _ => entry,
        };
        let entry = entry.split('/').next().unwrap_or("").trim_end_matches(']');
        if let Some(addr) = host_and_port(entry) {
            addrs.insert(addr);
        }
    }
    for (name, settings) in conf {
        if let (true, Some(addr)) = (name.starts_with("mon."), settings.get("mon_addr")) {
            addrs.insert(addr.clone());
        }
    }
    addrs.into_iter().collect::<Vec<_>>().join(",")
}
