"""Config changes to a running container take effect at once where
upstream hot-plugs them: limits land in the CT's cgroups, NICs are added,
readdressed, moved between bridges and removed; the rest waits in
`[pve:pending]`, and a change that cannot be applied is reported and stays
pending. The bridges live in the node's own network namespace."""

from __future__ import annotations

import json
import time

import pytest
from proxmoxer.core import ResourceException

from test_lxc import BRIDGE, create, lxc, ns, ok, pct, task_log, templates  # noqa: F401 (fixtures)

BRIDGE2 = "vmbr1"
VMID = 200


def cgroup_dir(pid: int, controller: str) -> str:
    """The CT's payload cgroup directory of a v1 controller (or v2)."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.strip().split(":", 2) for line in f]
    for _, ctrls, path in lines:
        if controller in ctrls.split(","):
            base = f"/sys/fs/cgroup/{ctrls}"
            break
    else:
        path = next(p for _, c, p in lines if c == "")
        base = "/sys/fs/cgroup"
    parts = path.strip("/").split("/")
    while parts and not parts[-1].startswith("lxc.payload"):
        parts.pop()
    return f"{base}/{'/'.join(parts)}"


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def v2() -> bool:
    import os
    return not os.path.isdir("/sys/fs/cgroup/memory")


def wait_ping(node, ip: str, want: bool = True, secs: float = 15) -> bool:
    deadline = time.monotonic() + secs
    while True:
        r = ns(node, "busybox", "ping", "-c", "1", "-W", "1", ip, check=False)
        if (r.returncode == 0) == want or time.monotonic() > deadline:
            return r.returncode == 0
        time.sleep(0.3)


def master_of(node, dev: str) -> str | None:
    r = ns(node, "ip", "-j", "link", "show", "dev", dev, check=False)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)[0].get("master")


@pytest.fixture(scope="module")
def running(admin, nodename, templates, lxc):
    ns(lxc, "ip", "link", "add", BRIDGE2, "type", "bridge")
    ns(lxc, "ip", "addr", "add", "10.78.0.1/24", "dev", BRIDGE2)
    ns(lxc, "ip", "link", "set", BRIDGE2, "up")
    st = create(admin, nodename, VMID, templates, rootfs="local:0.5", memory=128, swap=0,
                net0=f"name=eth0,bridge={BRIDGE},ip=10.77.0.20/24")
    assert st["exitstatus"] == "OK", task_log(admin, nodename, st["upid"])
    ok(admin, nodename, admin.nodes(nodename).lxc(VMID).status.start.post())
    assert wait_ping(lxc, "10.77.0.20")
    return admin.nodes(nodename).lxc(VMID)


def pid_of(ct) -> int:
    return ct.status.current.get()["pid"]


def test_limits_apply_at_once(running):
    running.config.put(memory=256, swap=64, cpulimit="0.5", cores=1, cpuunits=512)
    conf = running.config.get()
    assert (conf["memory"], conf["swap"], conf["cores"], conf["cpuunits"]) == (256, 64, 1, 512)
    assert float(conf["cpulimit"]) == 0.5
    assert running.pending.get() and all("pending" not in e for e in running.pending.get())
    assert running.config.get(current=1)["memory"] == 256
    pid = pid_of(running)
    if v2():
        cg = cgroup_dir(pid, "memory")
        assert read(f"{cg}/memory.max") == str(256 * 1024 * 1024)
        assert read(f"{cg}/memory.swap.max") == str(64 * 1024 * 1024)
        assert read(f"{cg}/cpu.max") == "50000 100000"
    else:
        mem = cgroup_dir(pid, "memory")
        assert read(f"{mem}/memory.limit_in_bytes") == str(256 * 1024 * 1024)
        assert read(f"{mem}/memory.memsw.limit_in_bytes") == str(320 * 1024 * 1024)
        cpu = cgroup_dir(pid, "cpu")
        assert read(f"{cpu}/cpu.cfs_quota_us") == "50000"
        assert read(f"{cpu}/cpu.shares") == "512"
        assert read(f"{cgroup_dir(pid, 'cpuset')}/cpuset.cpus") == "0"
    # Lowering memory again orders the writes so that memory ≤ memory+swap
    # holds at every step; removing the CPU limit lifts it.
    running.config.put(memory=160, swap=0, delete="cpulimit")
    conf = running.config.get()
    assert conf["memory"] == 160 and "cpulimit" not in conf
    if v2():
        assert read(f"{cgroup_dir(pid, 'memory')}/memory.max") == str(160 * 1024 * 1024)
        assert read(f"{cgroup_dir(pid, 'cpu')}/cpu.max").startswith("max")
    else:
        assert read(f"{cgroup_dir(pid, 'memory')}/memory.limit_in_bytes") == str(160 * 1024 * 1024)
        assert read(f"{cgroup_dir(pid, 'cpu')}/cpu.cfs_quota_us") == "-1"
    assert running.status.current.get()["maxmem"] == 160 * 1024 * 1024


def test_readdress_running_nic(running, lxc):
    conf = running.config.get()
    new = conf["net0"].replace("ip=10.77.0.20/24", "ip=10.77.0.21/24")
    running.config.put(net0=new)
    assert running.config.get()["net0"] == new
    assert wait_ping(lxc, "10.77.0.21")
    assert not wait_ping(lxc, "10.77.0.20", want=False, secs=3)
    # The guest's own network file follows (alpine's /etc/network/interfaces).
    interfaces = (lxc.root / f"run/oxve/lxc/{VMID}/rootfs/etc/network/interfaces").read_text()
    assert "10.77.0.21" in interfaces and "10.77.0.20" not in interfaces


def test_add_move_and_remove_a_nic(running, lxc):
    running.config.put(net1=f"name=eth1,bridge={BRIDGE2},ip=10.78.0.20/24")
    conf = running.config.get()
    assert "hwaddr=" in conf["net1"]
    mac = conf["net1"].split("hwaddr=")[1].split(",")[0]
    assert master_of(lxc, f"veth{VMID}i1") == BRIDGE2
    assert wait_ping(lxc, "10.78.0.20")
    links = pct(lxc, "exec", str(VMID), "--", "ip", "link", "show", "eth1").stdout
    assert mac.lower() in links.lower() and "UP" in links
    # Another bridge: the host side is re-plugged.
    running.config.put(net1=conf["net1"].replace(f"bridge={BRIDGE2}", f"bridge={BRIDGE}"))
    assert master_of(lxc, f"veth{VMID}i1") == BRIDGE
    # Removed: the pair is gone, the config has no net1.
    running.config.put(delete="net1")
    assert "net1" not in running.config.get()
    assert master_of(lxc, f"veth{VMID}i1") is None
    r = pct(lxc, "exec", str(VMID), "--", "ip", "link", "show", "eth1", check=False)
    assert r.returncode != 0


def test_other_changes_wait_for_restart(running):
    running.config.put(tty=3, hostname="renamed")
    conf = running.config.get()
    assert conf["hostname"] == "renamed"  # takes effect by being in the config
    pending = {e["key"]: e for e in running.pending.get()}
    assert pending.get("tty", {}).get("pending") == 3, pending
    running.config.put(revert="tty")
    assert "pending" not in {e["key"]: e for e in running.pending.get()}.get("tty", {})


def test_failed_hotplug_is_reported_and_stays_pending(running, lxc):
    with pytest.raises(ResourceException) as e:
        running.config.put(net2="name=eth2,bridge=nosuchbr0,ip=10.79.0.2/24")
    assert e.value.status_code == 400
    assert "net2" in str(e.value.errors) and "hotplug" in str(e.value.errors)
    pending = {e["key"]: e for e in running.pending.get()}
    assert "nosuchbr0" in pending["net2"]["pending"]
    assert "net2" not in running.config.get(current=1)
    # Nothing half-made is left on the host side.
    assert master_of(lxc, f"veth{VMID}i2") is None
    running.config.put(revert="net2")
    assert "net2" not in {e["key"] for e in running.pending.get()}


def test_stop_start_keeps_hotplugged_config(admin, nodename, running, lxc):
    ok(admin, nodename, running.status.stop.post())
    ok(admin, nodename, running.status.start.post())
    assert wait_ping(lxc, "10.77.0.21")
    assert running.status.current.get()["maxmem"] == 160 * 1024 * 1024
