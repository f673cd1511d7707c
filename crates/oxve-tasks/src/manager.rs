//! The task manager: starts workers, tracks the running ones, archives
//! the finished ones and recovers what a previous daemon left behind.

use crate::context::TaskContext;
use crate::error::{Result, TaskError};
use crate::files::{self, TaskRecord};
use crate::list::TaskStatus;
use crate::proc::ProcessId;
use crate::upid::Upid;
use crate::{LogLine, INTERRUPTED, UNEXPECTED_STATUS};
use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a stopped worker may take to return by itself before it is
/// dropped (upstream gives a worker 5 s between SIGTERM and SIGKILL).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Starts and tracks the worker tasks of one node. Clone it freely; use
/// one per log directory per process.
#[derive(Clone)]
pub struct TaskManager {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    node: String,
    me: ProcessId,
    stop_grace: Duration,
    state: Mutex<BTreeMap<String, Running>>,
}

/// A task listed as running, by its UPID string.
pub(crate) struct Running {
    pub upid: Upid,
    /// `None` for a task of another live process (found in `active`).
    control: Option<Control>,
}

struct Control {
    stop: watch::Sender<bool>,
    done: watch::Receiver<Option<String>>,
}

impl TaskManager {
    /// Opens the task directory (creating it) for `node`. Tasks that the
    /// `active` list shows running under a process that is gone are
    /// finished as [`UNEXPECTED_STATUS`], with a line in their log saying
    /// so, and archived.
    pub fn new(log_dir: PathBuf, node: String) -> Result<TaskManager> {
        Self::with_identity(log_dir, node, ProcessId::current()?, STOP_GRACE)
    }

    /// [`TaskManager::new`] as process `me`; tests pose as a daemon that
    /// died to exercise recovery.
    pub(crate) fn with_identity(
        dir: PathBuf,
        node: String,
        me: ProcessId,
        stop_grace: Duration,
    ) -> Result<TaskManager> {
        std::fs::create_dir_all(&dir).map_err(TaskError::io(&dir))?;
        let manager = TaskManager {
            inner: Arc::new(Inner {
                dir,
                node,
                me,
                stop_grace,
                state: Mutex::new(BTreeMap::new()),
            }),
        };
        manager.recover()?;
        Ok(manager)
    }

    /// The node name in this manager's UPIDs.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Where the log of `upid` is (for downloads).
    pub fn log_path(&self, upid: &Upid) -> PathBuf {
        files::log_path(&self.inner.dir, upid)
    }

    /// Starts a worker task on the current tokio runtime and returns its
    /// UPID once its log exists and it is listed as running.
    ///
    /// All tasks share the daemon's pid and start time, so two tasks of
    /// the same type, id and user started in the same second would get the
    /// same UPID. The log file is created exclusively; if it exists the
    /// start time is moved on by a second until a free UPID is found, so a
    /// burst of identical tasks gets start times slightly in the future.
    pub fn spawn<F, Fut>(
        &self,
        worker_type: &str,
        id: Option<&str>,
        user: &str,
        f: F,
    ) -> Result<Upid>
    where
        F: FnOnce(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TaskError::NoRuntime)?;
        let (upid, log) = self.create_log(worker_type, id.unwrap_or(""), user)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(None);
        let ctx = TaskContext::new(upid.clone(), log, stop_rx.clone());
        {
            let mut state = self.state();
            state.insert(
                upid.to_string(),
                Running {
                    upid: upid.clone(),
                    control: Some(Control {
                        stop: stop_tx,
                        done: done_rx,
                    }),
                },
            );
            if let Err(e) = self.write_active(&state) {
                state.remove(&upid.to_string());
                drop(state);
                ctx.finish(Err(format!("unable to register task: {e}")));
                return Err(e);
            }
        }
        let worker_ctx = ctx.clone();
        let worker = runtime.spawn(async move { f(worker_ctx).await });
        let manager = self.clone();
        runtime.spawn(async move {
            let result = supervise(worker, stop_rx, manager.inner.stop_grace).await;
            let status = ctx.finish(result);
            manager.archive(ctx.upid(), &status);
            // Nobody waiting is fine.
            let _ = done_tx.send(Some(status));
        });
        Ok(upid)
    }

    /// Requests a stop of a running task (see [`TaskContext::cancelled`]);
    /// it then ends with `TASK ERROR: received interrupt` unless the
    /// worker returns its own result first. Stopping a finished task does
    /// nothing.
    pub fn stop(&self, upid: &Upid) -> Result<()> {
        let state = self.state();
        match state.get(&upid.to_string()) {
            Some(Running {
                control: Some(c), ..
            }) => {
                c.stop.send_replace(true);
                Ok(())
            }
            Some(Running { control: None, .. }) => Err(TaskError::NotLocal(upid.to_string())),
            None if self.log_path(upid).exists() => Ok(()),
            None => Err(TaskError::NoSuchTask(upid.to_string())),
        }
    }

    /// Waits until a task ends and returns its exit status (`OK`, the
    /// error message, `WARNINGS: <n>`).
    pub fn wait(&self, upid: &Upid) -> impl Future<Output = Result<String>> + Send + 'static {
        let done = self
            .state()
            .get(&upid.to_string())
            .and_then(|r| r.control.as_ref())
            .map(|c| c.done.clone());
        let path = self.log_path(upid);
        let upid = upid.to_string();
        async move {
            if let Some(mut done) = done {
                if let Ok(status) = done.wait_for(Option::is_some).await {
                    return Ok(status.clone().unwrap_or_default());
                }
            }
            if !path.exists() {
                return Err(TaskError::NoSuchTask(upid));
            }
            Ok(files::read_status(&path))
        }
    }

    /// The state of one task, as `GET /nodes/{node}/tasks/{upid}/status`.
    pub fn status(&self, upid: &Upid) -> Result<TaskStatus> {
        let path = self.log_path(upid);
        if !path.exists() {
            return Err(TaskError::NoSuchTask(upid.to_string()));
        }
        let owner = ProcessId {
            pid: upid.pid,
            pstart: upid.pstart,
        };
        let running = self.state().contains_key(&upid.to_string())
            || (owner != self.inner.me && owner.is_running());
        let exitstatus = (!running).then(|| files::read_status(&path));
        Ok(TaskStatus::new(upid, running, exitstatus))
    }

    /// Lines `start+1 ..= start+limit` of a task's log (all from `start`
    /// when `limit` is 0) and its line count, as upstream's
    /// `GET .../tasks/{upid}/log`: an empty log reads as `no content`, a
    /// missing one as a line `unable to open file - ...`.
    pub fn read_log(&self, upid: &Upid, start: u64, limit: u64) -> Result<(Vec<LogLine>, u64)> {
        Ok(files::read_log(&self.log_path(upid), start, limit))
    }

    /// The running tasks, newest first.
    pub(crate) fn running(&self) -> Vec<Upid> {
        let mut list: Vec<Upid> = self.state().values().map(|r| r.upid.clone()).collect();
        list.sort_by_key(|u| std::cmp::Reverse(u.starttime));
        list
    }

    /// Creates the log of a new task under a UPID nobody has used.
    fn create_log(&self, worker_type: &str, id: &str, user: &str) -> Result<(Upid, std::fs::File)> {
        let me = self.inner.me;
        let mut starttime = unix_now();
        loop {
            let upid = Upid::new(
                &self.inner.node,
                me.pid,
                me.pstart,
                starttime,
                worker_type,
                id,
                user,
            )?;
            let path = self.log_path(&upid);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(TaskError::io(parent))?;
            }
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => return Ok((upid, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => starttime += 1,
                Err(e) => return Err(TaskError::Io { path, source: e }),
            }
        }
    }

    /// Moves a finished task from the active list to the archive index.
    fn archive(&self, upid: &Upid, status: &str) {
        let mut state = self.state();
        state.remove(&upid.to_string());
        let line = files::format_index_line(upid, unix_now(), status);
        if let Err(e) = files::append_index(&self.inner.dir, &line) {
            tracing::error!(%upid, "unable to archive task: {e}");
        }
        if let Err(e) = self.write_active(&state) {
            tracing::error!(%upid, "unable to update the active task list: {e}");
        }
    }

    /// Rewrites `active` from the running tasks.
    fn write_active(&self, state: &BTreeMap<String, Running>) -> Result<()> {
        let mut records: Vec<TaskRecord> = state
            .values()
            .map(|r| TaskRecord {
                upid: r.upid.clone(),
                endtime: None,
                status: None,
            })
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.upid.starttime));
        let text = files::format_active(records.iter().map(|r| (r, false)));
        files::write_atomic(&self.inner.dir.join(files::ACTIVE), &text)
    }

    /// Reads `active` as a previous daemon left it: archives what finished
    /// and finishes what died with its process.
    fn recover(&self) -> Result<()> {
        let dir = &self.inner.dir;
        let text = files::read_optional(&dir.join(files::ACTIVE))?;
        let mut seen = HashSet::new();
        let mut state = self.state();
        for (record, saved) in files::parse_active(&text) {
            if saved || !seen.insert(record.upid.to_string()) {
                continue; // already in the index
            }
            let upid = record.upid;
            if let Some(end) = record.endtime {
                let status = record.status.unwrap_or_else(|| UNEXPECTED_STATUS.into());
                files::append_index(dir, &files::format_index_line(&upid, end, &status))?;
                continue;
            }
            let owner = ProcessId {
                pid: upid.pid,
                pstart: upid.pstart,
            };
            if owner != self.inner.me && owner.is_running() {
                // Another live process's task: not ours to judge.
                let key = upid.to_string();
                state.insert(
                    key,
                    Running {
                        upid,
                        control: None,
                    },
                );
                continue;
            }
            let status = self.finish_orphan(&upid)?;
            files::append_index(dir, &files::format_index_line(&upid, unix_now(), &status))?;
        }
        self.write_active(&state)
    }

    /// Ends the log of a task whose process is gone and returns its status.
    fn finish_orphan(&self, upid: &Upid) -> Result<String> {
        let path = self.log_path(upid);
        if let Some(status) = files::read_final(&path) {
            // It ended, but its process died before updating `active`.
            return Ok(status);
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(TaskError::io(&path))?;
        let line = format!(
            "daemon restarted: worker process {} is gone, the task did not finish - final state unknown\n",
            upid.pid
        );
        std::io::Write::write_all(&mut log, line.as_bytes()).map_err(TaskError::io(&path))?;
        Ok(UNEXPECTED_STATUS.to_string())
    }

    fn state(&self) -> MutexGuard<'_, BTreeMap<String, Running>> {
        // The map stays consistent across a panic (single inserts/removes).
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs a worker to its end: its own result, or after a stop request and
/// the grace period, [`INTERRUPTED`]. A panic becomes an error too.
async fn supervise(
    mut worker: JoinHandle<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Result<(), String> {
    let abort = worker.abort_handle();
    let stopped = async move {
        if stop.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    let outcome = tokio::select! {
        r = &mut worker => r,
        () = stopped => {
            abort.abort();
            worker.await
        }
    };
    match outcome {
        Ok(result) => result,
        Err(e) if e.is_cancelled() => Err(INTERRUPTED.to_string()),
        Err(e) => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(format!("worker panicked: {msg}"))
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
