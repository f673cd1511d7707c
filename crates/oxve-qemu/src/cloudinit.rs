//! Cloud-init seeds: the files a VM's cloud-init drive carries, rendered
//! from its config section (`ci*` keys, `ipconfig<n>`, `nameserver`,
//! `searchdomain`, `sshkeys`, the `net<n>` MACs, `name`, `cicustom`
//! snippets), and the ISO image made of them.
//!
//! The formats, file names, layouts and texts are upstream's
//! (`PVE::QemuServer::Cloudinit`): `nocloud` (label `cidata`: `user-data`,
//! `network-config` v1, `meta-data`, `vendor-data`), `configdrive2`
//! (label `config-2`: `openstack/latest/{user_data,meta_data.json,
//! vendor_data.json}`, `openstack/content/0000` in Debian's interfaces
//! syntax; cloudbase-init's variant for Windows) and `opennebula` (label
//! `CONTEXT`: `context.sh`). Rendering is pure: the host's DNS settings and
//! the paths of snippet volumes come from the caller.
//!
//! Where oxve differs (see docs/DEVIATIONS.md): the instance id hashes the
//! user data, network config *and vendor data* as they go on the drive
//! (custom snippets included), so a changed vendor snippet re-runs
//! cloud-init — without vendor data it is upstream's id; the meta data
//! also names the host (`local-hostname`, `"hostname"`), which cloud-init
//! falls back to when custom user data does not set one; OpenNebula's
//! `ETH<n>_MAC` carries the NIC's MAC (upstream writes it empty).

pub use crate::cmdline::windows_version;
use oxve_schema::vmconfig::VmSection;
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;
use std::path::PathBuf;

mod iso;
mod network;

pub use iso::{build_iso, write_volume};
use network::{cloudbase_network, opennebula_context};
pub use network::{configdrive2_network, nocloud_network};

/// Why a seed could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    /// The config cannot be rendered (upstream's message).
    #[error("{0}")]
    Config(String),
    /// A `cicustom` snippet cannot be used.
    #[error("{0}")]
    Snippet(String),
    /// An external tool failed.
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
    /// A file of the seed could not be written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// The cloud-init drive formats (`citype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiType {
    NoCloud,
    ConfigDrive2,
    OpenNebula,
}

impl CiType {
    /// The format of a config: `citype`, else `configdrive2` for Windows
    /// (cloudbase-init reads only that) and `nocloud` for the rest.
    pub fn of(section: &VmSection) -> Result<CiType, CloudInitError> {
        match section.get("citype") {
            Some("nocloud") => Ok(CiType::NoCloud),
            Some("configdrive2") => Ok(CiType::ConfigDrive2),
            Some("opennebula") => Ok(CiType::OpenNebula),
            Some(other) => Err(CloudInitError::Config(format!(
                "missing cloudinit methods for format '{other}'"
            ))),
            None if windows_version(section.get("ostype")) > 0 => Ok(CiType::ConfigDrive2),
            None => Ok(CiType::NoCloud),
        }
    }

    /// The ISO volume label cloud-init looks for.
    pub fn label(self) -> &'static str {
        match self {
            CiType::NoCloud => "cidata",
            CiType::ConfigDrive2 => "config-2",
            CiType::OpenNebula => "CONTEXT",
        }
    }
}

/// The host's DNS settings (its `resolv.conf`), used when the config sets
/// no `nameserver`/`searchdomain`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDns {
    /// The search domain (first word of the last `search`/`domain` line).
    pub search: Option<String>,
    /// Up to three name servers.
    pub nameservers: Vec<String>,
}

impl HostDns {
    /// Reads a `resolv.conf` text as upstream does.
    pub fn parse_resolv_conf(text: &str) -> HostDns {
        let mut dns = HostDns::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let first = words.next();
            let starts_at_column0 = !line.starts_with(char::is_whitespace);
            match first {
                Some("search" | "domain") if starts_at_column0 => {
                    if let Some(s) = words.next() {
                        dns.search = Some(s.to_string());
                    }
                }
                Some("nameserver") => {
                    if let Some(ip) = words
                        .next()
                        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                    {
                        if dns.nameservers.len() < 3 {
                            dns.nameservers.push(ip.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        dns
    }
}

/// Resolves a `cicustom` volume id to the host path of its file; fails
/// with the reason (unknown storage, not a snippet, ...).
pub type SnippetPath<'a> = &'a dyn Fn(&str) -> Result<PathBuf, String>;

/// The rendered seed: its format and its files (path inside the ISO,
/// content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub ci_type: CiType,
    pub files: Vec<(&'static str, String)>,
}

impl Seed {
    /// One file's content.
    pub fn file(&self, path: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, c)| c.as_str())
    }
}

/// Which file `dump` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpKind {
    User,
    Network,
    Meta,
}

/// The largest snippet read (upstream's limit).
const MAX_SNIPPET: u64 = 1024 * 1024;
/// The most the files of a seed may hold together, so that the ISO fits
/// the 4 MiB drive.
const MAX_SEED: usize = 3 * 1024 * 1024;
/// The size of a new cloud-init drive.
pub const DISK_SIZE: u64 = 4 * 1024 * 1024;

/// Renders VM `vmid`'s seed from its config `section`.
pub fn render(
    vmid: u32,
    section: &VmSection,
    dns: &HostDns,
    snippets: SnippetPath,
) -> Result<Seed, CloudInitError> {
    let ci_type = CiType::of(section)?;
    if ci_type == CiType::OpenNebula {
        let files = vec![("context.sh", opennebula_context(vmid, section, dns))];
        return Ok(Seed { ci_type, files });
    }
    let custom = Custom::read(section, snippets)?;
    let windows = windows_version(section.get("ostype")) > 0;
    let user = custom
        .user
        .clone()
        .unwrap_or_else(|| user_data(vmid, section, false));
    let network = match (&custom.network, ci_type) {
        (Some(n), _) => n.clone(),
        (None, CiType::NoCloud) => nocloud_network(section, dns)?,
        (None, _) if windows => cloudbase_network(section, dns),
        (None, _) => configdrive2_network(section, dns),
    };
    let vendor = custom.vendor.clone().unwrap_or_default();
    let id = instance_id(&user, &network, &vendor);
    let meta = match &custom.meta {
        Some(m) => m.clone(),
        None => meta_data(ci_type, windows, &id, vmid, section, false),
    };
    if user.len() + network.len() + meta.len() + vendor.len() > MAX_SEED {
        return Err(CloudInitError::Config(
            "Cloud-Init sum of snippets too big (> 3 MiB)".into(),
        ));
    }
    let files = match ci_type {
        CiType::NoCloud => vec![
            ("user-data", user),
            ("network-config", network),
            ("meta-data", meta),
            ("vendor-data", vendor),
        ],
        _ => vec![
            ("openstack/latest/user_data", user),
            ("openstack/content/0000", network),
            ("openstack/latest/meta_data.json", meta),
            ("openstack/latest/vendor_data.json", vendor),
        ],
    };
    Ok(Seed { ci_type, files })
}

/// What `qm cloudinit dump` shows: the generated user data (its password
/// masked with `mask_password`) or network config, or the meta data with
/// the instance id the drive gets (custom snippets included).
pub fn dump(
    vmid: u32,
    section: &VmSection,
    dns: &HostDns,
    kind: DumpKind,
    mask_password: bool,
    snippets: SnippetPath,
) -> Result<String, CloudInitError> {
    let ci_type = CiType::of(section)?;
    match kind {
        DumpKind::User => Ok(user_data(vmid, section, mask_password)),
        DumpKind::Network if ci_type == CiType::NoCloud => nocloud_network(section, dns),
        DumpKind::Network => Ok(configdrive2_network(section, dns)),
        DumpKind::Meta if ci_type == CiType::OpenNebula => {
            let user = user_data(vmid, section, false);
            let id = instance_id(&user, &configdrive2_network(section, dns), "");
            Ok(meta_data(ci_type, false, &id, vmid, section, mask_password))
        }
        DumpKind::Meta => {
            let seed = render(vmid, section, dns, snippets)?;
            let (user, network, vendor) = match ci_type {
                CiType::NoCloud => ("user-data", "network-config", "vendor-data"),
                _ => (
                    "openstack/latest/user_data",
                    "openstack/content/0000",
                    "openstack/latest/vendor_data.json",
                ),
            };
            let part = |p: &str| seed.file(p).unwrap_or_default().to_string();
            let id = instance_id(&part(user), &part(network), &part(vendor));
            let windows = windows_version(section.get("ostype")) > 0;
            Ok(meta_data(
                ci_type,
                windows,
                &id,
                vmid,
                section,
                mask_password,
            ))
        }
    }
}

/// The instance id: the SHA-1 of the user data, network config and vendor
/// data as they go on the drive (upstream's id when there is no vendor
/// data).
pub fn instance_id(user: &str, network: &str, vendor: &str) -> String {
    let mut h = Sha1::new();
    h.update(user.as_bytes());
    h.update(network.as_bytes());
    h.update(vendor.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `#cloud-config` user data upstream generates.
pub fn user_data(vmid: u32, section: &VmSection, mask_password: bool) -> String {
    let (hostname, fqdn) = hostname_fqdn(vmid, section);
    let mut out = String::from("#cloud-config\n");
    out.push_str(&format!(
        "hostname: {hostname}\nmanage_etc_hosts: true\nfqdn: {fqdn}\n"
    ));
    let user = section.get("ciuser");
    if let Some(u) = user {
        out.push_str(&format!("user: {u}\n"));
        if u == "root" {
            out.push_str("disable_root: False\n");
        }
    }
    if let Some(pw) = section.get("cipassword") {
        let pw = if mask_password { "**********" } else { pw };
        out.push_str(&format!("password: {pw}\n"));
    }
    if let Some(keys) = section.get("sshkeys") {
        out.push_str("ssh_authorized_keys:\n");
        for k in uri_unescape(keys).split('\n') {
            if k.chars().any(|c| !c.is_whitespace()) {
                out.push_str(&format!("  - {k}\n"));
            }
        }
    }
    out.push_str("chpasswd:\n  expire: False\n");
    if user != Some("root") {
        out.push_str("users:\n  - default\n");
    }
    if section.get("ciupgrade").is_none_or(perl_true) {
        out.push_str("package_upgrade: true\n");
    }
    out
}

/// The meta data file of a format.
fn meta_data(
    ci_type: CiType,
    windows: bool,
    id: &str,
    vmid: u32,
    section: &VmSection,
    mask_password: bool,
) -> String {
    let (hostname, _) = hostname_fqdn(vmid, section);
    match ci_type {
        CiType::NoCloud => format!("instance-id: {id}\nlocal-hostname: {hostname}\n"),
        _ if windows => cloudbase_metadata(id, section, mask_password),
        _ => format!(
            "{{\n     \"uuid\": \"{id}\",\n     \"hostname\": {},\n     \"network_config\": {{ \"content_path\": \"/content/0000\" }}\n}}\n",
            json_str(&hostname)
        ),
    }
}

/// cloudbase-init's `meta_data.json`: the id, the network config's place,
/// the administrator password and the SSH keys (compact JSON, keys in a
/// fixed order).
fn cloudbase_metadata(id: &str, section: &VmSection, mask_password: bool) -> String {
    let mut out = format!(
        "{{\"uuid\":{},\"network_config\":{{\"content_path\":\"/content/0000\"}}",
        json_str(id)
    );
    if let Some(pw) = section.get("cipassword").filter(|p| perl_true(p)) {
        let pw = if mask_password { "**********" } else { pw };
        out.push_str(&format!(",\"admin_pass\":{}", json_str(pw)));
    }
    if let Some(keys) = section.get("sshkeys") {
        let keys: Vec<String> = uri_unescape(keys)
            .split('\n')
            .filter(|k| k.chars().any(|c| !c.is_whitespace()))
            .enumerate()
            .map(|(i, k)| format!("\"key-{i}\":{}", json_str(k)))
            .collect();
        if !keys.is_empty() {
            out.push_str(&format!(",\"public_keys\":{{{}}}", keys.join(",")));
        }
    }
    out.push('}');
    out
}

/// `cicustom` snippets, read.
#[derive(Default)]
struct Custom {
    user: Option<String>,
    network: Option<String>,
    meta: Option<String>,
    vendor: Option<String>,
}

impl Custom {
    fn read(section: &VmSection, snippets: SnippetPath) -> Result<Custom, CloudInitError> {
        let mut custom = Custom::default();
        let Some(spec) = section.get("cicustom") else {
            return Ok(custom);
        };
        let mut volids: BTreeMap<&str, &str> = BTreeMap::new();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((k @ ("user" | "network" | "meta" | "vendor"), v)) => {
                    volids.insert(k, v);
                }
                _ => {
                    return Err(CloudInitError::Config(format!(
                    "cicustom: invalid part '{part}' (expected user=, network=, meta= or vendor=)"
                )))
                }
            }
        }
        // Upstream's reading order, so the first error is the same.
        for key in ["network", "user", "meta", "vendor"] {
            let Some(volid) = volids.get(key).filter(|v| !v.is_empty()) else {
                continue;
            };
            let text = read_snippet(volid, snippets)?;
            match key {
                "network" => custom.network = Some(text),
                "user" => custom.user = Some(text),
                "meta" => custom.meta = Some(text),
                _ => custom.vendor = Some(text),
            }
        }
        Ok(custom)
    }
}

fn read_snippet(volid: &str, snippets: SnippetPath) -> Result<String, CloudInitError> {
    use std::io::Read;
    let path = snippets(volid).map_err(CloudInitError::Snippet)?;
    let err = |e: std::io::Error| {
        CloudInitError::Snippet(format!("unable to open file '{}' - {e}", path.display()))
    };
    let mut data = Vec::new();
    std::fs::File::open(&path)
        .map_err(err)?
        .take(MAX_SNIPPET + 1)
        .read_to_end(&mut data)
        .map_err(err)?;
    if data.len() as u64 > MAX_SNIPPET {
        return Err(CloudInitError::Snippet(format!(
            "snippet '{volid}' is larger than 1 MiB"
        )));
    }
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// Upstream's hostname and FQDN: `name` (or `VM<vmid>`); a dotted name is
/// the FQDN, else the search domain is appended.
fn hostname_fqdn(vmid: u32, section: &VmSection) -> (String, String) {
    let name = section
        .get("name")
        .map(str::to_string)
        .unwrap_or_else(|| format!("VM{vmid}"));
    if let Some((host, _)) = name.split_once('.') {
        return (host.to_string(), name.clone());
    }
    match section.get("searchdomain").filter(|s| perl_true(s)) {
        Some(search) => (name.clone(), format!("{name}.{search}")),
        None => (name.clone(), name),
    }
}

/// Search domains and name servers: the config's, else the host's.
fn dns_conf(section: &VmSection, dns: &HostDns) -> (Vec<String>, Vec<String>) {
    let search = match section.get("searchdomain") {
        Some(s) => words(s),
        None => dns.search.iter().cloned().collect(),
    };
    let nameservers = match section.get("nameserver") {
        Some(n) => words(n),
        None => dns.nameservers.clone(),
    };
    (search, nameservers)
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Perl truthiness of a config value.
fn perl_true(v: &str) -> bool {
    !v.is_empty() && v != "0"
}

fn uri_unescape(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let d = HostDns::parse_resolv_conf(
            "# x\nsearch a.example b.example\nnameserver 1.1.1.1\nnameserver bogus\nnameserver 2.2.2.2\nnameserver ::1\nnameserver 3.3.3.3\n",
        );
        assert_eq!(d.search.as_deref(), Some("a.example"));
        assert_eq!(d.nameservers, ["1.1.1.1", "2.2.2.2", "::1"]);
    }

    #[test]
    fn windows_versions() {
        assert_eq!(windows_version(Some("win11")), 11);
        assert_eq!(windows_version(Some("w2k8")), 6);
        assert_eq!(windows_version(Some("l26")), 0);
        assert_eq!(windows_version(None), 0);
    }
}
