//! VM clones through the API on `local` (a `dir` storage, qcow2 images):
//! linked clones of a template against `qemu-img create -b` of its base
//! image, full clones of a VM whose disk holds data against `qemu-img
//! convert` of the same image, and many linked clones at once against the
//! same clones one after another.

use super::{Bench, Client, POLL};
use crate::api::run_tool;
use crate::error::{BenchError, Result};
use crate::lxc::elapsed_ms;
use crate::lxc::http::fan_out;
use crate::stats::Latency;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The template every linked clone is made of.
pub const TEMPLATE_VMID: u32 = 810;
/// Linked clones timed (and as many by hand), alternating which goes first.
pub const LINKED_ROUNDS: usize = 10;
/// The VM whose disk the full clones copy.
pub const FULL_SOURCE_VMID: u32 = 820;
/// Full clones timed (and as many copies by hand).
pub const FULL_ROUNDS: usize = 3;
/// MiB of random data written into that disk.
pub const DATA_MIB: u64 = 256;
/// The first id of the clones made at once.
pub const FIRST_PARALLEL: u32 = 1000;
/// The first id of the same clones made one after another.
pub const FIRST_SEQUENTIAL: u32 = 2000;
/// How often each of the parallel callers polls its task: often enough
/// for a total of seconds, rarely enough not to load the daemon.
pub const PARALLEL_POLL: Duration = Duration::from_millis(50);
/// Errors quoted in the report.
const QUOTED: usize = 3;

/// What the linked-clone benchmark measured.
#[derive(Debug)]
pub struct LinkedCloneFigures {
    /// Clones made by each side.
    pub clones: usize,
    /// `POST .../clone` (`full=0`) until its task ended OK.
    pub api: Latency,
    /// `qemu-img create -f qcow2 -b <base> -F qcow2`.
    pub qemu_img: Latency,
}

/// What the full-clone benchmark measured.
#[derive(Debug)]
pub struct FullCloneFigures {
    /// Copies made by each side.
    pub rounds: usize,
    /// The disk's size, GiB.
    pub disk_gib: u64,
    /// MiB of data in it.
    pub data_mib: u64,
    /// `POST .../clone` (`full=1`) until its task ended OK.
    pub api: Latency,
    /// `qemu-img convert -f qcow2 -O qcow2` of the same image.
    pub convert: Latency,
}

/// What the parallel clones did.
#[derive(Debug)]
pub struct ParallelCloneFigures {
    /// Clones fired at once.
    pub count: usize,
    /// First call to last task ended, ms.
    pub parallel_ms: f64,
    /// Clones that failed (call refused or task not OK).
    pub failures: usize,
    /// The first few failures, as `VM <vmid>: <why>`.
    pub errors: Vec<String>,
    /// The same clones one after another, first call to last task, ms.
    pub sequential_ms: f64,
    /// Clones that failed among those.
    pub sequential_failures: usize,
}

impl FullCloneFigures {
    /// MB/s (10⁶ bytes) of the data copied in `ms`.
    pub fn mb_per_s(&self, ms: f64) -> f64 {
        if ms > 0.0 {
            (self.data_mib * 1024 * 1024) as f64 / 1e6 / (ms / 1000.0)
        } else {
            0.0
        }
    }
}

/// Creates VM [`TEMPLATE_VMID`] and makes it a template; returns the host
/// path of its base image.
pub(super) fn template(b: &Bench<'_>) -> Result<PathBuf> {
    let mut client = b.client()?;
    eprintln!("creating VM {TEMPLATE_VMID} and making it a template");
    b.create(&mut client, TEMPLATE_VMID)?;
    let path = format!("{}/template", b.vm_path(TEMPLATE_VMID));
    b.task(&mut client, "POST", &path, &[], POLL)?;
    let (volid, base) = b.volume(&mut client, TEMPLATE_VMID, "scsi0")?;
    if !volid.contains("/base-") {
        return Err(BenchError::Tool {
            tool: format!("POST {path}"),
            detail: format!("left scsi0 on '{volid}', not a base image"),
        });
    }
    Ok(base)
}

/// Times [`LINKED_ROUNDS`] linked clones of the template (each destroyed
/// again, untimed) and as many `qemu-img create -b` of its base image.
pub(super) fn linked(b: &Bench<'_>, base: &Path) -> Result<LinkedCloneFigures> {
    let mut client = b.client()?;
    client.connect()?;
    let by_hand = b.own.join("linked");
    std::fs::create_dir_all(&by_hand).map_err(BenchError::file(&by_hand))?;
    let mut api = Vec::with_capacity(LINKED_ROUNDS);
    let mut qemu_img = Vec::with_capacity(LINKED_ROUNDS);
    for (n, newid) in (0..LINKED_ROUNDS).zip(TEMPLATE_VMID + 1..) {
        for side in [n % 2, 1 - n % 2] {
            if side == 0 {
                let start = Instant::now();
                clone(b, &mut client, TEMPLATE_VMID, newid, false, POLL)?;
                api.push(elapsed_ms(start));
                b.destroy(&mut client, newid)?;
            } else {
                let image = by_hand.join(format!("clone-{n}.qcow2"));
                let start = Instant::now();
                run_tool(
                    "qemu-img create -b",
                    Command::new("qemu-img")
                        .args(["create", "-q", "-f", "qcow2", "-b"])
                        .arg(base)
                        .args(["-F", "qcow2"])
                        .arg(&image),
                )?;
                qemu_img.push(elapsed_ms(start));
                std::fs::remove_file(&image).map_err(BenchError::file(&image))?;
            }
        }
    }
    let figures = LinkedCloneFigures {
        clones: LINKED_ROUNDS,
        api: Latency::of(&mut api),
        qemu_img: Latency::of(&mut qemu_img),
    };
    eprintln!(
        "{LINKED_ROUNDS} linked clones of VM {TEMPLATE_VMID}: API p50 {:.0} ms, qemu-img p50 {:.0} ms",
        figures.api.p50_ms, figures.qemu_img.p50_ms
    );
    Ok(figures)
}

/// Fires `count` linked clones of the template (VMs 1000…) at once, each
/// on its own connection; then makes the same clones (VMs 2000…) one after
/// another on one connection; destroys them all (untimed).
pub(super) fn parallel(b: &Bench<'_>, count: usize) -> Result<ParallelCloneFigures> {
    if count == 0 {
        return Err(BenchError::Missing(
            "--qemu-parallel 0: no clones to fire".into(),
        ));
    }
    let ids: Vec<u32> = (FIRST_PARALLEL..).take(count).collect();
    eprintln!("{count} linked clones of VM {TEMPLATE_VMID} at once");
    let (parallel_ms, results) = fan_out(
        &ids,
        || b.client(),
        |client, newid| clone(b, client, TEMPLATE_VMID, newid, false, PARALLEL_POLL),
    );
    let failed: Vec<String> = ids
        .iter()
        .zip(&results)
        .filter_map(|(vmid, r)| r.as_ref().err().map(|e| format!("VM {vmid}: {e}")))
        .collect();
    eprintln!("the same {count} clones one after another");
    let sequential: Vec<u32> = (FIRST_SEQUENTIAL..).take(count).collect();
    let mut client = b.client()?;
    client.connect()?;
    let start = Instant::now();
    let sequential_failures = sequential
        .iter()
        .filter(|&&newid| clone(b, &mut client, TEMPLATE_VMID, newid, false, POLL).is_err())
        .count();
    let sequential_ms = elapsed_ms(start);
    let mut vms = b.list(&mut client)?;
    vms.retain(|(vmid, _)| ids.contains(vmid) || sequential.contains(vmid));
    for (vmid, _) in vms {
        b.destroy(&mut client, vmid)?;
    }
    eprintln!(
        "{count} linked clones: at once {:.2} s ({} failed), one after another {:.2} s",
        parallel_ms / 1000.0,
        failed.len(),
        sequential_ms / 1000.0
    );
    Ok(ParallelCloneFigures {
        count,
        parallel_ms,
        failures: failed.len(),
        errors: failed.into_iter().take(QUOTED).collect(),
        sequential_ms,
        sequential_failures,
    })
}

/// Creates VM [`FULL_SOURCE_VMID`], writes [`DATA_MIB`] MiB of random
/// data into its qcow2 disk with `qemu-io`, then times [`FULL_ROUNDS`]
/// full clones of it (each destroyed again, untimed) and as many
/// `qemu-img convert` of its image into a new one.
pub(super) fn full(b: &Bench<'_>) -> Result<FullCloneFigures> {
    let mut client = b.client()?;
    eprintln!("creating VM {FULL_SOURCE_VMID} with {DATA_MIB} MiB of data on its disk");
    b.create(&mut client, FULL_SOURCE_VMID)?;
    let (_, image) = b.volume(&mut client, FULL_SOURCE_VMID, "scsi0")?;
    fill(b, &image)?;
    let by_hand = b.own.join("full");
    std::fs::create_dir_all(&by_hand).map_err(BenchError::file(&by_hand))?;
    client.connect()?;
    let mut api = Vec::with_capacity(FULL_ROUNDS);
    let mut convert = Vec::with_capacity(FULL_ROUNDS);
    for (n, newid) in (0..FULL_ROUNDS).zip(FULL_SOURCE_VMID + 1..) {
        for side in [n % 2, 1 - n % 2] {
            if side == 0 {
                let start = Instant::now();
                clone(b, &mut client, FULL_SOURCE_VMID, newid, true, POLL)?;
                api.push(elapsed_ms(start));
                b.destroy(&mut client, newid)?;
            } else {
                let copy = by_hand.join(format!("copy-{n}.qcow2"));
                let start = Instant::now();
                run_tool(
                    "qemu-img convert",
                    Command::new("qemu-img")
                        .args(["convert", "-f", "qcow2", "-O", "qcow2"])
                        .arg(&image)
                        .arg(&copy),
                )?;
                convert.push(elapsed_ms(start));
                std::fs::remove_file(&copy).map_err(BenchError::file(&copy))?;
            }
        }
        eprintln!(
            "VM full clone round {}/{FULL_ROUNDS}: API {:.0} ms, qemu-img convert {:.0} ms",
            n + 1,
            api[n],
            convert[n]
        );
    }
    Ok(FullCloneFigures {
        rounds: FULL_ROUNDS,
        disk_gib: 1,
        data_mib: DATA_MIB,
        api: Latency::of(&mut api),
        convert: Latency::of(&mut convert),
    })
}

/// `POST /nodes/<node>/qemu/<vmid>/clone` to `newid` (`full` or linked),
/// waiting for its task, polled every `every`.
fn clone(
    b: &Bench<'_>,
    client: &mut Client,
    vmid: u32,
    newid: u32,
    full: bool,
    every: Duration,
) -> Result<()> {
    let newid = newid.to_string();
    let form = [
        ("newid", newid.as_str()),
        ("full", if full { "1" } else { "0" }),
    ];
    let path = format!("{}/clone", b.vm_path(vmid));
    b.task(client, "POST", &path, &form, every)
}

/// Writes [`DATA_MIB`] MiB from /dev/urandom at the start of qcow2 image
/// `image` with `qemu-io` (the random bytes go through a file first).
fn fill(b: &Bench<'_>, image: &Path) -> Result<()> {
    let random = b.own.join("random.bin");
    let bytes = DATA_MIB * 1024 * 1024;
    let mut source = std::fs::File::open("/dev/urandom")
        .map_err(BenchError::file("/dev/urandom"))?
        .take(bytes);
    let mut file = std::fs::File::create(&random).map_err(BenchError::file(&random))?;
    std::io::copy(&mut source, &mut file).map_err(BenchError::file(&random))?;
    drop(file);
    let written = run_tool(
        "qemu-io write",
        Command::new("qemu-io")
            .args(["-f", "qcow2", "-c"])
            .arg(format!("write -q -s {} 0 {bytes}", random.display()))
            .arg(image),
    );
    let _ = std::fs::remove_file(&random);
    written.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_in_mb_per_second() {
        let f = FullCloneFigures {
            rounds: 3,
            disk_gib: 1,
            data_mib: 256,
            api: Latency {
                p50_ms: 1000.0,
                p90_ms: 1000.0,
            },
            convert: Latency {
                p50_ms: 500.0,
                p90_ms: 500.0,
            },
        };
        assert!((f.mb_per_s(1000.0) - 268.435456).abs() < 1e-6);
        assert!((f.mb_per_s(500.0) - 536.870912).abs() < 1e-6);
        assert_eq!(f.mb_per_s(0.0), 0.0);
    }
}
