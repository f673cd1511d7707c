//! `nfs`: a directory storage on an NFS export, mounted at `path` by
//! [`StoragePlugin::activate`]. Also the mount handling the network file
//! systems share (`activate_mounted`, `deactivate_mounted`,
//! `mounted_usage`): mount only when `path` is not a mount point yet,
//! unmount on deactivation, report space only while mounted.

use super::bracket_ipv6;
use super::dir::{activate_dir, file_image_ops, image_files, image_vol, is_mount_point, FILE_CAPS};
use super::files::ImageFiles;
use super::required;
use crate::config::StorageDef;
use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::exec::{Cmd, Runner};
use crate::plugin::{fs_usage, Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
use crate::volume::{self, VolName};
use std::io::{Read, Write};
use std::path::PathBuf;

pub struct NfsPlugin {
    def: StorageDef,
    env: Env,
}

impl NfsPlugin {
    pub fn new(def: StorageDef, env: Env) -> NfsPlugin {
        NfsPlugin { def, env }
    }

    fn files(&self) -> Result<ImageFiles<'_>> {
        image_files(self, &self.def, &*self.env.runner)
    }

    fn image(&self, volname: &str) -> Result<VolName> {
        image_vol(self, volname)
    }

    /// `mount -t nfs <server>:<export> <path> [-o <options>]`.
    fn mount_cmd(&self) -> Result<Cmd> {
        let server = bracket_ipv6(required(&self.def, "server")?);
        let export = required(&self.def, "export")?;
        let mut cmd = Cmd::new("mount")
            .args(["-t", "nfs"])
            .arg(format!("{server}:{export}"))
            .arg(mount_path(&self.def)?.to_string_lossy());
        if let Some(options) = self.def.get("options").filter(|o| !o.is_empty()) {
            cmd = cmd.args(["-o", options]);
        }
        Ok(cmd)
    }
}

impl StoragePlugin for NfsPlugin {
    fn def(&self) -> &StorageDef {
        &self.def
    }

    fn capabilities(&self) -> Capabilities {
        FILE_CAPS
    }

    fn activate(&self) -> Result<()> {
        activate_mounted(self, &*self.env.runner, || self.mount_cmd())
    }

    fn deactivate(&self) -> Result<()> {
        deactivate_mounted(&self.def, &*self.env.runner)
    }

    fn status(&self) -> Result<Usage> {
        mounted_usage(&self.def)
    }

    file_image_ops!();
}

/// The mount point of a network storage.
pub(crate) fn mount_path(def: &StorageDef) -> Result<PathBuf> {
    Ok(PathBuf::from(required(def, "path")?))
}

/// Mounts a network storage unless `path` already is a mount point, then
/// makes its content directories. The base directory is only created when
/// nothing is mounted (creating it on a hung mount would hang too).
pub(crate) fn activate_mounted(
    plugin: &dyn StoragePlugin,
    runner: &dyn Runner,
    mount: impl FnOnce() -> Result<Cmd>,
) -> Result<()> {
    let def = plugin.def();
    let path = mount_path(def)?;
    if !is_mount_point(&path) {
        let opt = |key: &str| def.get(key).map(|_| def.flag(key));
        if !path.is_dir() && opt("create-base-path").or(opt("mkdir")).unwrap_or(true) {
            std::fs::create_dir_all(&path).map_err(|e| {
                StorageError::io(format!("unable to create '{}'", path.display()), e)
            })?;
        }
        if !path.is_dir() {
            return Err(StorageError::Other(format!(
                "unable to activate storage '{}' - directory '{}' does not exist",
                def.id,
                path.display()
            )));
        }
        runner.run(&mount()?)?;
    }
    activate_dir(plugin, def)
}

/// Unmounts a network storage that is mounted.
pub(crate) fn deactivate_mounted(def: &StorageDef, runner: &dyn Runner) -> Result<()> {
    let path = mount_path(def)?;
    if is_mount_point(&path) {
        runner.run(&Cmd::new("umount").arg(path.to_string_lossy()))?;
    }
    Ok(())
}

/// Space of a mounted network storage; an error while it is not mounted
/// (the empty mount point would report the local root file system).
pub(crate) fn mounted_usage(def: &StorageDef) -> Result<Usage> {
    let path = mount_path(def)?;
    if !is_mount_point(&path) {
        return Err(StorageError::Other(format!(
            "storage '{}' is not active - nothing is mounted at '{}'",
            def.id,
            path.display()
        )));
    }
    fs_usage(&path)
}

/// One export of an NFS server, as `showmount --exports` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NfsExport {
    /// The exported directory.
    pub path: String,
    /// Who may mount it (`192.168.1.0/24,10.0.0.5`, `*`, `(everyone)`).
    pub options: String,
}

/// Parses `showmount --no-headers --exports <server>`: per line an absolute
/// path, blanks, then the clients allowed. showmount does not quote, so a
/// path ends at its first blank (as upstream reads it); lines that are not
/// an export are skipped.
pub fn parse_showmount(text: &str) -> Vec<NfsExport> {
    text.lines()
        .filter_map(|line| {
            let (path, options) = line.trim_end().split_once(char::is_whitespace)?;
            let options = options.trim_start();
            (path.len() > 1 && path.starts_with('/') && !options.is_empty()).then(|| NfsExport {
                path: path.to_string(),
                options: options.to_string(),
            })
        })
        .collect()
}
