//! The network configs of the seeds (NoCloud's version 1, Debian's
//! interfaces syntax for ConfigDrive2 and cloudbase-init) and OpenNebula's
//! `context.sh`, which is mostly network.

use super::{dns_conf, hostname_fqdn, perl_true, uri_unescape, CloudInitError, HostDns};
use base64::Engine as _;
use oxve_schema::vmconfig::VmSection;

/// NoCloud's network config (version 1), as upstream writes it.
pub fn nocloud_network(section: &VmSection, dns: &HostDns) -> Result<String, CloudInitError> {
    let mut out = String::from("version: 1\nconfig:\n");
    for (id, net, ipconfig) in interfaces(section) {
        let mac = net_mac(net)
            .map(|m| m.to_ascii_lowercase())
            .unwrap_or_default();
        if mac.is_empty() {
            return Err(CloudInitError::Config(format!(
                "network interface 'net{id}' has no mac address"
            )));
        }
        out.push_str(&format!(
            "    - type: physical\n      name: eth{id}\n      mac_address: '{mac}'\n      subnets:\n"
        ));
        let i = "      ";
        let ip = parse_ipconfig(ipconfig);
        match ip.ip.as_deref() {
            Some("dhcp") => out.push_str(&format!("{i}- type: dhcp4\n")),
            Some(cidr) => {
                let (addr, mask) = split_ip4(cidr)?;
                out.push_str(&format!(
                    "{i}- type: static\n{i}  address: '{addr}'\n{i}  netmask: '{mask}'\n"
                ));
                if let Some(gw) = &ip.gw {
                    out.push_str(&format!("{i}  gateway: '{gw}'\n"));
                }
            }
            None => {}
        }
        match ip.ip6.as_deref() {
            Some("dhcp") => out.push_str(&format!("{i}- type: dhcp6\n")),
            Some("auto") => out.push_str(&format!("{i}- type: ipv6_slaac\n")),
            Some(cidr) => {
                out.push_str(&format!("{i}- type: static6\n{i}  address: '{cidr}'\n"));
                if let Some(gw) = &ip.gw6 {
                    out.push_str(&format!("{i}  gateway: '{gw}'\n"));
                }
            }
            None => {}
        }
    }
    // Upstream always writes the name server entry, empty or not.
    let (search, nameservers) = dns_conf(section, dns);
    out.push_str("    - type: nameserver\n");
    if !nameservers.is_empty() {
        out.push_str("      address:\n");
        for n in &nameservers {
            out.push_str(&format!("      - '{n}'\n"));
        }
    }
    if !search.is_empty() {
        out.push_str("      search:\n");
        for s in &search {
            out.push_str(&format!("      - '{s}'\n"));
        }
    }
    Ok(out)
}

/// ConfigDrive2's network config: Debian's interfaces syntax.
pub fn configdrive2_network(section: &VmSection, dns: &HostDns) -> String {
    let mut out = String::from("auto lo\niface lo inet loopback\n\n");
    let (search, nameservers) = dns_conf(section, dns);
    if !nameservers.is_empty() {
        out.push_str(&format!(
            "        dns_nameservers {}\n",
            nameservers.join(" ")
        ));
    }
    if !search.is_empty() {
        out.push_str(&format!("        dns_search {}\n", search.join(" ")));
    }
    eni_interfaces(section, &mut out, None);
    out
}

/// cloudbase-init's network config (Windows): interfaces syntax with the
/// name servers on each static address.
pub(super) fn cloudbase_network(section: &VmSection, dns: &HostDns) -> String {
    let (_, nameservers) = dns_conf(section, dns);
    let mut out = String::new();
    let ns = nameservers.join(" ");
    eni_interfaces(section, &mut out, (!ns.is_empty()).then_some(ns.as_str()));
    out
}

fn eni_interfaces(section: &VmSection, out: &mut String, nameservers: Option<&str>) {
    let dns_line = |out: &mut String| {
        if let Some(ns) = nameservers {
            out.push_str(&format!("        dns-nameservers {ns}\n"));
        }
    };
    for (id, _, ipconfig) in interfaces(section) {
        let ip = parse_ipconfig(ipconfig);
        let dev = format!("eth{id}");
        out.push_str(&format!("auto {dev}\n"));
        match ip.ip.as_deref() {
            Some("dhcp") => out.push_str(&format!("iface {dev} inet dhcp\n")),
            Some(cidr) => {
                // The schema only lets CIDRs through; a broken one is skipped.
                if let Ok((addr, mask)) = split_ip4(cidr) {
                    out.push_str(&format!(
                        "iface {dev} inet static\n        address {addr}\n        netmask {mask}\n"
                    ));
                    if let Some(gw) = &ip.gw {
                        out.push_str(&format!("        gateway {gw}\n"));
                    }
                    dns_line(out);
                }
            }
            None => {}
        }
        match ip.ip6.as_deref() {
            Some(m @ ("auto" | "dhcp")) => out.push_str(&format!("iface {dev} inet6 {m}\n")),
            Some(cidr) => {
                let mut parts = cidr.split('/');
                let addr = parts.next().unwrap_or_default();
                let mask = parts.next().unwrap_or_default();
                out.push_str(&format!(
                    "iface {dev} inet6 static\n        address {addr}\n        netmask {mask}\n"
                ));
                if let Some(gw) = &ip.gw6 {
                    out.push_str(&format!("        gateway {gw}\n"));
                }
                dns_line(out);
            }
            None => {}
        }
    }
}

/// OpenNebula's `context.sh`.
pub(super) fn opennebula_context(vmid: u32, section: &VmSection, dns: &HostDns) -> String {
    let mut out = String::new();
    let user = section
        .get("ciuser")
        .filter(|u| perl_true(u))
        .unwrap_or("root");
    out.push_str(&format!("USERNAME={user}\n"));
    if let Some(pw) = section.get("cipassword") {
        out.push_str(&format!("CRYPTED_PASSWORD_BASE64={}\n", mime_base64(pw)));
    }
    if let Some(keys) = section.get("sshkeys") {
        out.push_str(&format!(
            "SSH_PUBLIC_KEY=\"{}\"\n",
            split_keys_trimmed(&uri_unescape(keys)).join("\n")
        ));
    }
    let (hostname, _) = hostname_fqdn(vmid, section);
    out.push_str(&format!("SET_HOSTNAME={hostname}\n"));
    let (search, nameservers) = dns_conf(section, dns);
    if !nameservers.is_empty() {
        out.push_str(&format!("DNS=\"{}\"\n", nameservers.join(" ")));
    }
    if !search.is_empty() {
        out.push_str(&format!("SEARCH_DOMAIN=\"{}\"\n", search.join(" ")));
    }
    let mut network = false;
    for (id, net, ipconfig) in interfaces(section) {
        let ip = parse_ipconfig(ipconfig);
        let eth = format!("ETH{id}");
        let mac = net_mac(net).unwrap_or_default().to_ascii_lowercase();
        let mtu = net_opt(net, "mtu");
        let mtu_line = |out: &mut String| {
            if let Some(m) = mtu.filter(|m| perl_true(m)) {
                out.push_str(&format!("{eth}_MTU={m}\n"));
            }
        };
        if let Some(v4) = ip.ip.as_deref() {
            network = true;
            if v4 == "dhcp" {
                out.push_str(&format!("{eth}_DHCP=YES\n"));
            } else if let Ok((addr, mask)) = split_ip4(v4) {
                out.push_str(&format!(
                    "{eth}_IP={addr}\n{eth}_MASK={mask}\n{eth}_MAC={mac}\n"
                ));
                if let Some(gw) = &ip.gw {
                    out.push_str(&format!("{eth}_GATEWAY={gw}\n"));
                }
            }
            mtu_line(&mut out);
        }
        if let Some(v6) = ip.ip6.as_deref() {
            network = true;
            match v6 {
                "dhcp" => out.push_str(&format!("{eth}_DHCP6=YES\n")),
                "auto" => out.push_str(&format!("{eth}_AUTO6=YES\n")),
                cidr => {
                    let mut parts = cidr.split('/');
                    let addr = parts.next().unwrap_or_default();
                    let mask = parts.next().unwrap_or_default();
                    out.push_str(&format!(
                        "{eth}_IP6={addr}\n{eth}_MASK6={mask}\n{eth}_MAC6={mac}\n"
                    ));
                    if let Some(gw) = &ip.gw6 {
                        out.push_str(&format!("{eth}_GATEWAY6={gw}\n"));
                    }
                }
            }
            mtu_line(&mut out);
        }
    }
    if network {
        out.push_str("NETWORK=YES\n");
    }
    out
}

/// The NICs with an `ipconfig<n>`, in upstream's (text) order: index,
/// `net<n>` value, `ipconfig<n>` value.
fn interfaces(section: &VmSection) -> Vec<(String, &str, &str)> {
    section
        .props
        .iter()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("net")?;
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let ipconfig = section
                .get(&format!("ipconfig{id}"))
                .filter(|c| perl_true(c))?;
            Some((id.to_string(), v.as_str(), ipconfig))
        })
        .collect()
}

/// The MAC of a `net<n>` value (`virtio=MAC,...` or `macaddr=MAC`).
fn net_mac(net: &str) -> Option<String> {
    net.split(',')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| crate::cmdline::NIC_MODELS.contains(k) || *k == "macaddr")
        .map(|(_, v)| v.to_string())
        .filter(|m| !m.is_empty())
}

fn net_opt<'a>(net: &'a str, key: &str) -> Option<&'a str> {
    net.split(',')
        .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
}

/// A parsed `ipconfig<n>`.
#[derive(Default)]
struct IpConfig {
    ip: Option<String>,
    gw: Option<String>,
    ip6: Option<String>,
    gw6: Option<String>,
}

/// Upstream's `parse_ipconfig`: an inconsistent value counts as no
/// addresses at all, a value without addresses as DHCP for both families.
fn parse_ipconfig(value: &str) -> IpConfig {
    let mut c = IpConfig::default();
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return IpConfig::default();
        };
        let slot = match k {
            "ip" => &mut c.ip,
            "gw" => &mut c.gw,
            "ip6" => &mut c.ip6,
            "gw6" => &mut c.gw6,
            _ => return IpConfig::default(),
        };
        *slot = Some(v.to_string());
    }
    let bad = (c.gw.is_some() && c.ip.is_none())
        || (c.gw6.is_some() && c.ip6.is_none())
        || (c.gw.is_some() && c.ip.as_deref() == Some("dhcp"))
        || (c.gw6.is_some() && matches!(c.ip6.as_deref(), Some("dhcp" | "auto")));
    if bad {
        return IpConfig::default();
    }
    if c.ip.is_none() && c.ip6.is_none() {
        c.ip = Some("dhcp".into());
        c.ip6 = Some("dhcp".into());
    }
    c
}

/// `a.b.c.d/len` → address and dotted netmask.
fn split_ip4(cidr: &str) -> Result<(String, String), CloudInitError> {
    let not_cidr = || CloudInitError::Config(format!("not a CIDR: {cidr}"));
    let (addr, len) = cidr.split_once('/').ok_or_else(not_cidr)?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(not_cidr)?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    let mask = std::net::Ipv4Addr::from(mask);
    Ok((addr.to_string(), mask.to_string()))
}

/// Keys split on new lines with the white space around each line break
/// removed, trailing empty ones dropped (Perl's `split /\s*\n\s*/`).
fn split_keys_trimmed(text: &str) -> Vec<String> {
    let parts: Vec<&str> = text.split('\n').collect();
    let last = parts.len().saturating_sub(1);
    let mut keys: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let p = if i > 0 { p.trim_start() } else { p };
            let p = if i < last { p.trim_end() } else { p };
            p.to_string()
        })
        .collect();
    while keys.last().is_some_and(String::is_empty) {
        keys.pop();
    }
    keys
}

/// MIME base64 (lines of 76 characters, each ending in a new line), as
/// Perl's `encode_base64`.
fn mime_base64(text: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let mut out = String::new();
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks() {
        assert_eq!(
            split_ip4("10.0.0.5/24").unwrap(),
            ("10.0.0.5".into(), "255.255.255.0".into())
        );
        assert_eq!(split_ip4("10.0.0.5/0").unwrap().1, "0.0.0.0");
        assert_eq!(split_ip4("10.0.0.5/32").unwrap().1, "255.255.255.255");
        assert!(split_ip4("10.0.0.5").is_err());
    }

    #[test]
    fn ipconfig_as_upstream() {
        let c = parse_ipconfig("gw=10.0.0.1");
        assert!(c.ip.is_none() && c.ip6.is_none());
        let c = parse_ipconfig("ip=dhcp,gw=10.0.0.1");
        assert!(c.ip.is_none());
        let c = parse_ipconfig("ip6=auto");
        assert_eq!(c.ip6.as_deref(), Some("auto"));
        assert!(c.ip.is_none());
    }

    #[test]
    fn base64_lines() {
        let long = "x".repeat(100);
        let b = mime_base64(&long);
        assert_eq!(b.lines().next().map(str::len), Some(76));
        assert!(b.ends_with('\n'));
    }

    #[test]
    fn keys_split_like_perl() {
        assert_eq!(split_keys_trimmed(" a \n b \n\n"), [" a", "b"]);
    }
}
