//! The disk list of `/nodes/{node}/disks/list`: every local disk the
//! kernel shows in `/sys/block`, with identity, type, health, wearout,
//! what it is used for and which Ceph OSD lives on it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Serialize, Serializer};

use crate::smart::{get_smart_data, serialize_percent};
use crate::udev::{parse_udev_info, UdevInfo};
use crate::usage::{CephPartition, HostUsage};
use crate::{Error, HostView, Result};

/// One disk or partition, serialized as upstream's API sends it.
///
/// Disk-only fields (`vendor` ... `wearout`) are `None` for partitions,
/// partition-only ones (`parent`, `encrypted`) for disks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disk {
    /// The device node (`/dev/sda`, `/dev/cciss/c0d0`).
    pub devpath: String,
    /// The disk a partition is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// What kind of device this is.
    #[serde(rename = "type")]
    pub kind: DiskType,
    /// The size in bytes.
    pub size: u64,
    /// Whether the disk has (the partition is on) a GPT partition table.
    #[serde(serialize_with = "serialize_flag")]
    pub gpt: bool,
    /// The vendor sysfs reports, `unknown` if none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// The model udev (else sysfs) reports, `unknown` if none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The short serial number, `unknown` if none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The World Wide Name, `unknown` if none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// Rotation speed: 0 for SSDs, NVMe and USB sticks, -1 if unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<i64>,
    /// The S.M.A.R.T. health verdict, `UNKNOWN` if not asked or not told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The life left of SSDs and NVMe disks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wearout: Option<Wearout>,
    /// Whether the device itself is mounted.
    #[serde(serialize_with = "serialize_flag", skip_serializing_if = "is_false")]
    pub mounted: bool,
    /// A stable `/dev/disk/by-id/` name of the disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_id_link: Option<String>,
    /// What the device is used for (`LVM`, `ZFS`, `mounted`, `partitions`,
    /// `Device Mapper`, a filesystem type, ...); `None` if unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<String>,
    /// The Ceph OSD on the device, -1 if none.
    pub osdid: i64,
    /// All Ceph OSDs on the device; serialized as `null` if none.
    #[serde(rename = "osdid-list")]
    pub osdid_list: Option<Vec<i64>>,
    /// Whether the OSD is a BlueStore one; set where there is an OSD.
    #[serde(
        serialize_with = "serialize_opt_flag",
        skip_serializing_if = "Option::is_none"
    )]
    pub bluestore: Option<bool>,
    /// Whether the disk's OSD is encrypted; set where there is an OSD.
    #[serde(
        serialize_with = "serialize_opt_flag",
        skip_serializing_if = "Option::is_none"
    )]
    pub osdencrypted: Option<bool>,
    /// Whether the partition's OSD volume is encrypted (upstream's name
    /// for partitions).
    #[serde(
        serialize_with = "serialize_opt_flag",
        skip_serializing_if = "Option::is_none"
    )]
    pub encrypted: Option<bool>,
    /// How many Ceph journals the device holds.
    #[serde(skip_serializing_if = "is_zero")]
    pub journals: u32,
    /// How many Ceph DBs the device holds.
    #[serde(skip_serializing_if = "is_zero")]
    pub db: u32,
    /// How many Ceph WALs the device holds.
    #[serde(skip_serializing_if = "is_zero")]
    pub wal: u32,
}

/// What kind of device a [`Disk`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskType {
    /// A rotating disk with a known speed.
    Hdd,
    /// A non-rotating disk other than NVMe.
    Ssd,
    /// An NVMe namespace.
    Nvme,
    /// A rotating-flagged USB device without a known speed (USB sticks).
    Usb,
    /// Anything else (RAID volumes, SAS disks without a speed, ...).
    Unknown,
    /// A partition (only with partitions included).
    Partition,
}

/// The life left of a disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wearout {
    /// Percent of rated life left (100 = new); serialized as a number.
    Percent(f64),
    /// Not an SSD, not asked, or the disk does not tell; serialized as
    /// `N/A`.
    NotAvailable,
}

impl Serialize for Wearout {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Wearout::Percent(value) => serialize_percent(*value, serializer),
            Wearout::NotAvailable => serializer.serialize_str("N/A"),
        }
    }
}

/// What [`list_disks`] lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListOptions<'a> {
    /// Only these disks (`sda`, `cciss/c0d0`); with partitions included a
    /// partition name selects its disk. `None` for all.
    pub filter: Option<&'a [String]>,
    /// Also list partitions, and call a disk with partitions `partitions`
    /// used whatever else it shows.
    pub include_partitions: bool,
    /// Do not run `smartctl`: health `UNKNOWN`, wearout `N/A`.
    pub skip_smart: bool,
}

/// The local disks with S.M.A.R.T. health, by name (`sda`, `nvme0n1`,
/// `cciss/c0d0`); see [`list_disks`].
pub fn get_disks(
    host: &dyn HostView,
    filter: Option<&[String]>,
    include_partitions: bool,
) -> Result<BTreeMap<String, Disk>> {
    list_disks(
        host,
        &ListOptions {
            filter,
            include_partitions,
            skip_smart: false,
        },
    )
}

/// The local disks (and partitions if asked) by name.
///
/// Only real disks are listed: IDE, SCSI/SATA, virtio and Xen disks, NVMe
/// namespaces and cciss volumes — not loop, ram, dm, md, zram or optical
/// devices, not iSCSI disks, and nothing udev does not know as a disk.
/// Fails only if `/sys/block` cannot be listed; a tool that is missing or
/// fails leaves its part of the information out.
pub fn list_disks(host: &dyn HostView, options: &ListOptions) -> Result<BTreeMap<String, Disk>> {
    let mut devices = host.block_devices().map_err(Error::ListBlockDevices)?;
    devices.sort();
    devices.retain(|dev| is_listed_name(dev));

    let wanted: Option<BTreeSet<String>> = options.filter.map(|names| {
        names
            .iter()
            .map(|name| {
                let name = name.replace("cciss/", "cciss!");
                if options.include_partitions {
                    disk_of_partition(host, &devices, &name).unwrap_or(name)
                } else {
                    name
                }
            })
            .collect()
    });

    let usage = HostUsage::collect(host);
    let mut list = BTreeMap::new();
    for dev in &devices {
        if wanted.as_ref().is_some_and(|wanted| !wanted.contains(dev)) {
            continue;
        }
        let Some(udev) = host
            .udev_info(dev)
            .ok()
            .and_then(|text| parse_udev_info(&text))
        else {
            continue;
        };
        if host
            .sysfs_link(dev)
            .is_some_and(|link| is_iscsi_link(&link))
        {
            continue;
        }
        let Some(sysfs) = read_sysfs_disk(host, dev) else {
            continue;
        };
        let (disk, partitions) = describe_disk(host, &usage, options, dev, &udev, &sysfs);
        list.insert(dev.replace('!', "/"), disk);
        if options.include_partitions {
            list.extend(partitions);
        }
    }
    Ok(list)
}

/// What sysfs says about a disk.
struct SysfsDisk {
    size: u64,
    /// `queue/rotational`: 1 rotating, 0 not, -1 unknown.
    rotational: i64,
    vendor: String,
    model: String,
}

/// A disk's sysfs facts; `None` for devices without a backing device
/// (`device/` missing) or without a size.
fn read_sysfs_disk(host: &dyn HostView, dev: &str) -> Option<SysfsDisk> {
    if !host.sysfs_is_dir(&format!("{dev}/device")) {
        return None;
    }
    let size = sysfs_size(host, dev)?;
    let line_or_unknown = |attr: &str| {
        host.sysfs_first_line(&format!("{dev}/{attr}"))
            .filter(|line| !line.is_empty())
            .unwrap_or_else(|| "unknown".to_string())
    };
    Some(SysfsDisk {
        size,
        rotational: host
            .sysfs_first_line(&format!("{dev}/queue/rotational"))
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or(-1),
        vendor: line_or_unknown("device/vendor"),
        model: line_or_unknown("device/model"),
    })
}

/// `<path>/size` in bytes; the kernel counts 512-byte sectors whatever the
/// real block size. `None` if missing or zero.
fn sysfs_size(host: &dyn HostView, path: &str) -> Option<u64> {
    let sectors: u64 = host
        .sysfs_first_line(&format!("{path}/size"))?
        .trim()
        .parse()
        .ok()?;
    (sectors > 0).then(|| sectors.saturating_mul(512))
}

/// What the disk list accumulates about Ceph over a disk and its
/// partitions.
#[derive(Default)]
struct CephTally {
    osdid: Option<i64>,
    osdid_list: Option<Vec<i64>>,
    bluestore: bool,
    encrypted: bool,
    journals: u32,
    db: u32,
    wal: u32,
}

/// The entry of one disk and those of its partitions.
fn describe_disk(
    host: &dyn HostView,
    usage: &HostUsage,
    options: &ListOptions,
    dev: &str,
    udev: &UdevInfo,
    sysfs: &SysfsDisk,
) -> (Disk, BTreeMap<String, Disk>) {
    let devpath = udev.devpath.clone();
    let (kind, rpm) = match sysfs.rotational {
        0 if is_nvme_name(dev) => (DiskType::Nvme, 0),
        0 => (DiskType::Ssd, 0),
        1 if udev.rpm != -1 => (DiskType::Hdd, udev.rpm),
        1 if udev.usb => (DiskType::Usb, 0),
        _ => (DiskType::Unknown, udev.rpm),
    };
    let ssd_like = matches!(kind, DiskType::Ssd | DiskType::Nvme);

    let (mut health, mut wearout) = ("UNKNOWN".to_string(), Wearout::NotAvailable);
    if !options.skip_smart {
        // Only SSDs need the attributes (for the wearout); for the rest the
        // cheaper health check does.
        if let Ok(smart) = get_smart_data(host, &devpath, !ssd_like) {
            if let Some(verdict) = smart.health.as_ref().filter(|h| !h.is_empty()) {
                health = verdict.clone();
            }
            if ssd_like {
                if let Some(percent) = smart.wearout() {
                    wearout = Wearout::Percent(percent);
                }
            }
        }
    }

    let mut tally = CephTally::default();
    let mut partitions = BTreeMap::new();
    let entries = host.block_device_entries(dev).unwrap_or_default();
    let mut part_names: Vec<&String> = entries
        .iter()
        .filter(|name| name.len() > dev.len() && name.starts_with(dev))
        .collect();
    part_names.sort();
    for part in part_names {
        let part_devpath = partition_devpath(&devpath, part);
        let entry = describe_partition(host, usage, dev, part, &part_devpath, udev, &mut tally);
        partitions.insert(part.replace('!', "/"), entry);
    }

    let mut used = usage.usage_of(&devpath, None);
    if options.include_partitions {
        // A filesystem signature may linger on a partitioned disk; the
        // partitions are what matters.
        if !partitions.is_empty() {
            used = Some("partitions".into());
        }
    } else if used.is_none() {
        used = partitions
            .values()
            .find_map(|part: &Disk| part.used.clone());
    }
    if used.is_none() && !partitions.is_empty() {
        used = Some("partitions".into());
    }
    // Multipath, software raid and the like; last, as the least specific.
    if used.is_none() && host.has_holders(dev, None) {
        used = Some("Device Mapper".into());
    }

    if let Some(volume) = usage.ceph_volume(&devpath) {
        tally.add_volume_counts(volume.journal, volume.db, volume.wal);
        if let Some(id) = volume.osdid {
            tally.set_osd(
                id,
                volume.osdid_list.clone(),
                volume.bluestore,
                volume.encrypted,
            );
        }
    }
    let has_osd = tally.osdid.is_some();

    let disk = Disk {
        devpath: devpath.clone(),
        parent: None,
        kind,
        size: sysfs.size,
        gpt: udev.gpt,
        vendor: Some(sysfs.vendor.clone()),
        model: Some(udev.model.clone().unwrap_or_else(|| sysfs.model.clone())),
        serial: Some(udev.serial.clone()),
        wwn: Some(udev.wwn.clone()),
        rpm: Some(rpm),
        health: Some(health),
        wearout: Some(wearout),
        mounted: usage.mountpoint(&devpath).is_some(),
        by_id_link: udev.by_id_link.clone(),
        used: used.filter(|u| !u.is_empty()),
        osdid: tally.osdid.unwrap_or(-1),
        osdid_list: tally.osdid_list,
        bluestore: has_osd.then_some(tally.bluestore),
        osdencrypted: has_osd.then_some(tally.encrypted),
        encrypted: None,
        journals: tally.journals,
        db: tally.db,
        wal: tally.wal,
    };
    (disk, partitions)
}

/// The entry of one partition; adds what it says about Ceph to `tally`.
fn describe_partition(
    host: &dyn HostView,
    usage: &HostUsage,
    dev: &str,
    part: &str,
    devpath: &str,
    udev: &UdevInfo,
    tally: &mut CephTally,
) -> Disk {
    let held = host.has_holders(dev, Some(part));
    let mut entry = Disk {
        devpath: devpath.to_string(),
        parent: Some(udev.devpath.clone()),
        kind: DiskType::Partition,
        size: sysfs_size(host, &format!("{dev}/{part}")).unwrap_or(0),
        gpt: udev.gpt,
        vendor: None,
        model: None,
        serial: None,
        wwn: None,
        rpm: None,
        health: None,
        wearout: None,
        mounted: usage.mountpoint(devpath).is_some(),
        by_id_link: None,
        used: usage.usage_of(devpath, Some(held)),
        osdid: -1,
        osdid_list: None,
        bluestore: None,
        osdencrypted: None,
        encrypted: None,
        journals: 0,
        db: 0,
        wal: 0,
    };

    if let Some(volume) = usage.ceph_volume(devpath) {
        // An LVM-based (ceph-volume) OSD part: its volumes say it all.
        tally.add_volume_counts(volume.journal, volume.db, volume.wal);
        entry.journals = volume.journal;
        entry.db = volume.db;
        entry.wal = volume.wal;
        if let Some(id) = volume.osdid {
            tally.set_osd(
                id,
                volume.osdid_list.clone(),
                volume.bluestore,
                volume.encrypted,
            );
            entry.osdid = id;
            entry.osdid_list = Some(volume.osdid_list.clone());
            entry.bluestore = Some(volume.bluestore);
            entry.encrypted = volume.encrypted.then_some(true);
        }
        return entry;
    }

    // Older ceph-disk OSDs: a data partition mounted by OSD id, and
    // journal/DB/WAL/block partitions known by their GPT type.
    if let Some(id) = usage.mountpoint(devpath).and_then(legacy_osd_mount_id) {
        tally.osdid = Some(id);
        tally.osdid_list = Some(vec![id]); // one OSD per disk in that scheme
        entry.osdid = id;
        entry.osdid_list = Some(vec![id]);
    }
    match usage.ceph_partition(devpath) {
        Some(CephPartition::Journal) => {
            tally.journals += 1;
            entry.journals = 1;
        }
        Some(CephPartition::Db) => {
            tally.db += 1;
            entry.db = 1;
        }
        Some(CephPartition::Wal) => {
            tally.wal += 1;
            entry.wal = 1;
        }
        Some(CephPartition::Block) => {
            tally.bluestore = true;
            entry.bluestore = Some(true);
        }
        None => {}
    }
    entry
}

impl CephTally {
    fn add_volume_counts(&mut self, journals: u32, db: u32, wal: u32) {
        self.journals += journals;
        self.db += db;
        self.wal += wal;
    }

    /// The OSD found last wins, as there is normally one per disk.
    fn set_osd(&mut self, id: i64, list: Vec<i64>, bluestore: bool, encrypted: bool) {
        self.osdid = Some(id);
        self.osdid_list = Some(list);
        self.bluestore |= bluestore;
        self.encrypted |= encrypted;
    }
}

/// The disk a partition name belongs to, if it names one.
fn disk_of_partition(host: &dyn HostView, devices: &[String], name: &str) -> Option<String> {
    if devices.iter().any(|dev| dev == name) {
        return None;
    }
    devices
        .iter()
        .filter(|dev| name.len() > dev.len() && name.starts_with(dev.as_str()))
        .find(|dev| {
            host.block_device_entries(dev)
                .is_ok_and(|entries| entries.iter().any(|entry| entry == name))
        })
        .cloned()
}

/// The device node of a partition: next to its disk's node, named as
/// sysfs names it minus any `<dir>!` prefix (`cciss!c0d0p1` is
/// `/dev/cciss/c0d0p1`).
fn partition_devpath(disk_devpath: &str, part: &str) -> String {
    let dir = disk_devpath.rsplit_once('/').map_or("", |(dir, _)| dir);
    let name = part.rsplit('!').next().unwrap_or(part);
    format!("{dir}/{name}")
}

/// The OSD id of a ceph-disk data partition's mount point
/// (`/var/lib/ceph/osd/ceph-<id>`).
fn legacy_osd_mount_id(mountpoint: &str) -> Option<i64> {
    let id = mountpoint.strip_prefix("/var/lib/ceph/osd/ceph-")?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// The `/sys/block` names of real disks: `hdX`, `sdX`, `vdX`, `xvdX`,
/// `nvme<N>n<M>` and `cciss!c<N>d<M>`.
fn is_listed_name(dev: &str) -> bool {
    let lettered = ["hd", "sd", "vd", "xvd"].iter().any(|prefix| {
        dev.strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase()))
    });
    lettered
        || is_nvme_name(dev)
        || dev
            .strip_prefix("cciss!c")
            .is_some_and(|rest| is_number_pair(rest, 'd'))
}

/// `nvme<N>n<M>`: an NVMe namespace (not a controller, not a partition).
fn is_nvme_name(dev: &str) -> bool {
    dev.strip_prefix("nvme")
        .is_some_and(|rest| is_number_pair(rest, 'n'))
}

/// `<digits><sep><digits>`.
fn is_number_pair(text: &str, sep: char) -> bool {
    let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    text.split_once(sep)
        .is_some_and(|(left, right)| is_number(left) && is_number(right))
}

/// Whether a `/sys/block/<dev>` link target is inside an iSCSI session
/// (`.../host3/session1/...`); such disks belong to a storage, not the node.
fn is_iscsi_link(link: &str) -> bool {
    link.match_indices("host").any(|(at, _)| {
        let after_host = &link[at + "host".len()..];
        after_host
            .split_once('/')
            .is_some_and(|(_, rest)| rest.starts_with("session"))
    })
}

fn serialize_flag<S: Serializer>(flag: &bool, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u8(u8::from(*flag))
}

fn serialize_opt_flag<S: Serializer>(
    flag: &Option<bool>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match flag {
        Some(flag) => serialize_flag(flag, serializer),
        None => serializer.serialize_none(),
    }
}

fn is_false(flag: &bool) -> bool {
    !flag
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_names() {
        for dev in [
            "sda",
            "sdaa",
            "hdb",
            "vda",
            "xvdc",
            "nvme0n1",
            "nvme10n2",
            "cciss!c0d0",
        ] {
            assert!(is_listed_name(dev), "{dev}");
        }
        for dev in [
            "sda1",
            "loop0",
            "dm-0",
            "md0",
            "ram0",
            "zram0",
            "sr0",
            "nvme0",
            "nvme0n1p1",
            "xvd",
            "sd",
        ] {
            assert!(!is_listed_name(dev), "{dev}");
        }
    }

    #[test]
    fn iscsi_links() {
        assert!(is_iscsi_link(
            "../devices/platform/host3/session1/target3:0:0/3:0:0:0/block/sdb"
        ));
        assert!(!is_iscsi_link(
            "../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda"
        ));
    }

    #[test]
    fn partition_paths() {
        assert_eq!(partition_devpath("/dev/sda", "sda1"), "/dev/sda1");
        assert_eq!(
            partition_devpath("/dev/cciss/c0d0", "cciss!c0d0p1"),
            "/dev/cciss/c0d0p1"
        );
        assert_eq!(legacy_osd_mount_id("/var/lib/ceph/osd/ceph-12"), Some(12));
        assert_eq!(legacy_osd_mount_id("/var/lib/ceph/osd/ceph-12/x"), None);
    }
}
