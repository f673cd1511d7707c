//! What a running worker holds: its UPID, its log and its stop signal.

use crate::files::final_status;
use crate::upid::Upid;
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Handed to a worker: write its log, count warnings, notice a stop
/// request. Cheap to clone.
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<Shared>,
}

struct Shared {
    upid: Upid,
    log: Mutex<File>,
    warnings: AtomicU64,
    cancel: watch::Receiver<bool>,
}

impl TaskContext {
    pub(crate) fn new(upid: Upid, log: File, cancel: watch::Receiver<bool>) -> TaskContext {
        TaskContext {
            inner: Arc::new(Shared {
                upid,
                log: Mutex::new(log),
                warnings: AtomicU64::new(0),
                cancel,
            }),
        }
    }

    /// The task's UPID.
    pub fn upid(&self) -> &Upid {
        &self.inner.upid
    }

    /// Appends a line to the task log. A log that cannot be written (disk
    /// full) must not fail the work itself, so errors are only traced.
    pub fn log(&self, line: impl AsRef<str>) {
        let mut text = line.as_ref().to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let mut log = self.inner.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = log.write_all(text.as_bytes()) {
            tracing::warn!(upid = %self.inner.upid, "unable to write task log: {e}");
        }
    }

    /// Logs `WARN: <line>` and counts it: a task with warnings that
    /// otherwise succeeds ends with `TASK WARNINGS: <n>`.
    pub fn warn(&self, line: impl AsRef<str>) {
        self.inner.warnings.fetch_add(1, Ordering::Relaxed);
        self.log(format!("WARN: {}", line.as_ref().trim_end_matches('\n')));
    }

    /// How many warnings were logged so far.
    pub fn warnings(&self) -> u64 {
        self.inner.warnings.load(Ordering::Relaxed)
    }

    /// Whether a stop was requested. A worker that sees it should clean up
    /// and return `Err(oxve_tasks::INTERRUPTED.into())`; one that does not
    /// return in time is dropped at its next await point.
    pub fn is_cancelled(&self) -> bool {
        *self.inner.cancel.borrow()
    }

    /// Completes when a stop is requested (never, if none is).
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.cancel.clone();
        async move {
            if rx.wait_for(|stop| *stop).await.is_err() {
                // The manager forgot the task: no stop can come any more.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Writes the final line for `result` and returns the exit status as
    /// upstream's `read_status` would read it back.
    pub(crate) fn finish(&self, result: Result<(), String>) -> String {
        let line = match result {
            Ok(()) => match self.warnings() {
                0 => "TASK OK".to_string(),
                n => format!("TASK WARNINGS: {n}"),
            },
            Err(msg) => {
                // Upstream: chomp, then newlines become spaces.
                let msg = msg.trim_end_matches('\n').replace('\n', " ");
                let msg = if msg.is_empty() {
                    "unknown error".into()
                } else {
                    msg
                };
                format!("TASK ERROR: {msg}")
            }
        };
        self.log(&line);
        final_status(&line).unwrap_or_else(|| crate::UNEXPECTED_STATUS.to_string())
    }
}
