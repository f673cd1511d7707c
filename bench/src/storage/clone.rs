//! Linked clones through the `oxve-storage` plugins, against the one tool
//! each plugin runs, by hand: `btrfs subvolume snapshot` on btrfs (a
//! loop-mounted image in the scratch directory) and `qemu-img create -b`
//! for qcow2 in a directory.

use super::{elapsed_ms, is_root, need_tool};
use crate::api::run_tool;
use crate::error::{BenchError, Result};
use crate::stats::Latency;
use oxve_storage::exec::SystemRunner;
use oxve_storage::{plugins, Env, StorageConfig, StoragePlugin};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// The guest whose disk becomes the base image.
const BASE_VMID: u32 = 100;
/// Size of the base image (sparse): 1 GiB.
const BASE_SIZE_KIB: u64 = 1 << 20;
/// Size of the btrfs image file (sparse).
const BTRFS_IMAGE: &str = "1G";

/// What one storage type's clone benchmark measured.
#[derive(Debug)]
pub struct CloneFigures {
    /// Clones made by each side.
    pub clones: usize,
    /// `StoragePlugin::clone_image`.
    pub oxve: Latency,
    /// The tool by hand.
    pub baseline: Latency,
}

/// `clones` linked clones of a raw base image on a fresh btrfs file system.
pub(super) fn btrfs(scratch: &Path, clones: usize) -> Result<CloneFigures> {
    if !is_root() {
        return Err(BenchError::Missing(
            "needs root: the btrfs file system is loop-mounted".into(),
        ));
    }
    need_tool("mkfs.btrfs", "btrfs-progs")?;
    need_tool("btrfs", "btrfs-progs")?;
    let fs = LoopBtrfs::mount(scratch)?;
    let cfg = format!(
        "btrfs: benchbtrfs\n\tpath {}\n\tcontent images\n\n",
        fs.mnt.display()
    );
    let plugin = open(&cfg, "benchbtrfs", &fs.run_dir()?)?;
    let base = make_base(plugin.as_ref(), None)?;
    // A raw image on btrfs is `disk.raw` in a subvolume of its own.
    let disk = plugin.path(&base)?;
    let subvolume = disk.parent().ok_or_else(|| BenchError::Parse {
        what: "the base image's path",
        detail: format!("{} has no subvolume", disk.display()),
    })?;
    let by_hand = make_dir(&fs.mnt.join("by-hand"))?;
    eprintln!("{clones} linked clones on btrfs");
    let (oxve, baseline) = measure(
        clones,
        |vmid| {
            plugin.clone_image(&base, vmid, &format!("vm-{vmid}-disk-0.raw"))?;
            Ok(())
        },
        |n| {
            run_tool(
                "btrfs subvolume snapshot",
                Command::new("btrfs")
                    .args(["subvolume", "snapshot"])
                    .arg(subvolume)
                    .arg(by_hand.join(format!("clone-{n}"))),
            )
            .map(drop)
        },
    )?;
    drop(plugin);
    fs.unmount()?;
    Ok(CloneFigures {
        clones,
        oxve,
        baseline,
    })
}

/// `clones` linked clones of a qcow2 base image in a directory under
/// `scratch`.
pub(super) fn dir(scratch: &Path, clones: usize) -> Result<CloneFigures> {
    need_tool("qemu-img", "qemu-utils")?;
    let tmp = tempfile::Builder::new()
        .prefix("oxve-bench-qcow2-")
        .tempdir_in(scratch)
        .map_err(BenchError::file(scratch))?;
    let cfg = format!(
        "dir: benchdir\n\tpath {}\n\tcontent images\n\n",
        tmp.path().join("store").display()
    );
    let plugin = open(&cfg, "benchdir", &make_dir(&tmp.path().join("run"))?)?;
    let base = make_base(plugin.as_ref(), Some("qcow2"))?;
    let backing = plugin.path(&base)?;
    let by_hand = make_dir(&tmp.path().join("by-hand"))?;
    eprintln!("{clones} linked qcow2 clones in a directory");
    let (oxve, baseline) = measure(
        clones,
        |vmid| {
            plugin.clone_image(&base, vmid, &format!("vm-{vmid}-disk-0.qcow2"))?;
            Ok(())
        },
        |n| {
            run_tool(
                "qemu-img create",
                Command::new("qemu-img")
                    .args(["create", "-f", "qcow2", "-b"])
                    .arg(&backing)
                    .args(["-F", "qcow2"])
                    .arg(by_hand.join(format!("clone-{n}.qcow2"))),
            )
            .map(drop)
        },
    )?;
    Ok(CloneFigures {
        clones,
        oxve,
        baseline,
    })
}

/// Times `count` clones by oxve (for guests 101, 102, …) and as many by
/// hand (numbered 0, 1, …), interleaved and alternating who goes first.
fn measure(
    count: usize,
    mut oxve: impl FnMut(u32) -> Result<()>,
    mut by_hand: impl FnMut(usize) -> Result<()>,
) -> Result<(Latency, Latency)> {
    let mut ours = Vec::with_capacity(count);
    let mut theirs = Vec::with_capacity(count);
    for (n, vmid) in (0..count).zip(BASE_VMID + 1..) {
        for side in [n % 2, 1 - n % 2] {
            let start = Instant::now();
            if side == 0 {
                oxve(vmid)?;
                ours.push(elapsed_ms(start));
            } else {
                by_hand(n)?;
                theirs.push(elapsed_ms(start));
            }
        }
    }
    Ok((Latency::of(&mut ours), Latency::of(&mut theirs)))
}

/// Opens and activates the one storage of `cfg`, as the daemon does.
fn open(cfg: &str, id: &str, run_dir: &Path) -> Result<Box<dyn StoragePlugin>> {
    let def = StorageConfig::parse(cfg).get(id)?;
    let env = Env {
        runner: Arc::new(SystemRunner),
        run_dir: run_dir.to_path_buf(),
        secret: None,
    };
    let plugin = plugins::open(def, env)?;
    plugin.activate()?;
    Ok(plugin)
}

/// A disk of guest 100 in `format` (the storage's default if none),
/// turned into a base image; returns the base's volume name.
fn make_base(plugin: &dyn StoragePlugin, format: Option<&str>) -> Result<String> {
    let disk = plugin.alloc_image(BASE_VMID, format, None, BASE_SIZE_KIB)?;
    Ok(plugin.create_base(&disk)?)
}

fn make_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(BenchError::file(dir))?;
    Ok(dir.to_path_buf())
}

/// A btrfs file system in an image file under the scratch directory,
/// loop-mounted; unmounted and removed on drop, also after an error.
struct LoopBtrfs {
    /// Where it is mounted.
    mnt: PathBuf,
    /// Holds the image and the mount point; kept if the unmount fails,
    /// so that nothing is deleted through a live mount.
    dir: Option<tempfile::TempDir>,
    mounted: bool,
}

impl LoopBtrfs {
    fn mount(scratch: &Path) -> Result<LoopBtrfs> {
        let dir = tempfile::Builder::new()
            .prefix("oxve-bench-btrfs-")
            .tempdir_in(scratch)
            .map_err(BenchError::file(scratch))?;
        let image = dir.path().join("btrfs.img");
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
        let mnt = make_dir(&dir.path().join("mnt"))?;
        let mut fs = LoopBtrfs {
            mnt,
            dir: Some(dir),
            mounted: false,
        };
        run_tool(
            "mount -o loop",
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&fs.mnt),
        )?;
        fs.mounted = true;
        Ok(fs)
    }

    /// A directory for the plugin's locks, outside the file system under test.
    fn run_dir(&self) -> Result<PathBuf> {
        let base = self.dir.as_ref().map(|d| d.path()).unwrap_or(&self.mnt);
        make_dir(&base.join("run"))
    }

    /// Unmounts (the loop device goes with it) and removes the image.
    fn unmount(mut self) -> Result<()> {
        self.release()
    }

    fn release(&mut self) -> Result<()> {
        if self.mounted {
            run_tool("umount", Command::new("umount").arg(&self.mnt)).inspect_err(|_| {
                // Never delete through a live mount: leave it for a human.
                if let Some(dir) = self.dir.take() {
                    let kept = dir.keep();
                    eprintln!(
                        "oxve-bench: warning: {} is still mounted; left {} in place",
                        self.mnt.display(),
                        kept.display()
                    );
                }
            })?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("oxve-bench: warning: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_interleaves_and_counts_each_side() {
        let order = std::cell::RefCell::new(Vec::new());
        let (ours, theirs) = measure(
            3,
            |vmid| {
                order.borrow_mut().push(format!("oxve {vmid}"));
                Ok(())
            },
            |n| {
                order.borrow_mut().push(format!("hand {n}"));
                Ok(())
            },
        )
        .expect("measured");
        assert_eq!(
            order.into_inner(),
            ["oxve 101", "hand 0", "hand 1", "oxve 102", "oxve 103", "hand 2"]
        );
        assert!(ours.p50_ms >= 0.0 && theirs.p90_ms >= 0.0);
    }

    #[test]
    fn measure_stops_at_the_first_failure() {
        let failed = measure(
            2,
            |_| Ok(()),
            |_| Err(BenchError::Missing("no tool".into())),
        );
        assert!(failed.is_err());
    }

    #[test]
    fn qcow2_clones_in_a_directory() {
        // The real thing when qemu-img is there; the test says so otherwise.
        if need_tool("qemu-img", "qemu-utils").is_err() {
            eprintln!("skipped: qemu-img is not installed");
            return;
        }
        let scratch = tempfile::tempdir().expect("temp dir");
        let figures = dir(scratch.path(), 2).expect("measured");
        assert_eq!(figures.clones, 2);
        assert!(figures.oxve.p50_ms > 0.0 && figures.baseline.p50_ms > 0.0);
    }
}
