//! Fedora: systemd-networkd from release 25 on (plus the RedHat network
//! config for 25-27 where `/etc/sysconfig/network` is still used),
//! container-getty, first-boot presets from 37 on.

use super::detect::OsRelease;
use super::plugin::Distro;
use super::text::perl_num;
use super::{base, centos, systemd, CtRoot, Result, SetupError};

/// A Fedora release (`VERSION_ID` of `os-release`).
pub(crate) struct Fedora {
    version: f64,
}

impl Fedora {
    pub fn new(os_release: &OsRelease) -> Result<Fedora> {
        let raw = os_release.get("VERSION_ID").cloned().unwrap_or_default();
        let version = perl_num(&raw);
        // newer releases are fine; only the oldest are refused
        if raw.is_empty() || version < 22.0 {
            return Err(SetupError::Version(format!(
                "unsupported Fedora release '{raw}'"
            )));
        }
        Ok(Fedora { version })
    }
}

impl Distro for Fedora {
    fn ostype(&self) -> &'static str {
        "fedora"
    }

    fn template_fixup(&self, ct: &CtRoot) -> Result<()> {
        base::setup_securetty(ct, self.devttydir(ct), &[])?;
        ct.unlink("/etc/systemd/system/getty@.service")?;
        base::remove_lxc_name_from_etc_hosts(ct)
    }

    fn setup_init(&self, ct: &CtRoot) -> Result<()> {
        systemd::setup_container_getty_service(ct, self.devttydir(ct))?;
        if self.version >= 37.0 {
            // the distribution's preset disables networkd for
            // NetworkManager; it is what we configure
            systemd::setup_systemd_preset(ct, &[("systemd-networkd.service", true)])?;
        }
        Ok(())
    }

    fn set_hostname(&self, ct: &CtRoot) -> Result<()> {
        centos::set_hostname(ct)
    }

    fn setup_network(&self, ct: &CtRoot) -> Result<()> {
        // Templates since 25 use systemd-networkd; /etc/sysconfig/network
        // only remains in 25-27 templates that still run network.service.
        let sysconfig_used = ct.fs.is_file("/etc/sysconfig/network");
        let v = self.version;
        if v <= 24.0 || (v <= 27.0 && sysconfig_used) {
            centos::setup_network(ct)?;
        }
        if v >= 25.0 {
            systemd::setup_systemd_networkd(ct)?;
        }
        Ok(())
    }
}
