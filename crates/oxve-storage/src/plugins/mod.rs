//! One file per storage type. [`open`] turns a definition into its plugin.

pub mod btrfs;
pub mod cephfs;
pub mod cifs;
pub mod dir;
pub mod files;
pub mod iscsi;
pub mod iscsidirect;
pub mod lvm;
pub mod lvmthin;
pub mod nfs;
pub mod rbd;
pub mod zfspool;

use crate::config::StorageDef;
use crate::error::{Result, StorageError};
use crate::plugin::{Env, StoragePlugin};
use crate::types::StorageType;

/// The plugin for `def`.
pub fn open(def: StorageDef, env: Env) -> Result<Box<dyn StoragePlugin>> {
    Ok(match def.kind {
        StorageType::Dir => Box::new(dir::DirPlugin::new(def, env)),
        StorageType::Btrfs => Box::new(btrfs::BtrfsPlugin::new(def, env)),
        StorageType::Nfs => Box::new(nfs::NfsPlugin::new(def, env)),
        StorageType::Cifs => Box::new(cifs::CifsPlugin::new(def, env)),
        StorageType::CephFs => Box::new(cephfs::CephFsPlugin::new(def, env)),
        StorageType::Lvm => Box::new(lvm::LvmPlugin::new(def, env)),
        StorageType::LvmThin => Box::new(lvmthin::LvmThinPlugin::new(def, env)),
        StorageType::ZfsPool => Box::new(zfspool::ZfsPoolPlugin::new(def, env)),
        StorageType::Rbd => Box::new(rbd::RbdPlugin::new(def, env)),
        StorageType::Iscsi => Box::new(iscsi::IscsiPlugin::new(def, env)),
        StorageType::IscsiDirect => Box::new(iscsidirect::IscsiDirectPlugin::new(def, env)),
        other => {
            return Err(StorageError::Other(format!(
                "storage type '{}' is not supported by oxve yet",
                other.as_str()
            )))
        }
    })
}

/// The value of an option the storage cannot work without.
pub(crate) fn required<'a>(def: &'a StorageDef, key: &str) -> Result<&'a str> {
    def.get(key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| StorageError::Option {
            key: key.into(),
            message: format!("storage '{}' has no '{key}' set", def.id),
        })
}

/// Turns a tool's "name is taken" failure into [`StorageError::AlreadyExists`]
/// (so that allocation moves on to the next name); other errors pass.
pub(crate) fn taken_if(err: StorageError, needles: &[&str], volname: &str) -> StorageError {
    match &err {
        StorageError::Command { message, .. } if needles.iter().any(|n| message.contains(n)) => {
            StorageError::AlreadyExists(volname.into())
        }
        _ => err,
    }
}

/// Whether a tool failed because the object is not there.
pub(crate) fn is_missing(err: &StorageError, needles: &[&str]) -> bool {
    matches!(err, StorageError::Command { message, .. } if needles.iter().any(|n| message.contains(n)))
}

/// Checks a snapshot name before it reaches a command line: letters,
/// digits, `_` and `-`, not starting with `-` (it would read as an option).
pub(crate) fn check_snap_name(snap: &str) -> Result<()> {
    let ok = !snap.is_empty()
        && snap.len() <= 64
        && !snap.starts_with('-')
        && snap
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StorageError::Other(format!(
            "invalid snapshot name '{snap}'"
        )))
    }
}

/// Writes a private run-time file (credentials, keyrings) with mode 0600,
/// replacing it atomically; unchanged content is not rewritten.
pub(crate) fn write_private_file(path: &std::path::Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    let io = |e| StorageError::io(format!("unable to write '{}'", path.display()), e);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    // Unique per writer, so concurrent activations never share a temporary file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

/// `fd00::1` → `[fd00::1]`; other hosts unchanged (for `host:path` sources).
pub(crate) fn bracket_ipv6(host: &str) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}
