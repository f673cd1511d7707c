"""Containers with real LXC, driven as users drive them: proxmoxer for the
API, `pct` on the node. The templates come from tests/lxc/build-templates.sh
(cached); the containers' NICs hang on a bridge inside the node's own
network namespace, never the host's."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from proxmoxer.core import ResourceException

from oxvetest import (ADMIN, ADMIN_PASSWORD, REPO, add_bridge, in_netns, need, qpath, wait_task,
                      xterm_roundtrip)

BRIDGE = "vmbr0"
HOST_IP = "10.77.0.1"


ns = in_netns


@pytest.fixture(scope="module")
def lxc(node):
    need(shutil.which("lxc-start") is not None, "LXC is not installed (lxc-start)")
    # An unprivileged CT's root must be able to reach its rootfs below the
    # node's root, as it can below upstream's /var/lib/lxc.
    os.chmod(node.root, 0o755)
    add_bridge(node, BRIDGE, f"{HOST_IP}/24")
    yield node
    node.stop_containers()


@pytest.fixture(scope="module")
def templates(lxc):
    out = subprocess.run([str(REPO / "tests/lxc/build-templates.sh"), "--only", "busybox"],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-2000:]
    src = Path(out.stdout.strip().splitlines()[-1])
    cache = lxc.root / "var/lib/vz/template/cache"
    cache.mkdir(parents=True, exist_ok=True)
    for f in src.glob("busybox-*"):
        shutil.copy(f, cache / f.name)
    return "local:vztmpl/busybox-1.0_amd64.tar.gz"


def create(admin, nodename, vmid, template, **kw):
    params = dict(vmid=vmid, ostemplate=template, hostname=f"ct{vmid}", memory=128, swap=0)
    params.update(kw)
    upid = admin.nodes(nodename).lxc.post(**params)
    return wait_task(admin, nodename, upid, timeout=120)


def ok(admin, nodename, upid, timeout=60):
    st = wait_task(admin, nodename, upid, timeout=timeout)
    assert st["exitstatus"] == "OK", st
    return st


def task_log(admin, nodename, upid) -> str:
    return "\n".join(line["t"] for line in admin.nodes(nodename).tasks(upid).log.get(limit=0))


def pct(node, *args, check=True, timeout=60):
    return node.cli("pct", *args, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def ct100(admin, nodename, templates, lxc):
    st = create(admin, nodename, 100, templates, rootfs="local:1",
                net0=f"name=eth0,bridge={BRIDGE},ip=10.77.0.10/24,gw={HOST_IP}", password="secret-pw-1")
    assert st["exitstatus"] == "OK", task_log(admin, nodename, st["upid"])
    return 100


def test_create_writes_config_and_volume(admin, nodename, ct100, lxc):
    conf = admin.nodes(nodename).lxc(ct100).config.get()
    assert conf["unprivileged"] == 1
    assert conf["ostype"] == "alpine"
    assert conf["arch"] == "amd64"
    assert conf["hostname"] == "ct100"
    assert conf["rootfs"].startswith("local:100/vm-100-disk-0.raw"), conf["rootfs"]
    assert "size=1G" in conf["rootfs"]
    assert "hwaddr=BC:24:11:" in conf["net0"]
    assert "lock" not in conf
    assert "password" not in str(conf)
    image = lxc.root / "var/lib/vz/images/100/vm-100-disk-0.raw"
    assert image.stat().st_size == 1024 ** 3
    listed = admin.nodes(nodename).lxc.get()
    assert [c["vmid"] for c in listed] == [100]
    assert listed[0]["status"] == "stopped" and listed[0]["type"] == "lxc"


def test_start_reaches_running_with_network(admin, nodename, ct100, lxc):
    ok(admin, nodename, admin.nodes(nodename).lxc(ct100).status.start.post())
    cur = admin.nodes(nodename).lxc(ct100).status.current.get()
    assert cur["status"] == "running"
    assert cur["pid"] > 1
    assert cur["maxmem"] == 128 * 1024 * 1024
    # The container's init and files run as the mapped root (unprivileged).
    with open(f"/proc/{cur['pid']}/status") as f:
        uid_line = next(line for line in f if line.startswith("Uid:"))
    assert uid_line.split()[1] == "100000"
    rootfs = lxc.root / "run/oxve/lxc/100/rootfs"
    assert (rootfs / "etc/hostname").stat().st_uid == 100000
    assert (rootfs / "etc/hostname").read_text().strip() == "ct100"
    # Reachable on the bridge in the node's namespace.
    deadline = time.monotonic() + 20
    while True:
        r = ns(lxc, "busybox", "ping", "-c", "1", "-W", "1", "10.77.0.10", check=False)
        if r.returncode == 0:
            break
        assert time.monotonic() < deadline, r.stdout + r.stderr
    # The host end of the NIC is upstream's veth<vmid>i<n>, on the bridge.
    link = ns(lxc, "ip", "-o", "link", "show", "veth100i0").stdout
    assert f"master {BRIDGE}" in link
    cur = admin.nodes(nodename).lxc(ct100).status.current.get()
    assert cur["netin"] > 0 and cur["mem"] > 0


def test_interfaces_and_features(admin, nodename, ct100):
    api = admin.nodes(nodename).lxc(ct100)
    ifaces = {i["name"]: i for i in api.interfaces.get()}
    assert ifaces["eth0"]["inet"] == "10.77.0.10/24"
    mac = api.config.get()["net0"].split("hwaddr=")[1].split(",")[0]
    assert ifaces["eth0"]["hwaddr"].lower() == mac.lower()
    assert "lo" in ifaces
    # A raw image on a directory storage has no snapshots; copies always work.
    assert api.feature.get(feature="snapshot")["hasFeature"] in (0, False)
    assert api.feature.get(feature="copy")["hasFeature"] in (1, True)


def test_pct_exec_list_config_status(node, ct100, lxc):
    out = pct(node, "exec", "100", "--", "cat", "/etc/hostname").stdout
    assert out.strip() == "ct100"
    out = pct(node, "exec", "100", "--", "id", "-u").stdout
    assert out.strip() == "0"
    listing = pct(node, "list").stdout.splitlines()
    assert listing[0].split() == ["VMID", "Status", "Lock", "Name"]
    assert listing[1].split() == ["100", "running", "ct100"]
    assert "status: running" in pct(node, "status", "100").stdout
    config = pct(node, "config", "100").stdout
    assert "hostname: ct100" in config and "unprivileged: 1" in config
    r = pct(node, "exec", "100", "--", "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3


def test_two_containers_talk_tcp(admin, nodename, templates, ct100, lxc):
    st = create(admin, nodename, 101, "local:vztmpl/busybox-1.0_amd64.tar.zst", rootfs="local:0",
                net0=f"name=eth0,bridge={BRIDGE},ip=10.77.0.11/24", start=1)
    assert st["exitstatus"] == "OK", task_log(admin, nodename, st["upid"])
    conf = admin.nodes(nodename).lxc(101).config.get()
    assert "subvol-101-disk-0" in conf["rootfs"]
    r = pct(lxc, "exec", "101", "--", "sh", "-c", "nc -l -p 7000 -e /bin/cat >/dev/null 2>&1 </dev/null &")
    assert r.returncode == 0
    deadline = time.monotonic() + 20
    while True:
        r = pct(lxc, "exec", "100", "--", "sh", "-c", "echo oxve-echo | nc -w 2 10.77.0.11 7000", check=False)
        if "oxve-echo" in r.stdout:
            break
        assert time.monotonic() < deadline, (r.stdout, r.stderr)
        time.sleep(0.5)
    r = pct(lxc, "exec", "100", "--", "ping", "-c", "1", "-W", "2", "10.77.0.11", check=False)
    assert r.returncode == 0, r.stdout


def test_console_over_websocket(admin, nodename, lxc):
    """xterm.js's protocol against the CT's tty console (cmode tty)."""
    r = admin.nodes(nodename).lxc(101).termproxy.post()
    assert ":vncproxy:101:" in r["upid"]
    xterm_roundtrip(lxc, ADMIN, ADMIN_PASSWORD, f"nodes/{qpath(nodename)}/lxc/101", r,
                    "echo ct-$((40+2))\n", b"ct-42", timeout=30)


def test_config_update_pending_while_running(admin, nodename, ct100):
    api = admin.nodes(nodename).lxc(ct100)
    digest = api.config.get()["digest"]
    # `tty` waits for the next start (memory would be hot-plugged).
    api.config.put(tty=4, description="hello: 100%", digest=digest)
    with pytest.raises(ResourceException) as e:
        api.config.put(tty=3, digest=digest)
    assert "modified" in str(e.value)
    conf = api.config.get(current=1)
    assert "tty" not in conf
    # Upstream keeps the comment lines' newlines in the description.
    assert conf["description"] == "hello: 100%\n"
    pending = {p["key"]: p for p in api.pending.get()}
    assert "value" not in pending["tty"] and pending["tty"]["pending"] == 4
    assert api.config.get()["tty"] == 4


def test_running_ct_cannot_be_destroyed(admin, nodename, ct100):
    with pytest.raises(ResourceException) as e:
        admin.nodes(nodename).lxc(ct100).delete()
    assert "running" in str(e.value)


def test_daemon_restart_keeps_containers(admin, nodename, ct100, lxc):
    pid = admin.nodes(nodename).lxc(ct100).status.current.get()["pid"]
    lxc.restart()
    api = lxc.admin
    cur = api.nodes(nodename).lxc(ct100).status.current.get()
    assert cur["status"] == "running" and cur["pid"] == pid
    assert pct(lxc, "exec", "100", "--", "true").returncode == 0


def test_shutdown_applies_pending_on_next_start(node, ct100, lxc):
    api = lxc.admin.nodes(lxc.node).lxc(ct100)
    ok(lxc.admin, lxc.node, api.status.shutdown.post(timeout=20), timeout=60)
    assert api.status.current.get()["status"] == "stopped"
    # Nothing of the CT stays mounted after it stopped.
    rootfs = str((lxc.root / "run/oxve/lxc/100/rootfs").resolve())
    assert rootfs not in Path("/proc/self/mountinfo").read_text()
    ok(lxc.admin, lxc.node, api.status.start.post())
    conf = api.config.get(current=1)
    assert conf["tty"] == 4
    assert api.pending.get() and all("pending" not in p for p in api.pending.get())
    ok(lxc.admin, lxc.node, api.status.stop.post())
    assert api.status.current.get()["status"] == "stopped"


def test_missing_bridge_fails_start_cleanly(admin, nodename, templates, lxc):
    st = create(admin, nodename, 102, templates, net0="name=eth0,bridge=nosuchbr0,ip=dhcp")
    assert st["exitstatus"] == "OK"
    st = wait_task(admin, nodename, admin.nodes(nodename).lxc(102).status.start.post())
    assert "bridge 'nosuchbr0' does not exist" in st["exitstatus"], st
    assert admin.nodes(nodename).lxc(102).status.current.get()["status"] == "stopped"
    rootfs = str((lxc.root / "run/oxve/lxc/102/rootfs").resolve())
    assert rootfs not in Path("/proc/self/mountinfo").read_text()


def test_failing_nic_hook_reason_reaches_task_log(admin, nodename, templates, lxc):
    """LXC reports a failed network hook only as its exit status; the task
    must say why the NIC could not be plugged."""
    st = create(admin, nodename, 104, templates, net0=f"name=eth0,bridge={BRIDGE},trunks=5;6")
    assert st["exitstatus"] == "OK"
    api = admin.nodes(nodename).lxc(104)
    st = wait_task(admin, nodename, api.status.start.post())
    assert f"bridge '{BRIDGE}' is not VLAN-aware" in st["exitstatus"], st
    assert api.status.current.get()["status"] == "stopped"
    rootfs = str((lxc.root / "run/oxve/lxc/104/rootfs").resolve())
    assert rootfs not in Path("/proc/self/mountinfo").read_text()
    assert wait_task(admin, nodename, api.delete())["exitstatus"] == "OK"


def test_missing_template_leaves_nothing(admin, nodename, templates, lxc):
    before = sorted(p.name for p in (lxc.root / "var/lib/vz/images").glob("*/*"))
    st = create(admin, nodename, 103, "local:vztmpl/nothere.tar.gz", rootfs="local:1")
    assert st["exitstatus"].startswith("template") or "does not exist" in st["exitstatus"], st
    after = sorted(p.name for p in (lxc.root / "var/lib/vz/images").glob("*/*"))
    assert before == after
    with pytest.raises(ResourceException):
        admin.nodes(nodename).lxc(103).config.get()


def test_startall_follows_onboot_and_startup_order(admin, nodename, templates, lxc):
    for vmid, onboot, order in ((105, 1, 2), (106, 1, 1), (107, 0, 3)):
        st = create(admin, nodename, vmid, templates, rootfs="local:0", onboot=onboot, startup=f"order={order}")
        assert st["exitstatus"] == "OK", task_log(admin, nodename, st["upid"])
    upid = admin.nodes(nodename).startall.post()
    ok(admin, nodename, upid, timeout=120)
    log = task_log(admin, nodename, upid)
    assert log.index("Starting CT 106") < log.index("Starting CT 105"), log
    state = {v: admin.nodes(nodename).lxc(v).status.current.get()["status"] for v in (105, 106, 107)}
    assert state == {105: "running", 106: "running", 107: "stopped"}
    ok(admin, nodename, admin.nodes(nodename).stopall.post(vms="105,106"), timeout=120)
    for vmid in (105, 106, 107):
        assert admin.nodes(nodename).lxc(vmid).status.current.get()["status"] == "stopped"
        ok(admin, nodename, admin.nodes(nodename).lxc(vmid).delete())


def test_twenty_parallel_creates(admin, nodename, templates, lxc):
    ids = list(range(200, 220))
    upids = [admin.nodes(nodename).lxc.post(vmid=v, ostemplate=templates, rootfs="local:0", memory=64)
             for v in ids]
    results = [wait_task(admin, nodename, u, timeout=300) for u in upids]
    assert [r["exitstatus"] for r in results] == ["OK"] * len(ids), results
    listed = {c["vmid"] for c in admin.nodes(nodename).lxc.get()}
    assert set(ids) <= listed
    upids = [admin.nodes(nodename).lxc(v).delete() for v in ids]
    assert all(wait_task(admin, nodename, u, timeout=300)["exitstatus"] == "OK" for u in upids)
    assert not [p for v in ids for p in (lxc.root / "var/lib/vz/images" / str(v)).glob("*")]


def test_debian_container_boots_systemd_with_network(admin, nodename, lxc):
    """The debootstrapped Debian 12 template: OS setup writes ifupdown's
    config and the hostname, systemd boots, the CT answers on the bridge."""
    out = subprocess.run([str(REPO / "tests/lxc/build-templates.sh"), "--only", "debian"],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-2000:]
    src = Path(out.stdout.strip().splitlines()[-1]) / "debian-12-standard_12.0-1_amd64.tar.zst"
    shutil.copy(src, lxc.root / "var/lib/vz/template/cache" / src.name)
    st = create(admin, nodename, 108, f"local:vztmpl/{src.name}", rootfs="local:2", memory=256,
                net0=f"name=eth0,bridge={BRIDGE},ip=10.77.0.18/24,gw={HOST_IP}", start=1)
    assert st["exitstatus"] == "OK", task_log(admin, nodename, st["upid"])
    conf = admin.nodes(nodename).lxc(108).config.get()
    assert conf["ostype"] == "debian"
    deadline = time.monotonic() + 60
    while True:
        r = pct(lxc, "exec", "108", "--", "systemctl", "is-system-running", check=False)
        if r.stdout.strip() in ("running", "degraded"):
            break
        assert time.monotonic() < deadline, r.stdout + r.stderr
        time.sleep(1)
    assert "address 10.77.0.18/24" in pct(lxc, "exec", "108", "--", "cat", "/etc/network/interfaces").stdout
    assert pct(lxc, "exec", "108", "--", "hostname").stdout.strip() == "ct108"
    r = ns(lxc, "busybox", "ping", "-c", "1", "-W", "2", "10.77.0.18", check=False)
    assert r.returncode == 0, r.stdout
    ok(admin, nodename, admin.nodes(nodename).lxc(108).status.shutdown.post(timeout=30), timeout=90)
    ok(admin, nodename, admin.nodes(nodename).lxc(108).delete())


def test_protection_blocks_destroy_and_destroy_frees_volumes(admin, nodename, lxc, ct100):
    api = admin.nodes(nodename).lxc(ct100)
    api.config.put(protection=1)
    with pytest.raises(ResourceException) as e:
        api.delete()
    assert "protection" in str(e.value)
    api.config.put(delete="protection")
    ok(admin, nodename, api.delete())
    assert not (lxc.root / "var/lib/vz/images/100/vm-100-disk-0.raw").exists()
    assert 100 not in [c["vmid"] for c in admin.nodes(nodename).lxc.get()]


def test_permissions(node, admin, nodename, ct100):
    node.add_user("ctaudit@pve", "audit-pw-123", role="PVEAuditor", path="/vms/101")
    api = node.proxmox("ctaudit@pve", "audit-pw-123")
    assert [c["vmid"] for c in api.nodes(nodename).lxc.get()] == [101]
    assert api.nodes(nodename).lxc(101).config.get()["hostname"] == "ct101"
    with pytest.raises(ResourceException) as e:
        api.nodes(nodename).lxc(101).status.stop.post()
    assert e.value.status_code == 403
    with pytest.raises(ResourceException) as e:
        api.nodes(nodename).lxc(101).config.put(memory=64)
    assert e.value.status_code == 403
