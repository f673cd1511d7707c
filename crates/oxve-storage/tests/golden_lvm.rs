//! Golden tests of the `lvm` plugin: the exact LVM command lines, and the
//! report parsers on captured `vgs`/`lvs` output.

use oxve_storage::exec::RecordingRunner;
use oxve_storage::plugins::lvm::{parse_lvs, parse_vgs};
use oxve_storage::{Env, StorageConfig, StorageError, StoragePlugin, Usage};
use std::sync::Arc;

const VGS: &str = include_str!("data/lvm-vgs.txt");
const LVS: &str = include_str!("data/lvm-lvs.txt");
const VGS_CMD: &str = "vgs --separator : --noheadings --units b --unbuffered --nosuffix --options vg_name,vg_size,vg_free,lv_count";
const LVS_CMD: &str = "lvs --separator : --noheadings --units b --unbuffered --nosuffix --config 'report/time_format=\"%s\"' --options vg_name,lv_name,lv_size,lv_attr,pool_lv,data_percent,metadata_percent,snap_percent,uuid,tags,metadata_size,time vg0";

fn open(
    extra: &str,
    runner: RecordingRunner,
) -> (
    Box<dyn StoragePlugin>,
    Arc<RecordingRunner>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(runner);
    let cfg = format!("lvm: vg0\n\tvgname vg0\n\tcontent images,rootdir\n{extra}\n");
    let def = StorageConfig::parse(&cfg).get("vg0").unwrap();
    let env = Env {
        runner: runner.clone(),
        run_dir: dir.path().join("run"),
        secret: None,
    };
    (oxve_storage::plugins::open(def, env).unwrap(), runner, dir)
}

#[test]
fn parsers_read_captured_reports() {
    let vgs = parse_vgs(VGS);
    assert_eq!(vgs.len(), 2);
    assert_eq!(
        (
            vgs[1].name.as_str(),
            vgs[1].size,
            vgs[1].free,
            vgs[1].lv_count
        ),
        ("vg0", 1000203091968, 965843353600, 4)
    );
    let lvs = parse_lvs(LVS);
    assert_eq!(lvs.len(), 4);
    let first = &lvs[0];
    assert_eq!(
        (first.vg.as_str(), first.name.as_str(), first.size),
        ("vg0", "vm-100-disk-0", 34359738368)
    );
    assert_eq!(
        (first.kind, first.active, first.ctime),
        ('-', true, Some(1700000000))
    );
    assert_eq!(first.tags, ["pve-vm-100"]);
    assert_eq!((first.pool.clone(), first.used), (None, None));
    assert!(!lvs[1].active);
    assert!(lvs[2].tags.is_empty());
}

#[test]
fn activate_status_and_deactivate() {
    let (p, r, _d) = open("", RecordingRunner::new().reply("vgs", VGS));
    p.activate().unwrap();
    assert_eq!(
        p.status().unwrap(),
        Usage {
            total: 1000203091968,
            used: 34359738368,
            avail: 965843353600
        }
    );
    p.deactivate().unwrap();
    assert_eq!(r.commands(), [VGS_CMD, VGS_CMD, "vgchange -aln vg0"]);

    // An unknown group gets a rescan; its status is an error.
    let (p, r, _d) = open("", RecordingRunner::new().reply("vgs", "  pve:1:1:0\n"));
    p.activate().unwrap();
    assert_eq!(
        r.commands(),
        [VGS_CMD, "vgscan --ignorelockingfailure --mknodes"]
    );
    assert!(p
        .status()
        .unwrap_err()
        .to_string()
        .contains("volume group 'vg0' not found"));
}

#[test]
fn alloc_takes_the_next_free_name() {
    let taken = "  Logical Volume \"vm-100-disk-0\" already exists in volume group \"vg0\"";
    let (p, r, _d) = open(
        "",
        RecordingRunner::new().fail(
            "lvcreate -aly -Wy --yes --size 4194304k --name vm-100-disk-0 ",
            taken,
        ),
    );
    assert_eq!(
        p.alloc_image(100, None, None, 4 * 1024 * 1024).unwrap(),
        "vm-100-disk-1"
    );
    assert_eq!(
        r.commands(),
        [
            LVS_CMD,
            "lvcreate -aly -Wy --yes --size 4194304k --name vm-100-disk-0 --setautoactivation n --addtag pve-vm-100 vg0",
            "lvcreate -aly -Wy --yes --size 4194304k --name vm-100-disk-1 --setautoactivation n --addtag pve-vm-100 vg0",
        ]
    );
    // Names the listing shows are skipped without trying them.
    let (p, r, _d) = open("", RecordingRunner::new().reply("lvs", LVS));
    assert_eq!(
        p.alloc_image(101, Some("raw"), None, 1024).unwrap(),
        "vm-101-disk-1"
    );
    assert_eq!(r.commands()[1], "lvcreate -aly -Wy --yes --size 1024k --name vm-101-disk-1 --setautoactivation n --addtag pve-vm-101 vg0");
    // A named allocation that is taken reports it; other formats are refused.
    let (p, _r, _d) = open("", RecordingRunner::new().fail("lvcreate", taken));
    assert!(matches!(
        p.alloc_image(100, None, Some("vm-100-disk-0"), 1024),
        Err(StorageError::AlreadyExists(_))
    ));
    assert!(p.alloc_image(100, Some("qcow2"), None, 1024).is_err());
}

#[test]
fn list_path_and_names() {
    let (p, r, _d) = open("", RecordingRunner::new().reply("lvs", LVS));
    let all: Vec<String> = p
        .list_images(None)
        .unwrap()
        .into_iter()
        .map(|v| v.volid)
        .collect();
    assert_eq!(
        all,
        [
            "vg0:vm-100-disk-0",
            "vg0:vm-101-disk-0",
            "vg0:vm-102-disk-0"
        ]
    );
    let one = p.list_images(Some(101)).unwrap();
    assert_eq!(
        (one.len(), one[0].size, one[0].vmid, one[0].ctime),
        (1, 8589934592, Some(101), Some(1700000100))
    );
    assert_eq!(r.commands(), [LVS_CMD, LVS_CMD]);

    let (p, _r, _d) = open(
        "\ttagged_only 1\n",
        RecordingRunner::new().reply("lvs", LVS),
    );
    let tagged: Vec<String> = p
        .list_images(None)
        .unwrap()
        .into_iter()
        .map(|v| v.volid)
        .collect();
    assert_eq!(tagged, ["vg0:vm-100-disk-0", "vg0:vm-101-disk-0"]);

    assert_eq!(
        p.path("vm-100-disk-0").unwrap().to_str(),
        Some("/dev/vg0/vm-100-disk-0")
    );
    for bad in [
        "base-100-disk-0",
        "vm-100-disk-0/../x",
        "subvol-100-disk-0",
        "vm-100-disk-0.qcow2x;",
        "-vm",
    ] {
        assert!(p.parse_volname(bad).is_err(), "{bad}");
    }
}

#[test]
fn free_resize_rename_size_and_volume_activation() {
    let (p, r, _d) = open(
        "",
        RecordingRunner::new().reply(
            "lvs --separator : --noheadings --units b --unbuffered --nosuffix --options lv_size",
            "  34359738368:\n",
        ),
    );
    p.free_image("vm-100-disk-1").unwrap();
    p.resize("vm-100-disk-0", 10 * 1024 * 1024 * 1024).unwrap();
    assert_eq!(
        p.rename("vm-100-disk-0", 101, "vm-101-disk-3").unwrap(),
        "vm-101-disk-3"
    );
    assert_eq!(
        p.volume_size("vm-100-disk-0").unwrap(),
        (34359738368, 34359738368)
    );
    p.activate_volume("vm-100-disk-0").unwrap();
    p.deactivate_volume("vm-100-disk-0").unwrap(); // no such device here: nothing to do
    assert_eq!(
        r.commands(),
        [
            "lvremove -f vg0/vm-100-disk-1",
            "lvextend -L 10485760k /dev/vg0/vm-100-disk-0",
            "lvrename vg0 vm-100-disk-0 vm-101-disk-3",
            "lvchange --addtag pve-vm-101 --deltag pve-vm-100 vg0/vm-101-disk-3",
            "lvs --separator : --noheadings --units b --unbuffered --nosuffix --options lv_size,data_percent /dev/vg0/vm-100-disk-0",
            "lvchange -aey /dev/vg0/vm-100-disk-0",
            "lvchange --refresh /dev/vg0/vm-100-disk-0",
        ]
    );
    for unsupported in [
        p.snapshot("vm-100-disk-0", "s1"),
        p.rollback("vm-100-disk-0", "s1"),
    ] {
        assert!(matches!(unsupported, Err(StorageError::Unsupported { .. })));
    }
    assert!(matches!(
        p.create_base("vm-100-disk-0"),
        Err(StorageError::Unsupported { .. })
    ));

    let (p, _r, _d) = open(
        "",
        RecordingRunner::new().fail(
            "lvremove",
            "  Failed to find logical volume \"vg0/vm-100-disk-9\"",
        ),
    );
    assert!(matches!(
        p.free_image("vm-100-disk-9"),
        Err(StorageError::NoSuchVolume(_))
    ));
    let (p, _r, _d) = open(
        "",
        RecordingRunner::new().fail(
            "lvrename",
            "  Logical Volume \"vm-101-disk-3\" already exists in volume group \"vg0\"",
        ),
    );
    assert!(matches!(
        p.rename("vm-100-disk-0", 101, "vm-101-disk-3"),
        Err(StorageError::AlreadyExists(_))
    ));
}

#[test]
fn saferemove_renames_zeroes_then_removes() {
    let (p, r, _d) = open(
        "\tsaferemove 1\n\tsaferemove-stepsize 8\n",
        RecordingRunner::new(),
    );
    p.free_image("vm-100-disk-0").unwrap();
    assert_eq!(
        r.commands(),
        [
            "lvrename vg0 vm-100-disk-0 del-vm-100-disk-0",
            "lvchange -aly /dev/vg0/del-vm-100-disk-0",
            "blkdiscard --zeroout --step 8388608 /dev/vg0/del-vm-100-disk-0",
            "lvremove -f vg0/del-vm-100-disk-0",
        ]
    );
}

#[test]
fn raw_size_export_and_import() {
    let runner = RecordingRunner::new()
        .reply("blockdev --getsize64 /dev/vg0/vm-100-disk-0", "4\n")
        .reply("dd if=/dev/vg0/vm-100-disk-0", "DATA");
    let (p, r, _d) = open("", runner);
    let mut out = Vec::new();
    p.export("vm-100-disk-0", "raw+size", None, &mut out)
        .unwrap();
    assert_eq!(out, [&4u64.to_le_bytes()[..], b"DATA"].concat());
    assert!(p
        .export("vm-100-disk-0", "qcow2+size", None, &mut Vec::new())
        .is_err());
    assert!(p
        .export("vm-100-disk-0", "raw+size", Some("snap"), &mut Vec::new())
        .is_err());

    let stream = [&5u64.to_le_bytes()[..], b"hello-and-more"].concat();
    assert_eq!(
        p.import(100, "vm-100-disk-4", "raw+size", &mut &stream[..])
            .unwrap(),
        "vm-100-disk-4"
    );
    assert_eq!(
        r.commands(),
        [
            "blockdev --getsize64 /dev/vg0/vm-100-disk-0",
            "dd if=/dev/vg0/vm-100-disk-0 bs=64k status=none",
            "lvcreate -aly -Wy --yes --size 1k --name vm-100-disk-4 --setautoactivation n --addtag pve-vm-100 vg0",
            "dd of=/dev/vg0/vm-100-disk-4 bs=64k conv=nocreat status=none",
        ]
    );

    // A stream shorter than its header says removes the new volume again.
    let (p, r, _d) = open("", RecordingRunner::new());
    let short = [&100u64.to_le_bytes()[..], b"hello"].concat();
    let err = p
        .import(100, "vm-100-disk-5", "raw+size", &mut &short[..])
        .unwrap_err();
    assert!(
        err.to_string().contains("ended after 5 of 100 bytes"),
        "{err}"
    );
    assert_eq!(
        r.commands().last().map(String::as_str),
        Some("lvremove -f vg0/vm-100-disk-5")
    );
}
