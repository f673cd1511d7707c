//! TPM state disks: a `tpmstate0` volume is a raw 4 MiB file (or device)
//! holding swtpm's state; before QEMU starts, `swtpm_setup` makes the
//! state once (`--not-overwrite`) and a `swtpm` daemon serves it on
//! `<run>/<vmid>.swtpm`, ending when QEMU disconnects (as upstream).

use crate::error::{ApiError, ApiResult};
use crate::guest_volumes::open;
use crate::node::Node;
use oxve_schema::vmconfig::{drive_file, VmSection};
use std::process::Command;
use std::time::{Duration, Instant};

/// Size of a TPM state volume (upstream's).
pub const STATE_SIZE_KIB: u64 = 4 * 1024;

fn opt<'a>(value: &'a str, key: &str) -> Option<&'a str> {
    value
        .split(',')
        .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
}

fn run(cmd: &mut Command, what: &str) -> ApiResult<String> {
    let out = cmd.output().map_err(|e| {
        ApiError::fail(format!(
            "cannot run {what} (Debian packages swtpm, swtpm-tools): {e}"
        ))
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(ApiError::fail(format!("{what} failed: {}", text.trim())));
    }
    Ok(text)
}

/// Starts VM `vmid`'s TPM emulator when `section` has a `tpmstate0`;
/// returns what the task log should say.
pub fn start(node: &Node, vmid: u32, section: &VmSection) -> ApiResult<Vec<String>> {
    let Some(value) = section.get("tpmstate0") else {
        return Ok(Vec::new());
    };
    let file = drive_file(value)
        .ok_or_else(|| ApiError::fail("tpmstate0: no volume"))?
        .to_string();
    let state = if file.starts_with('/') {
        std::path::PathBuf::from(&file)
    } else {
        let (plugin, volname) = open(node, &file)?;
        plugin.activate_volume(&volname)?;
        plugin.path(&volname)?
    };
    let tpm2 = opt(value, "version") == Some("v2.0");
    let mut log = Vec::new();
    let mut setup = Command::new("swtpm_setup");
    setup
        .arg("--tpmstate")
        .arg(format!("file://{}", state.display()))
        .args(["--createek", "--create-ek-cert", "--create-platform-cert"])
        .args(["--lock-nvram", "--config", "/etc/swtpm_setup.conf"])
        .args(["--runas", "0", "--not-overwrite"]);
    if tpm2 {
        setup.args(["--tpm2", "--ecc"]);
    }
    for line in run(&mut setup, "swtpm_setup")?
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        log.push(format!("swtpm_setup: {line}"));
    }
    let host = node.qemu();
    let run_dir = host.run_dir().to_path_buf();
    let socket = run_dir.join(format!("{vmid}.swtpm"));
    let pid = run_dir.join(format!("{vmid}.swtpm.pid"));
    let _ = std::fs::remove_file(&pid);
    let mut swtpm = Command::new("swtpm");
    swtpm
        .arg("socket")
        .arg("--tpmstate")
        .arg(format!("backend-uri=file://{},mode=0600", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={},mode=0600", socket.display()))
        .arg("--pid")
        .arg(format!("file={}", pid.display()))
        .args(["--terminate", "--daemon", "--log"])
        .arg(format!(
            "file={},level=1",
            run_dir.join(format!("{vmid}.swtpm.log")).display()
        ));
    if tpm2 {
        swtpm.arg("--tpm2");
    }
    run(&mut swtpm, "swtpm")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pid.exists() {
        if Instant::now() > deadline {
            return Err(ApiError::fail(format!(
                "failed to start swtpm: pid file '{}' wasn't created",
                pid.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    log.push(format!(
        "TPM {} emulator (swtpm) serving {file}",
        if tpm2 { "2.0" } else { "1.2" }
    ));
    Ok(log)
}

/// Ends VM `vmid`'s TPM emulator if it still runs (QEMU never connected,
/// or went away without it noticing): the pid in its pid file, if that
/// process is swtpm.
pub fn stop(node: &Node, vmid: u32) {
    let pid_file = node.qemu().run_dir().join(format!("{vmid}.swtpm.pid"));
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return;
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "swtpm" {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}
