//! API throughput and latency: `wrk` with keep-alive over HTTPS on
//! loopback, authenticated with a ticket of an auditor made for the run.

use crate::daemon::Daemon;
use crate::error::{BenchError, Result};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use std::process::{Command, Output, Stdio};

/// The user the bench logs in as.
const USER: &str = "bench@pve";
const PASSWORD: &str = "benchpass123";
/// wrk's load: threads and open connections.
pub const THREADS: u32 = 2;
/// See [`THREADS`].
pub const CONNECTIONS: u32 = 16;

/// What wrk measured on one path.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkReport {
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Responses that were not 2xx or 3xx.
    pub non_2xx: u64,
    /// wrk's socket error line, if it printed one.
    pub socket_errors: Option<String>,
}

/// Both paths of one run.
#[derive(Debug)]
pub struct ApiFigures {
    /// `/api2/json/version`: the baseline.
    pub version: WrkReport,
    /// `/api2/json/nodes/{node}/status`.
    pub node_status: WrkReport,
    /// Seconds wrk ran per path.
    pub secs: u64,
}

/// Makes the bench user, logs in, and runs wrk for `secs` on each path.
pub fn run(daemon: &Daemon, node: &str, secs: u64) -> Result<ApiFigures> {
    daemon.cli(&["pveum", "user", "add", USER, "--password", PASSWORD])?;
    daemon.cli(&[
        "pveum",
        "acl",
        "modify",
        "/",
        "--users",
        USER,
        "--roles",
        "PVEAuditor",
    ])?;
    let base = base_url(daemon);
    let cookie = login(&base, USER, PASSWORD)?.cookie_header();
    let version = measure(&format!("{base}/version"), &cookie, secs)?;
    let node_status = measure(&format!("{base}/nodes/{node}/status"), &cookie, secs)?;
    Ok(ApiFigures {
        version,
        node_status,
        secs,
    })
}

/// The daemon's API root over HTTPS on loopback.
pub fn base_url(daemon: &Daemon) -> String {
    format!("https://127.0.0.1:{}/api2/json", daemon.port)
}

/// What `POST /access/ticket` hands a user.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The `PVEAuthCookie` value.
    pub ticket: String,
    /// The token that must accompany every write.
    pub csrf: String,
}

impl Ticket {
    /// The `Cookie:` header that carries the ticket.
    pub fn cookie_header(&self) -> String {
        format!(
            "Cookie: PVEAuthCookie={}",
            utf8_percent_encode(&self.ticket, NON_ALPHANUMERIC)
        )
    }

    /// The `CSRFPreventionToken:` header.
    pub fn csrf_header(&self) -> String {
        format!("CSRFPreventionToken: {}", self.csrf)
    }
}

/// POSTs the credentials to /access/ticket and returns the ticket.
pub fn login(base: &str, user: &str, password: &str) -> Result<Ticket> {
    let out = run_tool(
        "curl",
        Command::new("curl")
            .args(["-k", "-sS", "--max-time", "10"])
            .args(["--data-urlencode", &format!("username={user}")])
            .args(["--data-urlencode", &format!("password={password}")])
            .arg(format!("{base}/access/ticket")),
    )?;
    let body: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| BenchError::Parse {
            what: "the ticket response",
            detail: format!("{e}: {}", String::from_utf8_lossy(&out.stdout)),
        })?;
    let field = |name: &str| {
        body.pointer(&format!("/data/{name}"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| BenchError::Parse {
                what: "the ticket response",
                detail: format!("no data.{name} in {body}"),
            })
    };
    Ok(Ticket {
        ticket: field("ticket")?,
        csrf: field("CSRFPreventionToken")?,
    })
}

/// Checks that `url` answers 200 with the cookie, then runs wrk on it.
fn measure(url: &str, cookie: &str, secs: u64) -> Result<WrkReport> {
    let check = run_tool(
        "curl",
        Command::new("curl")
            .args(["-k", "-sS", "--max-time", "10", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "-H", cookie, url]),
    )?;
    let code = String::from_utf8_lossy(&check.stdout).trim().to_string();
    if code != "200" {
        return Err(BenchError::Tool {
            tool: format!("GET {url}"),
            detail: format!("answered HTTP {code}, not 200: nothing to measure"),
        });
    }
    eprintln!("wrk {secs}s on {url}");
    let out = run_tool(
        "wrk",
        Command::new("wrk")
            .arg(format!("-t{THREADS}"))
            .arg(format!("-c{CONNECTIONS}"))
            .arg(format!("-d{secs}s"))
            .args(["--latency", "-H", cookie, url]),
    )?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// Runs `command` to its end; a start failure or an unsuccessful exit is
/// an error naming `tool`.
pub fn run_tool(tool: &str, command: &mut Command) -> Result<Output> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Spawn {
            tool: tool.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(BenchError::Tool {
            tool: tool.to_string(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out)
}

/// Reads `Requests/sec`, the 50% and 99% latency lines and any errors
/// from wrk's `--latency` output.
pub fn parse_wrk(out: &str) -> Result<WrkReport> {
    let missing = |what: &str| BenchError::Parse {
        what: "wrk's output",
        detail: format!("no {what} line in:\n{out}"),
    };
    let mut requests_per_sec = None;
    let mut p50_ms = None;
    let mut p99_ms = None;
    let mut non_2xx = 0;
    let mut socket_errors = None;
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            requests_per_sec = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50_ms = parse_duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("99%") {
            p99_ms = parse_duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().unwrap_or(0);
        } else if line.starts_with("Socket errors:") {
            socket_errors = Some(line.to_string());
        }
    }
    Ok(WrkReport {
        requests_per_sec: requests_per_sec.ok_or_else(|| missing("Requests/sec"))?,
        p50_ms: p50_ms.ok_or_else(|| missing("50% latency"))?,
        p99_ms: p99_ms.ok_or_else(|| missing("99% latency"))?,
        non_2xx,
        socket_errors,
    })
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.01s`, `1.50m`) in ms.
fn parse_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Running 10s test @ https://127.0.0.1:8006/api2/json/version
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  500.00us  20.00ms   90.00%
    Req/Sec     7.30k   400.00     8.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    1.80ms
     99%    3.45ms
  145000 requests in 10.00s, 30.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 0
  Non-2xx or 3xx responses: 7
Requests/sec:  14500.12
Transfer/sec:      3.00MB
";

    #[test]
    fn parses_wrk_latency_output() {
        let report = parse_wrk(SAMPLE).expect("parsed");
        assert_eq!(report.requests_per_sec, 14500.12);
        assert!((report.p50_ms - 0.812).abs() < 1e-9);
        assert!((report.p99_ms - 3.45).abs() < 1e-9);
        assert_eq!(report.non_2xx, 7);
        assert_eq!(
            report.socket_errors.as_deref(),
            Some("Socket errors: connect 0, read 2, write 0, timeout 0")
        );
    }

    #[test]
    fn rejects_output_without_latency_distribution() {
        let without = SAMPLE.replace("99%", "98%");
        assert!(parse_wrk(&without).is_err());
    }

    #[test]
    fn converts_wrk_units() {
        assert_eq!(parse_duration_ms("2.00s"), Some(2000.0));
        assert_eq!(parse_duration_ms("1.50m"), Some(90_000.0));
        assert_eq!(parse_duration_ms("7ms"), Some(7.0));
        assert_eq!(parse_duration_ms("3.0xs"), None);
        assert_eq!(parse_duration_ms("fast"), None);
    }
}
