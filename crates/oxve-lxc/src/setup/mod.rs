//! OS setup of a container's root filesystem: what upstream's post-create
//! and pre-start hooks write into `/etc` (hostname, hosts, network config,
//! DNS, root password, SSH keys, ttys), per distribution.
//!
//! The caller turns a CT config into [`SetupParams`]; this module knows
//! nothing of the config format. Every write stays inside the rootfs: a
//! symlink that points outside is replaced, never written through.
//!
//! Layout: [`plugin::Distro`] is the trait every distribution implements,
//! with the behaviour they share in provided methods (`base.rs`,
//! `systemd.rs`); each distribution lives in its own file; `detect.rs`
//! finds the distribution and architecture of a rootfs; `rootfs.rs` is the
//! only code that touches files, always through `openat2(RESOLVE_IN_ROOT)`.
//!
//! | ostype | network config written | init/tty handling |
//! |---|---|---|
//! | debian, devuan | `/etc/network/interfaces` | inittab, container-getty, presets (12+) |
//! | ubuntu | ifupdown (< 17.10), systemd-networkd | upstart ttys (12.04/14.04), container-getty, presets (23.04+) |
//! | alpine | `/etc/network/interfaces` (busybox) | inittab, OpenRC runlevel links |
//! | centos | `ifcfg-*` (< 10), NetworkManager keyfiles (10+) | upstart ttys (< 7), container-getty, presets (8+) |
//! | fedora | systemd-networkd (25+), redhat-style (< 28) | container-getty, presets (37+) |
//! | openeuler | like centos | container-getty, presets |
//! | opensuse | `/etc/sysconfig/network/ifcfg-*` | container-getty |
//! | archlinux, nixos | systemd-networkd | presets, container-getty (arch) |
//! | gentoo | `/etc/conf.d/net` | inittab |
//! | unmanaged | nothing | nothing |

mod alpine;
mod archlinux;
mod base;
mod centos;
mod debian;
mod detect;
mod devuan;
mod fedora;
mod gentoo;
mod ifupdown;
mod nixos;
mod openeuler;
mod plugin;
mod rootfs;
mod sshkeys;
mod suse;
mod systemd;
mod text;
mod ubuntu;
mod unmanaged;

use std::io;
use std::path::Path;

use rootfs::{FsError, Rootfs};

pub use detect::{detect_arch, detect_ostype};

/// One container NIC as the guest's network config needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetParams {
    /// `net<index>`
    pub index: u32,
    /// Interface name inside the CT (`eth0`).
    pub name: String,
    pub hwaddr: Option<String>,
    /// `dhcp`, `manual` or a CIDR address.
    pub ip: Option<String>,
    pub gw: Option<String>,
    /// `dhcp`, `auto`, `manual` or a CIDR address.
    pub ip6: Option<String>,
    pub gw6: Option<String>,
    pub mtu: Option<u32>,
}

/// Everything the OS setup needs to know about a container.
#[derive(Debug, Clone, Default)]
pub struct SetupParams {
    pub vmid: u32,
    /// `hostname` from the config; empty means `localhost`, as upstream.
    pub hostname: String,
    /// `ostype` from the config; `None` means detect it from the rootfs.
    /// Only `unmanaged` overrides detection (upstream warns when the
    /// detected type differs from the configured one, and uses the
    /// detected one).
    pub ostype: Option<String>,
    pub nets: Vec<NetParams>,
    /// DNS servers for the CT. Upstream falls back to the host's
    /// `resolv.conf` when the config has none: the caller fills that in.
    pub nameservers: Vec<String>,
    /// Search domains, filled like `nameservers`.
    pub searchdomains: Vec<String>,
    /// `timezone` from the config (`host` or a zone name), if set.
    pub timezone: Option<String>,
    /// Host uid/gid that the container's root maps to (0 when privileged);
    /// files the setup creates are owned by them.
    pub root_uid: u32,
    pub root_gid: u32,
    /// `tty` from the config: the number of gettys; `None` is upstream's
    /// default of 2.
    pub tty: Option<u32>,
    /// `unprivileged` from the config: the consoles then have no `lxc/`
    /// directory (`/dev/tty1` instead of `/dev/lxc/tty1`).
    pub unprivileged: bool,
    /// Seed for the random minutes given to root's cron jobs at creation
    /// (Perl's `srand`); `None` seeds from the OS. A fixed seed makes a
    /// creation reproducible.
    pub random_seed: Option<u64>,
}

/// Why the OS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The rootfs path is empty or the host's `/`.
    #[error("no root directory")]
    NoRootDir,
    /// A file operation inside the rootfs failed.
    #[error("'{path}' in the container: {source}")]
    Io {
        /// The path inside the container.
        path: String,
        #[source]
        source: io::Error,
    },
    /// The rootfs has an `/etc/os-release` that names no known
    /// distribution and no other marker file matched.
    #[error("unable to detect OS distribution")]
    UnknownOs,
    /// An ostype no setup code exists for.
    #[error("no such OS type '{0}'")]
    NoSuchOstype(String),
    /// The distribution was found, but its version is unsupported or
    /// unreadable (upstream's message).
    #[error("{0}")]
    Version(String),
    /// The CT config cannot be written in the guest's format.
    #[error("{0}")]
    Config(String),
    /// The architecture of the rootfs cannot be told (upstream's message).
    #[error("{0}")]
    Arch(String),
    /// `post_create` wants a crypt(3) hash, not a clear-text password.
    #[error("the root password must be given as a crypt(3) hash")]
    InvalidPasswordHash,
    /// The home directory for SSH keys is missing.
    #[error("home directory '{home}' of {user} does not exist!")]
    NoHomeDir { user: String, home: String },
    /// Generating the SSH host keys failed.
    #[error("SSH host key generation failed: {0}")]
    SshKeygen(String),
}

impl From<FsError> for SetupError {
    fn from(e: FsError) -> SetupError {
        SetupError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, SetupError>;

/// Upstream's post-create hook, run once after a CT's rootfs was filled
/// from a template or backup: removes the machine id, applies the
/// distribution's template fixups (inittab, securetty, ttys, systemd
/// presets, ...), randomises root's cron minutes, sets root's password
/// (locked with `*` when `root_password_hash` is `None`) and SSH keys,
/// writes the same files as [`pre_start`] (without `/fastboot`), and
/// creates fresh SSH host keys when the CT has `/etc/ssh`.
///
/// `root_password_hash` is a crypt(3) hash (`$5$...`, `$6$...`, `$y$...`).
pub fn post_create(
    rootfs: &Path,
    params: &SetupParams,
    root_password_hash: Option<&str>,
    ssh_keys: Option<&str>,
) -> std::result::Result<(), SetupError> {
    let ct = CtRoot::open(rootfs, params)?;
    let distro = plugin::for_rootfs(&ct)?;
    distro.post_create(&ct, root_password_hash, ssh_keys)?;
    sshkeys::rewrite_host_keys(&ct, distro.ssh_host_key_types())
}

/// Upstream's pre-start hook, run before every start: hostname,
/// `/etc/hosts`, the network config, `resolv.conf`, the time zone, the
/// gettys. Running it twice changes nothing.
pub fn pre_start(rootfs: &Path, params: &SetupParams) -> std::result::Result<(), SetupError> {
    let ct = CtRoot::open(rootfs, params)?;
    plugin::for_rootfs(&ct)?.pre_start(&ct)
}

/// Rewrites only the guest's network config (after NICs of a running
/// CT changed), as upstream's `setup_network`.
pub fn network(rootfs: &Path, params: &SetupParams) -> std::result::Result<(), SetupError> {
    let ct = CtRoot::open(rootfs, params)?;
    plugin::for_rootfs(&ct)?.setup_network(&ct)
}

/// Upstream's post-clone hook: a clone gets a fresh machine id on its
/// first boot (systemd guests get an empty `/etc/machine-id`).
pub fn post_clone(rootfs: &Path, params: &SetupParams) -> std::result::Result<(), SetupError> {
    let ct = CtRoot::open(rootfs, params)?;
    plugin::for_rootfs(&ct)?.post_clone(&ct)
}

/// A container's root filesystem together with the parameters of the CT,
/// as every setup step sees it.
pub(crate) struct CtRoot<'a> {
    pub fs: Rootfs,
    pub params: &'a SetupParams,
}

impl<'a> CtRoot<'a> {
    fn open(rootfs: &Path, params: &'a SetupParams) -> Result<CtRoot<'a>> {
        if rootfs.as_os_str().is_empty() {
            return Err(SetupError::NoRootDir);
        }
        let real = rootfs.canonicalize().map_err(|source| SetupError::Io {
            path: rootfs.display().to_string(),
            source,
        })?;
        if real == Path::new("/") {
            return Err(SetupError::NoRootDir);
        }
        Ok(CtRoot {
            fs: Rootfs::open(&real, params.root_uid, params.root_gid)?,
            params,
        })
    }

    /// The configured hostname, `localhost` when unset.
    pub fn hostname(&self) -> &str {
        if self.params.hostname.is_empty() {
            "localhost"
        } else {
            &self.params.hostname
        }
    }

    /// Number of gettys to run.
    pub fn tty_count(&self) -> u32 {
        self.params.tty.unwrap_or(2)
    }

    /// The NICs that have a name, in `net<N>` order.
    pub fn nets(&self) -> Vec<&NetParams> {
        let mut nets: Vec<&NetParams> = self
            .params
            .nets
            .iter()
            .filter(|n| !n.name.is_empty())
            .collect();
        nets.sort_by_key(|n| n.index);
        nets
    }

    /// The address `/etc/hosts` names the CT by: net0's static IPv4 or,
    /// failing that, its static IPv6 (upstream's `get_primary_ips`).
    pub fn primary_ip(&self) -> Option<String> {
        let net0 = self.params.nets.iter().find(|n| n.index == 0)?;
        let strip = |ip: &Option<String>, dynamic: &[&str]| {
            ip.as_deref()
                .filter(|ip| !ip.is_empty() && !dynamic.contains(ip))
                .map(|ip| ip.split_once('/').map_or(ip, |(a, _)| a).to_string())
        };
        strip(&net0.ip, &["dhcp", "manual"])
            .or_else(|| strip(&net0.ip6, &["auto", "dhcp", "manual"]))
    }

    /// Reads a text file; `None` if it does not exist.
    pub fn read(&self, path: &str) -> Result<Option<String>> {
        Ok(self.fs.read(path)?)
    }

    /// Reads a text file that must exist.
    pub fn get(&self, path: &str) -> Result<String> {
        self.read(path)?.ok_or_else(|| SetupError::Io {
            path: path.to_string(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }

    /// Replaces a file (see [`Rootfs::write`]).
    pub fn set(&self, path: &str, data: &str, mode: Option<u32>) -> Result<()> {
        Ok(self.fs.write(path, data.as_bytes(), mode)?)
    }

    pub fn unlink(&self, path: &str) -> Result<()> {
        Ok(self.fs.unlink(path)?)
    }

    pub fn symlink(&self, target: &str, path: &str) -> Result<bool> {
        Ok(self.fs.symlink(target, path)?)
    }

    pub fn make_path(&self, path: &str) -> Result<()> {
        Ok(self.fs.make_path(path)?)
    }
}
