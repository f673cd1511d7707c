//! Facts about the machine a run happened on, and where scratch files go.

use crate::error::{BenchError, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// File systems that live in memory: an fsync there costs nothing, so a
/// write benchmark on them says nothing about a real disk.
const MEMORY_FILESYSTEMS: &[&str] = &["tmpfs", "ramfs"];

/// What BENCHMARKS.md says about the machine.
#[derive(Debug)]
pub struct Machine {
    /// Cores available to the bench.
    pub cores: usize,
    /// `model name` of the first CPU.
    pub cpu_model: String,
    /// The running kernel's release.
    pub kernel: String,
    /// The SQLite library linked into both store benchmarks.
    pub sqlite: &'static str,
}

impl Machine {
    /// Reads the facts from /proc; a fact that cannot be read is "unknown".
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
                .unwrap_or_else(|| "unknown".into()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            sqlite: rusqlite::version(),
        }
    }
}

/// Where the store databases and the daemon's root live.
#[derive(Debug)]
pub struct Scratch {
    /// The directory.
    pub dir: PathBuf,
    /// Its file system type.
    pub fs_type: String,
    /// Whether it is on the same device as the current directory (the checkout).
    pub same_device_as_checkout: bool,
}

impl Scratch {
    /// `explicit` if given; else /tmp unless it lives in memory; else a
    /// directory beside the bench binary in the cargo target directory.
    pub fn choose(explicit: Option<PathBuf>) -> Result<Scratch> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(BenchError::file("/proc/self/mountinfo"))?;
        let dir = match explicit {
            Some(dir) => dir,
            None => {
                let tmp = std::env::temp_dir();
                let on_disk = filesystem_of(&mountinfo, &canonical(&tmp))
                    .is_some_and(|fs| !MEMORY_FILESYSTEMS.contains(&fs));
                if on_disk {
                    tmp
                } else {
                    target_dir()?.join("bench-scratch")
                }
            }
        };
        std::fs::create_dir_all(&dir).map_err(BenchError::file(&dir))?;
        let dir = canonical(&dir);
        let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        Ok(Scratch {
            fs_type: filesystem_of(&mountinfo, &dir)
                .unwrap_or("unknown")
                .to_string(),
            same_device_as_checkout: device(&dir).is_some()
                && device(&dir) == device(Path::new(".")),
            dir,
        })
    }
}

/// The cargo target directory the running binary was built into
/// (`<target>/release/oxve-bench`).
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(BenchError::file("/proc/self/exe"))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| BenchError::Parse {
            what: "the bench binary's path",
            detail: format!("{} is not inside a target directory", exe.display()),
        })
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// The type of the file system holding `path`: the one of the longest
/// mount point in /proc/self/mountinfo that contains it.
fn filesystem_of<'a>(mountinfo: &'a str, path: &Path) -> Option<&'a str> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let mount_point = *fields.get(4)?;
            let dash = fields.iter().position(|f| *f == "-")?;
            let fs_type = *fields.get(dash + 1)?;
            path.starts_with(mount_point)
                .then_some((mount_point.len(), fs_type))
        })
        // Later mounts over the same point win, hence the index.
        .enumerate()
        .max_by_key(|(index, (len, _))| (*len, *index))
        .map(|(_, (_, fs_type))| fs_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /tmp rw,nosuid shared:2 - tmpfs tmpfs rw
24 22 0:22 / /tmpdata rw shared:3 - xfs /dev/vdb rw
25 23 0:23 / /tmp/disk rw shared:4 - btrfs /dev/vdc rw
";

    #[test]
    fn finds_the_innermost_mount() {
        assert_eq!(
            filesystem_of(MOUNTINFO, Path::new("/work/main")),
            Some("ext4")
        );
        assert_eq!(filesystem_of(MOUNTINFO, Path::new("/tmp")), Some("tmpfs"));
        assert_eq!(
            filesystem_of(MOUNTINFO, Path::new("/tmp/x/y")),
            Some("tmpfs")
        );
        assert_eq!(
            filesystem_of(MOUNTINFO, Path::new("/tmp/disk/a")),
            Some("btrfs")
        );
        // A path component, not a string prefix.
        assert_eq!(filesystem_of(MOUNTINFO, Path::new("/tmpdata")), Some("xfs"));
        assert_eq!(filesystem_of(MOUNTINFO, Path::new("/tmpdat")), Some("ext4"));
    }

    #[test]
    fn later_mount_over_the_same_point_wins() {
        let stacked = format!("{MOUNTINFO}26 23 0:24 / /tmp rw shared:5 - ext4 /dev/vdd rw\n");
        assert_eq!(filesystem_of(&stacked, Path::new("/tmp/a")), Some("ext4"));
    }
}
