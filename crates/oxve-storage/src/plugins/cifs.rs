//! `cifs`: a directory storage on an SMB/CIFS share, mounted at `path`.
//! The password (the storage's secret) goes into a 0600 credentials file
//! under the run directory, never onto the command line; without one the
//! share is mounted as guest, and with `sec=krb5*` in `options` Kerberos
//! does the authentication.

use super::dir::{file_image_ops, image_files, image_vol, FILE_CAPS};
use super::files::ImageFiles;
use super::nfs::{activate_mounted, deactivate_mounted, mount_path, mounted_usage};
use super::{bracket_ipv6, required, write_private_file};
use crate::config::StorageDef;
use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::exec::Cmd;
use crate::plugin::{Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
use crate::volume::{self, VolName};
use std::io::{Read, Write};
use std::path::PathBuf;

pub struct CifsPlugin {
    def: StorageDef,
    env: Env,
}

impl CifsPlugin {
    pub fn new(def: StorageDef, env: Env) -> CifsPlugin {
        CifsPlugin { def, env }
    }

    fn files(&self) -> Result<ImageFiles<'_>> {
        image_files(self, &self.def, &*self.env.runner)
    }

    fn image(&self, volname: &str) -> Result<VolName> {
        image_vol(self, volname)
    }

    /// The credentials file `mount.cifs` reads the password from.
    pub fn credentials_file(&self) -> PathBuf {
        self.env
            .run_dir
            .join("cifs")
            .join(format!("{}.cred", self.def.id))
    }

    fn uses_kerberos(&self) -> bool {
        self.def.get("options").is_some_and(|o| {
            o.split(',')
                .map(|opt| opt.trim().to_ascii_lowercase())
                .any(|opt| matches!(opt.as_str(), "sec=krb5" | "sec=krb5i" | "sec=krb5p"))
        })
    }

    /// `//<server>/<share>[/<subdir>]`.
    fn source(&self) -> Result<String> {
        let server = bracket_ipv6(required(&self.def, "server")?);
        let share = required(&self.def, "share")?;
        let subdir = match self.def.get("subdir").map(|s| s.trim_matches('/')) {
            Some(s) if !s.is_empty() => format!("/{s}"),
            _ => String::new(),
        };
        Ok(format!("//{server}/{share}{subdir}"))
    }

    /// `mount -t cifs <source> <path> -o soft <auth options> -o vers=<v> [-o <options>]`.
    fn mount_cmd(&self) -> Result<Cmd> {
        let mut cmd = Cmd::new("mount")
            .args(["-t", "cifs"])
            .arg(self.source()?)
            .arg(mount_path(&self.def)?.to_string_lossy())
            .args(["-o", "soft"]);
        let user = self.def.get("username").filter(|u| !u.is_empty());
        match (&self.env.secret, user) {
            _ if self.uses_kerberos() => {}
            (Some(password), Some(user)) => {
                // One `key=value` per line: a line break would smuggle in more keys.
                if password.contains(['\n', '\r']) {
                    return Err(StorageError::Other(format!(
                        "the password of storage '{}' must not contain a line break",
                        self.def.id
                    )));
                }
                let file = self.credentials_file();
                write_private_file(&file, &format!("password={password}\n"))?;
                cmd = cmd
                    .arg("-o")
                    .arg(format!("username={user}"))
                    .arg("-o")
                    .arg(format!("credentials={}", file.display()));
                if let Some(domain) = self.def.get("domain").filter(|d| !d.is_empty()) {
                    cmd = cmd.arg("-o").arg(format!("domain={domain}"));
                }
            }
            _ => cmd = cmd.args(["-o", "guest,username=guest"]),
        }
        let vers = self.def.get("smbversion").unwrap_or("default");
        cmd = cmd.arg("-o").arg(format!("vers={vers}"));
        if let Some(options) = self.def.get("options").filter(|o| !o.is_empty()) {
            cmd = cmd.args(["-o", options]);
        }
        Ok(cmd)
    }
}

impl StoragePlugin for CifsPlugin {
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
