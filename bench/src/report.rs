//! BENCHMARKS.md: every figure next to its same-run baseline and target.

use crate::api::{ApiFigures, WrkReport, CONNECTIONS, THREADS};
use crate::daemon::IdleFigures;
use crate::lxc::{CreateFigures, LinkedCloneFigures, LxcFigures, ParallelFigures, StartFigures};
use crate::machine::{Machine, Scratch};
use crate::qemu::QemuFigures;
use crate::storage::{CloneFigures, StatusFigures, StorageFigures, UploadFigures};
use crate::store::StoreFigures;
use std::fmt::Write;
use std::path::Path;

mod previous;
mod qemu;

pub use previous::keep_skipped;

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
    /// Storage operations.
    pub storage: StorageFigures,
    /// Containers.
    pub lxc: LxcFigures,
    /// Virtual machines.
    pub qemu: QemuFigures,
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
    storage_section(&mut out, &run.storage, run.node, &run.scratch.fs_type);
    containers_section(&mut out, &run.lxc, run.node);
    qemu::section(&mut out, &run.qemu, run.node);
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

fn storage_section(out: &mut String, f: &StorageFigures, node: &str, scratch_fs: &str) {
    out.push_str("\n## Storage\n\n### Upload over HTTPS\n\n");
    match &f.upload {
        Ok(u) => upload_section(out, u, node),
        Err(why) => not_measured(out, why),
    }
    out.push_str("\n### Linked clone\n\n");
    clone_section(out, &f.clone_btrfs, &f.clone_dir, scratch_fs);
    out.push_str("\n### `pvesm status`\n\n");
    match &f.status {
        Ok(s) => status_section(out, s, node),
        Err(why) => not_measured(out, why),
    }
}

fn upload_section(out: &mut String, f: &UploadFigures, node: &str) {
    let share = ratio(f.upload_mb_s, f.cp_mb_s);
    out.push_str(TABLE_HEAD);
    let _ = writeln!(
        out,
        "| upload MB/s | {:.0} | {:.0} (`cp` + `sync`) | {:.2} | ≥ 0.60 ({}) |",
        f.upload_mb_s,
        f.cp_mb_s,
        share,
        verdict(share >= 0.60)
    );
    let _ = writeln!(
        out,
        "\nMeasured: a {mib} MiB file of incompressible bytes in the scratch directory, sent \
         as a multipart `POST /nodes/{node}/storage/local/upload` (`content=iso`, the file as \
         `filename`) by `curl` over HTTPS on 127.0.0.1, as `benchstore@pve` with \
         PVEDatastoreAdmin on `/storage` (ticket and CSRFPreventionToken); timed until the \
         returned task (`imgcopy`) reports `stopped` with exit status OK, polled every 10 ms. \
         Baseline: `cp` of the same file into the same directory (`{dir}`) followed by \
         `sync` of the copy, so both end with the data on disk. Median of {rounds} rounds \
         each, alternating which goes first; the upload is deleted through the API (and its \
         task awaited) between rounds. MB/s are 10⁶ bytes per second; the ratio is the \
         share of `cp`'s throughput the upload reaches.",
        mib = f.mib,
        dir = f.dir.display(),
        rounds = f.rounds,
    );
}

fn clone_section(
    out: &mut String,
    btrfs: &Outcome<CloneFigures>,
    dir: &Outcome<CloneFigures>,
    scratch_fs: &str,
) {
    let kinds = [
        ("btrfs", "`btrfs subvolume snapshot`", btrfs),
        ("qcow2 (dir)", "`qemu-img create -b`", dir),
    ];
    if kinds.iter().any(|(_, _, f)| f.is_ok()) {
        out.push_str(TABLE_HEAD);
    }
    for (kind, tool, figures) in &kinds {
        let Ok(f) = figures else { continue };
        let _ = writeln!(
            out,
            "| {kind} linked clone p50 | {} | {} ({tool}) | {:.2} | ≤ 100 ms ({}) |",
            ms(f.oxve.p50_ms),
            ms(f.baseline.p50_ms),
            ratio(f.oxve.p50_ms, f.baseline.p50_ms),
            verdict(f.oxve.p50_ms <= 100.0)
        );
        let _ = writeln!(
            out,
            "| {kind} linked clone p90 | {} | {} ({tool}) | {:.2} | — |",
            ms(f.oxve.p90_ms),
            ms(f.baseline.p90_ms),
            ratio(f.oxve.p90_ms, f.baseline.p90_ms)
        );
    }
    for (kind, _, figures) in &kinds {
        if let Err(why) = figures {
            let _ = write!(out, "\n{kind}: ");
            not_measured(out, why);
        }
    }
    let clones = [btrfs, dir]
        .iter()
        .find_map(|f| f.as_ref().ok().map(|f| f.clones))
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "\nMeasured: the `oxve-storage` plugins called directly, as the daemon calls them: \
         a 1 GiB image of guest 100 (`alloc_image`), made a base image (`create_base`), then \
         {clones} calls of `clone_image(base, vmid, \"vm-<vmid>-disk-0\")` for guests 101, \
         102, …, each timed. btrfs: a `btrfs` storage on a fresh 1 GiB btrfs file system in \
         an image file in the scratch directory, loop-mounted (removed afterwards); baseline \
         `btrfs subvolume snapshot` of the base's subvolume run by hand. qcow2: a `dir` \
         storage in the scratch directory ({scratch_fs}); baseline `qemu-img create -f qcow2 \
         -b <base> -F qcow2 <new>` run by hand. As many by hand as by oxve, interleaved and \
         alternating which goes first; median and 90th percentile (nearest rank). Each \
         plugin runs the same tool once, so the ratio is what the plugin adds around it."
    );
}

fn status_section(out: &mut String, f: &StatusFigures, node: &str) {
    let storage = format!("`GET /nodes/{node}/storage`");
    out.push_str(TABLE_HEAD);
    let _ = writeln!(
        out,
        "| `pvesm status` p50 | {} | {} (`pvesh get /version`) | {:.2} | ≤ 50 ms ({}) |",
        ms(f.pvesm_status.p50_ms),
        ms(f.pvesh_version.p50_ms),
        ratio(f.pvesm_status.p50_ms, f.pvesh_version.p50_ms),
        verdict(f.pvesm_status.p50_ms <= 50.0)
    );
    latency_row(
        out,
        "`pvesm status` p90",
        f.pvesm_status.p90_ms,
        f.pvesh_version.p90_ms,
        "`pvesh get /version`",
    );
    latency_row(
        out,
        &format!("{storage} p50"),
        f.api_storage.p50_ms,
        f.api_version.p50_ms,
        "`GET /version`",
    );
    latency_row(
        out,
        &format!("{storage} p90"),
        f.api_storage.p90_ms,
        f.api_version.p90_ms,
        "`GET /version`",
    );
    let _ = writeln!(
        out,
        "\nMeasured: {storages} storages (`local` and {more} `dir` storages added with \
         `oxve pvesm add dir benchN --path … --content images,iso`), all listed active; then \
         {runs} runs each of `oxve pvesm status` and the baseline `oxve pvesh get /version`, \
         each the CLI process from start to exit (with `OXVE_ROOT`, over the daemon's Unix \
         socket), alternating which goes first. The baseline is what any CLI call costs \
         (process start, runtime, connection), so the ratio is what listing {storages} \
         storages adds. The API call alone: {storage} and `GET /version` alternately, {runs} \
         each on one kept-alive HTTPS connection of one `curl` (as `benchstore@pve`), \
         the call that opens the connection not counted.",
        storages = f.storages,
        more = f.storages.saturating_sub(1),
        runs = f.runs,
    );
}

fn containers_section(out: &mut String, f: &LxcFigures, node: &str) {
    out.push_str("\n## Containers\n\n### Start\n\n");
    match &f.start {
        Ok(s) => start_section(out, s, node),
        Err(why) => not_measured(out, why),
    }
    out.push_str("\n### Create from a template\n\n");
    match &f.create {
        Ok(c) => create_section(out, c, node),
        Err(why) => not_measured(out, why),
    }
    out.push_str("\n### Linked clone\n\n");
    match &f.clone {
        Ok(c) => linked_clone_section(out, c, node),
        Err(why) => not_measured(out, why),
    }
    out.push_str("\n### Parallel creates\n\n");
    match &f.parallel {
        Ok(p) => parallel_section(out, p, node),
        Err(why) => not_measured(out, why),
    }
}

fn start_section(out: &mut String, f: &StartFigures, node: &str) {
    let share = ratio(f.api.p50_ms, f.raw.p50_ms);
    let baseline = "`lxc-start -d` + `lxc-wait`";
    out.push_str(TABLE_HEAD);
    let _ = writeln!(
        out,
        "| CT start p50, API call to init running | {} | {} ({baseline}) | {:.2} | ratio ≤ 1.50 ({}) |",
        ms(f.api.p50_ms),
        ms(f.raw.p50_ms),
        share,
        verdict(share <= 1.5)
    );
    latency_row(out, "CT start p90", f.api.p90_ms, f.raw.p90_ms, baseline);
    let _ = writeln!(
        out,
        "\nMeasured: CT {vmid} (busybox template, subvolume rootfs `local:0` on the `dir` \
         storage `local`, unprivileged, 128 MiB, one NIC on a bridge `{bridge}` made in the \
         daemon's network namespace), started through `POST /nodes/{node}/lxc/{vmid}/status/start` \
         on one kept-alive HTTPS connection (a rustls client in the bench, as `benchct@pve` \
         with PVEAdmin on `/`), timed from sending the call until its task reports `stopped` \
         with exit status OK (polled every 5 ms on the same connection) and `lxc-wait -s \
         RUNNING` returned. Baseline: the same container with the LXC config oxve generated \
         for it (kept in `<root>/run/oxve/lxc/{vmid}/config` from an untimed warm-up start \
         through the API), its subvolume bind-mounted at the rootfs first as oxve mounts it \
         (untimed), then `lxc-start -d -n {vmid} -P <root>/run/oxve/lxc` and `lxc-wait -s \
         RUNNING`, both in the daemon's network namespace as the daemon runs them. After \
         every start the container is killed (`lxc-stop -k`) and unmounted. {rounds} starts \
         of each, alternating which goes first; median and 90th percentile (nearest rank). \
         The ratio is what the API start adds around `lxc-start`: the task, the checks, \
         the mounts, the OS setup before start and the generated config.",
        vmid = crate::lxc::START_VMID,
        bridge = crate::lxc::BRIDGE,
        rounds = f.rounds,
    );
}

fn create_section(out: &mut String, f: &CreateFigures, node: &str) {
    out.push_str(TABLE_HEAD);
    latency_row(
        out,
        "CT create p50",
        f.api.p50_ms,
        f.tar.p50_ms,
        "`tar -xpf`",
    );
    latency_row(
        out,
        "CT create p90",
        f.api.p90_ms,
        f.tar.p90_ms,
        "`tar -xpf`",
    );
    let _ = writeln!(
        out,
        "\nMeasured: `POST /nodes/{node}/lxc` (`ostemplate=local:vztmpl/{template}`, \
         {kib} KiB; `rootfs=local:0`, a subvolume; hostname, one NIC on the bridge, 128 MiB, \
         no swap; unprivileged) on one kept-alive HTTPS connection, timed until its task \
         (`vzcreate`) reports `stopped` with exit status OK, polled every 5 ms; each CT is \
         destroyed through the API afterwards (untimed). Baseline: `tar -xpf` of the same \
         archive into an empty directory on the same file system. Besides extracting (with \
         upstream's options: numeric owners, ACLs, xattrs, no `/dev`), a create allocates \
         the subvolume and bind-mounts it, shifts every owner into the unprivileged id range, \
         detects the architecture and OS type, writes the OS setup (hostname, network, \
         DNS) and stores the config; with a template this small those fixed costs dominate \
         the ratio. {rounds} of each, alternating which goes first; median and 90th \
         percentile (nearest rank).",
        template = f.template,
        kib = thousands(f.template_kib as f64),
        rounds = f.rounds,
    );
}

fn linked_clone_section(out: &mut String, f: &LinkedCloneFigures, node: &str) {
    let tool = "`btrfs subvolume snapshot`";
    out.push_str(TABLE_HEAD);
    let _ = writeln!(
        out,
        "| CT linked clone p50 | {} | {} ({tool}) | {:.2} | ≤ 100 ms ({}) |",
        ms(f.api.p50_ms),
        ms(f.snapshot.p50_ms),
        ratio(f.api.p50_ms, f.snapshot.p50_ms),
        verdict(f.api.p50_ms <= 100.0)
    );
    latency_row(
        out,
        "CT linked clone p90",
        f.api.p90_ms,
        f.snapshot.p90_ms,
        tool,
    );
    let _ = writeln!(
        out,
        "\nMeasured: a `btrfs` storage `{storage}` on a fresh 1 GiB btrfs file system in an \
         image file below the daemon's root, loop-mounted (removed afterwards); CT {vmid} \
         created on it (`rootfs={storage}:0`, otherwise as above) and made a template \
         (`POST /nodes/{node}/lxc/{vmid}/template`: its rootfs becomes a base subvolume). \
         Then {clones} calls of `POST /nodes/{node}/lxc/{vmid}/clone` (`newid`, `full=0`) on \
         one kept-alive HTTPS connection, each timed until its task (`vzclone`) reports \
         `stopped` with exit status OK (polled every 5 ms) and destroyed again afterwards \
         (untimed). Baseline: `btrfs subvolume snapshot` of the same base subvolume by hand \
         into the same file system (deleted again, untimed), as often, interleaved and \
         alternating which goes first; median and 90th percentile (nearest rank). The clone \
         runs that one tool, so the ratio is what the API adds around it: the task, the \
         new id claimed atomically, the new config with new MAC addresses.",
        storage = crate::lxc::CLONE_STORAGE,
        vmid = crate::lxc::TEMPLATE_VMID,
        clones = f.clones,
    );
}

fn parallel_section(out: &mut String, f: &ParallelFigures, node: &str) {
    let n = f.count;
    out.push_str(TABLE_HEAD);
    match f.sequential_ms {
        Some(one) => {
            let _ = writeln!(
                out,
                "| {n} creates at once, wall time | {} | {} ({n} × one create alone) | {:.2} | — |",
                secs(f.create_ms),
                secs(one * n as f64),
                ratio(f.create_ms, one * n as f64)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| {n} creates at once, wall time | {} | — | — | — |",
                secs(f.create_ms)
            );
        }
    }
    let _ = writeln!(
        out,
        "| failed creates | {} of {n} | — | — | 0 ({}) |",
        f.create_failures,
        verdict(f.create_failures == 0)
    );
    let _ = writeln!(
        out,
        "| {} destroys at once, wall time | {} | — | — | — |",
        f.destroyed,
        secs(f.destroy_ms)
    );
    let _ = writeln!(
        out,
        "| failed destroys | {} of {} | — | — | 0 ({}) |",
        f.destroy_failures,
        f.destroyed,
        verdict(f.destroy_failures == 0)
    );
    for (what, errors) in [
        ("creates", &f.create_errors),
        ("destroys", &f.destroy_errors),
    ] {
        if !errors.is_empty() {
            let _ = writeln!(
                out,
                "\nFailed {what} (first {}):\n\n```\n{}\n```",
                errors.len(),
                errors.join("\n")
            );
        }
    }
    let _ = writeln!(
        out,
        "\nMeasured: {n} threads of the bench, each with its own kept-alive HTTPS connection \
         (opened before the clock starts), send `POST /nodes/{node}/lxc` for CTs \
         {first}…{last} (the parameters above) at the same moment and poll their tasks every \
         {poll} ms; the wall time runs from the common start until the last task has \
         stopped. A create fails when the call is refused or its task does not end OK. Then \
         every one of those CTs that exists is destroyed the same way (`DELETE \
         /nodes/{node}/lxc/<vmid>`). Baseline: {n} times the median of one create alone \
         (above), i.e. the same creates one after another; a ratio below 1 is what running \
         them concurrently gains.",
        first = crate::lxc::FIRST_PARALLEL,
        last = crate::lxc::FIRST_PARALLEL as usize + n.saturating_sub(1),
        poll = crate::lxc::PARALLEL_POLL.as_millis(),
    );
}

fn latency_row(out: &mut String, figure: &str, value: f64, baseline: f64, what: &str) {
    let _ = writeln!(
        out,
        "| {figure} | {} | {} ({what}) | {:.2} | — |",
        ms(value),
        ms(baseline),
        ratio(value, baseline)
    );
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

/// Milliseconds shown as seconds.
fn secs(value_ms: f64) -> String {
    format!("{:.2} s", value_ms / 1000.0)
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
            storage: StorageFigures::skipped("skipped: run with --no-storage"),
            lxc: LxcFigures::skipped("skipped: run with --no-lxc"),
            qemu: QemuFigures::skipped("skipped: run with --no-qemu"),
        };
        let text = render(&run);
        assert!(text.starts_with("# Benchmarks\n"));
        assert!(text.contains("`bench/run.sh`"));
        assert!(text.contains("Not measured in this run:\n\n```\ndisk full\n```"));
        assert!(text.contains("\n## Storage\n"));
        assert!(text.contains("btrfs: Not measured in this run:"));
        assert!(text.contains("\n## Containers\n\n### Start\n\nNot measured in this run:"));
        assert!(text.contains("\n## Virtual machines\n\n### Start\n\nNot measured in this run:"));
    }

    #[test]
    fn storage_rows_carry_ratio_and_verdict() {
        use crate::stats::Latency;
        let lat = |p50_ms, p90_ms| Latency { p50_ms, p90_ms };
        let clone = |ms| CloneFigures {
            clones: 20,
            oxve: lat(ms, ms * 2.0),
            baseline: lat(ms / 2.0, ms),
        };
        let storage = StorageFigures {
            upload: Ok(UploadFigures {
                mib: 1024,
                rounds: 3,
                upload_mb_s: 300.0,
                cp_mb_s: 600.0,
                dir: "/x/template/iso".into(),
            }),
            clone_btrfs: Ok(clone(8.0)),
            clone_dir: Err("qemu-img is missing".into()),
            status: Ok(StatusFigures {
                storages: 20,
                runs: 20,
                pvesm_status: lat(40.0, 45.0),
                pvesh_version: lat(20.0, 22.0),
                api_storage: lat(4.0, 5.0),
                api_version: lat(0.5, 0.6),
            }),
        };
        let mut out = String::new();
        storage_section(&mut out, &storage, "n1", "ext4");
        assert!(
            out.contains(
                "| upload MB/s | 300 | 600 (`cp` + `sync`) | 0.50 | ≥ 0.60 (**missed**) |"
            ),
            "{out}"
        );
        assert!(out.contains(
            "| btrfs linked clone p50 | 8.00 ms | 4.00 ms (`btrfs subvolume snapshot`) | 2.00 | ≤ 100 ms (met) |"
        ));
        assert!(
            out.contains("qcow2 (dir): Not measured in this run:\n\n```\nqemu-img is missing\n```")
        );
        assert!(out.contains(
            "| `pvesm status` p50 | 40.00 ms | 20.00 ms (`pvesh get /version`) | 2.00 | ≤ 50 ms (met) |"
        ));
        assert!(out.contains(
            "| `GET /nodes/n1/storage` p90 | 5.00 ms | 0.60 ms (`GET /version`) | 8.33 | — |"
        ));
    }

    #[test]
    fn container_rows_carry_ratio_verdict_and_failures() {
        use crate::stats::Latency;
        let lat = |p50_ms, p90_ms| Latency { p50_ms, p90_ms };
        let lxc = LxcFigures {
            start: Ok(StartFigures {
                rounds: 7,
                api: lat(300.0, 320.0),
                raw: lat(150.0, 160.0),
            }),
            create: Ok(CreateFigures {
                rounds: 7,
                template: "busybox-1.0_amd64.tar.gz".into(),
                template_kib: 1100,
                api: lat(200.0, 220.0),
                tar: lat(20.0, 25.0),
            }),
            parallel: Ok(ParallelFigures {
                count: 20,
                create_ms: 2000.0,
                create_failures: 1,
                create_errors: vec!["CT 307: HTTP 500: boom".into()],
                destroyed: 19,
                destroy_ms: 1000.0,
                destroy_failures: 0,
                destroy_errors: vec![],
                sequential_ms: Some(200.0),
            }),
            clone: Ok(LinkedCloneFigures {
                clones: 10,
                api: lat(120.0, 130.0),
                snapshot: lat(40.0, 50.0),
            }),
        };
        let mut out = String::new();
        containers_section(&mut out, &lxc, "n1");
        assert!(out.contains(
            "| CT start p50, API call to init running | 300.00 ms | 150.00 ms (`lxc-start -d` + `lxc-wait`) | 2.00 | ratio ≤ 1.50 (**missed**) |"
        ), "{out}");
        assert!(out.contains("| CT create p50 | 200.00 ms | 20.00 ms (`tar -xpf`) | 10.00 | — |"));
        assert!(out.contains(
            "| CT linked clone p50 | 120.00 ms | 40.00 ms (`btrfs subvolume snapshot`) | 3.00 | ≤ 100 ms (**missed**) |"
        ));
        assert!(out.contains("`POST /nodes/n1/lxc/120/clone`"));
        assert!(out.contains(
            "| 20 creates at once, wall time | 2.00 s | 4.00 s (20 × one create alone) | 0.50 | — |"
        ));
        assert!(out.contains("| failed creates | 1 of 20 | — | — | 0 (**missed**) |"));
        assert!(out.contains("| failed destroys | 0 of 19 | — | — | 0 (met) |"));
        assert!(out.contains("```\nCT 307: HTTP 500: boom\n```"));
        assert!(out.contains("CTs 300…319"));
    }
}
