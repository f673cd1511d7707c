//! What the disks are used for, host-wide: mounts, partition and
//! filesystem types (`lsblk`), ZFS pools, LVM physical volumes and Ceph
//! OSD volumes. Collected once per listing, then asked per device.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use serde::Deserialize;

use crate::HostView;

/// GPT partition types ZFS data partitions carry (the Solaris `/usr` type
/// ZFS on Linux uses, and FreeBSD's ZFS type). Log and cache partitions
/// are not in `zpool list` by this path, hence the type check too.
const ZFS_PART_TYPES: [&str; 2] = [
    "6a898cc3-1dd2-11b2-99a6-080020736631",
    "516e7cba-6ecf-11d6-8ff8-00022d09712b",
];
/// The GPT partition type of Linux LVM.
const LVM_PART_TYPE: &str = "e6d6d379-f507-44c2-a23c-238f2a3df928";
/// GPT partition types with a fixed meaning, shown as the usage.
const NAMED_PART_TYPES: [(&str, &str); 3] = [
    ("21686148-6449-6e6f-744e-656564454649", "BIOS boot"),
    ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI"),
    ("6a945a3b-1dd2-11b2-99a6-080020736631", "ZFS reserved"),
];

/// What a partition of a pre-LVM (ceph-disk) OSD holds, by GPT type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CephPartition {
    Journal,
    Db,
    Wal,
    Block,
}

impl CephPartition {
    fn from_part_type(part_type: &str) -> Option<Self> {
        match part_type {
            "45b0969e-9b03-4f30-b4c6-b4b80ceff106" => Some(Self::Journal),
            "30cd0809-c2b2-499c-8879-2d6b78529876" => Some(Self::Db),
            "5ce17fce-4087-4169-b7ff-056cc58473f9" => Some(Self::Wal),
            "cafecafe-9b03-4f30-b4c6-b4b80ceff106" => Some(Self::Block),
            _ => None,
        }
    }
}

/// The ceph-volume logical volumes on one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CephVolume {
    /// The OSD of the last data volume (`osd-block-*`, `osd-data-*`).
    pub osdid: Option<i64>,
    /// The OSDs of all data volumes, in `lvs` order.
    pub osdid_list: Vec<i64>,
    /// Whether the last data volume is a BlueStore block volume.
    pub bluestore: bool,
    /// Whether any data volume is encrypted.
    pub encrypted: bool,
    /// How many journal volumes.
    pub journal: u32,
    /// How many DB volumes.
    pub db: u32,
    /// How many WAL volumes.
    pub wal: u32,
}

/// One device as `lsblk` sees it.
#[derive(Debug, Clone, Default, Deserialize)]
struct LsblkDevice {
    path: Option<String>,
    parttype: Option<String>,
    fstype: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct LsblkOutput {
    #[serde(default)]
    blockdevices: Vec<LsblkDevice>,
}

/// The host-wide usage facts, keyed by device path (`/dev/sda1`).
#[derive(Debug, Default)]
pub(crate) struct HostUsage {
    /// Mounted block devices (symlinks resolved) and where; the last mount
    /// of a device wins.
    mounts: BTreeMap<String, String>,
    lsblk: BTreeMap<String, LsblkDevice>,
    zfs: BTreeSet<String>,
    lvm: BTreeSet<String>,
    ceph_partitions: BTreeMap<String, CephPartition>,
    ceph_volumes: BTreeMap<String, CephVolume>,
}

impl HostUsage {
    /// Asks the host. A tool that fails or is missing contributes nothing:
    /// a listing without ZFS or Ceph information beats no listing.
    pub fn collect(host: &dyn HostView) -> HostUsage {
        let lsblk = host
            .lsblk()
            .map(|out| parse_lsblk(&out))
            .unwrap_or_default();
        let by_part_type = |types: &[&str]| -> BTreeSet<String> {
            lsblk
                .iter()
                .filter(|(_, dev)| dev.parttype.as_deref().is_some_and(|t| types.contains(&t)))
                .map(|(path, _)| path.clone())
                .collect()
        };

        let zfs = match host.zpool_list() {
            // Without the ZFS tools there is no ZFS to speak of.
            Err(err) if err.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            listed => {
                let mut zfs = parse_zpool_devices(&listed.unwrap_or_default());
                zfs.extend(by_part_type(&ZFS_PART_TYPES));
                zfs
            }
        };
        let mut lvm = host.pvs().map(|out| parse_pvs(&out)).unwrap_or_default();
        lvm.extend(by_part_type(&[LVM_PART_TYPE]));

        let ceph_partitions = lsblk
            .iter()
            .filter_map(|(path, dev)| {
                let kind = CephPartition::from_part_type(dev.parttype.as_deref()?)?;
                Some((path.clone(), kind))
            })
            .collect();
        let ceph_volumes = host
            .ceph_lvs()
            .map(|out| parse_ceph_lvs(&out))
            .unwrap_or_default();
        let mounts = host
            .proc_mounts()
            .map(|text| parse_mounted_devices(&text, |path| host.canonical_path(path)))
            .unwrap_or_default();

        HostUsage {
            mounts,
            lsblk,
            zfs,
            lvm,
            ceph_partitions,
            ceph_volumes,
        }
    }

    /// Where `devpath` is mounted, if it is.
    pub fn mountpoint(&self, devpath: &str) -> Option<&str> {
        self.mounts.get(devpath).map(String::as_str)
    }

    /// The ceph-volume volumes on `devpath`.
    pub fn ceph_volume(&self, devpath: &str) -> Option<&CephVolume> {
        self.ceph_volumes.get(devpath)
    }

    /// What a ceph-disk OSD keeps on partition `devpath`.
    pub fn ceph_partition(&self, devpath: &str) -> Option<CephPartition> {
        self.ceph_partitions.get(devpath).copied()
    }

    /// What `devpath` itself is used for, most specific first: LVM, ZFS,
    /// a well-known partition type, a filesystem, a mount. For a partition
    /// `partition_held` says whether something holds it, which makes it
    /// used by the device mapper; disks pass `None`.
    pub fn usage_of(&self, devpath: &str, partition_held: Option<bool>) -> Option<String> {
        if self.lvm.contains(devpath) {
            return Some("LVM".into());
        }
        if self.zfs.contains(devpath) {
            return Some("ZFS".into());
        }
        if let Some(info) = self.lsblk.get(devpath) {
            if let Some(part_type) = info.parttype.as_deref() {
                let named = NAMED_PART_TYPES.iter().find(|(t, _)| *t == part_type);
                if let Some((_, name)) = named {
                    return Some((*name).into());
                }
            }
            if let Some(fstype) = &info.fstype {
                return Some(fstype.clone());
            }
        }
        if self.mountpoint(devpath).is_some_and(|mp| !mp.is_empty()) {
            return Some("mounted".into());
        }
        match partition_held {
            Some(true) => Some("Device Mapper".into()),
            _ => None,
        }
    }
}

/// `lsblk --json -o path,parttype,fstype` by device path; nothing if the
/// output is not that JSON.
fn parse_lsblk(output: &str) -> BTreeMap<String, LsblkDevice> {
    let parsed: LsblkOutput = serde_json::from_str(output).unwrap_or_default();
    parsed
        .blockdevices
        .into_iter()
        .filter_map(|dev| Some((dev.path.clone()?, dev)))
        .collect()
}

/// The vdev paths of `zpool list -HPLv`: the tab-indented rows below each
/// pool (and below its `log`/`cache` headers).
fn parse_zpool_devices(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|line| {
            let (path, _) = line.strip_prefix('\t')?.split_once('\t')?;
            (!path.is_empty()).then(|| path.to_string())
        })
        .collect()
}

/// The physical volume paths of `pvs --noheadings -o pv_name`.
fn parse_pvs(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("/dev/"))
        .map(str::to_string)
        .collect()
}

/// `devices;lv_name;lv_tags` rows of ceph-volume's logical volumes
/// (`/dev/sdb(0);osd-block-<uuid>;ceph.osd_id=3,ceph.encrypted=0,...`),
/// by device.
fn parse_ceph_lvs(output: &str) -> BTreeMap<String, CephVolume> {
    let mut volumes: BTreeMap<String, CephVolume> = BTreeMap::new();
    for line in output.lines() {
        let mut fields = line.trim().split(';');
        let (Some(devices), Some(lv_name)) = (fields.next(), fields.next()) else {
            continue;
        };
        let tags = fields.next().unwrap_or_default();
        // `devices` is `/dev/sdX(<first extent>)`.
        let Some(dev) = devices.split('(').next().filter(|dev| is_dev_path(dev)) else {
            continue;
        };
        let Some(kind) = lv_name
            .strip_prefix("osd-")
            .and_then(|rest| rest.split_once('-'))
            .map(|(kind, _)| kind)
            .filter(|kind| !kind.is_empty())
        else {
            continue;
        };
        let volume = volumes.entry(dev.to_string()).or_default();
        let osdid = tag_value(tags, "ceph.osd_id=").and_then(|id| id.parse::<i64>().ok());
        match (kind, osdid) {
            ("block" | "data", Some(id)) => {
                volume.osdid = Some(id);
                volume.osdid_list.push(id);
                volume.bluestore = kind == "block";
                volume.encrypted |= tags.contains("ceph.encrypted=1");
            }
            ("journal", _) => volume.journal += 1,
            ("db", _) => volume.db += 1,
            ("wal", _) => volume.wal += 1,
            // A data volume without a usable id, or a kind we do not show:
            // the device still counts as carrying a ceph volume.
            _ => {}
        }
    }
    volumes
}

/// `/dev/` followed by a lowercase letter, as LVM prints device paths.
fn is_dev_path(path: &str) -> bool {
    path.strip_prefix("/dev/")
        .and_then(|rest| rest.chars().next())
        .is_some_and(|c| c.is_ascii_lowercase())
}

/// The value of `key` (`ceph.osd_id=`) in a comma-separated tag list; at
/// least one character long.
fn tag_value<'a>(tags: &'a str, key: &str) -> Option<&'a str> {
    let start = tags.find(key)? + key.len();
    let value = tags[start..].split(',').next()?;
    (!value.is_empty()).then_some(value)
}

/// The block devices in `/proc/mounts` (source under `/dev/`, resolved by
/// `canonical`) and their mount points.
fn parse_mounted_devices(
    text: &str,
    canonical: impl Fn(&str) -> String,
) -> BTreeMap<String, String> {
    let mut mounts = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else {
            continue;
        };
        let source = unescape_mount_field(source);
        if source.starts_with("/dev/") {
            mounts.insert(canonical(&source), unescape_mount_field(target));
        }
    }
    mounts
}

/// Undoes the octal escapes (`\040` for a space) of `/proc/mounts`.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceph_lvs_rows() {
        let volumes = parse_ceph_lvs(
            "  /dev/sdg(0);osd-block-1;ceph.osd_id=1\n\
             /dev/sdg(9);osd-data-2;ceph.osd_id=7,ceph.encrypted=1\n\
             /dev/sdh(0);osd-wal-3;\n\
             /dev/sdl(0);osd-data-4;ceph.osd_id=,bar\n\
             garbage\n",
        );
        let sdg = &volumes["/dev/sdg"];
        assert_eq!((sdg.osdid, &sdg.osdid_list[..]), (Some(7), &[1, 7][..]));
        assert!(!sdg.bluestore && sdg.encrypted);
        assert_eq!(volumes["/dev/sdh"].wal, 1);
        assert_eq!(volumes["/dev/sdl"], CephVolume::default());
        assert_eq!(volumes.len(), 3);
    }

    #[test]
    fn mounts_are_unescaped_and_resolved() {
        let mounts = parse_mounted_devices(
            "/dev/disk/by-label/x /mnt/a\\040b ext4 rw 0 0\nproc /proc proc rw 0 0\n",
            |path| path.replace("/dev/disk/by-label/x", "/dev/sdz1"),
        );
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts["/dev/sdz1"], "/mnt/a b");
    }
}
