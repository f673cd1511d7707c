//! Ubuntu: systemd-networkd from 17.10 on (ifupdown before), upstart
//! ttys for 12.04 and 14.04, container-getty for systemd releases.

use super::debian;
use super::plugin::Distro;
use super::text::perl_num;
use super::{base, ifupdown, systemd, CtRoot, Result, SetupError};

/// Releases the setup was written for.
const KNOWN_VERSIONS: &[&str] = &[
    "26.10", "26.04", "25.10", "25.04", "24.10", "24.04", "23.10", "23.04", "22.10", "22.04",
    "21.10", "21.04", "20.10", "20.04", "19.10", "19.04", "18.10", "18.04", "17.10", "17.04",
    "16.10", "16.04", "15.10", "15.04", "14.04", "12.04",
];

/// An Ubuntu release (`DISTRIB_RELEASE` of `/etc/lsb-release`).
pub(crate) struct Ubuntu {
    version: String,
}

impl Ubuntu {
    pub fn new(ct: &CtRoot) -> Result<Ubuntu> {
        let lsb = ct.get("/etc/lsb-release")?;
        if !lsb
            .lines()
            .any(|l| l.eq_ignore_ascii_case("DISTRIB_ID=Ubuntu"))
        {
            return Err(SetupError::Version("got unknown DISTRIB_ID".into()));
        }
        let version = lsb
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                let (major, minor) = v.split_once('.')?;
                let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                (k.eq_ignore_ascii_case("DISTRIB_RELEASE") && digits(major) && digits(minor))
                    .then(|| v.to_string())
            })
            .ok_or_else(|| SetupError::Version("unable to read version info".into()))?;
        if !KNOWN_VERSIONS.contains(&version.as_str()) {
            let major = perl_num(&version) as u32;
            // 16.10 and older ship a systemd that is not cgroupv2 ready
            if major < 17 {
                return Err(SetupError::Version(format!(
                    "unsupported ancient Ubuntu version '{version}'"
                )));
            }
            tracing::warn!(
                "The container's Ubuntu version '{version}' is not in the known version list. \
                 As it's newer than the minimum supported version it's likely to work OK, but \
                 full compatibility cannot be guaranteed. Please check for PVE system updates."
            );
        }
        Ok(Ubuntu { version })
    }

    fn num(&self) -> f64 {
        perl_num(&self.version)
    }

    fn is(&self, versions: &[&str]) -> bool {
        versions.contains(&self.version.as_str())
    }
}

impl Distro for Ubuntu {
    fn ostype(&self) -> &'static str {
        "ubuntu"
    }

    fn devttydir(&self, _ct: &CtRoot) -> &'static str {
        ""
    }

    fn snakeoil_fixup(&self, ct: &CtRoot) -> Result<()> {
        debian::snakeoil_fixup(ct)
    }

    fn template_fixup(&self, ct: &CtRoot) -> Result<()> {
        let v = self.num();
        if (17.10..23.04).contains(&v) {
            // enable systemd-networkd
            ct.fs
                .mkdir("/etc/systemd/system/multi-user.target.wants", 0o777)?;
            ct.fs
                .mkdir("/etc/systemd/system/socket.target.wants", 0o777)?;
            ct.symlink(
                "/lib/systemd/system/systemd-networkd.service",
                "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
            )?;
            ct.symlink(
                "/lib/systemd/system/systemd-networkd.socket",
                "/etc/systemd/system/socket.target.wants/systemd-networkd.socket",
            )?;
        }
        if v >= 17.10 {
            // the default netplan config of the lxc templates
            ct.unlink("/etc/netplan/10-lxc.yaml")?;
        }
        if self.is(&["15.04", "15.10", "16.04"]) {
            // login on the console
            base::setup_securetty(ct, self.devttydir(ct), &["pts/0"])?;
        }
        if self.is(&["12.04"]) {
            // no log level output from udev
            let file = "/etc/udev/udev.conf";
            let data = ct.get(file)?;
            ct.set(file, &data.replacen("=\"err\"", "=0", 1), None)?;
        }
        Ok(())
    }

    fn setup_init(&self, ct: &CtRoot) -> Result<()> {
        let v = self.num();
        if v >= 23.04 {
            systemd::setup_systemd_preset(ct, &[("systemd-networkd.service", true)])?;
        }
        if v >= 16.10 {
            systemd::setup_container_getty_service(ct, self.devttydir(ct))?;
        }
        if self.is(&["12.04", "14.04"]) {
            let count = ct.tty_count();
            for i in 1..7 {
                let file = format!("/etc/init/tty{i}.conf");
                if i <= count {
                    ct.set(&file, &upstart_tty(i), None)?;
                } else {
                    ct.unlink(&file)?;
                }
            }
        }
        Ok(())
    }

    fn setup_network(&self, ct: &CtRoot) -> Result<()> {
        if self.num() >= 17.10 {
            systemd::setup_systemd_networkd(ct)
        } else {
            ifupdown::setup_network(ct, &ct.params.nets, false)
        }
    }
}

/// The upstart job of one getty.
fn upstart_tty(i: u32) -> String {
    format!(
        "# tty{i} - getty
#
# This service maintains a getty on tty{i} from the point the system is
# started until it is shut down again.

start on stopped rc RUNLEVEL=[2345] and (
            not-container or
            container CONTAINER=lxc or
            container CONTAINER=lxc-libvirt)

stop on runlevel [!2345]

respawn
exec /sbin/getty -8 38400 tty{i}
"
    )
}
