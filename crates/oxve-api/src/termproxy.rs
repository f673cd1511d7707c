//! Terminal sessions for xterm.js: what upstream's `termproxy` program does,
//! inside the daemon. [`start`] opens a console session (port and ticket,
//! see `websocket.rs`) and a worker task that owns it; the client's
//! WebSocket arrives through `.../vncwebsocket` and speaks upstream's
//! protocol:
//!
//! - the client's first line is `<authid>:<ticket>\n`; the server checks it
//!   (the session's user and ticket, and the privileges on the session's
//!   ACL path, once more) and answers `OK`, then starts the command on a
//!   new pseudo terminal (80x20, `TERM=xterm-256color`);
//! - then the client sends `0:<byte length>:<data>` (input),
//!   `1:<cols>:<rows>:` (resize) and `2` (ping, ignored); messages form one
//!   byte stream, split across WebSocket frames in any way;
//! - the terminal's output goes to the client as binary frames.
//!
//! The task ends when the command's terminal closes, the client goes away
//! or the task is stopped; no client within 10 s, or a first line not
//! within 10 s, fail it (upstream's timeouts). The command's session gets
//! SIGHUP when the task ends, and SIGKILL if it lingers.

use crate::error::ApiResult;
use crate::handlers::Ctx;
use crate::websocket::{self, Listener, Socket};
use futures::{SinkExt, StreamExt};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio_tungstenite::tungstenite::Message;

/// How long a session waits for its client, and then for its first line.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to answer our Close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the command may take to exit after SIGHUP before SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(3);
/// Initial terminal size (upstream's).
const INITIAL_SIZE: (u16, u16) = (80, 20);
/// Longest first line accepted.
const MAX_AUTH_LINE: usize = 4096;
/// Variables of the daemon's environment the command keeps (upstream's).
const KEPT_ENV: &[&str] = &["PATH", "USER", "HOME", "LANG", "LANGUAGE"];

/// What a terminal session runs and who may connect to it.
pub struct Terminal {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Extra environment, on top of `PATH`, `USER`, `HOME`, `LANG`,
    /// `LANGUAGE`, `LC_*` from the daemon and `TERM=xterm-256color`.
    pub env: Vec<(String, String)>,
    /// The ACL path the ticket is bound to (`/nodes/{node}`, `/vms/{vmid}`).
    pub acl_path: String,
    /// Privileges the connecting user must hold on `acl_path`.
    pub privs: Vec<&'static str>,
    /// Worker task type (upstream: `vncshell` for the node, `vncproxy` for guests).
    pub task_type: &'static str,
    /// Worker task id (upstream: none for the node, the vmid for guests).
    pub task_id: Option<String>,
}

/// Starts a terminal session for the caller of `ctx` and answers upstream's
/// `{user, ticket, port, upid}`.
pub fn start(ctx: &Ctx, term: Terminal) -> ApiResult<Value> {
    if term.argv.is_empty() {
        return Err(crate::error::ApiError::fail("no command for the terminal"));
    }
    let authid = ctx.caller.authid();
    let listener = websocket::listen(&authid, &term.acl_path)?;
    let (port, ticket) = (listener.port(), listener.ticket().to_string());
    let node = ctx.node.clone();
    let caller = ctx.caller.clone();
    let (task_type, task_id) = (term.task_type, term.task_id.clone());
    let upid = ctx.node.tasks.spawn(
        task_type,
        task_id.as_deref(),
        &authid,
        move |task| async move {
            let session = Session {
                node,
                caller,
                term,
                listener,
                task,
            };
            session.run().await
        },
    )?;
    Ok(json!({
        "user": authid,
        "ticket": ticket,
        "port": port,
        "upid": upid.to_string(),
    }))
}

struct Session {
    node: std::sync::Arc<crate::node::Node>,
    caller: crate::auth::Caller,
    term: Terminal,
    listener: Listener,
    task: oxve_tasks::TaskContext,
}

/// How the bridge between client and terminal ended.
enum End {
    ClientGone,
    TerminalClosed,
    Stopped,
}

impl Session {
    async fn run(mut self) -> Result<(), String> {
        let socket = tokio::time::timeout(CONNECT_TIMEOUT, self.listener.accept())
            .await
            .ok()
            .flatten()
            .ok_or("failed waiting for client: timed out")?;
        self.task.log("client connection: websocket");
        let (mut sink, mut stream) = socket.split();
        let mut input = Vec::new();
        let line = tokio::time::timeout(CONNECT_TIMEOUT, first_line(&mut stream, &mut input))
            .await
            .map_err(|_| "failed reading ticket: timed out".to_string())?
            .map_err(|e| format!("failed reading ticket: {e}"))?;
        if !self.authenticated(&line) {
            close(sink, stream).await;
            return Err("authentication request failed".into());
        }
        sink.send(Message::binary(&b"OK"[..]))
            .await
            .map_err(|e| format!("error writing response: {e}"))?;
        let (pty, mut child) = spawn(&self.term)
            .map_err(|e| format!("unable to run '{}': {e}", self.term.argv.join(" ")))?;
        let pid = child.id().map(|p| Pid::from_raw(p as i32));
        let mut parser = InputParser::new(input);
        let end = tokio::select! {
            _ = to_client(&pty, &mut sink) => End::TerminalClosed,
            _ = from_client(&pty, &mut stream, &mut parser) => End::ClientGone,
            _ = self.task.cancelled() => End::Stopped,
        };
        close(sink, stream).await;
        drop(pty);
        if let Some(pid) = pid {
            // The command's session: a login shell and whatever it started.
            let _ = killpg(pid, Signal::SIGHUP);
            if tokio::time::timeout(HANGUP_GRACE, child.wait())
                .await
                .is_err()
            {
                let _ = killpg(pid, Signal::SIGKILL);
            }
        }
        let _ = child.wait().await;
        match end {
            End::Stopped => Err(oxve_tasks::INTERRUPTED.into()),
            End::ClientGone | End::TerminalClosed => Ok(()),
        }
    }

    /// Checks `<authid>:<ticket>` against the session (termproxy asks
    /// upstream's `/access/vncticket` the same: ticket, user, path, privileges).
    fn authenticated(&self, line: &[u8]) -> bool {
        let Some((authid, ticket)) = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split_once(':'))
        else {
            return false;
        };
        authid == self.caller.authid()
            && websocket::same_secret(ticket.as_bytes(), self.listener.ticket().as_bytes())
            && crate::perm::has_privs(
                &self.node,
                &self.caller,
                &self.term.acl_path,
                &self.term.privs,
                false,
            )
            .unwrap_or(false)
    }
}

/// Closes the WebSocket properly: sends a Close frame and waits a moment
/// for the client's answer, so the connection does not end under it.
async fn close(
    mut sink: futures::stream::SplitSink<Socket, Message>,
    mut stream: futures::stream::SplitStream<Socket>,
) {
    if sink.close().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// Reads client messages until `buf` holds a newline; returns the line and
/// leaves what follows it in `buf`.
async fn first_line(
    stream: &mut futures::stream::SplitStream<Socket>,
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>, String> {
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line = buf[..i].to_vec();
            buf.drain(..=i);
            return Ok(line);
        }
        if buf.len() > MAX_AUTH_LINE {
            return Err("authentication data is incomplete".into());
        }
        match stream.next().await {
            Some(Ok(msg)) => buf.extend_from_slice(payload(&msg)),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection closed before authentication".into()),
        }
    }
}

/// The bytes of a data message (none for control messages).
fn payload(msg: &Message) -> &[u8] {
    match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => &[],
    }
}

/// Terminal output to the client, until the terminal closes.
async fn to_client(pty: &Pty, sink: &mut futures::stream::SplitSink<Socket, Message>) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = pty.read(&mut buf).await {
        if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
            return;
        }
    }
}

/// Client messages to the terminal, until the client goes away.
async fn from_client(
    pty: &Pty,
    stream: &mut futures::stream::SplitStream<Socket>,
    parser: &mut InputParser,
) {
    loop {
        while let Some(event) = parser.next_event() {
            let ok = match event {
                Event::Input(data) => pty.write_all(&data).await.is_ok(),
                Event::Resize(cols, rows) => pty.resize(cols, rows).is_ok(),
            };
            if !ok {
                return;
            }
        }
        match stream.next().await {
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            Some(Ok(msg)) => parser.feed(payload(&msg)),
        }
    }
}

/// One step of the client's input stream.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// Bytes for the terminal.
    Input(Vec<u8>),
    /// New size: columns, rows.
    Resize(u16, u16),
}

/// Splits the client's byte stream into [`Event`]s. Input announced with a
/// length may arrive in pieces; each piece becomes an event at once.
struct InputParser {
    buf: Vec<u8>,
    /// Bytes of the current input message still to come.
    remaining: usize,
}

/// Longest number field before a `:`; longer means garbage.
const MAX_NUMBER: usize = 20;

impl InputParser {
    fn new(buf: Vec<u8>) -> InputParser {
        InputParser { buf, remaining: 0 }
    }

    fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.remaining > 0 {
                if self.buf.is_empty() {
                    return None;
                }
                let n = self.remaining.min(self.buf.len());
                self.remaining -= n;
                return Some(Event::Input(self.buf.drain(..n).collect()));
            }
            match self.buf.first()? {
                b'0' | b'1' if self.buf.len() < 2 => return None,
                b'0' if self.buf[1] == b':' => match self.numbers(1)? {
                    Some(v) => self.remaining = v[0],
                    None => continue,
                },
                b'1' if self.buf[1] == b':' => match self.numbers(2)? {
                    Some(v) => {
                        let clamp = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
                        return Some(Event::Resize(clamp(v[0]), clamp(v[1])));
                    }
                    None => continue,
                },
                // Ping (`2`) and anything unknown: skip a byte.
                _ => {
                    self.buf.remove(0);
                }
            }
        }
    }

    /// Parses `count` `<number>:` fields after the two-byte header.
    /// `None`: incomplete, wait for more. `Some(None)`: garbage, dropped up
    /// to where it went wrong. `Some(Some(numbers))`: consumed.
    fn numbers(&mut self, count: usize) -> Option<Option<Vec<usize>>> {
        let mut at = 2;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let rest = &self.buf[at..];
            let Some(len) = rest.iter().position(|&b| b == b':') else {
                if rest.len() > MAX_NUMBER {
                    self.buf.drain(..at + rest.len());
                    return Some(None);
                }
                return None;
            };
            let parsed = std::str::from_utf8(&rest[..len])
                .ok()
                .and_then(|s| s.parse::<usize>().ok());
            at += len + 1;
            match parsed {
                Some(n) => out.push(n),
                None => {
                    self.buf.drain(..at);
                    return Some(None);
                }
            }
        }
        self.buf.drain(..at);
        Some(Some(out))
    }
}

/// The controlling side of a pseudo terminal, non-blocking.
struct Pty {
    fd: AsyncFd<nix::pty::PtyMaster>,
}

impl Pty {
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(std::io::Error::from))
            {
                // EIO: every terminal side is closed, the command is gone.
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(Into::into)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        set_size(self.fd.get_ref(), cols, rows)
    }
}

fn set_size(fd: &impl AsRawFd, cols: u16, rows: u16) -> std::io::Result<()> {
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which lives
    // for the call; the fd is an open terminal.
    let r = unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::TIOCSWINSZ, &size) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts the command in a new session whose controlling terminal is a new
/// pseudo terminal, and returns that terminal's other side.
fn spawn(term: &Terminal) -> std::io::Result<(Pty, tokio::process::Child)> {
    use nix::fcntl::OFlag;
    // Close-on-exec from the start: other threads of the daemon start
    // processes too, and one holding a copy would keep the terminal open.
    let master = nix::pty::posix_openpt(
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
    )?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(nix::pty::ptsname_r(&master)?)?
        .into();
    set_size(&master, INITIAL_SIZE.0, INITIAL_SIZE.1)?;
    let mut cmd = tokio::process::Command::new(&term.argv[0]);
    cmd.args(&term.argv[1..])
        .env_clear()
        .envs(
            std::env::vars()
                .filter(|(k, _)| KEPT_ENV.contains(&k.as_str()) || k.starts_with("LC_")),
        )
        .env("TERM", "xterm-256color")
        .envs(term.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    }
    // SAFETY: runs in the forked child before exec and only makes
    // async-signal-safe calls (setsid, ioctl). stdin is the terminal by then.
    unsafe {
        cmd.pre_exec(|| {
            if nix::libc::setsid() < 0 || nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // `cmd` still holds the terminal side; it must close for EOF to come.
    drop(cmd);
    // SAFETY: the PtyMaster moves into the AsyncFd, which keeps it open and
    // unchanged for its whole lifetime.
    let fd = unsafe { AsyncFd::register(master) }?;
    Ok((Pty { fd }, child))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = InputParser::new(Vec::new());
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c);
            while let Some(e) = p.next_event() {
                out.push(e);
            }
        }
        out
    }

    fn input(s: &str) -> Event {
        Event::Input(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_input_resize_and_ping() {
        assert_eq!(
            events(&[b"1:120:40:0:5:hello2", b"0:3:abc"]),
            vec![Event::Resize(120, 40), input("hello"), input("abc")]
        );
    }

    #[test]
    fn messages_may_split_anywhere() {
        let whole: &[u8] = b"0:9:echo hi\n\n1:80:24:2";
        for cut in 0..whole.len() {
            let (a, b) = whole.split_at(cut);
            let got: Vec<Event> = events(&[a, b]);
            let mut text = Vec::new();
            let mut resizes = Vec::new();
            for e in got {
                match e {
                    Event::Input(d) => text.extend(d),
                    r => resizes.push(r),
                }
            }
            assert_eq!(text, b"echo hi\n\n", "cut at {cut}");
            assert_eq!(resizes, vec![Event::Resize(80, 24)], "cut at {cut}");
        }
    }

    #[test]
    fn input_length_counts_bytes_not_characters() {
        let msg = "0:4:äö";
        assert_eq!(events(&[msg.as_bytes()]), vec![input("äö")]);
    }

    #[test]
    fn garbage_is_skipped() {
        assert_eq!(events(&[b"0:x:1:10:10:"]), vec![Event::Resize(10, 10)]);
        assert_eq!(
            events(&[b"0:123456789012345678901234", b"0:1:z"]),
            vec![input("z")]
        );
        assert_eq!(events(&[b"x9\n0:1:a"]), vec![input("a")]);
    }
}
