//! Listeners: HTTPS on TCP and plain HTTP on the root-only Unix socket of
//! the local CLI. Both serve the same router; the connection's peer is
//! attached to every request so authentication can use it.

use crate::auth::Peer;
use crate::dispatch;
use crate::node::Node;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tower::ServiceExt;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The HTTP router of a node.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/api2/openapi.json", get(openapi))
        .route("/", get(index))
        .fallback(api)
        .with_state(node)
}

async fn api(
    State(node): State<Arc<Node>>,
    Extension(peer): Extension<Peer>,
    req: Request,
) -> http::Response<Body> {
    dispatch::handle(node, peer, req).await
}

async fn openapi() -> http::Response<Body> {
    let mut resp = http::Response::new(Body::from(crate::openapi::document_text()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn index(State(node): State<Arc<Node>>) -> String {
    format!(
        "oxve node '{}': the API is at /api2/json/ (OpenAPI document: /api2/openapi.json)\n",
        node.name
    )
}

/// Serves HTTPS on `listener` until `stop` turns true.
pub async fn serve_tls(
    node: Arc<Node>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(node);
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // A client that never finishes its handshake must not hold a task forever.
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let Ok(Ok(tls)) = handshake.await else {
                return;
            };
            serve_connection(TokioIo::new(tls), app, Peer::Tcp(addr)).await;
        });
    }
}

/// Serves the local API on a Unix socket (mode 0600) until `stop` turns true.
pub async fn serve_unix(
    node: Arc<Node>,
    path: &Path,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let app = router(node);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("accept on {} failed: {e}", path.display());
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
        let app = app.clone();
        tokio::spawn(async move {
            serve_connection(TokioIo::new(stream), app, Peer::Unix { uid }).await;
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

async fn serve_connection<I>(io: TokioIo<I>, app: Router, peer: Peer)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer.clone());
            app.clone().oneshot(req.map(Body::new))
        });
    let _ = Builder::new(TokioExecutor::new())
        .http1_only()
        .serve_connection_with_upgrades(io, service)
        .await;
}
