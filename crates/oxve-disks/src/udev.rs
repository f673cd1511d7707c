//! What the disk list takes from `udevadm info --query all`.

/// The udev view of one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UdevInfo {
    /// `DEVNAME`: the device node, which is not always `/dev/<sysfs name>`
    /// (`cciss!c0d0` is `/dev/cciss/c0d0`).
    pub devpath: String,
    /// `ID_SERIAL_SHORT`, or `unknown`.
    pub serial: String,
    /// Whether the partition table is GPT.
    pub gpt: bool,
    /// `ID_ATA_ROTATION_RATE_RPM` (0 for ATA SSDs), or -1 where udev does
    /// not know it (non-ATA disks).
    pub rpm: i64,
    /// Whether the disk sits on USB.
    pub usb: bool,
    /// `ID_MODEL`.
    pub model: Option<String>,
    /// `ID_WWN`, or `unknown`.
    pub wwn: String,
    /// The first stable `/dev/disk/by-id/` link of an ATA, SCSI or NVMe
    /// disk (NVMe EUI links excluded: they are not stable across firmware).
    pub by_id_link: Option<String>,
}

/// Parses `udevadm info` output. `None` for anything that is not a disk
/// or partition, for optical drives, and for output without a device node.
pub(crate) fn parse_udev_info(text: &str) -> Option<UdevInfo> {
    let mut props: Vec<(&str, &str)> = Vec::new();
    for line in text.lines() {
        if let Some((key, value)) = line.strip_prefix("E: ").and_then(|p| p.split_once('=')) {
            props.push((key, value));
        }
    }
    // The first occurrence of a key counts.
    let prop = |key: &str| props.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);

    let is_disk = props
        .iter()
        .any(|(k, v)| *k == "DEVTYPE" && (*v == "disk" || *v == "partition"));
    let is_cdrom = text.lines().any(|line| line.starts_with("E: ID_CDROM"));
    if !is_disk || is_cdrom {
        return None;
    }

    let devpath = prop("DEVNAME").filter(|v| is_token(v))?.to_string();
    let serial = prop("ID_SERIAL_SHORT")
        .map(str::trim_start)
        .filter(|v| is_token(v))
        .unwrap_or("unknown")
        .to_string();
    let rpm = prop("ID_ATA_ROTATION_RATE_RPM")
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let by_id_link = prop("DEVLINKS").and_then(|links| {
        links
            .split(' ')
            .find(|link| is_stable_by_id_link(link))
            .map(str::to_string)
    });

    Some(UdevInfo {
        devpath,
        serial,
        gpt: prop("ID_PART_TABLE_TYPE") == Some("gpt"),
        rpm,
        usb: prop("ID_BUS") == Some("usb"),
        model: prop("ID_MODEL")
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        wwn: prop("ID_WWN").unwrap_or("unknown").to_string(),
        by_id_link,
    })
}

/// A non-empty value without whitespace.
fn is_token(value: &str) -> bool {
    !value.is_empty() && !value.chars().any(char::is_whitespace)
}

fn is_stable_by_id_link(link: &str) -> bool {
    let Some(name) = link.strip_prefix("/dev/disk/by-id/") else {
        return false;
    };
    name.starts_with("ata")
        || name.starts_with("scsi")
        || (name.starts_with("nvme") && !name.starts_with("nvme-eui"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdrom_and_non_disks_are_skipped() {
        let cd = "E: DEVNAME=/dev/sr0\nE: DEVTYPE=disk\nE: ID_CDROM=1\n";
        assert_eq!(parse_udev_info(cd), None);
        let loop_dev = "E: DEVNAME=/dev/loop0\nE: DEVTYPE=loop\n";
        assert_eq!(parse_udev_info(loop_dev), None);
        assert_eq!(parse_udev_info("E: DEVTYPE=disk\n"), None);
    }

    #[test]
    fn defaults_and_by_id_link() {
        let text = "E: DEVNAME=/dev/nvme0n1\nE: DEVTYPE=disk\n\
            E: DEVLINKS=/dev/disk/by-id/nvme-eui.0025 /dev/disk/by-id/nvme-Samsung_X_1 /dev/disk/by-path/pci\n";
        let info = parse_udev_info(text).expect("a disk");
        assert_eq!(info.serial, "unknown");
        assert_eq!(info.wwn, "unknown");
        assert_eq!(info.rpm, -1);
        assert!(!info.gpt && !info.usb);
        assert_eq!(info.model, None);
        assert_eq!(
            info.by_id_link.as_deref(),
            Some("/dev/disk/by-id/nvme-Samsung_X_1")
        );
    }
}
