//! [`HostView`] on the real host: `/sys/block`, `/proc/mounts` and the
//! tools, run directly (no shell) with `LC_ALL=C` so their output is the
//! one the parsers know.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{HostView, ToolOutput};

/// Where tools are looked for; the daemon's `PATH` may lack the sbin ones.
const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// How long `smartctl` may take (a disk that hangs must not hang the API);
/// upstream uses the same limit.
const SMARTCTL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the listing tools may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The host this process runs on.
#[derive(Debug, Clone)]
pub struct SysHost {
    sys_block: PathBuf,
    proc_mounts: PathBuf,
}

impl Default for SysHost {
    fn default() -> Self {
        SysHost {
            sys_block: PathBuf::from("/sys/block"),
            proc_mounts: PathBuf::from("/proc/mounts"),
        }
    }
}

impl SysHost {
    /// The real host, read through `/sys/block` and `/proc/mounts`.
    pub fn new() -> Self {
        Self::default()
    }

    fn sys_path(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.sys_block.clone()
        } else {
            self.sys_block.join(path)
        }
    }
}

impl HostView for SysHost {
    fn block_devices(&self) -> io::Result<Vec<String>> {
        dir_names(&self.sys_block)
    }

    fn block_device_entries(&self, dev: &str) -> io::Result<Vec<String>> {
        dir_names(&self.sys_path(dev))
    }

    fn sysfs_first_line(&self, path: &str) -> Option<String> {
        let text = fs::read_to_string(self.sys_path(path)).ok()?;
        Some(text.lines().next().unwrap_or_default().to_string())
    }

    fn sysfs_is_dir(&self, path: &str) -> bool {
        self.sys_path(path).is_dir()
    }

    fn sysfs_link(&self, dev: &str) -> Option<String> {
        let target = fs::read_link(self.sys_path(dev)).ok()?;
        Some(target.to_string_lossy().into_owned())
    }

    fn has_holders(&self, dev: &str, partition: Option<&str>) -> bool {
        let mut dir = self.sys_path(dev);
        if let Some(part) = partition {
            dir.push(part);
        }
        dir.push("holders");
        match fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_some(),
            Err(_) => false,
        }
    }

    fn is_block_device(&self, path: &str) -> bool {
        fs::metadata(path).is_ok_and(|meta| meta.file_type().is_block_device())
    }

    fn canonical_path(&self, path: &str) -> String {
        match fs::canonicalize(path) {
            Ok(resolved) => resolved.to_string_lossy().into_owned(),
            Err(_) => path.to_string(),
        }
    }

    fn proc_mounts(&self) -> io::Result<String> {
        fs::read_to_string(&self.proc_mounts)
    }

    fn udev_info(&self, dev: &str) -> io::Result<String> {
        let syspath = format!("/sys/block/{dev}");
        let args = ["info", "-p", &syspath, "--query", "all"];
        succeeded("udevadm", run_tool("udevadm", &args, TOOL_TIMEOUT)?)
    }

    fn smartctl(&self, devpath: &str, health_only: bool) -> io::Result<ToolOutput> {
        let mut args = vec!["-H"];
        if !health_only {
            args.extend(["-A", "-f", "brief"]);
        }
        args.push(devpath);
        run_tool("smartctl", &args, SMARTCTL_TIMEOUT)
    }

    fn lsblk(&self) -> io::Result<String> {
        let args = ["--json", "-o", "path,parttype,fstype"];
        succeeded("lsblk", run_tool("lsblk", &args, TOOL_TIMEOUT)?)
    }

    fn zpool_list(&self) -> io::Result<String> {
        succeeded(
            "zpool",
            run_tool("zpool", &["list", "-HPLv"], TOOL_TIMEOUT)?,
        )
    }

    fn pvs(&self) -> io::Result<String> {
        let args = ["--noheadings", "--readonly", "-o", "pv_name"];
        succeeded("pvs", run_tool("pvs", &args, TOOL_TIMEOUT)?)
    }

    fn ceph_lvs(&self) -> io::Result<String> {
        let args = [
            "-S",
            "lv_name=~^osd-",
            "-o",
            "devices,lv_name,lv_tags",
            "--noheadings",
            "--readonly",
            "--separator",
            ";",
        ];
        succeeded("lvs", run_tool("lvs", &args, TOOL_TIMEOUT)?)
    }
}

/// The names in a directory.
fn dir_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// The output of a tool that must exit with 0.
fn succeeded(tool: &str, output: ToolOutput) -> io::Result<String> {
    match output.exit_code {
        Some(0) => Ok(output.stdout),
        Some(code) => Err(io::Error::other(format!("{tool} failed: exit code {code}"))),
        None => Err(io::Error::other(format!("{tool} was killed by a signal"))),
    }
}

/// Runs `tool` (looked up in [`TOOL_DIRS`]) and collects its output,
/// killing it after `timeout`.
fn run_tool(tool: &str, args: &[&str], timeout: Duration) -> io::Result<ToolOutput> {
    let Some(program) = TOOL_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|path| path.is_file())
    else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{tool} is not installed"),
        ));
    };
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;

    // Read in a thread so a chatty tool cannot block on a full pipe while
    // we wait for it to exit.
    let stdout = child.stdout.take();
    let reader = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = stdout {
            // A read error leaves what was read so far; the exit code tells
            // whether the tool itself succeeded.
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{tool} did not finish within {} s", timeout.as_secs()),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader.join().unwrap_or_default();
    Ok(ToolOutput {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        exit_code: status.code(),
    })
}
