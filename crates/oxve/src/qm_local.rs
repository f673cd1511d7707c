//! The `qm` sub-commands that run on this node itself, as upstream's do:
//! `showcmd` builds the command line from the node's store, `terminal`
//! and `monitor` speak to the VM's own sockets under `run/oxve/qemu/`;
//! `status`, `unlock`, `wait` and `guest exec` are made of API calls with
//! some logic of their own around them; `disk import` copies here (as
//! upstream's) or through the API's `import-from`.

use crate::cli::CliError;
use crate::client;
use crate::qm::print_agent_result;
use oxve_qemu::host::QemuHost;
use oxve_qemu::qmp::Qmp;
use serde_json::{json, Map, Value};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NODE: &str = "localhost";

/// How long a monitor command may take, as upstream's.
const HMP_TIMEOUT: Duration = Duration::from_secs(30);

/// After stdin ends (not a terminal), how long the serial port must stay
/// quiet before `terminal` ends, so that the guest's answer is printed.
const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// The most `terminal` waits for output after stdin ended.
const DRAIN_MAX: Duration = Duration::from_secs(10);

/// Runs local sub-command `name` with its positional arguments, options
/// and the extra arguments of `guest exec`.
pub fn run(
    root: &Path,
    name: &str,
    positional: &[String],
    params: &Map<String, Value>,
    extra: &[String],
) -> Result<(), CliError> {
    let opt = |k: &str| params.get(k).map(client::scalar);
    let flag = |k: &str| -> Result<Option<bool>, CliError> {
        opt(k)
            .map(|v| {
                oxve_schema::format::parse_boolean(&v)
                    .ok_or_else(|| CliError::Usage(format!("--{k}: '{v}' is not a boolean")))
            })
            .transpose()
    };
    let number = |k: &str| -> Result<Option<u64>, CliError> {
        opt(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| CliError::Usage(format!("--{k}: '{v}' is not a number")))
            })
            .transpose()
    };
    if name == "disk rescan" {
        let only = match opt("vmid") {
            Some(v) => Some(vmid_arg(name, &v)?),
            None => None,
        };
        return rescan(root, only, flag("dryrun")?.unwrap_or(false));
    }
    let vmid = vmid_arg(name, &positional[0])?;
    match name {
        "status" => status(root, vmid, flag("verbose")?.unwrap_or(false)),
        "showcmd" => {
            let snapshot = opt("snapshot");
            let pretty = flag("pretty")?.unwrap_or(false);
            let line = oxve_api::vm::showcmd_at(root, vmid, snapshot.as_deref(), pretty)
                .map_err(|e| api(e.message))?;
            println!("{line}");
            Ok(())
        }
        "unlock" => {
            let mut p = Map::new();
            p.insert("delete".into(), json!("lock"));
            p.insert("skiplock".into(), json!(1));
            client::call(root, "PUT", &vm_path(vmid, "config"), &p)?;
            Ok(())
        }
        "wait" => wait(root, vmid, number("timeout")?),
        "terminal" => terminal(
            root,
            vmid,
            opt("iface").as_deref(),
            opt("escape").as_deref(),
        ),
        "monitor" => monitor(root, vmid),
        "vncproxy" => vncproxy(root, vmid),
        "guest exec" => guest_exec(
            root,
            vmid,
            extra,
            flag("synchronous")?,
            number("timeout")?,
            flag("pass-stdin")?.unwrap_or(false),
        ),
        "disk import" => disk_import(
            root,
            vmid,
            &positional[1],
            &positional[2],
            opt("format").as_deref(),
            opt("target-disk").as_deref(),
        ),
        _ => Err(CliError::Usage(format!("unknown command 'qm {name}'"))),
    }
}

/// `qm disk rescan`: the node's VMs (or `only`) from the daemon, then
/// the configs updated from the storages in this process (see
/// `oxve_api::vm_rescan`).
fn rescan(root: &Path, only: Option<u32>, dryrun: bool) -> Result<(), CliError> {
    let nodes = client::call(root, "GET", "/nodes", &Map::new())?;
    let node = nodes
        .as_array()
        .and_then(|list| {
            list.iter()
                .find_map(|n| n.get("node").and_then(Value::as_str))
        })
        .ok_or_else(|| api("cannot find this node's name"))?
        .to_string();
    let vmids: Vec<u32> = match only {
        Some(id) => {
            current_config(root, id)?;
            vec![id]
        }
        None => {
            let list = client::call(root, "GET", &format!("/nodes/{NODE}/qemu"), &Map::new())?;
            let mut ids: Vec<u32> = list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|vm| vm.get("vmid").and_then(Value::as_u64))
                .filter_map(|id| u32::try_from(id).ok())
                .collect();
            ids.sort_unstable();
            ids
        }
    };
    if dryrun {
        println!("NOTE: running in dry-run mode, won't write changes out!");
    }
    oxve_api::vm_rescan::rescan_at(root, &node, &vmids, dryrun, &mut |line| println!("{line}"))
        .map_err(|e| api(e.message))
}

fn api(message: impl Into<String>) -> CliError {
    CliError::Api(message.into())
}

fn vmid_arg(name: &str, arg: &str) -> Result<u32, CliError> {
    arg.parse::<u32>()
        .ok()
        .filter(|id| (100..=999_999_999).contains(id))
        .ok_or_else(|| CliError::Usage(format!("qm {name}: '{arg}' is not a VM id")))
}

fn vm_path(vmid: u32, rest: &str) -> String {
    format!("/nodes/{NODE}/qemu/{vmid}/{rest}")
}

fn current_status(root: &Path, vmid: u32) -> Result<Value, CliError> {
    client::call(root, "GET", &vm_path(vmid, "status/current"), &Map::new())
}

/// The VM's config without pending changes; fails when there is no VM.
fn current_config(root: &Path, vmid: u32) -> Result<Value, CliError> {
    let mut query = Map::new();
    query.insert("current".into(), json!(1));
    client::call(root, "GET", &vm_path(vmid, "config"), &query)
}

/// `qm status`: `status: <QEMU's status, else running/stopped>`, or with
/// `--verbose` every figure, nested values indented with tabs.
fn status(root: &Path, vmid: u32, verbose: bool) -> Result<(), CliError> {
    let st = current_status(root, vmid)?;
    if !verbose {
        let text = |k: &str| st.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let status = text("qmpstatus").or(text("status")).unwrap_or("unknown");
        println!("status: {status}");
        return Ok(());
    }
    let mut out = String::new();
    if let Some(map) = st.as_object() {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for k in keys.into_iter().filter(|k| *k != "cpu" && *k != "relcpu") {
            recursive_hash(&mut out, "", &map[k], Some(k));
        }
    }
    print!("{out}");
    Ok(())
}

/// Upstream's nested listing: `key: value`, a map or list under its key
/// with one more tab of indent.
fn recursive_hash(out: &mut String, prefix: &str, v: &Value, key: Option<&str>) {
    match v {
        Value::Object(map) => {
            if let Some(k) = key {
                out.push_str(&format!("{prefix}{k}:\n"));
            }
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                recursive_hash(out, &format!("\t{prefix}"), &map[k], Some(k));
            }
        }
        Value::Array(items) => {
            if let Some(k) = key {
                out.push_str(&format!("{prefix}{k}:\n"));
            }
            for item in items {
                recursive_hash(out, &format!("\t{prefix}"), item, None);
            }
        }
        Value::Null => {}
        scalar => {
            let text = match scalar {
                Value::Number(n) if n.is_f64() => {
                    crate::qm::perl_number(n.as_f64().unwrap_or_default())
                }
                other => client::scalar(other),
            };
            match key {
                Some(k) => out.push_str(&format!("{prefix}{k}: {text}\n")),
                None => out.push_str(&format!("{prefix}{text}\n")),
            }
        }
    }
}

/// `qm wait`: polls until the VM no longer runs.
fn wait(root: &Path, vmid: u32, timeout: Option<u64>) -> Result<(), CliError> {
    let pid_of = |st: &Value| st.get("pid").and_then(Value::as_u64);
    let Some(pid) = pid_of(&current_status(root, vmid)?) else {
        return Ok(());
    };
    println!("waiting until VM {vmid} stops (PID {pid})");
    let _ = std::io::stdout().flush();
    let mut waited = 0u64;
    loop {
        if pid_of(&current_status(root, vmid)?).is_none() {
            return Ok(());
        }
        if timeout.is_some_and(|t| waited >= t) {
            return Err(api("wait failed - got timeout"));
        }
        std::thread::sleep(Duration::from_secs(1));
        waited += 1;
    }
}

/// The escape key of `--escape`: `^X`, `0x..` or a decimal code; 0 means none.
fn escape_code(spec: &str) -> Result<u8, CliError> {
    let bad = || api(format!("invalid escape character definition: {spec}"));
    let bytes = spec.as_bytes();
    if bytes.len() == 2 && bytes[0] == b'^' && (0x40..=0x7a).contains(&bytes[1]) {
        return Ok(bytes[1] & 0x1f);
    }
    if let Some(hex) = spec.strip_prefix("0x").or_else(|| spec.strip_prefix("0X")) {
        return u8::from_str_radix(hex, 16).map_err(|_| bad());
    }
    spec.parse::<u8>().map_err(|_| bad())
}

/// `qm terminal`: this terminal (raw) on the VM's serial port socket
/// until the escape key or the VM closes it. When stdin is not a
/// terminal its data is sent as it is, and after it ends the guest's
/// output is printed until the port has been quiet for a moment.
fn terminal(
    root: &Path,
    vmid: u32,
    iface: Option<&str>,
    escape: Option<&str>,
) -> Result<(), CliError> {
    let escape = escape_code(escape.unwrap_or("^O"))?;
    let conf = current_config(root, vmid)?;
    let value = |k: &str| conf.get(k).map(client::scalar);
    let iface = match iface {
        Some(i) => {
            let Some(v) = value(i) else {
                return Err(api(format!("serial interface '{i}' is not configured")));
            };
            if v != "socket" {
                return Err(api(format!("wrong serial type on interface '{i}'")));
            }
            i.to_string()
        }
        None => ["serial0", "serial1", "serial2", "serial3"]
            .into_iter()
            .find(|k| value(k).as_deref() == Some("socket"))
            .ok_or_else(|| api("unable to find a serial interface"))?
            .to_string(),
    };
    let index: u32 = iface
        .strip_prefix("serial")
        .and_then(|n| n.parse().ok())
        .filter(|n| *n <= 3)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--iface: value '{iface}' does not have a value in the enumeration 'serial0, serial1, serial2, serial3'"
            ))
        })?;
    if current_status(root, vmid)?.get("pid").is_none() {
        return Err(api(format!("VM {vmid} not running")));
    }
    let socket = QemuHost::new(root.join("run/oxve/qemu")).serial_socket(vmid, index);
    let stream = std::os::unix::net::UnixStream::connect(&socket)
        .map_err(|e| api(format!("unable to connect to '{}': {e}", socket.display())))?;
    let hint = if escape != 0 {
        format!(" (press Ctrl+{} to exit)", char::from(escape + 0x40))
    } else {
        String::new()
    };
    println!("starting serial terminal on interface {iface}{hint}");
    let _ = std::io::stdout().flush();
    let _raw = RawTerminal::enter();
    relay(stream, escape).map_err(|e| api(format!("serial terminal: {e}")))
}

/// Puts stdin in raw mode (when it is a terminal) until dropped.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enter() -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawTerminal(None);
        }
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawTerminal(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawTerminal(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// Copies stdin to `stream` (up to the escape byte) on a thread and
/// `stream` to stdout here.
fn relay(stream: std::os::unix::net::UnixStream, escape: u8) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    // 0: going on, 1: stdin ended, 2: escape pressed.
    let state = Arc::new(AtomicU8::new(0));
    let mut writer = stream.try_clone()?;
    let input_state = state.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    input_state.store(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            let cut = (escape != 0)
                .then(|| chunk.iter().position(|b| *b == escape))
                .flatten();
            let send = &chunk[..cut.unwrap_or(n)];
            if writer.write_all(send).is_err() {
                input_state.store(1, Ordering::SeqCst);
                return;
            }
            if cut.is_some() {
                input_state.store(2, Ordering::SeqCst);
                return;
            }
        }
    });
    let mut reader = stream;
    reader.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 4096];
    let mut last_output = Instant::now();
    let mut input_ended: Option<Instant> = None;
    loop {
        match state.load(Ordering::SeqCst) {
            2 => return Ok(()),
            1 => {
                let ended = *input_ended.get_or_insert_with(Instant::now);
                let now = Instant::now();
                if now.duration_since(last_output.max(ended)) >= DRAIN_QUIET
                    || now.duration_since(ended) >= DRAIN_MAX
                {
                    return Ok(());
                }
            }
            _ => {}
        }
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                stdout.write_all(&buf[..n])?;
                stdout.flush()?;
                last_output = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// `qm monitor`: QEMU's human monitor, one command per line of stdin
/// (`qm> ` prompts on a terminal), each sent over a fresh QMP connection
/// so the daemon's own queries are never locked out; `quit` ends.
fn monitor(root: &Path, vmid: u32) -> Result<(), CliError> {
    current_config(root, vmid)?;
    let socket = QemuHost::new(root.join("run/oxve/qemu")).qmp_socket(vmid);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| api(format!("cannot start runtime: {e}")))?;
    println!("Entering QEMU Monitor for VM {vmid} - type 'help' for help");
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let mut line = String::new();
    loop {
        if tty {
            print!("qm> ");
        }
        let _ = std::io::stdout().flush();
        line.clear();
        let n = stdin
            .read_line(&mut line)
            .map_err(|e| api(format!("cannot read stdin: {e}")))?;
        if n == 0 {
            if tty {
                println!();
            }
            return Ok(());
        }
        let input = line.trim();
        if input.is_empty() {
            continue;
        }
        if input == "q" || input == "quit" {
            return Ok(());
        }
        match rt.block_on(hmp(&socket, vmid, input)) {
            Ok(text) => print!("{text}"),
            Err(e) => println!("ERROR: {e}"),
        }
    }
}

/// `qm vncproxy`: the VM's VNC server on stdin/stdout, for a VNC client
/// that authenticates with the password in `LC_PVE_TICKET` (set on QEMU
/// here and valid for 30 s, as upstream's).
fn vncproxy(root: &Path, vmid: u32) -> Result<(), CliError> {
    let password = std::env::var("LC_PVE_TICKET")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| api("LC_PVE_TICKET not set, VNC proxy without password is forbidden"))?;
    current_config(root, vmid)?;
    let host = QemuHost::new(root.join("run/oxve/qemu"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| api(format!("cannot start runtime: {e}")))?;
    rt.block_on(async {
        let mut qmp = Qmp::connect(&host.qmp_socket(vmid), HMP_TIMEOUT)
            .await
            .map_err(|_| format!("VM {vmid} not running"))?;
        for (command, args) in [
            (
                "set_password",
                json!({"protocol": "vnc", "password": password}),
            ),
            ("expire_password", json!({"protocol": "vnc", "time": "+30"})),
        ] {
            qmp.execute_within(command, Some(args), HMP_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })
    .map_err(api)?;
    let socket = host.vnc_socket(vmid);
    let stream = std::os::unix::net::UnixStream::connect(&socket).map_err(|e| {
        api(format!(
            "unable to connect to socket '{}' - {e}",
            socket.display()
        ))
    })?;
    relay(stream, 0).map_err(|e| api(format!("vnc proxy: {e}")))
}

/// One HMP command through QMP's `human-monitor-command`.
async fn hmp(socket: &Path, vmid: u32, command: &str) -> Result<String, String> {
    let mut qmp = Qmp::connect(socket, HMP_TIMEOUT).await.map_err(|e| {
        if socket.exists() {
            e.to_string()
        } else {
            format!("VM {vmid} not running")
        }
    })?;
    let answer = qmp
        .execute_within(
            "human-monitor-command",
            Some(json!({"command-line": command})),
            HMP_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer.as_str().unwrap_or_default().to_string())
}

/// `qm guest exec`: starts the command through the guest agent and, when
/// synchronous (the default), polls its status until it ends or the
/// timeout passes.
fn guest_exec(
    root: &Path,
    vmid: u32,
    command: &[String],
    synchronous: Option<bool>,
    timeout: Option<u64>,
    pass_stdin: bool,
) -> Result<(), CliError> {
    if timeout.is_some() && synchronous == Some(false) {
        return Err(CliError::Usage(
            "Parameter verification failed. synchronous: needs to be set for 'timeout'".into(),
        ));
    }
    let mut params = Map::new();
    if !command.is_empty() {
        params.insert("command".into(), json!(command));
    }
    if pass_stdin {
        let mut input = Vec::new();
        std::io::stdin()
            .take(1024 * 1024 + 1)
            .read_to_end(&mut input)
            .map_err(|e| api(format!("cannot read stdin: {e}")))?;
        if input.len() > 1024 * 1024 {
            return Err(api("'input-data' (STDIN) is limited to 1 MiB, aborting"));
        }
        params.insert("input-data".into(), json!(String::from_utf8_lossy(&input)));
    }
    let mut result = client::call(root, "POST", &vm_path(vmid, "agent/exec"), &params)?;
    if synchronous.unwrap_or(true) {
        let pid = result.get("pid").cloned().unwrap_or(Value::Null);
        let limit = timeout.unwrap_or(30);
        let start = Instant::now();
        let mut query = Map::new();
        query.insert("pid".into(), pid);
        while limit == 0 || start.elapsed() < Duration::from_secs(limit) {
            let out = client::call(root, "GET", &vm_path(vmid, "agent/exec-status"), &query)?;
            if out.get("exited").is_some_and(|e| client::scalar(e) == "1") {
                result = out;
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        if result.get("exited").is_none() {
            eprintln!("timeout reached, returning pid");
        }
    }
    print_agent_result(&json!({ "result": result }));
    Ok(())
}

/// `qm disk import` (`qm importdisk`), as upstream's: the image file
/// becomes a new volume of the VM on `storage`. With `--target-disk
/// <drive>` it goes through the API's `import-from` (a config update task
/// of the daemon: the drive is attached, hot-plugged into a running VM);
/// otherwise the copy runs here, as root, like upstream's, and the volume
/// is added as `unused<n>` through the API (guarded by the config's digest).
fn disk_import(
    root: &Path,
    vmid: u32,
    source: &str,
    storage: &str,
    format: Option<&str>,
    target_disk: Option<&str>,
) -> Result<(), CliError> {
    if let Some(f) = format.filter(|f| !["raw", "qcow2", "vmdk"].contains(f)) {
        return Err(CliError::Usage(format!(
            "format: value '{f}' does not have a value in the enumeration 'raw, qcow2, vmdk'"
        )));
    }
    // As upstream: an `unused<n>` target means "the next unused entry".
    let is_drive = |d: &str| oxve_schema::vmconfig::is_drive_key(d);
    let is_unused = |d: &str| {
        d.strip_prefix("unused")
            .is_some_and(|n| n.parse::<u8>().is_ok())
    };
    if let Some(t) = target_disk.filter(|t| !is_drive(t) && !is_unused(t)) {
        return Err(CliError::Usage(format!(
            "target-disk: '{t}' is neither a drive (e.g. scsi1) nor unused<n>"
        )));
    }
    let drive = target_disk.filter(|d| is_drive(d));
    let conf = current_config(root, vmid)?;
    if let Some(lock) = conf.get("lock") {
        return Err(api(format!("VM is locked ({})", client::scalar(lock))));
    }
    let path = PathBuf::from(source);
    if !path.is_file() {
        return Err(api(format!("{source}: non-existent or non-regular file")));
    }
    let path = std::fs::canonicalize(&path).map_err(|e| api(format!("{source}: {e}")))?;
    println!("importing disk '{source}' to VM {vmid} ...");
    match drive {
        Some(drive) => import_to_drive(root, vmid, &path, storage, format, drive),
        None => import_unused(root, vmid, &path, storage, format),
    }
}

/// The API way: `<drive>=<storage>:0,import-from=<path>` on the config.
fn import_to_drive(
    root: &Path,
    vmid: u32,
    path: &Path,
    storage: &str,
    format: Option<&str>,
    drive: &str,
) -> Result<(), CliError> {
    let with_pending = client::call(root, "GET", &vm_path(vmid, "config"), &Map::new())?;
    if with_pending.get(drive).is_some() {
        return Err(api(format!(
            "cowardly refusing to overwrite existing entry: {drive}"
        )));
    }
    let mut value = format!("{storage}:0,import-from={}", path.display());
    if let Some(f) = format {
        value.push_str(&format!(",format={f}"));
    }
    let mut params = Map::new();
    params.insert(drive.to_string(), json!(value));
    let data = client::call(root, "POST", &vm_path(vmid, "config"), &params)?;
    if let Some(upid) = data.as_str().filter(|s| s.starts_with("UPID:")) {
        client::follow_task(root, upid)?;
    }
    let conf = client::call(root, "GET", &vm_path(vmid, "config"), &Map::new())?;
    let volume = conf.get(drive).map(client::scalar).unwrap_or_default();
    println!("{drive}: successfully imported disk '{volume}'");
    Ok(())
}

/// How often adding the `unused<n>` entry is retried when the config
/// changed under it.
const UNUSED_ATTEMPTS: usize = 5;

/// The local way: the copy here, then `unused<n>` through the API; the
/// new volume is freed again when that fails.
fn import_unused(
    root: &Path,
    vmid: u32,
    path: &Path,
    storage: &str,
    format: Option<&str>,
) -> Result<(), CliError> {
    let volid = oxve_api::vm_import::import_file_at(root, vmid, path, storage, format, &|l| {
        println!("{l}")
    })
    .map_err(|e| api(e.message))?;
    let added = add_unused(root, vmid, &volid);
    match added {
        Ok(key) => {
            println!("{key}: successfully imported disk '{volid}'");
            Ok(())
        }
        Err(e) => {
            let freed = oxve_api::storage::open_storage_at(root, storage).and_then(|p| {
                let name = &volid[storage.len() + 1..];
                p.free_image(name).map_err(oxve_api::ApiError::from)
            });
            if let Err(f) = freed {
                eprintln!("cleanup of {volid} failed: {}", f.message);
            }
            Err(e)
        }
    }
}

/// Adds `volid` as the VM's first free `unused<n>`; returns that key.
fn add_unused(root: &Path, vmid: u32, volid: &str) -> Result<String, CliError> {
    for _ in 0..UNUSED_ATTEMPTS {
        let conf = client::call(root, "GET", &vm_path(vmid, "config"), &Map::new())?;
        let current = current_config(root, vmid)?;
        if let Some(lock) = current.get("lock") {
            return Err(api(format!("VM is locked ({})", client::scalar(lock))));
        }
        let key = (0..)
            .map(|i| format!("unused{i}"))
            .find(|k| conf.get(k).is_none() && current.get(k).is_none())
            .unwrap_or_default();
        let mut params = Map::new();
        params.insert(key.clone(), json!(volid));
        if let Some(d) = current.get("digest") {
            params.insert("digest".into(), d.clone());
        }
        match client::call(root, "PUT", &vm_path(vmid, "config"), &params) {
            Ok(_) => return Ok(key),
            Err(CliError::Api(m)) if m.contains("detected modified configuration") => continue,
            Err(e) => return Err(e),
        }
    }
    Err(api(format!(
        "could not add {volid} to VM {vmid}: its configuration kept changing"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keys() {
        assert_eq!(escape_code("^O").ok(), Some(0x0f));
        assert_eq!(escape_code("^a").ok(), Some(0x01));
        assert_eq!(escape_code("0x1d").ok(), Some(0x1d));
        assert_eq!(escape_code("0").ok(), Some(0));
        assert!(escape_code("x").is_err());
    }

    #[test]
    fn verbose_status_nests_with_tabs() {
        let mut out = String::new();
        let v = json!({"ha": {"managed": 0}, "list": [1, 2], "cpus": 1, "mem": 1.5});
        for k in ["cpus", "ha", "list", "mem"] {
            recursive_hash(&mut out, "", &v[k], Some(k));
        }
        assert_eq!(
            out,
            "cpus: 1\nha:\n\tmanaged: 0\nlist:\n\t1\n\t2\nmem: 1.5\n"
        );
    }
}
