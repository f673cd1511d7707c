//! Registered string formats: the named validators that a schema's
//! `"format": "<name>"` refers to, as upstream's `register_format` calls
//! define them across pve-common, pve-access-control, pve-storage, pve-network,
//! pve-firewall, pve-guest-common, pve-ha-manager, pve-manager, qemu-server
//! and pve-container.
//!
//! A name may carry upstream's suffixes: `<name>-list` checks every element
//! of a list split by [`split_list`], `<name>-opt` accepts the empty string.
//! Messages are upstream's `die` texts without the trailing newline.
//!
//! Some formats are property strings whose sub-schema is known here (see
//! [`named_property_format`]); they are parsed by [`crate::propstring`].

use crate::propstring;
use regex::Regex;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::LazyLock;

/// Formats accepted without a check here: large guest or storage property
/// strings whose sub-schemas live with the code that uses them. They are
/// checked by the guest (qemu, lxc) and storage parsers that consume them,
/// not at the API edge.
pub const DEFERRED_FORMATS: &[&str] = &[
    "pve-qm-boot",
    "pve-qm-cicustom",
    "pve-qm-hostpci",
    "pve-qm-ide",
    "pve-qm-ipconfig",
    "pve-qm-rng",
    "pve-qm-smbios1",
    "pve-qm-watchdog",
    "pve-qm-usb",
    "pve-qm-virtiofs",
    "pve-qm-numanode",
    "pve-qemu-machine-fmt",
    "pve-qemu-sev-fmt",
    "pve-qemu-tdx-fmt",
    "pve-vm-cpu-conf",
    "pve-cpu-conf",
    "pve-lxc-network",
    "pve-ct-mountpoint",
    // Needs the host's zone.tab; checked where the container config is written.
    "pve-ct-timezone",
    "timezone",
    // A JSON document validated by the node's `execute` handler.
    "pve-command-batch",
];

/// Every privilege name upstream's `pve-priv` accepts (pve-access-control's
/// privilege groups plus `Permissions.Modify`).
pub const PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// Whether `name` is a format this module knows: implemented, a named
/// property-string format, or deferred (see [`DEFERRED_FORMATS`]).
pub fn is_known_format(name: &str) -> bool {
    if name == "regex" || named_property_format(name).is_some() || DEFERRED_FORMATS.contains(&name)
    {
        return true;
    }
    let (base, _) = split_suffix(name);
    simple_check(base, "").is_some() || DEFERRED_FORMATS.contains(&base)
}

/// Checks `value` against the registered format `name`.
///
/// ```
/// use oxve_schema::format::check_format;
/// assert!(check_format("pve-vmid", "100").is_ok());
/// assert_eq!(
///     check_format("pve-vmid", "99").unwrap_err(),
///     "value does not look like a valid VM ID"
/// );
/// assert!(check_format("pve-vmid-list", "100,101 102;103").is_ok());
/// ```
pub fn check_format(name: &str, value: &str) -> Result<(), String> {
    if name == "regex" || DEFERRED_FORMATS.contains(&name) {
        return Ok(());
    }
    if let Some(schema) = named_property_format(name) {
        let parsed = propstring::parse(schema, value)?;
        return named_format_validator(name, &parsed);
    }
    let (base, suffix) = split_suffix(name);
    if DEFERRED_FORMATS.contains(&base) {
        return Ok(());
    }
    let check = |v: &str| simple_check(base, v).unwrap_or_else(|| Err(undefined(name)));
    match suffix {
        Suffix::List => split_list(value).into_iter().try_for_each(check),
        Suffix::Opt if value.is_empty() => Ok(()),
        Suffix::Opt | Suffix::None => {
            if simple_check(base, "").is_none() {
                return Err(undefined(name));
            }
            check(value)
        }
    }
}

/// Splits a list the way upstream's `split_list` does: on NUL bytes if the
/// text has any, else on commas, semicolons and white space; empty
/// elements are dropped.
pub fn split_list(text: &str) -> Vec<&str> {
    if text.contains('\0') {
        return text.split('\0').collect();
    }
    text.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Upstream's `parse_boolean`, used by property strings: `1|on|yes|true`
/// and `0|off|no|false`, case-insensitive.
pub fn parse_boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// Parses a size such as `32G`, `1.5T`, `512` (bytes) or `4MiB` into bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    static SIZE_RE: LazyLock<Regex> = LazyLock::new(|| re(r"(\d+(?:\.\d+)?)([KMGT](?:iB)?)?"));
    let caps = SIZE_RE.captures(text)?;
    let number: f64 = caps.get(1)?.as_str().parse().ok()?;
    let shift = match caps.get(2).map(|m| &m.as_str()[..1]) {
        None => 0,
        Some("K") => 10,
        Some("M") => 20,
        Some("G") => 30,
        Some(_) => 40,
    };
    Some((number * (1u64 << shift) as f64) as u64)
}

/// Formats a byte count with the largest unit that divides it evenly, as
/// upstream's `format_size` (`4294967296` -> `4G`).
pub fn format_size(bytes: u64) -> String {
    let mut value = bytes;
    for unit in ["", "K", "M", "G"] {
        if !value.is_multiple_of(1024) {
            return format!("{value}{unit}");
        }
        value /= 1024;
    }
    format!("{value}T")
}

/// The sub-schema of a named property-string format known here.
pub fn named_property_format(name: &str) -> Option<&'static Map<String, Value>> {
    NAMED_PROPERTY_FORMATS.get(name)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Suffix {
    None,
    List,
    Opt,
}

fn split_suffix(name: &str) -> (&str, Suffix) {
    if let Some(base) = name.strip_suffix("-list") {
        (base, Suffix::List)
    } else if let Some(base) = name.strip_suffix("-opt") {
        (base, Suffix::Opt)
    } else {
        (name, Suffix::None)
    }
}

fn undefined(name: &str) -> String {
    format!("undefined format '{name}'")
}

fn re(pattern: &str) -> Regex {
    // Patterns here are literals of this file, covered by its tests.
    #[allow(clippy::expect_used)]
    Regex::new(&format!("^(?:{pattern})$")).expect("static format regex")
}

/// An IPv4 address, as upstream's `$IPV4RE`.
pub(crate) fn ipv4_re() -> String {
    let octet = "(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])";
    format!(r"(?:(?:{octet}\.){{3}}{octet})")
}

/// An IPv6 address in any RFC 4291 text form, as upstream's `$IPV6RE`.
pub(crate) fn ipv6_re() -> String {
    let h = "(?:[0-9a-fA-F]{1,4})";
    let ls32 = format!("(?:(?:{}|{h}:{h}))", ipv4_re());
    let alts = [
        format!("(?:(?:{h}:){{6}}){ls32}"),
        format!("::(?:{h}:){{5}}{ls32}"),
        format!("(?:{h})?::(?:{h}:){{4}}{ls32}"),
        format!("(?:(?:{h}:){{0,1}}{h})?::(?:{h}:){{3}}{ls32}"),
        format!("(?:(?:{h}:){{0,2}}{h})?::(?:{h}:){{2}}{ls32}"),
        format!("(?:(?:{h}:){{0,3}}{h})?::(?:{h}:){{1}}{ls32}"),
        format!("(?:(?:{h}:){{0,4}}{h})?::{ls32}"),
        format!("(?:(?:{h}:){{0,5}}{h})?::{h}"),
        format!("(?:(?:{h}:){{0,6}}{h})?::"),
    ];
    let joined: Vec<String> = alts.iter().map(|a| format!("(?:{a})")).collect();
    format!("(?:{})", joined.join("|"))
}

macro_rules! static_re {
    ($name:ident, $pat:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| re(&$pat));
    };
}

static_re!(IPV4, ipv4_re());
static_re!(IPV6, ipv6_re());
static_re!(CIDRV4, format!(r"{}/(\d+)", ipv4_re()));
static_re!(CIDRV6, format!(r"{}/(\d+)", ipv6_re()));
static_re!(
    IP_OR_CIDR,
    format!(r"(?:{}|{})(?:/\d+)?", ipv6_re(), ipv4_re())
);
static_re!(CONFIGID, r"[a-zA-Z][a-zA-Z0-9_-]+");
static_re!(STORAGE_ID, r"[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]");
static_re!(BRIDGE_ID, r"[-_.\w\d]+");
static_re!(VMID, r"[1-9][0-9]{2,8}");
static_re!(NODE, r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?");
static_re!(
    HA_NODE,
    r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?(?::\d+)?"
);
static_re!(MAC_ADDR, r"(?i)[a-f0-9][02468ace](?::[a-f0-9]{2}){5}");
static_re!(
    MAC_PREFIX,
    r"(?i)[a-f0-9][02468ace](?::[a-f0-9]{2}){0,2}(?::[a-f0-9]?)?"
);
static_re!(
    DNS_NAME,
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"
);
static_re!(EMAIL_USER, r"[\w+\-~]+(?:\.[\w+\-~]+)*");
static_re!(
    EMAIL,
    r"[\w+\-~]+(?:\.[\w+\-~]+)*@[a-zA-Z0-9\-]+(?:\.[a-zA-Z0-9\-]+)*"
);
static_re!(IFACE, r"(?i)[a-z][a-z0-9_]{1,20}(?:[:.]\d+)?");
static_re!(URLENCODED, r"[-%a-zA-Z0-9_.!~*'()]*");
static_re!(TAG, r"(?i)[a-z0-9_][a-z0-9_\-+.]*");
static_re!(REALM, r"[A-Za-z][A-Za-z0-9.\-_]+");
static_re!(USERID, r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+");
static_re!(
    TOKENID,
    r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+![A-Za-z][A-Za-z0-9.\-_]+"
);
static_re!(GROUPID, r"[A-Za-z0-9.\-_]+");
static_re!(POOLID, r"[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}");
static_re!(VOLUME_ID, r"(?is)[a-z][a-z0-9\-_.]*[a-z0-9]:.+");
static_re!(SDN_ID, r"(?i)[a-z][a-z0-9]*[a-z0-9]");
static_re!(SDN_CONTROLLER_ID, r"(?i)[a-z][a-z0-9_-]*[a-z0-9]");
static_re!(
    SDN_FABRIC_ID,
    r"(?i)[a-zA-Z0-9][a-zA-Z0-9-]{0,6}[a-zA-Z0-9]?"
);
static_re!(
    ISIS_NET,
    r"[a-fA-F0-9]{2}(?:\.[a-fA-F0-9]{4}){3,9}\.[a-fA-F0-9]{2}"
);
static_re!(LDAP_ATTR, r"[a-zA-Z0-9]+");
static_re!(ALIAS, r"(?:dc/|guest/)?[A-Za-z][A-Za-z0-9\-_]+");
static_re!(
    ACME_DOMAIN,
    r"(?i)[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)+"
);
static_re!(
    ACME_ALIAS,
    r"(?i)[a-z0-9_][a-z0-9_-]*(?:\.[a-z0-9_][a-z0-9_-]*)+"
);
static_re!(
    HOST_PORT,
    format!(
        r"(?:{v4}|[[:alnum:]\-.]+)(?::\d+)?|\[(?:{v6}|{v4}|[[:alnum:]\-.]+)\](?::\d+)?|{v6}(?:\.\d+)?",
        v4 = ipv4_re(),
        v6 = ipv6_re()
    )
);

fn check_re(regex: &Regex, value: &str, msg: impl FnOnce() -> String) -> Result<(), String> {
    if regex.is_match(value) {
        Ok(())
    } else {
        Err(msg())
    }
}

fn fixed(msg: &str) -> impl FnOnce() -> String + '_ {
    move || msg.to_string()
}

fn cidr_ok(regex: &Regex, value: &str, max: u32) -> bool {
    regex
        .captures(value)
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().parse::<u32>().ok())
        .is_some_and(|len| len > 7 && len <= max)
}

fn is_ip(value: &str) -> bool {
    IPV4.is_match(value) || IPV6.is_match(value)
}

/// Upstream's `parse_id`: storage and ACME plugin IDs.
fn check_id(value: &str, kind: &str) -> Result<(), String> {
    if value.chars().count() < 2 {
        return Err(format!(
            "{kind} ID '{value}' cannot be shorter than 2 characters"
        ));
    }
    check_re(&STORAGE_ID, value, || {
        format!("{kind} ID '{value}' contains illegal characters")
    })
}

/// `storage-pair` / `bridge-pair`: `1`, `<id>` or `<source>:<target>`.
fn check_id_pair(entry: &str, id_format: &str) -> Result<(), String> {
    if entry == "1" {
        return Ok(());
    }
    let result = match entry.split_once(':') {
        Some((source, target))
            if !source.is_empty() && !target.is_empty() && !target.contains(':') =>
        {
            check_format(id_format, source).and_then(|()| check_format(id_format, target))
        }
        Some(_) => Err(format!("unable to parse ID mapping '{entry}'")),
        None => check_format(id_format, entry),
    };
    result.map_err(|e| format!("entry '{entry}' contains invalid ID - {e}"))
}

/// The validator of a format without suffix; `None` if `name` is unknown.
fn simple_check(name: &str, v: &str) -> Option<Result<(), String>> {
    let r = match name {
        "string" => Ok(()),
        "urlencoded" => check_re(&URLENCODED, v, || format!("invalid urlencoded string: {v}")),
        "pve-configid" => check_re(&CONFIGID, v, || format!("invalid configuration ID '{v}'")),
        "pve-storage-id" => check_id(v, "storage"),
        "acme-plugin-id" => check_id(v, "ACME plugin"),
        "pve-bridge-id" => check_re(&BRIDGE_ID, v, || format!("invalid bridge ID '{v}'")),
        "pve-vmid" => check_re(&VMID, v, fixed("value does not look like a valid VM ID")),
        "pve-node" => check_re(
            &NODE,
            v,
            fixed("value does not look like a valid node name"),
        ),
        "storage-pair" => check_id_pair(v, "pve-storage-id"),
        "bridge-pair" => check_id_pair(v, "pve-bridge-id"),
        "mac-addr" => check_re(
            &MAC_ADDR,
            v,
            fixed("value does not look like a valid unicast MAC address"),
        ),
        "mac-prefix" => check_re(
            &MAC_PREFIX,
            v,
            fixed("value is not a valid unicast MAC address prefix"),
        ),
        "ipv4" => check_re(
            &IPV4,
            v,
            fixed("value does not look like a valid IPv4 address"),
        ),
        "ipv6" => check_re(
            &IPV6,
            v,
            fixed("value does not look like a valid IPv6 address"),
        ),
        "ip" => bool_check(is_ip(v), "value does not look like a valid IP address"),
        "ldap-simple-attr" => check_re(&LDAP_ATTR, v, || {
            format!("value '{v}' does not look like a simple ldap attribute name")
        }),
        "ipv4mask" => bool_check(
            ipv4_mask_bits(v).is_some(),
            "value does not look like a valid IP netmask",
        ),
        "CIDRv6" => bool_check(
            cidr_ok(&CIDRV6, v, 128),
            "value does not look like a valid IPv6 CIDR network",
        ),
        "CIDRv4" => bool_check(
            cidr_ok(&CIDRV4, v, 32),
            "value does not look like a valid IPv4 CIDR network",
        ),
        "CIDR" => bool_check(is_cidr(v), "value does not look like a valid CIDR network"),
        "pve-ipv4-config" => bool_check(
            matches!(v, "dhcp" | "manual") || cidr_ok(&CIDRV4, v, 32),
            "value does not look like a valid ipv4 network configuration",
        ),
        "pve-ipv6-config" => bool_check(
            matches!(v, "auto" | "dhcp" | "manual") || cidr_ok(&CIDRV6, v, 128),
            "value does not look like a valid ipv6 network configuration",
        ),
        "email" => check_re(
            &EMAIL,
            v,
            fixed("value does not look like a valid email address"),
        ),
        "email-or-username" => bool_check(
            EMAIL.is_match(v) || EMAIL_USER.is_match(v),
            "value does not look like a valid email address or user name",
        ),
        "dns-name" => check_re(
            &DNS_NAME,
            v,
            fixed("value does not look like a valid DNS name"),
        ),
        "pve-iface" => check_re(&IFACE, v, || {
            format!("invalid network interface name '{v}'")
        }),
        "pve-vlan-id-or-range" => check_vlan_range(v),
        "address" => bool_check(is_ip(v) || DNS_NAME.is_match(v), "")
            .map_err(|_| format!("value does not look like a valid address: {v}")),
        "disk-size" => bool_check(parse_size(v).is_some(), "")
            .map_err(|_| format!("value does not look like a valid disk size: {v}")),
        "pve-startup-order" => bool_check(
            parse_startup_order(v).is_some(),
            "unable to parse startup options",
        ),
        "pve-tag" => check_re(&TAG, v, fixed("invalid characters in tag")),
        "pve-tfa-secret" => check_tfa_secret(v),
        "pve-task-status-type" => bool_check(
            matches!(
                v.to_ascii_lowercase().as_str(),
                "ok" | "error" | "warning" | "unknown"
            ),
            "",
        )
        .map_err(|_| format!("invalid status '{v}'")),
        "pve-calendar-event" => {
            calendar::check(v).map_err(|e| format!("invalid calendar event '{v}' - {e}"))
        }
        "pem-string" => check_pem(v, None),
        "pem-certificate" => check_pem(v, Some("CERTIFICATE")),
        "pem-certificate-chain" => check_pem_chain(v),
        // pve-access-control
        "pve-realm" => check_re(&REALM, v, fixed("value does not look like a valid realm")),
        "pve-userid" => check_userid(v),
        "pve-tokenid" => check_re(&TOKENID, v, || {
            format!("value '{v}' does not look like a valid token ID")
        }),
        "pve-groupid" => check_re(&GROUPID, v, || {
            format!("group name '{v}' contains invalid characters")
        }),
        "pve-roleid" => check_re(&GROUPID, v, || {
            format!("role name '{v}' contains invalid characters")
        }),
        "pve-poolid" => check_poolid(v),
        "pve-priv" => {
            bool_check(PRIVILEGES.contains(&v), "").map_err(|_| format!("invalid privilege '{v}'"))
        }
        // pve-storage
        "pve-storage-path" => check_abs_path(v, &[';', '(', ')'])
            .map_err(|_| "value does not look like a valid absolute path".to_string()),
        "pve-storage-path-in-property-string" => check_abs_path(v, &[';', ',', '=', '(', ')'])
            .map_err(|_| {
                "Value does not look like a valid absolute path. These symbols are currently \
                 not allowed in path: ;,=()"
                    .to_string()
            }),
        "pve-storage-server" => bool_check(
            is_ip(v) || DNS_NAME.is_match(v),
            "value does not look like a valid server name or IP address",
        ),
        "pve-storage-vgname" => check_re(&STORAGE_ID_LOOSE, v, || {
            format!("lvm name '{v}' contains illegal characters")
        }),
        "pve-storage-portal-dns" => check_re(
            &HOST_PORT,
            v,
            fixed("value does not look like a valid portal address"),
        ),
        "pve-storage-content" => {
            bool_check(is_content_type(v), "").map_err(|_| format!("invalid content type '{v}'"))
        }
        "pve-storage-format" => bool_check(matches!(v, "raw" | "qcow2" | "vmdk" | "subvol"), "")
            .map_err(|_| format!("invalid format '{v}'")),
        "pve-storage-options" => bool_check(!v.is_empty() && !v.contains(char::is_whitespace), "")
            .map_err(|_| format!("invalid options '{v}'")),
        "pve-volume-id" => check_re(&VOLUME_ID, v, || format!("unable to parse volume ID '{v}'")),
        "pve-volume-id-or-absolute-path" => {
            if v.starts_with('/') {
                Ok(())
            } else {
                check_format("pve-volume-id", v)
            }
        }
        "pve-volume-id-or-qm-path" => {
            if matches!(v, "none" | "cdrom") || v.starts_with('/') {
                Ok(())
            } else {
                check_format("pve-volume-id", v)
            }
        }
        "pve-dir-override" => check_dir_override(v),
        "pve-storage-zfs-blocksize" => Ok(()),
        // pve-network
        "pve-sdn-zone-id" => check_sdn_id(v, "zone", Some(8)),
        "pve-sdn-vnet-id" => check_sdn_id(v, "vnet", Some(8)),
        "pve-sdn-dns-id" => check_sdn_id(v, "dns", None),
        "pve-sdn-ipam-id" => check_sdn_id(v, "ipam", None),
        "pve-sdn-controller-id" => check_re(&SDN_CONTROLLER_ID, v, || {
            format!("controller ID '{v}' contains illegal characters")
        })
        .and_then(|()| {
            bool_check(v.chars().count() <= 64, "")
                .map_err(|_| format!("controller ID '{v}' can't be more length than 64 characters"))
        }),
        "pve-sdn-fabric-id" => check_re(&SDN_FABRIC_ID, v, || {
            format!("Fabric ID '{v}' contains illegal characters")
        }),
        "pve-sdn-subnet-id" => check_subnet_id(v),
        "pve-sdn-isis-net" => check_re(
            &ISIS_NET,
            v,
            fixed("value does not look like a valid isis net"),
        ),
        "pve-sdn-bgp-rt" => check_bgp_rt(v),
        "pve-sdn-vlanrange" | "pve-sdn-vxlanrange" => check_number_ranges(v),
        // pve-firewall
        "IPorCIDR" => check_ip_or_cidr(v),
        "IPorCIDRorAlias" => {
            if ALIAS.is_match(v) {
                Ok(())
            } else {
                check_ip_or_cidr(v)
            }
        }
        "pve-fw-conntrack-helper" => firewall::check_conntrack_helper(v),
        "pve-fw-sport-spec" => firewall::check_ports(v, false),
        "pve-fw-dport-spec" => firewall::check_ports(v, true),
        "pve-fw-addr-spec" => firewall::check_address_list(v),
        "pve-fw-protocol-spec" => firewall::check_protocol(v),
        "pve-fw-icmp-type-spec" => firewall::check_icmp_type(v),
        // pve-guest-common, pve-ha-manager, pve-manager, qemu-server, pve-container
        "pve-replication-job-id" => check_replication_job_id(v),
        "pve-ha-resource-id" => check_re(&HA_RESOURCE, v, fixed(HA_RESOURCE_MSG)),
        "pve-ha-resource-or-vm-id" => check_re(&HA_RESOURCE_OR_VMID, v, fixed(HA_RESOURCE_MSG)),
        "pve-ha-node" => check_re(
            &HA_NODE,
            v,
            fixed("value does not look like a valid ha node"),
        ),
        "pve-day-of-week" => bool_check(
            matches!(v, "mon" | "tue" | "wed" | "thu" | "fri" | "sat" | "sun"),
            "",
        )
        .map_err(|_| format!("invalid day '{v}'")),
        "pve-acme-domain" => check_re(&ACME_DOMAIN, v, || {
            format!("value '{v}' does not look like a valid domain name!")
        }),
        "pve-acme-alias" => check_re(&ACME_ALIAS, v, || {
            format!("value '{v}' does not look like a valid alias name!")
        }),
        "graphite-path" => check_re(
            &DNS_NAME,
            v,
            fixed("value does not look like a valid graphite path"),
        ),
        "pve-cpuset" => check_cpuset(v),
        "pve-hotplug-features" => check_hotplug(v),
        "pve-qm-bootdisk" | "pve-qm-bootdev" => {
            check_re(&DRIVE_NAME, v, || format!("invalid boot disk '{v}'"))
        }
        "pve-phys-bits" => check_phys_bits(v),
        "lxc-ip-with-ll-iface" => check_ip_with_ll_iface(v),
        "pve-lxc-mp-string" => check_lxc_mp(v),
        "pve-lxc-dev-string" => check_lxc_dev(v),
        _ => return None,
    };
    Some(r)
}

static_re!(STORAGE_ID_LOOSE, r"(?i)[a-z0-9][a-z0-9\-_.]*[a-z0-9]");
static_re!(HA_RESOURCE, r"[a-z]+:\S+");
static_re!(HA_RESOURCE_OR_VMID, r"[a-z]+:\S+|\d+");
static_re!(
    DRIVE_NAME,
    r"ide[0-3]|sata[0-5]|scsi(?:[0-9]|[12][0-9]|30)|virtio(?:[0-9]|1[0-5])|efidisk0|tpmstate0"
);
const HA_RESOURCE_MSG: &str = "value does not look like a valid ha resource id";

fn bool_check(ok: bool, msg: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(msg.to_string())
    }
}

fn is_cidr(v: &str) -> bool {
    cidr_ok(&CIDRV4, v, 32) || cidr_ok(&CIDRV6, v, 128)
}

/// Prefix length of a dotted IPv4 netmask.
pub fn ipv4_mask_bits(mask: &str) -> Option<u32> {
    if !IPV4.is_match(mask) {
        return None;
    }
    let bits = mask.split('.').try_fold(0u32, |acc, o| {
        o.parse::<u8>().ok().map(|o| acc << 8 | u32::from(o))
    })?;
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones)
}

fn check_vlan_range(v: &str) -> Result<(), String> {
    static VLAN: LazyLock<Regex> = LazyLock::new(|| re(r"(\d+)(?:-(\d+))?"));
    let caps = VLAN
        .captures(v)
        .ok_or_else(|| format!("invalid VLAN configuration '{v}'"))?;
    let tag = |i: usize| -> Result<Option<u64>, String> {
        let Some(m) = caps.get(i) else {
            return Ok(None);
        };
        let n: u64 = m.as_str().parse().unwrap_or(u64::MAX);
        if !(2..=4094).contains(&n) {
            return Err(format!("invalid VLAN tag '{}'", m.as_str()));
        }
        Ok(Some(n))
    };
    let start = tag(1)?.unwrap_or(0);
    if let Some(end) = tag(2)? {
        if start >= end {
            return Err(format!("VLAN range must go from lower to higher tag '{v}'"));
        }
    }
    Ok(())
}

/// Parses `[[order=]N][,up=N][,down=N]`; `None` if malformed or empty.
pub fn parse_startup_order(v: &str) -> Option<Map<String, Value>> {
    if v.is_empty() || v == "0" {
        return None;
    }
    let mut res = Map::new();
    for part in v.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        let (key, num) = match part.split_once('=') {
            None => ("order", part),
            Some((k @ ("order" | "up" | "down"), n)) => (k, n),
            Some(_) => return None,
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        res.insert(key.into(), Value::from(num.parse::<u64>().ok()?));
    }
    Some(res)
}

fn check_tfa_secret(v: &str) -> Result<(), String> {
    static V2_HEX: LazyLock<Regex> = LazyLock::new(|| re(r"v2-0x[0-9a-fA-F]{16,128}"));
    static V2_B32: LazyLock<Regex> = LazyLock::new(|| re(r"v2-[A-Z2-7=]{16,128}"));
    static OLD: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Z2-7=]{16}|[A-Fa-f0-9]{40}"));
    bool_check(
        V2_HEX.is_match(v) || V2_B32.is_match(v) || OLD.is_match(v),
        "unable to decode TFA secret",
    )
}

/// Upstream's `check_pem`: text before the first `-----BEGIN` is ignored.
fn pem_block_re(label: Option<&str>) -> String {
    let label = label.unwrap_or(".*?");
    format!(
        r"-----BEGIN {label}-----(?:\r?\n)(?:[A-Za-z0-9+/=]+(?:\r?\n))*?[A-Za-z0-9+/=]*(?:\r?\n)?-----END {label}-----"
    )
}

fn strip_leading_text(v: &str) -> &str {
    v.find("-----BEGIN").map_or(v, |i| &v[i..])
}

fn check_pem(v: &str, label: Option<&str>) -> Result<(), String> {
    let regex =
        Regex::new(&format!("^(?s:{})\n*$", pem_block_re(label))).map_err(|e| e.to_string())?;
    bool_check(
        regex.is_match(strip_leading_text(v)),
        "not a valid PEM-formatted string.",
    )
}

fn check_pem_chain(v: &str) -> Result<(), String> {
    static CHAIN: LazyLock<Result<Regex, regex::Error>> = LazyLock::new(|| {
        let block = pem_block_re(Some("CERTIFICATE"));
        Regex::new(&format!("^(?:{block}\n+)*{block}\n*$"))
    });
    let ok = CHAIN
        .as_ref()
        .is_ok_and(|r| r.is_match(strip_leading_text(v)));
    bool_check(ok, "not a valid PEM-formatted string.")
}

fn check_userid(v: &str) -> Result<(), String> {
    let len = v.chars().count();
    if len < 3 {
        return Err(format!("user name '{v}' is too short"));
    }
    if len > 64 {
        return Err(format!("user name '{v}' is too long ({len} > 64)"));
    }
    check_re(&USERID, v, || {
        format!("value '{v}' does not look like a valid user name")
    })
}

fn check_poolid(v: &str) -> Result<(), String> {
    if v.split('/').count() > 3 {
        return Err(format!(
            "pool name '{v}' nested too deeply (max levels = 3)"
        ));
    }
    check_re(&POOLID, v, || {
        format!("pool name '{v}' contains invalid characters")
    })
}

fn check_abs_path(v: &str, forbidden: &[char]) -> Result<(), ()> {
    // Upstream's regex is anchored at the start only: `/` and one more
    // allowed character suffice.
    let mut chars = v.chars();
    let ok = chars.next() == Some('/') && chars.next().is_some_and(|c| !forbidden.contains(&c));
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

/// Content types a storage may hold (`dir` supports all) plus `import`.
const CONTENT_TYPES: &[&str] = &[
    "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import",
];

fn is_content_type(v: &str) -> bool {
    CONTENT_TYPES.contains(&v)
}

fn check_dir_override(v: &str) -> Result<(), String> {
    let err = || format!("invalid override '{v}'");
    let (ct, path) = v.split_once('=').ok_or_else(err)?;
    let ok = !ct.is_empty()
        && ct.bytes().all(|b| b.is_ascii_lowercase())
        && is_content_type(ct)
        && !path.is_empty()
        && !path.ends_with('.')
        && path.chars().count() < 1023
        && path.split('/').all(|p| p.len() < 255);
    bool_check(ok, "").map_err(|_| err())
}

fn check_sdn_id(v: &str, kind: &str, max: Option<usize>) -> Result<(), String> {
    check_re(&SDN_ID, v, || {
        format!("{kind} ID '{v}' contains illegal characters")
    })?;
    match max {
        Some(max) if v.chars().count() > max => Err(format!(
            "{kind} ID '{v}' can't be more length than {max} characters"
        )),
        _ => Ok(()),
    }
}

fn check_subnet_id(v: &str) -> Result<(), String> {
    let cidr = if v.contains('/') {
        v.to_string()
    } else {
        let mut parts = v.split('-');
        let (_zone, ip, mask) = (parts.next(), parts.next(), parts.next());
        format!("{}/{}", ip.unwrap_or(""), mask.unwrap_or(""))
    };
    bool_check(
        is_cidr(&cidr),
        "value does not look like a valid CIDR network",
    )
}

fn check_bgp_rt(v: &str) -> Result<(), String> {
    let msg = "value does not look like a valid bgp route-target";
    let (asn, id) = v.split_once(':').ok_or_else(|| msg.to_string())?;
    let num_ok = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<u64>().is_ok_and(|n| n <= u64::from(u32::MAX))
    };
    bool_check(num_ok(asn) && num_ok(id), msg)
}

fn check_number_ranges(v: &str) -> Result<(), String> {
    for part in v.split(',') {
        let ok = match part.split_once('-') {
            Some((a, b)) => a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok(),
            None => part.parse::<u32>().is_ok(),
        };
        if !ok {
            return Err(format!("invalid range '{part}'"));
        }
    }
    Ok(())
}

fn check_ip_or_cidr(v: &str) -> Result<(), String> {
    if !IP_OR_CIDR.is_match(v) {
        return Err("value does not look like a valid IP address or CIDR network".into());
    }
    if let Some((ip, len)) = v.split_once('/') {
        let max = if IPV4.is_match(ip) { 32 } else { 128 };
        match len.parse::<u32>() {
            Ok(n) if n <= max => {}
            _ => return Err(format!("Invalid prefix length /{len}")),
        }
    }
    Ok(())
}

fn check_replication_job_id(v: &str) -> Result<(), String> {
    let msg = format!("invalid replication job id '{v}'");
    let (guest, job) = v.split_once('-').ok_or_else(|| msg.clone())?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(guest) || !digits(job) {
        return Err(msg);
    }
    let guest_num = guest.trim_start_matches('0');
    if guest_num.len() < 3 {
        return Err(format!("{msg} (guest IDs < 100 are reserved)"));
    }
    Ok(())
}

fn check_cpuset(v: &str) -> Result<(), String> {
    let err = || "unable to parse cpuset option".to_string();
    for part in v.split(',') {
        let part = part.trim();
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let (from, to) = (from.trim(), to.trim());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(from) || !digits(to) {
            return Err(err());
        }
        let (a, b) = (from.parse::<u64>(), to.parse::<u64>());
        if !matches!((a, b), (Ok(a), Ok(b)) if a <= b) {
            return Err(err());
        }
    }
    Ok(())
}

fn check_hotplug(v: &str) -> Result<(), String> {
    if v == "0" || v == "1" {
        return Ok(());
    }
    for feature in split_list(v) {
        if !matches!(
            feature,
            "network" | "disk" | "cpu" | "memory" | "usb" | "cloudinit"
        ) {
            return Err(format!("invalid hotplug feature '{feature}'"));
        }
    }
    Ok(())
}

fn check_phys_bits(v: &str) -> Result<(), String> {
    if v == "host" {
        return Ok(());
    }
    match v.parse::<u32>() {
        Ok(n) if (32..=64).contains(&n) => Ok(()),
        _ => Err(format!("invalid phys-bits value '{v}'")),
    }
}

fn check_ip_with_ll_iface(v: &str) -> Result<(), String> {
    if let Some((addr, iface)) = v.split_once('%') {
        if addr.starts_with("fe80:") && is_ip(addr) && IFACE.is_match(iface) {
            return Ok(());
        }
    }
    bool_check(is_ip(v), "value does not look like a valid IP address")
}

fn check_lxc_mp(v: &str) -> Result<(), String> {
    let bad = v.contains("/./")
        || v.contains("/../")
        || v.ends_with("/.")
        || v.ends_with("/..")
        || v.starts_with("../");
    bool_check(!bad, "").map_err(|_| format!("{v} contains illegal character sequences"))
}

fn check_lxc_dev(v: &str) -> Result<(), String> {
    let bad = v.contains("/./")
        || v.contains("/../")
        || v.ends_with("/.")
        || v.ends_with("/..")
        || !v.starts_with("/dev/");
    bool_check(!bad, "").map_err(|_| format!("{v} is not a valid device path"))
}

/// Validators attached to named property-string formats, run on the parsed
/// value as upstream runs `$format_validators`.
fn named_format_validator(name: &str, parsed: &Map<String, Value>) -> Result<(), String> {
    let positive = |v: &Value| v.as_f64().is_some_and(|n| n > 0.0);
    match name {
        "backup-fleecing"
            if parsed.get("enabled").and_then(Value::as_bool) == Some(true)
                && !parsed.contains_key("storage") =>
        {
            Err("'storage' parameter is required when 'enabled' is set".into())
        }
        "prune-backups"
            if parsed.get("keep-all").and_then(Value::as_bool) == Some(true)
                && parsed.iter().any(|(k, v)| k != "keep-all" && positive(v)) =>
        {
            Err("keep-all cannot be set together with other options.".into())
        }
        _ => Ok(()),
    }
}

static NAMED_PROPERTY_FORMATS: LazyLock<HashMap<&'static str, Map<String, Value>>> = LazyLock::new(
    || {
        let bwlimit = json!({"optional": 1, "type": "number", "minimum": 0});
        let prune = json!({"optional": 1, "type": "integer", "minimum": 0});
        let formats = [
            (
                "realm-sync-options",
                json!({
                    "scope": {"type": "string", "enum": ["users", "groups", "both"], "optional": 1},
                    "remove-vanished": {"type": "string", "optional": 1,
                        "pattern": "(?:(?:(?:acl|properties|entry);)*(?:acl|properties|entry))|none"},
                    "full": {"type": "boolean", "optional": 1},
                    "enable-new": {"type": "boolean", "optional": 1},
                    "purge": {"type": "boolean", "optional": 1},
                }),
            ),
            (
                "pve-tfa-config",
                json!({
                    "type": {"type": "string", "enum": ["yubico", "oath"]},
                    "id": {"type": "string", "optional": 1},
                    "key": {"type": "string", "optional": 1},
                    "url": {"type": "string", "optional": 1},
                    "digits": {"type": "integer", "minimum": 6, "maximum": 8, "optional": 1},
                    "step": {"type": "integer", "minimum": 10, "optional": 1},
                }),
            ),
            (
                "pve-sdn-dhcp-range",
                json!({
                    "start-address": {"type": "ip"},
                    "end-address": {"type": "ip"},
                }),
            ),
            (
                "proxmox-remote",
                json!({
                    "host": {"type": "string"},
                    "port": {"type": "integer", "optional": 1},
                    "apitoken": {"type": "string"},
                    "fingerprint": {"type": "string", "optional": 1,
                        "pattern": "([A-Fa-f0-9]{2}:){31}[A-Fa-f0-9]{2}"},
                }),
            ),
            (
                "bwlimit",
                json!({"default": bwlimit, "restore": bwlimit, "migration": bwlimit,
                       "clone": bwlimit, "move": bwlimit}),
            ),
            (
                "backup-fleecing",
                json!({
                    "enabled": {"type": "boolean", "optional": 1, "default_key": 1},
                    "storage": {"type": "string", "format": "pve-storage-id", "optional": 1},
                }),
            ),
            (
                "backup-performance",
                json!({
                    "max-workers": {"type": "integer", "minimum": 1, "maximum": 256, "optional": 1},
                    "pbs-entries-max": {"type": "integer", "minimum": 1, "optional": 1},
                }),
            ),
            (
                "prune-backups",
                json!({
                    "keep-all": {"type": "boolean", "optional": 1},
                    "keep-last": prune, "keep-hourly": prune, "keep-daily": prune,
                    "keep-weekly": prune, "keep-monthly": prune, "keep-yearly": prune,
                }),
            ),
        ];
        formats
            .into_iter()
            .filter_map(|(name, schema)| match schema {
                Value::Object(map) => Some((name, map)),
                _ => None,
            })
            .collect()
    },
);

mod calendar;

mod firewall;
