//! Golden tests of the storage scans: the exact command each scan runs,
//! the parsing of captured tool output, and the failures (tool missing,
//! server unreachable, logon refused) — without DNS or a network.

use oxve_storage::exec::{Cmd, RecordingRunner, Runner};
use oxve_storage::plugins::cifs::{parse_smbclient_list, CifsShare};
use oxve_storage::plugins::nfs::{parse_showmount, NfsExport};
use oxve_storage::plugins::zfspool::parse_zfs_filesystems;
use oxve_storage::scan::{CifsLogin, IscsiTarget, Network, Scanner, ThinPoolEntry};
use oxve_storage::{Result, StorageError};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const SHOWMOUNT: &str = include_str!("data/scan/showmount-exports.txt");
const SMB_LIST: &str = include_str!("data/scan/smbclient-list.txt");
const SMB_LOGON_FAILURE: &str = include_str!("data/scan/smbclient-logon-failure.txt");
const SMB_BROWSE_DENIED: &str = include_str!("data/scan/smbclient-browse-denied.txt");
const DISCOVERY: &str = include_str!("data/scan/iscsiadm-discovery.txt");
const VGS: &str = include_str!("data/scan/vgs.txt");
const LVS: &str = include_str!("data/scan/lvs-pve.txt");
const ZFS: &str = include_str!("data/scan/zfs-list-filesystems.txt");

const VGS_CMD: &str = "vgs --separator : --noheadings --units b --unbuffered --nosuffix --options vg_name,vg_size,vg_free,lv_count";
const LVS_CMD: &str = "lvs --separator : --noheadings --units b --unbuffered --nosuffix --config 'report/time_format=\"%s\"' --options vg_name,lv_name,lv_size,lv_attr,pool_lv,data_percent,metadata_percent,snap_percent,uuid,tags,metadata_size,time pve";
const ZFS_CMD: &str = "zfs list -t filesystem -Hp -o name,avail,used";
/// What the real runner reports when the program does not exist.
const ENOENT: &str = "No such file or directory (os error 2)";

/// Names resolve from a table; IP literals are themselves; only listed
/// addresses accept connections. Records every probe.
#[derive(Default)]
struct FakeNet {
    names: HashMap<&'static str, IpAddr>,
    open: Vec<SocketAddr>,
    probes: Mutex<Vec<SocketAddr>>,
}

impl FakeNet {
    fn new() -> FakeNet {
        FakeNet::default()
    }

    fn name(mut self, host: &'static str, ip: &str) -> FakeNet {
        self.names.insert(host, ip.parse().unwrap());
        self
    }

    fn open(mut self, addr: &str) -> FakeNet {
        self.open.push(addr.parse().unwrap());
        self
    }

    fn probes(&self) -> Vec<SocketAddr> {
        self.probes.lock().unwrap().clone()
    }
}

impl Network for FakeNet {
    fn resolve(&self, host: &str) -> std::io::Result<IpAddr> {
        if let Ok(ip) = host.parse() {
            return Ok(ip);
        }
        self.names
            .get(host)
            .copied()
            .ok_or_else(|| std::io::Error::other("Name or service not known"))
    }

    fn probe(&self, addr: SocketAddr) -> std::io::Result<()> {
        self.probes.lock().unwrap().push(addr);
        if self.open.contains(&addr) {
            Ok(())
        } else {
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
        }
    }
}

/// A runner that prints `stdout` and then fails with `stderr` (a tool that
/// reports on standard output and exits non-zero), and records what the
/// `-A` credentials file held while the tool ran.
struct Scripted {
    stdout: String,
    stderr: Option<String>,
    log: Mutex<Vec<String>>,
    credentials: Mutex<Vec<(PathBuf, String, u32)>>,
}

impl Scripted {
    fn new(stdout: &str, stderr: Option<&str>) -> Scripted {
        Scripted {
            stdout: stdout.into(),
            stderr: stderr.map(str::to_string),
            log: Mutex::new(Vec::new()),
            credentials: Mutex::new(Vec::new()),
        }
    }

    fn answer(&self, cmd: &Cmd) -> Result<String> {
        self.log.lock().unwrap().push(cmd.to_string());
        if let Some(i) = cmd.args.iter().position(|a| a == "-A") {
            let path = PathBuf::from(&cmd.args[i + 1]);
            let text = std::fs::read_to_string(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            self.credentials.lock().unwrap().push((path, text, mode));
        }
        Ok(self.stdout.clone())
    }

    fn failure(&self, cmd: &Cmd) -> Result<()> {
        match &self.stderr {
            Some(message) => Err(StorageError::Command {
                command: cmd.to_string(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl Runner for Scripted {
    fn run(&self, cmd: &Cmd) -> Result<String> {
        let out = self.answer(cmd)?;
        self.failure(cmd).map(|_| out)
    }

    fn run_to(&self, cmd: &Cmd, out: &mut dyn Write) -> Result<()> {
        let text = self.answer(cmd)?;
        out.write_all(text.as_bytes()).unwrap();
        self.failure(cmd)
    }

    fn run_from(&self, cmd: &Cmd, _input: &mut dyn Read) -> Result<()> {
        self.answer(cmd)?;
        self.failure(cmd)
    }
}

fn run_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        found.push(entry.display().to_string());
    }
    found
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn export(path: &str, options: &str) -> NfsExport {
    NfsExport {
        path: path.into(),
        options: options.into(),
    }
}

fn share(name: &str, description: &str) -> CifsShare {
    CifsShare {
        share: name.into(),
        description: description.into(),
    }
}

// ---- NFS ----

#[test]
fn nfs_lists_exports_sorted_by_path() {
    let r = RecordingRunner::new().reply("showmount", SHOWMOUNT);
    let (net, dir) = (FakeNet::new(), run_dir());
    let got = Scanner::new(&r, &net, dir.path())
        .nfs("192.0.2.10")
        .unwrap();
    assert_eq!(
        r.commands(),
        ["showmount --no-headers --exports 192.0.2.10"]
    );
    assert_eq!(
        got,
        [
            export("/export/iso", "*"),
            export("/srv/anon", "(everyone)"),
            export("/srv/nfs/backup", "192.168.10.21,192.168.10.22"),
            export("/srv/nfs/vms", "192.168.10.0/24"),
        ]
    );
    assert!(
        net.probes().is_empty(),
        "nfs scans probe nothing themselves"
    );
}

#[test]
fn nfs_resolves_the_server_name_first() {
    let r = RecordingRunner::new().reply("showmount", "");
    let net = FakeNet::new().name("nas.example", "192.0.2.11");
    let dir = run_dir();
    let scanner = Scanner::new(&r, &net, dir.path());
    assert_eq!(scanner.nfs("nas.example").unwrap(), []);
    assert_eq!(
        r.commands(),
        ["showmount --no-headers --exports 192.0.2.11"]
    );

    let e = scanner.nfs("nowhere.example").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unable to resolve address for server 'nowhere.example'"
    );
    assert_eq!(r.commands().len(), 1, "nothing runs for an unknown server");
}

#[test]
fn nfs_failures_are_errors_with_the_tools_words() {
    let (net, dir) = (FakeNet::new(), run_dir());
    let r = RecordingRunner::new().fail("showmount", "clnt_create: RPC: Unable to receive");
    let e = Scanner::new(&r, &net, dir.path())
        .nfs("127.0.0.1")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "command 'showmount --no-headers --exports 127.0.0.1' failed: clnt_create: RPC: Unable to receive"
    );

    let r = RecordingRunner::new().fail("showmount", ENOENT);
    let e = Scanner::new(&r, &net, dir.path())
        .nfs("127.0.0.1")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "showmount not installed - install the nfs-common package"
    );

    // A value a tool would read as an option never reaches it.
    let r = RecordingRunner::new();
    let e = Scanner::new(&r, &net, dir.path())
        .nfs("-oProxyCommand")
        .unwrap_err();
    assert!(matches!(e, StorageError::Option { ref key, .. } if key == "server"));
    assert!(r.commands().is_empty());
}

#[test]
fn showmount_parser_skips_what_is_not_an_export() {
    let text = "Export list for 10.0.0.1:\n/a  *\n\n/b\nrelative  *\n/c\t10.0.0.0/8, 10.1.0.0/16\n";
    assert_eq!(
        parse_showmount(text),
        [export("/a", "*"), export("/c", "10.0.0.0/8, 10.1.0.0/16")]
    );
}

// ---- CIFS ----

#[test]
fn cifs_guest_lists_disk_shares_sorted() {
    let r = Scripted::new(SMB_LIST, None);
    let (net, dir) = (FakeNet::new(), run_dir());
    let got = Scanner::new(&r, &net, dir.path())
        .cifs("192.0.2.20", &CifsLogin::default())
        .unwrap();
    assert_eq!(
        *r.log.lock().unwrap(),
        ["smbclient -m smb3 -d 1 -g -L 192.0.2.20 -N"]
    );
    assert_eq!(
        got,
        [
            share("backup", "Proxmox backups"),
            share("iso", "ISO images | installers"),
            share("print$", "Printer Drivers"),
            share("vm-images", ""),
        ]
    );
    assert!(
        r.credentials.lock().unwrap().is_empty(),
        "no credentials file for a guest"
    );
}

#[test]
fn cifs_password_goes_through_a_private_file_that_is_removed() {
    let r = Scripted::new(SMB_LIST, None);
    let net = FakeNet::new().name("nas.example", "192.0.2.21");
    let dir = run_dir();
    let login = CifsLogin {
        username: Some("backup%svc"),
        password: Some("s3cr3t pass;$(rm -rf /)"),
        domain: Some("OFFICE"),
    };
    let got = Scanner::new(&r, &net, dir.path())
        .cifs("nas.example", &login)
        .unwrap();
    assert_eq!(got.len(), 4);
    let log = r.log.lock().unwrap().clone();
    let creds = r.credentials.lock().unwrap().clone();
    assert_eq!(creds.len(), 1);
    let (path, text, mode) = &creds[0];
    assert_eq!(
        log,
        [format!(
            "smbclient -m smb3 -d 1 -g -L 192.0.2.21 -W OFFICE -A {}",
            path.display()
        )]
    );
    assert!(path.starts_with(dir.path()), "{path:?}");
    assert_eq!(
        text,
        "username=backup%svc\npassword=s3cr3t pass;$(rm -rf /)\n"
    );
    assert_eq!(*mode, 0o600);
    assert!(
        !log[0].contains("s3cr3t"),
        "the password is never on the command line"
    );
    assert!(
        !path.exists(),
        "the credentials file is removed after the scan"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn cifs_user_without_password_is_asked_for_no_password() {
    let r = Scripted::new(SMB_LIST, None);
    let (net, dir) = (FakeNet::new(), run_dir());
    let login = CifsLogin {
        username: Some("alice"),
        ..Default::default()
    };
    Scanner::new(&r, &net, dir.path())
        .cifs("192.0.2.20", &login)
        .unwrap();
    let log = r.log.lock().unwrap().clone();
    assert!(log[0].ends_with(" -N"), "{log:?}");
    assert_eq!(r.credentials.lock().unwrap()[0].1, "username=alice\n");
}

#[test]
fn cifs_refuses_what_the_credentials_file_cannot_carry() {
    let (net, dir) = (FakeNet::new(), run_dir());
    for (password, username) in [
        ("two\nlines", "alice"),
        (" leading blank", "alice"),
        ("fine", "bob\rpassword=x"),
    ] {
        let r = Scripted::new(SMB_LIST, None);
        let login = CifsLogin {
            username: Some(username),
            password: Some(password),
            domain: None,
        };
        let e = Scanner::new(&r, &net, dir.path())
            .cifs("192.0.2.20", &login)
            .unwrap_err();
        let StorageError::Option { key, message } = &e else {
            panic!("{e}");
        };
        assert!(key == "password" || key == "username", "{key}");
        assert!(
            !message.contains(password),
            "the value is not echoed: {message}"
        );
        assert!(r.log.lock().unwrap().is_empty(), "nothing ran");
    }
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn cifs_logon_failure_on_stdout_is_the_error() {
    let (net, dir) = (FakeNet::new(), run_dir());
    let r = Scripted::new(SMB_LOGON_FAILURE, Some("exit status 1"));
    let login = CifsLogin {
        username: Some("alice"),
        password: Some("wrong"),
        domain: None,
    };
    let e = Scanner::new(&r, &net, dir.path())
        .cifs("192.0.2.20", &login)
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("session setup failed: NT_STATUS_LOGON_FAILURE"),
        "{text}"
    );
    assert!(!text.contains("wrong"), "{text}");
    assert!(leftovers(dir.path()).is_empty(), "removed on failure too");
}

#[test]
fn cifs_connection_refused_and_missing_tool() {
    let (net, dir) = (FakeNet::new(), run_dir());
    let refused = "do_connect: Connection to 127.0.0.1 failed (Error NT_STATUS_CONNECTION_REFUSED)";
    let r = RecordingRunner::new().fail("smbclient", refused);
    let e = Scanner::new(&r, &net, dir.path())
        .cifs("127.0.0.1", &CifsLogin::default())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("command 'smbclient -m smb3 -d 1 -g -L 127.0.0.1 -N' failed: {refused}")
    );

    let r = RecordingRunner::new().fail("smbclient", ENOENT);
    let e = Scanner::new(&r, &net, dir.path())
        .cifs("127.0.0.1", &CifsLogin::default())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "smbclient not installed - install the smbclient package"
    );
}

#[test]
fn cifs_status_lines_fail_only_a_scan_without_shares() {
    let (net, dir) = (FakeNet::new(), run_dir());
    // Exit 0 but the browse was refused: an error, not an empty list.
    let r = Scripted::new(SMB_BROWSE_DENIED, None);
    let e = Scanner::new(&r, &net, dir.path())
        .cifs("192.0.2.20", &CifsLogin::default())
        .unwrap_err();
    assert!(e.to_string().contains("NT_STATUS_ACCESS_DENIED"), "{e}");

    // Shares listed, then a later step failed: the shares are the answer.
    let text = format!("{SMB_LIST}Unable to connect with SMB1 -- NT_STATUS_CONNECTION_REFUSED\n");
    let r = Scripted::new(&text, Some("exit status 1"));
    let got = Scanner::new(&r, &net, dir.path())
        .cifs("192.0.2.20", &CifsLogin::default())
        .unwrap();
    assert_eq!(got.len(), 4);

    // A server without disk shares answers an empty list.
    let r = Scripted::new("IPC|IPC$|IPC Service\n", None);
    let got = Scanner::new(&r, &net, dir.path())
        .cifs("192.0.2.20", &CifsLogin::default())
        .unwrap();
    assert!(got.is_empty());
}

#[test]
fn smbclient_parser() {
    let list = parse_smbclient_list(SMB_LIST);
    assert_eq!(list.shares.len(), 4);
    assert_eq!(list.shares[0], share("vm-images", ""));
    assert!(list.failures.is_empty(), "{:?}", list.failures);
    let list = parse_smbclient_list(SMB_LOGON_FAILURE);
    assert!(list.shares.is_empty());
    assert_eq!(
        list.failures,
        ["session setup failed: NT_STATUS_LOGON_FAILURE"]
    );
    assert!(
        parse_smbclient_list("Disk||empty name\nstatus: NT_STATUS_OK\n")
            .shares
            .is_empty()
    );
}

// ---- iSCSI ----

#[test]
fn iscsi_probes_then_discovers_and_groups_portals() {
    let r = RecordingRunner::new().reply("iscsiadm", DISCOVERY);
    let net = FakeNet::new().open("192.0.2.30:3260");
    let dir = run_dir();
    let got = Scanner::new(&r, &net, dir.path())
        .iscsi("192.0.2.30")
        .unwrap();
    assert_eq!(net.probes(), ["192.0.2.30:3260".parse().unwrap()]);
    assert_eq!(
        r.commands(),
        ["iscsiadm --mode discovery --type sendtargets --portal 192.0.2.30"]
    );
    assert_eq!(
        got,
        [
            IscsiTarget {
                target: "iqn.2003-01.org.linux-iscsi.san1.x8664:sn.4a1e0c2f7b21".into(),
                portal: "192.168.50.10:3260,192.168.51.10:3260".into(),
            },
            IscsiTarget {
                target: "iqn.2005-10.org.freenas.ctl:vmstore".into(),
                portal: "192.168.50.10:3260,[fd00:50::10]:3260".into(),
            },
        ]
    );
}

#[test]
fn iscsi_portal_forms() {
    let dir = run_dir();
    for (portal, probe, arg) in [
        ("192.0.2.31:3261", "192.0.2.31:3261", "192.0.2.31:3261"),
        ("[fd00::31]:3261", "[fd00::31]:3261", "[fd00::31]:3261"),
        ("[fd00::32]", "[fd00::32]:3260", "[fd00::32]"),
        ("fd00::33", "[fd00::33]:3260", "[fd00::33]"),
        ("san.example:3262", "192.0.2.34:3262", "192.0.2.34:3262"),
    ] {
        let r = RecordingRunner::new().reply("iscsiadm", "");
        let net = FakeNet::new().name("san.example", "192.0.2.34").open(probe);
        let got = Scanner::new(&r, &net, dir.path()).iscsi(portal).unwrap();
        assert!(got.is_empty());
        assert_eq!(net.probes(), [probe.parse().unwrap()], "{portal}");
        assert_eq!(
            r.commands(),
            [format!(
                "iscsiadm --mode discovery --type sendtargets --portal {arg}"
            )],
            "{portal}"
        );
    }
}

#[test]
fn iscsi_failures() {
    let dir = run_dir();
    // Unreachable: an error at once, iscsiadm never runs.
    let r = RecordingRunner::new().reply("iscsiadm", DISCOVERY);
    let net = FakeNet::new();
    let e = Scanner::new(&r, &net, dir.path())
        .iscsi("127.0.0.1")
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("iSCSI portal '127.0.0.1' (127.0.0.1:3260) is not reachable"),
        "{e}"
    );
    assert!(r.commands().is_empty());

    // A name that does not resolve is a bad parameter, as upstream.
    let e = Scanner::new(&r, &net, dir.path())
        .iscsi("nowhere.example")
        .unwrap_err();
    assert!(
        matches!(&e, StorageError::Option { key, message }
            if key == "portal" && message == "unable to resolve portal address 'nowhere.example'"),
        "{e}"
    );
    let e = Scanner::new(&r, &net, dir.path())
        .iscsi("host:notaport")
        .unwrap_err();
    assert!(
        matches!(&e, StorageError::Option { key, .. } if key == "portal"),
        "{e}"
    );

    let net = FakeNet::new().open("127.0.0.1:3260");
    let r = RecordingRunner::new().fail("iscsiadm", ENOENT);
    let e = Scanner::new(&r, &net, dir.path())
        .iscsi("127.0.0.1")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "iscsiadm not installed - install the open-iscsi package"
    );

    let r = RecordingRunner::new().fail(
        "iscsiadm",
        "iscsiadm: Could not perform SendTargets discovery: encountered connection failure",
    );
    let e = Scanner::new(&r, &net, dir.path())
        .iscsi("127.0.0.1")
        .unwrap_err();
    assert!(e.to_string().contains("SendTargets discovery"), "{e}");
}

// ---- LVM ----

#[test]
fn lvm_lists_volume_groups_sorted() {
    let r = RecordingRunner::new().reply("vgs", VGS);
    let (net, dir) = (FakeNet::new(), run_dir());
    let got = Scanner::new(&r, &net, dir.path()).lvm().unwrap();
    assert_eq!(r.commands(), [VGS_CMD]);
    let names: Vec<&str> = got.iter().map(|g| g.vg.as_str()).collect();
    assert_eq!(names, ["data2", "pve", "vmstore"]);
    assert_eq!(
        (got[1].size, got[1].free, got[1].lvcount),
        (499570991104, 16101933056, 5)
    );
    let json = serde_json::to_value(&got[0]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"vg": "data2", "size": 2000393601024u64, "free": 2000393601024u64, "lvcount": 0})
    );
}

#[test]
fn lvm_without_groups_and_failures() {
    let (net, dir) = (FakeNet::new(), run_dir());
    // No physical volumes at all: vgs prints nothing and succeeds.
    let r = RecordingRunner::new().reply("vgs", "");
    assert!(Scanner::new(&r, &net, dir.path()).lvm().unwrap().is_empty());

    // vgs reported groups, then failed (a clustered VG it cannot lock).
    let r = Scripted::new(VGS, Some("Skipping clustered volume group shared0"));
    assert_eq!(Scanner::new(&r, &net, dir.path()).lvm().unwrap().len(), 3);

    let r = Scripted::new("", Some("/dev/mapper/control: open failed: No such device"));
    let e = Scanner::new(&r, &net, dir.path()).lvm().unwrap_err();
    assert!(e.to_string().contains("/dev/mapper/control"), "{e}");

    let r = RecordingRunner::new().fail("vgs", ENOENT);
    let e = Scanner::new(&r, &net, dir.path()).lvm().unwrap_err();
    assert_eq!(
        e.to_string(),
        "vgs not installed - install the lvm2 package"
    );
}

#[test]
fn lvmthin_lists_the_thin_pools_of_one_group() {
    let r = RecordingRunner::new().reply("lvs", LVS);
    let (net, dir) = (FakeNet::new(), run_dir());
    let got = Scanner::new(&r, &net, dir.path()).lvmthin("pve").unwrap();
    assert_eq!(r.commands(), [LVS_CMD]);
    assert_eq!(
        got,
        [
            ThinPoolEntry {
                lv: "data".into(),
                vg: "pve".into(),
                lv_size: 1836423282688,
                used: 229552910336,
                lv_type: "t".into(),
                lv_state: "a".into(),
                ctime: Some(1690000000),
            },
            ThinPoolEntry {
                lv: "fast".into(),
                vg: "pve".into(),
                lv_size: 214748364800,
                used: 0,
                lv_type: "t".into(),
                lv_state: "-".into(),
                ctime: Some(1700000000),
            },
        ]
    );
}

#[test]
fn lvmthin_failures() {
    let (net, dir) = (FakeNet::new(), run_dir());
    let r = RecordingRunner::new().fail(
        "lvs",
        "Volume group \"nope\" not found\n  Cannot process volume group nope",
    );
    let e = Scanner::new(&r, &net, dir.path())
        .lvmthin("nope")
        .unwrap_err();
    assert!(
        e.to_string().contains("Volume group \"nope\" not found"),
        "{e}"
    );

    let r = RecordingRunner::new().fail("lvs", ENOENT);
    let e = Scanner::new(&r, &net, dir.path())
        .lvmthin("pve")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "lvs not installed - install the lvm2 package"
    );

    let r = RecordingRunner::new();
    let e = Scanner::new(&r, &net, dir.path())
        .lvmthin("--all")
        .unwrap_err();
    assert!(
        matches!(&e, StorageError::Option { key, .. } if key == "vg"),
        "{e}"
    );
    assert!(r.commands().is_empty());
}

// ---- ZFS ----

#[test]
fn zfs_lists_file_systems_without_guest_subvolumes() {
    let r = RecordingRunner::new().reply("zfs", ZFS);
    let (net, dir) = (FakeNet::new(), run_dir());
    let got = Scanner::new(&r, &net, dir.path()).zfs().unwrap();
    assert_eq!(r.commands(), [ZFS_CMD]);
    let names: Vec<&str> = got.iter().map(|p| p.pool.as_str()).collect();
    assert_eq!(
        names,
        [
            "rpool",
            "rpool/ROOT",
            "rpool/ROOT/pve-1",
            "rpool/data",
            "rpool/data/subvol-extra",
            "tank"
        ]
    );
    assert_eq!(
        (got[0].size, got[0].free),
        (472446402560 + 27917287424, 472446402560)
    );

    let r = RecordingRunner::new().fail("zfs", ENOENT);
    let e = Scanner::new(&r, &net, dir.path()).zfs().unwrap_err();
    assert_eq!(
        e.to_string(),
        "zfs not installed - install the zfsutils-linux package"
    );
}

#[test]
fn zfs_parser_skips_malformed_lines() {
    let got = parse_zfs_filesystems("a\t1\t2\nbad line\nb\tx\t2\nc\t3\t4\textra\n");
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].name.as_str(), got[0].avail, got[0].used),
        ("a", 1, 2)
    );
}
