//! Container start: `POST .../status/start` until its task ended OK and
//! `lxc-wait` sees the container RUNNING, against raw `lxc-start -d` and
//! the same `lxc-wait` of the same container with the LXC config oxve
//! generated for it.

use super::{elapsed_ms, segment, task_id, Bench, Client};
use crate::api::run_tool;
use crate::error::{BenchError, Result};
use crate::stats::Latency;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The container started.
pub const VMID: u32 = 100;
/// Timed starts of each (after one untimed warm-up through the API).
pub const ROUNDS: usize = 7;
/// How often the start task is polled.
pub const POLL: Duration = Duration::from_millis(5);
/// `lxc-wait`'s timeout, seconds.
const WAIT_SECS: &str = "30";

/// What the start benchmark measured.
#[derive(Debug)]
pub struct StartFigures {
    /// Timed starts of each.
    pub rounds: usize,
    /// API call to init running.
    pub api: Latency,
    /// `lxc-start -d` + `lxc-wait -s RUNNING`.
    pub raw: Latency,
}

/// Creates CT [`VMID`], starts it once through the API (which writes the
/// LXC config the baseline reuses), then times [`ROUNDS`] starts of each
/// kind, alternating which goes first, killing the CT after each.
pub(super) fn run(b: &Bench<'_>) -> Result<StartFigures> {
    let mut client = b.client()?;
    eprintln!("creating CT {VMID} for the start benchmark");
    b.create(&mut client, VMID)?;
    api_start(b, &mut client)?;
    let config = b.host.ct_dir(VMID).join("config");
    if !config.is_file() {
        return Err(BenchError::Tool {
            tool: format!("starting CT {VMID}"),
            detail: format!("left no LXC config at {}", config.display()),
        });
    }
    let subvol = subvolume(b, &mut client)?;
    let mut api = Vec::with_capacity(ROUNDS);
    let mut raw = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                api.push(api_start(b, &mut client)?);
            } else {
                raw.push(raw_start(b, &subvol)?);
            }
        }
        eprintln!(
            "CT start round {}/{ROUNDS}: API {:.0} ms, lxc-start {:.0} ms",
            round + 1,
            api[round],
            raw[round]
        );
    }
    Ok(StartFigures {
        rounds: ROUNDS,
        api: Latency::of(&mut api),
        raw: Latency::of(&mut raw),
    })
}

/// One start through the API on the kept-alive connection, timed until
/// the task ended OK and `lxc-wait` returned; then the CT is killed.
fn api_start(b: &Bench<'_>, client: &mut Client) -> Result<f64> {
    let path = format!("{}/lxc/{VMID}/status/start", b.node_path());
    client.connect()?;
    let start = Instant::now();
    let started = client
        .call("POST", &path, &[])
        .and_then(task_id)
        .and_then(|upid| b.wait_task(client, &upid, POLL))
        .and_then(|()| b.lxc("lxc-wait", VMID, &["-s", "RUNNING", "-t", WAIT_SECS]));
    let ms = elapsed_ms(start);
    let killed = b.kill(VMID);
    started?;
    killed?;
    Ok(ms)
}

/// One raw start: the rootfs bind-mounted as oxve mounts a subvolume
/// (untimed), then `lxc-start -d` and `lxc-wait` timed; then the CT is
/// killed (its post-stop hook unmounts, the bench makes sure).
fn raw_start(b: &Bench<'_>, subvol: &Path) -> Result<f64> {
    let rootfs = b.host.rootfs_dir(VMID);
    run_tool(
        "mount --bind",
        Command::new("mount").arg("--bind").arg(subvol).arg(&rootfs),
    )?;
    let start = Instant::now();
    let started =
        lxc_start(b).and_then(|()| b.lxc("lxc-wait", VMID, &["-s", "RUNNING", "-t", WAIT_SECS]));
    let ms = elapsed_ms(start);
    let killed = b.kill(VMID);
    started?;
    killed?;
    Ok(ms)
}

/// `lxc-start -d` as the daemon runs it: in its network namespace, with
/// files rather than pipes for the monitor that lives on.
fn lxc_start(b: &Bench<'_>) -> Result<()> {
    let err_path = b.host.ct_dir(VMID).join("bench-start.err");
    let err = std::fs::File::create(&err_path).map_err(BenchError::file(&err_path))?;
    let mut cmd = b.host.tool("lxc-start", VMID);
    cmd.arg("-d")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let status = cmd.status().map_err(|source| BenchError::Spawn {
        tool: "lxc-start".into(),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    Err(BenchError::Tool {
        tool: format!("lxc-start -d -n {VMID}"),
        detail: format!(
            "{status}: {}",
            b.host
                .log_reason(VMID)
                .unwrap_or_else(|| stderr.trim().to_string())
        ),
    })
}

/// The host directory of the CT's subvolume rootfs.
fn subvolume(b: &Bench<'_>, client: &mut Client) -> Result<PathBuf> {
    let config = client.call("GET", &format!("{}/lxc/{VMID}/config", b.node_path()), &[])?;
    let rootfs = config["rootfs"].as_str().unwrap_or_default();
    let volid = rootfs.split(',').next().unwrap_or_default();
    let Some((storage, _)) = volid.split_once(':') else {
        return Err(BenchError::Parse {
            what: "the CT's config",
            detail: format!("rootfs '{rootfs}' is not a volume"),
        });
    };
    let info = client.call(
        "GET",
        &format!(
            "{}/storage/{}/content/{}",
            b.node_path(),
            segment(storage),
            segment(volid)
        ),
        &[],
    )?;
    let path = PathBuf::from(info["path"].as_str().unwrap_or_default());
    if !path.is_dir() {
        return Err(BenchError::Tool {
            tool: format!("CT {VMID}'s rootfs"),
            detail: format!(
                "'{volid}' at '{}' is not a subvolume directory",
                path.display()
            ),
        });
    }
    Ok(path)
}
