//! A QMP client: the JSON protocol on a running QEMU's monitor socket.
//!
//! QEMU greets with `{"QMP": {...}}`; the client leaves negotiation mode
//! with `qmp_capabilities` and then sends one command at a time, each with
//! an `id` that its answer (`return` or `error`) carries back. Asynchronous
//! events (`{"event": ...}`) may arrive between answers; they are kept in
//! order until the caller takes them. Every wait has a timeout, so a hung
//! QEMU becomes an error instead of a hung task.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// How long a command may take unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket '{path}': {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    /// QEMU closed the socket (it exited, or another client took over).
    #[error("QMP connection closed by QEMU")]
    Closed,
    #[error("QMP protocol: {0}")]
    Protocol(String),
    /// The command ran and QEMU refused it.
    #[error("QMP command '{command}' failed: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP command '{0}' timed out")]
    Timeout(String),
}

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    pub event: String,
    #[serde(default)]
    pub data: Value,
    /// When QEMU sent it (`seconds`, `microseconds`).
    #[serde(default)]
    pub timestamp: Value,
}

/// `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    /// `running`, `paused`, `prelaunch`, `shutdown`, `suspended`, ...
    pub status: String,
    pub running: bool,
}

/// `query-version`'s `qemu` part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

/// A negotiated QMP connection.
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    events: VecDeque<Event>,
    /// The version QEMU announced in its greeting.
    pub version: QemuVersion,
}

impl Qmp {
    /// Connects to the monitor socket at `path`, reads the greeting and
    /// negotiates capabilities, all within `timeout`.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let connect = async {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|source| QmpError::Connect {
                    path: path.display().to_string(),
                    source,
                })?;
            Qmp::negotiate(stream).await
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| QmpError::Timeout("qmp_capabilities".into()))?
    }

    /// Speaks QMP on a connection QEMU made to us (a `-mon` chardev in
    /// client mode): reads the greeting and negotiates within `timeout`.
    pub async fn accept(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        tokio::time::timeout(timeout, Qmp::negotiate(stream))
            .await
            .map_err(|_| QmpError::Timeout("qmp_capabilities".into()))?
    }

    async fn negotiate(stream: UnixStream) -> Result<Qmp, QmpError> {
        let (read, writer) = stream.into_split();
        let mut reader = BufReader::new(read);
        let greeting = read_message(&mut reader).await?;
        let version = greeting
            .get("QMP")
            .and_then(|q| q.pointer("/version/qemu"))
            .cloned()
            .ok_or_else(|| QmpError::Protocol(format!("unexpected greeting {greeting}")))
            .and_then(|v| {
                serde_json::from_value(v)
                    .map_err(|e| QmpError::Protocol(format!("greeting version: {e}")))
            })?;
        let mut qmp = Qmp {
            reader,
            writer,
            next_id: 0,
            events: VecDeque::new(),
            version,
        };
        qmp.send("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// The next event, waiting as long as it takes (`Closed` when QEMU
    /// goes away).
    pub async fn next_event(&mut self) -> Result<Event, QmpError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        let message = read_message(&mut self.reader).await?;
        parse_event(message)
    }

    /// Runs `command` with `arguments` and returns its `return` value,
    /// waiting at most [`DEFAULT_TIMEOUT`].
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        self.execute_within(command, arguments, DEFAULT_TIMEOUT)
            .await
    }

    /// [`Qmp::execute`] with its own timeout. After a timeout the
    /// connection is out of step and should be dropped.
    pub async fn execute_within(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        tokio::time::timeout(timeout, self.send(command, arguments))
            .await
            .map_err(|_| QmpError::Timeout(command.to_string()))?
    }

    /// Runs `command` and reads its answer as `T`.
    pub async fn query<T: DeserializeOwned>(&mut self, command: &str) -> Result<T, QmpError> {
        let value = self.execute(command, None).await?;
        serde_json::from_value(value)
            .map_err(|e| QmpError::Protocol(format!("answer of '{command}': {e}")))
    }

    /// `query-status`.
    pub async fn status(&mut self) -> Result<StatusInfo, QmpError> {
        self.query("query-status").await
    }

    /// `cont`: runs a VM started with `-S` or paused.
    pub async fn cont(&mut self) -> Result<(), QmpError> {
        self.execute("cont", None).await.map(drop)
    }

    /// `stop`: pauses the VM's CPUs.
    pub async fn stop(&mut self) -> Result<(), QmpError> {
        self.execute("stop", None).await.map(drop)
    }

    /// `system_powerdown`: the ACPI power button.
    pub async fn powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// `system_reset`.
    pub async fn reset(&mut self) -> Result<(), QmpError> {
        self.execute("system_reset", None).await.map(drop)
    }

    /// `quit`: QEMU exits at once (the socket closes, which is fine).
    pub async fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The events received so far, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Waits up to `timeout` for the next event named `name` (events
    /// received before are searched first; others are kept).
    pub async fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Event, QmpError> {
        if let Some(at) = self.events.iter().position(|e| e.event == name) {
            return self
                .events
                .remove(at)
                .ok_or_else(|| QmpError::Protocol("event queue".into()));
        }
        let wait = async {
            loop {
                let message = read_message(&mut self.reader).await?;
                let event = parse_event(message)?;
                if event.event == name {
                    return Ok(event);
                }
                self.events.push_back(event);
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| QmpError::Timeout(format!("waiting for event {name}")))?
    }

    /// Sends one command and reads until its answer, keeping events.
    async fn send(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = Map::new();
        request.insert("execute".into(), json!(command));
        if let Some(args) = arguments {
            request.insert("arguments".into(), args);
        }
        request.insert("id".into(), json!(id));
        let mut line = Value::Object(request).to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        loop {
            let message = read_message(&mut self.reader).await?;
            if message.get("event").is_some() {
                self.events.push_back(parse_event(message)?);
                continue;
            }
            if message.get("id") != Some(&json!(id)) {
                return Err(QmpError::Protocol(format!(
                    "answer {message} does not belong to '{command}'"
                )));
            }
            if let Some(ret) = message.get("return") {
                return Ok(ret.clone());
            }
            let error = message.get("error").cloned().unwrap_or_default();
            let text = |k: &str| {
                error
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            return Err(QmpError::Command {
                command: command.to_string(),
                class: text("class"),
                desc: text("desc"),
            });
        }
    }
}

fn parse_event(message: Value) -> Result<Event, QmpError> {
    serde_json::from_value(message).map_err(|e| QmpError::Protocol(format!("event: {e}")))
}

/// Reads one JSON message (QEMU sends one per line).
async fn read_message(reader: &mut BufReader<OwnedReadHalf>) -> Result<Value, QmpError> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(QmpError::Closed);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    serde_json::from_str(&line)
        .map_err(|e| QmpError::Protocol(format!("not JSON ({e}): {}", line.trim())))
}
