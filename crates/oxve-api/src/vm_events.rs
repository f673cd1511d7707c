//! The QMP event listener (upstream's `qmeventd`): every QEMU of the node
//! connects to its socket (`-chardev socket,...,reconnect-ms=5000`), also
//! after a daemon restart. QEMU runs with `-no-shutdown`, so a guest that
//! powers off leaves its QEMU paused in the `shutdown` state; the listener
//! sees the `SHUTDOWN` event and quits it. When the connection closes,
//! QEMU has exited: the VM's volumes are deactivated and its run files
//! removed, whoever stopped it.

use crate::node::Node;
use oxve_qemu::qmp::{Qmp, QmpError};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};

/// Listens until `stop` turns true.
pub async fn serve(node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let path = std::path::PathBuf::from(node.qemu_paths().event_socket);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", path.display());
            return;
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(handle(node.clone(), stream));
                }
                Err(e) => tracing::warn!("QMP event socket: {e}"),
            },
            _ = stop.changed() => break,
        }
    }
}

async fn handle(node: Arc<Node>, stream: UnixStream) {
    let Some(pid) = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok())
    else {
        return;
    };
    let Some(vmid) = oxve_qemu::host::vmid_of(pid) else {
        return;
    };
    let mut qmp = match Qmp::accept(stream, Duration::from_secs(10)).await {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(vmid, "QMP event connection: {e}");
            return;
        }
    };
    loop {
        match qmp.next_event().await {
            Ok(ev) if ev.event == "SHUTDOWN" => {
                tracing::info!(vmid, "guest shut down: {}", ev.data);
                if let Err(e) = qmp.quit().await {
                    if !matches!(e, QmpError::Closed) {
                        tracing::warn!(vmid, "cannot quit QEMU after shutdown: {e}");
                    }
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // The connection is gone: QEMU exited (or is about to).
    if !oxve_qemu::host::QemuHost::wait_exit(pid, Duration::from_secs(30)).await {
        return;
    }
    let _guard = node.guest_locks.lock(vmid).await;
    let n = node.clone();
    let _ = tokio::task::spawn_blocking(move || crate::vm::cleanup_if_stopped(&n, vmid)).await;
}
