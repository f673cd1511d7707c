//! Firewall specs (pve-firewall's `Firewall.pm`). Port and protocol names
//! are checked for shape only: upstream looks them up in the host's
//! `/etc/services` and `/etc/protocols`, which this pure crate does not read.
use super::{is_ip, IPV4, IPV6};

const HELPERS: &[&str] = &[
    "amanda",
    "ftp",
    "irc",
    "netbios-ns",
    "pptp",
    "sane",
    "sip",
    "snmp",
    "tftp",
];
const ICMP_TYPES: &[&str] = &[
    "any",
    "echo-reply",
    "destination-unreachable",
    "network-unreachable",
    "host-unreachable",
    "protocol-unreachable",
    "port-unreachable",
    "fragmentation-needed",
    "source-route-failed",
    "network-unknown",
    "host-unknown",
    "network-prohibited",
    "host-prohibited",
    "TOS-network-unreachable",
    "TOS-host-unreachable",
    "communication-prohibited",
    "host-precedence-violation",
    "precedence-cutoff",
    "source-quench",
    "redirect",
    "network-redirect",
    "host-redirect",
    "TOS-network-redirect",
    "TOS-host-redirect",
    "echo-request",
    "router-advertisement",
    "router-solicitation",
    "time-exceeded",
    "ttl-zero-during-transit",
    "ttl-zero-during-reassembly",
    "parameter-problem",
    "ip-header-bad",
    "required-option-missing",
    "timestamp-request",
    "timestamp-reply",
    "address-mask-request",
    "address-mask-reply",
    "no-route",
    "beyond-scope",
    "address-unreachable",
    "failed-policy",
    "reject-route",
    "packet-too-big",
    "bad-header",
    "unknown-header-type",
    "unknown-option",
    "neighbor-solicitation",
    "neighbour-solicitation",
    "neighbor-advertisement",
    "neighbour-advertisement",
];

fn split_strict(list: &str) -> Result<Vec<&str>, String> {
    let items: Vec<&str> = list.split(',').collect();
    if items.iter().any(|i| i.is_empty()) && !list.is_empty() {
        return Err("extraneous commas in list".into());
    }
    Ok(items.into_iter().filter(|i| !i.is_empty()).collect())
}

fn is_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+/".contains(c))
}

pub(super) fn check_conntrack_helper(list: &str) -> Result<(), String> {
    for helper in split_strict(list)? {
        if !HELPERS.contains(&helper) {
            return Err(format!("unknown helper {helper}"));
        }
    }
    Ok(())
}

pub(super) fn check_ports(list: &str, dport: bool) -> Result<(), String> {
    let mut count = 0;
    let mut icmp = false;
    let port = |p: &str| -> Result<u32, String> {
        p.parse::<u32>()
            .ok()
            .filter(|n| *n <= 65535)
            .ok_or_else(|| format!("invalid port '{p}'"))
    };
    for item in split_strict(list)? {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match item.split_once(':') {
            Some((a, b)) if digits(a) && digits(b) => {
                count += 2;
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return Err(format!(
                        "backwards range '{a}:{b}' not allowed, did you mean '{b}:{a}'?"
                    ));
                }
            }
            _ if digits(item) => {
                count += 1;
                port(item)?;
            }
            _ if dport && ICMP_TYPES.contains(&item) => icmp = true,
            _ if is_name(item) => {}
            _ => return Err(format!("invalid port '{item}'")),
        }
    }
    if icmp && count > 0 {
        return Err("ICMP ports not allowed in port range".into());
    }
    if count > 15 {
        return Err("too many entries in port list (> 15 numbers)".into());
    }
    Ok(())
}

pub(super) fn check_address_list(list: &str) -> Result<(), String> {
    if let Some(name) = list.strip_prefix('+') {
        if !name.is_empty() && !name.contains(char::is_whitespace) {
            if list.len() > 65 {
                return Err("ipset name too long".into());
            }
            return Ok(());
        }
    }
    if super::ALIAS.is_match(list) {
        if list.len() > 64 {
            return Err("alias name too long".into());
        }
        return Ok(());
    }
    let elements = split_strict(list)?;
    let mut version = None;
    let mut range = false;
    for elem in &elements {
        let first = match elem.split_once('-') {
            Some((a, b)) => {
                range = true;
                if !(is_ip(a) && is_ip(b)) {
                    return Err(format!("invalid IP address: {elem}"));
                }
                a
            }
            None => {
                super::check_ip_or_cidr(elem).map_err(|_| format!("invalid IP address: {elem}"))?;
                elem.split('/').next().unwrap_or(elem)
            }
        };
        let v = if IPV4.is_match(first) { 4 } else { 6 };
        debug_assert!(v == 4 || IPV6.is_match(first));
        if version.is_some_and(|old| old != v) {
            return Err(format!(
                "detected mixed ipv4/ipv6 addresses in address list '{list}'"
            ));
        }
        version = Some(v);
    }
    if range && elements.len() > 1 {
        return Err("you can't use a range in a list".into());
    }
    Ok(())
}

pub(super) fn check_protocol(proto: &str) -> Result<(), String> {
    let numeric = proto.parse::<u8>().is_ok();
    let named = proto
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    if proto.is_empty() || numeric || named {
        Ok(())
    } else {
        Err(format!("unknown protocol '{proto}'"))
    }
}

pub(super) fn check_icmp_type(value: &str) -> Result<(), String> {
    if value.is_empty() || ICMP_TYPES.contains(&value) {
        Ok(())
    } else {
        Err(format!("invalid icmp-type value '{value}'"))
    }
}
