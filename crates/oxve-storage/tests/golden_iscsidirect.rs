//! Golden tests of the `iscsidirect` plugin: `iscsi-ls` parsing and the
//! `iscsi://` paths QEMU opens itself.

use oxve_storage::exec::RecordingRunner;
use oxve_storage::plugins::iscsidirect::{parse_iscsi_ls, DirectLun};
use oxve_storage::{Env, StorageConfig, StorageError, StoragePlugin};
use std::sync::Arc;

const TARGET: &str = "iqn.2003-01.org.linux-iscsi.san.x8664:sn.0123456789ab";
const LS: &str = include_str!("data/iscsi-ls.txt");

fn open(runner: RecordingRunner) -> (Box<dyn StoragePlugin>, Arc<RecordingRunner>) {
    let runner = Arc::new(runner);
    let cfg = format!("iscsidirect: direct\n\tportal 10.0.0.20\n\ttarget {TARGET}\n\n");
    let def = StorageConfig::parse(&cfg).get("direct").unwrap();
    let env = Env {
        runner: runner.clone(),
        run_dir: std::env::temp_dir(),
        secret: None,
    };
    (oxve_storage::plugins::open(def, env).unwrap(), runner)
}

#[test]
fn iscsi_ls_output_of_our_target_only() {
    assert_eq!(
        parse_iscsi_ls(LS, TARGET),
        [
            DirectLun {
                lun: 0,
                size: 32 << 30
            },
            DirectLun {
                lun: 1,
                size: 500 << 20
            }
        ]
    );
    assert_eq!(
        parse_iscsi_ls(LS, "iqn.2003-01.org.linux-iscsi.san.x8664:sn.other"),
        [DirectLun {
            lun: 0,
            size: 1 << 40
        }]
    );
    assert_eq!(
        parse_iscsi_ls("Lun:3    Type:DIRECT_ACCESS (Size:1.5G)\n", TARGET),
        [DirectLun {
            lun: 3,
            size: 1610612736
        }]
    );
}

#[test]
fn list_path_size() {
    let (p, r) = open(RecordingRunner::new().reply("iscsi-ls", LS));
    let ids: Vec<String> = p
        .list_images(None)
        .unwrap()
        .into_iter()
        .map(|v| v.volid)
        .collect();
    assert_eq!(ids, ["direct:lun0", "direct:lun1"]);
    assert!(p.list_images(Some(100)).unwrap().is_empty());
    assert_eq!(
        p.path("lun1").unwrap().to_str(),
        Some(&*format!("iscsi://10.0.0.20/{TARGET}/1"))
    );
    assert_eq!(p.volume_size("lun1").unwrap(), (500 << 20, 500 << 20));
    assert!(matches!(
        p.volume_size("lun7"),
        Err(StorageError::NoSuchVolume(_))
    ));
    assert!(p.parse_volname("0.0.1.scsi-x").is_err());
    assert_eq!(
        r.commands(),
        [
            "iscsi-ls -s iscsi://10.0.0.20",
            "iscsi-ls -s iscsi://10.0.0.20",
            "iscsi-ls -s iscsi://10.0.0.20"
        ]
    );
    assert!(p
        .alloc_image(100, None, None, 1024)
        .unwrap_err()
        .to_string()
        .contains("managed on the target"));
}

#[test]
fn a_lun_that_is_not_ready_is_no_error() {
    let (p, _r) = open(RecordingRunner::new().fail(
        "iscsi-ls",
        "iscsi-ls: TESTUNITREADY failed with SENSE KEY:NOT_READY(2)",
    ));
    assert!(p.list_images(None).unwrap().is_empty());
    let (p, _r) =
        open(RecordingRunner::new().fail("iscsi-ls", "iscsi_connect failed. Connection refused"));
    assert!(p.list_images(None).is_err());
}
