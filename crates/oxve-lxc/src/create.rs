//! Filling a new container's root file system from a template archive
//! (`.tar.gz`, `.tar.xz`, `.tar.zst`, `.tar.bz2`, `.tar`), as upstream's
//! `pct create` does: numeric owners, ACLs, xattrs, devices skipped.

use crate::error::LxcError;
use crate::idmap::IdMap;
use std::path::Path;
use std::process::Command;

/// The `tar` options for a template archive, decompressor chosen by its
/// name (GNU tar runs `gzip`/`xz`/`zstd`/`bzip2`).
pub fn tar_command(archive: &Path, dest: &Path) -> Result<Command, LxcError> {
    let name = archive.to_string_lossy();
    let filter = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some("--gzip")
    } else if name.ends_with(".tar.xz") {
        Some("--xz")
    } else if name.ends_with(".tar.zst") {
        Some("--zstd")
    } else if name.ends_with(".tar.bz2") {
        Some("--bzip2")
    } else if name.ends_with(".tar") {
        None
    } else {
        return Err(LxcError::Config(format!(
            "unsupported template archive '{name}' (expected .tar, .tar.gz, .tar.xz, .tar.zst or .tar.bz2)"
        )));
    };
    let mut cmd = Command::new("tar");
    cmd.arg("-x").arg("-p").arg("-f").arg(archive);
    if let Some(f) = filter {
        cmd.arg(f);
    }
    cmd.args([
        "--numeric-owner",
        "--one-file-system",
        "--sparse",
        "--acls",
        "--xattrs",
        "--xattrs-include=user.*",
        "--xattrs-include=security.capability",
        "--warning=no-file-ignored",
        "--warning=no-xattr-write",
        "--anchored",
        "--exclude",
        "./dev/*",
        "-C",
    ]);
    cmd.arg(dest);
    Ok(cmd)
}

/// Extracts `archive` into `dest` and, for an unprivileged container,
/// shifts the owners into its id range.
pub fn extract_template(
    archive: &Path,
    dest: &Path,
    idmap: Option<&IdMap>,
) -> Result<(), LxcError> {
    if !archive.is_file() {
        return Err(LxcError::Config(format!(
            "template '{}' does not exist",
            archive.display()
        )));
    }
    let out = tar_command(archive, dest)?
        .output()
        .map_err(|e| LxcError::Command(format!("cannot run 'tar': {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        return Err(LxcError::Command(format!(
            "unable to extract template '{}': {first}",
            archive.display()
        )));
    }
    if let Some(map) = idmap {
        map.shift_tree(dest)?;
    }
    Ok(())
}

/// Makes an ext4 file system on a new raw volume (`mkfs.ext4`), as
/// upstream does for container disks that are not subvolumes; its root
/// directory belongs to the container's root (`root_owner`).
pub fn make_filesystem(path: &Path, root_owner: (u32, u32)) -> Result<(), LxcError> {
    let ext = format!(
        "lazy_itable_init=1,lazy_journal_init=1,root_owner={}:{}",
        root_owner.0, root_owner.1
    );
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", &ext])
        .arg(path)
        .output()
        .map_err(|e| {
            LxcError::Command(format!("cannot run 'mkfs.ext4' (install e2fsprogs): {e}"))
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(LxcError::Command(format!(
        "mkfs.ext4 '{}' failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Makes the loop devices attached to image `path` read its current size.
pub fn refresh_loop_capacity(path: &Path) {
    if let Ok(out) = Command::new("losetup").arg("-j").arg(path).output() {
        for dev in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').next())
        {
            let _ = Command::new("losetup").args(["-c", dev]).output();
        }
    }
}

/// Grows the ext4 file system of a volume that is mounted (its container
/// runs) to the volume's new size, online: a raw image's loop device
/// learns the new size first, then `resize2fs` grows the mounted file
/// system, as upstream's online resize.
pub fn grow_mounted_filesystem(path: &Path) -> Result<(), LxcError> {
    let device = if path.is_file() {
        let out = Command::new("losetup")
            .arg("-j")
            .arg(path)
            .output()
            .map_err(|e| LxcError::Command(format!("cannot run 'losetup': {e}")))?;
        let devs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').next().map(str::to_string))
            .collect();
        for dev in &devs {
            let out = Command::new("losetup")
                .args(["-c", dev])
                .output()
                .map_err(|e| LxcError::Command(format!("cannot run 'losetup': {e}")))?;
            if !out.status.success() {
                return Err(LxcError::Command(format!(
                    "losetup -c {dev} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        devs.into_iter().next().ok_or_else(|| {
            LxcError::Command(format!(
                "'{}' is not attached to a loop device",
                path.display()
            ))
        })?
    } else {
        path.display().to_string()
    };
    let out = Command::new("resize2fs")
        .arg(&device)
        .output()
        .map_err(|e| {
            LxcError::Command(format!("cannot run 'resize2fs' (install e2fsprogs): {e}"))
        })?;
    if !out.status.success() {
        return Err(LxcError::Command(format!(
            "resize2fs '{device}' failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Grows the ext4 file system of an unmounted volume to its new size
/// (`e2fsck -f` first, as `resize2fs` insists).
pub fn grow_filesystem(path: &Path) -> Result<(), LxcError> {
    // A loop device still attached to the image (the kernel detaches
    // autoclear devices lazily; `mount -o loop` reuses one of the same
    // file) would keep the old size: make it read the new one.
    if let Ok(out) = Command::new("losetup").arg("-j").arg(path).output() {
        for dev in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').next())
        {
            let _ = Command::new("losetup").args(["-c", dev]).output();
        }
    }
    for (tool, args) in [("e2fsck", &["-f", "-y"][..]), ("resize2fs", &[][..])] {
        let out = Command::new(tool)
            .args(args)
            .arg(path)
            .output()
            .map_err(|e| {
                LxcError::Command(format!("cannot run '{tool}' (install e2fsprogs): {e}"))
            })?;
        // e2fsck exits 1 when it corrected something, which is fine here.
        let ok = out.status.success() || (tool == "e2fsck" && out.status.code() == Some(1));
        if !ok {
            return Err(LxcError::Command(format!(
                "{tool} '{}' failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}
