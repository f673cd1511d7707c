//! Setup steps for systemd guests: console gettys, first-boot presets,
//! masked units and systemd-networkd files.

use std::collections::BTreeMap;

use super::text::is_ip_in_cidr;
use super::{CtRoot, Result};

/// The unit directory of the guest's systemd.
fn unit_dir(ct: &CtRoot) -> &'static str {
    if ct.fs.is_executable("/lib/systemd/systemd") {
        "/lib/systemd/system"
    } else {
        "/usr/lib/systemd/system"
    }
}

/// Old systemd without `container-getty@` needs `getty@` to start
/// without `/dev/tty0`; undone once systemd was updated.
pub(crate) fn fixup_old_getty(ct: &CtRoot) -> Result<()> {
    let dir = unit_dir(ct);
    let getty = format!("{dir}/getty@.service");
    if !ct.fs.is_file(&getty) {
        return Ok(());
    }
    let raw = ct.get(&getty)?;
    let (from, to) = if !ct.fs.is_file(&format!("{dir}/container-getty@.service")) {
        (
            "ConditionPathExists=/dev/tty0",
            "ConditionPathExists=/dev/tty",
        )
    } else {
        (
            "ConditionPathExists=/dev/tty",
            "ConditionPathExists=/dev/tty0",
        )
    };
    let mut changed = false;
    let lines: Vec<&str> = raw
        .split('\n')
        .map(|l| {
            if !changed && l == from {
                changed = true;
                to
            } else {
                l
            }
        })
        .collect();
    if changed {
        ct.set(&getty, &lines.join("\n"), None)?;
    }
    Ok(())
}

/// Runs `container-getty@` on the CT's consoles: points the template at
/// the right tty device and enables one instance per configured tty.
pub(crate) fn setup_container_getty_service(ct: &CtRoot, ttydir: &str) -> Result<()> {
    let template = format!("{}/container-getty@.service", unit_dir(ct));
    // Upstream's fallback to `getty@.service` looks for it relative to
    // the CT's `/`, where it never is: without `container-getty@` there
    // is nothing to do.
    if !ct.fs.is_file(&template) {
        return Ok(());
    }
    let raw = ct.get(&template)?;
    let ttyname = format!("{ttydir}tty%I");
    if raw.contains("pts/%I") || raw.contains("lxc/tty%I") {
        let fixed = raw.replace("pts/%I", "\0").replace("lxc/tty%I", "\0");
        ct.set(&template, &fixed.replace('\0', &ttyname), None)?;
    }

    let wants = "/etc/systemd/system/getty.target.wants";
    let count = ct.tty_count();
    for i in 1..7 {
        // never two gettys on one tty
        ct.unlink(&format!("{wants}/getty@tty{i}.service"))?;
        ct.unlink(&format!("{wants}/container-getty@{i}.service"))?;
        if i <= count {
            ct.symlink(&template, &format!("{wants}/container-getty@{i}.service"))?;
        }
    }
    // getty.target must not be masked
    ct.unlink("/etc/systemd/system/getty.target")
}

/// The first-boot presets (`/etc/systemd/system-preset/00-pve.preset`):
/// units that make no sense in a CT are disabled; `extra` adds or
/// overrides entries.
pub(crate) fn setup_systemd_preset(ct: &CtRoot, extra: &[(&str, bool)]) -> Result<()> {
    let mut preset: BTreeMap<&str, bool> = BTreeMap::from([
        ("sys-kernel-config.mount", false),
        ("sys-kernel-debug.mount", false),
        ("getty@.service", false),
        ("container-getty@.service", true),
    ]);
    preset.extend(extra.iter().copied());
    let mut data = String::from("# Added by PVE at create-time for first-boot configuration.\n");
    for (unit, enable) in preset {
        let verb = if enable { "enable" } else { "disable" };
        data.push_str(&format!("{verb} {unit}\n"));
    }
    ct.make_path("/etc/systemd/system-preset")?;
    ct.set("/etc/systemd/system-preset/00-pve.preset", &data, None)
}

/// Masks static units that presets cannot disable.
pub(crate) fn setup_systemd_disable_static_units(ct: &CtRoot, extra: &[&str]) -> Result<()> {
    let units = ["sys-kernel-config.mount", "sys-kernel-debug.mount"];
    for unit in units.iter().chain(extra) {
        let path = format!("/etc/systemd/system/{unit}");
        if !ct.fs.is_file(&path) {
            ct.symlink("/dev/null", &path)?;
        }
    }
    Ok(())
}

/// One `/etc/systemd/network/<name>.network` per NIC.
pub(crate) fn setup_systemd_networkd(ct: &CtRoot) -> Result<()> {
    for net in ct.nets() {
        let name = &net.name;
        let mut data = format!(
            "[Match]\nName = {name}\n\n[Network]\nDescription = Interface {name} autoconfigured by PVE\n"
        );
        let mut routes = String::new();
        let (mut has_v4, mut has_v6) = (false, false);
        let (mut dhcp4, mut dhcp6) = (false, false);
        let mut accept_ra = false;

        if let Some(ip) = net.ip.as_deref() {
            if ip == "dhcp" {
                dhcp4 = true;
            } else if ip != "manual" {
                has_v4 = true;
                data.push_str(&format!("Address = {ip}\n"));
            }
        }
        if let Some(gw) = net.gw.as_deref() {
            data.push_str(&format!("Gateway = {gw}\n"));
            if has_v4 && !is_ip_in_cidr(gw, net.ip.as_deref().unwrap_or(""), false) {
                routes.push_str(&format!("\n[Route]\nDestination = {gw}/32\nScope = link\n"));
            }
        }
        if let Some(ip) = net.ip6.as_deref() {
            match ip {
                "dhcp" => {
                    dhcp6 = true;
                    accept_ra = true;
                }
                "auto" => accept_ra = true,
                "manual" => {}
                _ => {
                    has_v6 = true;
                    data.push_str(&format!("Address = {ip}\n"));
                }
            }
        }
        if let Some(gw) = net.gw6.as_deref() {
            accept_ra = false;
            data.push_str(&format!("Gateway = {gw}\n"));
            if has_v6
                && !is_ip_in_cidr(gw, net.ip6.as_deref().unwrap_or(""), true)
                && !is_ip_in_cidr(gw, "fe80::/10", true)
            {
                routes.push_str(&format!(
                    "\n[Route]\nDestination = {gw}/128\nScope = link\n"
                ));
            }
        }
        let dhcp = match (dhcp4, dhcp6) {
            (false, false) => "no",
            (true, false) => "ipv4",
            (false, true) => "ipv6",
            (true, true) => "yes",
        };
        data.push_str(&format!(
            "DHCP = {dhcp}\nIPv6AcceptRA = {accept_ra}\n{routes}"
        ));

        ct.make_path("/etc/systemd/network")?;
        ct.set(&format!("/etc/systemd/network/{name}.network"), &data, None)?;
    }
    Ok(())
}
