//! Fresh SSH host keys for a new CT, so that CTs made from one template
//! do not share them. The keys are made on the host with `ssh-keygen`
//! (the CT cannot run anything yet) and written into the CT's `/etc/ssh`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::plugin::HostKeyTypes;
use super::{CtRoot, Result, SetupError};

/// A private directory for the key files, removed when dropped.
struct KeyDir(PathBuf);

impl KeyDir {
    fn create() -> io::Result<KeyDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        for n in 0..100 {
            let path = base.join(format!("oxve-ct-hostkeys-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(KeyDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::from(io::ErrorKind::AlreadyExists))
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn keygen(dir: &Path, ktype: &str, comment: &str) -> Result<(String, String)> {
    let file = dir.join(ktype);
    let out = Command::new("ssh-keygen")
        .arg("-q")
        .arg("-f")
        .arg(&file)
        .args(["-t", ktype, "-N", "", "-C", comment])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SetupError::SshKeygen(format!("cannot run ssh-keygen: {e}")))?;
    if !out.status.success() {
        return Err(SetupError::SshKeygen(format!(
            "ssh-keygen -t {ktype} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p)
            .map_err(|e| SetupError::SshKeygen(format!("reading {}: {e}", p.display())))
    };
    let private = read(file.clone())?;
    let public = read(file.with_extension("pub"))?;
    Ok((private, public))
}

/// Makes and installs new host keys when the CT has `/etc/ssh`.
pub(crate) fn rewrite_host_keys(ct: &CtRoot, types: HostKeyTypes) -> Result<()> {
    if types.is_empty() || !ct.fs.is_dir("/etc/ssh") {
        return Ok(());
    }
    let host = ct.hostname().split('.').next().unwrap_or("localhost");
    let comment = format!("root@{host}");
    let dir = KeyDir::create().map_err(|e| SetupError::SshKeygen(e.to_string()))?;
    let mut files = Vec::new();
    for (ktype, name) in types {
        tracing::info!("Creating SSH host key '{name}' - this may take some time ...");
        let (private, public) = keygen(&dir.0, ktype, &comment)?;
        files.push((format!("/etc/ssh/{name}"), private, 0o600));
        files.push((format!("/etc/ssh/{name}.pub"), public, 0o644));
    }
    // all keys at once, once all were made
    for (path, data, mode) in files {
        ct.set(&path, &data, Some(mode))?;
    }
    Ok(())
}
