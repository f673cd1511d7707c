//! Linked clones of a container template through the API, on a btrfs
//! storage, against `btrfs subvolume snapshot` of the template's base
//! subvolume by hand: the one tool the clone runs.

use super::{elapsed_ms, segment, Bench, Client};
use crate::api::run_tool;
use crate::error::{BenchError, Result};
use crate::stats::Latency;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The template: CT 120 on the btrfs storage.
pub const TEMPLATE_VMID: u32 = 120;
/// Clones timed (and as many snapshots by hand), alternating which goes first.
pub const CLONES: usize = 10;
/// The storage made for it.
pub const STORAGE: &str = "benchctbt";
/// Size of the btrfs image file (sparse).
const BTRFS_IMAGE: &str = "1G";

/// What the linked-clone benchmark measured.
#[derive(Debug)]
pub struct LinkedCloneFigures {
    /// Clones made by each side.
    pub clones: usize,
    /// `POST /nodes/{node}/lxc/120/clone` until its task ended OK.
    pub api: Latency,
    /// `btrfs subvolume snapshot` of the base subvolume.
    pub snapshot: Latency,
}

/// Makes a btrfs storage on a loop-mounted image below the daemon's root,
/// CT 120 on it made a template, then times [`CLONES`] linked clones
/// (each destroyed again, untimed) and as many snapshots by hand; removes
/// the CTs, the storage and the mount afterwards.
pub(super) fn run(b: &Bench<'_>) -> Result<LinkedCloneFigures> {
    for tool in ["mkfs.btrfs", "btrfs"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Err(BenchError::Missing(format!(
                "'{tool}' cannot run: install btrfs-progs (scripts/install-deps.sh does)"
            )));
        }
    }
    let dir = b.daemon.root().join("bench-btrfs");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(BenchError::file(&mnt))?;
    let image = dir.join("btrfs.img");
    run_tool(
        "truncate",
        Command::new("truncate")
            .args(["-s", BTRFS_IMAGE])
            .arg(&image),
    )?;
    run_tool(
        "mkfs.btrfs",
        Command::new("mkfs.btrfs").arg("-q").arg(&image),
    )?;
    run_tool(
        "mount -o loop",
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt),
    )?;
    let mut client = b.client()?;
    let result = measure(b, &mut client, &mnt);
    // Best effort: the bench's final cleanup and teardown catch the rest.
    let _ = b.destroy(&mut client, TEMPLATE_VMID);
    let _ = b.daemon.cli(&["pvesm", "remove", STORAGE]);
    let _ = run_tool("umount", Command::new("umount").arg(&mnt));
    result
}

fn measure(b: &Bench<'_>, client: &mut Client, mnt: &Path) -> Result<LinkedCloneFigures> {
    let path = mnt.to_string_lossy();
    b.daemon.cli(&[
        "pvesm",
        "add",
        "btrfs",
        STORAGE,
        "--path",
        &path,
        "--content",
        "rootdir,images",
    ])?;
    eprintln!("creating CT {TEMPLATE_VMID} on btrfs and making it a template");
    b.create_on(client, TEMPLATE_VMID, &format!("{STORAGE}:0"))?;
    let ct = format!("{}/lxc/{TEMPLATE_VMID}", b.node_path());
    client.call("POST", &format!("{ct}/template"), &[])?;
    let base = base_subvolume(b, client)?;
    let by_hand = mnt.join("by-hand");
    std::fs::create_dir_all(&by_hand).map_err(BenchError::file(&by_hand))?;
    let mut api = Vec::with_capacity(CLONES);
    let mut snapshot = Vec::with_capacity(CLONES);
    for (n, newid) in (0..CLONES).zip(TEMPLATE_VMID + 1..) {
        for side in [n % 2, 1 - n % 2] {
            if side == 0 {
                let newid_text = newid.to_string();
                let start = Instant::now();
                let upid = client.call(
                    "POST",
                    &format!("{ct}/clone"),
                    &[("newid", &newid_text), ("full", "0")],
                )?;
                let upid = super::task_id(upid)?;
                b.wait_task(client, &upid, super::start::POLL)?;
                api.push(elapsed_ms(start));
                b.destroy(client, newid)?;
            } else {
                let target = by_hand.join(format!("clone-{n}"));
                let start = Instant::now();
                run_tool(
                    "btrfs subvolume snapshot",
                    Command::new("btrfs")
                        .args(["subvolume", "snapshot"])
                        .arg(&base)
                        .arg(&target),
                )?;
                snapshot.push(elapsed_ms(start));
                run_tool(
                    "btrfs subvolume delete",
                    Command::new("btrfs")
                        .args(["subvolume", "delete"])
                        .arg(&target),
                )?;
            }
        }
    }
    let figures = LinkedCloneFigures {
        clones: CLONES,
        api: Latency::of(&mut api),
        snapshot: Latency::of(&mut snapshot),
    };
    eprintln!(
        "{CLONES} linked clones of CT {TEMPLATE_VMID}: API p50 {:.0} ms, snapshot p50 {:.0} ms",
        figures.api.p50_ms, figures.snapshot.p50_ms
    );
    Ok(figures)
}

/// The host directory of the template's base subvolume.
fn base_subvolume(b: &Bench<'_>, client: &mut Client) -> Result<PathBuf> {
    let config = client.call(
        "GET",
        &format!("{}/lxc/{TEMPLATE_VMID}/config", b.node_path()),
        &[],
    )?;
    let rootfs = config["rootfs"].as_str().unwrap_or_default();
    let volid = rootfs.split(',').next().unwrap_or_default();
    if config["template"] != 1 || !volid.contains("basevol-") {
        return Err(BenchError::Tool {
            tool: format!("POST /nodes/{}/lxc/{TEMPLATE_VMID}/template", b.node),
            detail: format!("left rootfs '{rootfs}', template {}", config["template"]),
        });
    }
    let info = client.call(
        "GET",
        &format!(
            "{}/storage/{STORAGE}/content/{}",
            b.node_path(),
            segment(volid)
        ),
        &[],
    )?;
    let path = PathBuf::from(info["path"].as_str().unwrap_or_default());
    if !path.is_dir() {
        return Err(BenchError::Tool {
            tool: format!("CT {TEMPLATE_VMID}'s rootfs"),
            detail: format!("'{volid}' at '{}' is not a subvolume", path.display()),
        });
    }
    Ok(path)
}
