//! A container's state straight from its LXC monitor, over the monitor's
//! command socket, instead of running `lxc-info` (a fork and exec of a
//! tool that loads the whole config, for two numbers).
//!
//! Every running container has a monitor (`lxc-start`) listening on an
//! abstract Unix socket named after the lxcpath and the container
//! (`@<lxcpath>/<name>/command`, or a hash of both when that is too long
//! for a socket address). A request is a fixed 16-byte record (command
//! number, data length, data pointer — unused for these commands), sent
//! with the caller's credentials; the answer is a 16-byte record (result,
//! data length, data) whose data field carries the value for the state
//! and init-pid commands. The layout is LXC's ABI on 64-bit hosts (LXC 4
//! and 5); nothing else of LXC's protocol is used here.
//!
//! Abstract sockets belong to a network namespace: with a node namespace
//! the socket is created by a short-lived thread that has joined it.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// LXC's command numbers used here.
const CMD_GET_STATE: u32 = 3;
const CMD_GET_INIT_PID: u32 = 4;

/// LXC's states (`lxc_state_t`) as the monitor reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorState {
    Stopped,
    Starting,
    Running,
    Stopping,
    Aborting,
    Freezing,
    Frozen,
    Thawed,
}

impl MonitorState {
    fn from_raw(v: u64) -> Option<MonitorState> {
        use MonitorState::*;
        Some(match v {
            0 => Stopped,
            1 => Starting,
            2 => Running,
            3 => Stopping,
            4 => Aborting,
            5 => Freezing,
            6 => Frozen,
            7 => Thawed,
            _ => return None,
        })
    }
}

/// The abstract socket name (without the leading NUL) of container `name`
/// under `lxcpath`: the plain path when it fits into a socket address,
/// else LXC's FNV-1a hash of `<lxcpath>/<name>`.
pub fn socket_name(lxcpath: &Path, name: &str) -> Vec<u8> {
    // sun_path holds 108 bytes; one is the leading NUL, and LXC wants the
    // name with its terminating NUL to fit in the rest.
    const ROOM: usize = 107;
    let base = format!("{}/{name}", lxcpath.display());
    let plain = format!("{base}/command");
    if plain.len() < ROOM {
        return plain.into_bytes();
    }
    format!("lxc/{:016x}/command", fnv1a(base.as_bytes())).into_bytes()
}

/// The 64-bit FNV-1a hash LXC names long sockets by.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Asks the monitor of container `name` for its state and init pid.
/// `Ok(None)`: no monitor listens (the container is not running).
pub fn query(
    lxcpath: &Path,
    name: &str,
    netns: Option<&str>,
) -> std::io::Result<Option<(MonitorState, Option<u32>)>> {
    let addr = socket_name(lxcpath, name);
    let Some(state) = command(&addr, netns, CMD_GET_STATE)? else {
        return Ok(None);
    };
    let state = MonitorState::from_raw(state).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("LXC monitor of '{name}' reports an unknown state {state}"),
        )
    })?;
    if matches!(state, MonitorState::Stopped | MonitorState::Aborting) {
        return Ok(Some((state, None)));
    }
    let pid = command(&addr, netns, CMD_GET_INIT_PID)?
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0);
    Ok(Some((state, pid)))
}

/// Sends one command and returns the answer's data field; `None` when no
/// monitor listens or it hung up without an answer (it is going away).
fn command(addr: &[u8], netns: Option<&str>, cmd: u32) -> std::io::Result<Option<u64>> {
    let sock = socket_in(netns)?;
    let fd = sock.as_raw_fd();
    let sockaddr = nix::sys::socket::UnixAddr::new_abstract(addr).map_err(std::io::Error::from)?;
    match nix::sys::socket::connect(fd, &sockaddr) {
        Ok(()) => {}
        Err(nix::errno::Errno::ECONNREFUSED | nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut req = [0u8; 16];
    req[..4].copy_from_slice(&cmd.to_ne_bytes());
    let creds = nix::sys::socket::UnixCredentials::new();
    let cmsg = [nix::sys::socket::ControlMessage::ScmCredentials(&creds)];
    nix::sys::socket::sendmsg::<()>(
        fd,
        &[IoSlice::new(&req)],
        &cmsg,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(std::io::Error::from)?;
    let mut rsp = [0u8; 16];
    let mut got = 0;
    while got < rsp.len() {
        let n = recv_some(fd, &mut rsp[got..])?;
        if n == 0 {
            return Ok(None);
        }
        got += n;
    }
    let ret = i32::from_ne_bytes([rsp[0], rsp[1], rsp[2], rsp[3]]);
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error(-ret));
    }
    let mut data = [0u8; 8];
    data.copy_from_slice(&rsp[8..]);
    Ok(Some(u64::from_ne_bytes(data)))
}

/// Receives into `buf`; file descriptors the monitor passes along (newer
/// LXC sends a pidfd with the init pid) are closed at once.
fn recv_some(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = nix::sys::socket::recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            for f in fds {
                // SAFETY: the kernel just installed this descriptor for us
                // and nothing else refers to it.
                drop(unsafe { OwnedFd::from_raw_fd(f) });
            }
        }
    }
    Ok(msg.bytes)
}

/// A new Unix stream socket in the node's network namespace (the current
/// one without `netns`).
fn socket_in(netns: Option<&str>) -> std::io::Result<OwnedFd> {
    let make = || {
        nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(std::io::Error::from)
    };
    let Some(ns) = netns else {
        return make();
    };
    let path = Path::new("/run/netns").join(ns);
    // setns affects only the calling thread: a socket made by a thread
    // that joined the namespace belongs to it for good.
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path)?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            make()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_plain_paths() {
        assert_eq!(
            socket_name(Path::new("/tmp/lx"), "c1"),
            b"/tmp/lx/c1/command".to_vec()
        );
    }

    #[test]
    fn long_names_are_hashed() {
        let long = "/x".repeat(60);
        let name = socket_name(Path::new(&long), "100");
        let text = String::from_utf8(name).unwrap();
        assert!(text.starts_with("lxc/") && text.ends_with("/command"));
        assert_eq!(text.len(), "lxc/".len() + 16 + "/command".len());
        // Different containers get different names.
        assert_ne!(socket_name(Path::new(&long), "101"), text.as_bytes());
    }

    #[test]
    fn fnv1a_test_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn no_monitor_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(query(dir.path(), "nothing", None).unwrap(), None);
    }
}
