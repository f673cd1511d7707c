//! BENCHMARKS.md: every figure next to its same-run baseline and target.

use crate::api::{ApiFigures, WrkReport, CONNECTIONS, THREADS};
use crate::daemon::IdleFigures;
use crate::machine::{Machine, Scratch};
use crate::store::StoreFigures;
use std::fmt::Write;
use std::path::Path;

/// A section's figures, or why it has none.
pub type Outcome<T> = Result<T, String>;

/// Everything one run produced.
pub struct Run<'a> {
    /// The machine.
    pub machine: &'a Machine,
    /// Where files were written.
    pub scratch: &'a Scratch,
    /// The daemon binary measured.
    pub oxve: &'a Path,
    /// The node name the daemon ran as.
    pub node: &'a str,
    /// Config-store write path.
    pub store: Outcome<StoreFigures>,
    /// Idle daemon.
    pub idle: Outcome<IdleFigures>,
    /// API over HTTPS.
    pub api: Outcome<ApiFigures>,
}

const TABLE_HEAD: &str =
    "| figure | value | baseline | ratio | target |\n|---|---:|---:|---:|---|\n";

/// Renders the whole file.
pub fn render(run: &Run<'_>) -> String {
    let m = run.machine;
    let s = run.scratch;
    let mut out = String::new();
    let _ = write!(
        out,
        "# Benchmarks\n\n\
         Reproduce with `bench/run.sh` (it builds the release daemon and the `oxve-bench` \
         binary in `bench/`, runs every benchmark and rewrites this file). Speed is measured, \
         not asserted: each ratio is against a baseline measured in the same run on the same \
         machine, so ratios carry over between machines better than the absolute figures.\n\n\
         - Date: {date}\n\
         - Machine: {cores} cores, {cpu}, Linux {kernel} (shared with other work: expect noise)\n\
         - SQLite: {sqlite} (bundled, as in oxve-config)\n\
         - Daemon binary: `{oxve}`\n\
         - Scratch directory: `{dir}` ({fs}, {same} the checkout)\n",
        date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        cores = m.cores,
        cpu = m.cpu_model,
        kernel = m.kernel,
        sqlite = m.sqlite,
        oxve = run.oxve.display(),
        dir = s.dir.display(),
        fs = s.fs_type,
        same = if s.same_device_as_checkout {
            "same device as"
        } else {
            "not the same device as"
        },
    );
    out.push_str("\n## Config store: write path\n\n");
    match &run.store {
        Ok(f) => store_section(&mut out, f),
        Err(why) => not_measured(&mut out, why),
    }
    out.push_str("\n## Daemon: idle\n\n");
    match &run.idle {
        Ok(f) => idle_section(&mut out, f),
        Err(why) => not_measured(&mut out, why),
    }
    out.push_str("\n## API over HTTPS\n\n");
    match &run.api {
        Ok(f) => api_section(&mut out, f, run.node),
        Err(why) => not_measured(&mut out, why),
    }
    out
}

fn store_section(out: &mut String, f: &StoreFigures) {
    let per_put = |rate: f64| if rate > 0.0 { 1e6 / rate } else { 0.0 };
    out.push_str(TABLE_HEAD);
    let _ = writeln!(
        out,
        "| puts/s | {} | {} (raw rusqlite) | {:.2} | — |",
        thousands(f.store_rate),
        thousands(f.sqlite_rate),
        ratio(f.store_rate, f.sqlite_rate)
    );
    let _ = writeln!(
        out,
        "| µs per put | {:.0} | {:.0} (raw rusqlite) | {:.2} | — |",
        per_put(f.store_rate),
        per_put(f.sqlite_rate),
        ratio(per_put(f.store_rate), per_put(f.sqlite_rate))
    );
    let _ = writeln!(
        out,
        "\nMeasured: {puts} puts of distinct keys (`nodes/benchnode/qemu-server/N.conf`, a \
         ~250-byte guest config each) through `oxve_config::Store::apply(Op::Put {{ expect: \
         Expect::Any }})`, against the baseline of raw rusqlite `INSERT OR REPLACE` into a table \
         of the same shape with the same pragmas (WAL, `synchronous=FULL`), one immediate \
         transaction per insert. Median of {rounds} rounds, each in a fresh database under the \
         scratch directory, alternating which goes first. Both wait for an fsync per write, so \
         the ratio (1.00 = no overhead) shows what the store adds: key validation, reading and \
         advancing the applied index, and the change broadcast.",
        puts = f.puts,
        rounds = f.rounds,
    );
}

fn idle_section(out: &mut String, f: &IdleFigures) {
    let secs = f.window.as_secs();
    out.push_str(TABLE_HEAD);
    let _ = writeln!(
        out,
        "| RSS, mean over {secs} s | {:.1} MiB | — | — | ≤ 40 MiB ({}) |",
        f.rss_mean_mib,
        verdict(f.rss_mean_mib <= 40.0)
    );
    let _ = writeln!(
        out,
        "| RSS, max | {:.1} MiB | — | — | ≤ 40 MiB ({}) |",
        f.rss_max_mib,
        verdict(f.rss_max_mib <= 40.0)
    );
    let _ = writeln!(
        out,
        "| CPU, % of one core | {:.2} % | — | — | ≤ 1 % ({}) |",
        f.cpu_percent,
        verdict(f.cpu_percent <= 1.0)
    );
    let _ = writeln!(
        out,
        "\nMeasured: the daemon on a fresh root, listening on 127.0.0.1 with its own \
         network namespace, untouched: 3 s after its \"ready\" line, `VmRSS` from \
         `/proc/PID/status` once a second and `utime + stime` (all threads) from \
         `/proc/PID/stat` over {secs} s. Absolute figures: an idle daemon has no baseline."
    );
}

fn api_section(out: &mut String, f: &ApiFigures, node: &str) {
    let v = &f.version;
    let n = &f.node_status;
    let status = format!("`/nodes/{node}/status`");
    out.push_str(TABLE_HEAD);
    let _ = writeln!(
        out,
        "| `/version` req/s | {} | — | — | ≥ 5,000 ({}) |",
        thousands(v.requests_per_sec),
        verdict(v.requests_per_sec >= 5000.0)
    );
    let _ = writeln!(
        out,
        "| `/version` p50 | {} | — | — | ≤ 2 ms ({}) |",
        ms(v.p50_ms),
        verdict(v.p50_ms <= 2.0)
    );
    let _ = writeln!(out, "| `/version` p99 | {} | — | — | — |", ms(v.p99_ms));
    let rows: [(&str, f64, f64, Formatter); 3] = [
        ("req/s", n.requests_per_sec, v.requests_per_sec, thousands),
        ("p50", n.p50_ms, v.p50_ms, ms),
        ("p99", n.p99_ms, v.p99_ms, ms),
    ];
    for (figure, value, baseline, show) in rows {
        let _ = writeln!(
            out,
            "| {status} {figure} | {} | {} (`/version`) | {:.2} | — |",
            show(value),
            show(baseline),
            ratio(value, baseline)
        );
    }
    let _ = writeln!(
        out,
        "\nMeasured: `wrk -t{THREADS} -c{CONNECTIONS} -d{secs}s --latency` per path over HTTPS \
         with keep-alive on 127.0.0.1, as `bench@pve` with the PVEAuditor role on `/` \
         (a `PVEAuthCookie` ticket from `POST /access/ticket`), each path checked to answer 200 \
         first. `/version` is the baseline: the cheapest authenticated call, so the ratio is \
         what reading the node's status costs on top of TLS, HTTP and the ticket check. wrk \
         shares the machine's cores with the daemon, so the absolute figures are a floor.",
        secs = f.secs
    );
    for (path, report) in [("`/version`", v), (status.as_str(), n)] {
        if let Some(problem) = problems(report) {
            let _ = writeln!(out, "\nWarning for {path}: {problem}.");
        }
    }
}

/// wrk's complaints about a run, if any.
fn problems(report: &WrkReport) -> Option<String> {
    let mut found = Vec::new();
    if report.non_2xx > 0 {
        found.push(format!("{} responses were not 2xx/3xx", report.non_2xx));
    }
    if let Some(errors) = &report.socket_errors {
        found.push(errors.clone());
    }
    (!found.is_empty()).then(|| found.join("; "))
}

fn not_measured(out: &mut String, why: &str) {
    let _ = writeln!(out, "Not measured in this run:\n\n```\n{}\n```", why.trim());
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn ratio(value: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        value / baseline
    } else {
        f64::NAN
    }
}

/// Renders a figure for the table.
type Formatter = fn(f64) -> String;

fn ms(value: f64) -> String {
    format!("{value:.2} ms")
}

/// A rounded count with thousands separators: `12,345`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_thousands() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.6), "1,235");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    #[test]
    fn failed_sections_say_why() {
        let machine = Machine::read();
        let scratch = Scratch {
            dir: "/tmp".into(),
            fs_type: "ext4".into(),
            same_device_as_checkout: true,
        };
        let run = Run {
            machine: &machine,
            scratch: &scratch,
            oxve: Path::new("target/release/oxve"),
            node: "benchnode",
            store: Err("disk full".into()),
            idle: Err("daemon: exited".into()),
            api: Err("daemon: exited".into()),
        };
        let text = render(&run);
        assert!(text.starts_with("# Benchmarks\n"));
        assert!(text.contains("`bench/run.sh`"));
        assert!(text.contains("Not measured in this run:\n\n```\ndisk full\n```"));
    }
}
