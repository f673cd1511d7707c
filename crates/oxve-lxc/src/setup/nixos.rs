//! NixOS: the system configuration owns init and the time zone; only the
//! networkd files, hostname, hosts and DNS are written.

use super::plugin::Distro;
use super::{systemd, CtRoot, Result};

/// NixOS.
pub(crate) struct NixOS;

impl Distro for NixOS {
    fn ostype(&self) -> &'static str {
        "nixos"
    }

    fn setup_init(&self, _ct: &CtRoot) -> Result<()> {
        Ok(())
    }

    fn setup_network(&self, ct: &CtRoot) -> Result<()> {
        systemd::setup_systemd_networkd(ct)
    }

    fn set_timezone(&self, _ct: &CtRoot) -> Result<()> {
        Ok(())
    }
}
