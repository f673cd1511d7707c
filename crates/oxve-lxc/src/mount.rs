//! Mounting a container's volumes under its run directory before start,
//! and unmounting them after it stops (also from LXC's post-stop hook).

use crate::error::{io_err, LxcError};
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
}

/// Mounts `mounts` under `rootfs`, parents before children (by path depth).
/// On failure, what was mounted is unmounted again.
pub fn mount_all(rootfs: &Path, mounts: &[MountSource]) -> Result<(), LxcError> {
    let mut sorted: Vec<&MountSource> = mounts.iter().collect();
    sorted.sort_by_key(|m| {
        m.target.trim_end_matches('/').matches('/').count() + usize::from(m.target != "/")
    });
    for m in sorted {
        if let Err(e) = mount_one(rootfs, m) {
            let _ = unmount_all(rootfs);
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(rootfs: &Path, m: &MountSource) -> Result<(), LxcError> {
    let target = target_path(rootfs, &m.target)?;
    if !target.exists() {
        std::fs::create_dir_all(&target)
            .map_err(|e| io_err("cannot create mount point", &target, e))?;
    }
    if m.kind == SourceKind::Dir && m.options.is_empty() {
        return bind(&m.source, &target, m.ro);
    }
    let mut opts: Vec<String> = m.options.clone();
    let mut cmd = Command::new("mount");
    match m.kind {
        SourceKind::Dir => {
            cmd.arg("--bind");
        }
        SourceKind::Image => opts.push("loop".into()),
        SourceKind::Block => {}
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
        cmd.args(["-o", "remount,bind,ro"]).arg(&target);
        run(cmd, "remount read-only", &target)?;
    }
    Ok(())
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

/// The host path of container path `inner` below `rootfs`; `..` and
/// relative paths are refused.
fn target_path(rootfs: &Path, inner: &str) -> Result<PathBuf, LxcError> {
    if !inner.starts_with('/') || inner.split('/').any(|c| c == "..") {
        return Err(LxcError::Config(format!(
            "mount point path '{inner}' must be absolute and without '..'"
        )));
    }
    let rel = inner.trim_start_matches('/');
    let path = if rel.is_empty() {
        rootfs.to_path_buf()
    } else {
        rootfs.join(rel)
    };
    // A symlink in the container's tree must not lead the mount outside.
    if let Ok(real) = path.canonicalize() {
        let root = rootfs
            .canonicalize()
            .map_err(|e| io_err("cannot resolve", rootfs, e))?;
        if !real.starts_with(&root) {
            return Err(LxcError::Config(format!(
                "mount point '{inner}' leads outside the container"
            )));
        }
    }
    Ok(path)
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

    #[test]
    fn refuses_escaping_targets() {
        let dir = tempfile::tempdir().unwrap();
        assert!(target_path(dir.path(), "/../etc").is_err());
        assert!(target_path(dir.path(), "relative").is_err());
        std::os::unix::fs::symlink("/etc", dir.path().join("evil")).unwrap();
        let err = target_path(dir.path(), "/evil").unwrap_err().to_string();
        assert!(err.contains("outside"), "{err}");
        assert_eq!(target_path(dir.path(), "/").unwrap(), dir.path());
    }
}
