//! The host end of a container NIC, set up by LXC's `script.up` hook (as
//! upstream's `lxcnetaddbr`): attached to its bridge, VLAN tag and trunks
//! on a VLAN-aware bridge, rate limit. It runs in the monitor's network
//! namespace — the node's — and uses netlink through `ip`, `bridge` and
//! `tc`, which need no view of another namespace's `/sys`.

use crate::error::LxcError;
use crate::model::Net;
use std::process::Command;

/// What the hook needs to know of a NIC, as it travels on the hook's
/// command line: `<bridge> <tag|-> <trunks|-> <rate|->`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plug {
    pub bridge: String,
    pub tag: Option<u32>,
    pub trunks: Vec<u32>,
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
                .map(|t| t.split(';').filter_map(|v| v.parse().ok()).collect())
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
                .map(u32::to_string)
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
                .map(|t| {
                    t.split(',')
                        .map(|v| v.parse().map_err(|_| bad("trunk", v)))
                        .collect::<Result<Vec<u32>, _>>()
                })
                .transpose()?
                .unwrap_or_default(),
            rate: some(rate)
                .map(|r| r.parse().map_err(|_| bad("rate", &r)))
                .transpose()?,
        })
    }

    /// Attaches `veth` and applies VLANs and the rate limit.
    pub fn apply(&self, veth: &str) -> Result<(), LxcError> {
        ip(&["link", "set", "dev", veth, "master", &self.bridge]).map_err(|e| {
            LxcError::Command(format!(
                "cannot attach '{veth}' to bridge '{}': {e}",
                self.bridge
            ))
        })?;
        if self.tag.is_some() || !self.trunks.is_empty() {
            let details = run("ip", &["-d", "link", "show", "dev", &self.bridge])?;
            if !details.contains("vlan_filtering 1") {
                return Err(LxcError::Config(format!(
                    "bridge '{}' is not VLAN-aware (vlan_filtering 1): tagged container NICs need one",
                    self.bridge
                )));
            }
            run("bridge", &["vlan", "del", "dev", veth, "vid", "1"])?;
            if let Some(tag) = self.tag {
                let tag = tag.to_string();
                run(
                    "bridge",
                    &["vlan", "add", "dev", veth, "vid", &tag, "pvid", "untagged"],
                )?;
            }
            for vid in &self.trunks {
                run(
                    "bridge",
                    &["vlan", "add", "dev", veth, "vid", &vid.to_string()],
                )?;
            }
        }
        if let Some(rate) = self.rate.filter(|r| *r > 0.0) {
            // Both directions, in bytes per second as upstream's MB/s.
            let bps = format!("{}bps", (rate * 1024.0 * 1024.0) as u64);
            run(
                "tc",
                &[
                    "qdisc", "replace", "dev", veth, "root", "tbf", "rate", &bps, "burst", "1mb",
                    "latency", "50ms",
                ],
            )?;
            run(
                "tc",
                &[
                    "qdisc", "replace", "dev", veth, "handle", "ffff:", "ingress",
                ],
            )?;
            run(
                "tc",
                &[
                    "filter", "add", "dev", veth, "parent", "ffff:", "prio", "50", "basic",
                    "police", "rate", &bps, "burst", "1mb", "mtu", "64kb", "drop",
                ],
            )?;
        }
        Ok(())
    }
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
            trunks: vec![7, 8],
            rate: Some(1.5),
        };
        let args: Vec<String> = p.to_args().split(' ').map(str::to_string).collect();
        assert_eq!(args, ["vmbr0", "5", "7,8", "1.5"]);
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
}
