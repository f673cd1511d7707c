//! Storage: an ISO upload over HTTPS against `cp`, linked clones through
//! the `oxve-storage` plugins against the tools run by hand, and
//! `pvesm status` with 20 storages against the CLI's fixed cost.

mod clone;
mod status;
mod upload;

pub use clone::CloneFigures;
pub use status::StatusFigures;
pub use upload::UploadFigures;

use crate::api::{self, Ticket};
use crate::daemon::Daemon;
use crate::error::{BenchError, Result};
use crate::report::Outcome;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The user the storage benchmarks log in as.
const USER: &str = "benchstore@pve";
const PASSWORD: &str = "benchpass123";
/// Its role, on `/storage`: may upload to, delete from and list every storage.
const ROLE: &str = "PVEDatastoreAdmin";
/// How long a task may run before the bench gives up on it.
const TASK_TIMEOUT: Duration = Duration::from_secs(600);

/// Every storage figure of a run; each part is measured, or says why not.
pub struct StorageFigures {
    /// ISO upload over HTTPS against `cp` + `sync`.
    pub upload: Outcome<UploadFigures>,
    /// Linked clones on btrfs against `btrfs subvolume snapshot`.
    pub clone_btrfs: Outcome<CloneFigures>,
    /// Linked clones of qcow2 in a directory against `qemu-img create -b`.
    pub clone_dir: Outcome<CloneFigures>,
    /// `pvesm status` with 20 storages against `pvesh get /version`.
    pub status: Outcome<StatusFigures>,
}

impl StorageFigures {
    /// No storage figures, all for the same reason.
    pub fn skipped(why: &str) -> StorageFigures {
        StorageFigures {
            upload: Err(why.to_string()),
            clone_btrfs: Err(why.to_string()),
            clone_dir: Err(why.to_string()),
            status: Err(why.to_string()),
        }
    }

    /// Whether every part was measured.
    pub fn complete(&self) -> bool {
        self.upload.is_ok()
            && self.clone_btrfs.is_ok()
            && self.clone_dir.is_ok()
            && self.status.is_ok()
    }
}

/// Options of the storage benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Size of the uploaded file, MiB.
    pub upload_mib: u64,
    /// Linked clones per storage type.
    pub clones: usize,
    /// Timed runs of `pvesm status` and of its baseline.
    pub status_runs: usize,
}

/// The benchmarks that need the daemon: upload and `pvesm status`.
pub fn with_daemon(
    daemon: &Daemon,
    node: &str,
    scratch: &Path,
    plan: Plan,
) -> (Outcome<UploadFigures>, Outcome<StatusFigures>) {
    let session = match Session::open(daemon) {
        Ok(s) => s,
        Err(e) => {
            let why = format!("cannot log in as {USER}: {e}");
            return (Err(why.clone()), Err(why));
        }
    };
    let upload = upload::run(daemon, &session, node, scratch, plan.upload_mib);
    let status = status::run(daemon, &session, node, plan.status_runs);
    (
        upload.map_err(|e| e.to_string()),
        status.map_err(|e| e.to_string()),
    )
}

/// The benchmarks of the plugins alone: linked clones on btrfs and in a
/// directory.
pub fn clones(scratch: &Path, plan: Plan) -> (Outcome<CloneFigures>, Outcome<CloneFigures>) {
    (
        clone::btrfs(scratch, plan.clones).map_err(|e| e.to_string()),
        clone::dir(scratch, plan.clones).map_err(|e| e.to_string()),
    )
}

/// An authenticated HTTPS client of the daemon: curl with a ticket.
struct Session {
    base: String,
    ticket: Ticket,
}

impl Session {
    /// Makes the bench's storage user and logs it in.
    fn open(daemon: &Daemon) -> Result<Session> {
        daemon.cli(&["pveum", "user", "add", USER, "--password", PASSWORD])?;
        daemon.cli(&[
            "pveum", "acl", "modify", "/storage", "--users", USER, "--roles", ROLE,
        ])?;
        let base = api::base_url(daemon);
        let ticket = api::login(&base, USER, PASSWORD)?;
        Ok(Session { base, ticket })
    }

    /// The URL of API path `path` (segments already encoded).
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Calls `method path` with curl's `extra` arguments (a form, say)
    /// and returns the answer's `data`; anything but HTTP 200 is an error.
    fn call(&self, method: &str, path: &str, extra: &[&str], max_secs: u64) -> Result<Value> {
        let out = api::run_tool(
            "curl",
            Command::new("curl")
                .args(["-k", "-sS", "--max-time", &max_secs.to_string()])
                .args(["-X", method])
                .args(["-H", &self.ticket.cookie_header()])
                .args(["-H", &self.ticket.csrf_header()])
                .args(extra)
                .args(["-w", "\n%{http_code}"])
                .arg(self.url(path)),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (code, body) = split_status(&text).ok_or_else(|| BenchError::Parse {
            what: "curl's answer",
            detail: format!("no status code after the body: {text}"),
        })?;
        if code != 200 {
            return Err(BenchError::Tool {
                tool: format!("{method} {path}"),
                detail: format!("HTTP {code}: {}", body.trim()),
            });
        }
        let body: Value = serde_json::from_str(body).map_err(|e| BenchError::Parse {
            what: "the API's answer",
            detail: format!("{e}: {body}"),
        })?;
        Ok(body.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Polls a task until it has stopped; fails unless it ended OK.
    fn wait_task(&self, node: &str, upid: &str) -> Result<()> {
        let path = format!("/nodes/{}/tasks/{}/status", segment(node), segment(upid));
        let deadline = Instant::now() + TASK_TIMEOUT;
        loop {
            let status = self.call("GET", &path, &[], 10)?;
            if status["status"] == "stopped" {
                return match status["exitstatus"].as_str() {
                    Some("OK") => Ok(()),
                    other => Err(BenchError::Tool {
                        tool: format!("task {upid}"),
                        detail: format!("ended with {}", other.unwrap_or("no exit status")),
                    }),
                };
            }
            if Instant::now() > deadline {
                return Err(BenchError::Tool {
                    tool: format!("task {upid}"),
                    detail: format!("still running after {} s", TASK_TIMEOUT.as_secs()),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One path segment, percent-encoded.
fn segment(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// Splits curl's output under `-w '\n%{http_code}'` into the status code
/// and the body before it.
fn split_status(out: &str) -> Option<(u16, &str)> {
    let (body, code) = out.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body))
}

/// Milliseconds since `start`.
fn elapsed_ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Whether the bench runs as root (loop mounts need it).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with [`BenchError::Missing`] unless `tool --version` runs.
fn need_tool(tool: &str, package: &str) -> Result<()> {
    match Command::new(tool).arg("--version").output() {
        Ok(_) => Ok(()),
        Err(e) => Err(BenchError::Missing(format!(
            "'{tool}' cannot run ({e}): install {package} (scripts/install-deps.sh does)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_body_and_status_code() {
        assert_eq!(
            split_status("{\"data\":null}\n200"),
            Some((200, "{\"data\":null}"))
        );
        assert_eq!(
            split_status("{\"errors\":{\"a\":\"b\"}}\n\n400"),
            Some((400, "{\"errors\":{\"a\":\"b\"}}\n"))
        );
        assert_eq!(split_status("no code"), None);
        assert_eq!(split_status("body\nxyz"), None);
    }

    #[test]
    fn encodes_upids_and_volume_ids_as_one_segment() {
        assert_eq!(segment("local:iso/a.iso"), "local%3Aiso%2Fa%2Eiso");
        assert_eq!(segment("benchnode"), "benchnode");
    }

    #[test]
    fn skipped_is_incomplete() {
        assert!(!StorageFigures::skipped("no").complete());
    }
}
