//! WebSocket consoles: the ports and one-time tickets of console sessions,
//! and the upgrade of a `.../vncwebsocket` request into a WebSocket that is
//! handed to the session owning the port.
//!
//! Upstream runs one proxy process per console (`termproxy`, `vncterm`,
//! QEMU's VNC) listening on a TCP port from 5900-5999, and pveproxy bridges
//! the WebSocket to that port. Here the daemon is the proxy: a session
//! [`listen`]s on a port number from the same range, which only names the
//! session inside the daemon (nothing listens on TCP), and gets the socket
//! once a client's upgrade has passed the whole request pipeline
//! (authentication, validation, the method's permission check and the
//! handler, which verifies the ticket with [`verify_ticket`]).
//!
//! Tickets keep upstream's shape, `PVEVNC:<8 hex digit time>::<secret>`, and
//! its window (valid from 20 s before to 40 s after their time); they are
//! random and remembered with their session rather than signed, bound to the
//! user, the ACL path and the port, and good for one connection.

use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Mutex, MutexGuard, OnceLock};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// A client's WebSocket, as a session receives it.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The console ports (upstream's VNC port range).
pub const PORTS: RangeInclusive<u16> = 5900..=5999;
/// Largest frame or message accepted from a client (upstream: 128 KiB).
pub const MAX_FRAME: usize = 128 * 1024;
/// A ticket is valid from this many seconds before its time ...
const TICKET_MIN_AGE: i64 = -20;
/// ... to this many after (upstream's VNC ticket window).
const TICKET_MAX_AGE: i64 = 40;
/// Upstream's answer to any ticket that does not verify.
const INVALID_TICKET: &str = "permission denied - invalid PVEVNC ticket";

/// A console session's hold on a port: its ticket, and the client's socket
/// once one connects. Dropping it frees the port.
pub struct Listener {
    port: u16,
    ticket: String,
    socket: Option<oneshot::Receiver<Socket>>,
}

impl Listener {
    /// The session's port number.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The ticket a client presents to connect.
    pub fn ticket(&self) -> &str {
        &self.ticket
    }

    /// Waits for the client's WebSocket; `None` if it can no longer come.
    pub async fn accept(&mut self) -> Option<Socket> {
        self.socket.take()?.await.ok()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        sessions().remove(&self.port);
    }
}

/// Opens a console session for `authid` on `path` (the ACL path its ticket
/// is bound to): takes a free port and makes a ticket.
pub fn listen(authid: &str, path: &str) -> ApiResult<Listener> {
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let created = now();
    let ticket = format!("PVEVNC:{created:08X}::{hex}");
    let (tx, rx) = oneshot::channel();
    let mut map = sessions();
    let port = PORTS
        .clone()
        .find(|p| !map.contains_key(p))
        .ok_or_else(|| ApiError::fail("unable to find free port (5900-5999)"))?;
    map.insert(
        port,
        Session {
            authid: authid.to_string(),
            path: path.to_string(),
            ticket: ticket.clone(),
            created,
            socket: Some(tx),
        },
    );
    Ok(Listener {
        port,
        ticket,
        socket: Some(rx),
    })
}

/// Checks a client's ticket for the session on `port` (upstream's
/// `verify_vnc_ticket`): issued to `authid` for `path`, within its time
/// window, and not used yet. Answers 401 otherwise, without saying why.
pub fn verify_ticket(ticket: &str, authid: &str, path: &str, port: u16) -> ApiResult<()> {
    // Upstream's websocket VNC shells hand out "<8 char password>:<ticket>".
    let ticket = match ticket.split_once(':') {
        Some((pw, rest)) if pw.len() == 8 && rest.starts_with("PVEVNC:") => rest,
        _ => ticket,
    };
    let map = sessions();
    let valid = map.get(&port).is_some_and(|s| {
        let age = now() - s.created;
        s.socket.is_some()
            && s.authid == authid
            && s.path == path
            && (TICKET_MIN_AGE..=TICKET_MAX_AGE).contains(&age)
            && same_secret(ticket.as_bytes(), s.ticket.as_bytes())
    });
    if valid {
        Ok(())
    } else {
        Err(ApiError::unauthorized(INVALID_TICKET))
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A WebSocket upgrade request, taken from the request before the
/// pipeline runs (upstream upgrades `GET` requests whose path ends in
/// `websocket`, once their handler has succeeded).
pub struct Upgrade {
    handshake: Result<Handshake, ApiError>,
}

struct Handshake {
    accept: String,
    protocol: Option<HeaderValue>,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

impl Upgrade {
    /// `Some` if `req` asks for an upgrade on a `...websocket` path.
    pub fn take(req: &mut Request<Body>) -> Option<Upgrade> {
        let headers = req.headers();
        let wanted = headers.get(header::UPGRADE)?.to_str().unwrap_or("");
        if req.method() != http::Method::GET || !req.uri().path().ends_with("websocket") {
            return None;
        }
        let handshake = if !wanted.eq_ignore_ascii_case("websocket") {
            Err(format!("unable to upgrade to protocol '{wanted}'"))
        } else {
            let version = header_str(headers, header::SEC_WEBSOCKET_VERSION);
            match header_str(headers, header::SEC_WEBSOCKET_KEY) {
                _ if version != "13" => Err(format!("unsupported websocket-version '{version}'")),
                "" => Err("missing websocket-key".to_string()),
                key => Ok(
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
                ),
            }
        };
        let protocol = headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
        let on_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
        let handshake = match (handshake, on_upgrade) {
            (Ok(accept), Some(on_upgrade)) => Ok(Handshake {
                accept,
                protocol,
                on_upgrade,
            }),
            (Ok(_), None) => Err(ApiError::fail("connection does not allow an upgrade")),
            (Err(msg), _) => Err(ApiError::bad_request(msg)),
        };
        Some(Upgrade { handshake })
    }

    /// After the pipeline: a successful answer `{"port": ...}` switches the
    /// connection to the WebSocket protocol and hands the socket to the
    /// session on that port; anything else stays a normal answer.
    pub fn accept(self, result: ApiResult<Value>) -> Result<Response<Body>, ApiResult<Value>> {
        let data = result.map_err(Err)?;
        let hs = self.handshake.map_err(Err)?;
        let port = data
            .get("port")
            .and_then(|p| p.as_u64().or_else(|| p.as_str()?.parse().ok()))
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| Err(ApiError::fail("websocket proxy: missing port")))?;
        let tx = sessions()
            .get_mut(&port)
            .and_then(|s| s.socket.take())
            .ok_or_else(|| Err(ApiError::fail(format!("no console session on port {port}"))))?;
        let on_upgrade = hs.on_upgrade;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut config = WebSocketConfig::default();
            config.max_frame_size = Some(MAX_FRAME);
            config.max_message_size = Some(MAX_FRAME);
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            // A session that has ended meanwhile drops the socket: closed.
            let _ = tx.send(socket);
        });
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Ok(v) = HeaderValue::from_str(&hs.accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        // Upstream echoes the requested subprotocol(s) as they came.
        if let Some(p) = hs.protocol {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        Ok(resp)
    }
}

struct Session {
    authid: String,
    path: String,
    ticket: String,
    created: i64,
    /// Taken when a client connects.
    socket: Option<oneshot::Sender<Socket>>,
}

/// The console sessions of this process, by port.
fn sessions() -> MutexGuard<'static, HashMap<u16, Session>> {
    static SESSIONS: OnceLock<Mutex<HashMap<u16, Session>>> = OnceLock::new();
    SESSIONS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn header_str(headers: &http::HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_bind_user_path_and_port() {
        let l = listen("alice@pve", "/nodes/n1").unwrap();
        let t = l.ticket().to_string();
        assert!(t.starts_with("PVEVNC:"));
        assert!(PORTS.contains(&l.port()));
        verify_ticket(&t, "alice@pve", "/nodes/n1", l.port()).unwrap();
        verify_ticket(&format!("abcdefgh:{t}"), "alice@pve", "/nodes/n1", l.port()).unwrap();
        assert!(verify_ticket(&t, "bob@pve", "/nodes/n1", l.port()).is_err());
        assert!(verify_ticket(&t, "alice@pve", "/nodes/n2", l.port()).is_err());
        let other = listen("alice@pve", "/nodes/n1").unwrap();
        assert_ne!(other.port(), l.port());
        assert!(verify_ticket(&t, "alice@pve", "/nodes/n1", other.port()).is_err());
        assert!(verify_ticket(&t[..t.len() - 1], "alice@pve", "/nodes/n1", l.port()).is_err());
        let port = l.port();
        drop(l);
        assert!(verify_ticket(&t, "alice@pve", "/nodes/n1", port).is_err());
    }

    #[test]
    fn used_or_old_tickets_fail() {
        let l = listen("alice@pve", "/nodes/n1").unwrap();
        let t = l.ticket().to_string();
        sessions().get_mut(&l.port()).unwrap().socket = None;
        assert!(verify_ticket(&t, "alice@pve", "/nodes/n1", l.port()).is_err());
        let l = listen("alice@pve", "/nodes/n1").unwrap();
        sessions().get_mut(&l.port()).unwrap().created -= TICKET_MAX_AGE + 1;
        assert!(verify_ticket(l.ticket(), "alice@pve", "/nodes/n1", l.port()).is_err());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
