//! `oxve-bench`: measures the config store's write path, the idle daemon
//! and API throughput, each against a baseline of the same run, and writes
//! the figures to BENCHMARKS.md. `bench/run.sh` builds and runs it.

mod api;
mod daemon;
mod error;
mod machine;
mod report;
mod store;

use clap::Parser;
use daemon::Daemon;
use machine::{Machine, Scratch};
use report::{Outcome, Run};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The node name the daemon runs as.
const NODE: &str = "benchnode";
/// How long the daemon may settle after "ready" before idle sampling.
const SETTLE: Duration = Duration::from_secs(3);

/// Benchmarks of oxve; rewrites BENCHMARKS.md.
#[derive(Parser, Debug)]
#[command(name = "oxve-bench")]
struct Args {
    /// The release oxve binary (daemon and CLI).
    #[arg(long, default_value = "target/release/oxve")]
    oxve: PathBuf,
    /// The report to (over)write.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Puts per round in the config-store benchmark.
    #[arg(long, default_value_t = 2000)]
    puts: usize,
    /// Rounds of the config-store benchmark (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of idle sampling of the daemon.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Seconds of wrk load per API path.
    #[arg(long, default_value_t = 10)]
    wrk_secs: u64,
    /// Directory for databases and the daemon's root [default: /tmp unless
    /// it is in memory, else <target dir>/bench-scratch].
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Only the config-store benchmark (no daemon needed).
    #[arg(long)]
    store_only: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let machine = Machine::read();
    let scratch = match Scratch::choose(args.scratch.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("oxve-bench: scratch directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "scratch directory {} ({})",
        scratch.dir.display(),
        scratch.fs_type
    );
    let store = store::run(&scratch.dir, args.puts, args.rounds).map_err(|e| e.to_string());
    let (idle, api) = if args.store_only {
        let why = "skipped: run with --store-only".to_string();
        (Err(why.clone()), Err(why))
    } else {
        daemon_benchmarks(&args, &scratch)
    };
    let failed = store.is_err() || (!args.store_only && (idle.is_err() || api.is_err()));
    let run = Run {
        machine: &machine,
        scratch: &scratch,
        oxve: &args.oxve,
        node: NODE,
        store,
        idle,
        api,
    };
    let text = report::render(&run);
    if let Err(e) = std::fs::write(&args.out, &text) {
        eprintln!("oxve-bench: cannot write {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    print!("{text}");
    eprintln!("wrote {}", args.out.display());
    if failed {
        eprintln!("oxve-bench: some benchmarks could not run; see the report");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Starts the daemon in a fresh root, measures it idle, then under load.
fn daemon_benchmarks(
    args: &Args,
    scratch: &Scratch,
) -> (Outcome<daemon::IdleFigures>, Outcome<api::ApiFigures>) {
    let root = match tempfile::Builder::new()
        .prefix("oxve-bench-root-")
        .tempdir_in(&scratch.dir)
    {
        Ok(dir) => dir,
        Err(e) => {
            let why = format!(
                "cannot make the daemon's root in {}: {e}",
                scratch.dir.display()
            );
            return (Err(why.clone()), Err(why));
        }
    };
    let daemon = match Daemon::start(&args.oxve, &root.path().join("node"), NODE) {
        Ok(d) => d,
        Err(e) => {
            let why = e.to_string();
            return (Err(why.clone()), Err(why));
        }
    };
    eprintln!("sampling the idle daemon for {} s", args.idle_secs);
    let idle = daemon::measure_idle(daemon.pid, SETTLE, Duration::from_secs(args.idle_secs))
        .map_err(|e| e.to_string());
    let api = api::run(&daemon, NODE, args.wrk_secs).map_err(|e| e.to_string());
    if let Err(e) = daemon.stop() {
        eprintln!("oxve-bench: warning: {e}");
    }
    (idle, api)
}
