//! A QEMU guest agent (QGA) client: JSON commands over the VM's agent
//! socket (`<run dir>/<vmid>.qga`, a virtio-serial or ISA serial port
//! whose other end is `qemu-ga` inside the guest).
//!
//! Unlike QMP there is no greeting and no command id: answers come in
//! order, and whatever a previous client left unread (or a command that
//! timed out) may still be in the pipe. So every connection starts with
//! `guest-sync-delimited` carrying a random id, preceded by a 0xFF byte
//! that resets the agent's JSON parser; the agent answers with a 0xFF
//! sentinel followed by `{"return": id}`, and everything before that is
//! stale and skipped. No answer to the handshake within [`SYNC_TIMEOUT`]
//! means the agent does not run ([`QgaError::NotRunning`]).
//!
//! QEMU serves one client per agent socket at a time; connections of this
//! process to the same socket take turns (see [`Qga::connect`]).

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::OwnedMutexGuard;

/// How long the agent may take to answer the handshake before it counts
/// as not running (upstream pings with 3 s; TCG guests are slower).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a command may take unless [`timeout_for`] says otherwise
/// (upstream: 5 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer line accepted (a 1 MiB `guest-file-read` chunk is
/// about 1.4 MB of base64).
const MAX_LINE: u64 = 64 * 1024 * 1024;

/// Why a guest agent exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QgaError {
    /// The socket is missing or QEMU refused the connection.
    #[error("QEMU guest agent socket '{path}': {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    /// The handshake got no answer: nothing in the guest reads the port.
    #[error("QEMU guest agent is not running")]
    NotRunning,
    /// Another command of this process holds the socket for too long.
    #[error("QEMU guest agent is busy with another command")]
    Busy,
    #[error("QEMU guest agent I/O: {0}")]
    Io(#[from] std::io::Error),
    /// QEMU closed the socket (the VM is going away).
    #[error("QEMU guest agent connection closed")]
    Closed,
    #[error("QEMU guest agent protocol: {0}")]
    Protocol(String),
    /// The agent ran the command and refused it.
    #[error("Agent error: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    /// No answer within the command's time limit (the connection is out
    /// of step and is dropped).
    #[error("guest agent command '{0}' failed - got timeout")]
    Timeout(String),
}

/// The time limit of `command` (a `guest-...` name), as upstream's: a
/// freeze syncs every file system and must not be cut short.
pub fn timeout_for(command: &str) -> Duration {
    match command {
        "guest-fsfreeze-freeze" => Duration::from_secs(60 * 60),
        "guest-fsfreeze-thaw" => Duration::from_secs(3 * 60),
        "guest-fstrim" | "guest-shutdown" => Duration::from_secs(10 * 60),
        _ => DEFAULT_TIMEOUT,
    }
}

/// Commands whose success the agent does not answer: the guest goes down
/// (or to sleep) instead.
pub fn answers_only_errors(command: &str) -> bool {
    matches!(
        command,
        "guest-shutdown" | "guest-suspend-ram" | "guest-suspend-disk" | "guest-suspend-hybrid"
    )
}

/// Whether the VM config's `agent` property string enables the agent
/// (`1`, `enabled=1`, `1,fstrim_cloned_disks=1`, `on`, ...).
pub fn agent_enabled(value: &str) -> bool {
    let enabled = value
        .split(',')
        .find_map(|part| match part.split_once('=') {
            Some(("enabled", v)) => Some(v),
            Some(_) => None,
            None => Some(part),
        });
    enabled
        .and_then(oxve_schema::format::parse_boolean)
        .unwrap_or(false)
}

/// The agent's wire form of bytes (`buf-b64`, `input-data`, ...).
pub fn encode_data(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Bytes from the agent's base64.
pub fn decode_data(text: &str) -> Result<Vec<u8>, QgaError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| QgaError::Protocol(format!("bad base64 from the agent: {e}")))
}

/// `guest-exec-status`, with the captured output decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecStatus {
    pub exited: bool,
    pub exitcode: Option<i64>,
    pub signal: Option<i64>,
    pub out_data: Option<Vec<u8>>,
    pub err_data: Option<Vec<u8>>,
    pub out_truncated: Option<bool>,
    pub err_truncated: Option<bool>,
}

/// What followed a command that answers only errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silent {
    /// QEMU closed the socket: the VM went away.
    Closed,
    /// The agent answered success after all.
    Answered,
    /// Nothing within the wait.
    NoAnswer,
}

/// One `guest-file-read` answer, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChunk {
    pub data: Vec<u8>,
    pub eof: bool,
}

/// The address families of `guest-network-get-interfaces`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (`inet`, the agent's `ipv4`).
    Inet,
    /// IPv6 (`inet6`, the agent's `ipv6`).
    Inet6,
}

impl Family {
    /// `inet` or `inet6`.
    pub fn parse(text: &str) -> Option<Family> {
        match text {
            "inet" => Some(Family::Inet),
            "inet6" => Some(Family::Inet6),
            _ => None,
        }
    }

    fn agent_name(self) -> &'static str {
        match self {
            Family::Inet => "ipv4",
            Family::Inet6 => "ipv6",
        }
    }
}

/// One interface of `guest-network-get-interfaces`, as far as the address
/// search reads it.
#[derive(Debug, Deserialize)]
struct Interface {
    #[serde(rename = "hardware-address", default)]
    hwaddr: Option<String>,
    #[serde(rename = "ip-addresses", default)]
    addresses: Vec<IpAddress>,
}

#[derive(Debug, Deserialize)]
struct IpAddress {
    #[serde(rename = "ip-address-type")]
    kind: String,
    #[serde(rename = "ip-address")]
    address: String,
}

/// The first address in a `guest-network-get-interfaces` answer that is
/// usable from outside the guest — not loopback, not link-local, not
/// unspecified — of `family` (any when `None`), on the interface with MAC
/// `hwaddr` (any when `None`; compared case-insensitively).
pub fn usable_address(
    interfaces: &Value,
    family: Option<Family>,
    hwaddr: Option<&str>,
) -> Option<String> {
    let list: Vec<Interface> = serde_json::from_value(interfaces.clone()).ok()?;
    list.iter()
        .filter(|i| {
            hwaddr.is_none_or(|want| {
                i.hwaddr
                    .as_deref()
                    .is_some_and(|have| have.eq_ignore_ascii_case(want))
            })
        })
        .flat_map(|i| &i.addresses)
        .filter(|a| family.is_none_or(|f| a.kind == f.agent_name()))
        .find(|a| routable(&a.address))
        .map(|a| a.address.clone())
}

/// Not loopback, link-local or unspecified (IPv6 zone ids allowed).
fn routable(address: &str) -> bool {
    let bare = address.split('%').next().unwrap_or(address);
    if let Ok(v4) = bare.parse::<Ipv4Addr>() {
        return !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified());
    }
    if let Ok(v6) = bare.parse::<Ipv6Addr>() {
        let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
        return !(v6.is_loopback() || v6.is_unspecified() || link_local);
    }
    false
}

/// A synchronized connection to a guest agent.
pub struct Qga {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// This process's turn on the socket, held while connected.
    _turn: OwnedMutexGuard<()>,
}

impl Qga {
    /// Waits up to `wait` for this process's turn on the socket at `path`
    /// (another command may hold it), connects, and synchronizes with the
    /// agent within [`SYNC_TIMEOUT`].
    pub async fn connect(path: &Path, wait: Duration) -> Result<Qga, QgaError> {
        let turn = tokio::time::timeout(wait, turn_of(path).lock_owned())
            .await
            .map_err(|_| QgaError::Busy)?;
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QgaError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (read, writer) = stream.into_split();
        let mut qga = Qga {
            reader: BufReader::new(read),
            writer,
            _turn: turn,
        };
        tokio::time::timeout(SYNC_TIMEOUT, qga.sync())
            .await
            .map_err(|_| QgaError::NotRunning)??;
        Ok(qga)
    }

    /// `guest-sync-delimited` with a fresh id; skips everything before its
    /// answer.
    async fn sync(&mut self) -> Result<(), QgaError> {
        let id = u64::from(rand::random::<u32>() >> 1) + 1;
        let mut message = vec![0xff];
        message.extend(
            json!({"execute": "guest-sync-delimited", "arguments": {"id": id}})
                .to_string()
                .into_bytes(),
        );
        message.push(b'\n');
        self.writer.write_all(&message).await?;
        loop {
            let line = self.read_line().await?;
            // The answer follows the sentinel; lines without one are stale.
            let Some(at) = line.iter().rposition(|b| *b == 0xff) else {
                continue;
            };
            let Ok(answer) = serde_json::from_slice::<Value>(&line[at + 1..]) else {
                continue;
            };
            if answer.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(());
            }
        }
    }

    /// Runs `command` (`guest-...`) within its [`timeout_for`].
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QgaError> {
        self.execute_within(command, arguments, timeout_for(command))
            .await
    }

    /// Runs `command` and returns its `return` value, waiting at most
    /// `timeout`.
    pub async fn execute_within(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QgaError> {
        self.write_command(command, arguments).await?;
        tokio::time::timeout(timeout, self.read_answer(command))
            .await
            .map_err(|_| QgaError::Timeout(command.to_string()))?
    }

    /// Runs a command that answers only when it fails
    /// ([`answers_only_errors`]) and waits up to `wait` for what happens;
    /// an error when the agent refused it.
    pub async fn execute_silent(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        wait: Duration,
    ) -> Result<Silent, QgaError> {
        self.write_command(command, arguments).await?;
        match tokio::time::timeout(wait, self.read_answer(command)).await {
            Err(_) => Ok(Silent::NoAnswer),
            Ok(Err(QgaError::Closed)) => Ok(Silent::Closed),
            Ok(Err(QgaError::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Ok(Silent::Closed)
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Ok(Silent::Answered),
        }
    }

    /// `guest-ping`.
    pub async fn ping(&mut self) -> Result<(), QgaError> {
        self.execute("guest-ping", None).await.map(drop)
    }

    /// `guest-exec` of `path` with `args`, its output captured and
    /// `input` as its standard input; returns the guest's pid.
    pub async fn exec(
        &mut self,
        path: &str,
        args: &[String],
        input: Option<&[u8]>,
    ) -> Result<i64, QgaError> {
        let mut arguments = Map::new();
        arguments.insert("path".into(), json!(path));
        arguments.insert("arg".into(), json!(args));
        arguments.insert("capture-output".into(), json!(true));
        if let Some(input) = input {
            arguments.insert("input-data".into(), json!(encode_data(input)));
        }
        let answer = self
            .execute("guest-exec", Some(Value::Object(arguments)))
            .await?;
        answer
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| QgaError::Protocol(format!("guest-exec answered {answer}")))
    }

    /// `guest-exec-status` of a process `exec` started.
    pub async fn exec_status(&mut self, pid: i64) -> Result<ExecStatus, QgaError> {
        let answer = self
            .execute("guest-exec-status", Some(json!({ "pid": pid })))
            .await?;
        let data = |key: &str| -> Result<Option<Vec<u8>>, QgaError> {
            answer
                .get(key)
                .and_then(Value::as_str)
                .map(decode_data)
                .transpose()
        };
        Ok(ExecStatus {
            exited: answer
                .get("exited")
                .and_then(Value::as_bool)
                .ok_or_else(|| {
                    QgaError::Protocol(format!("guest-exec-status answered {answer}"))
                })?,
            exitcode: answer.get("exitcode").and_then(Value::as_i64),
            signal: answer.get("signal").and_then(Value::as_i64),
            out_data: data("out-data")?,
            err_data: data("err-data")?,
            out_truncated: answer.get("out-truncated").and_then(Value::as_bool),
            err_truncated: answer.get("err-truncated").and_then(Value::as_bool),
        })
    }

    /// `guest-file-open`: a handle for `path` opened with `mode` (`r`,
    /// `wb`, ...; the agent's default `r` when `None`).
    pub async fn file_open(&mut self, path: &str, mode: Option<&str>) -> Result<i64, QgaError> {
        let mut arguments = Map::new();
        arguments.insert("path".into(), json!(path));
        if let Some(mode) = mode {
            arguments.insert("mode".into(), json!(mode));
        }
        let answer = self
            .execute("guest-file-open", Some(Value::Object(arguments)))
            .await?;
        answer
            .as_i64()
            .ok_or_else(|| QgaError::Protocol(format!("guest-file-open answered {answer}")))
    }

    /// `guest-file-seek` to `offset` from the start.
    pub async fn file_seek(&mut self, handle: i64, offset: u64) -> Result<(), QgaError> {
        self.execute(
            "guest-file-seek",
            Some(json!({"handle": handle, "offset": offset, "whence": "set"})),
        )
        .await
        .map(drop)
    }

    /// `guest-file-read` of at most `count` bytes.
    pub async fn file_read(&mut self, handle: i64, count: u64) -> Result<FileChunk, QgaError> {
        let answer = self
            .execute(
                "guest-file-read",
                Some(json!({"handle": handle, "count": count})),
            )
            .await?;
        let data = answer
            .get("buf-b64")
            .and_then(Value::as_str)
            .map(decode_data)
            .transpose()?
            .unwrap_or_default();
        Ok(FileChunk {
            data,
            eof: answer.get("eof").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// `guest-file-write` of `buf_b64` (already in the agent's base64).
    pub async fn file_write(&mut self, handle: i64, buf_b64: &str) -> Result<(), QgaError> {
        self.execute(
            "guest-file-write",
            Some(json!({"handle": handle, "buf-b64": buf_b64})),
        )
        .await
        .map(drop)
    }

    /// `guest-file-close`.
    pub async fn file_close(&mut self, handle: i64) -> Result<(), QgaError> {
        self.execute("guest-file-close", Some(json!({ "handle": handle })))
            .await
            .map(drop)
    }

    /// `guest-set-user-password`; `crypted`: `password` is already a
    /// crypt(3) hash. Returns the agent's answer.
    pub async fn set_user_password(
        &mut self,
        username: &str,
        password: &str,
        crypted: bool,
    ) -> Result<Value, QgaError> {
        self.execute(
            "guest-set-user-password",
            Some(json!({
                "username": username,
                "password": encode_data(password.as_bytes()),
                "crypted": crypted,
            })),
        )
        .await
    }

    async fn write_command(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<(), QgaError> {
        let mut request = Map::new();
        request.insert("execute".into(), json!(command));
        if let Some(args) = arguments {
            request.insert("arguments".into(), args);
        }
        let mut line = Value::Object(request).to_string().into_bytes();
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        Ok(())
    }

    /// Reads the answer to `command`: its `return` value or its error.
    async fn read_answer(&mut self, command: &str) -> Result<Value, QgaError> {
        let line = loop {
            let line = self.read_line().await?;
            if !line.iter().all(u8::is_ascii_whitespace) {
                break line;
            }
        };
        let message: Value = serde_json::from_slice(&line)
            .map_err(|e| QgaError::Protocol(format!("answer of '{command}' is not JSON ({e})")))?;
        if let Some(ret) = message.get("return") {
            return Ok(ret.clone());
        }
        let Some(error) = message.get("error") else {
            return Err(QgaError::Protocol(format!(
                "answer of '{command}' has neither 'return' nor 'error'"
            )));
        };
        let text = |k: &str| {
            error
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Err(QgaError::Command {
            command: command.to_string(),
            class: text("class"),
            desc: text("desc"),
        })
    }

    /// One line (up to [`MAX_LINE`] bytes), its newline removed.
    async fn read_line(&mut self) -> Result<Vec<u8>, QgaError> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(QgaError::Closed);
        }
        if line.last() != Some(&b'\n') {
            return Err(if (n as u64) < MAX_LINE {
                QgaError::Closed
            } else {
                QgaError::Protocol("answer line too long".into())
            });
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }
}

/// The turn lock of the agent socket at `path`, shared by this process's
/// connections to it (unused locks are dropped on the way).
fn turn_of(path: &Path) -> Arc<tokio::sync::Mutex<()>> {
    type Turns = Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>;
    static TURNS: OnceLock<Turns> = OnceLock::new();
    let mut turns = TURNS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    turns.retain(|p, lock| p == path || Arc::strong_count(lock) > 1);
    turns.entry(path.to_path_buf()).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[test]
    fn agent_property() {
        assert!(agent_enabled("1"));
        assert!(agent_enabled("enabled=1,fstrim_cloned_disks=1"));
        assert!(agent_enabled("on,type=isa"));
        assert!(!agent_enabled("0"));
        assert!(!agent_enabled("enabled=0"));
        assert!(!agent_enabled("type=virtio"));
    }

    #[test]
    fn upstream_timeouts() {
        assert_eq!(timeout_for("guest-ping"), DEFAULT_TIMEOUT);
        assert_eq!(
            timeout_for("guest-fsfreeze-freeze"),
            Duration::from_secs(3600)
        );
        assert!(answers_only_errors("guest-shutdown"));
        assert!(!answers_only_errors("guest-ping"));
    }

    fn interfaces() -> Value {
        json!([
            {"name": "lo", "hardware-address": "00:00:00:00:00:00",
             "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
                {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}]},
            {"name": "eth0", "hardware-address": "bc:24:11:aa:bb:cc",
             "ip-addresses": [
                {"ip-address-type": "ipv6", "ip-address": "fe80::be24:11ff:feaa:bbcc%eth0", "prefix": 64},
                {"ip-address-type": "ipv4", "ip-address": "169.254.3.4", "prefix": 16},
                {"ip-address-type": "ipv4", "ip-address": "10.78.0.50", "prefix": 24}]},
            {"name": "eth1", "hardware-address": "bc:24:11:00:00:01",
             "ip-addresses": [
                {"ip-address-type": "ipv6", "ip-address": "fd00::5", "prefix": 64}]},
            {"name": "eth2"}
        ])
    }

    #[test]
    fn usable_addresses_skip_loopback_and_link_local() {
        let i = interfaces();
        assert_eq!(
            usable_address(&i, None, None).as_deref(),
            Some("10.78.0.50")
        );
        assert_eq!(
            usable_address(&i, Some(Family::Inet6), None).as_deref(),
            Some("fd00::5")
        );
        assert_eq!(
            usable_address(&i, Some(Family::Inet), Some("BC:24:11:AA:BB:CC")).as_deref(),
            Some("10.78.0.50")
        );
        assert_eq!(
            usable_address(&i, Some(Family::Inet6), Some("bc:24:11:aa:bb:cc")),
            None
        );
        assert_eq!(usable_address(&i, None, Some("02:00:00:00:00:09")), None);
        assert_eq!(usable_address(&json!({"error": 1}), None, None), None);
    }

    #[test]
    fn base64_round_trip() {
        let data = b"\x00\xffhello\n";
        assert_eq!(decode_data(&encode_data(data)).unwrap(), data);
        assert!(decode_data("not base64!").is_err());
    }

    /// A fake agent on a socket: stale output first, then the protocol.
    async fn fake_agent(listener: UnixListener, stale: &'static [u8], answer_sync: bool) {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut reader = tokio::io::BufReader::new(read);
        write.write_all(stale).await.unwrap();
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).await.unwrap() == 0 {
                return;
            }
            let text = line.strip_prefix(&[0xff][..]).unwrap_or(&line);
            let request: Value = serde_json::from_slice(text).unwrap();
            let answer = match request["execute"].as_str().unwrap() {
                "guest-sync-delimited" if !answer_sync => continue,
                "guest-sync-delimited" => {
                    write.write_all(&[0xff]).await.unwrap();
                    json!({"return": request["arguments"]["id"]})
                }
                "guest-ping" => json!({"return": {}}),
                "guest-exec" => {
                    assert_eq!(request["arguments"]["input-data"], "aGk=");
                    json!({"return": {"pid": 42}})
                }
                "guest-exec-status" => json!({"return": {
                    "exited": true, "exitcode": 0, "out-data": "aGVsbG8K"}}),
                "guest-shutdown" => return,
                _ => json!({"error": {"class": "CommandNotFound", "desc": "nope"}}),
            };
            let mut out = answer.to_string().into_bytes();
            out.push(b'\n');
            write.write_all(&out).await.unwrap();
        }
    }

    fn socket_path(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("oxve-qga-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[tokio::test]
    async fn handshake_skips_stale_answers_then_commands_work() {
        let path = socket_path("ok");
        let listener = UnixListener::bind(&path).unwrap();
        // A previous client's sync answer and command answer still queued.
        let agent = tokio::spawn(fake_agent(
            listener,
            b"\xff{\"return\": 7}\n{\"return\": {}}\n{\"ret",
            true,
        ));
        let mut qga = Qga::connect(&path, Duration::from_secs(5)).await.unwrap();
        qga.ping().await.unwrap();
        assert_eq!(qga.exec("echo", &[], Some(b"hi")).await.unwrap(), 42);
        let st = qga.exec_status(42).await.unwrap();
        assert!(st.exited);
        assert_eq!(st.exitcode, Some(0));
        assert_eq!(st.out_data.as_deref(), Some(&b"hello\n"[..]));
        match qga.execute("guest-nothing", None).await {
            Err(QgaError::Command { desc, .. }) => assert_eq!(desc, "nope"),
            other => panic!("{other:?}"),
        }
        // Success of a shutdown is the connection going away.
        assert_eq!(
            qga.execute_silent("guest-shutdown", None, Duration::from_secs(5))
                .await
                .unwrap(),
            Silent::Closed
        );
        drop(qga);
        agent.await.unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn silent_agent_is_not_running() {
        let path = socket_path("silent");
        let listener = UnixListener::bind(&path).unwrap();
        let agent = tokio::spawn(fake_agent(listener, b"", false));
        let started = std::time::Instant::now();
        match Qga::connect(&path, Duration::from_secs(1)).await {
            Err(e @ QgaError::NotRunning) => {
                assert_eq!(e.to_string(), "QEMU guest agent is not running")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("connected to a silent agent"),
        }
        assert!(started.elapsed() >= SYNC_TIMEOUT);
        agent.abort();
        std::fs::remove_file(&path).unwrap();
        match Qga::connect(&path, Duration::from_secs(1)).await {
            Err(QgaError::Connect { .. }) => {}
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("connected to nothing"),
        }
    }
}
