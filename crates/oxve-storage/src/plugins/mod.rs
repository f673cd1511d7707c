//! One file per storage type. [`open`] turns a definition into its plugin.

pub mod btrfs;
pub mod dir;
pub mod files;

use crate::config::StorageDef;
use crate::error::{Result, StorageError};
use crate::plugin::{Env, StoragePlugin};
use crate::types::StorageType;

/// The plugin for `def`.
pub fn open(def: StorageDef, env: Env) -> Result<Box<dyn StoragePlugin>> {
    Ok(match def.kind {
        StorageType::Dir => Box::new(dir::DirPlugin::new(def, env)),
        StorageType::Btrfs => Box::new(btrfs::BtrfsPlugin::new(def, env)),
        other => {
            return Err(StorageError::Other(format!(
                "storage type '{}' is not supported by oxve yet",
                other.as_str()
            )))
        }
    })
}
