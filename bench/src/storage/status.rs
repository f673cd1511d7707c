//! `pvesm status` with 20 storages, the CLI process end to end, against
//! `pvesh get /version`: what any CLI call costs. Then the API call behind
//! it over one kept-alive HTTPS connection, against `GET /version`.

use super::{elapsed_ms, segment, Session};
use crate::api::run_tool;
use crate::daemon::Daemon;
use crate::error::{BenchError, Result};
use crate::stats::Latency;
use std::process::Command;
use std::time::Instant;

/// Storages defined while measuring, `local` included.
pub const STORAGES: usize = 20;

/// What the `pvesm status` benchmark measured.
#[derive(Debug)]
pub struct StatusFigures {
    /// Storages defined.
    pub storages: usize,
    /// Timed runs of each.
    pub runs: usize,
    /// `oxve pvesm status`, process start to exit.
    pub pvesm_status: Latency,
    /// `oxve pvesh get /version`, process start to exit.
    pub pvesh_version: Latency,
    /// `GET /nodes/{node}/storage` on a kept-alive connection.
    pub api_storage: Latency,
    /// `GET /version` on the same connection.
    pub api_version: Latency,
}

/// Adds storages up to [`STORAGES`], checks that all are listed and
/// active, then times `runs` runs of each command and call.
pub(super) fn run(
    daemon: &Daemon,
    session: &Session,
    node: &str,
    runs: usize,
) -> Result<StatusFigures> {
    add_storages(daemon)?;
    let table = daemon.cli(&["pvesm", "status"])?;
    let (rows, active) = count_rows(&table);
    if rows != STORAGES || active != STORAGES {
        return Err(BenchError::Tool {
            tool: "pvesm status".into(),
            detail: format!(
                "listed {rows} storages, {active} active; expected {STORAGES} active:\n{table}"
            ),
        });
    }
    let storage_path = format!("/nodes/{}/storage", segment(node));
    let listed = session.call("GET", &storage_path, &[], 10)?;
    let listed = listed.as_array().map_or(0, Vec::len);
    if listed != STORAGES {
        return Err(BenchError::Tool {
            tool: format!("GET {storage_path}"),
            detail: format!("listed {listed} storages, not {STORAGES}"),
        });
    }
    eprintln!("{runs} runs of pvesm status and pvesh get /version");
    let mut status = Vec::with_capacity(runs);
    let mut version = Vec::with_capacity(runs);
    for n in 0..runs {
        for side in [n % 2, 1 - n % 2] {
            let start = Instant::now();
            if side == 0 {
                daemon.cli(&["pvesm", "status"])?;
                status.push(elapsed_ms(start));
            } else {
                daemon.cli(&["pvesh", "get", "/version"])?;
                version.push(elapsed_ms(start));
            }
        }
    }
    let (api_storage, api_version) = kept_alive(session, &storage_path, "/version", runs)?;
    Ok(StatusFigures {
        storages: STORAGES,
        runs,
        pvesm_status: Latency::of(&mut status),
        pvesh_version: Latency::of(&mut version),
        api_storage,
        api_version,
    })
}

/// Adds `dir` storages `bench1`… under the daemon's root until there are
/// [`STORAGES`] with `local`.
fn add_storages(daemon: &Daemon) -> Result<()> {
    for n in 1..STORAGES {
        let id = format!("bench{n}");
        let dir = daemon.root().join("bench-storages").join(&id);
        std::fs::create_dir_all(&dir).map_err(BenchError::file(&dir))?;
        let path = dir.to_string_lossy();
        daemon.cli(&[
            "pvesm",
            "add",
            "dir",
            &id,
            "--path",
            &path,
            "--content",
            "images,iso",
        ])?;
    }
    Ok(())
}

/// Rows of a `pvesm status` table, and how many of them are active.
fn count_rows(table: &str) -> (usize, usize) {
    let rows: Vec<&str> = table
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let active = rows
        .iter()
        .filter(|l| l.split_whitespace().nth(2) == Some("active"))
        .count();
    (rows.len(), active)
}

/// One transfer of a curl run, from its `-w` line.
#[derive(Debug, PartialEq)]
struct Transfer {
    code: u16,
    /// New connections it opened: 0 when it reused the kept-alive one.
    connects: u32,
    ms: f64,
    url: String,
}

/// curl's `-w` for [`parse_transfers`].
const WRITE_OUT: &str = "%{http_code} %{num_connects} %{time_total} %{url_effective}\\n";

/// Times `runs` calls of `path` and of `baseline` alternately, all on one
/// curl connection; the first call, which opens it, is not counted.
fn kept_alive(
    session: &Session,
    path: &str,
    baseline: &str,
    runs: usize,
) -> Result<(Latency, Latency)> {
    let (url, base_url) = (session.url(path), session.url(baseline));
    let mut command = Command::new("curl");
    command
        .args(["-k", "-sS", "--max-time", "60"])
        .args(["-H", &session.ticket.cookie_header()])
        .args(["-w", WRITE_OUT]);
    command.args(["-o", "/dev/null", &base_url]);
    for _ in 0..runs {
        command.args(["-o", "/dev/null", &url, "-o", "/dev/null", &base_url]);
    }
    let out = run_tool("curl", &mut command)?;
    let transfers = parse_transfers(&String::from_utf8_lossy(&out.stdout))?;
    let mut ours = Vec::with_capacity(runs);
    let mut theirs = Vec::with_capacity(runs);
    for t in transfers.iter().skip(1) {
        if t.code != 200 || t.connects != 0 {
            return Err(BenchError::Tool {
                tool: format!("curl {}", t.url),
                detail: format!(
                    "HTTP {} with {} new connections: want 200 on the kept-alive one",
                    t.code, t.connects
                ),
            });
        }
        if t.url == url {
            ours.push(t.ms);
        } else {
            theirs.push(t.ms);
        }
    }
    if ours.len() != runs || theirs.len() != runs {
        return Err(BenchError::Parse {
            what: "curl's transfers",
            detail: format!(
                "{} of {url} and {} of {base_url}, expected {runs} each",
                ours.len(),
                theirs.len()
            ),
        });
    }
    Ok((Latency::of(&mut ours), Latency::of(&mut theirs)))
}

/// Reads the [`WRITE_OUT`] lines of a curl run.
fn parse_transfers(out: &str) -> Result<Vec<Transfer>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let bad = || BenchError::Parse {
                what: "curl's -w line",
                detail: format!("'{line}' is not 'CODE CONNECTS SECONDS URL'"),
            };
            let mut fields = line.split_whitespace();
            let mut next = || fields.next().ok_or_else(bad);
            let code = next()?.parse().map_err(|_| bad())?;
            let connects = next()?.parse().map_err(|_| bad())?;
            let secs: f64 = next()?.parse().map_err(|_| bad())?;
            let url = next()?.to_string();
            Ok(Transfer {
                code,
                connects,
                ms: secs * 1000.0,
                url,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_active_rows_of_the_status_table() {
        let table = "\
Name          Type     Status           Total            Used       Available        %
bench1         dir     active       263174212        26000000       237174212    9.88%
bench2         dir   inactive               0               0               0    0.00%
local          dir     active       263174212        26000000       237174212    9.88%

";
        assert_eq!(count_rows(table), (3, 2));
        assert_eq!(count_rows("Name Type Status\n"), (0, 0));
    }

    #[test]
    fn reads_curl_write_out_lines() {
        let out = "200 1 0.004512 https://127.0.0.1:8006/api2/json/version\n\
                   200 0 0.000830 https://127.0.0.1:8006/api2/json/nodes/n/storage\n";
        let t = parse_transfers(out).expect("parsed");
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].code, t[0].connects), (200, 1));
        assert!((t[1].ms - 0.83).abs() < 1e-9);
        assert_eq!(t[1].url, "https://127.0.0.1:8006/api2/json/nodes/n/storage");
        assert!(parse_transfers("200 0 fast https://x\n").is_err());
        assert!(parse_transfers("200 0 0.1\n").is_err());
    }

    #[test]
    fn write_out_has_one_line_per_transfer() {
        assert!(WRITE_OUT.ends_with("\\n"));
        assert_eq!(WRITE_OUT.split_whitespace().count(), 4);
    }
}
