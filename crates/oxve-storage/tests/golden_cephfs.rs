//! Golden tests of the `cephfs` plugin: kernel and FUSE mount command
//! lines, the private secret file, and the ceph.conf helpers it shares
//! with `rbd`.

use oxve_storage::exec::RecordingRunner;
use oxve_storage::plugins::cephfs::{hostlist, monaddr_list, parse_ceph_conf, LOCAL_CEPH_CONF};
use oxve_storage::{Env, StorageConfig, StorageError, StoragePlugin};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

const KEY: &str = "AQBkZmVnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3OA==";
const CEPH_CONF: &str = include_str!("data/ceph.conf");

fn open(
    extra: &str,
    path: &Path,
    run: &Path,
    secret: Option<&str>,
) -> (Box<dyn StoragePlugin>, Arc<RecordingRunner>) {
    let runner = Arc::new(RecordingRunner::new());
    let cfg = format!(
        "cephfs: cfs\n\tpath {}\n\tcontent backup,iso,vztmpl\n{extra}\n",
        path.display()
    );
    let def = StorageConfig::parse(&cfg).get("cfs").unwrap();
    let env = Env {
        runner: runner.clone(),
        run_dir: run.to_path_buf(),
        secret: secret.map(str::to_string),
    };
    (oxve_storage::plugins::open(def, env).unwrap(), runner)
}

#[test]
fn kernel_mount_of_an_external_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (path, run) = (dir.path().join("mnt"), dir.path().join("run"));
    let extra = "\tmonhost 10.0.0.1 10.0.0.2:6789,fd00::3\n\tusername fsuser\n\tfs-name cephfs2\n\tsubdir /pve\n";
    let keyring = format!("[client.fsuser]\n\tkey = {KEY}\n\tcaps mds = \"allow rw\"\n");
    let (p, r) = open(extra, &path, &run, Some(&keyring));
    p.activate().unwrap();
    let secret = run.join("ceph/cfs.secret");
    assert_eq!(
        r.commands(),
        [format!(
            "mount -t ceph 10.0.0.1,10.0.0.2:6789,[fd00::3]:/pve {} -o name=fsuser,secretfile={},fs=cephfs2",
            path.display(),
            secret.display()
        )]
    );
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        format!("{KEY}\n")
    );
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(r.commands().iter().all(|c| !c.contains(KEY)));
    assert!(path.join("dump").is_dir() && path.join("template/cache").is_dir());
}

#[test]
fn fuse_mount_and_local_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (path, run) = (dir.path().join("mnt"), dir.path().join("run"));
    let (p, r) = open(
        "\tmonhost 10.0.0.1\n\tfuse 1\n\toptions noatime\n",
        &path,
        &run,
        Some(KEY),
    );
    p.activate().unwrap();
    assert_eq!(
        r.commands(),
        [format!(
            "mount -t fuse.ceph 10.0.0.1:/ {} -o ceph.id=admin,ceph.keyfile={},noatime",
            path.display(),
            run.join("ceph/cfs.secret").display()
        )]
    );

    // The local hyper-converged cluster: its ceph.conf names monitors and keyring.
    if !Path::new(LOCAL_CEPH_CONF).exists() {
        let (p, r) = open("", &path, &run, None);
        p.activate().unwrap();
        assert_eq!(
            r.commands(),
            [format!(
                "mount -t ceph :/ {} -o name=admin,conf=/etc/pve/ceph.conf",
                path.display()
            )]
        );
    }
}

#[test]
fn holds_files_not_images() {
    let dir = tempfile::tempdir().unwrap();
    let (p, r) = open("", dir.path(), &dir.path().join("run"), None);
    assert_eq!(
        p.path("iso/debian.iso").unwrap(),
        dir.path().join("template/iso/debian.iso")
    );
    assert!(matches!(
        p.alloc_image(100, Some("raw"), None, 1024),
        Err(StorageError::Option { .. } | StorageError::Unsupported { .. })
    ));
    assert!(p
        .create_image(100, "vm-100-disk-0.raw", "raw", 1024)
        .is_err());
    assert!(p.path("100/vm-100-disk-0.raw").is_err());
    assert!(p.list_images(None).unwrap().is_empty());
    assert!(r.commands().is_empty());
}

#[test]
fn ceph_conf_and_monitor_lists() {
    let conf = parse_ceph_conf(CEPH_CONF);
    assert_eq!(
        conf["global"]["fsid"],
        "5F8C3B2A-1D4E-4F6A-9B7C-8D9E0F1A2B3C"
    );
    assert_eq!(
        conf["client"]["keyring"],
        "/etc/pve/priv/$cluster.$name.keyring"
    );
    assert_eq!(
        monaddr_list(&conf),
        "10.10.10.1,10.10.10.2,10.10.10.3:3300,10.10.10.3:6789,10.10.10.4:6789"
    );
    assert_eq!(
        hostlist(
            "10.0.0.1 10.0.0.2:6789;[fd00::3]:3300,fd00::4 mon.example",
            ","
        ),
        "10.0.0.1,10.0.0.2:6789,[fd00::3]:3300,[fd00::4],mon.example"
    );
    assert_eq!(hostlist("fd00::5.6789 bad/host", ";"), "[fd00::5]:6789");
}
