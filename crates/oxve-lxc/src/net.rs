//! The host end of a container NIC, set up by LXC's `script.up` hook (as
//! upstream's `lxcnetaddbr`): attached to its bridge, VLAN tag and trunks
//! on a VLAN-aware bridge or the bridge's VLAN bridge otherwise, rate
//! limit. It runs in the monitor's network
//! namespace — the node's — and uses netlink through `ip`, `bridge` and
//! `tc`, which need no view of another namespace's `/sys`.

use crate::error::LxcError;
use crate::model::Net;
use std::process::Command;

/// Parses upstream's `trunks` (`10;20-30`, here with separator `sep`):
/// VLAN ids 1-4094, ranges low to high; `None` when anything is off.
pub fn parse_trunks(text: &str, sep: char) -> Option<Vec<(u32, u32)>> {
    let vid = |v: &str| v.parse::<u32>().ok().filter(|n| (1..=4094).contains(n));
    text.split(sep)
        .map(|part| match part.split_once('-') {
            Some((lo, hi)) => Some((vid(lo)?, vid(hi)?)).filter(|(l, h)| l <= h),
            None => vid(part).map(|v| (v, v)),
        })
        .collect()
}

/// `10` or `10-20`, as `bridge vlan` takes them.
fn vid_range((lo, hi): (u32, u32)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// What the hook needs to know of a NIC, as it travels on the hook's
/// command line: `<bridge> <tag|-> <trunks|-> <rate|->`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plug {
    pub bridge: String,
    pub tag: Option<u32>,
    /// VLAN ranges (`10-20`; a single VLAN is a range of one).
    pub trunks: Vec<(u32, u32)>,
    /// MB/s, as upstream's `rate`.
    pub rate: Option<f64>,
}

impl Plug {
    /// The plug of a NIC with a bridge.
    pub fn of(net: &Net) -> Option<Plug> {
        Some(Plug {
            bridge: net.bridge.clone()?,
            tag: net.tag,
            trunks: net
                .trunks
                .as_deref()
                .and_then(|t| parse_trunks(t, ';'))
                .unwrap_or_default(),
            rate: net.rate,
        })
    }

    /// The hook arguments (no spaces or shell characters inside).
    pub fn to_args(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let trunks = (!self.trunks.is_empty()).then(|| {
            self.trunks
                .iter()
                .map(|r| vid_range(*r))
                .collect::<Vec<_>>()
                .join(",")
        });
        format!(
            "{} {} {} {}",
            self.bridge,
            opt(self.tag.map(|t| t.to_string())),
            opt(trunks),
            opt(self.rate.map(|r| r.to_string()))
        )
    }

    /// Parses the four hook arguments.
    pub fn from_args(args: &[String]) -> Result<Plug, LxcError> {
        let [bridge, tag, trunks, rate] = args else {
            return Err(LxcError::Config(
                "net-up hook: expected <bridge> <tag> <trunks> <rate>".into(),
            ));
        };
        let some = |v: &String| (v != "-").then(|| v.clone());
        let bad = |what: &str, v: &str| LxcError::Config(format!("net-up hook: bad {what} '{v}'"));
        Ok(Plug {
            bridge: bridge.clone(),
            tag: some(tag)
                .map(|t| t.parse().map_err(|_| bad("tag", &t)))
                .transpose()?,
            trunks: some(trunks)
                .map(|t| parse_trunks(&t, ',').ok_or_else(|| bad("trunks", &t)))
                .transpose()?
                .unwrap_or_default(),
            rate: some(rate)
                .map(|r| r.parse().map_err(|_| bad("rate", &r)))
                .transpose()?,
        })
    }

    /// Attaches `veth` and applies VLANs and the rate limit, as upstream's
    /// `tap_plug`: on a VLAN-aware bridge the tag and trunks are port
    /// VLANs; on any other bridge a tag puts the NIC on the bridge's
    /// VLAN bridge (`vmbr0v5`), made on first use.
    pub fn apply(&self, veth: &str) -> Result<(), LxcError> {
        let details = run("ip", &["-d", "link", "show", "dev", &self.bridge])
            .map_err(|e| LxcError::Command(format!("bridge '{}': {e}", self.bridge)))?;
        let vlan_aware = details.contains("vlan_filtering 1");
        let mtu = link_mtu(&details);
        let bridge = if vlan_aware {
            self.bridge.clone()
        } else if !self.trunks.is_empty() {
            return Err(LxcError::Config(format!(
                "bridge '{}' is not VLAN-aware (vlan_filtering 1): trunks need one",
                self.bridge
            )));
        } else if let Some(tag) = self.tag {
            vlan_bridge(&self.bridge, tag, mtu)?
        } else {
            self.bridge.clone()
        };
        // The host end takes the bridge's MTU, as upstream's hook does.
        if let Some(mtu) = mtu {
            ip(&["link", "set", "dev", veth, "mtu", &mtu.to_string()])?;
        }
        disable_ipv6(veth);
        ip(&["link", "set", "dev", veth, "master", &bridge]).map_err(|e| {
            LxcError::Command(format!("cannot attach '{veth}' to bridge '{bridge}': {e}"))
        })?;
        if vlan_aware {
            run_each("bridge", self.vlan_commands(veth))?;
        }
        run_each("tc", rate_commands(veth, self.rate))
    }

    /// The `bridge vlan` commands for a port of a VLAN-aware bridge, as
    /// upstream's `tap_plug`: no default VLAN; the trunks (or, without a
    /// tag, every VLAN 2-4094) tagged; the tag (default 1) as the
    /// untagged port VLAN.
    fn vlan_commands(&self, veth: &str) -> Vec<Vec<String>> {
        let add = |vid: &str, untagged: bool| {
            let mut c = strings(&["vlan", "add", "dev", veth, "vid", vid]);
            if untagged {
                c.extend(strings(&["pvid", "untagged"]));
            }
            c
        };
        let mut cmds = vec![strings(&["vlan", "del", "dev", veth, "vid", "1-4094"])];
        if !self.trunks.is_empty() {
            cmds.extend(self.trunks.iter().map(|r| add(&vid_range(*r), false)));
        } else if self.tag.is_none() {
            cmds.push(add("2-4094", false));
        }
        cmds.push(add(&self.tag.unwrap_or(1).to_string(), true));
        cmds
    }
}

/// A link as `ip -details -json link show` describes it.
#[derive(Debug, serde::Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    link_type: String,
    master: Option<String>,
    linkinfo: Option<LinkInfo>,
}

#[derive(Debug, serde::Deserialize)]
struct LinkInfo {
    info_kind: Option<String>,
}

impl Link {
    /// Whether the link leads out of the node, as upstream's
    /// `get_physical_bridge_ports` counts them: a NIC (no link kind), a
    /// bond or a VLAN device.
    fn is_uplink(&self) -> bool {
        let kind = self.linkinfo.as_ref().and_then(|i| i.info_kind.as_deref());
        self.link_type == "ether" && matches!(kind, None | Some("bond") | Some("vlan"))
    }
}

/// The uplinks of `bridge` among `links`, sorted by name.
fn uplinks<'a>(links: &'a [Link], bridge: &str) -> Vec<&'a str> {
    let mut ports: Vec<&str> = links
        .iter()
        .filter(|l| l.master.as_deref() == Some(bridge) && l.is_uplink())
        .map(|l| l.ifname.as_str())
        .collect();
    ports.sort_unstable();
    ports
}

/// The VLAN bridge for `tag` on a bridge that is not VLAN-aware, made or
/// completed as upstream's `activate_bridge_vlan` does: `<bridge>v<tag>`
/// with the MTU of `bridge`, whose ports are VLAN devices
/// `<uplink>.<tag>` of each of the bridge's uplinks. Containers starting
/// at the same time may race to create them: "exists" is success.
fn vlan_bridge(bridge: &str, tag: u32, mtu: Option<u32>) -> Result<String, LxcError> {
    if !(1..=4094).contains(&tag) {
        return Err(LxcError::Config(format!("bad VLAN tag '{tag}'")));
    }
    let name = check_ifname(format!("{bridge}v{tag}"))?;
    let links: Vec<Link> = serde_json::from_str(&run("ip", &["-d", "-j", "link", "show"])?)
        .map_err(|e| LxcError::Command(format!("cannot parse 'ip -j link show': {e}")))?;
    let ports = uplinks(&links, bridge);
    if ports.is_empty() {
        return Err(LxcError::Config(format!(
            "no physical interface on bridge '{bridge}' for VLAN {tag} \
             (or make the bridge VLAN-aware)"
        )));
    }
    if !links.iter().any(|l| l.ifname == name) {
        create_link(&["link", "add", &name, "type", "bridge"])?;
    }
    if let Some(mtu) = mtu {
        ip(&["link", "set", "dev", &name, "mtu", &mtu.to_string()])?;
    }
    for port in ports {
        let vlan = check_ifname(format!("{port}.{tag}"))?;
        match links.iter().find(|l| l.ifname == vlan) {
            None => {
                let id = tag.to_string();
                create_link(&[
                    "link", "add", "link", port, "name", &vlan, "type", "vlan", "id", &id,
                ])?;
                disable_ipv6(&vlan);
            }
            Some(Link {
                master: Some(other),
                ..
            }) if *other != name => {
                return Err(LxcError::Config(format!(
                    "interface '{vlan}' already exists in bridge '{other}'"
                )))
            }
            Some(_) => {}
        }
        ip(&["link", "set", "dev", &vlan, "up"])?;
        ip(&["link", "set", "dev", &vlan, "master", &name])?;
    }
    disable_ipv6(&name);
    ip(&["link", "set", "dev", &name, "up"])?;
    Ok(name)
}

/// Runs `ip ARGS` that create a link; one that exists already is fine.
fn create_link(args: &[&str]) -> Result<(), LxcError> {
    match ip(args) {
        Err(LxcError::Command(e)) if e.contains("File exists") => Ok(()),
        other => other.map(drop),
    }
}

/// Interface names have at most 15 bytes (IFNAMSIZ).
fn check_ifname(name: String) -> Result<String, LxcError> {
    if name.len() > 15 {
        return Err(LxcError::Config(format!(
            "the interface name '{name}' is too long (max 15 characters)"
        )));
    }
    Ok(name)
}

/// No IPv6 link-local address on a bridge port (upstream does the same);
/// where IPv6 is off there is nothing to do.
fn disable_ipv6(ifname: &str) {
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        "1",
    );
}

/// The `tc` commands that limit a NIC's host end to `rate` MB/s in both
/// directions, as upstream's `tap_rate_limit`: an htb class for what the
/// container receives, an ingress policer for what it sends, each with a
/// burst of 1 MiB.
fn rate_commands(veth: &str, rate: Option<f64>) -> Vec<Vec<String>> {
    let Some(rate) = rate.filter(|r| *r > 0.0) else {
        return Vec::new();
    };
    let bps = format!("{}bps", (rate * 1024.0 * 1024.0) as u64);
    let burst = format!("{}b", 1024 * 1024);
    vec![
        strings(&[
            "qdisc", "replace", "dev", veth, "root", "handle", "1:", "htb", "default", "1",
        ]),
        strings(&[
            "class", "replace", "dev", veth, "parent", "1:", "classid", "1:1", "htb", "rate", &bps,
            "burst", &burst,
        ]),
        strings(&[
            "qdisc", "replace", "dev", veth, "handle", "ffff:", "ingress",
        ]),
        strings(&[
            "filter", "add", "dev", veth, "parent", "ffff:", "prio", "50", "basic", "police",
            "rate", &bps, "burst", &burst, "mtu", "64kb", "drop",
        ]),
    ]
}

/// The `mtu` of `ip link show` output.
fn link_mtu(details: &str) -> Option<u32> {
    let mut words = details.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn run_each(tool: &str, commands: Vec<Vec<String>>) -> Result<(), LxcError> {
    for args in &commands {
        run(tool, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<String, LxcError> {
    run("ip", args)
}

fn run(tool: &str, args: &[&str]) -> Result<String, LxcError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| LxcError::Command(format!("cannot run '{tool}': {e}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(LxcError::Command(format!(
        "{tool} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_args_round_trip() {
        let p = Plug {
            bridge: "vmbr0".into(),
            tag: Some(5),
            trunks: vec![(7, 7), (8, 12)],
            rate: Some(1.5),
        };
        let args: Vec<String> = p.to_args().split(' ').map(str::to_string).collect();
        assert_eq!(args, ["vmbr0", "5", "7,8-12", "1.5"]);
        assert_eq!(Plug::from_args(&args).unwrap(), p);
        let bare = Plug {
            bridge: "br".into(),
            tag: None,
            trunks: vec![],
            rate: None,
        };
        let args: Vec<String> = bare.to_args().split(' ').map(str::to_string).collect();
        assert_eq!(Plug::from_args(&args).unwrap(), bare);
    }

    #[test]
    fn trunk_ranges() {
        assert_eq!(
            parse_trunks("10;20-22;4094", ';'),
            Some(vec![(10, 10), (20, 22), (4094, 4094)])
        );
        assert_eq!(parse_trunks("10,11", ','), Some(vec![(10, 10), (11, 11)]));
        for bad in ["", "0", "4095", "20-10", "a", "10;"] {
            assert_eq!(parse_trunks(bad, ';'), None, "{bad}");
        }
        let p = Plug {
            bridge: "vmbr0".into(),
            tag: None,
            trunks: vec![(10, 20), (30, 30)],
            rate: None,
        };
        assert_eq!(
            lines(p.vlan_commands("tap1i0")),
            [
                "vlan del dev tap1i0 vid 1-4094",
                "vlan add dev tap1i0 vid 10-20",
                "vlan add dev tap1i0 vid 30",
                "vlan add dev tap1i0 vid 1 pvid untagged"
            ]
        );
    }

    fn lines(cmds: Vec<Vec<String>>) -> Vec<String> {
        cmds.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn vlan_ports_as_upstream() {
        let plug = |tag, trunks: &[u32]| Plug {
            bridge: "vmbr0".into(),
            tag,
            trunks: trunks.iter().map(|v| (*v, *v)).collect(),
            rate: None,
        };
        assert_eq!(
            lines(plug(Some(10), &[]).vlan_commands("veth1i0")),
            [
                "vlan del dev veth1i0 vid 1-4094",
                "vlan add dev veth1i0 vid 10 pvid untagged"
            ]
        );
        // Untagged on a VLAN-aware bridge: VLAN 1 untagged, the rest tagged.
        assert_eq!(
            lines(plug(None, &[]).vlan_commands("veth1i0")),
            [
                "vlan del dev veth1i0 vid 1-4094",
                "vlan add dev veth1i0 vid 2-4094",
                "vlan add dev veth1i0 vid 1 pvid untagged"
            ]
        );
        assert_eq!(
            lines(plug(Some(5), &[7, 8]).vlan_commands("veth1i0")),
            [
                "vlan del dev veth1i0 vid 1-4094",
                "vlan add dev veth1i0 vid 7",
                "vlan add dev veth1i0 vid 8",
                "vlan add dev veth1i0 vid 5 pvid untagged"
            ]
        );
    }

    #[test]
    fn uplinks_as_upstream_counts_them() {
        let json = r#"[
            {"ifname":"lo","link_type":"loopback"},
            {"ifname":"eno1","link_type":"ether","master":"vmbr0"},
            {"ifname":"bond0","link_type":"ether","master":"vmbr1","linkinfo":{"info_kind":"bond"}},
            {"ifname":"eno2.7","link_type":"ether","master":"vmbr1","linkinfo":{"info_kind":"vlan"}},
            {"ifname":"veth100i0","link_type":"ether","master":"vmbr1","linkinfo":{"info_kind":"veth"}},
            {"ifname":"dummy0","link_type":"ether","master":"vmbr1","linkinfo":{"info_kind":"dummy"}},
            {"ifname":"vmbr1","link_type":"ether","linkinfo":{"info_kind":"bridge"}}
        ]"#;
        let links: Vec<Link> = serde_json::from_str(json).unwrap();
        assert_eq!(uplinks(&links, "vmbr0"), ["eno1"]);
        assert_eq!(uplinks(&links, "vmbr1"), ["bond0", "eno2.7"]);
        assert!(uplinks(&links, "vmbr9").is_empty());
        assert!(check_ifname("vmbr0v4094".into()).is_ok());
        assert!(check_ifname("a-long-bond0.4094".into()).is_err());
    }

    #[test]
    fn bridge_mtu() {
        let out = "7: vmbr0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 9000 qdisc noqueue state UP \
                   mode DEFAULT group default qlen 1000\n    link/ether 1a:2b brd ff:ff";
        assert_eq!(link_mtu(out), Some(9000));
        assert_eq!(link_mtu("nothing"), None);
    }

    #[test]
    fn rate_limit_as_upstream() {
        assert!(rate_commands("veth1i0", None).is_empty());
        assert!(rate_commands("veth1i0", Some(0.0)).is_empty());
        assert_eq!(
            lines(rate_commands("veth1i0", Some(1.5))),
            [
                "qdisc replace dev veth1i0 root handle 1: htb default 1",
                "class replace dev veth1i0 parent 1: classid 1:1 htb rate 1572864bps burst 1048576b",
                "qdisc replace dev veth1i0 handle ffff: ingress",
                "filter add dev veth1i0 parent ffff: prio 50 basic police rate 1572864bps \
                 burst 1048576b mtu 64kb drop"
            ]
        );
    }
}
