//! `/etc/network/interfaces` for Debian, Devuan, old Ubuntu and Alpine:
//! the stanzas of the CT's NICs are rewritten in place, everything else in
//! the file (comments, other interfaces, extra options of ours) is kept.

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;

use super::base::re;
use super::text::{is_ip_in_cidr, parse_ipv4_cidr, parse_ipv6_cidr};
use super::{CtRoot, NetParams, Result, SetupError};

const BEGIN: &str = "# --- BEGIN PVE ---";
const END: &str = "# --- END PVE ---";

static MARKER_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^# --- (?:BEGIN|END) PVE ---"));
static IFACE4_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*iface\s+(\S+)\s+inet\s+(\S+)\s*$"));
static IFACE6_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*iface\s+(\S+)\s+inet6\s+(\S+)\s*$"));
static AUTO_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*auto\s*(.*)$"));
static STANZA_RE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^\s*(?:mapping\s|allow-|source\s|source-directory\s)"));
static ATTR_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*((\S+)\s(.*))$"));
static GW_RE: [LazyLock<Regex>; 4] = [
    LazyLock::new(|| re(r"^\s*post-up\s+ip\s+route\s+add\s+(\S+)\s+dev\s+(\S+)$")),
    LazyLock::new(|| re(r"^\s*post-up\s+ip\s+route\s+add\s+default\s+via\s+(\S+)\s+dev\s+(\S+)$")),
    LazyLock::new(|| re(r"^\s*pre-down\s+ip\s+route\s+del\s+default\s+via\s+(\S+)\s+dev\s+(\S+)$")),
    LazyLock::new(|| re(r"^\s*pre-down\s+ip\s+route\s+del\s+(\S+)\s+dev\s+(\S+)$")),
];

/// What one NIC needs in the file.
#[derive(Debug, Default)]
struct NetConf {
    address: Option<String>,
    netmask: Option<String>,
    cidr: Option<String>,
    gateway: Option<String>,
    needsroute: bool,
    address6: Option<String>,
    netmask6: Option<String>,
    cidr6: Option<String>,
    gateway6: Option<String>,
    needsroute6: bool,
}

impl NetConf {
    fn is_empty(&self) -> bool {
        self.address.is_none()
            && self.gateway.is_none()
            && self.address6.is_none()
            && self.gateway6.is_none()
    }
}

fn net_conf(d: &NetParams) -> Result<NetConf> {
    let mut net = NetConf::default();
    let mut cidr = None;
    if let Some(ip) = d.ip.as_deref() {
        if ip == "dhcp" || ip == "manual" {
            net.address = Some(ip.to_string());
        } else {
            let (address, netmask) = parse_ipv4_cidr(ip)
                .ok_or_else(|| SetupError::Config("unable to parse ipv4 address/mask".into()))?;
            net.address = Some(address);
            net.netmask = Some(netmask);
            net.cidr = Some(ip.to_string());
            cidr = Some(ip);
        }
    }
    if let Some(gw) = d.gw.as_deref() {
        net.gateway = Some(gw.to_string());
        // an unreachable gateway needs an extra route
        net.needsroute = cidr.is_some_and(|c| !is_ip_in_cidr(gw, c, false));
    }
    let mut cidr6 = None;
    if let Some(ip) = d.ip6.as_deref() {
        if matches!(ip, "auto" | "dhcp" | "manual") {
            net.address6 = Some(ip.to_string());
        } else {
            let (address, prefix) = parse_ipv6_cidr(ip)
                .ok_or_else(|| SetupError::Config("unable to parse ipv6 address/prefix".into()))?;
            net.address6 = Some(address);
            net.netmask6 = Some(prefix);
            net.cidr6 = Some(ip.to_string());
            cidr6 = Some(ip);
        }
    }
    if let Some(gw) = d.gw6.as_deref() {
        net.gateway6 = Some(gw.to_string());
        net.needsroute6 = cidr6
            .is_some_and(|c| !is_ip_in_cidr(gw, c, true) && !is_ip_in_cidr(gw, "fe80::/10", true));
    }
    Ok(net)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Family {
    V4,
    V6,
}

/// An `iface` stanza of one of our NICs being read.
struct Section {
    family: Family,
    ifname: String,
    attr: Vec<String>,
}

/// The routes for a gateway outside the NIC's subnet, marked as ours.
fn gateway_scripts(ifname: &str, gw: &str) -> String {
    format!(
        "{BEGIN}\n\tpost-up ip route add {gw} dev {ifname}\n\
         \tpost-up ip route add default via {gw} dev {ifname}\n\
         \tpre-down ip route del default via {gw} dev {ifname}\n\
         \tpre-down ip route del {gw} dev {ifname}\n{END}\n"
    )
}

/// Drops our marked route lines from a stanza's options; without
/// markers (containers set up by old versions), drops the exact four
/// route lines old versions wrote.
fn remove_gateway_scripts(attr: &mut Vec<String>) {
    let mut found = false;
    let mut keep = true;
    attr.retain(|a| {
        if a == BEGIN {
            found = true;
            keep = false;
            false
        } else if a == END {
            found = true;
            keep = true;
            false
        } else {
            keep
        }
    });
    if found {
        return;
    }
    let mut i = 0;
    while i + 3 < attr.len() {
        let caps: Vec<Option<(String, String)>> = (0..4)
            .map(|k| {
                GW_RE[k]
                    .captures(&attr[i + k])
                    .map(|c| (c[1].to_string(), c[2].to_string()))
            })
            .collect();
        let first = caps[0].clone();
        if first.is_some() && caps.iter().all(|c| *c == first) {
            // the next candidate now sits at `i`
            attr.drain(i..i + 4);
        } else {
            i += 1;
        }
    }
}

/// One address family of a [`NetConf`].
struct FamilyView<'a> {
    address: &'a Option<String>,
    netmask: &'a Option<String>,
    cidr: &'a Option<String>,
    gateway: &'a Option<String>,
    needsroute: bool,
    keyword: &'static str,
    dynamic: &'static [&'static str],
}

struct Writer<'a> {
    networks: &'a BTreeMap<String, NetConf>,
    /// `address a.b.c.d/nn` instead of `address` + `netmask`.
    cidr_style: bool,
    out: String,
    done_auto: HashSet<String>,
    done_v4: HashSet<String>,
    done_v6: HashSet<String>,
}

impl Writer<'_> {
    fn print_section(&mut self, section: Option<Section>) {
        let Some(mut section) = section else {
            return;
        };
        let ifname = section.ifname.clone();
        let Some(net) = self.networks.get(&ifname) else {
            return;
        };
        if self.done_auto.insert(ifname.clone()) {
            self.out.push_str(&format!("auto {ifname}\n"));
        }
        let v = match section.family {
            Family::V4 => {
                self.done_v4.insert(ifname.clone());
                FamilyView {
                    address: &net.address,
                    netmask: &net.netmask,
                    cidr: &net.cidr,
                    gateway: &net.gateway,
                    needsroute: net.needsroute,
                    keyword: "inet",
                    dynamic: &["dhcp", "manual"],
                }
            }
            Family::V6 => {
                self.done_v6.insert(ifname.clone());
                FamilyView {
                    address: &net.address6,
                    netmask: &net.netmask6,
                    cidr: &net.cidr6,
                    gateway: &net.gateway6,
                    needsroute: net.needsroute6,
                    keyword: "inet6",
                    dynamic: &["auto", "dhcp", "manual"],
                }
            }
        };
        let (address, netmask, cidr, gateway, needsroute, family_name, dynamic) = (
            v.address,
            v.netmask,
            v.cidr,
            v.gateway,
            v.needsroute,
            v.keyword,
            v.dynamic,
        );
        let Some(addr) = address else {
            // no address => no iface line
            return;
        };
        if dynamic.contains(&addr.as_str()) {
            self.out
                .push_str(&format!("iface {ifname} {family_name} {addr}\n\n"));
            return;
        }
        self.out
            .push_str(&format!("iface {ifname} {family_name} static\n"));
        if self.cidr_style {
            if let Some(cidr) = cidr {
                self.out.push_str(&format!("\taddress {cidr}\n"));
            }
        } else {
            self.out.push_str(&format!("\taddress {addr}\n"));
            if let Some(mask) = netmask {
                self.out.push_str(&format!("\tnetmask {mask}\n"));
            }
        }
        remove_gateway_scripts(&mut section.attr);
        if let Some(gw) = gateway {
            if needsroute {
                self.out.push_str(&gateway_scripts(&ifname, gw));
            } else {
                self.out.push_str(&format!("\tgateway {gw}\n"));
            }
        }
        for a in &section.attr {
            self.out.push_str(&format!("\t{a}\n"));
        }
        self.out.push('\n');
    }
}

/// Rewrites `/etc/network/interfaces` for the CT's NICs. `cidr_style`:
/// the guest's ifupdown takes `address a.b.c.d/nn` (Debian 10+,
/// Alpine 3.13+) rather than `address` and `netmask` lines.
pub(crate) fn setup_network(ct: &CtRoot, nets: &[NetParams], cidr_style: bool) -> Result<()> {
    let mut networks = BTreeMap::new();
    for d in nets.iter().filter(|d| !d.name.is_empty()) {
        let net = net_conf(d)?;
        if !net.is_empty() {
            networks.insert(d.name.clone(), net);
        }
    }
    if networks.is_empty() {
        return Ok(());
    }
    let file = "/etc/network/interfaces";
    let mut w = Writer {
        networks: &networks,
        cidr_style,
        out: String::new(),
        done_auto: HashSet::new(),
        done_v4: HashSet::new(),
        done_v6: HashSet::new(),
    };
    let mut section: Option<Section> = None;

    if let Some(old) = ct.read(file)? {
        for line in old.split_inclusive('\n') {
            let line = line.strip_suffix('\n').unwrap_or(line);
            if MARKER_RE.is_match(line) {
                // kept with the options so that remove_gateway_scripts finds them
                if let Some(s) = section.as_mut() {
                    s.attr.push(line.to_string());
                }
                continue;
            }
            if line.starts_with('#') {
                w.out.push_str(&format!("{line}\n"));
                continue;
            }
            if line.trim().is_empty() {
                if section.is_some() {
                    w.print_section(section.take());
                } else {
                    w.out.push_str(&format!("{line}\n"));
                }
                continue;
            }
            let iface = IFACE4_RE
                .captures(line)
                .map(|c| (Family::V4, c[1].to_string()))
                .or_else(|| {
                    IFACE6_RE
                        .captures(line)
                        .map(|c| (Family::V6, c[1].to_string()))
                });
            if let Some((family, ifname)) = iface {
                w.print_section(section.take());
                if !networks.contains_key(&ifname) {
                    w.out.push_str(&format!("{line}\n"));
                } else {
                    section = Some(Section {
                        family,
                        ifname,
                        attr: Vec::new(),
                    });
                }
                continue;
            }
            if let Some(c) = AUTO_RE.captures(line) {
                for iface in c[1].split_whitespace() {
                    w.done_auto.insert(iface.to_string());
                }
                w.print_section(section.take());
                w.out.push_str(&format!("{line}\n"));
                continue;
            }
            if STANZA_RE.is_match(line) {
                w.print_section(section.take());
                w.out.push_str(&format!("{line}\n"));
                continue;
            }
            if let (Some(s), Some(c)) = (section.as_mut(), ATTR_RE.captures(line)) {
                // our own values are written anew
                if !matches!(&c[2], "address" | "netmask" | "gateway" | "broadcast") {
                    s.attr.push(c[1].to_string());
                }
                continue;
            }
            w.out.push_str(&format!("{line}\n"));
        }
        w.print_section(section.take());
    }

    let mut need_separator = !w.out.is_empty() && !w.out.ends_with("\n\n");
    for (ifname, net) in &networks {
        for family in [Family::V4, Family::V6] {
            let (done, address) = match family {
                Family::V4 => (&w.done_v4, &net.address),
                Family::V6 => (&w.done_v6, &net.address6),
            };
            if done.contains(ifname) || address.is_none() {
                continue;
            }
            if need_separator {
                w.out.push('\n');
                need_separator = false;
            }
            w.print_section(Some(Section {
                family,
                ifname: ifname.clone(),
                attr: Vec::new(),
            }));
        }
    }

    // older templates (< Debian 8) do not configure the loopback
    // interface if not explicitly told to do so
    let mut text = w.out;
    if !w.done_auto.contains("lo") {
        text = format!("auto lo\niface lo inet loopback\niface lo inet6 loopback\n\n{text}");
    }
    ct.make_path("/etc/network")?;
    ct.set(file, &text, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_unmarked_gateway_scripts_are_removed() {
        let mut attr: Vec<String> = [
            "post-up ip route add 11.0.0.1 dev eth0",
            "post-up ip route add default via 11.0.0.1 dev eth0",
            "pre-down ip route del default via 11.0.0.1 dev eth0",
            "pre-down ip route del 11.0.0.1 dev eth0",
            "up echo hi",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        remove_gateway_scripts(&mut attr);
        assert_eq!(attr, vec!["up echo hi".to_string()]);
    }

    #[test]
    fn marked_gateway_scripts_are_removed() {
        let mut attr: Vec<String> = [BEGIN, "post-up x", END, "up y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        remove_gateway_scripts(&mut attr);
        assert_eq!(attr, vec!["up y".to_string()]);
    }
}
