//! Machine types and versions: which machine a VM runs, the version that
//! gates features (`<major>.<minor>+pve<rev>`), and upstream's table of
//! `+pveN` revisions per QEMU release.

use super::props::Props;
use super::Ctx;
use crate::error::{cfg_err, CmdlineError};

/// Highest `+pveN` revision per QEMU major.minor (upstream's
/// `$PVE_MACHINE_VERSION`): 4.1 → 2 (more SCSI disks), 9.2 → 1 (S3/S4 off),
/// 10.0 → 1 (host_mtu always), 11.0 → 2 (host_tunnel off, hv_evmcs).
const PVE_MACHINE_REVISIONS: &[((u32, u32), u32)] =
    &[((4, 1), 2), ((9, 2), 1), ((10, 0), 1), ((11, 0), 2)];

/// A version as upstream compares them: major, minor, micro, `+pve` rev.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    pub pve: u32,
}

impl Version {
    /// Parses `M.m[.u][+pveN]` (trailing text is ignored, as upstream).
    pub fn parse(text: &str) -> Option<Version> {
        let (nums, pve) = match text.split_once("+pve") {
            Some((n, p)) => {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                (n, digits.parse().unwrap_or(0))
            }
            None => (text, 0),
        };
        let mut it = nums.split('.');
        let major = it.next()?.parse().ok()?;
        let minor_text: String = it
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let minor = minor_text.parse().ok()?;
        let micro = it
            .next()
            .and_then(|m| {
                m.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        Some(Version {
            major,
            minor,
            micro,
            pve,
        })
    }

    /// Upstream's `min_version`: major, minor and pve revision compared in
    /// that order (the micro version is not part of the check).
    pub fn at_least(&self, major: u32, minor: u32, pve: u32) -> bool {
        (self.major, self.minor, self.pve) >= (major, minor, pve)
    }

    /// `M.m` or `M.m+pveN` as upstream prints machine versions.
    pub fn machine_string(&self) -> String {
        if self.pve > 0 {
            format!("{}.{}+pve{}", self.major, self.minor, self.pve)
        } else {
            format!("{}.{}", self.major, self.minor)
        }
    }
}

/// The highest `+pve` revision known for `major.minor` (0 if none).
pub fn pve_revision(major: u32, minor: u32) -> u32 {
    PVE_MACHINE_REVISIONS
        .iter()
        .find(|(v, _)| *v == (major, minor))
        .map_or(0, |(_, r)| *r)
}

/// The parsed `machine` option.
#[derive(Debug, Clone, Default)]
pub struct MachineConf {
    pub kind: Option<String>,
    pub viommu: Option<String>,
    pub aw_bits: Option<String>,
    pub enable_s3: Option<bool>,
    pub enable_s4: Option<bool>,
}

impl MachineConf {
    /// Parses the `machine` config value (absent: all defaults).
    pub fn parse(value: Option<&str>) -> Result<MachineConf, CmdlineError> {
        let Some(text) = value.filter(|v| !v.is_empty()) else {
            return Ok(MachineConf::default());
        };
        let p = Props::parse(text, Some("type"))?;
        Ok(MachineConf {
            kind: p.get("type").map(str::to_string),
            viommu: p.get("viommu").map(str::to_string),
            aw_bits: p.get("aw-bits").map(str::to_string),
            enable_s3: p.flag("enable-s3"),
            enable_s4: p.flag("enable-s4"),
        })
    }

    /// Whether the configured type is a q35 one.
    pub fn is_q35(&self) -> bool {
        self.kind.as_deref().is_some_and(|t| t.contains("q35"))
    }

    /// Upstream's `assert_valid_machine_property`.
    pub fn assert_valid(&self) -> Result<(), CmdlineError> {
        if self.viommu.as_deref() == Some("intel") {
            if !self.is_q35() {
                return cfg_err("to use Intel vIOMMU please set the machine type to q35");
            }
            if let Some(bits) = self.aw_bits.as_deref() {
                if bits != "39" && bits != "48" {
                    return cfg_err("Intel vIOMMU supports only 39 or 48 bits as address width");
                }
            }
        }
        if self.aw_bits.is_some() && self.viommu.is_none() {
            return cfg_err("cannot set aw-bits if no vIOMMU is configured");
        }
        Ok(())
    }
}

/// Version parts of a versioned machine type (`pc-i440fx-5.1+pve2.pxe`).
pub fn version_parts(machine: &str) -> Option<(u32, u32, u32)> {
    let rest = ["pc-i440fx-", "pc-q35-", "pc-", "virt-"]
        .iter()
        .find_map(|p| machine.strip_prefix(p))?;
    let v = Version::parse(rest)?;
    // `M.m` must be directly at the start.
    rest.chars().next().filter(char::is_ascii_digit)?;
    Some((v.major, v.minor, v.pve))
}

/// Upstream's `extract_version`: the machine's own version, else the QEMU
/// binary's with its highest revision.
pub fn machine_version(machine: &str, qemu: Version) -> Version {
    match version_parts(machine) {
        Some((major, minor, pve)) => Version {
            major,
            minor,
            micro: 0,
            pve,
        },
        None => Version {
            major: qemu.major,
            minor: qemu.minor,
            micro: 0,
            pve: pve_revision(qemu.major, qemu.minor),
        },
    }
}

/// Whether a QEMU binary of version `qemu` can run `version`.
pub fn can_run(version: Version, qemu: Version) -> bool {
    if (qemu.major, qemu.minor) < (version.major, version.minor) {
        return false;
    }
    version.pve == 0 || pve_revision(version.major, version.minor) >= version.pve
}

/// Upstream's `windows_version` of an `ostype`.
pub fn windows_version(ostype: Option<&str>) -> u32 {
    match ostype {
        Some("wxp" | "w2k3" | "w2k") => 5,
        Some("w2k8" | "wvista") => 6,
        Some(o) => o
            .strip_prefix("win")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        None => 0,
    }
}

/// The full machine type a VM runs (`get_vm_machine`): unversioned types
/// get the binary's revision, Windows guests are pinned, and a type without
/// `+pveN` gets `+pve0`.
pub fn vm_machine(
    conf_type: Option<&str>,
    arch: &str,
    ostype: Option<&str>,
    creation_qemu: Option<&str>,
    qemu: Version,
) -> Result<String, CmdlineError> {
    let mut machine = conf_type.unwrap_or_default().to_string();
    if machine.is_empty() || matches!(machine.as_str(), "pc" | "q35" | "virt") {
        if machine.is_empty() {
            machine = default_machine(arch)?.to_string();
        }
        if windows_version(ostype) > 0 {
            let mut base = "5.1".to_string();
            if let Some(v) = creation_qemu.and_then(Version::parse) {
                if v.at_least(9, 1, 0) {
                    base = format!("{}.{}", v.major, v.minor);
                }
            }
            machine = pin_machine(&machine, &base, qemu);
        } else {
            machine = format!("{machine}+pve{}", pve_revision(qemu.major, qemu.minor));
        }
    }
    let has_pve = machine
        .trim_end_matches(".pxe")
        .rsplit_once("+pve")
        .is_some_and(|(_, r)| r.chars().all(|c| c.is_ascii_digit()));
    if !has_pve {
        let (base, pxe) = match machine.strip_suffix(".pxe") {
            Some(b) => (b.to_string(), true),
            None => (machine.clone(), false),
        };
        machine = format!("{base}+pve0{}", if pxe { ".pxe" } else { "" });
    }
    Ok(machine)
}

fn pin_machine(machine: &str, base: &str, qemu: Version) -> String {
    let mut pin = base.to_string();
    let runnable = Version::parse(base).is_some_and(|v| can_run(v, qemu));
    if !runnable {
        let rev = pve_revision(qemu.major, qemu.minor);
        pin = format!("{}.{}", qemu.major, qemu.minor);
        if rev > 0 {
            pin.push_str(&format!("+pve{rev}"));
        }
    }
    match machine {
        "pc" => format!("pc-i440fx-{pin}"),
        "q35" => format!("pc-q35-{pin}"),
        "virt" => format!("virt-{pin}"),
        other => other.to_string(),
    }
}

/// The default machine of an architecture.
pub fn default_machine(arch: &str) -> Result<&'static str, CmdlineError> {
    match arch {
        "x86_64" => Ok("pc"),
        "aarch64" => Ok("virt"),
        _ => cfg_err(format!("unsupported architecture '{arch}'")),
    }
}

/// `i440fx`, `q35` or `virt`.
pub fn base_type(machine: &str) -> Result<&'static str, CmdlineError> {
    if machine.contains("q35") {
        Ok("q35")
    } else if machine.starts_with("pc") {
        Ok("i440fx")
    } else if machine.starts_with("virt") {
        Ok("virt")
    } else {
        cfg_err(format!("unable to determine machine base type '{machine}'"))
    }
}

/// `-global <pm>.disable_s3/s4=1` unless enabled (default off since
/// 9.2+pve1).
pub(crate) fn power_state_flags(ctx: &Ctx, mc: &MachineConf, cmd: &mut Vec<String>) {
    let machine = mc
        .kind
        .clone()
        .unwrap_or_else(|| default_machine(&ctx.arch).unwrap_or("pc").to_string());
    if machine.starts_with("virt") {
        return;
    }
    let object = if machine.contains("q35") {
        "ICH9-LPC"
    } else {
        "PIIX4_PM"
    };
    let default = !ctx.version_guard(9, 2, 1);
    if !mc.enable_s3.unwrap_or(default) {
        super::push2(cmd, "-global", format!("{object}.disable_s3=1"));
    }
    if !mc.enable_s4.unwrap_or(default) {
        super::push2(cmd, "-global", format!("{object}.disable_s4=1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_and_machines() {
        let q = v("11.0.0");
        assert_eq!(machine_version("pc+pve2", q).machine_string(), "11.0+pve2");
        assert_eq!(
            machine_version("pc-i440fx-5.1+pve0", q).machine_string(),
            "5.1"
        );
        assert_eq!(
            machine_version("pc-q35-4.1+pve2", q).machine_string(),
            "4.1+pve2"
        );
        assert_eq!(
            vm_machine(None, "x86_64", None, None, q).unwrap(),
            "pc+pve2"
        );
        assert_eq!(
            vm_machine(Some("q35"), "x86_64", Some("win10"), None, q).unwrap(),
            "pc-q35-5.1+pve0"
        );
        assert_eq!(
            vm_machine(Some("pc-i440fx-5.1.pxe"), "x86_64", None, None, q).unwrap(),
            "pc-i440fx-5.1+pve0.pxe"
        );
        assert!(v("10.0+pve1").at_least(10, 0, 1));
        assert!(!v("10.0").at_least(10, 0, 1));
    }
}
