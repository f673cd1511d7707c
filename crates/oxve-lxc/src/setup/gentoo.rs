//! Gentoo: netifrc's `/etc/conf.d/net` with `net.<iface>` service links,
//! `/etc/conf.d/hostname`, inittab gettys.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;

use super::base::{self, modify_file, re, Modify};
use super::plugin::Distro;
use super::text::{is_ip_in_cidr, join_lines, perl_lines};
use super::{CtRoot, Result, SetupError};

static GETTY_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*c?\d+:\d*:[^:]*:.*getty"));

/// Gentoo (`/etc/gentoo-release`).
pub(crate) struct Gentoo;

impl Gentoo {
    pub fn new(ct: &CtRoot) -> Result<Gentoo> {
        let release = ct
            .fs
            .read_first_line("/etc/gentoo-release")?
            .ok_or_else(|| SetupError::Version("unable to read version info".into()))?;
        if !release
            .to_ascii_lowercase()
            .starts_with("gentoo base system release ")
        {
            return Err(SetupError::Version(format!(
                "unrecognized gentoo version: {release}"
            )));
        }
        Ok(Gentoo)
    }
}

impl Distro for Gentoo {
    fn ostype(&self) -> &'static str {
        "gentoo"
    }

    /// Gentoo does not support the `/dev/lxc/` subdirectory.
    fn devttydir(&self, _ct: &CtRoot) -> &'static str {
        ""
    }

    fn template_fixup(&self, ct: &CtRoot) -> Result<()> {
        base::setup_securetty(ct, self.devttydir(ct), &[])?;
        base::remove_lxc_name_from_etc_hosts(ct)
    }

    fn setup_init(&self, ct: &CtRoot) -> Result<()> {
        let file = "/etc/inittab";
        let Some(old) = ct.read(file)? else {
            return Ok(());
        };
        let lines: Vec<&str> = perl_lines(&old)
            .into_iter()
            .filter(|l| !GETTY_RE.is_match(l))
            .collect();
        let mut inittab = join_lines(&lines);
        for id in (1..=ct.tty_count()).filter(|id| *id != 7) {
            inittab.push_str(&format!("{id}::respawn:/sbin/agetty 38400 tty{id}\n"));
        }
        ct.set(file, &inittab, None)
    }

    fn setup_network(&self, ct: &CtRoot) -> Result<()> {
        // /etc/conf.d/net is sourced by a shell: it is replaced rather
        // than parsed, in ifconfig syntax
        let mut data = String::from("modules=\"$modules ifconfig\"\n");
        let mut up = BTreeSet::new();
        for d in ct.nets() {
            let name = &d.name;
            let (mut has_v4, mut has_v6) = (false, false);
            let mut config = Vec::new();
            let mut routes = Vec::new();
            if let Some(ip) = d.ip.as_deref() {
                if ip == "dhcp" {
                    config.push("dhcp".to_string());
                    up.insert(name.clone());
                } else if ip != "manual" {
                    has_v4 = true;
                    config.push(ip.to_string());
                    up.insert(name.clone());
                }
            }
            if let Some(gw) = d.gw.as_deref() {
                if has_v4 && !is_ip_in_cidr(gw, d.ip.as_deref().unwrap_or(""), false) {
                    routes.push(format!("-host {gw} dev {name}"));
                }
                routes.push(format!("default gw {gw}"));
                up.insert(name.clone());
            }
            // the templates' busybox udhcpc has no DHCPv6
            if let Some(ip) = d
                .ip6
                .as_deref()
                .filter(|ip| !matches!(*ip, "dhcp" | "manual"))
            {
                has_v6 = true;
                config.push(ip.to_string());
                up.insert(name.clone());
            }
            if let Some(gw) = d.gw6.as_deref() {
                // upstream tests the IPv6 gateway as IPv4, so the host
                // route is always added
                if has_v6 && !is_ip_in_cidr(gw, d.ip6.as_deref().unwrap_or(""), false) {
                    routes.push(format!("-6 -host {gw} dev {name}"));
                }
                routes.push(format!("-6 default gw {gw}"));
                up.insert(name.clone());
            }
            if !config.is_empty() {
                data.push_str(&format!("config_{name}=\"{}\"\n", config.join("\n")));
            }
            if !routes.is_empty() {
                data.push_str(&format!("routes_{name}=\"{}\"\n", routes.join("\n")));
            }
        }
        let opts = Modify {
            replace: true,
            ..Modify::default()
        };
        modify_file(ct, "/etc/conf.d/net", &data, opts)?;
        for iface in up {
            ct.symlink("net.lo", &format!("/etc/init.d/net.{iface}"))?;
        }
        Ok(())
    }

    fn set_hostname(&self, ct: &CtRoot) -> Result<()> {
        let hostname = ct.hostname();
        let namepart = hostname.split('.').next().unwrap_or(hostname);
        base::update_etc_hosts(ct, ct.primary_ip().as_deref(), hostname)?;
        ct.set(
            "/etc/conf.d/hostname",
            &format!("hostname=\"{namepart}\"\n"),
            None,
        )
    }
}
