//! Every implemented format with values it must accept and refuse, and
//! upstream's message for a refused value where the exact text matters.

use oxve_schema::format::{check_format, is_known_format, DEFERRED_FORMATS};

/// (format, good values, bad values)
const CASES: &[(&str, &[&str], &[&str])] = &[
    ("pve-node", &["pve1", "a", "node-2"], &["-a", "a-", "a.b", ""]),
    ("pve-vmid", &["100", "999999999"], &["99", "0100", "1000000000", "abc"]),
    ("pve-configid", &["net0", "a_b-c"], &["0a", "a", "a.b"]),
    ("pve-storage-id", &["local", "local-lvm", "a.b_c"], &["a", "1local", "loc al", "local-"]),
    ("pve-volume-id", &["local:100/vm-100-disk-0.raw", "a1:iso/x.iso"], &["local", ":x", "1a:x"]),
    ("pve-volume-id-or-absolute-path", &["/dev/sda", "local:iso/a.iso"], &["sda"]),
    ("pve-volume-id-or-qm-path", &["none", "cdrom", "/x", "local:1"], &["foo"]),
    ("pve-userid", &["root@pam", "a.b@my-realm"], &["ro", "root", "a b@pam", "a@1pam", "a:b@pam"]),
    ("pve-realm", &["pam", "my-ldap_1"], &["1pam", "p", "a b"]),
    ("pve-groupid", &["admins", "a.b-c_d"], &["a b", "a/b", ""]),
    ("pve-roleid", &["PVEAdmin", "my.role"], &["a b", "x!"]),
    ("pve-poolid", &["pool", "a/b/c"], &["a/b/c/d", "a b", "/a"]),
    ("pve-tokenid", &["root@pam!ci", "a@pve!t-1"], &["root@pam", "root@pam!1x"]),
    ("pve-priv", &["VM.Audit", "Sys.Modify", "Permissions.Modify"], &["VM.Foo", "vm.audit"]),
    ("pve-iface", &["eth0", "vmbr0.100", "enp3s0:1"], &["0eth", "e", "eth0.x"]),
    ("pve-bridge-id", &["vmbr0", "my_br.1"], &["a b", "br/0"]),
    ("ip", &["10.0.0.1", "::1", "fe80::1", "2001:db8::ffff:1.2.3.4"], &["10.0.0.256", "1.2.3", "::g"]),
    ("ipv4", &["192.168.1.1", "0.0.0.0"], &["::1", "01.1.1.1x", "256.1.1.1"]),
    ("ipv6", &["::", "2001:db8::1", "1:2:3:4:5:6:7:8"], &["1.2.3.4", "1:2:3:4:5:6:7:8:9", ":::"]),
    ("ipv4mask", &["255.255.255.0", "0.0.0.0", "255.255.255.255"], &["255.0.255.0", "24"]),
    ("CIDR", &["10.0.0.0/8", "fd00::/64"], &["10.0.0.0/7", "10.0.0.0", "fd00::/129"]),
    ("CIDRv4", &["10.0.0.0/24", "1.2.3.4/32"], &["10.0.0.0/33", "fd00::/64"]),
    ("CIDRv6", &["fd00::/8", "::1/128"], &["fd00::/7", "10.0.0.0/24"]),
    ("IPorCIDR", &["10.0.0.1", "10.0.0.0/24", "fd00::/64"], &["10.0.0.0/33", "host"]),
    ("IPorCIDRorAlias", &["10.0.0.1", "myalias", "dc/alias1", "guest/a_b"], &["1alias", "10.0.0.0/40"]),
    ("pve-ipv4-config", &["dhcp", "manual", "10.0.0.1/24"], &["auto", "10.0.0.1"]),
    ("pve-ipv6-config", &["auto", "dhcp", "fd00::1/64"], &["fd00::1"]),
    ("address", &["10.0.0.1", "host.example.com", "::1"], &["a_b", "-host"]),
    ("dns-name", &["example.com", "a", "a-b.c1"], &["-a.com", "a..b", "a_b"]),
    ("email", &["a@b.c", "first.last+x@ex-ample.org"], &["a", "a@", "@b.c", "a b@c"]),
    ("email-opt", &["", "a@b.c"], &["nope"]),
    ("email-or-username", &["a@b.c", "root"], &["a b", "@x"]),
    ("mac-addr", &["BC:24:11:00:00:01", "02:00:00:00:00:00"], &["01:00:00:00:00:00", "BC:24:11:00:00", "BC-24-11-00-00-01"]),
    ("mac-prefix", &["BC:24:11", "02", "BC:24:1"], &["01:00", "BC:24:11:00:00"]),
    ("pve-tag", &["prod", "a.b+c-d_e", "_x"], &["-a", "a b", "a;b"]),
    ("pve-startup-order", &["1", "order=2,up=30", "up=5,down=10"], &["first", "order=a", "", "side=1"]),
    ("pve-calendar-event", &["*/15", "mon..fri 02:30", "sat *-1..7 15:00", "daily", "00:00", "2024-01-01 10:00", "mon,wed 8/2:00"], &["", "sometimes", "25:00", "mon 10:61", "mon 1:2:3:4"]),
    ("pve-storage-path", &["/mnt/pve/x", "/a"], &["relative", "/(x", "/"]),
    ("pve-storage-path-in-property-string", &["/srv/share"], &["/", "srv", "/=b"]),
    ("pve-storage-server", &["10.0.0.1", "nfs.example.com"], &["nfs server", "a_b"]),
    ("pve-storage-portal-dns", &["10.0.0.1", "10.0.0.1:3260", "[fd00::1]:3260", "portal.example.com:3260"], &["a b", "x:y"]),
    ("pve-storage-content", &["images", "rootdir", "import", "snippets"], &["disks", ""]),
    ("pve-storage-vgname", &["pve", "vg-data_1.x"], &["-pve", "p", "a b"]),
    ("pve-storage-options", &["vers=4.2,soft"], &["a b", ""]),
    ("pve-dir-override", &["iso=isos", "backup=dumps/sub"], &["iso", "foo=bar", "iso=x."]),
    ("pve-sdn-zone-id", &["zone1", "ab"], &["a", "zone_1", "toolongzone"]),
    ("pve-sdn-vnet-id", &["vnet1"], &["1vnet", "vnet-1", "vnetvnet1"]),
    ("pve-sdn-controller-id", &["evpn-1", "ctl_x"], &["-evpn", "a"]),
    ("pve-sdn-dns-id", &["powerdns"], &["power-dns"]),
    ("pve-sdn-ipam-id", &["pve", "netbox1"], &["net box"]),
    ("pve-sdn-fabric-id", &["fab1", "a-b"], &["toolongfab", "a_b"]),
    ("pve-sdn-subnet-id", &["10.0.0.0/24", "zone1-10.0.0.0-24"], &["zone1-10.0.0.0", "x"]),
    ("pve-sdn-isis-net", &["49.0001.1921.6800.1002.00"], &["49.0001.00", "zz.0001.1921.6800.1002.00"]),
    ("pve-sdn-bgp-rt", &["65000:100"], &["65000", "a:1", "4294967296:1"]),
    ("pve-fw-addr-spec", &["10.0.0.1", "10.0.0.0/24,10.0.1.1", "10.0.0.1-10.0.0.5", "+ipset1", "myalias", "dc/alias"], &["10.0.0.1,,10.0.0.2", "10.0.0.1,fd00::1", "10.0.0.1-10.0.0.5,10.0.0.9", "999.1.1.1"]),
    ("pve-fw-dport-spec", &["22", "80,443", "1000:2000", "ssh", "echo-request"], &["70000", "2000:1000", "80,,443", "echo-request,22"]),
    ("pve-fw-sport-spec", &["1024:65535", "http"], &["1:2,3:4,5:6,7:8,9:10,11:12,13:14,15:16", "a b"]),
    ("pve-fw-protocol-spec", &["tcp", "udp", "6", "ipv6-icmp", ""], &["a b", "t/cp"]),
    ("pve-fw-icmp-type-spec", &["echo-request", "neighbor-solicitation", ""], &["ping", "8x"]),
    ("pve-fw-conntrack-helper", &["ftp", "ftp,tftp", ""], &["http", "ftp,,sip"]),
    ("pve-cpuset", &["0-3", "0,2,4-5", " 1 "], &["3-1", "a", "0-"]),
    ("pve-replication-job-id", &["100-0", "123456-15"], &["99-0", "100", "100-a"]),
    ("pve-ha-resource-or-vm-id", &["vm:100", "ct:101", "100"], &["vm100", "VM:100"]),
    ("pve-ha-resource-id", &["vm:100"], &["100"]),
    ("pve-ha-node", &["node1", "node1:2"], &["node1:x", "-n"]),
    ("pve-day-of-week", &["mon", "sun"], &["monday", "Mon"]),
    ("pve-task-status-type", &["ok", "ERROR", "warning", "unknown"], &["fail"]),
    ("pve-acme-domain", &["example.com", "a_b.example.com"], &["example", "-a.com"]),
    ("pve-acme-alias", &["_acme.example.com"], &["example", "a b.com"]),
    ("graphite-path", &["proxmox", "a.b-c"], &["a_b", ".a"]),
    ("ldap-simple-attr", &["uid", "sAMAccountName"], &["mail-addr", ""]),
    ("urlencoded", &["a%20b", "x-y_z.~*'()!"], &["a b", "a/b"]),
    ("disk-size", &["32G", "1.5T", "512", "4MiB"], &["32GB", "-1", "G"]),
    ("pve-hotplug-features", &["0", "1", "network,disk,usb"], &["gpu", "network;foo"]),
    ("pve-qm-bootdisk", &["scsi0", "virtio15", "ide3"], &["scsi31", "ide4", "net0"]),
    ("lxc-ip-with-ll-iface", &["10.0.0.1", "fe80::1%eth0"], &["fe80::1%", "host"]),
    ("pve-lxc-mp-string", &["/mnt/data", "relative/path"], &["/mnt/../etc", "/mnt/.", "../x"]),
    ("pve-lxc-dev-string", &["/dev/ttyUSB0"], &["/dev/../etc/passwd", "/tmp/x"]),
    ("pve-vlan-id-or-range", &["2", "100-200", "4094"], &["1", "4095", "200-100", "a"]),
    ("storage-pair", &["1", "local", "local:local-lvm"], &["a:b:c", "x"]),
    ("bridge-pair", &["vmbr0:vmbr1", "1"], &["vm br0"]),
    ("pem-string", &["-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n"], &["not pem"]),
    ("pem-certificate-chain", &["junk\n-----BEGIN CERTIFICATE-----\nQUJD\nREVG\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"], &["-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n"]),
    ("string-list", &["a,b c", ""], &[]),
    ("pve-vmid-list", &["100,101;102 103", ""], &["100,abc"]),
    ("pve-storage-content-list", &["images,rootdir"], &["images,foo"]),
    ("pve-priv-list", &["VM.Audit,Sys.Audit"], &["VM.Audit,Nope"]),
    ("pve-tag-list", &["a;b;c"], &["a;-b"]),
    ("pve-day-of-week-list", &["mon,tue"], &["mon,xyz"]),
    ("realm-sync-options", &["scope=users,enable-new=1", "remove-vanished=acl;entry"], &["scope=all", "foo=1", "remove-vanished=x"]),
    ("pve-tfa-config", &["type=oath,digits=6,step=30", "type=yubico,id=1"], &["digits=6", "type=oath,digits=9"]),
    ("pve-sdn-dhcp-range", &["start-address=10.0.0.10,end-address=10.0.0.20"], &["start-address=10.0.0.10"]),
    ("proxmox-remote", &["host=pve,apitoken=PVEAPIToken=a@pam!t=x"], &["host=pve"]),
    ("backup-fleecing", &["0", "enabled=1,storage=local-lvm", "1,storage=local"], &["1", "storage=1x"]),
    ("backup-performance", &["max-workers=8", "pbs-entries-max=100"], &["max-workers=0", "foo=1"]),
    ("prune-backups", &["keep-last=3,keep-daily=7", "keep-all=1"], &["keep-all=1,keep-last=1", "keep-last=-1"]),
];

#[test]
fn good_and_bad_values() {
    let mut failures = Vec::new();
    for (format, good, bad) in CASES {
        assert!(is_known_format(format), "{format} not known");
        for value in *good {
            if let Err(e) = check_format(format, value) {
                failures.push(format!("{format}: {value:?} refused: {e}"));
            }
        }
        for value in *bad {
            if check_format(format, value).is_ok() {
                failures.push(format!("{format}: {value:?} accepted"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn upstream_messages() {
    let cases = [
        ("pve-vmid", "1", "value does not look like a valid VM ID"),
        (
            "pve-node",
            "-",
            "value does not look like a valid node name",
        ),
        (
            "pve-storage-id",
            "a",
            "storage ID 'a' cannot be shorter than 2 characters",
        ),
        (
            "pve-storage-id",
            "a b",
            "storage ID 'a b' contains illegal characters",
        ),
        ("pve-configid", "0", "invalid configuration ID '0'"),
        ("pve-userid", "ab", "user name 'ab' is too short"),
        ("pve-priv", "X", "invalid privilege 'X'"),
        (
            "pve-poolid",
            "a/b/c/d",
            "pool name 'a/b/c/d' nested too deeply (max levels = 3)",
        ),
        (
            "mac-addr",
            "x",
            "value does not look like a valid unicast MAC address",
        ),
        (
            "address",
            "a b",
            "value does not look like a valid address: a b",
        ),
        (
            "disk-size",
            "x",
            "value does not look like a valid disk size: x",
        ),
        ("pve-tag", "-", "invalid characters in tag"),
        ("pve-iface", "0", "invalid network interface name '0'"),
        ("pve-volume-id", "x", "unable to parse volume ID 'x'"),
        (
            "pve-replication-job-id",
            "1-0",
            "invalid replication job id '1-0' (guest IDs < 100 are reserved)",
        ),
        (
            "pve-fw-dport-spec",
            "9:1",
            "backwards range '9:1' not allowed, did you mean '1:9'?",
        ),
        ("pve-vlan-id-or-range", "1", "invalid VLAN tag '1'"),
        (
            "realm-sync-options",
            "foo=1",
            "invalid key in comma-separated list property: foo",
        ),
        (
            "prune-backups",
            "keep-all=1,keep-last=2",
            "keep-all cannot be set together with other options.",
        ),
        (
            "backup-fleecing",
            "1",
            "'storage' parameter is required when 'enabled' is set",
        ),
        ("no-such-format", "x", "undefined format 'no-such-format'"),
    ];
    for (format, value, msg) in cases {
        assert_eq!(
            check_format(format, value).unwrap_err(),
            msg,
            "{format} {value:?}"
        );
    }
}

#[test]
fn deferred_formats_accept_anything_and_unknown_names_are_reported() {
    for name in DEFERRED_FORMATS {
        assert!(is_known_format(name));
        assert!(check_format(name, "anything,goes=1").is_ok());
    }
    assert!(!is_known_format("no-such-format"));
    assert!(!is_known_format("no-such-format-list"));
    assert!(is_known_format("pve-vmid-list"));
    assert!(is_known_format("email-opt"));
}
