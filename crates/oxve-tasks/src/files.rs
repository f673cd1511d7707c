//! The task files in upstream's formats: logs, `active` and `index`.

use crate::error::{Result, TaskError};
use crate::upid::Upid;
use crate::UNEXPECTED_STATUS;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The archive index; rotated to `index.1` when it grows past
/// [`INDEX_MAX_SIZE`] bytes (upstream: about 1000 entries).
pub(crate) const INDEX: &str = "index";
pub(crate) const INDEX_OLD: &str = "index.1";
const INDEX_MAX_SIZE: u64 = 50_000;
/// Running and recently finished tasks.
pub(crate) const ACTIVE: &str = "active";

/// One line of a task log, as `GET .../tasks/{upid}/log` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// The line number, from 1.
    pub n: u64,
    /// The line's text, without its newline.
    pub t: String,
}

/// A task in the `active` list or the `index`: finished when it has an
/// end time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRecord {
    pub upid: Upid,
    pub endtime: Option<i64>,
    pub status: Option<String>,
}

/// Where the log of `upid` lives under `dir`.
pub(crate) fn log_path(dir: &Path, upid: &Upid) -> PathBuf {
    dir.join(upid.log_subdir()).join(upid.to_string())
}

/// The exit status of a final log line: `OK`, the error message or
/// `WARNINGS: <n>`; `None` if the line is not a final line.
pub(crate) fn final_status(line: &str) -> Option<String> {
    if line == "TASK OK" {
        return Some("OK".to_string());
    }
    if let Some(msg) = line.strip_prefix("TASK ERROR: ") {
        return (!msg.is_empty()).then(|| msg.to_string());
    }
    let n = line.strip_prefix("TASK WARNINGS: ")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then(|| format!("WARNINGS: {n}"))
}

/// Upstream's `read_status`: the exit status from the log's last line,
/// [`UNEXPECTED_STATUS`] if it is no final line.
pub(crate) fn read_status(path: &Path) -> String {
    match last_line(path) {
        Ok(line) => final_status(&line).unwrap_or_else(|| UNEXPECTED_STATUS.to_string()),
        Err(e) => format!("unable to get last line from task log - {e}"),
    }
}

/// The exit status from the log's final line, if it has one.
pub(crate) fn read_final(path: &Path) -> Option<String> {
    final_status(&last_line(path).ok()?)
}

/// The last line of a file (without its newline), reading only its tail.
fn last_line(path: &Path) -> std::io::Result<String> {
    const TAIL: u64 = 8192;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.rsplit('\n').next().unwrap_or("").to_string())
}

/// Upstream's `dump_logfile`: lines `start+1 ..= start+limit` (all from
/// `start` on when `limit` is 0) and the number of lines in the file. An
/// empty log reads as one line `no content`, an unreadable one as one
/// line telling why — as upstream, whose web UI relies on that.
pub(crate) fn read_log(path: &Path, start: u64, limit: u64) -> (Vec<LogLine>, u64) {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let t = format!("unable to open file - {e}");
            return (vec![LogLine { n: 1, t }], 1);
        }
    };
    let mut lines = Vec::new();
    let mut count = 0;
    for line in BufReader::new(file).split(b'\n') {
        let Ok(line) = line else { break };
        count += 1;
        if count <= start || (limit > 0 && count > start + limit) {
            continue;
        }
        let t = String::from_utf8_lossy(&line).into_owned();
        lines.push(LogLine { n: count, t });
    }
    if count == 0 {
        count = 1;
        lines.push(LogLine {
            n: 1,
            t: "no content".to_string(),
        });
    }
    (lines, count)
}

/// Parses the `active` file: `<UPID> <saved 0|1>[ <endtime>[ <status>]]`.
/// Lines that do not parse are skipped, as upstream does.
pub(crate) fn parse_active(text: &str) -> Vec<(TaskRecord, bool)> {
    text.lines()
        .filter_map(|line| {
            let (upid, rest) = line.split_once(' ')?;
            let (saved, rest) = match rest.split_once(' ') {
                Some((s, r)) => (s, Some(r)),
                None => (rest, None),
            };
            let saved = match saved {
                "0" => false,
                "1" => true,
                _ => return None,
            };
            let record = parse_record(upid, rest)?;
            Some((record, saved))
        })
        .collect()
}

/// Writes the `active` file's lines.
pub(crate) fn format_active<'a>(entries: impl Iterator<Item = (&'a TaskRecord, bool)>) -> String {
    let mut out = String::new();
    for (record, saved) in entries {
        out.push_str(&record.upid.to_string());
        out.push_str(if saved { " 1" } else { " 0" });
        if let Some(end) = record.endtime {
            out.push_str(&format!(" {end:08X}"));
            if let Some(status) = &record.status {
                out.push(' ');
                out.push_str(status);
            }
        }
        out.push('\n');
    }
    out
}

/// Parses an `index` line: `<UPID> <endtime hex> <status>`.
pub(crate) fn parse_index_line(line: &str) -> Option<TaskRecord> {
    match line.split_once(' ') {
        Some((upid, rest)) => parse_record(upid, Some(rest)),
        None => parse_record(line, None),
    }
}

/// An index line for a finished task.
pub(crate) fn format_index_line(upid: &Upid, endtime: i64, status: &str) -> String {
    format!("{upid} {endtime:08X} {status}\n")
}

/// `<UPID>` then optionally `<endtime as 8 hex digits>[ <status>]`.
fn parse_record(upid: &str, rest: Option<&str>) -> Option<TaskRecord> {
    let upid: Upid = upid.parse().ok()?;
    let Some(rest) = rest else {
        return Some(TaskRecord {
            upid,
            endtime: None,
            status: None,
        });
    };
    let (end, status) = match rest.split_once(' ') {
        Some((e, s)) => (e, Some(s.trim_start()).filter(|s| !s.is_empty())),
        None => (rest, None),
    };
    if end.len() != 8 {
        return None;
    }
    let endtime = i64::from_str_radix(end, 16).ok()?;
    Some(TaskRecord {
        upid,
        endtime: Some(endtime),
        status: status.map(String::from),
    })
}

/// Appends to the archive index, rotating it when it gets too big.
pub(crate) fn append_index(dir: &Path, line: &str) -> Result<()> {
    let path = dir.join(INDEX);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(TaskError::io(&path))?;
    file.write_all(line.as_bytes())
        .map_err(TaskError::io(&path))?;
    let size = file.metadata().map_err(TaskError::io(&path))?.len();
    if size > INDEX_MAX_SIZE {
        std::fs::rename(&path, dir.join(INDEX_OLD)).map_err(TaskError::io(&path))?;
    }
    Ok(())
}

/// Replaces a file's content atomically (write a temporary file, rename).
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(TaskError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(TaskError::io(path))
}

/// The text of a file, empty if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(TaskError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "UPID:pve1:00001234:0001A2B3:5F5E1000:qmstart:100:root@pam:";

    #[test]
    fn final_lines() {
        assert_eq!(final_status("TASK OK").as_deref(), Some("OK"));
        assert_eq!(
            final_status("TASK ERROR: start failed: no such VM").as_deref(),
            Some("start failed: no such VM")
        );
        assert_eq!(
            final_status("TASK WARNINGS: 3").as_deref(),
            Some("WARNINGS: 3")
        );
        assert_eq!(final_status("TASK WARNINGS: x"), None);
        assert_eq!(final_status("some output"), None);
    }

    #[test]
    fn active_and_index_lines_round_trip() {
        let text = format!("{U} 0\n{U} 1 5F5E1010 OK\n{U} 1 5F5E1010 start failed: x y\n");
        let parsed = parse_active(&text);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[2].0.status.as_deref(), Some("start failed: x y"));
        assert_eq!(parsed[1].0.endtime, Some(0x5F5E1010));
        let again = format_active(parsed.iter().map(|(r, s)| (r, *s)));
        assert_eq!(again, text);

        let upid: Upid = U.parse().unwrap();
        let line = format_index_line(&upid, 0x5F5E1010, "WARNINGS: 2");
        assert_eq!(line, format!("{U} 5F5E1010 WARNINGS: 2\n"));
        let rec = parse_index_line(line.trim_end()).unwrap();
        assert_eq!(rec.status.as_deref(), Some("WARNINGS: 2"));
        assert!(parse_index_line("garbage").is_none());
        assert!(parse_active("garbage 0\n").is_empty());
    }

    #[test]
    fn log_paging() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\nd\ne\n").unwrap();
        let (lines, total) = read_log(&path, 1, 2);
        assert_eq!(total, 5);
        assert_eq!(
            lines,
            [
                LogLine {
                    n: 2,
                    t: "b".into()
                },
                LogLine {
                    n: 3,
                    t: "c".into()
                }
            ]
        );
        let (lines, _) = read_log(&path, 3, 0);
        assert_eq!(lines.iter().map(|l| l.n).collect::<Vec<_>>(), [4, 5]);
        std::fs::write(&path, "").unwrap();
        let (lines, total) = read_log(&path, 0, 50);
        assert_eq!((lines[0].t.as_str(), total), ("no content", 1));
        let (lines, _) = read_log(&dir.path().join("missing"), 0, 50);
        assert!(lines[0].t.starts_with("unable to open file - "));
    }

    #[test]
    fn status_from_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "x\nTASK ERROR: boom\n").unwrap();
        assert_eq!(read_status(&path), "boom");
        std::fs::write(&path, "x\n").unwrap();
        assert_eq!(read_status(&path), UNEXPECTED_STATUS);
    }
}
