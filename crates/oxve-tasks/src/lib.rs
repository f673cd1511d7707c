//! oxve worker tasks, as upstream's: long-running work started by an API
//! call, identified by a [`Upid`], with a log file the client can follow
//! and a final status line.
//!
//! Files under the log directory, compatible with upstream's
//! `/var/log/pve/tasks`:
//!
//! - `<X>/<UPID>` — the task's log, `<X>` being the last hex digit of its
//!   start time. The last line is `TASK OK`, `TASK ERROR: <msg>` or
//!   `TASK WARNINGS: <n>`.
//! - `active` — running tasks (`<UPID> 0`) and the most recent finished
//!   ones (`<UPID> 1 <endtime hex> <status>`).
//! - `index` (rotated to `index.1`) — the archive, one
//!   `<UPID> <endtime hex> <status>` line per finished task, oldest first.
//!
//! Tasks run as tokio tasks inside the daemon, so every UPID carries the
//! daemon's pid and start time. A [`TaskManager`] that finds tasks of a
//! daemon that is gone marks them finished, so none is silently lost.

mod context;
mod error;
mod files;
mod list;
mod manager;
mod proc;
mod upid;

pub use context::TaskContext;
pub use error::{Result, TaskError};
pub use files::LogLine;
pub use list::{TaskFilter, TaskInfo, TaskSource, TaskStatus};
pub use manager::TaskManager;
pub use upid::Upid;

/// The exit status of a task that was stopped (upstream's worker dies with
/// this message when it gets SIGTERM).
pub const INTERRUPTED: &str = "received interrupt";

/// The status of a task whose log has no final `TASK ...` line.
pub const UNEXPECTED_STATUS: &str = "unexpected status";
