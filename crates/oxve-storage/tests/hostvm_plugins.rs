//! The block and network plugins against the real thing, inside the test
//! host VM (`tests/hostvm/storage-tests.sh` starts the services and runs
//! this binary there): LVM and LVM-thin on a loop-device volume group, NFS
//! and CIFS against servers on the VM's loopback, iSCSI against a `tgt`
//! target. The services are described by `OXVE_VM_*` variables.
//!
//! Outside the VM these tests skip: device-mapper and the NFS, CIFS and
//! iSCSI clients are on the known-absent list of the CI host
//! (`tests/known-absent`), and the CI runs this binary in the VM instead.
//! Inside the VM a missing service fails the test.

mod common;

use common::{in_ci, read_at, write_at};
use oxve_storage::exec::SystemRunner;
use oxve_storage::{plugins, Env, StorageConfig, StoragePlugin};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The services' variable, or `None` (with a message) outside the VM.
fn vm_var(name: &str) -> Option<String> {
    if std::env::var("OXVE_HOSTVM_SERVICES").is_err() {
        let features = known_absent();
        for f in [
            "device-mapper",
            "nfs-client",
            "cifs-client",
            "iscsi-initiator",
        ] {
            assert!(
                !in_ci() || features.iter().any(|k| k == f),
                "{f} is not on the known-absent list, yet this test runs outside the test host VM"
            );
        }
        eprintln!(
            "skipped: runs inside the test host VM (tests/hostvm/storage-tests.sh); \
             device-mapper, NFS, CIFS and iSCSI are known absent on this host"
        );
        return None;
    }
    Some(std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set in the test host VM")))
}

/// `tests/known-absent`: one kernel feature per line, `#` comments.
fn known_absent() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/known-absent");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn open(cfg: &str, id: &str, run: &Path, secret: Option<&str>) -> Box<dyn StoragePlugin> {
    let def = StorageConfig::parse(cfg).get(id).unwrap();
    let env = Env {
        runner: Arc::new(SystemRunner),
        run_dir: run.to_path_buf(),
        secret: secret.map(str::to_string),
    };
    plugins::open(def, env).unwrap()
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let dir = dir.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*dir))
}

fn volnames(p: &dyn StoragePlugin, vmid: u32) -> Vec<String> {
    let mut v: Vec<String> = p
        .list_images(Some(vmid))
        .unwrap()
        .into_iter()
        .map(|i| i.volid)
        .collect();
    v.sort();
    v
}

#[test]
fn lvm_alloc_resize_rename_export_import_free() {
    let Some(vg) = vm_var("OXVE_VM_VG") else {
        return;
    };
    let run = tempfile::tempdir().unwrap();
    let cfg = format!("lvm: vmlvm\n\tvgname {vg}\n\tcontent images,rootdir\n\tsaferemove 0\n\n");
    let p = open(&cfg, "vmlvm", run.path(), None);
    p.activate().unwrap();
    let before = p.status().unwrap();
    assert!(before.total >= 512 << 20, "{before:?}");

    let a = p.alloc_image(901, None, None, 16 * 1024).unwrap();
    let b = p.alloc_image(901, None, None, 16 * 1024).unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("vm-901-disk-0", "vm-901-disk-1"));
    assert_eq!(
        volnames(&*p, 901),
        ["vmlvm:vm-901-disk-0", "vmlvm:vm-901-disk-1"]
    );
    assert!(p.status().unwrap().avail < before.avail);
    let dev = p.path(&a).unwrap();
    assert_eq!(dev, PathBuf::from(format!("/dev/{vg}/vm-901-disk-0")));
    p.activate_volume(&a).unwrap();
    write_at(&dev, 4096, b"oxve lvm data");

    p.resize(&a, 32 << 20).unwrap();
    assert_eq!(p.volume_size(&a).unwrap().0, 32 << 20);
    assert_eq!(read_at(&dev, 4096, 13), b"oxve lvm data");

    let renamed = p.rename(&b, 902, "vm-902-disk-0").unwrap();
    assert_eq!(renamed, "vm-902-disk-0");
    assert_eq!(volnames(&*p, 902), ["vmlvm:vm-902-disk-0"]);

    // raw+size out of one volume and into a new one: the same bytes.
    let mut stream = Vec::new();
    p.export(&a, "raw+size", None, &mut stream).unwrap();
    assert_eq!(stream.len() as u64, 8 + (32 << 20));
    let copy = p
        .import(903, "vm-903-disk-0", "raw+size", &mut stream.as_slice())
        .unwrap();
    let copy_dev = p.path(&copy).unwrap();
    p.activate_volume(&copy).unwrap();
    assert_eq!(read_at(&copy_dev, 4096, 13), b"oxve lvm data");
    assert_eq!(p.volume_size(&copy).unwrap().0, 32 << 20);

    // Concurrent allocations for one guest: every one gets its own disk.
    let mut names: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| p.alloc_image(905, None, None, 4096).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    names.sort();
    assert_eq!(
        names,
        [
            "vm-905-disk-0",
            "vm-905-disk-1",
            "vm-905-disk-2",
            "vm-905-disk-3"
        ]
    );
    for n in &names {
        p.free_image(n).unwrap();
    }

    // Out of space: the error names it and no volume is left behind.
    let err = p.alloc_image(904, None, None, 64 << 30).unwrap_err();
    assert!(
        err.to_string().contains("space") || err.to_string().contains("extents"),
        "{err}"
    );
    assert!(volnames(&*p, 904).is_empty());

    for v in [&a, &renamed, &copy] {
        p.free_image(v).unwrap();
    }
    assert!(volnames(&*p, 901).is_empty());
    assert!(!sh(&format!("lvs --noheadings -o lv_name {vg}")).contains("vm-90"));
    assert_eq!(p.status().unwrap().avail, before.avail);
}

#[test]
fn lvmthin_snapshots_base_and_linked_clones() {
    let (Some(vg), Some(pool)) = (vm_var("OXVE_VM_VG"), vm_var("OXVE_VM_THINPOOL")) else {
        return;
    };
    let run = tempfile::tempdir().unwrap();
    let cfg = format!("lvmthin: vmthin\n\tthinpool {pool}\n\tvgname {vg}\n\tcontent images\n\n");
    let p = open(&cfg, "vmthin", run.path(), None);
    p.activate().unwrap();
    let usage = p.status().unwrap();
    assert!(usage.total > 0 && usage.avail <= usage.total, "{usage:?}");

    // Thin volumes may be larger than the pool (without being written).
    let big = p.alloc_image(910, None, None, 4 << 20).unwrap();
    assert_eq!(p.volume_size(&big).unwrap().0, 4 << 30);
    p.free_image(&big).unwrap();

    let v = p.alloc_image(911, None, None, 32 << 10).unwrap();
    assert_eq!(v, "vm-911-disk-0");
    assert_eq!(p.volume_size(&v).unwrap().0, 32 << 20);
    p.activate_volume(&v).unwrap();
    let dev = p.path(&v).unwrap();
    write_at(&dev, 0, b"before snapshot");

    p.snapshot(&v, "snap1").unwrap();
    write_at(&dev, 0, b"after snapshot!");
    p.rollback(&v, "snap1").unwrap();
    p.activate_volume(&v).unwrap();
    assert_eq!(read_at(&dev, 0, 15), b"before snapshot");
    p.delete_snapshot(&v, "snap1").unwrap();
    assert!(!sh(&format!("lvs --noheadings -o lv_name {vg}")).contains("snap_vm-911-disk-0_snap1"));

    // A template's base volume and two linked clones of it.
    let base = p.create_base(&v).unwrap();
    assert_eq!(base, "base-911-disk-0");
    let c1 = p.clone_image(&base, 912, "vm-912-disk-0").unwrap();
    let c2 = p.clone_image(&base, 913, "vm-913-disk-0").unwrap();
    assert_eq!(
        (c1.as_str(), c2.as_str()),
        ("vm-912-disk-0", "vm-913-disk-0")
    );
    for c in [&c1, &c2] {
        p.activate_volume(c).unwrap();
        assert_eq!(read_at(&p.path(c).unwrap(), 0, 15), b"before snapshot");
    }
    write_at(&p.path(&c1).unwrap(), 0, b"clone one wrote");
    assert_eq!(read_at(&p.path(&c2).unwrap(), 0, 15), b"before snapshot");

    p.resize(&c1, 48 << 20).unwrap();
    assert_eq!(p.volume_size(&c1).unwrap().0, 48 << 20);

    // raw+size of a clone into a fresh volume.
    let mut stream = Vec::new();
    p.export(&c1, "raw+size", None, &mut stream).unwrap();
    let imported = p
        .import(914, "vm-914-disk-0", "raw+size", &mut stream.as_slice())
        .unwrap();
    p.activate_volume(&imported).unwrap();
    assert_eq!(
        read_at(&p.path(&imported).unwrap(), 0, 15),
        b"clone one wrote"
    );

    for vol in [&c1, &c2, &imported, &base] {
        p.free_image(vol).unwrap();
    }
    for vmid in 910..=914 {
        assert!(volnames(&*p, vmid).is_empty(), "vmid {vmid} left volumes");
    }
}

/// What the file-based network storages share: mount on activate, images
/// and their qcow2 snapshots on the share, unmount on deactivate.
fn network_share(p: &dyn StoragePlugin, mountpoint: &Path, server_dir: &Path, vmid: u32) {
    p.activate().unwrap();
    assert!(
        is_mounted(mountpoint),
        "{} not mounted",
        mountpoint.display()
    );
    p.activate().unwrap(); // idempotent
    let usage = p.status().unwrap();
    assert!(usage.total > 0, "{usage:?}");

    let raw = p.alloc_image(vmid, Some("raw"), None, 1024).unwrap();
    let qcow = p.alloc_image(vmid, Some("qcow2"), None, 1024).unwrap();
    assert_eq!(raw, format!("{vmid}/vm-{vmid}-disk-0.raw"));
    assert_eq!(qcow, format!("{vmid}/vm-{vmid}-disk-1.qcow2"));
    // The server sees the files where upstream puts them.
    assert!(server_dir.join(format!("images/{raw}")).is_file());
    assert!(server_dir.join(format!("images/{qcow}")).is_file());
    p.snapshot(&qcow, "s1").unwrap();
    assert!(sh(&format!(
        "qemu-img snapshot -l {}",
        p.path(&qcow).unwrap().display()
    ))
    .contains("s1"));
    p.delete_snapshot(&qcow, "s1").unwrap();
    assert_eq!(volnames(p, vmid).len(), 2);
    p.free_image(&raw).unwrap();
    p.free_image(&qcow).unwrap();
    assert!(volnames(p, vmid).is_empty());

    p.deactivate().unwrap();
    assert!(
        !is_mounted(mountpoint),
        "{} still mounted",
        mountpoint.display()
    );
}

#[test]
fn nfs_mounts_and_holds_images() {
    let (Some(server), Some(export)) = (vm_var("OXVE_VM_NFS_SERVER"), vm_var("OXVE_VM_NFS_EXPORT"))
    else {
        return;
    };
    let run = tempfile::tempdir().unwrap();
    let mnt = run.path().join("mnt/vmnfs");
    let cfg = format!(
        "nfs: vmnfs\n\texport {export}\n\tpath {}\n\tserver {server}\n\tcontent images,iso\n\toptions vers=4.2\n\n",
        mnt.display()
    );
    let p = open(&cfg, "vmnfs", run.path(), None);
    network_share(&*p, &mnt, Path::new(&export), 921);
}

#[test]
fn cifs_mounts_with_its_secret_and_holds_images() {
    let (Some(share), Some(user), Some(password), Some(dir)) = (
        vm_var("OXVE_VM_CIFS_SHARE"),
        vm_var("OXVE_VM_CIFS_USER"),
        vm_var("OXVE_VM_CIFS_PASSWORD"),
        vm_var("OXVE_VM_CIFS_DIR"),
    ) else {
        return;
    };
    let run = tempfile::tempdir().unwrap();
    let mnt = run.path().join("mnt/vmcifs");
    let cfg = format!(
        "cifs: vmcifs\n\tpath {}\n\tserver 127.0.0.1\n\tshare {share}\n\tcontent images\n\tusername {user}\n\n",
        mnt.display()
    );
    // A wrong password: activation fails with the server's refusal, nothing mounted.
    let bad = open(&cfg, "vmcifs", run.path(), Some("not-the-password"));
    let err = bad.activate().unwrap_err().to_string();
    assert!(
        !err.contains("not-the-password"),
        "the secret leaked into: {err}"
    );
    assert!(!is_mounted(&mnt));

    let p = open(&cfg, "vmcifs", run.path(), Some(&password));
    network_share(&*p, &mnt, Path::new(&dir), 931);
}

#[test]
fn iscsi_logs_in_and_lists_its_lun() {
    let (Some(portal), Some(target)) = (
        vm_var("OXVE_VM_ISCSI_PORTAL"),
        vm_var("OXVE_VM_ISCSI_TARGET"),
    ) else {
        return;
    };
    let run = tempfile::tempdir().unwrap();
    let cfg = format!("iscsi: vmiscsi\n\tportal {portal}\n\ttarget {target}\n\tcontent images\n\n");
    let p = open(&cfg, "vmiscsi", run.path(), None);
    p.activate().unwrap();
    assert!(sh("iscsiadm -m session").contains(&target));
    p.activate().unwrap(); // logged in already: a rescan

    // The LUN appears once udev has made its by-id link.
    let mut luns = Vec::new();
    for _ in 0..100 {
        luns = p.list_images(None).unwrap();
        if !luns.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(luns.len(), 1, "{luns:?}");
    let lun = &luns[0];
    assert_eq!(lun.size, 64 << 20);
    let volname = lun.volid.split_once(':').unwrap().1.to_string();
    assert!(volname.starts_with("0.0.1."), "{volname}");
    p.activate_volume(&volname).unwrap();
    let dev = p.path(&volname).unwrap();
    write_at(&dev, 512, b"iscsi bytes");
    assert_eq!(read_at(&dev, 512, 11), b"iscsi bytes");
    let mut stream = Vec::new();
    p.export(&volname, "raw+size", None, &mut stream).unwrap();
    assert_eq!(&stream[8 + 512..8 + 523], b"iscsi bytes");
    // A LUN is not allocated or freed by oxve.
    assert!(p.alloc_image(941, None, None, 1024).is_err());

    p.deactivate().unwrap();
    assert!(!sh("iscsiadm -m session 2>&1 || true").contains(&target));
}
