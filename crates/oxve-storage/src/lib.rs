//! oxve-storage: `storage.cfg`, volume ids and the storage plugins.
//!
//! Shaped like Incus's storage drivers: one trait ([`plugin::StoragePlugin`])
//! with shared behaviour in its provided methods, one file per storage type
//! under [`plugins`], and one table of what each type allows
//! ([`types`]). Every external tool runs through [`exec::Runner`], so the
//! exact command lines are golden-tested and the real thing is system-tested.

pub mod aplinfo;
pub mod capabilities;
pub mod config;
pub mod content;
pub mod copy;
pub mod error;
pub mod exec;
pub mod plugin;
pub mod plugins;
pub mod prune;
pub mod scan;
pub mod types;
pub mod volume;

pub use config::{StorageConfig, StorageDef};
pub use content::{Content, ContentSet};
pub use error::{Result, StorageError};
pub use plugin::{Capabilities, Env, StoragePlugin, Usage, VolumeInfo};
pub use types::StorageType;
pub use volume::{VolName, VolumeId};
