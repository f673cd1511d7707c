//! openSUSE and SLES: wicked's `/etc/sysconfig/network/ifcfg-*` and
//! `ifroute-*` files (plus systemd-networkd where installed),
//! container-getty.

use super::base::{self, modify_file, Modify};
use super::detect::OsRelease;
use super::plugin::Distro;
use super::text::is_ip_in_cidr;
use super::{systemd, CtRoot, Result, SetupError};

/// An openSUSE Leap/Tumbleweed/Slowroll or SLES release.
pub(crate) struct Suse;

impl Suse {
    pub fn new(os_release: &OsRelease) -> Result<Suse> {
        let version = os_release.get("VERSION_ID").map_or("", String::as_str);
        let id = os_release.get("ID").map_or("", String::as_str);
        let num = |s: &str| -> Option<u32> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        if let Some((major, minor)) = version
            .split_once('.')
            .and_then(|(a, b)| Some((num(a)?, num(b)?)))
        {
            let supported = major >= 42
                || (major == 13 && minor <= 2)
                // SLES 12 shares its base with Leap 42
                || (id == "sles" && major == 12)
                || major == 15
                || major == 16;
            if !supported {
                return Err(SetupError::Version(format!(
                    "unsupported suse release '{version}'"
                )));
            }
        } else if version.len() == 8 && num(version).is_some() {
            // Tumbleweed and Slowroll: a date
            let (year, month, day) = (
                num(&version[..4]).unwrap_or(0),
                num(&version[4..6]).unwrap_or(99),
                num(&version[6..]).unwrap_or(99),
            );
            if !(year >= 2017 && month <= 12 && day <= 31) {
                return Err(SetupError::Version(format!(
                    "unsupported suse tumbleweed release '{version}'"
                )));
            }
        } else {
            return Err(SetupError::Version("unrecognized suse release".into()));
        }
        Ok(Suse)
    }
}

impl Distro for Suse {
    fn ostype(&self) -> &'static str {
        "opensuse"
    }

    fn template_fixup(&self, ct: &CtRoot) -> Result<()> {
        base::setup_securetty(ct, self.devttydir(ct), &[])?;
        // systemd-firstboot would otherwise ask on a tty nobody sees
        if !ct.fs.is_file("/etc/locale.conf") {
            ct.set("/etc/locale.conf", "LANG=C.utf8", None)?;
        }
        if !ct.fs.is_file("/etc/localtime") {
            ct.symlink("/usr/share/zoneinfo/UTC", "/etc/localtime")?;
        }
        base::remove_lxc_name_from_etc_hosts(ct)
    }

    fn setup_init(&self, ct: &CtRoot) -> Result<()> {
        systemd::fixup_old_getty(ct)?;
        systemd::setup_container_getty_service(ct, self.devttydir(ct))
    }

    fn setup_network(&self, ct: &CtRoot) -> Result<()> {
        let dir = "/etc/sysconfig/network";
        ct.make_path(dir)?;
        for d in ct.nets() {
            let name = &d.name;
            let mut routes = String::new();
            let (mut dhcp4, mut dhcp6) = (false, false);
            let mut addrs: Vec<&str> = Vec::new();
            let mut configured = false;

            if let Some(ip) =
                d.ip.as_deref()
                    .filter(|ip| !ip.is_empty() && *ip != "manual")
            {
                configured = true;
                if ip == "dhcp" {
                    dhcp4 = true;
                } else {
                    addrs.push(ip);
                    if let Some(gw) = d.gw.as_deref() {
                        if !is_ip_in_cidr(gw, ip, false) {
                            routes.push_str(&format!("{gw} 0.0.0.0 255.255.255.255 {name}\n"));
                        }
                        routes.push_str(&format!("default {gw} 0.0.0.0 {name}\n"));
                    }
                }
            }
            if let Some(ip) = d
                .ip6
                .as_deref()
                .filter(|ip| !ip.is_empty() && *ip != "manual")
            {
                configured = true;
                match ip {
                    // wicked has no separate SLAAC switch
                    "auto" => {}
                    "dhcp" => dhcp6 = true,
                    _ => {
                        addrs.push(ip);
                        if let Some(gw) = d.gw6.as_deref() {
                            if !is_ip_in_cidr(gw, ip, true) && !is_ip_in_cidr(gw, "fe80::/10", true)
                            {
                                routes.push_str(&format!("{gw}/128 - - {name}\n"));
                            }
                            routes.push_str(&format!("default {gw} - {name}\n"));
                        }
                    }
                }
            }

            let mut data = String::new();
            if addrs.len() > 1 {
                for (i, a) in addrs.iter().enumerate() {
                    data.push_str(&format!("IPADDR_{}={a}\n", i + 1));
                }
            } else if let Some(a) = addrs.first() {
                data.push_str(&format!("IPADDR={a}\n"));
            } else if configured && !dhcp4 && !dhcp6 {
                // configured, but neither addresses nor DHCP (SLAAC only)
                continue;
            }
            let bootproto = match (dhcp4, dhcp6) {
                (false, false) => "static",
                (true, false) => "dhcp4",
                (false, true) => "dhcp6",
                (true, true) => "dhcp",
            };
            let startmode = if configured { "onboot" } else { "manual" };
            let text = format!("STARTMODE={startmode}\nBOOTPROTO={bootproto}\n{data}");
            ct.set(&format!("{dir}/ifcfg-{name}"), &text, None)?;

            // user routes in the same file stay; ours are marked
            let opts = Modify {
                delete: true,
                prepend: true,
                ..Modify::default()
            };
            modify_file(ct, &format!("{dir}/ifroute-{name}"), &routes, opts)?;
        }
        if ct.fs.is_file("/usr/lib/systemd/systemd-networkd") {
            systemd::setup_systemd_networkd(ct)?;
        }
        Ok(())
    }
}
