//! Golden tests of the `cifs` plugin: the mount command line, and that the
//! password only ever reaches a private credentials file.

use oxve_storage::exec::RecordingRunner;
use oxve_storage::{Env, StorageConfig, StoragePlugin};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

const PASSWORD: &str = "s3cr3t pa55,word";

fn open(
    extra: &str,
    path: &Path,
    run: &Path,
    secret: Option<&str>,
) -> (Box<dyn StoragePlugin>, Arc<RecordingRunner>) {
    let runner = Arc::new(RecordingRunner::new());
    let cfg = format!(
        "cifs: smb\n\tpath {}\n\tserver 10.0.0.6\n\tshare pve\n\tcontent backup,iso\n{extra}\n",
        path.display()
    );
    let def = StorageConfig::parse(&cfg).get("smb").unwrap();
    let env = Env {
        runner: runner.clone(),
        run_dir: run.to_path_buf(),
        secret: secret.map(str::to_string),
    };
    (oxve_storage::plugins::open(def, env).unwrap(), runner)
}

#[test]
fn mount_with_credentials_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, run) = (dir.path().join("mnt"), dir.path().join("run"));
    let extra = "\tsubdir /backups\n\tusername alice\n\tdomain CORP\n\tsmbversion 3.0\n";
    let (p, r) = open(extra, &path, &run, Some(PASSWORD));
    p.activate().unwrap();
    let cred = run.join("cifs/smb.cred");
    assert_eq!(
        r.commands(),
        [format!(
            "mount -t cifs //10.0.0.6/pve/backups {} -o soft -o nobrl -o username=alice -o credentials={} -o domain=CORP -o vers=3.0",
            path.display(),
            cred.display()
        )]
    );
    assert_eq!(
        std::fs::read_to_string(&cred).unwrap(),
        format!("password={PASSWORD}\n")
    );
    assert_eq!(
        std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(r.commands().iter().all(|c| !c.contains("s3cr3t")));
    assert!(path.join("dump").is_dir() && path.join("template/iso").is_dir());
}

#[test]
fn guest_and_kerberos_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let (path, run) = (dir.path().join("mnt"), dir.path().join("run"));
    let (p, r) = open("", &path, &run, None);
    p.activate().unwrap();
    assert_eq!(
        r.commands(),
        [format!(
            "mount -t cifs //10.0.0.6/pve {} -o soft -o nobrl -o guest,username=guest -o vers=default",
            path.display()
        )]
    );

    let (p, r) = open(
        "\tusername alice\n\toptions sec=krb5,cache=none\n",
        &path,
        &run,
        Some(PASSWORD),
    );
    p.activate().unwrap();
    assert_eq!(
        r.commands(),
        [format!(
            "mount -t cifs //10.0.0.6/pve {} -o soft -o nobrl -o vers=default -o sec=krb5,cache=none",
            path.display()
        )]
    );
    assert!(
        !run.join("cifs/smb.cred").exists(),
        "Kerberos needs no password file"
    );
}

#[test]
fn failed_mount_error_names_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let runner =
        Arc::new(RecordingRunner::new().fail("mount", "mount error(13): Permission denied"));
    let cfg = format!(
        "cifs: smb\n\tpath {}\n\tserver srv.example\n\tshare pve\n\tusername alice\n\n",
        dir.path().display()
    );
    let def = StorageConfig::parse(&cfg).get("smb").unwrap();
    let env = Env {
        runner: runner.clone(),
        run_dir: dir.path().join("run"),
        secret: Some(PASSWORD.into()),
    };
    let p = oxve_storage::plugins::open(def, env).unwrap();
    let err = p.activate().unwrap_err().to_string();
    assert!(
        err.contains("Permission denied") && !err.contains("s3cr3t"),
        "{err}"
    );
}

#[test]
fn a_password_with_a_line_break_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (p, r) = open(
        "\tusername alice\n",
        &dir.path().join("mnt"),
        &dir.path().join("run"),
        Some("pw\nusername=root"),
    );
    assert!(p.activate().unwrap_err().to_string().contains("line break"));
    assert!(r.commands().is_empty());
}
