//! The UPID ("unique process id") of a worker task, in upstream's format
//! `UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{type}:{id}:{user}:`.

use crate::error::{Result, TaskError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A parsed UPID. Field rules follow upstream's parser: the node is a host
/// name, pid and start time are 8 hex digits, pstart 8 or 9 (it outgrows
/// 32 bits after ~500 days of uptime), type and user are non-empty and
/// like the id (which may be empty) contain no `:`, `/` or whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    /// The node the task runs on.
    pub node: String,
    /// The pid of the process running the task (here: the daemon).
    pub pid: u32,
    /// That process's start time in clock ticks since boot (field 22 of
    /// `/proc/<pid>/stat`), so a reused pid is not mistaken for it.
    pub pstart: u64,
    /// When the task started, seconds since the Unix epoch.
    pub starttime: i64,
    /// The task type, e.g. `qmstart`, `vzdump`.
    pub worker_type: String,
    /// The object the task works on (often a VMID), possibly empty.
    pub id: String,
    /// Who started it (`user@realm` or `user@realm!token`).
    pub user: String,
}

impl Upid {
    /// Builds a UPID, checking every field as the parser would.
    pub fn new(
        node: &str,
        pid: u32,
        pstart: u64,
        starttime: i64,
        worker_type: &str,
        id: &str,
        user: &str,
    ) -> Result<Upid> {
        check_node(node)?;
        check_word("type", worker_type, false)?;
        check_word("id", id, true)?;
        check_word("user", user, false)?;
        if !(0..=0xFFFF_FFFF).contains(&starttime) {
            return Err(TaskError::InvalidField {
                field: "starttime",
                value: starttime.to_string(),
                reason: "must fit in 8 hex digits",
            });
        }
        if pstart > 0xF_FFFF_FFFF {
            return Err(TaskError::InvalidField {
                field: "pstart",
                value: pstart.to_string(),
                reason: "must fit in 9 hex digits",
            });
        }
        Ok(Upid {
            node: node.to_string(),
            pid,
            pstart,
            starttime,
            worker_type: worker_type.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        })
    }

    /// The log subdirectory: the last hex digit of the start time.
    pub fn log_subdir(&self) -> String {
        format!("{:X}", self.starttime & 0xF)
    }

    /// The user and the API token name, when the task was started by a
    /// token (`user@realm!token`), as upstream's task lists show them.
    pub fn user_and_token(&self) -> (&str, Option<&str>) {
        match self.user.split_once('!') {
            Some((user, token)) => (user, Some(token)),
            None => (&self.user, None),
        }
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.worker_type, self.id, self.user
        )
    }
}

impl FromStr for Upid {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<Upid> {
        let bad = || TaskError::InvalidUpid(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        let [tag, node, pid, pstart, starttime, worker_type, id, user, end] = parts[..] else {
            return Err(bad());
        };
        if tag != "UPID" || !end.is_empty() {
            return Err(bad());
        }
        let pid = hex(pid, 8, 8).ok_or_else(bad)?;
        let pstart = hex(pstart, 8, 9).ok_or_else(bad)?;
        let starttime = hex(starttime, 8, 8).ok_or_else(bad)?;
        let pid = u32::try_from(pid).map_err(|_| bad())?;
        let starttime = i64::try_from(starttime).map_err(|_| bad())?;
        Upid::new(node, pid, pstart, starttime, worker_type, id, user).map_err(|_| bad())
    }
}

impl Serialize for Upid {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Upid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Upid, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A hex number of `min..=max` digits.
fn hex(s: &str, min: usize, max: usize) -> Option<u64> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Upstream: `[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?`.
fn check_node(node: &str) -> Result<()> {
    let ok = !node.is_empty()
        && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !node.starts_with('-')
        && !node.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(TaskError::InvalidField {
            field: "node",
            value: node.to_string(),
            reason: "must be a host name",
        })
    }
}

/// Upstream: `[^:\s/]+` (or `*` for the id).
fn check_word(field: &'static str, value: &str, may_be_empty: bool) -> Result<()> {
    let reason = if value.is_empty() && !may_be_empty {
        "must not be empty"
    } else if value
        .chars()
        .any(|c| c == ':' || c == '/' || c.is_whitespace())
    {
        "must not contain ':', '/' or whitespace"
    } else {
        return Ok(());
    };
    Err(TaskError::InvalidField {
        field,
        value: value.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_upstream_examples() {
        for s in [
            "UPID:pve1:00001234:0001A2B3:5F5E1000:qmstart:100:root@pam:",
            "UPID:node-2:0000AFFE:00A1B2C3:6554F3D1:vzdump::root@pam!backup:",
            "UPID:pve:00000001:123456789:FFFFFFFF:aptupdate::root@pam:",
        ] {
            let upid: Upid = s.parse().unwrap();
            assert_eq!(upid.to_string(), s);
        }
        let u: Upid = "UPID:pve1:00001234:0001A2B3:5F5E1000:qmstart:100:root@pam:"
            .parse()
            .unwrap();
        assert_eq!(u.node, "pve1");
        assert_eq!(u.pid, 0x1234);
        assert_eq!(u.pstart, 0x1A2B3);
        assert_eq!(u.starttime, 0x5F5E1000);
        assert_eq!(u.worker_type, "qmstart");
        assert_eq!(u.id, "100");
        assert_eq!(u.user, "root@pam");
        assert_eq!(u.log_subdir(), "0");
        assert_eq!(u.user_and_token(), ("root@pam", None));
    }

    #[test]
    fn lowercase_hex_parses_and_prints_uppercase() {
        let u: Upid = "UPID:pve1:0000abcd:0001a2b3:5f5e100e:qmstart:100:root@pam:"
            .parse()
            .unwrap();
        assert_eq!(
            u.to_string(),
            "UPID:pve1:0000ABCD:0001A2B3:5F5E100E:qmstart:100:root@pam:"
        );
        assert_eq!(u.log_subdir(), "E");
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "UPID:pve1:00001234:0001A2B3:5F5E1000:qmstart:100:root@pam",
            "UPID:pve1:1234:0001A2B3:5F5E1000:qmstart:100:root@pam:",
            "UPID:pve1:00001234:0001A2B3:5F5E10000:qmstart:100:root@pam:",
            "UPID:pve1:0000123G:0001A2B3:5F5E1000:qmstart:100:root@pam:",
            "UPID:-pve1:00001234:0001A2B3:5F5E1000:qmstart:100:root@pam:",
            "UPID:pve1:00001234:0001A2B3:5F5E1000::100:root@pam:",
            "UPID:pve1:00001234:0001A2B3:5F5E1000:qmstart:100::",
            "UPID:pve1:00001234:0001A2B3:5F5E1000:qm start:100:root@pam:",
            "UPID:pve1:00001234:0001A2B3:5F5E1000:qmstart:1/0:root@pam:",
            "UPID:pve1:00001234:0001A2B3:5F5E1000:qmstart:100:root@pam:x:",
            "XPID:pve1:00001234:0001A2B3:5F5E1000:qmstart:100:root@pam:",
        ] {
            let err = s.parse::<Upid>().unwrap_err();
            assert!(
                err.to_string().contains("unable to parse worker upid"),
                "{s}"
            );
        }
    }

    #[test]
    fn new_refuses_colons() {
        assert!(Upid::new("pve1", 1, 1, 1, "qm:start", "", "root@pam").is_err());
        assert!(Upid::new("pve1", 1, 1, 1, "qmstart", "1:0", "root@pam").is_err());
        assert!(Upid::new("pve1", 1, 1, 1, "qmstart", "", "root@pam").is_ok());
    }

    #[test]
    fn token_user_splits() {
        let u = Upid::new("pve1", 1, 1, 1, "vzdump", "", "root@pam!backup").unwrap();
        assert_eq!(u.user_and_token(), ("root@pam", Some("backup")));
    }

    #[test]
    fn serializes_as_string() {
        let s = "UPID:pve1:00001234:0001A2B3:5F5E1000:qmstart:100:root@pam:";
        let u: Upid = s.parse().unwrap();
        assert_eq!(serde_json::to_string(&u).unwrap(), format!("\"{s}\""));
        let back: Upid = serde_json::from_str(&format!("\"{s}\"")).unwrap();
        assert_eq!(back, u);
    }
}
