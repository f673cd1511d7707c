"""Storage scans (`/nodes/{node}/scan/*`, `pvesm scan`) and the read side of
`/nodes/{node}/disks` against this host's real tools and disks.

Every test holds whether or not a tool is installed: with it, the answer must
match what the tool itself reports on this host; without it, the answer is a
clean 500 naming the missing tool — never an empty list that hides it. Servers
are only looked for on loopback: when nothing listens there, the scan must
fail with the client's own error; when something does (the test host VM),
the scan must list what the client lists."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from proxmoxer.core import ResourceException

# Upstream's whitelist of disk names in /sys/block (Diskmanage::get_disks).
DISK_NAME = re.compile(r"^((h|s|x?v)d[a-z]+|nvme\d+n\d+|cciss!c\d+d\d+)$")


def tool(name: str) -> str | None:
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(name)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, LC_ALL="C"))


@pytest.fixture(scope="module")
def api(node):
    """A raw session of admin@pve and the node's API URL."""
    return node.admin_session(), f"{node.url}/api2/json/nodes/{node.node}"


def get(api, path: str, **params):
    session, base = api
    return session.get(f"{base}{path}", params=params, timeout=90)


def error_of(r) -> str:
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    return (body.get("message") or r.reason or "").strip()


def assert_not_installed(r, what: str) -> None:
    assert r.status_code == 500, (r.status_code, r.text)
    assert re.search(rf"\b{what} not installed", error_of(r)), error_of(r)


# ---- scan index and the unbuilt pbs scan ----


def test_scan_index_lists_upstreams_methods(admin, nodename):
    got = [e["method"] for e in admin.nodes(nodename).scan.get()]
    assert got == ["cifs", "iscsi", "lvm", "nfs", "pbs", "zfs"]


def test_pbs_scan_is_not_implemented(api):
    r = get(api, "/scan/pbs", server="127.0.0.1", username="root@pam", password="x")
    assert r.status_code == 501, (r.status_code, r.text)
    assert "not implemented" in error_of(r)


# ---- LVM ----


def host_vgs() -> list[str]:
    out = run("vgs", "--noheadings", "-o", "vg_name")
    return sorted(line.strip() for line in out.stdout.splitlines() if line.strip())


def test_scan_lvm_matches_vgs(api, node):
    r = get(api, "/scan/lvm")
    if tool("vgs") is None:
        assert_not_installed(r, "vgs")
        return
    assert r.status_code == 200, r.text
    got = r.json()["data"]
    # device-mapper absent or no physical volumes: vgs reports nothing, and
    # so does the scan; with volume groups (the test host VM), the same ones.
    assert [g["vg"] for g in got] == host_vgs()
    for g in got:
        assert g["size"] >= g["free"] >= 0 and g["lvcount"] >= 0
    cli = node.cli("pvesm", "scan", "lvm")
    assert cli.stdout.splitlines() == host_vgs()
    assert node.cli("pvesm", "lvmscan").stdout == cli.stdout, "upstream's alias"


def test_scan_lvmthin(api):
    missing_vg = "oxvetest-no-such-vg"
    r = get(api, "/scan/lvmthin", vg=missing_vg)
    if tool("lvs") is None:
        assert_not_installed(r, "lvs")
        return
    assert r.status_code == 500, r.text
    assert f'Volume group "{missing_vg}" not found' in error_of(r), error_of(r)
    for vg in host_vgs():
        r = get(api, "/scan/lvmthin", vg=vg)
        assert r.status_code == 200, r.text
        out = run("lvs", "--noheadings", "-o", "lv_name,lv_attr", vg).stdout
        pools = sorted(n for n, attr in (line.split() for line in out.splitlines() if line.strip())
                       if attr.startswith("t"))
        assert [p["lv"] for p in r.json()["data"]] == pools
    # The schema's pattern keeps option-like names away from lvs.
    r = get(api, "/scan/lvmthin", vg="-all")
    assert r.status_code == 400 and "vg" in r.json().get("errors", {}), r.text


# ---- ZFS ----


def test_scan_zfs(api, node):
    r = get(api, "/scan/zfs")
    if tool("zfs") is None:
        assert_not_installed(r, "zfs")
        cli = node.cli("pvesm", "scan", "zfs", check=False)
        assert cli.returncode != 0 and "zfs not installed" in cli.stderr
        return
    assert r.status_code == 200, r.text
    out = run("zfs", "list", "-t", "filesystem", "-H", "-o", "name").stdout.split()
    got = [p["pool"] for p in r.json()["data"]]
    assert set(got) <= set(out)


# ---- network scans against loopback ----


def test_scan_nfs_without_server_is_a_clean_error(api, node):
    r = get(api, "/scan/nfs", server="127.0.0.1")
    if tool("showmount") is None:
        assert_not_installed(r, "showmount")
        return
    if listening(111):
        # An NFS server on this host (the test host VM): the same exports.
        assert r.status_code == 200, r.text
        out = run("showmount", "--no-headers", "--exports", "127.0.0.1").stdout
        assert sorted(e["path"] for e in r.json()["data"]) == sorted(
            line.split()[0] for line in out.splitlines() if line.startswith("/"))
        return
    assert r.status_code == 500, r.text
    msg = error_of(r)
    assert msg.startswith("command 'showmount --no-headers --exports 127.0.0.1' failed"), msg
    assert "RPC" in msg, msg
    cli = node.cli("pvesm", "scan", "nfs", "127.0.0.1", check=False)
    assert cli.returncode != 0 and "showmount" in cli.stderr and cli.stdout == ""
    cli = node.cli("pvesm", "nfsscan", "127.0.0.1", check=False)
    assert cli.returncode != 0 and "showmount" in cli.stderr


def test_scan_nfs_rejects_bad_servers(api):
    for bad in ("-oProxyCommand=x", "two words", "a;b"):
        r = get(api, "/scan/nfs", server=bad)
        assert r.status_code == 400 and "server" in r.json()["errors"], (bad, r.text)
    r = get(api, "/scan/nfs", server="no-such-host.invalid")
    assert r.status_code == 500, r.text
    assert error_of(r) == "unable to resolve address for server 'no-such-host.invalid'"


def test_scan_cifs_never_leaks_the_password(api, node):
    password = "Pw-7f3a9c-never-shown"
    r = get(api, "/scan/cifs", server="127.0.0.1", username="alice", password=password,
            domain="WORKGROUP")
    assert password not in r.text
    run_dir = node.root / "run/oxve/storage"
    assert not list(run_dir.glob("smbclient-*")), "the credentials file is removed"
    if tool("smbclient") is None:
        assert_not_installed(r, "smbclient")
        return
    if listening(445):
        assert r.status_code in (200, 500), r.text
        return
    assert r.status_code == 500, r.text
    msg = error_of(r)
    assert "NT_STATUS_CONNECTION_REFUSED" in msg, msg
    assert re.search(r"-A \S+/run/oxve/storage/smbclient-\d+-\d+\.cred", msg), msg

    # The CLI reads a password given without value from standard input.
    cli = node.cli("pvesm", "scan", "cifs", "127.0.0.1", "--username", "alice", "--password",
                   input=password + "\n", check=False)
    assert cli.returncode != 0
    assert password not in cli.stdout + cli.stderr
    assert "NT_STATUS_CONNECTION_REFUSED" in cli.stderr, cli.stderr

    # What the credentials file cannot carry is refused before smbclient runs.
    r = get(api, "/scan/cifs", server="127.0.0.1", username="alice", password=" leading")
    assert r.status_code == 400 and "password" in r.json()["errors"], r.text
    assert " leading" not in r.text


def test_scan_iscsi_unreachable_portal(api):
    r = get(api, "/scan/iscsi", portal="127.0.0.1")
    if listening(3260):
        assert r.status_code in (200, 500), r.text
        return
    assert r.status_code == 500, r.text
    assert error_of(r).startswith("iSCSI portal '127.0.0.1' (127.0.0.1:3260) is not reachable"), \
        error_of(r)
    r = get(api, "/scan/iscsi", portal="no-such-host.invalid:3260")
    assert r.status_code == 400 and "portal" in r.json()["errors"], r.text


# ---- disks ----


def expected_disks() -> list[str]:
    """The /sys/block entries upstream lists: whitelisted names with a
    device behind them, not on an iSCSI transport."""
    found = []
    for entry in sorted(os.listdir("/sys/block")):
        path = Path("/sys/block") / entry
        if not DISK_NAME.match(entry) or not (path / "device").exists():
            continue
        if "/session" in os.path.realpath(path) and "iscsi" in os.path.realpath(path):
            continue
        found.append(entry)
    return found


def test_disks_index(admin, nodename):
    got = [e["name"] for e in admin.nodes(nodename).disks.get()]
    assert got == ["list", "initgpt", "smart", "lvm", "lvmthin", "directory", "wipedisk", "zfs"]


def test_disk_list_matches_sys_block(admin, nodename):
    disks = admin.nodes(nodename).disks.list.get(skipsmart=1)
    devpaths = [d["devpath"] for d in disks]
    assert devpaths == sorted(devpaths), "sorted by name"
    for d in disks:
        name = d["devpath"].removeprefix("/dev/").replace("/", "!")
        assert not re.match(r"^(loop|ram|zram|dm-|md|sr|nbd)", name), d
        sectors = int((Path("/sys/block") / name / "size").read_text())
        assert d["size"] == sectors * 512, d
        assert d["health"] == "UNKNOWN", "skipsmart asks no smartctl"
        assert d["osdid"] == -1 and d["gpt"] in (0, 1)
    if tool("udevadm") is None:
        # Upstream lists only what udev knows: without udevadm, nothing.
        assert disks == []
        return
    assert sorted(d["devpath"] for d in disks) == sorted(
        "/dev/" + n.replace("!", "/") for n in expected_disks())
    assert expected_disks(), "this host has at least one disk"

    unused = admin.nodes(nodename).disks.list.get(skipsmart=1, type="unused")
    assert [d["devpath"] for d in unused] == [d["devpath"] for d in disks if not d.get("used")]
    journal = admin.nodes(nodename).disks.list.get(skipsmart=1, type="journal_disks")
    assert {d["devpath"] for d in journal} <= set(devpaths)

    parts = admin.nodes(nodename).disks.list.get(skipsmart=1, **{"include-partitions": 1})
    for p in (p for p in parts if p.get("parent")):
        assert p["type"] == "partition" and p["parent"] in devpaths, p


def test_disk_list_with_smart_has_health(admin, nodename):
    for d in admin.nodes(nodename).disks.list.get():
        assert isinstance(d["health"], str) and d["health"], d


def test_smart_of_a_listed_disk(admin, nodename, api):
    disks = admin.nodes(nodename).disks.list.get(skipsmart=1)
    if not disks:
        pytest.skip("udev lists no disk on this host")
    disk = disks[0]["devpath"]
    full = admin.nodes(nodename).disks.smart.get(disk=disk)
    assert isinstance(full["health"], str) and full["health"]
    if tool("smartctl") is None:
        assert full == {"health": "UNKNOWN"}
    health = admin.nodes(nodename).disks.smart.get(disk=disk, healthonly=1)
    assert health == {"health": full["health"]}


def test_smart_refuses_what_is_not_a_block_device(api):
    for bad in ("/dev/null", "/dev/oxvetest-no-such-disk", "/etc/passwd", "/dev/../etc/passwd"):
        r = get(api, "/disks/smart", disk=bad)
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert "disk" in r.json()["errors"], (bad, r.text)


# ---- permissions ----


def test_permissions(node, nodename):
    node.add_user("scanaudit@pve", "scan-audit-1", role="PVEAuditor", path=f"/nodes/{nodename}")
    node.add_user("scanstore@pve", "scan-store-1", role="PVEDatastoreAdmin", path="/storage")
    node.add_user("scannone@pve", "scan-none-1")
    auditor = node.proxmox("scanaudit@pve", "scan-audit-1")
    storer = node.proxmox("scanstore@pve", "scan-store-1")
    nobody = node.proxmox("scannone@pve", "scan-none-1")

    def status(call) -> int:
        try:
            call()
        except ResourceException as e:
            return e.status_code
        return 200

    n = lambda api: api.nodes(nodename)  # noqa: E731
    # disks/list: Sys.Audit on / or on /nodes/{node}; disks/smart: on / only.
    assert status(lambda: n(auditor).disks.list.get(skipsmart=1)) == 200
    assert status(lambda: n(nobody).disks.list.get(skipsmart=1)) == 403
    assert status(lambda: n(storer).disks.list.get(skipsmart=1)) == 403
    assert status(lambda: n(auditor).disks.smart.get(disk="/dev/null")) == 403
    assert status(lambda: n(nobody).disks.smart.get(disk="/dev/null")) == 403
    # The indexes are open to every user, as upstream.
    assert status(lambda: n(nobody).disks.get()) == 200
    assert status(lambda: n(nobody).scan.get()) == 200
    # Scans need Datastore.Allocate on /storage.
    for who in (nobody, auditor):
        assert status(lambda: n(who).scan.lvm.get()) == 403
        assert status(lambda: n(who).scan.nfs.get(server="127.0.0.1")) == 403
    assert status(lambda: n(storer).scan.lvm.get()) != 403
    assert status(lambda: n(storer).scan.nfs.get(server="127.0.0.1")) != 403
