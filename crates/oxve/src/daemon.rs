//! `oxve daemon`: runs a node in the foreground.

use clap::Parser;
use oxve_api::{Node, NodeOptions};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Run an oxve node: HTTPS API, local CLI socket, worker tasks.
#[derive(Parser, Debug)]
#[command(name = "oxve daemon", version)]
struct Args {
    /// Root directory every path hangs off (etc/oxve, var/lib/oxve, run/oxve, var/log/oxve).
    #[arg(long, env = "OXVE_ROOT")]
    root: Option<PathBuf>,
    /// HTTPS port of the API.
    #[arg(long, env = "OXVE_PORT", default_value_t = 8006)]
    port: u16,
    /// Address to listen on (default: all addresses).
    #[arg(long, env = "OXVE_LISTEN")]
    listen: Option<IpAddr>,
    /// Node name (default: the host name).
    #[arg(long, env = "OXVE_NODE")]
    node: Option<String>,
    /// Network namespace for every change to host networking (created if missing).
    #[arg(long, env = "OXVE_NETNS")]
    netns: Option<String>,
    /// On first start, create admin@pve with the Administrator role on / and print its password.
    #[arg(long, env = "OXVE_CREATE_ADMIN")]
    create_admin: bool,
}

pub fn main(root: PathBuf, args: Vec<String>) -> ExitCode {
    let args = match Args::try_parse_from(std::iter::once("oxve daemon".to_string()).chain(args)) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OXVE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let root = args.root.clone().unwrap_or(root);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(root, args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxve daemon: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(root: PathBuf, args: Args) -> Result<(), String> {
    let name = match args.node.clone() {
        Some(n) => n,
        None => hostname::get()
            .map_err(|e| format!("cannot read the host name: {e}"))?
            .to_string_lossy()
            .split('.')
            .next()
            .unwrap_or("localhost")
            .to_string(),
    };
    if let Some(ns) = &args.netns {
        oxve_api::netns::ensure(ns).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let node = Node::open(NodeOptions {
        root: root.clone(),
        name: name.clone(),
        netns: args.netns.clone(),
    })
    .map_err(|e| e.to_string())?;
    node.lxc().record().map_err(|e| e.to_string())?;
    oxve_api::vm::install_runtime(&node).map_err(|e| e.to_string())?;
    if args.create_admin {
        if let Some(password) =
            oxve_api::bootstrap::create_admin(&node).map_err(|e| e.to_string())?
        {
            println!("created admin@pve (Administrator on /) with password: {password}");
            println!(
                "(also saved in {})",
                oxve_api::bootstrap::password_file(&node).display()
            );
        }
    }
    let tls = oxve_api::tls::server_config(&node).map_err(|e| e.to_string())?;
    let addr = SocketAddr::new(args.listen.unwrap_or(IpAddr::from([0u16; 8])), args.port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(_) if args.listen.is_none() => {
            tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::from([0u8; 4]), args.port))
                .await
                .map_err(|e| format!("cannot listen on port {}: {e}", args.port))?
        }
        Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let socket = Node::socket_path(&root);
    let unix = tokio::spawn({
        let node = Arc::clone(&node);
        let stop = stop_rx.clone();
        async move { oxve_api::server::serve_unix(node, &socket, stop).await }
    });
    let events = tokio::spawn(oxve_api::vm_events::serve(
        Arc::clone(&node),
        stop_rx.clone(),
    ));
    let https = tokio::spawn(oxve_api::server::serve_tls(
        Arc::clone(&node),
        listener,
        tls,
        stop_rx,
    ));
    let shown = match args.listen {
        Some(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => "localhost".to_string(),
    };
    println!(
        "oxve node '{name}' ready: https://{shown}:{}/api2/json/ (root {}, socket {})",
        args.port,
        root.display(),
        Node::socket_path(&root).display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = https.await;
    let _ = unix.await;
    let _ = events.await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
