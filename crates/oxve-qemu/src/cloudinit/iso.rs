//! The ISO image of a seed and its writing into the drive's volume,
//! with the real tools (`genisoimage`, `qemu-img`).

use super::{CloudInitError, Seed};
use std::path::Path;
use std::process::Command;

/// Writes the seed's files below `scratch` (emptied first, removed after)
/// and makes the ISO `iso` of them: ISO 9660 level 3 with Rock Ridge and
/// Joliet names, labelled for the format, as upstream.
pub fn build_iso(seed: &Seed, scratch: &Path, iso: &Path) -> Result<(), CloudInitError> {
    let io = |what: String| move |source| CloudInitError::Io { what, source };
    let _ = std::fs::remove_dir_all(scratch);
    let result = (|| {
        for (path, content) in &seed.files {
            let file = scratch.join(path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(io(format!("cannot create '{}'", dir.display())))?;
            }
            std::fs::write(&file, content)
                .map_err(io(format!("cannot write '{}'", file.display())))?;
        }
        let mut cmd = Command::new("genisoimage");
        cmd.args(["-quiet", "-iso-level", "3", "-J", "-R", "-V"])
            .arg(seed.ci_type.label())
            .arg("-o")
            .arg(iso)
            .arg(scratch);
        run("genisoimage", &mut cmd)
    })();
    let _ = std::fs::remove_dir_all(scratch);
    result
}

/// Writes ISO image `iso` into the existing volume at `target` (format
/// `format`, virtual size `size` bytes): the ISO is padded to the
/// volume's size and converted onto it with `qemu-img convert -n`, so the
/// volume keeps its size and place.
pub fn write_volume(
    iso: &Path,
    target: &Path,
    format: &str,
    size: u64,
) -> Result<(), CloudInitError> {
    let io = |what: String| move |source| CloudInitError::Io { what, source };
    let len = std::fs::metadata(iso)
        .map_err(io(format!("cannot read '{}'", iso.display())))?
        .len();
    if len > size {
        return Err(CloudInitError::Config(format!(
            "the cloud-init image ({len} bytes) is larger than its volume ({size} bytes)"
        )));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(iso)
        .and_then(|f| f.set_len(size))
        .map_err(io(format!("cannot pad '{}'", iso.display())))?;
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-n", "-f", "raw", "-O", format])
        .arg(iso)
        .arg(target);
    run("qemu-img", &mut cmd)
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<(), CloudInitError> {
    let out = cmd.output().map_err(|e| CloudInitError::Tool {
        tool,
        message: if e.kind() == std::io::ErrorKind::NotFound {
            format!("'{tool}' is not installed")
        } else {
            e.to_string()
        },
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(CloudInitError::Tool {
        tool,
        message: format!("{} ({})", stderr.trim(), out.status),
    })
}
