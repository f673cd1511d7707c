//! Process identity from `/proc`: a pid plus its start time, so that a
//! pid reused by another process is not taken for the original.

use crate::error::{Result, TaskError};

/// Which process runs tasks: its pid and start time (clock ticks since
/// boot, field 22 of `/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessId {
    pub pid: u32,
    pub pstart: u64,
}

impl ProcessId {
    /// This process.
    pub fn current() -> Result<ProcessId> {
        let path = "/proc/self/stat";
        let stat = std::fs::read_to_string(path).map_err(TaskError::io(path))?;
        let (_, pstart) = parse_stat(&stat).ok_or_else(|| TaskError::Io {
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "unparsable stat"),
        })?;
        Ok(ProcessId {
            pid: std::process::id(),
            pstart,
        })
    }

    /// Whether this process still runs (exists, is no zombie, and has the
    /// same start time — not a new process that got the pid).
    pub fn is_running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .is_some_and(|(state, pstart)| state != 'Z' && pstart == self.pstart)
    }
}

/// The state (field 3) and start time (field 22) of a stat line. The
/// command name (field 2) may contain spaces and parentheses, so fields
/// are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pstart = fields.nth(18)?.parse().ok()?;
    Some((state, pstart))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
    }

    #[test]
    fn current_process_is_running() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_running());
        let other = ProcessId {
            pstart: me.pstart + 1,
            ..me
        };
        assert!(!other.is_running());
    }
}
