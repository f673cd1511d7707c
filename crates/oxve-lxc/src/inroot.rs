//! Opening paths of a container's rootfs as the container sees them:
//! `openat2(2)` with `RESOLVE_IN_ROOT`, so symlinks and `..` resolve with
//! the rootfs as `/` and never lead out of it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// How often a resolution that raced with a concurrent rename is retried.
const TRIES: usize = 16;

/// Opens `rel` below the directory `root` with `flags` (`O_CLOEXEC` is
/// added), resolving it inside `root`; magic links are refused.
pub(crate) fn open_in_root(root: &OwnedFd, rel: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(rel)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    for _ in 0..TRIES {
        // SAFETY: openat2 reads `how` (of the size passed) and the
        // NUL-terminated path; the returned fd is owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // A concurrent rename raced with the resolution of `..`.
            Some(libc::EAGAIN) => continue,
            Some(libc::ENOSYS) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel lacks openat2(2) (Linux 5.6 or newer is needed)",
                ))
            }
            _ => return Err(err),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}
