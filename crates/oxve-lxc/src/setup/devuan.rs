//! Devuan: Debian without systemd. Its release names map to the Debian
//! release it is based on, and the Debian setup does the rest.

use super::debian::Debian;
use super::{CtRoot, Result, SetupError};

/// Devuan release names (with their `/ceres` testing variants) and the
/// Debian release each is based on.
const RELEASES: &[(&str, u32)] = &[
    ("jessie", 8),
    ("ascii", 9),
    ("beowulf", 10),
    ("chimaera", 11),
    ("daedalus", 12),
    ("excalibur", 13),
];

/// The Debian setup for a Devuan rootfs (from `/etc/devuan_version`).
pub(crate) fn new(ct: &CtRoot) -> Result<Debian> {
    let raw = ct
        .fs
        .read_first_line("/etc/devuan_version")?
        .ok_or_else(|| SetupError::Version("unable to read version info".into()))?
        .to_lowercase();
    let name = raw
        .strip_suffix("/ceres")
        .filter(|n| *n != "jessie")
        .unwrap_or(&raw);
    let version = RELEASES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| SetupError::Version(format!("unsupported Devuan version '{raw}'")))?;
    Ok(Debian {
        version,
        ostype: "devuan",
    })
}
