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
        // QEMU's image locks would become mandatory SMB byte-range locks,
        // and QEMU's own writes to a locked range then fail with EACCES
        // (see DEVIATIONS.md): keep byte-range locks on the client.
        if !self.def.get("options").is_some_and(|o| o.contains("nobrl")) {
            cmd = cmd.args(["-o", "nobrl"]);
        }
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

/// One disk share of an SMB server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CifsShare {
    /// The share name.
    pub share: String,
    /// The server's comment on it (may be empty).
    pub description: String,
}

/// What `smbclient --grepable -L <server>` printed: the disk shares, and
/// the lines that report an NT status other than success (a failed logon
/// or browse is told on standard output, not only in the exit status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmbShareList {
    pub shares: Vec<CifsShare>,
    pub failures: Vec<String>,
}

/// Parses `smbclient -g -L` output: `Disk|<share>|<comment>` lines are
/// shares (printers, devices and `IPC$` are not storage); `Server|` and
/// `Workgroup|` lines and other chatter are skipped.
pub fn parse_smbclient_list(text: &str) -> SmbShareList {
    let mut list = SmbShareList::default();
    for line in text.lines() {
        let mut fields = line.splitn(3, '|');
        if let (Some("Disk"), Some(share)) = (fields.next(), fields.next()) {
            if !share.is_empty() {
                list.shares.push(CifsShare {
                    share: share.to_string(),
                    description: fields.next().unwrap_or("").trim_end().to_string(),
                });
            }
            continue;
        }
        let status = line
            .split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ',' | ':'))
            .find(|w| w.starts_with("NT_STATUS_"));
        if status.is_some_and(|s| s != "NT_STATUS_SUCCESS" && s != "NT_STATUS_OK") {
            list.failures.push(line.trim().to_string());
        }
    }
    list
}
