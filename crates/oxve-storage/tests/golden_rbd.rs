//! Golden tests of the `rbd` plugin: the `rbd`/`ceph` command lines with
//! the connection arguments of an external and of the local cluster, the
//! QEMU URL, the private keyring, and the JSON parsers on captured output.

use oxve_storage::exec::RecordingRunner;
use oxve_storage::plugins::rbd::{
    parse_ceph_df, parse_rbd_du, parse_rbd_info, parse_rbd_ls, parse_rbd_snaps,
};
use oxve_storage::{Env, StorageConfig, StorageError, StoragePlugin, Usage};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

const KEY: &str = "AQBkZmVnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3OA==";
const LS: &str = include_str!("data/rbd-ls.json");
const DF: &str = include_str!("data/ceph-df.json");
const EXTERNAL: &str = "rbd: ceph-ext\n\tcontent images\n\tdata-pool ecpool\n\tmonhost 10.0.0.1 10.0.0.2:6789 [fd00::3]:3300\n\tnamespace ns1\n\tpool vms\n\tusername pveuser\n\n";

struct Fixture {
    plugin: Box<dyn StoragePlugin>,
    runner: Arc<RecordingRunner>,
    run: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(
        cfg: &str,
        secret: Option<&str>,
        runner: impl FnOnce(&str) -> RecordingRunner,
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let def = StorageConfig::parse(cfg).storages().remove(0);
        let runner = Arc::new(runner(&conn(&run, &def.id)));
        let env = Env {
            runner: runner.clone(),
            run_dir: run.clone(),
            secret: secret.map(str::to_string),
        };
        Fixture {
            plugin: oxve_storage::plugins::open(def, env).unwrap(),
            runner,
            run,
            _dir: dir,
        }
    }

    fn commands(&self) -> Vec<String> {
        self.runner.commands()
    }
}

/// The connection arguments of the external test cluster.
fn conn(run: &std::path::Path, id: &str) -> String {
    format!(
        "-c {run}/ceph/{id}.conf -m 10.0.0.1,10.0.0.2:6789,[fd00::3]:3300 --auth_supported cephx -n client.pveuser --keyring {run}/ceph/{id}.keyring",
        run = run.display()
    )
}

fn rbd(c: &str) -> String {
    format!("rbd -p vms --namespace ns1 {c}")
}

#[test]
fn parsers_read_captured_json() {
    let images = parse_rbd_ls(LS).unwrap();
    let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "base-101-disk-0",
            "vm-100-disk-0",
            "vm-102-disk-0",
            "cloudinit-scratch"
        ]
    );
    assert_eq!(
        images[2].parent.as_deref(),
        Some("base-101-disk-0@__base__")
    );
    assert!(parse_rbd_ls("").unwrap().is_empty());
    assert!(parse_rbd_ls("not json").is_err());
    let info = parse_rbd_info(r#"{"name":"vm-100-disk-0","id":"4d5e6f","size":34359738368,"objects":8192,"order":22,"object_size":4194304,"snapshot_count":1,"block_name_prefix":"rbd_data.4d5e6f","format":2,"features":["layering","exclusive-lock","object-map","fast-diff","deep-flatten"],"op_features":[],"flags":[],"create_timestamp":"Tue Nov 14 10:00:00 2023","protected":"false"}"#).unwrap();
    assert_eq!(
        (info.size, info.format, info.protected, info.features.len()),
        (34359738368, 2, false, 5)
    );
    let snaps = parse_rbd_snaps(r#"[{"id":5,"name":"first","size":34359738368,"protected":"true","timestamp":"Tue Nov 14 10:00:00 2023"},{"id":6,"name":"second","size":34359738368,"protected":"false","timestamp":"Tue Nov 14 11:00:00 2023"}]"#).unwrap();
    assert_eq!(
        snaps,
        [("first".to_string(), true), ("second".to_string(), false)]
    );
    let du = r#"{"images":[{"name":"vm-100-disk-0","snapshot":"first","id":"4d5e6f","provisioned_size":34359738368,"used_size":2147483648},{"name":"vm-100-disk-0","id":"4d5e6f","provisioned_size":34359738368,"used_size":1073741824}],"total_provisioned_size":34359738368,"total_used_size":3221225472}"#;
    assert_eq!(parse_rbd_du(du, "vm-100-disk-0").unwrap(), 1073741824);
    assert_eq!(
        parse_ceph_df(DF, "vms").unwrap(),
        Some(Usage {
            total: 953000000000,
            used: 36000000000,
            avail: 917000000000
        })
    );
    assert_eq!(parse_ceph_df(DF, "nope").unwrap(), None);
}

#[test]
fn keyring_and_conf_files_are_private() {
    let f = Fixture::new(EXTERNAL, Some(KEY), |_| RecordingRunner::new());
    f.plugin.list_images(None).unwrap();
    let keyring = f.run.join("ceph/ceph-ext.keyring");
    assert_eq!(
        std::fs::read_to_string(&keyring).unwrap(),
        format!("[client.pveuser]\n\tkey = {KEY}\n")
    );
    assert_eq!(
        std::fs::metadata(&keyring).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let conf = std::fs::read_to_string(f.run.join("ceph/ceph-ext.conf")).unwrap();
    assert_eq!(
        conf,
        format!("[global]\n\tkeyring = {}\n", keyring.display())
    );
    assert_eq!(
        f.commands(),
        [format!(
            "{} ls -l --format json",
            rbd(&conn(&f.run, "ceph-ext"))
        )]
    );
}

#[test]
fn alloc_list_free() {
    let f = Fixture::new(EXTERNAL, Some(KEY), |c| {
        RecordingRunner::new()
            .fail(&format!("{} create --image-format 2 --size 4096 --data-pool ecpool vm-103-disk-0", rbd(c)), "rbd: create error: (17) File exists")
            .reply(&format!("{} ls -l", rbd(c)), LS)
            .reply(&format!("{} snap ls", rbd(c)), r#"[{"id":5,"name":"first","size":1,"protected":"true"},{"id":6,"name":"second","size":1,"protected":"false"}]"#)
    });
    let r = rbd(&conn(&f.run, "ceph-ext"));
    let p = &f.plugin;
    assert_eq!(
        p.alloc_image(103, None, None, 4 * 1024 * 1024).unwrap(),
        "vm-103-disk-1"
    );
    let list = p.list_images(None).unwrap();
    let ids: Vec<&str> = list.iter().map(|v| v.volid.as_str()).collect();
    assert_eq!(
        ids,
        [
            "ceph-ext:base-101-disk-0",
            "ceph-ext:vm-100-disk-0",
            "ceph-ext:base-101-disk-0/vm-102-disk-0"
        ]
    );
    assert_eq!(
        (list[2].parent.as_deref(), list[2].size),
        (Some("base-101-disk-0"), 8589934592)
    );
    p.free_image("vm-100-disk-0").unwrap();
    assert_eq!(
        f.commands(),
        [
            format!("{r} ls -l --format json"),
            format!("{r} create --image-format 2 --size 4096 --data-pool ecpool vm-103-disk-0"),
            format!("{r} create --image-format 2 --size 4096 --data-pool ecpool vm-103-disk-1"),
            format!("{r} ls -l --format json"),
            format!("{r} snap ls vm-100-disk-0 --format json"),
            format!("{r} snap unprotect vm-100-disk-0 --snap first"),
            format!("{r} snap purge vm-100-disk-0"),
            format!("{r} rm vm-100-disk-0"),
        ]
    );
    assert!(f.commands().iter().all(|c| !c.contains(KEY)));
}

#[test]
fn snapshots_resize_size_status() {
    let f = Fixture::new(EXTERNAL, Some(KEY), |c| {
        RecordingRunner::new()
            .reply(&format!("{} info vm-100-disk-0 --format json --snap first", rbd(c)), r#"{"size":34359738368,"format":2,"protected":"true"}"#)
            .reply(&format!("{} info vm-100-disk-0 --format json", rbd(c)), r#"{"size":34359738368,"format":2,"protected":"false"}"#)
            .reply(&format!("{} du", rbd(c)), r#"{"images":[{"name":"vm-100-disk-0","provisioned_size":34359738368,"used_size":1073741824}]}"#)
            .reply("ceph", DF)
    });
    let (c, p) = (conn(&f.run, "ceph-ext"), &f.plugin);
    let r = rbd(&c);
    p.snapshot("vm-100-disk-0", "first").unwrap();
    p.rollback("vm-100-disk-0", "first").unwrap();
    p.delete_snapshot("vm-100-disk-0", "first").unwrap();
    p.resize("vm-100-disk-0", 10 * 1024 * 1024 * 1024 + 1)
        .unwrap();
    assert_eq!(
        p.volume_size("vm-100-disk-0").unwrap(),
        (34359738368, 1073741824)
    );
    // The data pool holds an erasure-coded storage's data.
    assert_eq!(
        p.status().unwrap(),
        Usage {
            total: 1854000000000,
            used: 20000000000,
            avail: 1834000000000
        }
    );
    assert_eq!(
        f.commands(),
        [
            format!("{r} snap create --snap first vm-100-disk-0"),
            format!("{r} snap rollback --snap first vm-100-disk-0"),
            format!("{r} info vm-100-disk-0 --format json --snap first"),
            format!("{r} snap unprotect vm-100-disk-0 --snap first"),
            format!("{r} snap rm --snap first vm-100-disk-0"),
            format!("{r} resize --size 10241 vm-100-disk-0"),
            format!("{r} info vm-100-disk-0 --format json"),
            format!("{r} du vm-100-disk-0 --format json"),
            format!("ceph {c} df --format json"),
        ]
    );
}

#[test]
fn base_clone_rename() {
    let f = Fixture::new(EXTERNAL, Some(KEY), |c| {
        RecordingRunner::new()
            .reply(
                &format!("{} info", rbd(c)),
                r#"{"size":34359738368,"format":2,"features":["layering"]}"#,
            )
            .fail(
                &format!("{} rename vm-100-disk-1 vm-105-disk-0", rbd(c)),
                "rbd: rename error: (17) File exists",
            )
    });
    let (r, p) = (rbd(&conn(&f.run, "ceph-ext")), &f.plugin);
    assert_eq!(p.create_base("vm-100-disk-0").unwrap(), "base-100-disk-0");
    assert_eq!(
        p.clone_image("base-101-disk-0", 103, "vm-103-disk-0")
            .unwrap(),
        "base-101-disk-0/vm-103-disk-0"
    );
    assert!(p
        .clone_image("vm-100-disk-0", 103, "vm-103-disk-0")
        .is_err());
    assert_eq!(
        p.rename("base-101-disk-0/vm-102-disk-0", 104, "vm-104-disk-0")
            .unwrap(),
        "base-101-disk-0/vm-104-disk-0"
    );
    assert!(matches!(
        p.rename("vm-100-disk-1", 105, "vm-105-disk-0"),
        Err(StorageError::AlreadyExists(_))
    ));
    // A clone's name must match its parent before it becomes a base.
    assert!(p
        .create_base("base-101-disk-0/vm-102-disk-0")
        .unwrap_err()
        .to_string()
        .contains("parent"));
    assert_eq!(
        f.commands()[..6],
        [
            format!("{r} info vm-100-disk-0 --format json"),
            format!("{r} rename vms/ns1/vm-100-disk-0 vms/ns1/base-100-disk-0"),
            format!("{r} snap create --snap __base__ base-100-disk-0"),
            format!("{r} snap protect base-100-disk-0 --snap __base__"),
            format!("{r} clone vms/ns1/base-101-disk-0 --snap __base__ --data-pool ecpool vms/ns1/vm-103-disk-0"),
            format!("{r} rename vm-102-disk-0 vm-104-disk-0"),
        ]
    );
}

#[test]
fn qemu_url_and_krbd_device() {
    let f = Fixture::new(EXTERNAL, Some(KEY), |_| RecordingRunner::new());
    let run = f.run.display();
    assert_eq!(
        f.plugin.path("base-101-disk-0/vm-102-disk-0").unwrap().to_str().unwrap(),
        format!(
            "rbd:vms/ns1/vm-102-disk-0:conf={run}/ceph/ceph-ext.conf:mon_host=10.0.0.1;10.0.0.2\\:6789;[fd00\\:\\:3]\\:3300:auth_supported=cephx:id=pveuser:keyring={run}/ceph/ceph-ext.keyring"
        )
    );

    let krbd = EXTERNAL.replace("\tusername", "\tkrbd 1\n\tusername");
    let fsid = "5f8c3b2a-1d4e-4f6a-9b7c-8d9e0f1a2b3c";
    let f = Fixture::new(&krbd, Some(KEY), |_| {
        RecordingRunner::new().reply("ceph", &format!("{{\"fsid\":\"{fsid}\"}}\n"))
    });
    let c = conn(&f.run, "ceph-ext");
    assert_eq!(
        f.plugin.path("vm-100-disk-0").unwrap().to_str().unwrap(),
        format!("/dev/rbd-pve/{fsid}/vms/ns1/vm-100-disk-0")
    );
    f.plugin.activate_volume("vm-100-disk-0").unwrap();
    f.plugin.deactivate_volume("vm-100-disk-0").unwrap(); // not mapped here: nothing to unmap
    assert_eq!(
        f.commands(),
        [
            format!("ceph {c} fsid --format json"),
            format!("ceph {c} fsid --format json"),
            format!("{} map vm-100-disk-0", rbd(&c)),
            format!("ceph {c} fsid --format json"),
        ]
    );
}

#[test]
fn local_cluster_uses_its_ceph_conf() {
    let cfg = "rbd: ceph-local\n\tcontent images\n\tkrbd 0\n\tpool vms\n\n";
    let f = Fixture::new(cfg, None, |_| RecordingRunner::new());
    f.plugin.list_images(None).unwrap();
    assert_eq!(
        f.commands(),
        ["rbd -p vms -c /etc/pve/ceph.conf -n client.admin ls -l --format json"]
    );
    assert_eq!(
        f.plugin.path("vm-100-disk-0").unwrap().to_str(),
        Some("rbd:vms/vm-100-disk-0:conf=/etc/pve/ceph.conf")
    );

    let f = Fixture::new(cfg, Some(KEY), |_| RecordingRunner::new());
    let keyring = f.run.join("ceph/ceph-local.keyring");
    f.plugin.list_images(None).unwrap();
    assert_eq!(
        f.commands(),
        [format!("rbd -p vms -c /etc/pve/ceph.conf --auth_supported cephx -n client.admin --keyring {} ls -l --format json", keyring.display())]
    );
    assert_eq!(
        f.plugin.path("vm-100-disk-0").unwrap().to_str().unwrap(),
        format!(
            "rbd:vms/vm-100-disk-0:conf=/etc/pve/ceph.conf:id=admin:keyring={}",
            keyring.display()
        )
    );
    assert!(
        !f.run.join("ceph/ceph-local.conf").exists(),
        "the local cluster has its own ceph.conf"
    );
}

#[test]
fn export_and_import() {
    let f = Fixture::new(EXTERNAL, Some(KEY), |c| {
        RecordingRunner::new()
            .reply(&format!("{} info", rbd(c)), r#"{"size":4,"format":2}"#)
            .reply(&format!("{} export", rbd(c)), "DATA")
            .reply(
                &format!("{} ls --format json", rbd(c)),
                r#"["vm-100-disk-0","base-101-disk-0"]"#,
            )
    });
    let c = conn(&f.run, "ceph-ext");
    let mut out = Vec::new();
    f.plugin
        .export("vm-100-disk-0", "raw+size", None, &mut out)
        .unwrap();
    assert_eq!(out, [&4u64.to_le_bytes()[..], b"DATA"].concat());
    let stream = [&4u64.to_le_bytes()[..], b"DATA"].concat();
    assert_eq!(
        f.plugin
            .import(100, "vm-100-disk-7", "raw+size", &mut &stream[..])
            .unwrap(),
        "vm-100-disk-7"
    );
    assert!(matches!(
        f.plugin
            .import(100, "vm-100-disk-0", "raw+size", &mut &stream[..]),
        Err(StorageError::AlreadyExists(_))
    ));
    assert_eq!(
        f.commands()[..4],
        [
            format!("{} info vm-100-disk-0 --format json", rbd(&c)),
            format!("{} export --export-format 1 vm-100-disk-0 -", rbd(&c)),
            format!("{} ls --format json", rbd(&c)),
            format!(
                "rbd --dest-pool vms --namespace ns1 {c} import --export-format 1 - vm-100-disk-7"
            ),
        ]
    );
}
