//! Golden tests of the `iscsi` plugin: discovery, login and rescan
//! command lines, the iscsiadm parsers, and the LUN scan on a fake sysfs.

use oxve_storage::exec::RecordingRunner;
use oxve_storage::plugins::iscsi::{parse_sessions, parse_targets, scan_luns};
use oxve_storage::{Env, StorageConfig, StoragePlugin, Usage};
use std::path::Path;
use std::sync::Arc;

const TARGET: &str = "iqn.2003-01.org.linux-iscsi.san.x8664:sn.0123456789ab";

fn open(runner: RecordingRunner, run: &Path) -> (Box<dyn StoragePlugin>, Arc<RecordingRunner>) {
    let runner = Arc::new(runner);
    let cfg = format!("iscsi: san\n\tportal 10.0.0.20\n\ttarget {TARGET}\n\tcontent images\n\n");
    let def = StorageConfig::parse(&cfg).get("san").unwrap();
    let env = Env {
        runner: runner.clone(),
        run_dir: run.to_path_buf(),
        secret: None,
    };
    (oxve_storage::plugins::open(def, env).unwrap(), runner)
}

fn sessions() -> String {
    format!("tcp: [1] 10.0.0.20:3260,1 {TARGET} (non-flash)\ntcp: [2] 10.0.0.21:3260,1 {TARGET} (non-flash)\ntcp: [3] 10.0.0.30:3260,1 iqn.2003-01.org.example:other (non-flash)\n")
}

fn nodes() -> String {
    format!("10.0.0.20:3260,1 {TARGET}\n10.0.0.21:3260,1 {TARGET}\n10.0.0.30:3260,1 iqn.2003-01.org.example:other\n")
}

#[test]
fn parsers() {
    let s = parse_sessions(&format!(
        "{}tcp: [4] [fd00::20]:3260,1 {TARGET} (non-flash)\n",
        sessions()
    ));
    assert_eq!(s.len(), 4);
    assert_eq!(
        (s[0].id.as_str(), s[0].portal.as_str(), s[0].target.as_str()),
        ("1", "10.0.0.20:3260", TARGET)
    );
    assert_eq!(s[3].portal, "[fd00::20]:3260");
    let t = parse_targets(&nodes());
    assert_eq!(t[1], ("10.0.0.21:3260".to_string(), TARGET.to_string()));
}

#[test]
fn first_activation_discovers_and_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    // The update and login succeed; the listings say nothing is known yet.
    let (p, r) = open(
        RecordingRunner::new()
            .reply("iscsiadm --mode node --targetname", "")
            .fail("iscsiadm --mode session", "iscsiadm: No active sessions.")
            .fail("iscsiadm --mode node", "iscsiadm: No records found")
            .reply(
                "iscsiadm --mode discovery",
                &format!("10.0.0.20:3260,1 {TARGET}\n"),
            ),
        dir.path(),
    );
    p.activate().unwrap();
    assert_eq!(
        r.commands(),
        [
            "iscsiadm --mode session".to_string(),
            "iscsiadm --mode node".to_string(),
            "iscsiadm --mode discovery --type sendtargets --portal 10.0.0.20:3260".to_string(),
            format!("iscsiadm --mode node --targetname {TARGET} --op update --name node.session.initial_login_retry_max --value 0"),
            format!("iscsiadm --mode node --targetname {TARGET} --login"),
        ]
    );
    assert!(p.status().unwrap_err().to_string().contains("no session"));
}

#[test]
fn logged_in_activation_rescans_at_most_every_few_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (p, r) = open(
        RecordingRunner::new()
            .reply("iscsiadm --mode session", &sessions())
            .reply("iscsiadm --mode node", &nodes()),
        dir.path(),
    );
    p.activate().unwrap();
    p.activate().unwrap();
    assert_eq!(
        r.commands(),
        [
            "iscsiadm --mode session",
            "iscsiadm --mode node",
            "iscsiadm --mode session --sid 1 --rescan",
            "iscsiadm --mode session --sid 2 --rescan",
            "iscsiadm --mode session",
            "iscsiadm --mode node",
        ]
    );
    assert_eq!(p.status().unwrap(), Usage::default());
    p.deactivate().unwrap();
    assert_eq!(
        r.commands().last().unwrap(),
        &format!("iscsiadm --mode node --targetname {TARGET} --logout")
    );
}

#[test]
fn luns_are_used_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let (p, r) = open(
        RecordingRunner::new().reply("blockdev", "34359738368\n"),
        dir.path(),
    );
    let vol = "0.0.1.scsi-36001405aaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_eq!(
        p.path(vol).unwrap().to_str(),
        Some("/dev/disk/by-id/scsi-36001405aaaaaaaaaaaaaaaaaaaaaaaaa")
    );
    assert_eq!(p.volume_size(vol).unwrap(), (34359738368, 34359738368));
    let err = p
        .alloc_image(100, None, None, 1024)
        .unwrap_err()
        .to_string();
    assert!(err.contains("managed on the target"), "{err}");
    assert!(p.free_image(vol).is_err());
    assert!(p.list_images(Some(100)).unwrap().is_empty());
    for bad in ["vm-100-disk-0", "0.0.scsi-x", "0.0.1.../x", "0.0.1.a/b"] {
        assert!(p.parse_volname(bad).is_err(), "{bad}");
    }
    assert_eq!(
        r.commands(),
        ["blockdev --getsize64 /dev/disk/by-id/scsi-36001405aaaaaaaaaaaaaaaaaaaaaaaaa"]
    );
}

/// A sysfs with one session (host 2) holding a plain disk LUN, a LUN
/// behind multipath and a CD-ROM, plus a disk of another host.
#[test]
fn lun_scan_of_a_fake_sysfs() {
    let dir = tempfile::tempdir().unwrap();
    let (sys, by_id) = (dir.path().join("sys"), dir.path().join("by-id"));
    let write = |rel: &str, text: &str| {
        let p = sys.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    let mkdir = |rel: &str| std::fs::create_dir_all(sys.join(rel)).unwrap();
    write(
        "class/iscsi_session/session1/targetname",
        &format!("{TARGET}\n"),
    );
    mkdir("class/iscsi_session/session1/device/target2:0:0");
    write("bus/scsi/devices/2:0:0:0/type", "0\n");
    mkdir("bus/scsi/devices/2:0:0:0/block/sdb");
    write("bus/scsi/devices/2:0:0:1/type", "0\n");
    mkdir("bus/scsi/devices/2:0:0:1/block/sdc");
    write("bus/scsi/devices/2:0:0:2/type", "5\n");
    mkdir("bus/scsi/devices/2:0:0:2/block/sr0");
    write("bus/scsi/devices/3:0:0:0/type", "0\n");
    mkdir("bus/scsi/devices/3:0:0:0/block/sda");
    write("block/sdb/size", "67108864\n");
    mkdir("block/sdc/holders/dm-0");
    write("block/dm-0/size", "20971520\n");
    std::fs::create_dir_all(&by_id).unwrap();
    for (name, dest) in [
        ("scsi-36001405aaaa", "../../sdb"),
        ("scsi-36001405aaaa-part1", "../../sdb1"),
        ("wwn-0x6001405aaaa", "../../sdb"),
        ("dm-uuid-mpath-36001405bbbb", "../../dm-0"),
        ("scsi-0QEMU_disk_sda", "../../sda"),
    ] {
        std::os::unix::fs::symlink(dest, by_id.join(name)).unwrap();
    }
    let luns = scan_luns(&sys, &by_id);
    let ours: Vec<(String, u64)> = luns[TARGET]
        .iter()
        .map(|l| (l.volname.clone(), l.size))
        .collect();
    assert_eq!(
        ours,
        [
            ("0.0.0.scsi-36001405aaaa".to_string(), 32 << 30),
            ("0.0.1.dm-uuid-mpath-36001405bbbb".to_string(), 10 << 30)
        ]
    );
    assert_eq!(luns.len(), 1);
}
