//! The side-effect boundary: everything the disk code asks the host.
//!
//! Methods return raw text; parsing lives with the code that uses it.
//! A tool that is not installed is reported as an [`std::io::Error`] of
//! kind [`std::io::ErrorKind::NotFound`], so callers can tell "missing"
//! from "failed".

mod fixture;
mod sys;

use std::io;

pub use fixture::FixtureHost;
pub use sys::SysHost;

/// What the disk code needs to know about a host.
///
/// Paths called `path` below are relative to `/sys/block`, e.g.
/// `sda/queue/rotational` or `sda/sda1/size`.
pub trait HostView {
    /// The entries of `/sys/block`: one name per block device the kernel
    /// has (`sda`, `nvme0n1`, `cciss!c0d0`, `loop0`, `dm-0`, ...).
    fn block_devices(&self) -> io::Result<Vec<String>>;

    /// The entries of `/sys/block/<dev>`; its partitions are among them,
    /// named `<dev>` followed by something (`sda1`, `nvme0n1p1`).
    fn block_device_entries(&self, dev: &str) -> io::Result<Vec<String>>;

    /// The first line of `/sys/block/<path>` without its newline; `None`
    /// if it cannot be read.
    fn sysfs_first_line(&self, path: &str) -> Option<String>;

    /// Whether `/sys/block/<path>` is a directory.
    fn sysfs_is_dir(&self, path: &str) -> bool;

    /// Where the `/sys/block/<dev>` symlink points, i.e. the device's place
    /// in the sysfs device tree; `None` if unknown.
    fn sysfs_link(&self, dev: &str) -> Option<String>;

    /// Whether something (device mapper, md raid, ...) holds the disk or
    /// one of its partitions: `/sys/block/<dev>[/<partition>]/holders` is
    /// not empty.
    fn has_holders(&self, dev: &str, partition: Option<&str>) -> bool;

    /// Whether `path` (after following symlinks) is a block device.
    fn is_block_device(&self, path: &str) -> bool;

    /// `path` with symlinks resolved; `path` itself if that fails.
    fn canonical_path(&self, path: &str) -> String;

    /// The text of `/proc/mounts`.
    fn proc_mounts(&self) -> io::Result<String>;

    /// `udevadm info -p /sys/block/<dev> --query all`.
    fn udev_info(&self, dev: &str) -> io::Result<String>;

    /// `smartctl -H /dev/<dev>`, with `-A -f brief` unless `health_only`.
    /// Its exit status is a bit mask of findings, so a non-zero status is
    /// returned, not turned into an error.
    fn smartctl(&self, devpath: &str, health_only: bool) -> io::Result<ToolOutput>;

    /// `lsblk --json -o path,parttype,fstype`.
    fn lsblk(&self) -> io::Result<String>;

    /// `zpool list -HPLv`.
    fn zpool_list(&self) -> io::Result<String>;

    /// `pvs --noheadings --readonly -o pv_name`.
    fn pvs(&self) -> io::Result<String>;

    /// The logical volumes ceph-volume made for OSDs:
    /// `lvs -S lv_name=~^osd- -o devices,lv_name,lv_tags --noheadings
    /// --readonly --separator ;`.
    fn ceph_lvs(&self) -> io::Result<String>;
}

/// What a tool printed and how it exited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolOutput {
    /// Standard output.
    pub stdout: String,
    /// The exit code; `None` if the tool was killed by a signal.
    pub exit_code: Option<i32>,
}
