//! `POST /nodes/{node}/qemu/{vmid}/vncproxy`: a VM's graphical console for
//! noVNC, as upstream serves it — the bytes of QEMU's own VNC server (its
//! Unix socket `<run dir>/<vmid>.vnc`, started with `password=on`) carried
//! over the session's WebSocket (`.../vncwebsocket`, see `websocket.rs`).
//!
//! Two secrets, as upstream: the console ticket opens the WebSocket, and a
//! fresh 8 character VNC password (answered as `password`, and as the
//! prefix of the legacy `<password>:<ticket>`) authenticates inside the VNC
//! protocol. The password is set on QEMU when the client connects and
//! expires 30 s later, so it opens exactly this session.

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::node::Node;
use crate::websocket::{self, Listener, Socket};
use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::Message;

/// How long the session waits for its client (upstream's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the VNC password stays valid once set (upstream's `+30`).
const PASSWORD_LIFETIME: &str = "+30";
/// How long QMP commands of the session may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a VNC console session of running VM `vmid` for the caller and
/// answers upstream's `{user, ticket, password, port, upid, cert}`.
pub fn start(ctx: &Ctx, vmid: u32) -> ApiResult<Value> {
    let conf = ctx.node.load_vm(vmid)?.conf.main;
    if let Some(serial) = serial_display(conf.get("vga")) {
        return Err(ApiError::not_implemented_msg(format!(
            "the display of VM {vmid} is {serial}: a VNC terminal for serial displays \
             (vncterm) is not built; use the xterm.js console (termproxy)"
        )));
    }
    if ctx.node.vm_pid(vmid).is_none() {
        return Err(ApiError::fail(format!("VM {vmid} not running")));
    }
    let authid = ctx.caller.authid();
    let listener = websocket::listen(&authid, &format!("/vms/{vmid}"))?;
    let password = new_password();
    let ticket = format!("{password}:{}", listener.ticket());
    let port = listener.port();
    let (cert, _key) = crate::tls::certificate(&ctx.node)?;
    let node = ctx.node.clone();
    let secret = password.clone();
    let upid = ctx.node.tasks.spawn(
        "vncproxy",
        Some(&vmid.to_string()),
        &authid,
        move |task| async move { run(node, vmid, listener, secret, task).await },
    )?;
    Ok(json!({
        "user": authid,
        "ticket": ticket,
        "password": password,
        "port": port,
        "upid": upid.to_string(),
        "cert": cert,
    }))
}

/// The serial port a `vga: serial<n>` display uses.
fn serial_display(vga: Option<&str>) -> Option<&str> {
    let kind = vga?
        .split(',')
        .find(|p| !p.contains('=') || p.starts_with("type="))?;
    let kind = kind.strip_prefix("type=").unwrap_or(kind);
    (kind.starts_with("serial") && kind[6..].parse::<u8>().is_ok()).then_some(kind)
}

/// Upstream's VNC password: 8 printable ASCII characters.
fn new_password() -> String {
    let mut rng = rand::rngs::OsRng;
    (0..8).map(|_| rng.gen_range(b'!'..=b'~') as char).collect()
}

/// The session: waits for the client, sets the VNC password, and carries
/// bytes both ways until either side closes or the task is stopped.
async fn run(
    node: Arc<Node>,
    vmid: u32,
    mut listener: Listener,
    password: String,
    task: oxve_tasks::TaskContext,
) -> Result<(), String> {
    let socket = tokio::time::timeout(CONNECT_TIMEOUT, listener.accept())
        .await
        .ok()
        .flatten()
        .ok_or("failed waiting for client: timed out")?;
    task.log("client connection: websocket");
    set_password(&node, vmid, &password)
        .await
        .map_err(|e| format!("unable to set the VNC password: {e}"))?;
    let path = node.qemu().vnc_socket(vmid);
    let vnc = UnixStream::connect(&path)
        .await
        .map_err(|e| format!("unable to connect to socket '{}': {e}", path.display()))?;
    tokio::select! {
        _ = bridge(socket, vnc) => Ok(()),
        _ = task.cancelled() => Err(oxve_tasks::INTERRUPTED.into()),
    }
}

/// Sets the password QEMU's VNC server asks for, valid for 30 s.
async fn set_password(node: &Node, vmid: u32, password: &str) -> ApiResult<()> {
    let err = |e: oxve_qemu::qmp::QmpError| ApiError::fail(e.to_string());
    let mut qmp = node.qemu().qmp(vmid, QMP_TIMEOUT).await.map_err(err)?;
    qmp.execute(
        "set_password",
        Some(json!({ "protocol": "vnc", "password": password })),
    )
    .await
    .map_err(err)?;
    qmp.execute(
        "expire_password",
        Some(json!({ "protocol": "vnc", "time": PASSWORD_LIFETIME })),
    )
    .await
    .map_err(err)?;
    Ok(())
}

/// Carries WebSocket data frames to QEMU and QEMU's bytes back as binary
/// frames, until one side ends.
async fn bridge(socket: Socket, vnc: UnixStream) {
    let (mut sink, mut stream) = socket.split();
    let (mut rd, mut wr) = vnc.into_split();
    let to_client = async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    };
    let from_client = async {
        while let Some(Ok(msg)) = stream.next().await {
            let data: &[u8] = match &msg {
                Message::Binary(b) => b,
                Message::Text(t) => t.as_bytes(),
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(data).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = to_client => {}
        _ = from_client => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_displays() {
        assert_eq!(serial_display(Some("serial0")), Some("serial0"));
        assert_eq!(
            serial_display(Some("type=serial1,memory=16")),
            Some("serial1")
        );
        assert_eq!(serial_display(Some("std")), None);
        assert_eq!(serial_display(Some("serialx")), None);
        assert_eq!(serial_display(None), None);
    }

    #[test]
    fn passwords_are_printable() {
        let a = new_password();
        assert_eq!(a.len(), 8);
        assert!(a.bytes().all(|b| (b'!'..=b'~').contains(&b)));
        assert_ne!(a, new_password());
    }
}
