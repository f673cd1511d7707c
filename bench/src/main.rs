//! `oxve-bench`: measures the config store's write path, the idle daemon,
//! API throughput, storage operations, containers and VMs, each against a
//! baseline of the same run, and writes the figures to BENCHMARKS.md.
//! `bench/run.sh` builds and runs it.

mod api;
mod daemon;
mod error;
mod lxc;
mod machine;
mod qemu;
mod report;
mod stats;
mod storage;
mod store;

use clap::Parser;
use daemon::Daemon;
use lxc::LxcFigures;
use machine::{Machine, Scratch};
use qemu::QemuFigures;
use report::{Outcome, Run};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use storage::StorageFigures;

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
    /// Skip the storage benchmarks (upload, linked clones, pvesm status).
    #[arg(long)]
    no_storage: bool,
    /// MiB of the file uploaded (and copied with `cp`) in the storage benchmark.
    #[arg(long, default_value_t = 1024)]
    upload_mib: u64,
    /// Linked clones timed per storage type (and as many by hand).
    #[arg(long, default_value_t = 20)]
    clones: usize,
    /// Timed runs of `pvesm status` (and as many of its baselines).
    #[arg(long, default_value_t = 20)]
    status_runs: usize,
    /// Skip the container benchmarks (start, create, linked clone, parallel creates).
    #[arg(long)]
    no_lxc: bool,
    /// Container creates fired at once in the parallel-create benchmark.
    #[arg(long, default_value_t = 20)]
    lxc_parallel: usize,
    /// Skip the VM benchmarks (start, linked and full clones, parallel clones).
    #[arg(long)]
    no_qemu: bool,
    /// Linked VM clones fired at once in the parallel-clone benchmark.
    #[arg(long, default_value_t = 20)]
    qemu_parallel: usize,
}

impl Args {
    /// Why the storage benchmarks do not run, if they do not.
    fn storage_skipped(&self) -> Option<&'static str> {
        if self.store_only {
            Some("skipped: run with --store-only")
        } else if self.no_storage {
            Some("skipped: run with --no-storage")
        } else {
            None
        }
    }

    /// Why the container benchmarks do not run, if they do not.
    fn lxc_skipped(&self) -> Option<&'static str> {
        if self.store_only {
            Some("skipped: run with --store-only")
        } else if self.no_lxc {
            Some("skipped: run with --no-lxc")
        } else {
            None
        }
    }

    /// Why the VM benchmarks do not run, if they do not.
    fn qemu_skipped(&self) -> Option<&'static str> {
        if self.store_only {
            Some("skipped: run with --store-only")
        } else if self.no_qemu {
            Some("skipped: run with --no-qemu")
        } else {
            None
        }
    }

    /// The report's sections this run skipped on request, with the option
    /// that skipped them: they keep the previous report's figures.
    fn skipped_sections(&self) -> Vec<(&'static str, &'static str)> {
        let mut skipped = Vec::new();
        if self.store_only {
            for heading in [
                "Daemon: idle",
                "API over HTTPS",
                "Storage",
                "Containers",
                "Virtual machines",
            ] {
                skipped.push((heading, "--store-only"));
            }
        }
        for (off, heading, option) in [
            (self.no_storage, "Storage", "--no-storage"),
            (self.no_lxc, "Containers", "--no-lxc"),
            (self.no_qemu, "Virtual machines", "--no-qemu"),
        ] {
            if off && !self.store_only {
                skipped.push((heading, option));
            }
        }
        skipped
    }

    fn storage_plan(&self) -> storage::Plan {
        storage::Plan {
            upload_mib: self.upload_mib,
            clones: self.clones,
            status_runs: self.status_runs,
        }
    }
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
    let daemon_run = if args.store_only {
        DaemonRun::failed("skipped: run with --store-only")
    } else {
        daemon_benchmarks(&args, &scratch)
    };
    let storage = match args.storage_skipped() {
        Some(why) => StorageFigures::skipped(why),
        None => {
            let (clone_btrfs, clone_dir) = storage::clones(&scratch.dir, args.storage_plan());
            StorageFigures {
                upload: daemon_run.upload,
                clone_btrfs,
                clone_dir,
                status: daemon_run.status,
            }
        }
    };
    let failed = store.is_err()
        || (!args.store_only && (daemon_run.idle.is_err() || daemon_run.api.is_err()))
        || (args.storage_skipped().is_none() && !storage.complete())
        || (args.lxc_skipped().is_none() && !daemon_run.lxc.complete())
        || (args.qemu_skipped().is_none() && !daemon_run.qemu.complete());
    let run = Run {
        machine: &machine,
        scratch: &scratch,
        oxve: &args.oxve,
        node: NODE,
        store,
        idle: daemon_run.idle,
        api: daemon_run.api,
        storage,
        lxc: daemon_run.lxc,
        qemu: daemon_run.qemu,
    };
    let mut text = report::render(&run);
    if let Ok(previous) = std::fs::read_to_string(&args.out) {
        text = report::keep_skipped(&text, &previous, &args.skipped_sections());
    }
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

/// What the benchmarks that need the daemon produced.
struct DaemonRun {
    idle: Outcome<daemon::IdleFigures>,
    api: Outcome<api::ApiFigures>,
    upload: Outcome<storage::UploadFigures>,
    status: Outcome<storage::StatusFigures>,
    lxc: LxcFigures,
    qemu: QemuFigures,
}

impl DaemonRun {
    /// Nothing measured, all for the same reason.
    fn failed(why: &str) -> DaemonRun {
        DaemonRun {
            idle: Err(why.to_string()),
            api: Err(why.to_string()),
            upload: Err(why.to_string()),
            status: Err(why.to_string()),
            lxc: LxcFigures::skipped(why),
            qemu: QemuFigures::skipped(why),
        }
    }
}

/// Starts the daemon in a fresh root, measures it idle, then under load,
/// then (unless skipped) its storage operations, containers and VMs.
fn daemon_benchmarks(args: &Args, scratch: &Scratch) -> DaemonRun {
    let root = match tempfile::Builder::new()
        .prefix("oxve-bench-root-")
        .tempdir_in(&scratch.dir)
    {
        Ok(dir) => dir,
        Err(e) => {
            return DaemonRun::failed(&format!(
                "cannot make the daemon's root in {}: {e}",
                scratch.dir.display()
            ))
        }
    };
    let daemon = match Daemon::start(&args.oxve, &root.path().join("node"), NODE) {
        Ok(d) => d,
        Err(e) => return DaemonRun::failed(&e.to_string()),
    };
    eprintln!("sampling the idle daemon for {} s", args.idle_secs);
    let idle = daemon::measure_idle(daemon.pid, SETTLE, Duration::from_secs(args.idle_secs))
        .map_err(|e| e.to_string());
    let api = api::run(&daemon, NODE, args.wrk_secs).map_err(|e| e.to_string());
    let (upload, status) = match args.storage_skipped() {
        Some(why) => (Err(why.to_string()), Err(why.to_string())),
        None => storage::with_daemon(&daemon, NODE, &scratch.dir, args.storage_plan()),
    };
    let lxc = match args.lxc_skipped() {
        Some(why) => LxcFigures::skipped(why),
        None => lxc::with_daemon(
            &daemon,
            NODE,
            lxc::Plan {
                parallel: args.lxc_parallel,
            },
        ),
    };
    let qemu = match args.qemu_skipped() {
        Some(why) => QemuFigures::skipped(why),
        None => qemu::with_daemon(
            &daemon,
            NODE,
            qemu::Plan {
                parallel: args.qemu_parallel,
            },
        ),
    };
    if let Err(e) = daemon.stop() {
        eprintln!("oxve-bench: warning: {e}");
    }
    DaemonRun {
        idle,
        api,
        upload,
        status,
        lxc,
        qemu,
    }
}
