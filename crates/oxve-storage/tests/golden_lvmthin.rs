//! Golden tests of the `lvmthin` plugin: thin volumes, thin snapshots,
//! base volumes and linked clones, against captured `lvs` output.

use oxve_storage::exec::RecordingRunner;
use oxve_storage::plugins::lvm::parse_lvs;
use oxve_storage::{Env, StorageConfig, StorageError, StoragePlugin, Usage};
use std::sync::Arc;

const VGS: &str = "  pve:1939502497792:0:7\n";
const LVS: &str = include_str!("data/lvmthin-lvs.txt");
const VGS_CMD: &str = "vgs --separator : --noheadings --units b --unbuffered --nosuffix --options vg_name,vg_size,vg_free,lv_count";
const LVS_CMD: &str = "lvs --separator : --noheadings --units b --unbuffered --nosuffix --config 'report/time_format=\"%s\"' --options vg_name,lv_name,lv_size,lv_attr,pool_lv,data_percent,metadata_percent,snap_percent,uuid,tags,metadata_size,time pve";

fn open(
    runner: RecordingRunner,
) -> (
    Box<dyn StoragePlugin>,
    Arc<RecordingRunner>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(runner.reply("vgs", VGS).reply(
        "lvs --separator : --noheadings --units b --unbuffered --nosuffix --config",
        LVS,
    ));
    let cfg = "lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n\n";
    let def = StorageConfig::parse(cfg).get("local-lvm").unwrap();
    let env = Env {
        runner: runner.clone(),
        run_dir: dir.path().join("run"),
        secret: None,
    };
    (oxve_storage::plugins::open(def, env).unwrap(), runner, dir)
}

#[test]
fn thin_pool_and_volumes_parse() {
    let lvs = parse_lvs(LVS);
    let pool = lvs.iter().find(|l| l.name == "data").unwrap();
    assert_eq!(
        (pool.kind, pool.active, pool.used),
        ('t', true, Some(229552910336))
    );
    let vol = lvs.iter().find(|l| l.name == "vm-100-disk-0").unwrap();
    assert_eq!(
        (vol.kind, vol.pool.as_deref(), vol.used),
        ('V', Some("data"), Some(8589934592))
    );
    let base = lvs.iter().find(|l| l.name == "base-101-disk-0").unwrap();
    assert!(!base.active);
}

#[test]
fn activate_status_list() {
    let (p, r, _d) = open(RecordingRunner::new());
    p.activate().unwrap();
    assert_eq!(r.commands(), [VGS_CMD, LVS_CMD]); // the pool is active already
    assert_eq!(
        p.status().unwrap(),
        Usage {
            total: 1836423282688,
            used: 229552910336,
            avail: 1606870372352
        }
    );
    let list = p.list_images(None).unwrap();
    let ids: Vec<&str> = list.iter().map(|v| v.volid.as_str()).collect();
    assert_eq!(
        ids,
        [
            "local-lvm:base-101-disk-0",
            "local-lvm:vm-100-disk-0",
            "local-lvm:vm-102-disk-0"
        ]
    );
    assert_eq!(
        (list[1].size, list[1].used, list[1].vmid),
        (34359738368, Some(8589934592), Some(100))
    );
    assert_eq!(p.list_images(Some(102)).unwrap().len(), 1);
    assert_eq!(
        p.path("base-101-disk-0").unwrap().to_str(),
        Some("/dev/pve/base-101-disk-0")
    );

    // An inactive pool is activated.
    let (p, r, _d) =
        open(RecordingRunner::new().reply("lvs", &LVS.replace("twi-aotz--", "twi---tz--")));
    p.activate().unwrap();
    assert_eq!(
        r.commands().last().map(String::as_str),
        Some("lvchange -ay -K pve/data")
    );
}

#[test]
fn alloc_free_resize() {
    let taken = "  Logical Volume \"vm-103-disk-0\" already exists in volume group \"pve\"";
    let (p, r, _d) =
        open(RecordingRunner::new().fail("lvcreate -aly -V 4194304k --name vm-103-disk-0 ", taken));
    assert_eq!(
        p.alloc_image(103, None, None, 4 * 1024 * 1024).unwrap(),
        "vm-103-disk-1"
    );
    p.free_image("vm-100-disk-0").unwrap();
    p.resize("vm-100-disk-0", 40 * 1024 * 1024 * 1024).unwrap();
    assert_eq!(
        r.commands(),
        [
            LVS_CMD,
            "lvcreate -aly -V 4194304k --name vm-103-disk-0 --thinpool pve/data",
            "lvcreate -aly -V 4194304k --name vm-103-disk-1 --thinpool pve/data",
            "lvchange --setautoactivation n pve/vm-103-disk-1",
            LVS_CMD,
            "lvremove -f pve/snap_vm-100-disk-0_first",
            "lvremove -f pve/vm-100-disk-0",
            "lvextend -L 41943040k /dev/pve/vm-100-disk-0",
        ]
    );
    assert!(matches!(
        p.free_image("vm-100-disk-7"),
        Err(StorageError::NoSuchVolume(_))
    ));
}

#[test]
fn snapshots() {
    let (p, r, _d) = open(RecordingRunner::new());
    p.snapshot("vm-100-disk-0", "second").unwrap();
    p.rollback("vm-100-disk-0", "first").unwrap();
    p.delete_snapshot("vm-100-disk-0", "first").unwrap();
    assert_eq!(
        r.commands(),
        [
            "lvcreate -n snap_vm-100-disk-0_second -pr -s pve/vm-100-disk-0",
            LVS_CMD,
            "lvremove -f pve/vm-100-disk-0",
            "lvcreate -kn -n vm-100-disk-0 -s pve/snap_vm-100-disk-0_first",
            "lvchange --setautoactivation n pve/vm-100-disk-0",
            "lvremove -f pve/snap_vm-100-disk-0_first",
        ]
    );
    assert!(p
        .rollback("vm-100-disk-0", "nope")
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
    assert!(p.snapshot("vm-100-disk-0", "-rf").is_err());
}

#[test]
fn base_clone_rename_and_volume_activation() {
    let (p, r, _d) = open(RecordingRunner::new());
    // A volume with snapshots cannot become a base.
    let err = p.create_base("vm-100-disk-0").unwrap_err().to_string();
    assert!(err.contains("snap_vm-100-disk-0_first"), "{err}");
    assert_eq!(p.create_base("vm-102-disk-0").unwrap(), "base-102-disk-0");
    assert_eq!(
        p.clone_image("base-101-disk-0", 104, "vm-104-disk-0")
            .unwrap(),
        "vm-104-disk-0"
    );
    assert!(p
        .clone_image("vm-100-disk-0", 104, "vm-104-disk-1")
        .is_err());
    assert_eq!(
        p.rename("vm-100-disk-0", 105, "vm-105-disk-0").unwrap(),
        "vm-105-disk-0"
    );
    p.activate_volume("base-101-disk-0").unwrap();
    p.activate_volume("vm-100-disk-0").unwrap(); // active already
    p.deactivate_volume("vm-100-disk-0").unwrap(); // working volumes stay active
    p.deactivate_volume("base-101-disk-0").unwrap();
    assert_eq!(
        r.commands(),
        [
            LVS_CMD,
            LVS_CMD,
            "lvrename pve vm-102-disk-0 base-102-disk-0",
            "lvchange -pr -ky pve/base-102-disk-0",
            "lvchange -an pve/base-102-disk-0",
            "lvcreate -n vm-104-disk-0 -prw -kn -s pve/base-101-disk-0",
            "lvchange --setautoactivation n pve/vm-104-disk-0",
            "lvrename pve vm-100-disk-0 vm-105-disk-0",
            "lvchange --addtag pve-vm-105 --deltag pve-vm-100 pve/vm-105-disk-0",
            LVS_CMD,
            "lvchange -ay -K pve/base-101-disk-0",
            LVS_CMD,
            "lvchange -an pve/base-101-disk-0",
        ]
    );
}

#[test]
fn size_export_and_base_import() {
    let (p, r, _d) = open(
        RecordingRunner::new()
            .reply("lvs --separator : --noheadings --units b --unbuffered --nosuffix --options lv_size,data_percent", "  34359738368:25.00\n")
            .reply("blockdev", "3\n")
            .reply("dd if=", "abc"),
    );
    assert_eq!(
        p.volume_size("vm-100-disk-0").unwrap(),
        (34359738368, 8589934592)
    );
    let mut out = Vec::new();
    p.export("vm-100-disk-0", "raw+size", None, &mut out)
        .unwrap();
    assert_eq!(out, [&3u64.to_le_bytes()[..], b"abc"].concat());
    let stream = [&2048u64.to_le_bytes()[..], &[0u8; 2048][..]].concat();
    assert_eq!(
        p.import(106, "base-106-disk-0", "raw+size", &mut &stream[..])
            .unwrap(),
        "base-106-disk-0"
    );
    assert_eq!(
        r.commands()[3..],
        [
            "lvcreate -aly -V 2k --name vm-106-disk-0 --thinpool pve/data",
            "lvchange --setautoactivation n pve/vm-106-disk-0",
            "dd of=/dev/pve/vm-106-disk-0 bs=64k conv=sparse,nocreat status=none",
            LVS_CMD,
            "lvrename pve vm-106-disk-0 base-106-disk-0",
            "lvchange -pr -ky pve/base-106-disk-0",
            "lvchange -an pve/base-106-disk-0",
        ]
    );
}
