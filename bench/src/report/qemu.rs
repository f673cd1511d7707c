//! The "Virtual machines" section of BENCHMARKS.md.

use super::{latency_row, ms, not_measured, ratio, secs, verdict, TABLE_HEAD};
use crate::qemu::{
    FullCloneFigures, LinkedCloneFigures, ParallelCloneFigures, QemuFigures, StartFigures,
};
use std::fmt::Write;

/// Renders the section.
pub(super) fn section(out: &mut String, f: &QemuFigures, node: &str) {
    out.push_str("\n## Virtual machines\n\n### Start\n\n");
    match &f.start {
        Ok(s) => start(out, s, node),
        Err(why) => not_measured(out, why),
    }
    out.push_str("\n### Linked clone\n\n");
    match &f.linked {
        Ok(c) => linked(out, c, node),
        Err(why) => not_measured(out, why),
    }
    out.push_str("\n### Full clone\n\n");
    match &f.full {
        Ok(c) => full(out, c, node),
        Err(why) => not_measured(out, why),
    }
    out.push_str("\n### Parallel linked clones\n\n");
    match &f.parallel {
        Ok(p) => parallel(out, p, node),
        Err(why) => not_measured(out, why),
    }
}

fn start(out: &mut String, f: &StartFigures, node: &str) {
    let share = ratio(f.api.p50_ms, f.by_hand.p50_ms);
    let baseline = "same command line by hand";
    out.push_str(TABLE_HEAD);
    let _ = writeln!(
        out,
        "| VM start p50, API call to QMP `running` | {} | {} ({baseline}) | {:.2} | ratio ≤ 1.30 ({}) |",
        ms(f.api.p50_ms),
        ms(f.by_hand.p50_ms),
        share,
        verdict(share <= 1.3)
    );
    latency_row(
        out,
        "VM start p90",
        f.api.p90_ms,
        f.by_hand.p90_ms,
        baseline,
    );
    let _ = writeln!(
        out,
        "\nMeasured: VM {vmid} ({mem} MiB, one core, a 1 GiB qcow2 disk `{disk}`, a virtio \
         NIC on `{bridge}`, a bridge inside the daemon's network namespace) booting the test \
         guest of `tests/qemu/build-guest.sh` (`args: -kernel … -initrd … -append \
         'console=ttyS0 quiet'`), under {accel}. API: `POST /nodes/{node}/qemu/{vmid}/status/start` \
         as `benchvm@pve` ({role} on `/`, on one kept-alive HTTPS connection), its task polled \
         every {poll} ms until it ended OK, then QMP `query-status` on the VM's socket says \
         `running`. By hand: the command line `oxve qm showcmd {vmid}` prints (what the daemon \
         runs), with its pid file, QMP, VNC and serial sockets and bridge hooks moved to a \
         directory of the bench and without the connection to the daemon's QMP event \
         listener, plus `-S` as the daemon adds it; run (`-daemonize`) in the daemon's network \
         namespace until its first process returns, then QMP `qmp_capabilities`, `cont` and \
         `query-status` says `running`. The tap is plugged into the bridge by the same hook \
         (`oxve __qemu-bridge`) on both sides. One untimed start of each, then {rounds} \
         timed starts of each, alternating which goes first; the VM is stopped after each \
         (through the API, or QMP `quit` by hand). The ratio is what the API, the task, the \
         config, the command line generation and the volume activation add to QEMU's own \
         start.",
        vmid = crate::qemu::START_VMID,
        mem = crate::qemu::MEMORY_MIB,
        disk = crate::qemu::DISK,
        bridge = crate::qemu::BRIDGE,
        accel = if f.accel == "tcg" {
            "TCG (KVM is not usable on this machine; the daemon says so in the task log)"
        } else {
            "KVM"
        },
        role = crate::qemu::ROLE,
        poll = crate::qemu::POLL.as_millis(),
        rounds = f.rounds,
    );
}

fn linked(out: &mut String, f: &LinkedCloneFigures, node: &str) {
    let tool = "`qemu-img create -b`";
    out.push_str(TABLE_HEAD);
    let _ = writeln!(
        out,
        "| VM linked clone p50 | {} | {} ({tool}) | {:.2} | ≤ 100 ms ({}) |",
        ms(f.api.p50_ms),
        ms(f.qemu_img.p50_ms),
        ratio(f.api.p50_ms, f.qemu_img.p50_ms),
        verdict(f.api.p50_ms <= 100.0)
    );
    latency_row(
        out,
        "VM linked clone p90",
        f.api.p90_ms,
        f.qemu_img.p90_ms,
        tool,
    );
    let _ = writeln!(
        out,
        "\nMeasured: VM {vmid} (as above, its disk a 1 GiB qcow2 image on `local`, a `dir` \
         storage) made a template (`POST /nodes/{node}/qemu/{vmid}/template`: the image \
         becomes `base-{vmid}-disk-0.qcow2`), then {clones} calls of `POST \
         /nodes/{node}/qemu/{vmid}/clone` (`newid`, `full=0`), each timed until its task \
         ended OK (polled every {poll} ms) and destroyed again untimed; against `qemu-img \
         create -f qcow2 -b <base image> -F qcow2 <new>` run by hand into the same file \
         system as often, interleaved and alternating which goes first; median and 90th \
         percentile (nearest rank). The clone runs that one tool, so the ratio is what the \
         API adds around it: the task, the new id claimed, the template's shared lock, the \
         new config with new MAC addresses and SMBIOS UUID.",
        vmid = crate::qemu::TEMPLATE_VMID,
        clones = f.clones,
        poll = crate::qemu::POLL.as_millis(),
    );
}

fn full(out: &mut String, f: &FullCloneFigures, node: &str) {
    let (api, convert) = (f.mb_per_s(f.api.p50_ms), f.mb_per_s(f.convert.p50_ms));
    let tool = "`qemu-img convert`";
    out.push_str(TABLE_HEAD);
    let _ = writeln!(
        out,
        "| VM full clone MB/s (median) | {api:.0} | {convert:.0} ({tool}) | {:.2} | — |",
        ratio(api, convert)
    );
    latency_row(
        out,
        "VM full clone p50",
        f.api.p50_ms,
        f.convert.p50_ms,
        tool,
    );
    let _ = writeln!(
        out,
        "\nMeasured: VM {vmid} (as above) with {data} MiB of random bytes written at the start \
         of its {disk} GiB qcow2 disk by `qemu-io -c 'write -s <file> 0 {data}M'`, then \
         {rounds} full clones (`POST /nodes/{node}/qemu/{vmid}/clone`, `newid`, `full=1`: \
         a new qcow2 image on `local`, filled by `qemu-img convert`), each timed until its \
         task ended OK and destroyed again untimed; against `qemu-img convert -f qcow2 -O \
         qcow2 <image> <new>` of the same image into the same file system by hand as often, \
         alternating which goes first. MB/s are 10⁶ bytes of the data written per second \
         of the median time; the ratio is the share of `qemu-img convert`'s throughput the \
         clone reaches.",
        vmid = crate::qemu::FULL_SOURCE_VMID,
        data = f.data_mib,
        disk = f.disk_gib,
        rounds = f.rounds,
    );
}

fn parallel(out: &mut String, f: &ParallelCloneFigures, node: &str) {
    let n = f.count;
    out.push_str(TABLE_HEAD);
    let _ = writeln!(
        out,
        "| {n} linked clones at once, wall time | {} | {} (the same {n} one after another) | {:.2} | — |",
        secs(f.parallel_ms),
        secs(f.sequential_ms),
        ratio(f.parallel_ms, f.sequential_ms)
    );
    let _ = writeln!(
        out,
        "| failed clones at once | {} of {n} | {} of {n} (one after another) | — | 0 ({}) |",
        f.failures,
        f.sequential_failures,
        verdict(f.failures == 0)
    );
    if !f.errors.is_empty() {
        let _ = writeln!(
            out,
            "\nFailed clones (first {}):\n\n```\n{}\n```",
            f.errors.len(),
            f.errors.join("\n")
        );
    }
    let _ = writeln!(
        out,
        "\nMeasured: {n} threads of the bench, each with its own kept-alive HTTPS connection \
         (opened before the clock starts), send `POST /nodes/{node}/qemu/{vmid}/clone` \
         (`full=0`) for VMs {first}…{last} at the same moment and poll their tasks every \
         {poll} ms; the wall time runs from the common start until the last task has \
         stopped. A clone fails when the call is refused or its task does not end OK. \
         Baseline: the same {n} clones (VMs {sfirst}…{slast}) one after another on one \
         connection, each task polled every {one} ms. All are destroyed afterwards, untimed. \
         A ratio below 1 is what running them concurrently gains.",
        vmid = crate::qemu::TEMPLATE_VMID,
        first = crate::qemu::FIRST_PARALLEL,
        last = crate::qemu::FIRST_PARALLEL as usize + n.saturating_sub(1),
        sfirst = crate::qemu::FIRST_SEQUENTIAL,
        slast = crate::qemu::FIRST_SEQUENTIAL as usize + n.saturating_sub(1),
        poll = crate::qemu::PARALLEL_POLL.as_millis(),
        one = crate::qemu::POLL.as_millis(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latency;

    #[test]
    fn rows_carry_ratio_verdict_and_failures() {
        let lat = |p50_ms, p90_ms| Latency { p50_ms, p90_ms };
        let figures = QemuFigures {
            start: Ok(StartFigures {
                rounds: 5,
                api: lat(520.0, 560.0),
                by_hand: lat(400.0, 420.0),
                accel: "tcg".into(),
            }),
            linked: Ok(LinkedCloneFigures {
                clones: 10,
                api: lat(60.0, 70.0),
                qemu_img: lat(20.0, 25.0),
            }),
            full: Ok(FullCloneFigures {
                rounds: 3,
                disk_gib: 1,
                data_mib: 256,
                api: lat(2000.0, 2100.0),
                convert: lat(1000.0, 1100.0),
            }),
            parallel: Ok(ParallelCloneFigures {
                count: 20,
                parallel_ms: 1500.0,
                failures: 1,
                errors: vec!["VM 1007: HTTP 500: locked".into()],
                sequential_ms: 3000.0,
                sequential_failures: 0,
            }),
        };
        let mut out = String::new();
        section(&mut out, &figures, "n1");
        assert!(
            out.starts_with("\n## Virtual machines\n\n### Start\n\n"),
            "{out}"
        );
        assert!(out.contains(
            "| VM start p50, API call to QMP `running` | 520.00 ms | 400.00 ms (same command line by hand) | 1.30 | ratio ≤ 1.30 (met) |"
        ), "{out}");
        assert!(out.contains("under TCG"));
        assert!(out.contains(
            "| VM linked clone p50 | 60.00 ms | 20.00 ms (`qemu-img create -b`) | 3.00 | ≤ 100 ms (met) |"
        ));
        assert!(out.contains(
            "| VM full clone MB/s (median) | 134 | 268 (`qemu-img convert`) | 0.50 | — |"
        ));
        assert!(out.contains(
            "| 20 linked clones at once, wall time | 1.50 s | 3.00 s (the same 20 one after another) | 0.50 | — |"
        ));
        assert!(out.contains(
            "| failed clones at once | 1 of 20 | 0 of 20 (one after another) | — | 0 (**missed**) |"
        ));
        assert!(out.contains("```\nVM 1007: HTTP 500: locked\n```"));
        assert!(out.contains("VMs 1000…1019") && out.contains("VMs 2000…2019"));
    }

    #[test]
    fn skipped_parts_say_why() {
        let mut out = String::new();
        section(
            &mut out,
            &QemuFigures::skipped("skipped: run with --no-qemu"),
            "n1",
        );
        assert_eq!(out.matches("Not measured in this run:").count(), 4);
    }
}
