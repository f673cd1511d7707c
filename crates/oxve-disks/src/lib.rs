//! oxve local disks, as upstream's `PVE::Diskmanage` sees them: the read
//! side of `/nodes/{node}/disks` — the disk list (`disks/list`) and
//! S.M.A.R.T. data (`disks/smart`).
//!
//! Everything the host is asked goes through one narrow interface,
//! [`HostView`]: the `/sys/block` tree, `udevadm`, `smartctl`, `lsblk`,
//! `zpool`, `pvs`, `lvs` and `/proc/mounts`. [`SysHost`] asks the real host;
//! [`FixtureHost`] reads a directory laid out like upstream's
//! `src/test/disk_tests/<case>/`. The rest of the crate only parses what
//! the host answered and combines it, so it is tested without a host.
//!
//! - [`get_disks`] / [`list_disks`]: the disks (and optionally partitions)
//!   with size, identity, type, health, wearout, usage and Ceph OSD info.
//! - [`get_smart_data`]: the parsed `smartctl` output of one disk.

mod error;
mod host;
mod list;
mod smart;
mod udev;
mod usage;

pub use error::{Error, Result};
pub use host::{FixtureHost, HostView, SysHost, ToolOutput};
pub use list::{get_disks, list_disks, Disk, DiskType, ListOptions, Wearout};
pub use smart::{get_smart_data, verify_blockdev_path, SmartAttribute, SmartData, SmartType};
