//! Golden tests of the `nfs` plugin: the mount command line, and the
//! directory behaviour it shares with `dir` once mounted.

use oxve_storage::exec::RecordingRunner;
use oxve_storage::{Env, StorageConfig, StoragePlugin};
use std::sync::Arc;

fn open(section: &str, runner: RecordingRunner) -> (Box<dyn StoragePlugin>, Arc<RecordingRunner>) {
    let runner = Arc::new(runner);
    let def = StorageConfig::parse(section).storages().remove(0);
    let env = Env {
        runner: runner.clone(),
        run_dir: std::env::temp_dir().join("oxve-golden-nfs-run"),
        secret: None,
    };
    (oxve_storage::plugins::open(def, env).unwrap(), runner)
}

#[test]
fn activate_mounts_then_makes_content_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nas");
    let cfg = format!(
        "nfs: nas\n\texport /srv/nfs\n\tpath {}\n\tserver 10.0.0.5\n\tcontent images,iso\n\toptions vers=4.2\n\n",
        path.display()
    );
    let (p, r) = open(&cfg, RecordingRunner::new());
    p.activate().unwrap();
    assert_eq!(
        r.commands(),
        [format!(
            "mount -t nfs 10.0.0.5:/srv/nfs {} -o vers=4.2",
            path.display()
        )]
    );
    assert!(path.join("images").is_dir() && path.join("template/iso").is_dir());
    // Nothing is mounted there really, so there is no space to report.
    assert!(p.status().unwrap_err().to_string().contains("not active"));
    p.deactivate().unwrap();
    assert_eq!(r.commands().len(), 1, "nothing mounted, nothing to unmount");
}

#[test]
fn ipv6_server_in_brackets_and_failed_mount() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "nfs: v6\n\texport /export\n\tpath {}\n\tserver fd00::5\n\n",
        dir.path().display()
    );
    let (p, r) = open(
        &cfg,
        RecordingRunner::new().fail("mount", "mount.nfs: Connection timed out"),
    );
    let err = p.activate().unwrap_err().to_string();
    assert!(err.contains("Connection timed out"), "{err}");
    assert_eq!(
        r.commands(),
        [format!(
            "mount -t nfs [fd00::5]:/export {}",
            dir.path().display()
        )]
    );
}

#[test]
fn missing_base_directory_without_mkdir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let cfg = format!(
        "nfs: nas\n\texport /e\n\tpath {}\n\tserver nas.example\n\tcreate-base-path 0\n\n",
        path.display()
    );
    let (p, r) = open(&cfg, RecordingRunner::new());
    assert!(p
        .activate()
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
    assert!(r.commands().is_empty());
}

#[test]
fn deactivate_unmounts_a_mount_point() {
    // /proc is a mount point on every Linux host; the runner only records.
    let (p, r) = open(
        "nfs: proc\n\texport /e\n\tpath /proc\n\tserver 10.0.0.5\n\n",
        RecordingRunner::new(),
    );
    p.deactivate().unwrap();
    assert_eq!(r.commands(), ["umount /proc"]);
}

#[test]
fn images_are_files_under_the_mount() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "nfs: nas\n\texport /e\n\tpath {}\n\tserver 10.0.0.5\n\tcontent images\n\n",
        dir.path().display()
    );
    let (p, r) = open(&cfg, RecordingRunner::new());
    assert_eq!(
        p.alloc_image(100, None, None, 1024).unwrap(),
        "100/vm-100-disk-0.raw"
    );
    assert_eq!(
        p.alloc_image(100, None, None, 1024).unwrap(),
        "100/vm-100-disk-1.raw"
    );
    assert_eq!(
        p.alloc_image(100, Some("qcow2"), None, 1024).unwrap(),
        "100/vm-100-disk-2.qcow2"
    );
    let path = p.path("100/vm-100-disk-1.raw").unwrap();
    assert_eq!(path, dir.path().join("images/100/vm-100-disk-1.raw"));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024 * 1024);
    assert_eq!(
        r.commands(),
        [format!(
            "qemu-img create -o preallocation=metadata -f qcow2 {} 1024K",
            dir.path().join("images/100/vm-100-disk-2.qcow2").display()
        )]
    );
    p.free_image("100/vm-100-disk-0.raw").unwrap();
    assert!(!dir.path().join("images/100/vm-100-disk-0.raw").exists());
}
