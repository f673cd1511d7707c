//! VM start: `POST .../status/start` until its task ended OK and QMP's
//! `query-status` says `running`, against the command line `qm showcmd`
//! prints for the same VM, run by hand in the daemon's network namespace
//! and driven to `running` over QMP as oxve drives it (`-S`, then `cont`).

use super::qmp::Qmp;
use super::{end, qemu_pid, Bench, Client, POLL};
use crate::error::{BenchError, Result};
use crate::lxc::elapsed_ms;
use crate::stats::Latency;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The VM started.
pub const VMID: u32 = 800;
/// Timed starts of each (after one untimed start of each).
pub const ROUNDS: usize = 11;
/// How long QEMU may take to accept on its QMP socket.
const QMP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a QEMU asked to quit may take to exit before it is killed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The bridge hooks QEMU runs for taps, as the daemon writes them.
const HOOKS: [&str; 2] = ["oxve-bridge-up", "oxve-bridge-down"];

/// What the start benchmark measured.
#[derive(Debug)]
pub struct StartFigures {
    /// Timed starts of each.
    pub rounds: usize,
    /// API call to QMP `running`.
    pub api: Latency,
    /// The same command line by hand to QMP `running`.
    pub by_hand: Latency,
    /// The accelerator the command line asks for (`kvm` or `tcg`).
    pub accel: String,
}

/// Creates VM [`VMID`], starts it once through the API (which writes the
/// NIC's plug the bridge hook reads) and once by hand, then times
/// [`ROUNDS`] starts of each, alternating which goes first, stopping the VM
/// after each.
pub(super) fn run(b: &Bench<'_>) -> Result<StartFigures> {
    let mut client = b.client()?;
    eprintln!("creating VM {VMID} for the start benchmark");
    b.create(&mut client, VMID)?;
    api_start(b, &mut client, || copy_plugs(b))?;
    let shown = b.daemon.cli(&["qm", "showcmd", &VMID.to_string()])?;
    let daemon_run = b.run_dir.display().to_string();
    let own_run = b.own_run_dir().display().to_string();
    let args = by_hand(&split(&shown)?, &daemon_run, &own_run)?;
    copy_hooks(b)?;
    let accel = accelerator(&args);
    hand_start(b, &args)?;
    let mut api = Vec::with_capacity(ROUNDS);
    let mut hand = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                api.push(api_start(b, &mut client, || Ok(()))?);
            } else {
                hand.push(hand_start(b, &args)?);
            }
        }
        eprintln!(
            "VM start round {}/{ROUNDS} ({accel}): API {:.0} ms, by hand {:.0} ms",
            round + 1,
            api[round],
            hand[round]
        );
    }
    Ok(StartFigures {
        rounds: ROUNDS,
        api: Latency::of(&mut api),
        by_hand: Latency::of(&mut hand),
        accel,
    })
}

/// One start through the API, timed from the call until QMP says
/// `running`; then `while_running`, and the VM is stopped through the API.
fn api_start(
    b: &Bench<'_>,
    client: &mut Client,
    while_running: impl FnOnce() -> Result<()>,
) -> Result<f64> {
    let path = format!("{}/status/start", b.vm_path(VMID));
    client.connect()?;
    let start = Instant::now();
    let started = b
        .task(client, "POST", &path, &[], POLL)
        .and_then(|()| running(&b.run_dir.join(format!("{VMID}.qmp"))));
    let ms = elapsed_ms(start);
    let done = started.and_then(|()| while_running());
    let pid = qemu_pid(&b.run_dir.join(format!("{VMID}.pid")));
    let stopped = b.stop(client, VMID);
    if let Some(pid) = pid {
        end(pid, QUIT_TIMEOUT);
    }
    done?;
    stopped?;
    Ok(ms)
}

/// One start by hand, timed from running the command until QMP says
/// `running`; then QEMU is asked to quit (and killed by pid if it does
/// not).
fn hand_start(b: &Bench<'_>, args: &[String]) -> Result<f64> {
    let own_run = b.own_run_dir();
    let pid_file = own_run.join(format!("{VMID}.pid"));
    let qmp_socket = own_run.join(format!("{VMID}.qmp"));
    for stale in [&pid_file, &qmp_socket] {
        let _ = std::fs::remove_file(stale);
    }
    let start = Instant::now();
    let started = spawn(b, args).and_then(|()| {
        let mut qmp = Qmp::connect(&qmp_socket, QMP_TIMEOUT)?;
        qmp.execute("cont")?;
        let status = qmp.status()?;
        Ok((qmp, status))
    });
    let ms = elapsed_ms(start);
    let pid = qemu_pid(&pid_file);
    let status = started.map(|(qmp, status)| {
        qmp.quit();
        status
    });
    if let Some(pid) = pid {
        end(pid, QUIT_TIMEOUT);
    }
    match status? {
        s if s == "running" => Ok(ms),
        s => Err(BenchError::Tool {
            tool: format!("QEMU of VM {VMID} started by hand"),
            detail: format!("query-status says '{s}' after cont"),
        }),
    }
}

/// Runs the daemonizing command line in the daemon's network namespace
/// (as the daemon does) and waits for its first process to return.
fn spawn(b: &Bench<'_>, args: &[String]) -> Result<()> {
    let (program, rest) = args.split_first().ok_or_else(|| BenchError::Parse {
        what: "qm showcmd's output",
        detail: "no command".into(),
    })?;
    let out = b
        .host
        .in_netns(|| {
            Command::new(program)
                .args(rest)
                .stdin(Stdio::null())
                .output()
        })
        .map_err(|source| BenchError::Spawn {
            tool: program.clone(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(BenchError::Tool {
        tool: format!("{program} (VM {VMID} by hand)"),
        detail: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// Connects to QMP at `socket` and fails unless QEMU runs.
fn running(socket: &Path) -> Result<()> {
    let status = Qmp::connect(socket, QMP_TIMEOUT)?.status()?;
    if status == "running" {
        return Ok(());
    }
    Err(BenchError::Tool {
        tool: format!("QEMU of VM {VMID} started through the API"),
        detail: format!("query-status says '{status}' after the start task"),
    })
}

/// Copies the NIC plugs the daemon wrote for the running VM into the
/// bench's run directory, where its copy of the bridge hook reads them.
fn copy_plugs(b: &Bench<'_>) -> Result<()> {
    let own_run = b.own_run_dir();
    std::fs::create_dir_all(&own_run).map_err(BenchError::file(&own_run))?;
    let prefix = format!("{VMID}.net");
    let mut copied = 0;
    for entry in std::fs::read_dir(&b.run_dir).map_err(BenchError::file(&b.run_dir))? {
        let entry = entry.map_err(BenchError::file(&b.run_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".plug") {
            let to = own_run.join(&name);
            std::fs::copy(entry.path(), &to).map_err(BenchError::file(&to))?;
            copied += 1;
        }
    }
    if copied == 0 {
        return Err(BenchError::Tool {
            tool: format!("starting VM {VMID}"),
            detail: format!("left no NIC plug in {}", b.run_dir.display()),
        });
    }
    Ok(())
}

/// Writes the bridge hooks into the bench's run directory: the daemon's,
/// with the bench's root in place of the daemon's, so that they read the
/// plugs copied there.
fn copy_hooks(b: &Bench<'_>) -> Result<()> {
    let root = b.daemon.root().display().to_string();
    let own_root = b.own_root().display().to_string();
    for hook in HOOKS {
        let from = b.run_dir.join(hook);
        let text = std::fs::read_to_string(&from).map_err(BenchError::file(&from))?;
        if !text.contains(&root) {
            return Err(BenchError::Parse {
                what: "the daemon's bridge hook",
                detail: format!("{} does not name the root {root}", from.display()),
            });
        }
        let to = b.own_run_dir().join(hook);
        std::fs::write(&to, text.replace(&root, &own_root)).map_err(BenchError::file(&to))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
            .map_err(BenchError::file(&to))?;
    }
    Ok(())
}

/// The daemon's command line made the bench's own: every file in the
/// daemon's run directory (pid file, QMP, VNC and serial sockets, bridge
/// hooks) moved to `own_run`, the connection to the daemon's QMP event
/// listener dropped (it would clean up after the daemon's VM when this
/// QEMU exits), and `-S` added as the daemon adds it.
fn by_hand(args: &[String], daemon_run: &str, own_run: &str) -> Result<Vec<String>> {
    for needed in ["-daemonize", "-pidfile"] {
        if !args.iter().any(|a| a == needed) {
            return Err(BenchError::Parse {
                what: "qm showcmd's output",
                detail: format!("no {needed} in {}", args.join(" ")),
            });
        }
    }
    let (from, to) = (format!("{daemon_run}/"), format!("{own_run}/"));
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let event_channel = match arg.as_str() {
            "-chardev" | "-mon" => it.as_slice().first().is_some_and(|v| {
                v.split(',')
                    .any(|p| p == "id=qmp-event" || p == "chardev=qmp-event")
            }),
            _ => false,
        };
        if event_channel {
            it.next();
            continue;
        }
        out.push(arg.replace(&from, &to));
    }
    out.push("-S".into());
    Ok(out)
}

/// `kvm` or `tcg`: what the command line asks QEMU to run on.
fn accelerator(args: &[String]) -> String {
    let tcg = args
        .iter()
        .any(|a| a.split(',').any(|p| p == "accel=tcg" || p == "tcg"));
    if tcg { "tcg" } else { "kvm" }.into()
}

/// Splits `qm showcmd`'s line into words: bare words and single-quoted
/// ones, with `'\''` for a quote inside (how it quotes).
fn split(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => {
                            return Err(BenchError::Parse {
                                what: "qm showcmd's output",
                                detail: "an unterminated quote".into(),
                            })
                        }
                    }
                }
            }
            '\\' => {
                let escaped = chars.next().ok_or_else(|| BenchError::Parse {
                    what: "qm showcmd's output",
                    detail: "a backslash at the end".into(),
                })?;
                word.get_or_insert_with(String::new).push(escaped);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_shell_quoted_words() {
        assert_eq!(
            split("/usr/bin/kvm -name 'vm800,debug-threads=on' -append 'console=ttyS0 quiet' -x 'it'\\''s' ''\n")
                .expect("split"),
            words(&[
                "/usr/bin/kvm",
                "-name",
                "vm800,debug-threads=on",
                "-append",
                "console=ttyS0 quiet",
                "-x",
                "it's",
                ""
            ])
        );
        assert!(split("-append 'open").is_err());
    }

    #[test]
    fn moves_run_files_drops_the_event_channel_and_adds_dash_s() {
        let run = "/r/run/oxve/qemu";
        let args = words(&[
            "/usr/bin/kvm",
            "-chardev",
            "socket,id=qmp,path=/r/run/oxve/qemu/800.qmp,server=on,wait=off",
            "-mon",
            "chardev=qmp,mode=control",
            "-chardev",
            "socket,id=qmp-event,path=/r/run/oxve/qemu/qmeventd.sock,reconnect-ms=5000",
            "-mon",
            "chardev=qmp-event,mode=control",
            "-pidfile",
            "/r/run/oxve/qemu/800.pid",
            "-daemonize",
            "-readconfig",
            "/r/run/oxve/qemu-share/pve-q35-4.0.cfg",
            "-netdev",
            "type=tap,id=net0,ifname=tap800i0,script=/r/run/oxve/qemu/oxve-bridge-up",
        ]);
        let own = by_hand(&args, run, "/o/run/oxve/qemu").expect("by hand");
        assert_eq!(
            own,
            words(&[
                "/usr/bin/kvm",
                "-chardev",
                "socket,id=qmp,path=/o/run/oxve/qemu/800.qmp,server=on,wait=off",
                "-mon",
                "chardev=qmp,mode=control",
                "-pidfile",
                "/o/run/oxve/qemu/800.pid",
                "-daemonize",
                "-readconfig",
                "/r/run/oxve/qemu-share/pve-q35-4.0.cfg",
                "-netdev",
                "type=tap,id=net0,ifname=tap800i0,script=/o/run/oxve/qemu/oxve-bridge-up",
                "-S",
            ])
        );
        assert!(by_hand(&words(&["/usr/bin/kvm", "-daemonize"]), run, "/o").is_err());
    }

    #[test]
    fn tells_the_accelerator() {
        assert_eq!(accelerator(&words(&["-accel", "tcg"])), "tcg");
        assert_eq!(
            accelerator(&words(&["-machine", "type=pc,accel=tcg"])),
            "tcg"
        );
        assert_eq!(accelerator(&words(&["-enable-kvm"])), "kvm");
    }
}
