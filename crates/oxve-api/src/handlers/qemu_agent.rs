//! `/nodes/{node}/qemu/{vmid}/agent`: the QEMU guest agent of a running
//! VM — upstream's plain commands (`ping`, `get-osinfo`, ...), `exec`,
//! `file-read`/`file-write`, `set-user-password` — and, beyond upstream,
//! `network-get-interfaces` that waits for an address (`wait-for-ip`).
//!
//! The permission rule of every method is the schema's (checked before a
//! handler runs). Answers keep upstream's shapes: `{"result": ...}` with
//! the agent's own value; for the plain commands an error the agent
//! reports comes back as `{"result": {"error": ...}}`, as upstream's
//! monitor client returns it, while `exec`, the file methods and
//! `set-user-password` fail with `Agent error: ...`. Passwords and file
//! contents never reach a log.

use super::qemu::vmid;
use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use crate::reg;
use oxve_qemu::qga::{self, Family, Qga, QgaError, Silent};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent" => super::schema_index);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent" => command);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/ping" => plain);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/get-time" => plain);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/info" => plain);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/fsfreeze-status" => plain);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/fsfreeze-freeze" => plain);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/fsfreeze-thaw" => plain);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/fstrim" => plain);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces" => interfaces);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/get-vcpus" => plain);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/get-fsinfo" => plain);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/get-memory-blocks" => plain);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/get-memory-block-info" => plain);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/suspend-hybrid" => plain);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/suspend-ram" => plain);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/suspend-disk" => plain);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/shutdown" => plain);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/get-host-name" => plain);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/get-osinfo" => plain);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/get-users" => plain);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/get-timezone" => plain);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/exec" => exec);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/exec-status" => exec_status);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/agent/file-read" => file_read);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/file-write" => file_write);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/agent/set-user-password" => set_user_password);
}

/// Upstream's limit of one `file-read` (16 MiB), and its chunk size.
const MAX_READ_SIZE: u64 = 16 * 1024 * 1024;
const READ_CHUNK: u64 = 1024 * 1024;

/// How long a call waits for another command on the same agent socket.
const TURN_WAIT: Duration = Duration::from_secs(30);

/// How long a suspend command may take to be refused; silence after that
/// is its success (the agent answers only errors).
const SUSPEND_WAIT: Duration = Duration::from_secs(5);

/// How often `wait-for-ip` asks the agent.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Upstream's checks before any agent command: the VM exists, has an
/// agent configured, and runs.
fn check_available(node: &Node, vmid: u32) -> ApiResult<()> {
    let loaded = node.load_vm(vmid)?;
    if !loaded
        .conf
        .main
        .get("agent")
        .is_some_and(qga::agent_enabled)
    {
        return Err(ApiError::fail("No QEMU guest agent configured"));
    }
    if node.vm_pid(vmid).is_none() {
        return Err(ApiError::fail(format!("VM {vmid} is not running")));
    }
    Ok(())
}

/// A synchronized connection to VM `vmid`'s agent, after the checks.
async fn open(node: &Node, vmid: u32) -> ApiResult<Qga> {
    check_available(node, vmid)?;
    Qga::connect(&node.qemu().qga_socket(vmid), TURN_WAIT)
        .await
        .map_err(|e| agent_error(vmid, "guest-sync-delimited", e))
}

/// An agent failure as upstream words it.
fn agent_error(vmid: u32, command: &str, e: QgaError) -> ApiError {
    match e {
        QgaError::Connect { .. } | QgaError::NotRunning => {
            ApiError::fail("QEMU guest agent is not running")
        }
        QgaError::Timeout(cmd) => ApiError::fail(format!(
            "VM {vmid} qga command '{cmd}' failed - got timeout"
        )),
        QgaError::Closed => ApiError::fail(format!(
            "VM {vmid} qga command '{command}' failed - client closed connection"
        )),
        other => ApiError::fail(other.to_string()),
    }
}

/// `POST .../agent` (upstream's old form): the command as a parameter.
async fn command(ctx: Ctx) -> ApiResult<Value> {
    let name = ctx.str("command")?.to_string();
    run_plain(&ctx, &name).await
}

/// A command without parameters whose name is the method's last path
/// segment.
async fn plain(ctx: Ctx) -> ApiResult<Value> {
    let name = ctx.method.path.rsplit('/').next().unwrap_or("").to_string();
    run_plain(&ctx, &name).await
}

/// Runs `guest-<name>` and answers `{"result": <its answer>}`.
async fn run_plain(ctx: &Ctx, name: &str) -> ApiResult<Value> {
    let vmid = vmid(ctx)?;
    let command = format!("guest-{name}");
    let mut agent = open(&ctx.node, vmid).await?;
    if qga::answers_only_errors(&command) {
        return run_silent(&ctx.node, &mut agent, vmid, &command).await;
    }
    let answer = agent.execute(&command, None).await;
    Ok(json!({ "result": plain_result(vmid, &command, answer)? }))
}

/// The agent's answer, or its refusal as upstream's monitor client hands
/// it on (`{"error": {"class", "desc"}}`).
fn plain_result(vmid: u32, command: &str, answer: Result<Value, QgaError>) -> ApiResult<Value> {
    match answer {
        Ok(v) => Ok(v),
        Err(QgaError::Command { class, desc, .. }) => {
            Ok(json!({"error": {"class": class, "desc": desc}}))
        }
        Err(e) => Err(agent_error(vmid, command, e)),
    }
}

/// Shutdown and suspend: the agent answers only a refusal. A shutdown
/// succeeds when the VM goes away (QEMU closes the socket, or its
/// process is gone), within upstream's ten minutes; a suspend when
/// nothing is refused within a few seconds.
async fn run_silent(
    node: &Arc<Node>,
    agent: &mut Qga,
    vmid: u32,
    command: &str,
) -> ApiResult<Value> {
    let shutdown = command == "guest-shutdown";
    let wait = if shutdown {
        qga::timeout_for(command)
    } else {
        SUSPEND_WAIT
    };
    let outcome = tokio::select! {
        outcome = agent.execute_silent(command, None, wait) => outcome,
        () = powered_off(node, vmid), if shutdown => Ok(Silent::Closed),
    };
    match outcome {
        Ok(Silent::NoAnswer) if shutdown => Err(agent_error(
            vmid,
            command,
            QgaError::Timeout(command.to_string()),
        )),
        Ok(_) => {
            if shutdown && node.vm_pid(vmid).is_none() {
                // What the event listener also does; twice is harmless.
                let n = node.clone();
                let _ =
                    tokio::task::spawn_blocking(move || crate::vm::cleanup_if_stopped(&n, vmid))
                        .await;
            }
            Ok(json!({ "result": null }))
        }
        Err(QgaError::Command { class, desc, .. }) => {
            Ok(json!({"result": {"error": {"class": class, "desc": desc}}}))
        }
        Err(e) => Err(agent_error(vmid, command, e)),
    }
}

/// Returns once VM `vmid`'s QEMU has exited. A guest that powered off
/// leaves QEMU in the `shutdown` state (`-no-shutdown`); the event
/// listener quits it, and should the listener not be connected (a
/// restarted daemon), this does, as a shutdown through ACPI would.
async fn powered_off(node: &Node, vmid: u32) {
    let mut round = 0u32;
    while node.vm_pid(vmid).is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        round += 1;
        if round < 4 {
            continue;
        }
        round = 0;
        if let Ok(mut qmp) = node.qemu().qmp(vmid, Duration::from_secs(2)).await {
            if qmp.status().await.is_ok_and(|s| s.status == "shutdown") {
                let _ = qmp.quit().await;
            }
        }
    }
}

/// `network-get-interfaces`; with `wait-for-ip` (beyond upstream) it polls
/// the agent until an interface — the one with MAC `hwaddr`, if given —
/// has a usable address of `family`, or fails after that many seconds.
async fn interfaces(ctx: Ctx) -> ApiResult<Value> {
    let wait = ctx.opt_int("wait-for-ip").unwrap_or(0);
    let family = ctx.opt_str("family").and_then(Family::parse);
    let hwaddr = ctx.opt_str("hwaddr").map(str::to_string);
    if wait <= 0 {
        for name in ["family", "hwaddr"] {
            if ctx.params.contains_key(name) {
                return Err(ApiError::param(name, "only allowed with 'wait-for-ip'"));
            }
        }
        return run_plain(&ctx, "network-get-interfaces").await;
    }
    let vmid = vmid(&ctx)?;
    let command = "guest-network-get-interfaces";
    let deadline = Instant::now() + Duration::from_secs(wait.unsigned_abs());
    let last = loop {
        // The VM stopping or losing its agent ends the wait at once.
        check_available(&ctx.node, vmid)?;
        let last = match Qga::connect(&ctx.node.qemu().qga_socket(vmid), TURN_WAIT).await {
            Ok(mut agent) => match agent.execute(command, None).await {
                Ok(list) => {
                    if qga::usable_address(&list, family, hwaddr.as_deref()).is_some() {
                        return Ok(json!({ "result": list }));
                    }
                    "no matching address yet".to_string()
                }
                Err(e) => agent_error(vmid, command, e).message,
            },
            Err(e) => agent_error(vmid, command, e).message,
        };
        if Instant::now() + POLL_INTERVAL > deadline {
            break last;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    let what = match family {
        Some(Family::Inet) => "IPv4 address",
        Some(Family::Inet6) => "IPv6 address",
        None => "IP address",
    };
    let nic = hwaddr
        .map(|m| format!(" on the interface with MAC {m}"))
        .unwrap_or_default();
    Err(ApiError::fail(format!(
        "VM {vmid}: the guest agent reported no {what}{nic} within {wait} s (last: {last})"
    )))
}

/// `exec`: starts the command (program and arguments) in the guest with
/// its output captured, `input-data` as its standard input.
async fn exec(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let mut command: Vec<String> = match ctx.params.get("command") {
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let input = ctx.opt_str("input-data").map(str::as_bytes);
    if command.is_empty() {
        return Err(ApiError::fail("command or input-data (or both) required"));
    }
    let path = command.remove(0);
    let mut agent = open(&ctx.node, vmid).await?;
    let pid = agent
        .exec(&path, &command, input)
        .await
        .map_err(|e| agent_error(vmid, "guest-exec", e))?;
    Ok(json!({ "pid": pid }))
}

/// `exec-status`: upstream's shape — output decoded to text, booleans as
/// 1/0.
async fn exec_status(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let pid = ctx
        .opt_int("pid")
        .ok_or_else(|| ApiError::param("pid", "property is missing and it is not optional"))?;
    let mut agent = open(&ctx.node, vmid).await?;
    let st = agent
        .exec_status(pid)
        .await
        .map_err(|e| agent_error(vmid, "guest-exec-status", e))?;
    let mut out = Map::new();
    out.insert("exited".into(), json!(u8::from(st.exited)));
    if let Some(code) = st.exitcode {
        out.insert("exitcode".into(), json!(code));
    }
    if let Some(signal) = st.signal {
        out.insert("signal".into(), json!(signal));
    }
    if let Some(data) = st.out_data {
        out.insert("out-data".into(), json!(text(data)));
    }
    if let Some(data) = st.err_data {
        out.insert("err-data".into(), json!(text(data)));
    }
    if let Some(t) = st.out_truncated {
        out.insert("out-truncated".into(), json!(u8::from(t)));
    }
    if let Some(t) = st.err_truncated {
        out.insert("err-truncated".into(), json!(u8::from(t)));
    }
    Ok(Value::Object(out))
}

/// Bytes from the guest as a JSON string: UTF-8 when they are, else one
/// character per byte (Latin-1), as upstream's Perl strings come out.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|e| e.into_bytes().iter().map(|b| char::from(*b)).collect())
}

/// `file-read`: up to `count` bytes (at most 16 MiB) from `offset`, read
/// in 1 MiB chunks; `truncated` when the end was not reached.
async fn file_read(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let file = ctx.str("file")?.to_string();
    let count = ctx
        .opt_int("count")
        .map_or(MAX_READ_SIZE, |c| c.unsigned_abs().min(MAX_READ_SIZE));
    let offset = ctx.opt_int("offset").unwrap_or(0).unsigned_abs();
    let decode = ctx.opt_bool("decode").unwrap_or(true);
    let mut agent = open(&ctx.node, vmid).await?;
    let handle = agent
        .file_open(&file, None)
        .await
        .map_err(|e| agent_error(vmid, "guest-file-open", e))?;
    let read = read_all(&mut agent, vmid, handle, offset, count).await;
    if let Err(e) = agent.file_close(handle).await {
        // Upstream only warns when closing fails.
        tracing::warn!(vmid, "agent file-read: can't close file: {e}");
    }
    let (content, eof) = read?;
    let bytes_read = content.len();
    let mut out = Map::new();
    out.insert(
        "content".into(),
        json!(if decode {
            text(content)
        } else {
            qga::encode_data(&content)
        }),
    );
    out.insert("bytes-read".into(), json!(bytes_read));
    if !eof {
        if ctx.opt_int("count").is_none() {
            tracing::warn!(
                vmid,
                "agent file-read: reached maximum read size: {MAX_READ_SIZE} bytes. output might be truncated."
            );
        }
        out.insert("truncated".into(), json!(1));
    }
    Ok(Value::Object(out))
}

/// Reads from an open handle until `count` bytes or the end of the file.
async fn read_all(
    agent: &mut Qga,
    vmid: u32,
    handle: i64,
    offset: u64,
    count: u64,
) -> ApiResult<(Vec<u8>, bool)> {
    if offset > 0 {
        agent
            .file_seek(handle, offset)
            .await
            .map_err(|e| agent_error(vmid, "guest-file-seek", e))?;
    }
    let mut content = Vec::new();
    let mut eof = false;
    while (content.len() as u64) < count && !eof {
        let chunk = (count - content.len() as u64).min(READ_CHUNK);
        let read = agent
            .file_read(handle, chunk)
            .await
            .map_err(|e| agent_error(vmid, "guest-file-read", e))?;
        eof = read.eof;
        if read.data.is_empty() && !eof {
            // An agent that returns nothing and no end would loop forever.
            break;
        }
        content.extend(read.data);
    }
    Ok((content, eof))
}

/// `file-write`: replaces the file with `content` (base64-encoded here
/// unless `encode=0`, when it must be base64 already).
async fn file_write(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let file = ctx.str("file")?.to_string();
    let content = ctx.str("content")?;
    let buf = if ctx.opt_bool("encode").unwrap_or(true) {
        qga::encode_data(content.as_bytes())
    } else {
        content.to_string()
    };
    let mut agent = open(&ctx.node, vmid).await?;
    let handle = agent
        .file_open(&file, Some("wb"))
        .await
        .map_err(|e| agent_error(vmid, "guest-file-open", e))?;
    let written = agent
        .file_write(handle, &buf)
        .await
        .map_err(|e| agent_error(vmid, "guest-file-write", e));
    let closed = agent
        .file_close(handle)
        .await
        .map_err(|e| agent_error(vmid, "guest-file-close", e));
    written?;
    closed?;
    Ok(Value::Null)
}

/// `set-user-password`: the agent sets it in the guest (`crypted`: the
/// password is a crypt(3) hash already).
async fn set_user_password(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let username = ctx.str("username")?.to_string();
    let password = ctx.str("password")?;
    let crypted = ctx.flag("crypted");
    let mut agent = open(&ctx.node, vmid).await?;
    let result = agent
        .set_user_password(&username, password, crypted)
        .await
        .map_err(|e| agent_error(vmid, "guest-set-user-password", e))?;
    Ok(json!({ "result": result }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_bytes_as_text() {
        assert_eq!(text(b"hello\n".to_vec()), "hello\n");
        assert_eq!(text("grüß".as_bytes().to_vec()), "grüß");
        assert_eq!(text(vec![0x41, 0xff, 0x00]), "A\u{ff}\u{0}");
    }

    #[test]
    fn agent_errors_as_upstream() {
        let msg = |e| agent_error(100, "guest-ping", e).message;
        assert_eq!(msg(QgaError::NotRunning), "QEMU guest agent is not running");
        assert_eq!(
            msg(QgaError::Timeout("guest-fstrim".into())),
            "VM 100 qga command 'guest-fstrim' failed - got timeout"
        );
        assert_eq!(
            msg(QgaError::Command {
                command: "guest-exec".into(),
                class: "GenericError".into(),
                desc: "no such file".into()
            }),
            "Agent error: no such file"
        );
    }

    #[test]
    fn plain_commands_pass_agent_errors_on() {
        let refused = plain_result(
            100,
            "guest-get-users",
            Err(QgaError::Command {
                command: "guest-get-users".into(),
                class: "CommandNotFound".into(),
                desc: "not supported".into(),
            }),
        )
        .unwrap();
        assert_eq!(refused["error"]["desc"], "not supported");
        assert!(plain_result(100, "guest-ping", Err(QgaError::NotRunning)).is_err());
    }
}
