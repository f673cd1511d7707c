//! Mounting a container's volumes under its rootfs directory (before
//! start, and for `pct mount`), and unmounting them after it stops (also
//! from LXC's post-stop hook).
//!
//! A mount target is resolved inside the container's tree with
//! `openat2(RESOLVE_IN_ROOT)`: a symlink on the way (`/var/run -> /run`,
//! `../../x`) is followed as if the rootfs were `/`, so it never leads
//! outside. Missing directories on the way are created, owned by the
//! container's root. The mount then goes onto the opened directory itself
//! (`/proc/<pid>/fd/<n>`), so the path cannot change in between.

use crate::error::{io_err, LxcError};
use crate::model::{MountKind, MountPoint};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a mount point's source is on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory (subvolume, bind mount): bind-mounted.
    Dir,
    /// A raw image file holding a file system: loop-mounted.
    Image,
    /// A block device holding a file system.
    Block,
}

/// One mount, resolved to a host path.
#[derive(Debug, Clone, PartialEq)]
pub struct MountSource {
    /// Path inside the container (`/`, `/mnt/data`).
    pub target: String,
    pub source: PathBuf,
    pub kind: SourceKind,
    pub ro: bool,
    /// `noatime`, `nodev`, ... from `mountoptions`.
    pub options: Vec<String>,
    /// Journaled user and group quotas (`quota=1` on a writable file
    /// system; directories cannot have them).
    pub quota: bool,
}

/// A block device that a container sees as `/dev/<name>`: the device of a
/// mount with quotas, which `quotacheck` and `quotaon` inside open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// The device node on the host (`/dev/loop3`); the same path inside.
    pub path: PathBuf,
    pub major: u32,
    pub minor: u32,
}

/// ext4's journaled quota options, as upstream mounts a volume with `quota=1`.
const QUOTA_OPTIONS: [&str; 3] = [
    "usrjquota=aquota.user",
    "grpjquota=aquota.group",
    "jqfmt=vfsv0",
];

impl MountSource {
    /// What mount point `mp` mounts. `volume_path` is the host path of a
    /// storage volume (`MountKind::Volume`), which the caller finds through
    /// the storage layer — the daemon with its plugins, `pct mount` through
    /// the API. Quotas asked for on a directory are dropped with upstream's
    /// warning.
    pub fn of(
        mp: &MountPoint,
        volume_path: Option<&Path>,
        warn: &mut dyn FnMut(&str),
    ) -> Result<MountSource, LxcError> {
        let (source, kind) = match mp.kind() {
            MountKind::Volume => {
                let path = volume_path.ok_or_else(|| {
                    LxcError::Config(format!("{}: no path for volume '{}'", mp.key, mp.volume))
                })?;
                match source_kind(path) {
                    SourceKind::Dir => (path.to_path_buf(), SourceKind::Dir),
                    // Images and devices by their real path (loop devices,
                    // /dev/dm-N), as upstream.
                    kind => (
                        path.canonicalize()
                            .map_err(|e| io_err("cannot find volume", path, e))?,
                        kind,
                    ),
                }
            }
            MountKind::Bind => {
                let path = PathBuf::from(&mp.volume);
                if !path.is_dir() {
                    return Err(LxcError::Config(format!(
                        "{}: bind mount source '{}' is not a directory",
                        mp.key, mp.volume
                    )));
                }
                (path, SourceKind::Dir)
            }
            MountKind::Device => (PathBuf::from(&mp.volume), SourceKind::Block),
        };
        let mut quota = mp.quota && !mp.ro;
        if quota && kind == SourceKind::Dir {
            warn(if mp.kind() == MountKind::Volume {
                "cannot enable quota control for bind mounted subvolumes"
            } else {
                "cannot enable quota control for bind mounts"
            });
            quota = false;
        }
        Ok(MountSource {
            target: mp.mp.clone(),
            source,
            kind,
            ro: mp.ro,
            options: mp.mountoptions.clone(),
            quota,
        })
    }
}

fn source_kind(path: &Path) -> SourceKind {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => SourceKind::Dir,
        Ok(m) if m.file_type().is_block_device() => SourceKind::Block,
        _ => SourceKind::Image,
    }
}

/// Mounts `mounts` under `rootfs`, parents before children (by path depth);
/// directories created on the way belong to `owner` (the container's root
/// on the host). Returns the block devices of the mounts with quotas. On
/// failure, what was mounted is unmounted again.
pub fn mount_all(
    rootfs: &Path,
    mounts: &[MountSource],
    owner: (u32, u32),
) -> Result<Vec<BlockDevice>, LxcError> {
    let mut sorted: Vec<&MountSource> = mounts.iter().collect();
    sorted.sort_by_key(|m| {
        m.target.trim_end_matches('/').matches('/').count() + usize::from(m.target != "/")
    });
    let mut devices = Vec::new();
    for m in sorted {
        match mount_one(rootfs, m, owner) {
            Ok(Some(dev)) => devices.push(dev),
            Ok(None) => {}
            Err(e) => {
                let _ = unmount_all(rootfs);
                return Err(e);
            }
        }
    }
    Ok(devices)
}

fn mount_one(
    rootfs: &Path,
    m: &MountSource,
    owner: (u32, u32),
) -> Result<Option<BlockDevice>, LxcError> {
    let dir = open_target(rootfs, &m.target, owner)?;
    // The opened directory as a path the kernel resolves to exactly it,
    // also from the `mount` tool (a child process).
    let target = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        dir.as_raw_fd()
    ));
    if m.kind == SourceKind::Dir && m.options.is_empty() {
        bind(&m.source, &target, m.ro)?;
        return Ok(None);
    }
    let mut opts: Vec<String> = m.options.clone();
    // `-c`: the target is passed to the kernel as it is, not canonicalized.
    let mut cmd = Command::new("mount");
    cmd.arg("-c");
    match m.kind {
        SourceKind::Dir => {
            cmd.arg("--bind");
        }
        SourceKind::Image => opts.push("loop".into()),
        SourceKind::Block => {}
    }
    if m.quota {
        opts.extend(QUOTA_OPTIONS.iter().map(|o| o.to_string()));
    }
    if m.ro && m.kind != SourceKind::Dir {
        opts.push("ro".into());
    }
    if !opts.is_empty() {
        cmd.arg("-o").arg(opts.join(","));
    }
    cmd.arg(&m.source).arg(&target);
    run(cmd, "mount", &m.source)?;
    if m.ro && m.kind == SourceKind::Dir {
        let mut cmd = Command::new("mount");
        cmd.args(["-c", "-o", "remount,bind,ro"]).arg(&target);
        run(cmd, "remount read-only", &m.source)?;
    }
    if !m.quota {
        return Ok(None);
    }
    let host_path =
        std::fs::read_link(&target).map_err(|e| io_err("cannot resolve", &target, e))?;
    mounted_device(&host_path).map(Some).ok_or_else(|| {
        LxcError::Command(format!(
            "cannot find the block device mounted at '{}'",
            host_path.display()
        ))
    })
}

/// A bind mount by syscall (the common case of a subvolume rootfs: no
/// `mount` tool to run), read-only by a remount when asked.
fn bind(source: &Path, target: &Path, ro: bool) -> Result<(), LxcError> {
    use nix::mount::{mount, MsFlags};
    let err = |what: &str, e: nix::Error| {
        LxcError::Command(format!("cannot {what} '{}': {e}", source.display()))
    };
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| err("bind-mount", e))?;
    if ro {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            .map_err(|e| err("remount read-only", e))?;
    }
    Ok(())
}

/// Opens container path `inner` as a directory below `rootfs`, resolved
/// inside it, creating missing directories (owned by `owner`). Relative
/// paths and `..` components are refused.
fn open_target(rootfs: &Path, inner: &str, owner: (u32, u32)) -> Result<OwnedFd, LxcError> {
    if !inner.starts_with('/') || inner.split('/').any(|c| c == "..") {
        return Err(LxcError::Config(format!(
            "mount point path '{inner}' must be absolute and without '..'"
        )));
    }
    let fail = |what: &str, e: io::Error| {
        LxcError::Io(format!("cannot {what} mount point '{inner}': {e}"))
    };
    let root = open_dir(rootfs).map_err(|e| io_err("cannot open", rootfs, e))?;
    let mut dir = open_in_root(&root, ".").map_err(|e| fail("open", e))?;
    let mut walked = String::new();
    for name in inner.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(name);
        dir = match open_in_root(&root, &walked) {
            Ok(next) => next,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // `dir` is the resolved parent: a plain name below it stays
                // inside the container.
                make_dir(&dir, name, owner).map_err(|e| fail("create", e))?;
                open_in_root(&root, &walked).map_err(|e| fail("open", e))?
            }
            Err(e) => return Err(fail("open", e)),
        };
    }
    Ok(dir)
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: open(2) of a NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens directory `rel` below `root` as the container sees it: symlinks
/// and `..` resolve with `root` as `/` (`RESOLVE_IN_ROOT`).
fn open_in_root(root: &OwnedFd, rel: &str) -> io::Result<OwnedFd> {
    crate::inroot::open_in_root(root, rel, libc::O_PATH | libc::O_DIRECTORY)
}

/// `mkdir` of `name` in directory `parent`, owned by `owner`; one that
/// appeared meanwhile is fine.
fn make_dir(parent: &OwnedFd, name: &str, owner: (u32, u32)) -> io::Result<()> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: mkdirat of a NUL-terminated name in an open directory.
    if unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o755) } < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EEXIST) => Ok(()),
            _ => Err(err),
        };
    }
    // SAFETY: fchownat of a NUL-terminated name in an open directory,
    // not following a symlink.
    let ret = unsafe {
        libc::fchownat(
            parent.as_raw_fd(),
            c.as_ptr(),
            owner.0,
            owner.1,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The block device mounted on top at `dir`, from the kernel's table.
fn mounted_device(dir: &Path) -> Option<BlockDevice> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rev()
        .filter_map(parse_mountinfo)
        .find(|e| Path::new(&e.mount_point) == dir)
        .and_then(|e| {
            let path = Path::new(&e.source).canonicalize().ok()?;
            path.starts_with("/dev/").then_some(BlockDevice {
                path,
                major: e.major,
                minor: e.minor,
            })
        })
}

/// The fields of one `/proc/self/mountinfo` line that matter here.
struct MountInfo {
    major: u32,
    minor: u32,
    mount_point: String,
    source: String,
}

fn parse_mountinfo(line: &str) -> Option<MountInfo> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let sep = fields.iter().position(|f| *f == "-")?;
    Some(MountInfo {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mount_point: unescape(fields.get(4)?),
        source: unescape(fields.get(sep + 2)?),
    })
}

/// Mount points at or below `dir`, deepest first, from the kernel's table.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Unmounts everything at or below `rootfs`.
pub fn unmount_all(rootfs: &Path) -> Result<(), LxcError> {
    let mut failed = Vec::new();
    for path in mounts_below(rootfs) {
        if nix::mount::umount(&path).is_err() {
            // Busy (a process still holds it): detach, it goes when unused.
            if let Err(e) = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
                failed.push(format!("{}: {e}", path.display()));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(LxcError::Command(format!(
            "cannot unmount {}",
            failed.join(", ")
        )))
    }
}

/// Whether something is mounted exactly at `dir`.
pub fn is_mounted(dir: &Path) -> bool {
    mounts_below(dir).iter().any(|p| p == dir)
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as
/// octal `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn run(mut cmd: Command, what: &str, path: &Path) -> Result<(), LxcError> {
    let out = cmd
        .output()
        .map_err(|e| LxcError::Command(format!("cannot run 'mount': {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(LxcError::Command(format!(
        "cannot {what} '{}': {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    fn me() -> (u32, u32) {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    }

    /// Where an opened target is on the host.
    fn resolved(rootfs: &Path, inner: &str) -> PathBuf {
        let fd = open_target(rootfs, inner, me()).unwrap();
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    #[test]
    fn refuses_relative_and_dotdot_targets() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open_target(dir.path(), "/../etc", me()).is_err());
        assert!(open_target(dir.path(), "relative", me()).is_err());
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(resolved(&root, "/"), root);
    }

    #[test]
    fn absolute_symlink_resolves_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        // As in most distributions: /var/run -> /run.
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        let name = format!("oxve-mount-test-{}", std::process::id());
        let got = resolved(&root, &format!("/var/run/{name}/data"));
        assert_eq!(got, root.join("run").join(&name).join("data"));
        assert!(got.is_dir());
        assert!(!Path::new("/run").join(&name).exists());
    }

    #[test]
    fn escaping_dotdot_symlink_stays_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc", root.join("evil")).unwrap();
        let name = format!("oxve-mount-test-{}", std::process::id());
        let got = resolved(&root, &format!("/evil/{name}"));
        assert_eq!(got, root.join("etc").join(&name));
        assert!(!Path::new("/etc").join(&name).exists());
        // A dangling symlink is not replaced by a directory.
        std::os::unix::fs::symlink("/nowhere/x", root.join("dangling")).unwrap();
        let err = open_target(&root, "/dangling", me()).unwrap_err();
        assert!(err.to_string().contains("'/dangling'"), "{err}");
    }

    #[test]
    fn parses_mountinfo_lines() {
        let e = parse_mountinfo(
            "73 27 7:0 / /tmp/a\\040b rw,relatime shared:1 - ext4 /dev/loop0 rw,jqfmt=vfsv0",
        )
        .unwrap();
        assert_eq!((e.major, e.minor), (7, 0));
        assert_eq!(e.mount_point, "/tmp/a b");
        assert_eq!(e.source, "/dev/loop0");
    }

    #[test]
    fn quota_on_directories_warns_as_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let mp = crate::model::parse_mount_point(
            "mp0",
            &format!("{},mp=/data,quota=1", dir.path().display()),
        )
        .unwrap();
        let mut warnings = Vec::new();
        let m = MountSource::of(&mp, None, &mut |w| warnings.push(w.to_string())).unwrap();
        assert!(!m.quota);
        assert_eq!(warnings, ["cannot enable quota control for bind mounts"]);
        let vol = crate::model::parse_mount_point("mp1", "local:subvol-100-disk-1,mp=/x,quota=1")
            .unwrap();
        warnings.clear();
        MountSource::of(&vol, Some(dir.path()), &mut |w| {
            warnings.push(w.to_string())
        })
        .unwrap();
        assert_eq!(
            warnings,
            ["cannot enable quota control for bind mounted subvolumes"]
        );
        let image = dir.path().join("vm-100-disk-2.raw");
        std::fs::write(&image, b"").unwrap();
        let raw =
            crate::model::parse_mount_point("mp2", "local:100/vm-100-disk-2.raw,mp=/y,quota=1")
                .unwrap();
        let m = MountSource::of(&raw, Some(&image), &mut |_| panic!("no warning")).unwrap();
        assert!(m.quota && m.kind == SourceKind::Image);
    }
}
