//! Arch Linux: systemd-networkd (enabled by preset), container-getty.

use super::plugin::Distro;
use super::{base, systemd, CtRoot, Result};

/// Arch Linux (rolling; `/etc/arch-release` is empty).
pub(crate) struct ArchLinux;

impl Distro for ArchLinux {
    fn ostype(&self) -> &'static str {
        "archlinux"
    }

    fn template_fixup(&self, ct: &CtRoot) -> Result<()> {
        base::setup_securetty(ct, self.devttydir(ct), &[])?;
        base::remove_lxc_name_from_etc_hosts(ct)
    }

    fn setup_init(&self, ct: &CtRoot) -> Result<()> {
        // Arch enables no networking by default; networkd is what
        // setup_network configures
        systemd::setup_systemd_preset(ct, &[("systemd-networkd.service", true)])?;
        systemd::setup_container_getty_service(ct, self.devttydir(ct))
    }

    fn setup_network(&self, ct: &CtRoot) -> Result<()> {
        systemd::setup_systemd_networkd(ct)
    }
}
