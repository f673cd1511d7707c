//! oxve-api: the HTTP layer. It parses a request, authenticates the caller,
//! validates the parameters against the schema, checks the permission rule,
//! calls a handler and shapes the answer as upstream does. Handlers are thin:
//! the work lives in the domain crates.

pub mod auth;
pub mod bootstrap;
pub mod coverage;
pub mod ct;
pub mod ct_hotplug;
pub mod ct_snapshot;
pub mod dispatch;
pub mod error;
pub mod guest;
pub mod guest_volumes;
pub mod handlers;
pub mod netns;
pub mod node;
pub mod openapi;
pub mod perm;
pub mod server;
pub mod storage;
pub mod sys;
pub mod termproxy;
pub mod tls;
pub mod upload;
pub mod vm;
pub mod vm_clone;
pub mod vm_cloudinit;
pub mod vm_events;
pub mod vm_freeze;
pub mod vm_hotplug;
pub mod vm_import;
pub mod vm_move;
pub mod vm_reassign;
pub mod vm_rescan;
pub mod vm_snapshot;
pub mod vm_state;
pub mod vm_stats;
pub mod vm_suspend;
pub mod vm_tpm;
pub mod vnc;
pub mod websocket;

pub use error::{ApiError, ApiResult};

/// Runs blocking work (config store, storages, external tools) off the
/// async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::fail(format!("worker failed: {e}")))?
}
pub use node::{Node, NodeOptions};
