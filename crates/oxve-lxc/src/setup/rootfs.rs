//! File access inside a container's root filesystem that can never leave it.
//!
//! Every path is resolved by the kernel with `openat2(RESOLVE_IN_ROOT)`
//! relative to a directory handle of the rootfs, so symlinks (absolute or
//! with `..`) are followed as if the rootfs were `/` — exactly as
//! upstream's setup code sees them after its `chroot`. Writes go to a
//! temporary file in the resolved parent directory that is then renamed
//! over the target, so a final component that is a symlink is replaced by
//! a regular file and never written through.
//!
//! Ownership: files and directories this module creates belong to the
//! container's root (`root_uid`/`root_gid`); rewriting an existing regular
//! file keeps its owner and, unless a mode is asked for, its mode.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Status of one file as `fstatat` reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

impl Stat {
    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
}

/// A container root filesystem opened for setup.
pub(crate) struct Rootfs {
    root: OwnedFd,
    uid: u32,
    gid: u32,
}

/// The error of one file operation, with the path inside the container.
#[derive(Debug)]
pub(crate) struct FsError {
    pub path: String,
    pub source: io::Error,
}

pub(crate) type FsResult<T> = Result<T, FsError>;

fn at(path: &str) -> impl FnOnce(io::Error) -> FsError + '_ {
    move |source| FsError {
        path: path.to_string(),
        source,
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// `path` relative to the rootfs handle: components joined, `.` for `/`.
fn relative(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// Splits `path` into its parent directory and final name.
fn split_parent(path: &str) -> io::Result<(String, String)> {
    let rel = relative(path);
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p.to_string(), n.to_string()),
        None => (".".to_string(), rel),
    };
    if name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no file name",
        ));
    }
    Ok((parent, name))
}

fn cvt(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn errno_is(err: &io::Error, codes: &[i32]) -> bool {
    err.raw_os_error().is_some_and(|e| codes.contains(&e))
}

fn fstatat(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<Stat> {
    // SAFETY: `st` is plain data that fstatat fills; `name` is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, flags) })?;
    Ok(Stat {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
    })
}

/// Whether file `name` in directory `dir` (not followed if it is a
/// symlink) holds exactly `data`.
fn same_content(dir: &OwnedFd, name: &CStr, data: &[u8]) -> io::Result<bool> {
    // SAFETY: openat of a NUL-terminated name in an open directory; the
    // descriptor is owned right below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut have = Vec::with_capacity(data.len() + 1);
    file.take(data.len() as u64 + 1).read_to_end(&mut have)?;
    Ok(have == data)
}

impl Rootfs {
    /// Opens the rootfs at `path` (a directory on the host); files created
    /// later belong to `uid`/`gid` on the host.
    pub fn open(path: &Path, uid: u32, gid: u32) -> FsResult<Rootfs> {
        let shown = path.display().to_string();
        let c = cstring(&shown).map_err(at(&shown))?;
        // SAFETY: plain open(2) of a NUL-terminated path; the fd is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(at(&shown)(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let root = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Rootfs { root, uid, gid })
    }

    /// Resolves `rel` inside the rootfs and opens it.
    fn openat2(&self, rel: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
        crate::inroot::open_in_root(&self.root, rel, flags)
    }

    /// The parent directory of `path` (resolved inside the rootfs) and the
    /// final name, which is not resolved.
    fn parent(&self, path: &str) -> io::Result<(OwnedFd, CString)> {
        let (parent, name) = split_parent(path)?;
        let dir = self.openat2(&parent, libc::O_PATH | libc::O_DIRECTORY)?;
        Ok((dir, cstring(&name)?))
    }

    /// `stat` following symlinks inside the rootfs; `None` if nothing is there.
    pub fn stat(&self, path: &str) -> Option<Stat> {
        let fd = self.openat2(&relative(path), libc::O_PATH).ok()?;
        fstatat(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH).ok()
    }

    /// `lstat`: the final component itself, not what it points to.
    pub fn lstat(&self, path: &str) -> Option<Stat> {
        let (dir, name) = self.parent(path).ok()?;
        fstatat(dir.as_raw_fd(), &name, libc::AT_SYMLINK_NOFOLLOW).ok()
    }

    /// Perl's `-f`.
    pub fn is_file(&self, path: &str) -> bool {
        self.stat(path).is_some_and(|s| s.is_file())
    }

    /// Perl's `-d`.
    pub fn is_dir(&self, path: &str) -> bool {
        self.stat(path).is_some_and(|s| s.is_dir())
    }

    /// Perl's `-e`.
    pub fn exists(&self, path: &str) -> bool {
        self.stat(path).is_some()
    }

    /// Perl's `-l`.
    pub fn is_symlink(&self, path: &str) -> bool {
        self.lstat(path).is_some_and(|s| s.is_symlink())
    }

    /// Perl's `-x` for root: a regular file with an execute bit, or a directory.
    pub fn is_executable(&self, path: &str) -> bool {
        self.stat(path)
            .is_some_and(|s| s.is_dir() || (s.is_file() && s.mode & 0o111 != 0))
    }

    /// The target of the symlink `path` (not resolved), if it is one.
    pub fn readlink(&self, path: &str) -> Option<String> {
        let (dir, name) = self.parent(path).ok()?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: readlinkat writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return None;
        }
        buf.truncate(n as usize);
        String::from_utf8(buf).ok()
    }

    /// The canonical path of `path` inside the rootfs (`abs_path` in the
    /// chroot), if it exists.
    pub fn canonical(&self, path: &str) -> Option<String> {
        let fd = self.openat2(&relative(path), libc::O_PATH).ok()?;
        let full = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let root = std::fs::read_link(format!("/proc/self/fd/{}", self.root.as_raw_fd())).ok()?;
        let rest = full.strip_prefix(&root).ok()?;
        Some(format!("/{}", rest.display()))
    }

    /// Reads a whole file; `Ok(None)` if it does not exist.
    pub fn read_bytes(&self, path: &str, max: Option<u64>) -> FsResult<Option<Vec<u8>>> {
        let fd = match self.openat2(&relative(path), libc::O_RDONLY) {
            Ok(fd) => fd,
            Err(e) if errno_is(&e, &[libc::ENOENT]) => return Ok(None),
            Err(e) => return Err(at(path)(e)),
        };
        let file = File::from(fd);
        let mut data = Vec::new();
        match max {
            Some(max) => file.take(max).read_to_end(&mut data),
            None => (&file).read_to_end(&mut data),
        }
        .map_err(at(path))?;
        Ok(Some(data))
    }

    /// Reads a whole text file; `Ok(None)` if it does not exist.
    pub fn read(&self, path: &str) -> FsResult<Option<String>> {
        match self.read_bytes(path, None)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| FsError {
                path: path.to_string(),
                source: io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"),
            }),
        }
    }

    /// The first line of a file without its newline (upstream's
    /// `file_read_firstline`); `None` if the file does not exist or is empty.
    pub fn read_first_line(&self, path: &str) -> FsResult<Option<String>> {
        Ok(self.read(path)?.and_then(|text| {
            let line = text.split('\n').next().unwrap_or("");
            if text.is_empty() {
                None
            } else {
                Some(line.to_string())
            }
        }))
    }

    /// Names in a directory (without `.` and `..`); empty if it is missing.
    pub fn list_dir(&self, path: &str) -> Vec<String> {
        let Ok(fd) = self.openat2(&relative(path), libc::O_RDONLY | libc::O_DIRECTORY) else {
            return Vec::new();
        };
        // The fd is already resolved, so reading it through /proc follows
        // no path inside the rootfs.
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// Upstream's `.pve-ignore.<name>` marker: the user asked that setup
    /// leave `path` alone.
    pub fn is_ignored(&self, path: &str) -> bool {
        match split_parent(path) {
            Ok((parent, name)) => self.is_file(&format!("{parent}/.pve-ignore.{name}")),
            Err(_) => false,
        }
    }

    /// Gives a fresh entry to the container's root (a no-op when it
    /// already belongs to it, so unprivileged test runs work too).
    fn chown_at(&self, dir: RawFd, name: &CStr) -> io::Result<()> {
        let st = fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW)?;
        if st.uid == self.uid && st.gid == self.gid {
            return Ok(());
        }
        // SAFETY: fchownat on a NUL-terminated name relative to an open dir.
        cvt(unsafe {
            libc::fchownat(
                dir,
                name.as_ptr(),
                self.uid,
                self.gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// Replaces the contents of `path` atomically (temp file + rename).
    ///
    /// `mode` is applied when given; otherwise an existing regular file
    /// keeps its mode, and a new one gets 0644. An existing regular file
    /// keeps its owner; anything else (nothing, a symlink) is replaced by a
    /// file owned by the container's root. Ignored paths are left alone.
    pub fn write(&self, path: &str, data: &[u8], mode: Option<u32>) -> FsResult<()> {
        if self.is_ignored(path) {
            return Ok(());
        }
        self.write_inner(path, data, mode).map_err(at(path))
    }

    fn write_inner(&self, path: &str, data: &[u8], mode: Option<u32>) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        let existing = fstatat(dir.as_raw_fd(), &name, libc::AT_SYMLINK_NOFOLLOW)
            .ok()
            .filter(Stat::is_file);
        let mode = mode.unwrap_or_else(|| existing.map_or(0o644, |s| s.mode & 0o7777));
        let (uid, gid) = existing.map_or((self.uid, self.gid), |s| (s.uid, s.gid));
        if let Some(st) =
            existing.filter(|s| s.mode & 0o7777 == mode && s.size == data.len() as u64)
        {
            // Most starts rewrite what the last one wrote: an identical
            // file is left alone (reading costs less than replacing).
            if st.is_file() && same_content(&dir, &name, data).unwrap_or(false) {
                return Ok(());
            }
        }

        let tmp = cstring(&format!(
            "{}.tmp.{}",
            name.to_string_lossy(),
            std::process::id()
        ))?;
        let open_tmp = || {
            // SAFETY: openat of a NUL-terminated name; O_EXCL|O_NOFOLLOW
            // never follows or reuses anything already there.
            unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    tmp.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    mode as libc::c_uint,
                )
            }
        };
        let mut fd = open_tmp();
        if fd < 0 && errno_is(&io::Error::last_os_error(), &[libc::EEXIST]) {
            // A stale temp file of an earlier run with the same pid.
            // SAFETY: unlinkat of a NUL-terminated name in an open dir.
            cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) })?;
            fd = open_tmp();
        }
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let result = (|| {
            file.write_all(data)?;
            // SAFETY: fchmod/fchown on our own open file.
            cvt(unsafe { libc::fchmod(file.as_raw_fd(), mode as libc::mode_t) })?;
            let st = fstatat(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH)?;
            if st.uid != uid || st.gid != gid {
                cvt(unsafe { libc::fchown(file.as_raw_fd(), uid, gid) })?;
            }
            // No fsync: these files are regenerated from the CT config at
            // every start, and the rename below keeps a reader from ever
            // seeing half a file (ext4 flushes data before a replacing
            // rename); six fsyncs per start cost more than the start.
            // SAFETY: renameat of NUL-terminated names within one open dir.
            cvt(unsafe {
                libc::renameat(
                    dir.as_raw_fd(),
                    tmp.as_ptr(),
                    dir.as_raw_fd(),
                    name.as_ptr(),
                )
            })
        })();
        if result.is_err() {
            // SAFETY: as above; the temp file is ours.
            unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
        }
        result
    }

    /// Removes a file or symlink; a missing one is fine.
    pub fn unlink(&self, path: &str) -> FsResult<()> {
        if self.is_ignored(path) {
            return Ok(());
        }
        let (dir, name) = match self.parent(path) {
            Ok(p) => p,
            Err(e) if errno_is(&e, &[libc::ENOENT, libc::ENOTDIR]) => return Ok(()),
            Err(e) => return Err(at(path)(e)),
        };
        // SAFETY: unlinkat of a NUL-terminated name in an open dir.
        match cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }) {
            Err(e) if !errno_is(&e, &[libc::ENOENT]) => Err(at(path)(e)),
            _ => Ok(()),
        }
    }

    /// Creates the symlink `path` -> `target`, owned by the container's
    /// root. Like upstream, an existing entry or a missing parent directory
    /// is not an error: `Ok(false)` then.
    pub fn symlink(&self, target: &str, path: &str) -> FsResult<bool> {
        if self.is_ignored(path) {
            return Ok(false);
        }
        let (dir, name) = match self.parent(path) {
            Ok(p) => p,
            Err(e) if errno_is(&e, &[libc::ENOENT, libc::ENOTDIR]) => return Ok(false),
            Err(e) => return Err(at(path)(e)),
        };
        let t = cstring(target).map_err(at(path))?;
        // SAFETY: symlinkat with NUL-terminated strings relative to an open dir.
        match cvt(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }) {
            Err(e) if errno_is(&e, &[libc::EEXIST]) => Ok(false),
            Err(e) => Err(at(path)(e)),
            Ok(()) => {
                self.chown_at(dir.as_raw_fd(), &name).map_err(at(path))?;
                Ok(true)
            }
        }
    }

    /// Renames inside the rootfs (both paths resolved inside it).
    pub fn rename(&self, old: &str, new: &str) -> FsResult<()> {
        if self.is_ignored(new) {
            return Ok(());
        }
        let (odir, oname) = self.parent(old).map_err(at(old))?;
        let (ndir, nname) = self.parent(new).map_err(at(new))?;
        // SAFETY: renameat of NUL-terminated names relative to open dirs.
        cvt(unsafe {
            libc::renameat(
                odir.as_raw_fd(),
                oname.as_ptr(),
                ndir.as_raw_fd(),
                nname.as_ptr(),
            )
        })
        .map_err(at(new))
    }

    /// Creates one directory owned by the container's root; `Ok(false)`
    /// if something is already there or the parent is missing (upstream
    /// ignores both).
    pub fn mkdir(&self, path: &str, mode: u32) -> FsResult<bool> {
        let (dir, name) = match self.parent(path) {
            Ok(p) => p,
            Err(e) if errno_is(&e, &[libc::ENOENT, libc::ENOTDIR]) => return Ok(false),
            Err(e) => return Err(at(path)(e)),
        };
        // SAFETY: mkdirat of a NUL-terminated name in an open dir.
        match cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }) {
            Err(e) if errno_is(&e, &[libc::EEXIST]) => Ok(false),
            Err(e) => Err(at(path)(e)),
            Ok(()) => {
                self.chown_at(dir.as_raw_fd(), &name).map_err(at(path))?;
                Ok(true)
            }
        }
    }

    /// `mkdir -p` (upstream's `make_path`): every missing directory on
    /// the way is created, owned by the container's root.
    pub fn make_path(&self, path: &str) -> FsResult<()> {
        let mut prefix = String::new();
        for part in relative(path).split('/') {
            if part == "." {
                continue;
            }
            prefix.push('/');
            prefix.push_str(part);
            if self.is_dir(&prefix) {
                continue;
            }
            let (dir, name) = self.parent(&prefix).map_err(at(&prefix))?;
            // SAFETY: mkdirat of a NUL-terminated name in an open dir.
            match cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) }) {
                Err(e) if errno_is(&e, &[libc::EEXIST]) && self.is_dir(&prefix) => {}
                Err(e) => return Err(at(&prefix)(e)),
                Ok(()) => self.chown_at(dir.as_raw_fd(), &name).map_err(at(&prefix))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative("/"), ".");
        assert_eq!(relative("/etc//hosts"), "etc/hosts");
        assert_eq!(
            split_parent("/etc/hosts").unwrap(),
            ("etc".into(), "hosts".into())
        );
        assert_eq!(
            split_parent("/fastboot").unwrap(),
            (".".into(), "fastboot".into())
        );
        assert!(split_parent("/").is_err());
        assert!(split_parent("/etc/..").is_err());
    }
}
