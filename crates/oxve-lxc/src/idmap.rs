//! User and group id mappings of unprivileged containers: the ranges from
//! `/etc/subuid` and `/etc/subgid` (upstream's `root:100000:65536`), or the
//! CT's own `lxc.idmap` keys, and shifting a root file system into them.

use crate::error::{io_err, LxcError};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One mapping: container ids `ct..ct+count` are host ids `host..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub ct: u32,
    pub host: u32,
    pub count: u32,
}

/// The uid and gid mappings of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    pub uids: Vec<Range>,
    pub gids: Vec<Range>,
}

impl IdMap {
    /// The default mapping: root's first range of at least 65536 ids in
    /// `subuid`/`subgid` texts, mapped to container ids 0..65536.
    pub fn from_subid(subuid: &str, subgid: &str) -> Result<IdMap, LxcError> {
        let pick = |text: &str, file: &str| {
            text.lines()
                .filter_map(|l| {
                    let mut f = l.trim().split(':');
                    let (user, start, count) = (f.next()?, f.next()?, f.next()?);
                    let (start, count): (u32, u32) = (start.parse().ok()?, count.parse().ok()?);
                    (matches!(user, "root" | "0") && count >= 65536).then_some(start)
                })
                .next()
                .map(|host| vec![Range { ct: 0, host, count: 65536 }])
                .ok_or_else(|| {
                    LxcError::Config(format!(
                        "no id range for root with at least 65536 ids in {file} (add 'root:100000:65536')"
                    ))
                })
        };
        Ok(IdMap {
            uids: pick(subuid, "/etc/subuid")?,
            gids: pick(subgid, "/etc/subgid")?,
        })
    }

    /// Reads the host's `/etc/subuid` and `/etc/subgid`.
    pub fn from_host() -> Result<IdMap, LxcError> {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        IdMap::from_subid(&read("/etc/subuid"), &read("/etc/subgid"))
    }

    /// A CT's own `lxc.idmap` values (`u 0 100000 1000`, ...), if it has any.
    pub fn from_raw(entries: &[&str]) -> Result<Option<IdMap>, LxcError> {
        let mut map = IdMap {
            uids: Vec::new(),
            gids: Vec::new(),
        };
        for entry in entries {
            let f: Vec<&str> = entry.split_whitespace().collect();
            let parsed = match f.as_slice() {
                [kind, ct, host, count] => match (ct.parse(), host.parse(), count.parse()) {
                    (Ok(ct), Ok(host), Ok(count)) => Some((*kind, Range { ct, host, count })),
                    _ => None,
                },
                _ => None,
            };
            match parsed {
                Some(("u", r)) => map.uids.push(r),
                Some(("g", r)) => map.gids.push(r),
                Some(("b", r)) => {
                    map.uids.push(r);
                    map.gids.push(r);
                }
                _ => {
                    return Err(LxcError::Config(format!(
                        "lxc.idmap: cannot parse '{entry}'"
                    )))
                }
            }
        }
        Ok((!map.uids.is_empty() || !map.gids.is_empty()).then_some(map))
    }

    /// The `lxc.idmap` values of this mapping.
    pub fn lxc_lines(&self) -> Vec<String> {
        let u = self
            .uids
            .iter()
            .map(|r| format!("u {} {} {}", r.ct, r.host, r.count));
        let g = self
            .gids
            .iter()
            .map(|r| format!("g {} {} {}", r.ct, r.host, r.count));
        u.chain(g).collect()
    }

    /// The host uid of container uid `id`.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        map(&self.uids, id)
    }

    /// The host gid of container gid `id`.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        map(&self.gids, id)
    }

    /// Shifts every file below `root` (not crossing mounts) from container
    /// ids to host ids, keeping setuid/setgid bits that `chown` clears.
    pub fn shift_tree(&self, root: &Path) -> Result<(), LxcError> {
        let dev = std::fs::symlink_metadata(root)
            .map_err(|e| io_err("cannot stat", root, e))?
            .dev();
        let mut stack = vec![root.to_path_buf()];
        while let Some(path) = stack.pop() {
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| io_err("cannot stat", &path, e))?;
            if meta.dev() != dev {
                continue;
            }
            let uid = self.host_uid(meta.uid()).unwrap_or(65534);
            let gid = self.host_gid(meta.gid()).unwrap_or(65534);
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .map_err(|e| io_err("cannot chown", &path, e))?;
            let mode = meta.mode() & 0o7777;
            if meta.file_type().is_file() && mode & 0o6000 != 0 {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io_err("cannot chmod", &path, e))?;
            }
            if meta.is_dir() {
                for entry in
                    std::fs::read_dir(&path).map_err(|e| io_err("cannot read", &path, e))?
                {
                    stack.push(entry.map_err(|e| io_err("cannot read", &path, e))?.path());
                }
            }
        }
        Ok(())
    }
}

fn map(ranges: &[Range], id: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| id >= r.ct && id - r.ct < r.count)
        .map(|r| r.host + (id - r.ct))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_roots_range() {
        let m = IdMap::from_subid(
            "alice:200000:65536\nroot:100000:65536\n",
            "root:300000:70000\n",
        )
        .unwrap();
        assert_eq!(m.host_uid(0), Some(100000));
        assert_eq!(m.host_gid(5), Some(300005));
        assert_eq!(m.host_uid(65536), None);
        assert_eq!(m.lxc_lines(), vec!["u 0 100000 65536", "g 0 300000 65536"]);
        let err = IdMap::from_subid("root:1:10\n", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("root:100000:65536"), "{err}");
    }

    #[test]
    fn raw_entries_replace_the_default() {
        let m = IdMap::from_raw(&[
            "u 0 100000 1005",
            "g 0 100000 1005",
            "u 1005 1005 1",
            "b 1006 101006 64530",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(m.host_uid(1005), Some(1005));
        assert_eq!(m.host_gid(1006), Some(101006));
        assert!(IdMap::from_raw(&[]).unwrap().is_none());
        assert!(IdMap::from_raw(&["x 1 2"]).is_err());
    }
}
