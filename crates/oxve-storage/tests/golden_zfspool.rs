//! Golden tests of the `zfspool` plugin: zvols and subvolumes, snapshots,
//! base volumes and clones, send/receive, against captured `zfs list`.

use oxve_storage::exec::RecordingRunner;
use oxve_storage::plugins::zfspool::parse_zfs_list;
use oxve_storage::{Env, StorageConfig, StorageError, StoragePlugin, Usage};
use std::sync::Arc;

const LIST: &str = include_str!("data/zfs-list.txt");
const LIST_CMD: &str =
    "zfs list -o name,volsize,origin,type,refquota -t volume,filesystem -d1 -Hp rpool/data";

fn open(
    extra: &str,
    runner: RecordingRunner,
) -> (
    Box<dyn StoragePlugin>,
    Arc<RecordingRunner>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(runner.reply("zfs list", LIST));
    let cfg = format!("zfspool: local-zfs\n\tpool rpool/data\n\tblocksize 16k\n\tcontent images,rootdir\n\tsparse 1\n{extra}\n");
    let def = StorageConfig::parse(&cfg).get("local-zfs").unwrap();
    let env = Env {
        runner: runner.clone(),
        run_dir: dir.path().join("run"),
        secret: None,
    };
    (oxve_storage::plugins::open(def, env).unwrap(), runner, dir)
}

#[test]
fn list_parses_direct_children() {
    let list = parse_zfs_list(LIST, "rpool/data");
    let names: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "base-101-disk-0",
            "subvol-103-disk-0",
            "subvol-104-disk-0",
            "vm-100-disk-0",
            "vm-102-disk-0"
        ]
    );
    assert_eq!(
        (list[1].kind.as_str(), list[1].size),
        ("filesystem", 8589934592)
    );
    assert_eq!(list[4].origin.as_deref(), Some("base-101-disk-0@__base__"));
    assert!(parse_zfs_list(LIST, "rpool").is_empty());
}

#[test]
fn activate_imports_and_mounts() {
    let (p, r, _d) = open("", RecordingRunner::new().reply("zpool list", "rpool\n"));
    p.activate().unwrap();
    assert_eq!(
        r.commands(),
        ["zpool list -o name -H rpool", "zfs mount -a"]
    );

    let (p, r, _d) = open(
        "",
        RecordingRunner::new().fail("zpool list", "cannot open 'rpool': no such pool"),
    );
    p.activate().unwrap();
    assert_eq!(
        r.commands(),
        [
            "zpool list -o name -H rpool",
            "zpool import -d /dev/disk/by-id/ -o cachefile=none rpool",
            "zfs mount -a"
        ]
    );
}

#[test]
fn status_list_and_paths() {
    let (p, r, _d) = open(
        "",
        RecordingRunner::new().reply(
            "zfs get -o value -Hp available,used rpool/data",
            "800000000000\n200000000000\n",
        ),
    );
    assert_eq!(
        p.status().unwrap(),
        Usage {
            total: 1000000000000,
            used: 200000000000,
            avail: 800000000000
        }
    );
    let list = p.list_images(None).unwrap();
    let ids: Vec<&str> = list.iter().map(|v| v.volid.as_str()).collect();
    assert_eq!(
        ids,
        [
            "local-zfs:base-101-disk-0",
            "local-zfs:subvol-103-disk-0",
            "local-zfs:subvol-104-disk-0",
            "local-zfs:vm-100-disk-0",
            "local-zfs:base-101-disk-0/vm-102-disk-0",
        ]
    );
    assert_eq!(
        (list[1].format.as_str(), list[1].size),
        ("subvol", 8589934592)
    );
    assert_eq!(list[4].parent.as_deref(), Some("base-101-disk-0"));
    assert_eq!(
        r.commands(),
        ["zfs get -o value -Hp available,used rpool/data", LIST_CMD]
    );

    assert_eq!(
        p.path("vm-100-disk-0").unwrap().to_str(),
        Some("/dev/zvol/rpool/data/vm-100-disk-0")
    );
    assert_eq!(
        p.path("base-101-disk-0/vm-102-disk-0").unwrap().to_str(),
        Some("/dev/zvol/rpool/data/vm-102-disk-0")
    );
    assert_eq!(
        p.path("subvol-103-disk-0").unwrap().to_str(),
        Some("/rpool/data/subvol-103-disk-0")
    );
    let (p, _r, _d) = open("\tmountpoint /tank\n", RecordingRunner::new());
    assert_eq!(
        p.path("subvol-103-disk-0").unwrap().to_str(),
        Some("/tank/subvol-103-disk-0")
    );
}

#[test]
fn alloc_zvols_and_subvolumes() {
    let taken = "cannot create 'rpool/data/vm-105-disk-0': dataset already exists";
    let (p, r, _d) = open(
        "",
        RecordingRunner::new().fail(
            "zfs create -s -b 16k -V 4194304k rpool/data/vm-105-disk-0",
            taken,
        ),
    );
    assert_eq!(
        p.alloc_image(105, None, None, 4 * 1024 * 1024).unwrap(),
        "vm-105-disk-1"
    );
    // Taken names from the listing are skipped; sizes round up to whole MiB.
    assert_eq!(
        p.alloc_image(100, Some("raw"), None, 1000).unwrap(),
        "vm-100-disk-1"
    );
    assert_eq!(
        p.alloc_image(103, Some("subvol"), None, 8 * 1024 * 1024)
            .unwrap(),
        "subvol-103-disk-1"
    );
    assert_eq!(
        p.alloc_image(106, Some("subvol"), None, 0).unwrap(),
        "subvol-106-disk-0"
    );
    assert_eq!(
        r.commands(),
        [
            LIST_CMD,
            "zfs create -s -b 16k -V 4194304k rpool/data/vm-105-disk-0",
            "zfs create -s -b 16k -V 4194304k rpool/data/vm-105-disk-1",
            LIST_CMD,
            "zfs create -s -b 16k -V 1024k rpool/data/vm-100-disk-1",
            LIST_CMD,
            "zfs create -o acltype=posixacl -o xattr=sa -o refquota=8388608k rpool/data/subvol-103-disk-1",
            LIST_CMD,
            "zfs create -o acltype=posixacl -o xattr=sa -o refquota=none rpool/data/subvol-106-disk-0",
        ]
    );
    assert!(p
        .create_image(100, "subvol-100-disk-3", "raw", 1024)
        .is_err());
}

#[test]
fn free_size_resize() {
    let (p, r, _d) = open(
        "",
        RecordingRunner::new().reply(
            "zfs get -o value -Hp volsize,usedbydataset",
            "34359738368\n1234567\n",
        ),
    );
    p.free_image("vm-100-disk-0").unwrap();
    assert_eq!(
        p.volume_size("vm-100-disk-0").unwrap(),
        (34359738368, 1234567)
    );
    p.resize("vm-100-disk-0", 10 * 1024 * 1024 * 1024 + 512)
        .unwrap();
    p.resize("subvol-103-disk-0", 16 * 1024 * 1024 * 1024)
        .unwrap();
    assert_eq!(
        r.commands(),
        [
            "zfs destroy -r rpool/data/vm-100-disk-0",
            "zfs get -o value -Hp volsize,usedbydataset rpool/data/vm-100-disk-0",
            "zfs set volsize=10485760k rpool/data/vm-100-disk-0",
            "zfs set refquota=16777216k rpool/data/subvol-103-disk-0",
        ]
    );
    let (p, _r, _d) = open(
        "",
        RecordingRunner::new().fail(
            "zfs destroy",
            "cannot open 'rpool/data/vm-100-disk-9': dataset does not exist",
        ),
    );
    assert!(matches!(
        p.free_image("vm-100-disk-9"),
        Err(StorageError::NoSuchVolume(_))
    ));
}

#[test]
fn snapshots_track_subvolume_quota() {
    let runner = RecordingRunner::new()
        .reply(
            "zfs get -o value -Hp refquota rpool/data/subvol-103-disk-0",
            "8589934592\n",
        )
        .reply("zfs get -o value -Hp pve-storage:refquota", "8589934592\n")
        .fail(
            "zfs unmount",
            "cannot unmount 'rpool/data/subvol-103-disk-0': not currently mounted",
        );
    let (p, r, _d) = open("", runner);
    p.snapshot("vm-100-disk-0", "first").unwrap();
    p.rollback("vm-100-disk-0", "first").unwrap();
    p.delete_snapshot("vm-100-disk-0", "first").unwrap();
    p.snapshot("subvol-103-disk-0", "first").unwrap();
    p.rollback("subvol-103-disk-0", "first").unwrap();
    assert_eq!(
        r.commands(),
        [
            "zfs snapshot rpool/data/vm-100-disk-0@first",
            "zfs rollback rpool/data/vm-100-disk-0@first",
            "zfs destroy rpool/data/vm-100-disk-0@first",
            "zfs snapshot rpool/data/subvol-103-disk-0@first",
            "zfs get -o value -Hp refquota rpool/data/subvol-103-disk-0",
            "zfs set pve-storage:refquota=8589934592 rpool/data/subvol-103-disk-0@first",
            "zfs rollback rpool/data/subvol-103-disk-0@first",
            "zfs get -o value -Hp pve-storage:refquota rpool/data/subvol-103-disk-0@first",
            "zfs set refquota=8589934592 rpool/data/subvol-103-disk-0",
            "zfs unmount rpool/data/subvol-103-disk-0",
        ]
    );
    assert!(p.snapshot("vm-100-disk-0", "a@b").is_err());
}

#[test]
fn base_clone_rename() {
    let (p, r, _d) = open(
        "",
        RecordingRunner::new().reply("zfs get -o value -Hp refquota", "0\n"),
    );
    assert_eq!(p.create_base("vm-100-disk-0").unwrap(), "base-100-disk-0");
    assert_eq!(
        p.clone_image("base-101-disk-0", 102, "vm-102-disk-1")
            .unwrap(),
        "base-101-disk-0/vm-102-disk-1"
    );
    assert_eq!(
        p.clone_image("basevol-107-disk-0", 108, "subvol-108-disk-0")
            .unwrap(),
        "basevol-107-disk-0/subvol-108-disk-0"
    );
    assert!(p
        .clone_image("vm-100-disk-0", 102, "vm-102-disk-1")
        .is_err());
    assert_eq!(
        p.rename("base-101-disk-0/vm-102-disk-0", 105, "vm-105-disk-0")
            .unwrap(),
        "base-101-disk-0/vm-105-disk-0"
    );
    assert_eq!(
        r.commands(),
        [
            "zfs rename rpool/data/vm-100-disk-0 rpool/data/base-100-disk-0",
            "zfs snapshot rpool/data/base-100-disk-0@__base__",
            "zfs clone rpool/data/base-101-disk-0@__base__ rpool/data/vm-102-disk-1",
            "zfs get -o value -Hp refquota rpool/data/basevol-107-disk-0",
            "zfs clone rpool/data/basevol-107-disk-0@__base__ rpool/data/subvol-108-disk-0 -o refquota=none",
            "zfs rename rpool/data/vm-102-disk-0 rpool/data/vm-105-disk-0",
        ]
    );
    let (p, _r, _d) = open(
        "",
        RecordingRunner::new().fail(
            "zfs clone",
            "cannot create 'rpool/data/vm-102-disk-1': dataset already exists",
        ),
    );
    assert!(matches!(
        p.clone_image("base-101-disk-0", 102, "vm-102-disk-1"),
        Err(StorageError::AlreadyExists(_))
    ));
}

#[test]
fn send_receive_and_raw_streams() {
    let runner = RecordingRunner::new()
        .reply("zfs send", "ZFS-STREAM")
        .fail(
            "zfs get -H name rpool/data/vm-100-disk-5",
            "cannot open 'rpool/data/vm-100-disk-5': dataset does not exist",
        )
        .fail(
            "zfs get -H name rpool/data/vm-100-disk-6",
            "cannot open 'rpool/data/vm-100-disk-6': dataset does not exist",
        )
        .reply("blockdev", "2\n")
        .reply("dd if=", "zv");
    let (p, r, _d) = open("", runner);
    let mut out = Vec::new();
    p.export("vm-100-disk-0", "zfs", Some("__migration__"), &mut out)
        .unwrap();
    assert_eq!(out, b"ZFS-STREAM");
    assert!(p
        .export("vm-100-disk-0", "zfs", None, &mut Vec::new())
        .unwrap_err()
        .to_string()
        .contains("only export snapshots"));
    let mut raw = Vec::new();
    p.export("vm-100-disk-0", "raw+size", None, &mut raw)
        .unwrap();
    assert_eq!(raw, [&2u64.to_le_bytes()[..], b"zv"].concat());
    assert!(p
        .export("subvol-103-disk-0", "raw+size", None, &mut Vec::new())
        .is_err());

    assert_eq!(
        p.import(100, "vm-100-disk-5", "zfs", &mut &b"ZFS-STREAM"[..])
            .unwrap(),
        "vm-100-disk-5"
    );
    let stream = [&3u64.to_le_bytes()[..], b"abc"].concat();
    assert_eq!(
        p.import(100, "vm-100-disk-6", "raw+size", &mut &stream[..])
            .unwrap(),
        "vm-100-disk-6"
    );
    assert_eq!(
        r.commands(),
        [
            "zfs send -Rp -- rpool/data/vm-100-disk-0@__migration__",
            "blockdev --getsize64 /dev/zvol/rpool/data/vm-100-disk-0",
            "dd if=/dev/zvol/rpool/data/vm-100-disk-0 bs=64k status=none",
            "zfs get -H name rpool/data/vm-100-disk-5",
            "zfs recv -F -x encryption -- rpool/data/vm-100-disk-5",
            "zfs create -s -b 16k -V 1024k rpool/data/vm-100-disk-6",
            "udevadm settle --timeout=10 --exit-if-exists=/dev/zvol/rpool/data/vm-100-disk-6",
            "dd of=/dev/zvol/rpool/data/vm-100-disk-6 bs=64k conv=nocreat status=none",
        ]
    );
    // An existing target is reported, not overwritten.
    assert!(matches!(
        p.import(100, "vm-100-disk-0", "zfs", &mut &b""[..]),
        Err(StorageError::AlreadyExists(_))
    ));
}

#[test]
fn volume_activation() {
    let (p, r, _d) = open(
        "",
        RecordingRunner::new().reply("zfs get -o value -Hp mounted", "no\n"),
    );
    p.activate_volume("subvol-103-disk-0").unwrap();
    let err = p.activate_volume("vm-100-disk-0").unwrap_err().to_string();
    assert!(err.contains("no zvol device link"), "{err}");
    assert_eq!(
        r.commands(),
        [
            "zfs get -o value -Hp mounted rpool/data/subvol-103-disk-0",
            "zfs mount rpool/data/subvol-103-disk-0",
            "udevadm settle --timeout=10 --exit-if-exists=/dev/zvol/rpool/data/vm-100-disk-0",
        ]
    );
}
