//! The daemon under test: started from the release binary on a free
//! loopback port in its own root and network namespace, stopped with
//! SIGTERM, and sampled from /proc while idle.

use crate::error::{BenchError, Result};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long the daemon may take to say it is ready (first start makes keys).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running daemon; dropping it stops it and removes its namespace.
pub struct Daemon {
    child: Child,
    bin: PathBuf,
    root: PathBuf,
    log: PathBuf,
    netns: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Its HTTPS port on 127.0.0.1.
    pub port: u16,
}

impl Daemon {
    /// Starts `bin daemon` with root `root` as node `node` and waits until
    /// it prints its "ready" line.
    pub fn start(bin: &Path, root: &Path, node: &str) -> Result<Daemon> {
        if !bin.is_file() {
            return Err(BenchError::Daemon(format!(
                "no daemon binary at {}: build it with `cargo build --release -p oxve` \
                 (bench/run.sh does)",
                bin.display()
            )));
        }
        let port = free_port()?;
        let netns = format!("oxveb-{}", std::process::id());
        std::fs::create_dir_all(root).map_err(BenchError::file(root))?;
        let log = root.with_extension("log");
        let stderr = File::create(&log).map_err(BenchError::file(&log))?;
        let child = Command::new(bin)
            .arg("daemon")
            .arg("--root")
            .arg(root)
            .args(["--port", &port.to_string(), "--listen", "127.0.0.1"])
            .args(["--netns", &netns, "--node", node])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| BenchError::Spawn {
                tool: bin.display().to_string(),
                source,
            })?;
        let mut daemon = Daemon {
            pid: child.id(),
            child,
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            log,
            netns,
            port,
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    /// The daemon's root directory (removed with the bench's scratch).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs the CLI (`bin ARGS` with `OXVE_ROOT` set) against this daemon
    /// and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(args)
            .env("OXVE_ROOT", &self.root)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| BenchError::Spawn {
                tool: self.bin.display().to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(BenchError::Tool {
                tool: format!("oxve {}", args.join(" ")),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the daemon with SIGTERM and removes its namespace.
    pub fn stop(mut self) -> Result<()> {
        self.shut_down()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let stdout = self
            .child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Daemon("its stdout was not captured".into()))?;
        let (lines, ready) = mpsc::channel();
        // Reads on after "ready" too, so the daemon never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if line.contains("ready") {
                    let _ = lines.send(line);
                }
            }
        });
        match ready.recv_timeout(READY_TIMEOUT) {
            Ok(line) => {
                eprintln!("daemon pid {}: {line}", self.pid);
                Ok(())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(BenchError::Daemon(format!(
                "not ready after {}s; its log {} ends:\n{}",
                READY_TIMEOUT.as_secs(),
                self.log.display(),
                self.log_tail()
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(BenchError::Daemon(format!(
                    "exited before it was ready ({status}); its log {} ends:\n{}",
                    self.log.display(),
                    self.log_tail()
                )))
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn shut_down(&mut self) -> Result<()> {
        let result = self.terminate();
        // The namespace may not exist if the daemon failed early: ignore that.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stderr(Stdio::null())
            .status();
        result
    }

    fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while sent && Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(BenchError::Daemon(format!(
            "did not stop within {}s of SIGTERM; killed",
            STOP_TIMEOUT.as_secs()
        )))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.shut_down();
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(BenchError::file("127.0.0.1:0 (free port)"))?;
    let addr = listener
        .local_addr()
        .map_err(BenchError::file("127.0.0.1:0 (free port)"))?;
    Ok(addr.port())
}

/// What the idle daemon cost.
#[derive(Debug)]
pub struct IdleFigures {
    /// Length of the sampled window.
    pub window: Duration,
    /// Mean resident set size over the window, in MiB.
    pub rss_mean_mib: f64,
    /// Largest resident set size seen, in MiB.
    pub rss_max_mib: f64,
    /// CPU time used over the window, as a percentage of one core.
    pub cpu_percent: f64,
}

/// Waits `settle`, then samples `pid` once a second for `window`.
pub fn measure_idle(pid: u32, settle: Duration, window: Duration) -> Result<IdleFigures> {
    thread::sleep(settle);
    let ticks_per_sec = clock_ticks();
    let start = Instant::now();
    let cpu_start = cpu_ticks(pid)?;
    let mut rss = vec![rss_kib(pid)?];
    while start.elapsed() < window {
        let left = window.saturating_sub(start.elapsed());
        thread::sleep(left.min(Duration::from_secs(1)));
        rss.push(rss_kib(pid)?);
    }
    let cpu_end = cpu_ticks(pid)?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_secs = cpu_end.saturating_sub(cpu_start) as f64 / ticks_per_sec;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(IdleFigures {
        window,
        rss_mean_mib: mib(rss.iter().sum::<u64>()) / rss.len() as f64,
        rss_max_mib: rss.iter().copied().max().map(mib).unwrap_or(0.0),
        cpu_percent: cpu_secs / elapsed * 100.0,
    })
}

fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(BenchError::file(&path))?;
    parse_vm_rss(&text)
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(BenchError::file(&path))?;
    parse_stat_cpu(&text)
}

/// `VmRSS` of a /proc/PID/status, in KiB.
fn parse_vm_rss(status: &str) -> Result<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| BenchError::Parse {
            what: "/proc/PID/status",
            detail: "no VmRSS line in kB".into(),
        })
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat, in clock ticks;
/// for a process they cover all its threads.
fn parse_stat_cpu(stat: &str) -> Result<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted from after its last ')', which is followed by field 3.
    let bad = |detail: &str| BenchError::Parse {
        what: "/proc/PID/stat",
        detail: detail.into(),
    };
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| bad("no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad("utime/stime missing"))
    };
    Ok(field(14)? + field(15)?)
}

/// Clock ticks per second (`getconf CLK_TCK`; Linux uses 100 everywhere).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t: &f64| *t > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\toxve\nVmPeak:\t  99 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status).expect("rss"), 12345);
        assert!(parse_vm_rss("Name:\toxve\n").is_err());
    }

    #[test]
    fn reads_utime_and_stime_past_odd_command_names() {
        let stat = "4242 (ox ve) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu(stat).expect("ticks"), 22);
        assert!(parse_stat_cpu("4242 (oxve) S 1").is_err());
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).expect("own rss") > 0);
        cpu_ticks(pid).expect("own cpu ticks");
    }
}
