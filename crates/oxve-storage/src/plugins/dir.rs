//! `dir`: volumes as files under a local directory.

use super::files::{ImageFiles, EXPORT_FORMATS};
use crate::config::StorageDef;
use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::plugin::{fs_usage, Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
use crate::volume::{self, VolName};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub struct DirPlugin {
    def: StorageDef,
    env: Env,
}

impl DirPlugin {
    pub fn new(def: StorageDef, env: Env) -> DirPlugin {
        DirPlugin { def, env }
    }

    fn files(&self) -> Result<ImageFiles<'_>> {
        image_files(self, &self.def, &*self.env.runner)
    }

    fn image(&self, volname: &str) -> Result<VolName> {
        image_vol(self, volname)
    }
}

/// The [`ImageFiles`] of a file-based plugin.
pub fn image_files<'a>(
    plugin: &dyn StoragePlugin,
    def: &'a StorageDef,
    runner: &'a dyn crate::exec::Runner,
) -> Result<ImageFiles<'a>> {
    let root = plugin
        .content_dir(Content::Images)
        .ok_or_else(|| StorageError::Other(format!("storage '{}' has no path", def.id)))?;
    Ok(ImageFiles { def, runner, root })
}

/// Parses `volname` and fails unless it is an image.
pub fn image_vol(plugin: &dyn StoragePlugin, volname: &str) -> Result<VolName> {
    let vol = plugin.parse_volname(volname)?;
    if !matches!(vol.content, Content::Images | Content::Rootdir) {
        return Err(StorageError::bad_volume(volname, "not an image"));
    }
    Ok(vol)
}

/// Makes a directory storage usable: the base path (unless it must be a
/// mount point that is not mounted) and the sub-directories of its content.
pub fn activate_dir(plugin: &dyn StoragePlugin, def: &StorageDef) -> Result<()> {
    let path = def
        .path()
        .ok_or_else(|| StorageError::Other(format!("storage '{}' has no path", def.id)))?;
    let must_mount = match def.get("is_mountpoint") {
        None | Some("no" | "0" | "") => None,
        Some("yes" | "1") => Some(path.clone()),
        Some(other) => Some(PathBuf::from(other)),
    };
    if let Some(mp) = must_mount {
        if !is_mount_point(&mp) {
            return Err(StorageError::Other(format!(
                "unable to activate storage '{}' - directory is expected to be a mount point but is not mounted: '{}'",
                def.id,
                mp.display()
            )));
        }
    }
    let opt = |key: &str| def.get(key).map(|_| def.flag(key));
    if !path.is_dir() {
        if opt("create-base-path").or(opt("mkdir")).unwrap_or(true) {
            std::fs::create_dir_all(&path).map_err(|e| {
                StorageError::io(format!("unable to create '{}'", path.display()), e)
            })?;
        } else {
            return Err(StorageError::Other(format!(
                "unable to activate storage '{}' - directory '{}' does not exist",
                def.id,
                path.display()
            )));
        }
    }
    if opt("create-subdirs").or(opt("mkdir")).unwrap_or(true) {
        for c in def.content().iter() {
            if let Some(dir) = plugin.content_dir(c) {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    StorageError::io(format!("unable to create '{}'", dir.display()), e)
                })?;
            }
        }
    }
    Ok(())
}

/// Whether `path` is the root of a mounted file system.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = path.to_string_lossy();
    let want = want.trim_end_matches('/');
    mounts.lines().any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|mp| mp.replace("\\040", " ") == want)
    })
}

/// The file-image operations every directory-like plugin shares.
macro_rules! file_image_ops {
    () => {
        fn parse_volname(&self, volname: &str) -> Result<VolName> {
            volume::parse_file_volname(volname)
        }

        fn path(&self, volname: &str) -> Result<PathBuf> {
            let vol = self.parse_volname(volname)?;
            match vol.content {
                Content::Images | Content::Rootdir => Ok(self.files()?.path(&vol)),
                _ => self.file_path(&vol),
            }
        }

        fn list_images(&self, vmid: Option<u32>) -> Result<Vec<VolumeInfo>> {
            self.files()?.list(vmid)
        }

        fn create_image(
            &self,
            vmid: u32,
            name: &str,
            format: &str,
            size_kib: u64,
        ) -> Result<String> {
            self.files()?.create(vmid, name, format, size_kib)
        }

        fn free_image(&self, volname: &str) -> Result<()> {
            let vol = self.image(volname)?;
            let files = self.files()?;
            let all = if vol.is_base {
                files.list(None)?
            } else {
                Vec::new()
            };
            files.free(&vol, &all)
        }

        fn volume_size(&self, volname: &str) -> Result<(u64, u64)> {
            let vol = self.image(volname)?;
            let files = self.files()?;
            let (size, used, _) =
                files.info(&files.path(&vol), vol.format.as_deref().unwrap_or("raw"))?;
            Ok((size, used))
        }

        fn resize(&self, volname: &str, size: u64) -> Result<()> {
            self.files()?.resize(&self.image(volname)?, size)
        }

        fn snapshot(&self, volname: &str, snap: &str) -> Result<()> {
            self.files()?
                .qcow2_snapshot(&self.image(volname)?, "-c", snap)
        }

        fn rollback(&self, volname: &str, snap: &str) -> Result<()> {
            self.files()?
                .qcow2_snapshot(&self.image(volname)?, "-a", snap)
        }

        fn delete_snapshot(&self, volname: &str, snap: &str) -> Result<()> {
            self.files()?
                .qcow2_snapshot(&self.image(volname)?, "-d", snap)
        }

        fn create_base(&self, volname: &str) -> Result<String> {
            self.files()?.create_base(&self.image(volname)?)
        }

        fn clone_image(&self, volname: &str, vmid: u32, name: &str) -> Result<String> {
            self.files()?.clone(&self.image(volname)?, vmid, name)
        }

        fn rename(&self, volname: &str, vmid: u32, name: &str) -> Result<String> {
            self.files()?.rename(&self.image(volname)?, vmid, name)
        }

        fn export(
            &self,
            volname: &str,
            format: &str,
            snapshot: Option<&str>,
            out: &mut dyn Write,
        ) -> Result<()> {
            if snapshot.is_some() {
                return Err(self.unsupported("exporting a snapshot", volname));
            }
            self.files()?.export(&self.image(volname)?, format, out)
        }

        fn import(
            &self,
            vmid: u32,
            name: &str,
            format: &str,
            input: &mut dyn Read,
        ) -> Result<String> {
            self.files()?.import(vmid, name, format, input)
        }
    };
}
pub(crate) use file_image_ops;

/// Capabilities of a directory of image files.
pub const FILE_CAPS: Capabilities = Capabilities {
    snapshots: true,
    linked_clones: true,
    resize: true,
    rename: true,
    export_formats: EXPORT_FORMATS,
    import_formats: EXPORT_FORMATS,
};

impl StoragePlugin for DirPlugin {
    fn def(&self) -> &StorageDef {
        &self.def
    }

    fn capabilities(&self) -> Capabilities {
        FILE_CAPS
    }

    fn activate(&self) -> Result<()> {
        activate_dir(self, &self.def)
    }

    fn status(&self) -> Result<Usage> {
        fs_usage(&self.def.path().unwrap_or_default())
    }

    file_image_ops!();
}
