//! The task list and task status, as `GET /nodes/{node}/tasks` and
//! `GET /nodes/{node}/tasks/{upid}/status` return them.

use crate::error::{Result, TaskError};
use crate::files::{self, TaskRecord};
use crate::manager::TaskManager;
use crate::upid::Upid;
use serde::Serialize;
use std::str::FromStr;

/// Which tasks to list: upstream's parameters of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFilter {
    /// Skip this many matching tasks.
    pub start: u64,
    /// Return at most this many (upstream's default: 50).
    pub limit: u64,
    /// Only tasks whose user contains this (case-insensitive).
    pub userfilter: Option<String>,
    /// Only tasks of exactly this type.
    pub typefilter: Option<String>,
    /// Only tasks whose id is this VMID.
    pub vmid: Option<u32>,
    /// Only failed tasks (everything but `ok`); overrides `statusfilter`.
    pub errors: bool,
    /// Running tasks, finished ones, or both.
    pub source: TaskSource,
    /// Status types to keep, a list of `ok`, `warning`, `error`, `unknown`.
    pub statusfilter: Option<String>,
    /// Only tasks started at or after this Unix time.
    pub since: Option<i64>,
    /// Only tasks started at or before this Unix time.
    pub until: Option<i64>,
    /// Only tasks this auth id may see without `Sys.Audit`: a user sees
    /// their own and their tokens' tasks, a token only its own.
    pub only_user: Option<String>,
}

impl Default for TaskFilter {
    fn default() -> Self {
        TaskFilter {
            start: 0,
            limit: 50,
            userfilter: None,
            typefilter: None,
            vmid: None,
            errors: false,
            source: TaskSource::default(),
            statusfilter: None,
            since: None,
            until: None,
            only_user: None,
        }
    }
}

/// Upstream's `source` parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaskSource {
    /// Finished tasks (the default).
    #[default]
    Archive,
    /// Running tasks.
    Active,
    /// Running, then finished tasks.
    All,
}

impl FromStr for TaskSource {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<TaskSource> {
        match s {
            "archive" => Ok(TaskSource::Archive),
            "active" => Ok(TaskSource::Active),
            "all" => Ok(TaskSource::All),
            _ => Err(TaskError::InvalidField {
                field: "source",
                value: s.to_string(),
                reason: "must be one of archive, active, all",
            }),
        }
    }
}

/// One entry of the task list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskInfo {
    /// The task's UPID.
    pub upid: Upid,
    /// Its node.
    pub node: String,
    /// The pid that ran it.
    pub pid: u32,
    /// That process's start time in clock ticks.
    pub pstart: u64,
    /// When it started (Unix time).
    pub starttime: i64,
    /// Its type.
    #[serde(rename = "type")]
    pub worker_type: String,
    /// The object it worked on.
    pub id: String,
    /// The user who started it (without the token name).
    pub user: String,
    /// The API token that started it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenid: Option<String>,
    /// When it ended; absent while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endtime: Option<i64>,
    /// Its exit status, `RUNNING` while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The state of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskStatus {
    /// The task's UPID.
    pub upid: Upid,
    /// Its node.
    pub node: String,
    /// The pid that runs or ran it.
    pub pid: u32,
    /// That process's start time in clock ticks.
    pub pstart: u64,
    /// When it started (Unix time).
    pub starttime: i64,
    /// Its type.
    #[serde(rename = "type")]
    pub worker_type: String,
    /// The object it works on.
    pub id: String,
    /// The user who started it (without the token name).
    pub user: String,
    /// The API token that started it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenid: Option<String>,
    /// `running` or `stopped`.
    pub status: &'static str,
    /// Once stopped: `OK`, the error message, `WARNINGS: <n>` or
    /// `unexpected status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exitstatus: Option<String>,
}

impl TaskStatus {
    pub(crate) fn new(upid: &Upid, running: bool, exitstatus: Option<String>) -> TaskStatus {
        let (user, token) = upid.user_and_token();
        TaskStatus {
            upid: upid.clone(),
            node: upid.node.clone(),
            pid: upid.pid,
            pstart: upid.pstart,
            starttime: upid.starttime,
            worker_type: upid.worker_type.clone(),
            id: upid.id.clone(),
            user: user.to_string(),
            tokenid: token.map(String::from),
            status: if running { "running" } else { "stopped" },
            exitstatus,
        }
    }
}

impl TaskManager {
    /// The task list, as upstream: with `source` `active` or `all` the
    /// running tasks (newest first), then for `archive` or `all` the
    /// finished ones, most recently finished first.
    pub fn list(&self, filter: &TaskFilter) -> Result<Vec<TaskInfo>> {
        Ok(self.list_with_total(filter)?.0)
    }

    /// [`TaskManager::list`] plus how many tasks matched in all (upstream's
    /// `total`, for paging).
    pub fn list_with_total(&self, filter: &TaskFilter) -> Result<(Vec<TaskInfo>, u64)> {
        let mut page = Page::new(filter);
        if filter.source != TaskSource::Archive {
            for upid in self.running() {
                let record = TaskRecord {
                    upid,
                    endtime: None,
                    status: None,
                };
                page.offer(record, Some("RUNNING"));
            }
        }
        if filter.source != TaskSource::Active {
            for name in [files::INDEX, files::INDEX_OLD] {
                let text = files::read_optional(&self.inner.dir.join(name))?;
                for record in text.lines().rev().filter_map(files::parse_index_line) {
                    page.offer(record, None);
                }
            }
        }
        Ok((page.tasks, page.count))
    }
}

/// Applies a filter and its paging, counting every match.
struct Page<'a> {
    filter: &'a TaskFilter,
    statuses: StatusTypes,
    count: u64,
    left: u64,
    tasks: Vec<TaskInfo>,
}

impl<'a> Page<'a> {
    fn new(filter: &'a TaskFilter) -> Page<'a> {
        Page {
            filter,
            statuses: StatusTypes::of(filter),
            count: 0,
            left: filter.limit,
            tasks: Vec::new(),
        }
    }

    /// Keeps `record` if it matches and falls inside the page; running
    /// tasks are shown with status `shown_status`.
    fn offer(&mut self, record: TaskRecord, shown_status: Option<&str>) {
        let info = to_info(record);
        if !self.matches(&info) {
            return;
        }
        self.count += 1;
        if self.count <= self.filter.start || self.left == 0 {
            return;
        }
        self.left -= 1;
        let mut info = info;
        if info.status.is_none() {
            info.status = shown_status.map(String::from);
        }
        self.tasks.push(info);
    }

    fn matches(&self, t: &TaskInfo) -> bool {
        let f = self.filter;
        if let Some(u) = &f.userfilter {
            if !t.user.to_lowercase().contains(&u.to_lowercase()) {
                return false;
            }
        }
        if let Some(who) = &f.only_user {
            let visible = match &t.tokenid {
                Some(token) => *who == format!("{}!{token}", t.user) || *who == t.user,
                None => *who == t.user,
            };
            if !visible {
                return false;
            }
        }
        if f.typefilter.as_ref().is_some_and(|ty| *ty != t.worker_type) {
            return false;
        }
        if f.vmid.is_some_and(|vmid| t.id != vmid.to_string()) {
            return false;
        }
        if f.since.is_some_and(|since| t.starttime < since)
            || f.until.is_some_and(|until| t.starttime > until)
        {
            return false;
        }
        self.statuses.allows(t.status.as_deref())
    }
}

/// Upstream's status types: `ok`, `warning`, `error`, `unknown`.
struct StatusTypes {
    ok: bool,
    warning: bool,
    error: bool,
    unknown: bool,
}

impl StatusTypes {
    fn of(filter: &TaskFilter) -> StatusTypes {
        if filter.errors {
            return StatusTypes {
                ok: false,
                warning: true,
                error: true,
                unknown: true,
            };
        }
        let Some(list) = &filter.statusfilter else {
            return StatusTypes {
                ok: true,
                warning: true,
                error: true,
                unknown: true,
            };
        };
        let wanted: Vec<String> = list
            .split(|c: char| c == ',' || c == ';' || c == '\0' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase)
            .collect();
        let has = |name: &str| wanted.iter().any(|w| w == name);
        StatusTypes {
            ok: has("ok"),
            warning: has("warning"),
            error: has("error"),
            unknown: has("unknown"),
        }
    }

    /// Upstream's `normalize_status_type`: no status (running) and
    /// `unexpected status` are `unknown`.
    fn allows(&self, status: Option<&str>) -> bool {
        match status {
            None | Some(crate::UNEXPECTED_STATUS) => self.unknown,
            Some("OK") => self.ok,
            Some(s) if is_warnings(s) => self.warning,
            Some(_) => self.error,
        }
    }
}

fn is_warnings(status: &str) -> bool {
    status
        .strip_prefix("WARNINGS: ")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn to_info(record: TaskRecord) -> TaskInfo {
    let upid = record.upid;
    let (user, token) = upid.user_and_token();
    TaskInfo {
        node: upid.node.clone(),
        pid: upid.pid,
        pstart: upid.pstart,
        starttime: upid.starttime,
        worker_type: upid.worker_type.clone(),
        id: upid.id.clone(),
        user: user.to_string(),
        tokenid: token.map(String::from),
        endtime: record.endtime,
        status: record.status,
        upid,
    }
}
