//! The dir and btrfs plugins against the real thing: a temporary directory
//! with `qemu-img`, and a btrfs file system on a loop-mounted image
//! (subvolumes, snapshots, linked clones, send/receive). Needs root; under
//! `CI=true` a missing capability fails instead of skipping.

mod common;

use common::{in_ci, read_at, write_at};
use oxve_storage::exec::SystemRunner;
use oxve_storage::{plugins, Env, StorageConfig, StoragePlugin};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn need(ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("required capability missing (CI=true forbids skipping): {why}");
    }
    eprintln!("skipped: {why}");
    false
}

fn open(cfg: &str, id: &str, run: &Path) -> Box<dyn StoragePlugin> {
    let def = StorageConfig::parse(cfg).get(id).unwrap();
    let env = Env {
        runner: Arc::new(SystemRunner),
        run_dir: run.to_path_buf(),
        secret: None,
    };
    let p = plugins::open(def, env).unwrap();
    p.activate().unwrap();
    p
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn dir_with_qemu_img() {
    if !need(
        Command::new("qemu-img").arg("--version").output().is_ok(),
        "qemu-img (qemu-utils) is not installed",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = format!(
        "dir: d\n\tpath {}\n\tcontent images,rootdir,iso\n\n",
        tmp.path().join("store").display()
    );
    let p = open(&cfg, "d", tmp.path());
    // Two allocations without a name get different disks.
    let a = p.alloc_image(100, Some("qcow2"), None, 1024).unwrap();
    let b = p.alloc_image(100, Some("raw"), None, 2048).unwrap();
    assert_eq!(
        (a.as_str(), b.as_str()),
        ("100/vm-100-disk-0.qcow2", "100/vm-100-disk-1.raw")
    );
    assert_eq!(p.volume_size(&a).unwrap().0, 1024 * 1024);
    p.resize(&b, 4 << 20).unwrap();
    assert_eq!(p.volume_size(&b).unwrap().0, 4 << 20);
    p.snapshot(&a, "s1").unwrap();
    p.delete_snapshot(&a, "s1").unwrap();
    assert!(p.snapshot(&b, "s1").is_err(), "raw files have no snapshots");
    // Template and linked clone.
    let base = p.create_base(&a).unwrap();
    assert_eq!(base, "100/base-100-disk-0.qcow2");
    let clone = p.clone_image(&base, 101, "vm-101-disk-0.qcow2").unwrap();
    assert_eq!(clone, "100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2");
    let listed: Vec<String> = p
        .list_images(None)
        .unwrap()
        .into_iter()
        .map(|v| v.volid)
        .collect();
    assert!(listed.contains(&format!("d:{clone}")), "{listed:?}");
    assert!(p.free_image(&base).is_err(), "a base with clones stays");
    // Export/import round trip as raw+size.
    write_at(&p.path(&b).unwrap(), 12345, b"oxve-data");
    let mut stream = Vec::new();
    p.export(&b, "raw+size", None, &mut stream).unwrap();
    let imported = p
        .import(102, "vm-102-disk-0.raw", "raw+size", &mut stream.as_slice())
        .unwrap();
    assert_eq!(read_at(&p.path(&imported).unwrap(), 12345, 9), b"oxve-data");
    for v in [&clone, &base, &b, &imported] {
        p.free_image(v).unwrap();
    }
    assert!(p.list_images(None).unwrap().is_empty());
}

/// A btrfs file system on a loop-mounted image, unmounted on drop.
struct BtrfsMount {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl BtrfsMount {
    fn new() -> Option<BtrfsMount> {
        let tmp = tempfile::tempdir().ok()?;
        let image = tmp.path().join("fs.img");
        std::fs::File::create(&image)
            .ok()?
            .set_len(256 << 20)
            .ok()?;
        let ok = Command::new("mkfs.btrfs")
            .arg("-q")
            .arg(&image)
            .status()
            .ok()?
            .success();
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).ok()?;
        let mounted = ok
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&dir)
                .status()
                .ok()?
                .success();
        mounted.then_some(BtrfsMount { dir, _tmp: tmp })
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn btrfs_on_a_loop_device() {
    if !need(is_root(), "btrfs test needs root (loop mount)") {
        return;
    }
    let have_tools = Command::new("mkfs.btrfs").arg("--version").output().is_ok();
    if !need(have_tools, "mkfs.btrfs (btrfs-progs) is not installed") {
        return;
    }
    let mount = BtrfsMount::new();
    if !need(
        mount.is_some(),
        "cannot create and loop-mount a btrfs file system",
    ) {
        return;
    }
    let mount = mount.unwrap();
    let cfg = format!(
        "btrfs: b\n\tpath {}\n\tcontent images,rootdir\n\n",
        mount.dir.display()
    );
    let p = open(&cfg, "b", &mount.dir);
    let disk = p.alloc_image(100, None, None, 4096).unwrap();
    assert_eq!(disk, "100/vm-100-disk-0.raw");
    let ct = p.alloc_image(100, Some("subvol"), None, 0).unwrap();
    assert_eq!(ct, "100/subvol-100-disk-0.subvol");
    let path = p.path(&disk).unwrap();
    assert!(
        path.ends_with("images/100/vm-100-disk-0/disk.raw"),
        "{}",
        path.display()
    );
    write_at(&path, 0, b"before");
    p.snapshot(&disk, "s1").unwrap();
    write_at(&path, 0, b"after!");
    p.rollback(&disk, "s1").unwrap();
    assert_eq!(read_at(&p.path(&disk).unwrap(), 0, 6), b"before");
    p.delete_snapshot(&disk, "s1").unwrap();
    // Template, then a clone that is a writable snapshot of it.
    let base = p.create_base(&disk).unwrap();
    let clone = p.clone_image(&base, 101, "vm-101-disk-0.raw").unwrap();
    write_at(&p.path(&clone).unwrap(), 0, b"clone!");
    assert_eq!(read_at(&p.path(&base).unwrap(), 0, 6), b"before");
    // send/receive round trip.
    let mut stream = Vec::new();
    p.export(&clone, "btrfs", None, &mut stream).unwrap();
    let copy = p
        .import(102, "vm-102-disk-0.raw", "btrfs", &mut stream.as_slice())
        .unwrap();
    assert_eq!(read_at(&p.path(&copy).unwrap(), 0, 6), b"clone!");
    write_at(&p.path(&copy).unwrap(), 0, b"write!");
    let names: Vec<String> = p
        .list_images(None)
        .unwrap()
        .into_iter()
        .map(|v| v.volid)
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for v in [&copy, &clone, &base, &ct] {
        p.free_image(v).unwrap();
    }
    assert!(p.list_images(None).unwrap().is_empty());
    assert!(p.status().unwrap().total > 0);
}

/// `tar+size` carries a container's subvolume between a directory storage
/// and btrfs and back, keeping numeric owners, modes, symlinks and holes.
#[test]
fn tar_size_moves_container_subvolumes_between_dir_and_btrfs() {
    if !need(is_root(), "tar+size test needs root (owners, loop mount)") {
        return;
    }
    let Some(mount) = BtrfsMount::new() else {
        need(false, "cannot create and loop-mount a btrfs file system");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = format!(
        "dir: d\n\tpath {}\n\tcontent rootdir\n\nbtrfs: b\n\tpath {}\n\tcontent rootdir\n\n",
        tmp.path().join("d").display(),
        mount.dir.display()
    );
    let dir = open(&cfg, "d", tmp.path());
    let btrfs = open(&cfg, "b", tmp.path());

    let ct = dir.alloc_image(200, Some("subvol"), None, 0).unwrap();
    let root = dir.path(&ct).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "ct200\n").unwrap();
    std::os::unix::fs::symlink("hostname", root.join("etc/name")).unwrap();
    let sparse = std::fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    write_at(&root.join("sparse"), 32 << 20, b"middle");
    // An unprivileged container's shifted ids.
    std::os::unix::fs::chown(root.join("etc/hostname"), Some(100_000), Some(100_005)).unwrap();
    std::fs::set_permissions(
        root.join("etc/hostname"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();

    let mut stream = Vec::new();
    dir.export(&ct, "tar+size", None, &mut stream).unwrap();
    let on_btrfs = btrfs
        .import(
            201,
            "subvol-201-disk-0.subvol",
            "tar+size",
            &mut stream.as_slice(),
        )
        .unwrap();
    let mut back_stream = Vec::new();
    btrfs
        .export(&on_btrfs, "tar+size", None, &mut back_stream)
        .unwrap();
    let back = dir
        .import(
            202,
            "subvol-202-disk-0.subvol",
            "tar+size",
            &mut back_stream.as_slice(),
        )
        .unwrap();

    for (p, vol) in [(&btrfs, &on_btrfs), (&dir, &back)] {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let r = p.path(vol).unwrap();
        assert_eq!(
            std::fs::read_to_string(r.join("etc/hostname")).unwrap(),
            "ct200\n"
        );
        let meta = std::fs::metadata(r.join("etc/hostname")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (100_000, 100_005));
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(
            std::fs::read_link(r.join("etc/name")).unwrap(),
            Path::new("hostname")
        );
        let sparse = std::fs::metadata(r.join("sparse")).unwrap();
        assert_eq!(sparse.len(), 64 << 20);
        assert!(sparse.blocks() * 512 < 1 << 20, "the hole was filled in");
        assert_eq!(read_at(&r.join("sparse"), 32 << 20, 6), b"middle");
    }

    // A stream cut short: the import fails and leaves no volume.
    let cut = &stream[..stream.len() / 2];
    assert!(btrfs
        .import(203, "subvol-203-disk-0.subvol", "tar+size", &mut &cut[..])
        .is_err());
    assert!(btrfs.list_images(Some(203)).unwrap().is_empty());
    // Only subvolumes travel as tar+size.
    let raw = dir.alloc_image(204, Some("raw"), None, 1024);
    assert!(
        raw.is_err()
            || dir
                .export(&raw.unwrap(), "tar+size", None, &mut Vec::new())
                .is_err()
    );

    for (p, v) in [(&btrfs, &on_btrfs), (&dir, &back), (&dir, &ct)] {
        p.free_image(v).unwrap();
    }
}
