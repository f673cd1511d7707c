//! Debian (and, through `devuan.rs`, Devuan): ifupdown network config,
//! inittab gettys for sysvinit, container-getty and presets for systemd.

use std::sync::LazyLock;

use regex::Regex;

use super::base::re;
use super::plugin::Distro;
use super::text::{join_lines, perl_lines};
use super::{ifupdown, systemd, CtRoot, Result, SetupError};

/// Oldest Debian release the setup supports.
const MINIMUM_RELEASE: u32 = 4;
/// Newest Debian release the setup was tested with (newer ones warn).
const MAXIMUM_RELEASE: u32 = 14;

static GETTY_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*\d+:\d*:[^:]*:.*getty"));
static POWER_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*p[fno0]:"));
static VERSION_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^(\d+(\.\d+)?)(\.\d+)?"));

/// Debian or a Debian derivative that keeps its init and network setup.
pub(crate) struct Debian {
    /// The Debian major release (Devuan's mapped to Debian's).
    pub version: u32,
    /// `debian` or `devuan`.
    pub ostype: &'static str,
}

impl Debian {
    /// Reads the release from `/etc/debian_version`.
    pub fn new(ct: &CtRoot) -> Result<Debian> {
        let raw = ct
            .fs
            .read_first_line("/etc/debian_version")?
            .ok_or_else(|| SetupError::Version("unable to read version info".into()))?;
        // testing versions and derivatives without a number
        let mapped = match raw.as_str() {
            "stretch/sid" => "9.1",
            "buster/sid" => "10",
            "bullseye/sid" => "11",
            "bookworm/sid" => "12",
            "trixie/sid" => "13",
            "forky/sid" => "14",
            "duke/sid" => "15",
            "kali-rolling" => "12",
            other => other,
        };
        let version = VERSION_RE
            .captures(mapped)
            .and_then(|c| c[1].parse::<f64>().ok())
            .ok_or_else(|| {
                SetupError::Version(format!("unable to parse version info '{mapped}'"))
            })? as u32;
        if version < MINIMUM_RELEASE {
            return Err(SetupError::Version(format!(
                "Container Debian version '{version}' is too old"
            )));
        }
        if version > MAXIMUM_RELEASE {
            tracing::warn!(
                "The container's Debian version '{version}' is newer than the tested version \
                 '{MAXIMUM_RELEASE}'. While everything may work fine, full compatibility cannot \
                 be guaranteed. Please check for PVE system updates."
            );
        }
        Ok(Debian {
            version,
            ostype: "debian",
        })
    }
}

impl Distro for Debian {
    fn ostype(&self) -> &'static str {
        self.ostype
    }

    /// Debian does not support the `/dev/lxc/` subdirectory.
    fn devttydir(&self, _ct: &CtRoot) -> &'static str {
        ""
    }

    fn setup_init(&self, ct: &CtRoot) -> Result<()> {
        if init_is_systemd(ct) {
            systemd::setup_container_getty_service(ct, self.devttydir(ct))?;
            if self.version >= 12 {
                // only affects the first boot; Debian uses ifupdown
                systemd::setup_systemd_preset(ct, &[("systemd-networkd.service", false)])?;
            }
        }
        setup_inittab(ct, self.version)
    }

    fn setup_network(&self, ct: &CtRoot) -> Result<()> {
        let cidr_style = self.ostype == "debian" && self.version >= 10;
        ifupdown::setup_network(ct, &ct.params.nets, cidr_style)
    }

    fn snakeoil_fixup(&self, ct: &CtRoot) -> Result<()> {
        snakeoil_fixup(ct)
    }
}

/// Whether `/sbin/init` is a symlink to systemd.
pub(crate) fn init_is_systemd(ct: &CtRoot) -> bool {
    ct.fs
        .readlink("/sbin/init")
        .is_some_and(|target| target.ends_with("/systemd"))
}

/// Getty lines for the configured ttys, and a power-fail action that
/// shuts the CT down.
fn setup_inittab(ct: &CtRoot, version: u32) -> Result<()> {
    let file = "/etc/inittab";
    if !ct.fs.is_file(file) {
        return Ok(());
    }
    let old = ct.get(file)?;
    let lines: Vec<&str> = perl_lines(&old)
        .into_iter()
        .filter(|l| !GETTY_RE.is_match(l) && !POWER_RE.is_match(l))
        .collect();
    let mut inittab = join_lines(&lines);
    inittab.push_str("p0::powerfail:/sbin/init 0\n");
    for id in (1..=ct.tty_count()).filter(|id| *id != 7) {
        let levels = if id == 1 { "2345" } else { "23" };
        let opts = if version < 7 { "-L" } else { "--noclear" };
        inittab.push_str(&format!(
            "{id}:{levels}:respawn:/sbin/getty {opts} 38400 tty{id}\n"
        ));
    }
    ct.set(file, &inittab, None)
}

const SNAKEOIL_UNIT: &str = "[Unit]
Description=\"Regenerate pre-generated snakeoil certificate and key-pair once\"
ConditionPathExists=/etc/ssl/certs/ssl-cert-snakeoil.pem
ConditionFirstBoot=yes
Wants=first-boot-complete.target
Before=first-boot-complete.target

[Service]
Type=oneshot
ExecStart=make-ssl-cert -f generate-default-snakeoil
";

/// Templates with `ssl-cert` installed ship a snakeoil key pair that every
/// CT made from them would share: it is removed, and systemd guests
/// regenerate it on their first boot.
pub(crate) fn snakeoil_fixup(ct: &CtRoot) -> Result<()> {
    let key = "/etc/ssl/private/ssl-cert-snakeoil.key";
    if !ct.fs.is_file(key) {
        return Ok(());
    }
    if init_is_systemd(ct) {
        let unit = "proxmox-regenerate-snakeoil.service";
        let path = format!("/etc/systemd/system/{unit}");
        tracing::info!("Setting up '{unit}' to regenerate snakeoil certificate..");
        ct.set(&path, SNAKEOIL_UNIT, None)?;
        let wants = "/etc/systemd/system/first-boot-complete.target.wants";
        ct.make_path(wants)?;
        ct.symlink(&path, &format!("{wants}/{unit}"))?;
    } else {
        tracing::warn!(
            "Template contains pre-generated snakeoil certificate! \
             Run `make-ssl-cert generate-default-snakeoil -f` to regenerate it!"
        );
    }
    // prevent accidental use of the shared key
    ct.unlink(key)
}
