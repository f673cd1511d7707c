//! openEuler: the CentOS hostname and network code, container-getty and
//! first-boot presets.

use super::detect::OsRelease;
use super::plugin::Distro;
use super::text::perl_num;
use super::{base, centos, systemd, CtRoot, Result, SetupError};

/// An openEuler release (`VERSION_ID` of `os-release`), 24 or newer.
pub(crate) struct OpenEuler;

impl OpenEuler {
    pub fn new(os_release: &OsRelease) -> Result<OpenEuler> {
        let raw = os_release.get("VERSION_ID").cloned().unwrap_or_default();
        if raw.is_empty() || perl_num(&raw) < 24.0 {
            return Err(SetupError::Version(format!(
                "unsupported openEuler release '{raw}'"
            )));
        }
        Ok(OpenEuler)
    }
}

impl Distro for OpenEuler {
    fn ostype(&self) -> &'static str {
        "openeuler"
    }

    fn template_fixup(&self, ct: &CtRoot) -> Result<()> {
        base::remove_lxc_name_from_etc_hosts(ct)?;
        systemd::setup_systemd_disable_static_units(ct, &["dev-mqueue.mount"])
    }

    fn setup_init(&self, ct: &CtRoot) -> Result<()> {
        systemd::setup_container_getty_service(ct, self.devttydir(ct))?;
        systemd::setup_systemd_preset(ct, &[])
    }

    fn set_hostname(&self, ct: &CtRoot) -> Result<()> {
        centos::set_hostname(ct)
    }

    fn setup_network(&self, ct: &CtRoot) -> Result<()> {
        centos::setup_network(ct)
    }
}
