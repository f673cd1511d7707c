//! The QMP client against a real QEMU (`-machine none`, started paused
//! with `-S`): greeting and version, status, `cont`/`stop` with their
//! events, a refused command, `quit`. Needs `qemu-system-x86_64`; under
//! `CI=true` its absence fails the test (scripts/install-deps.sh installs
//! it).

use oxve_qemu::qmp::{Qmp, QmpError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A QEMU this test started; killed (by its pid) if the test ends early.
struct Qemu {
    child: Child,
    dir: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn qemu_available() -> bool {
    let found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let why = "qemu-system-x86_64 is not installed";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("required tool missing (CI=true forbids skipping): {why}");
        }
        eprintln!("skipping: {why}");
    }
    found
}

fn start_qemu(name: &str) -> Qemu {
    let dir = std::env::temp_dir().join(format!("oxve-qmp-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("qmp.sock");
    let child = Command::new("qemu-system-x86_64")
        .args(["-machine", "none", "-nodefaults", "-display", "none", "-S"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn qemu-system-x86_64");
    let qemu = Qemu { child, dir };
    let start = Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < TIMEOUT, "QEMU made no QMP socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    qemu
}

fn socket(q: &Qemu) -> PathBuf {
    q.dir.join("qmp.sock")
}

/// The version `qemu-system-x86_64 --version` prints: "QEMU emulator
/// version 10.0.2 (...)".
fn cli_version() -> (u32, u32, u32) {
    let out = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .expect("qemu --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .nth(3)
        .expect("a version word")
        .split('.')
        .map(|p| p.parse::<u32>().expect("numeric version"))
        .collect::<Vec<_>>();
    (v[0], v[1], v.get(2).copied().unwrap_or(0))
}

#[tokio::test]
async fn status_cont_stop_events_errors_quit() {
    if !qemu_available() {
        return;
    }
    let mut qemu = start_qemu("main");
    let mut qmp = Qmp::connect(&socket(&qemu), TIMEOUT)
        .await
        .expect("connect");
    let v = qmp.version;
    assert_eq!((v.major, v.minor, v.micro), cli_version());

    let st = qmp.status().await.expect("query-status");
    assert_eq!((st.status.as_str(), st.running), ("prelaunch", false));

    qmp.cont().await.expect("cont");
    qmp.wait_event("RESUME", TIMEOUT)
        .await
        .expect("RESUME event");
    let st = qmp.status().await.expect("query-status");
    assert_eq!((st.status.as_str(), st.running), ("running", true));

    qmp.stop().await.expect("stop");
    let stop = qmp.wait_event("STOP", TIMEOUT).await.expect("STOP event");
    assert!(stop.timestamp.get("seconds").is_some(), "{stop:?}");
    assert_eq!(qmp.status().await.expect("status").status, "paused");

    match qmp.execute("no-such-command", None).await {
        Err(QmpError::Command { class, desc, .. }) => {
            assert_eq!(class, "CommandNotFound");
            assert!(desc.contains("no-such-command"), "{desc}");
        }
        other => panic!("expected a refused command, got {other:?}"),
    }
    // The connection stays usable after a refusal.
    let args = serde_json::json!({"path": "/machine"});
    let children = qmp.execute("qom-list", Some(args)).await.expect("qom-list");
    assert!(children.as_array().is_some_and(|a| !a.is_empty()));

    qmp.quit().await.expect("quit");
    let start = Instant::now();
    loop {
        if let Some(status) = qemu.child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(start.elapsed() < TIMEOUT, "QEMU did not exit after quit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn missing_socket_and_dead_qemu_are_errors() {
    if !qemu_available() {
        return;
    }
    let err = Qmp::connect(Path::new("/nonexistent/qmp.sock"), TIMEOUT)
        .await
        .err()
        .expect("no socket");
    assert!(matches!(err, QmpError::Connect { .. }), "{err}");

    let mut qemu = start_qemu("dead");
    let mut qmp = Qmp::connect(&socket(&qemu), TIMEOUT)
        .await
        .expect("connect");
    qemu.child.kill().expect("kill");
    qemu.child.wait().expect("wait");
    let err = qmp.status().await.expect_err("QEMU is gone");
    assert!(
        matches!(err, QmpError::Closed | QmpError::Io(_)),
        "unexpected error {err}"
    );
}
