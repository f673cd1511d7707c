//! [`HostView`] over a directory laid out like upstream's
//! `src/test/disk_tests/<case>/`, answering as upstream's test mocks do.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::{HostView, ToolOutput};

/// A fake host read from one upstream `disk_tests` case directory:
///
/// - `disklist`: the names in `/sys/block`; `partlist`: the names in every
///   `/sys/block/<dev>`;
/// - `<dev>/...`: the files under `/sys/block/<dev>/`;
/// - `<dev>_udevadm`, `<dev>_smart`, `<dev>_health`: the output of
///   `udevadm info`, `smartctl -H -A -f brief` and `smartctl -H`;
/// - `lsblk`, `zpool`, `pvs`, `lvs`, `mounts`: the other tools and
///   `/proc/mounts`.
///
/// As upstream's mocks have it: a missing file is empty output, every
/// tool exists and exits with 0, nothing is iSCSI, every path is a block
/// device and its own canonical path, and only partitions have holders.
#[derive(Debug, Clone)]
pub struct FixtureHost {
    dir: PathBuf,
}

impl FixtureHost {
    /// A fake host read from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FixtureHost { dir: dir.into() }
    }

    /// A file's text without trailing newlines (upstream's mock splits it
    /// into lines, which drops trailing empty ones); empty if missing.
    fn text(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name))
            .map(|text| text.trim_end_matches('\n').to_string())
            .unwrap_or_default()
    }

    fn lines(&self, name: &str) -> Vec<String> {
        self.text(name).lines().map(str::to_string).collect()
    }
}

impl HostView for FixtureHost {
    fn block_devices(&self) -> io::Result<Vec<String>> {
        Ok(self.lines("disklist"))
    }

    fn block_device_entries(&self, _dev: &str) -> io::Result<Vec<String>> {
        Ok(self.lines("partlist"))
    }

    fn sysfs_first_line(&self, path: &str) -> Option<String> {
        let text = fs::read_to_string(self.dir.join(path)).ok()?;
        Some(text.lines().next().unwrap_or_default().to_string())
    }

    fn sysfs_is_dir(&self, path: &str) -> bool {
        self.dir.join(path).is_dir()
    }

    fn sysfs_link(&self, _dev: &str) -> Option<String> {
        None
    }

    fn has_holders(&self, _dev: &str, partition: Option<&str>) -> bool {
        partition.is_some()
    }

    fn is_block_device(&self, _path: &str) -> bool {
        true
    }

    fn canonical_path(&self, path: &str) -> String {
        path.to_string()
    }

    fn proc_mounts(&self) -> io::Result<String> {
        Ok(self.text("mounts"))
    }

    fn udev_info(&self, dev: &str) -> io::Result<String> {
        Ok(self.text(&format!("{dev}_udevadm")))
    }

    fn smartctl(&self, devpath: &str, health_only: bool) -> io::Result<ToolOutput> {
        let dev = devpath.strip_prefix("/dev/").unwrap_or(devpath);
        let kind = if health_only { "health" } else { "smart" };
        Ok(ToolOutput {
            stdout: self.text(&format!("{dev}_{kind}")),
            exit_code: Some(0),
        })
    }

    fn lsblk(&self) -> io::Result<String> {
        let text = self.text("lsblk");
        Ok(if text.is_empty() { "{}".into() } else { text })
    }

    fn zpool_list(&self) -> io::Result<String> {
        Ok(self.text("zpool"))
    }

    fn pvs(&self) -> io::Result<String> {
        Ok(self.text("pvs"))
    }

    fn ceph_lvs(&self) -> io::Result<String> {
        Ok(self.text("lvs"))
    }
}
