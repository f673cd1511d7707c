//! The API side of storage: reading and writing `storage.cfg` in the
//! store, the secrets kept next to it in `priv/`, and opening a plugin with
//! this node's runner and run directory.

use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use oxve_storage::config::AddError;
use oxve_storage::exec::SystemRunner;
use oxve_storage::{Env, StorageConfig, StorageDef, StoragePlugin, StorageType};
use std::path::Path;
use std::sync::Arc;

/// Store key of the storage definitions.
pub const STORAGE_CFG: &str = "storage.cfg";

/// The default storage of a fresh node: `local`, a directory under the root.
pub fn default_config(node_root: &std::path::Path) -> String {
    format!(
        "dir: local\n\tpath {}\n\tcontent backup,images,import,iso,rootdir,snippets,vztmpl\n\n",
        node_root.join("var/lib/vz").display()
    )
}

/// Where a storage's secret lives in the store (upstream's file names).
pub fn secret_key(kind: StorageType, id: &str) -> String {
    match kind {
        StorageType::Rbd => format!("priv/ceph/{id}.keyring"),
        StorageType::CephFs => format!("priv/ceph/{id}.secret"),
        StorageType::Pbs => format!("priv/storage/{id}.pw"),
        _ => format!("priv/storage/{id}.pw"),
    }
}

impl Node {
    /// The parsed `storage.cfg` and its digest.
    pub fn storage_config(&self) -> ApiResult<(StorageConfig, String)> {
        let text = self.read_text(STORAGE_CFG)?;
        Ok((StorageConfig::parse(&text), oxve_config::digest(&text)))
    }

    /// One storage definition; a missing one is upstream's error.
    pub fn storage_def(&self, id: &str) -> ApiResult<StorageDef> {
        Ok(self.storage_config()?.0.get(id)?)
    }

    /// Opens storage `id` with the real tools.
    pub fn open_storage(&self, id: &str) -> ApiResult<Box<dyn StoragePlugin>> {
        let def = self.storage_def(id)?;
        self.open_def(def)
    }

    /// Opens a definition (also one not yet written, when adding).
    pub fn open_def(&self, def: StorageDef) -> ApiResult<Box<dyn StoragePlugin>> {
        open_with(&self.store, &self.root, def)
    }

    /// Read-modify-write of `storage.cfg` with optimistic retry.
    pub fn update_storage_config<T>(
        &self,
        digest: Option<&str>,
        mut f: impl FnMut(&mut StorageConfig) -> ApiResult<T>,
    ) -> ApiResult<T> {
        self.update_text(STORAGE_CFG, |text| {
            let text = text.unwrap_or("");
            if let Some(d) = digest {
                if d != oxve_config::digest(text) {
                    return Err(ApiError::fail(
                        "detected modified configuration - file changed by other user? Try again.",
                    ));
                }
            }
            let mut cfg = StorageConfig::parse(text);
            let out = f(&mut cfg)?;
            Ok((Some(cfg.write()?), out))
        })
    }
}

/// Opens storage `id` of the node rooted at `root` straight from its
/// config store, without a running daemon: for the root-only local tools
/// that stream volumes (`pvesm export` / `pvesm import`), as upstream's run
/// in-process too.
pub fn open_storage_at(root: &Path, id: &str) -> ApiResult<Box<dyn StoragePlugin>> {
    let store = open_store_at(root)?;
    let text = store.get(STORAGE_CFG)?.map(|e| e.text).unwrap_or_default();
    let def = StorageConfig::parse(&text).get(id)?;
    open_with(&store, root, def)
}

/// The config store of the node rooted at `root`, for tools that run
/// beside the daemon (`pct mount`, `qm showcmd`).
pub fn open_store_at(root: &Path) -> ApiResult<oxve_config::Store> {
    let db = root.join("var/lib/oxve/config.db");
    if !db.is_file() {
        return Err(ApiError::fail(format!(
            "no oxve node at '{}' ({} is missing)",
            root.display(),
            db.display()
        )));
    }
    Ok(oxve_config::Store::open(&db)?)
}

/// A plugin for `def` with the real tools, the node's run directory and
/// the storage's secret from `store`.
fn open_with(
    store: &oxve_config::Store,
    root: &Path,
    def: StorageDef,
) -> ApiResult<Box<dyn StoragePlugin>> {
    let secret = store
        .get(&secret_key(def.kind, &def.id))?
        .map(|e| e.text.trim_end_matches('\n').to_string());
    let env = Env {
        runner: Arc::new(SystemRunner),
        run_dir: root.join("run/oxve/storage"),
        secret,
    };
    Ok(oxve_storage::plugins::open(def, env)?)
}

impl From<AddError> for ApiError {
    fn from(e: AddError) -> Self {
        match e {
            AddError::Options(errors) => ApiError::params(errors),
            AddError::Exists(id) => ApiError::fail(format!(
                "create storage failed: storage ID '{id}' already defined"
            )),
            AddError::Missing(id) => ApiError::fail(format!("storage '{id}' does not exist")),
        }
    }
}
