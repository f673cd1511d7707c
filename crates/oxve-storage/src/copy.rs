//! Copying a volume to another name or storage on this node, built on
//! what every plugin already offers: images travel as an export stream
//! piped into an import (`raw+size`, `qcow2+size`, `btrfs`, ...), files
//! (iso, vztmpl, snippets, backups, import) are copied and put in place
//! only when complete. Also the name choice of an import that may rename.

use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::plugin::StoragePlugin;
use crate::volume::{VolName, VolumeId};
use std::io::Write;
use std::path::Path;

/// Copies `src_volname` of `src` to `dst_volname` of `dst` (which may be
/// the same storage) and returns the new volume name. The target must not
/// exist; a failure leaves no target behind.
pub fn copy_volume(
    src: &dyn StoragePlugin,
    src_volname: &str,
    dst: &dyn StoragePlugin,
    dst_volname: &str,
) -> Result<String> {
    copy_volume_at(src, src_volname, None, dst, dst_volname)
}

/// [`copy_volume`] of an image as it was at `snapshot` of the source
/// (`None`: as it is now). Only images have snapshots.
pub fn copy_volume_at(
    src: &dyn StoragePlugin,
    src_volname: &str,
    snapshot: Option<&str>,
    dst: &dyn StoragePlugin,
    dst_volname: &str,
) -> Result<String> {
    let svol = src.parse_volname(src_volname)?;
    let dvol = dst.parse_volname(dst_volname)?;
    let is_image = |c: Content| matches!(c, Content::Images | Content::Rootdir);
    if svol.content != dvol.content && !(is_image(svol.content) && is_image(dvol.content)) {
        return Err(StorageError::Other(format!(
            "cannot copy {} volume '{src_volname}' to '{dst_volname}', which names {} content",
            svol.content, dvol.content
        )));
    }
    dst.check_content(dvol.content)?;
    if is_image(svol.content) {
        copy_image(src, src_volname, &svol, snapshot, dst, &dvol)
    } else if let Some(snap) = snapshot {
        Err(StorageError::Other(format!(
            "'{src_volname}' is not an image: it has no snapshot '{snap}'"
        )))
    } else {
        copy_file(src, src_volname, dst, dst_volname)
    }
}

/// The stream format to move image `vol` of `src` to `dst`: the first of
/// the source's export formats the target imports and that fits the
/// image's format (`qcow2+size` only for qcow2 images).
pub fn transfer_format(
    src: &dyn StoragePlugin,
    vol: &VolName,
    dst: &dyn StoragePlugin,
) -> Result<&'static str> {
    let format = vol.format.as_deref().unwrap_or("raw");
    // A container subvolume travels as a tar stream.
    let stream = if format == "subvol" { "tar" } else { format };
    let imports = dst.capabilities().import_formats;
    src.capabilities()
        .export_formats
        .iter()
        .copied()
        .find(|f| imports.contains(f) && f.strip_suffix("+size").is_none_or(|base| base == stream))
        .ok_or_else(|| {
            StorageError::Other(format!(
                "cannot copy '{}' ({format}) from storage type '{}' to '{}': no common stream format",
                vol.name,
                src.def().kind.as_str(),
                dst.def().kind.as_str()
            ))
        })
}

/// The image name an import into `dst` uses for `vol`: its own name, or,
/// with `allow_rename` and the name taken, the first free
/// `vm-<vmid>-disk-<n>` (`subvol-...`) with the same extension.
pub fn import_name(dst: &dyn StoragePlugin, vol: &VolName, allow_rename: bool) -> Result<String> {
    let vmid = vol.vmid.ok_or_else(|| {
        StorageError::bad_volume(&vol.name, "an imported image needs a guest id in its name")
    })?;
    if !allow_rename {
        return Ok(vol.name.clone());
    }
    let stem = |n: &str| n.split('.').next().unwrap_or(n).to_string();
    let taken: Vec<String> = dst
        .list_images(Some(vmid))?
        .iter()
        .filter_map(|v| v.volid.rsplit(['/', ':']).next().map(stem))
        .collect();
    if !taken.contains(&stem(&vol.name)) {
        return Ok(vol.name.clone());
    }
    let ext = vol
        .name
        .split_once('.')
        .map(|(_, e)| format!(".{e}"))
        .unwrap_or_default();
    let prefix = if vol.format.as_deref() == Some("subvol") {
        "subvol"
    } else {
        "vm"
    };
    (0..10_000)
        .map(|n| format!("{prefix}-{vmid}-disk-{n}"))
        .find(|s| !taken.contains(s) && !taken.contains(&s.replacen(prefix, "base", 1)))
        .map(|s| format!("{s}{ext}"))
        .ok_or_else(|| {
            StorageError::Other(format!(
                "unable to find a free name for guest {vmid} on storage '{}'",
                dst.def().id
            ))
        })
}

fn copy_image(
    src: &dyn StoragePlugin,
    src_volname: &str,
    svol: &VolName,
    snapshot: Option<&str>,
    dst: &dyn StoragePlugin,
    dvol: &VolName,
) -> Result<String> {
    if svol.base.is_some() {
        return Err(StorageError::Other(format!(
            "cannot copy linked clone '{src_volname}': it depends on its base image"
        )));
    }
    if dvol.base.is_some() {
        return Err(StorageError::bad_volume(
            &dvol.name,
            "a copy cannot be a linked clone",
        ));
    }
    let format = transfer_format(src, svol, dst)?;
    if let (Some(base), true) = (format.strip_suffix("+size"), dst.def().kind.is_file_based()) {
        let base = if base == "tar" { "subvol" } else { base };
        if dvol.format.as_deref() != Some(base) {
            return Err(StorageError::bad_volume(
                &dvol.name,
                format!("the copy of a {base} image must be named '*.{base}'"),
            ));
        }
    }
    let vmid = dvol.vmid.unwrap_or_default();
    src.activate_volume(src_volname)?;
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| StorageError::io("unable to create a pipe for the copy", e))?;
    std::thread::scope(|s| {
        let exporter = s.spawn(move || {
            let mut writer = writer;
            src.export(src_volname, format, snapshot, &mut writer)
                .and_then(|_| {
                    writer
                        .flush()
                        .map_err(|e| StorageError::io("flushing the export stream", e))
                })
        });
        let imported = dst.import(vmid, &dvol.name, format, &mut reader);
        // An import that gave up must not leave the export blocked on a full pipe.
        drop(reader);
        let exported = exporter
            .join()
            .unwrap_or_else(|_| Err(StorageError::Other("the export thread panicked".into())));
        match (exported, imported) {
            (Ok(()), imported) => imported,
            (Err(e), Ok(volname)) => {
                let _ = dst.free_image(&volname);
                Err(e)
            }
            // Whichever gave up first says why: an export cut off by a
            // closed pipe followed the import's failure, else the import
            // only saw the stream end.
            (Err(e), Err(i)) if is_broken_pipe(&e) => Err(i),
            (Err(e), Err(_)) => Err(e),
        }
    })
}

fn is_broken_pipe(e: &StorageError) -> bool {
    match e {
        StorageError::Io { source, .. } => source.kind() == std::io::ErrorKind::BrokenPipe,
        other => other
            .to_string()
            .to_ascii_lowercase()
            .contains("broken pipe"),
    }
}

fn copy_file(
    src: &dyn StoragePlugin,
    src_volname: &str,
    dst: &dyn StoragePlugin,
    dst_volname: &str,
) -> Result<String> {
    let from = src.path(src_volname)?;
    let to = dst.path(dst_volname)?;
    if !from.is_file() {
        return Err(StorageError::NoSuchVolume(
            VolumeId::new(&src.def().id, src_volname).to_string(),
        ));
    }
    let dir = to
        .parent()
        .ok_or_else(|| StorageError::bad_volume(dst_volname, "no directory"))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| StorageError::io(format!("unable to create '{}'", dir.display()), e))?;
    let target_id = VolumeId::new(&dst.def().id, dst_volname).to_string();
    if to.exists() {
        return Err(StorageError::AlreadyExists(target_id));
    }
    let tmp = hidden_beside(&to);
    let result = copy_synced(&from, &tmp).and_then(|_| {
        // A hard link never replaces an existing file, unlike rename.
        std::fs::hard_link(&tmp, &to).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => StorageError::AlreadyExists(target_id.clone()),
            _ => StorageError::io(format!("unable to create '{}'", to.display()), e),
        })
    });
    let _ = std::fs::remove_file(&tmp);
    result.map(|_| dst_volname.to_string())
}

/// Copies `from` into the new file `to` and syncs it.
fn copy_synced(from: &Path, to: &Path) -> Result<()> {
    let io = |e| StorageError::io(format!("unable to copy to '{}'", to.display()), e);
    let mut input = std::fs::File::open(from)
        .map_err(|e| StorageError::io(format!("unable to open '{}'", from.display()), e))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(io)?;
    std::io::copy(&mut input, &mut out)
        .and_then(|_| out.sync_all())
        .map_err(io)
}

/// A hidden name beside `path`, unique per process and call; listings skip it.
fn hidden_beside(path: &Path) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.copy-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::SystemRunner;
    use crate::plugin::Env;
    use crate::StorageConfig;
    use std::sync::Arc;

    fn storages(root: &Path) -> (Box<dyn StoragePlugin>, Box<dyn StoragePlugin>) {
        let cfg = StorageConfig::parse(&format!(
            "dir: a\n\tpath {0}/a\n\tcontent images,iso,snippets\n\ndir: b\n\tpath {0}/b\n\tcontent images,iso\n\n",
            root.display()
        ));
        let open = |id: &str| {
            let env = Env {
                runner: Arc::new(SystemRunner),
                run_dir: root.join("run"),
                secret: None,
            };
            let p = crate::plugins::open(cfg.get(id).unwrap(), env).unwrap();
            p.activate().unwrap();
            p
        };
        (open("a"), open("b"))
    }

    #[test]
    fn raw_image_and_iso_between_dir_storages() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = storages(tmp.path());
        let vol = a.alloc_image(100, Some("raw"), None, 64).unwrap();
        let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        std::fs::write(a.path(&vol).unwrap(), &data).unwrap();
        let copied = copy_volume(&*a, &vol, &*b, "100/vm-100-disk-3.raw").unwrap();
        assert_eq!(copied, "100/vm-100-disk-3.raw");
        assert_eq!(std::fs::read(b.path(&copied).unwrap()).unwrap(), data);
        // The target exists now: refused, and the existing copy stays.
        let again = copy_volume(&*a, &vol, &*b, "100/vm-100-disk-3.raw").unwrap_err();
        assert!(matches!(again, StorageError::AlreadyExists(_)), "{again}");
        assert_eq!(std::fs::read(b.path(&copied).unwrap()).unwrap(), data);
        // A raw image cannot become a qcow2 file by its name.
        let e = copy_volume(&*a, &vol, &*b, "100/vm-100-disk-4.qcow2").unwrap_err();
        assert!(e.to_string().contains("*.raw"), "{e}");
        assert!(!b.path("100/vm-100-disk-4.qcow2").unwrap().exists());

        std::fs::write(a.path("iso/x.iso").unwrap(), b"iso data").unwrap();
        copy_volume(&*a, "iso/x.iso", &*b, "iso/y.iso").unwrap();
        assert_eq!(
            std::fs::read(b.path("iso/y.iso").unwrap()).unwrap(),
            b"iso data"
        );
        let e = copy_volume(&*a, "iso/x.iso", &*b, "100/vm-100-disk-5.raw").unwrap_err();
        assert!(e.to_string().contains("names images content"), "{e}");
        std::fs::write(a.path("snippets/u.yaml").unwrap(), b"x").unwrap();
        let e = copy_volume(&*a, "snippets/u.yaml", &*b, "snippets/u.yaml").unwrap_err();
        assert!(matches!(e, StorageError::ContentNotAllowed { .. }), "{e}");
        let e = copy_volume(&*a, "iso/missing.iso", &*b, "iso/m.iso").unwrap_err();
        assert!(matches!(e, StorageError::NoSuchVolume(_)), "{e}");
        // No temporary files are left behind.
        let hidden: Vec<_> = std::fs::read_dir(b.content_dir(Content::Iso).unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(hidden.is_empty());
    }

    #[test]
    fn import_names_move_on_when_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, b) = storages(tmp.path());
        let vol = b.parse_volname("100/vm-100-disk-0.raw").unwrap();
        assert_eq!(import_name(&*b, &vol, true).unwrap(), "vm-100-disk-0.raw");
        b.alloc_image(100, Some("raw"), None, 4).unwrap();
        b.alloc_image(100, Some("qcow2"), None, 4).ok();
        assert_eq!(import_name(&*b, &vol, false).unwrap(), "vm-100-disk-0.raw");
        let free = import_name(&*b, &vol, true).unwrap();
        assert!(
            free.ends_with(".raw") && free != "vm-100-disk-0.raw",
            "{free}"
        );
    }
}
