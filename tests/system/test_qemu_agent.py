"""The QEMU guest agent of a VM, for real: the test guest of
tests/qemu/build-guest.sh runs Debian's qemu-ga on its virtio port, its NIC
hangs on a bridge inside the node's network namespace where busybox udhcpd
hands out addresses. Driven with proxmoxer and `qm` as users do: ping,
get-osinfo, network-get-interfaces with oxve's wait-for-ip, exec and
exec-status, file-write and file-read, set-user-password, shutdown through
the agent; upstream's permission split (VM.GuestAgent.*) and its errors for
a VM without agent, a stopped VM and a guest whose agent does not run.
VM ids 500-509."""

from __future__ import annotations

import base64
import shutil
import signal
import subprocess
import time

import pytest
from proxmoxer.core import ResourceException

from oxvetest import ADMIN, ADMIN_PASSWORD, add_bridge, in_netns, need, qemu_test_guest, wait_task

BRIDGE = "vmbr0"
HOST_IP = "10.79.0.1"
POOL = ("10.79.0.100", "10.79.0.120")


@pytest.fixture(scope="module")
def guest(node):
    need(shutil.which("qemu-system-x86_64") is not None, "QEMU is not installed (qemu-system-x86_64)")
    # Built first: the build installs busybox-static, whose udhcpd serves DHCP.
    return qemu_test_guest()


@pytest.fixture(scope="module")
def agentnode(node, guest, tmp_path_factory):
    need(shutil.which("busybox") is not None or shutil.which("udhcpd") is not None,
         "busybox (udhcpd) is needed for the guest's DHCP")
    add_bridge(node, BRIDGE, f"{HOST_IP}/24")
    work = tmp_path_factory.mktemp("udhcpd")
    conf = work / "udhcpd.conf"
    conf.write_text(
        f"interface {BRIDGE}\nstart {POOL[0]}\nend {POOL[1]}\n"
        f"lease_file {work}/leases\noption subnet 255.255.255.0\noption lease 3600\n")
    (work / "leases").touch()
    udhcpd = ["busybox", "udhcpd"] if shutil.which("busybox") else ["udhcpd"]
    log = work / "udhcpd.log"
    with open(log, "wb") as out:
        dhcp = subprocess.Popen(["ip", "netns", "exec", node.netns, *udhcpd, "-f", str(conf)],
                                stdout=out, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    assert dhcp.poll() is None, log.read_text(errors="replace")
    yield node
    node.stop_vms()
    # `ip netns exec` execs udhcpd, so this pid is the server itself.
    dhcp.send_signal(signal.SIGTERM)
    try:
        dhcp.wait(timeout=10)
    except subprocess.TimeoutExpired:
        dhcp.kill()
        dhcp.wait(timeout=10)


def ok(api, nodename, upid, timeout=120):
    st = wait_task(api, nodename, upid, timeout=timeout)
    assert st["exitstatus"] == "OK", st
    return st


def kernel_args(guest) -> str:
    return (f"-kernel {guest}/vmlinuz -initrd {guest}/initrd.img "
            "-append 'console=ttyS0 quiet'")


def slow_admin(node):
    """proxmoxer for calls that block on the guest (wait-for-ip, shutdown)."""
    node.admin  # make sure the user exists
    return node.proxmox(ADMIN, ADMIN_PASSWORD, timeout=300)


def status(api, nodename, vmid):
    return api.nodes(nodename).qemu(vmid).status.current.get()


def test_errors_without_agent_or_vm(admin, nodename, agentnode):
    """Upstream's errors: no agent configured, VM not running; the index
    lists upstream's commands; the wait-for-ip filters need wait-for-ip."""
    ok(admin, nodename, admin.nodes(nodename).qemu.post(vmid=500, memory=64))
    names = [c["name"] for c in admin.nodes(nodename).qemu(500).agent.get()]
    assert names == sorted(names) and {"ping", "exec", "file-read", "set-user-password",
                                       "network-get-interfaces", "fsfreeze-freeze"} <= set(names)
    with pytest.raises(ResourceException, match="No QEMU guest agent configured"):
        admin.nodes(nodename).qemu(500).agent.ping.post()
    admin.nodes(nodename).qemu(500).config.put(agent="enabled=0")
    with pytest.raises(ResourceException, match="No QEMU guest agent configured"):
        admin.nodes(nodename).qemu(500).agent("get-osinfo").get()
    admin.nodes(nodename).qemu(500).config.put(agent=1)
    with pytest.raises(ResourceException, match="VM 500 is not running"):
        admin.nodes(nodename).qemu(500).agent.post(command="ping")
    with pytest.raises(ResourceException) as e:
        admin.nodes(nodename).qemu(500).agent("network-get-interfaces").get(family="inet")
    assert e.value.status_code == 400 and "wait-for-ip" in str(e.value), e.value
    with pytest.raises(ResourceException) as e:
        admin.nodes(nodename).qemu(500).agent("network-get-interfaces").get(
            **{"wait-for-ip": 5, "hwaddr": "not-a-mac"})
    assert e.value.status_code == 400 and "hwaddr" in str(e.value), e.value
    ok(admin, nodename, admin.nodes(nodename).qemu(500).delete())


def test_agent_not_running(admin, nodename, agentnode):
    """A running VM whose guest runs no agent (here: nothing boots) answers
    'QEMU guest agent is not running'; wait-for-ip gives up with a clear
    message after its timeout."""
    ok(admin, nodename, admin.nodes(nodename).qemu.post(vmid=501, memory=64, agent=1))
    ok(admin, nodename, admin.nodes(nodename).qemu(501).status.start.post())
    try:
        started = time.monotonic()
        with pytest.raises(ResourceException, match="QEMU guest agent is not running") as e:
            admin.nodes(nodename).qemu(501).agent.ping.post()
        assert e.value.status_code == 500
        assert time.monotonic() - started < 20
        with pytest.raises(ResourceException) as e:
            slow_admin(agentnode).nodes(nodename).qemu(501).agent("network-get-interfaces").get(
                **{"wait-for-ip": 3, "family": "inet"})
        assert e.value.status_code == 500
        assert "no IPv4 address within 3 s" in str(e.value) and "not running" in str(e.value), e.value
    finally:
        ok(admin, nodename, admin.nodes(nodename).qemu(501).status.stop.post())
    ok(admin, nodename, admin.nodes(nodename).qemu(501).delete())


def exec_and_wait(api, nodename, vmid, **params):
    pid = api.nodes(nodename).qemu(vmid).agent.exec.post(**params)["pid"]
    assert isinstance(pid, int)
    deadline = time.monotonic() + 60
    while True:
        st = api.nodes(nodename).qemu(vmid).agent("exec-status").get(pid=pid)
        if st["exited"]:
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.5)


def test_agent_commands(admin, nodename, agentnode, guest):
    """A guest with the agent: wait-for-ip returns the DHCP address of its
    NIC, the plain commands answer upstream's {"result": ...}, exec passes
    stdin and returns output and exit code, files round-trip, the password
    reaches the guest's chpasswd, `qm guest ...` works, permissions split as
    upstream's, and a shutdown through the agent ends with the VM stopped."""
    ok(admin, nodename, admin.nodes(nodename).qemu.post(
        vmid=502, memory=256, agent=1, net0=f"virtio,bridge={BRIDGE}",
        scsi0="local:0.1,format=qcow2", args=kernel_args(guest)))
    mac = admin.nodes(nodename).qemu(502).config.get()["net0"].split(",")[0].split("=")[1]
    ok(admin, nodename, admin.nodes(nodename).qemu(502).status.start.post())
    slow = slow_admin(agentnode)
    vm = admin.nodes(nodename).qemu(502)

    # Wait for IP: blocks while the guest boots and its agent comes up.
    started = time.monotonic()
    got = slow.nodes(nodename).qemu(502).agent("network-get-interfaces").get(
        **{"wait-for-ip": 180, "family": "inet", "hwaddr": mac.lower()})
    waited = time.monotonic() - started
    nic = [i for i in got["result"] if i.get("hardware-address", "").lower() == mac.lower()]
    assert nic, got
    addrs = [a["ip-address"] for a in nic[0].get("ip-addresses", []) if a["ip-address-type"] == "ipv4"]
    assert any(a.startswith("10.79.0.") and POOL[0] <= a <= POOL[1] for a in addrs), (addrs, waited)
    # The address answers from the node's namespace.
    ping = ["ping"] if shutil.which("ping") else ["busybox", "ping"]
    in_netns(agentnode, *ping, "-c", "1", "-W", "10", addrs[0])

    assert vm.agent.ping.post() == {"result": {}}
    osinfo = vm.agent("get-osinfo").get()["result"]
    assert osinfo["id"] == "oxve-test-guest", osinfo
    assert osinfo["kernel-release"] == (guest / "kernel.txt").read_text().strip(), osinfo
    assert vm.agent("get-host-name").get()["result"] == {"host-name": "oxve-guest"}
    assert "supported_commands" in vm.agent.info.get()["result"]
    assert vm.agent.post(command="get-vcpus")["result"][0]["online"] is True
    assert isinstance(vm.agent("get-time").get()["result"], int)
    # An agent-side refusal of a plain command is passed on as upstream's
    # monitor client does: {"result": {"error": ...}}.
    frozen = vm.agent("fsfreeze-status").post()["result"]
    assert frozen == "thawed" or "error" in frozen, frozen

    st = exec_and_wait(admin, nodename, 502, command=["sh", "-c", "echo hello-$((6*7)); cat; exit 3"],
                       **{"input-data": "from-stdin\n"})
    assert st["exited"] == 1 and st["exitcode"] == 3, st
    assert st["out-data"] == "hello-42\nfrom-stdin\n", st
    with pytest.raises(ResourceException, match="Agent error"):
        vm.agent.exec.post(command=["/no/such/program"])

    text = "line one\nzwei \u00fc\n"
    assert vm.agent("file-write").post(file="/tmp/oxve-agent.txt", content=text) is None
    read = vm.agent("file-read").get(file="/tmp/oxve-agent.txt")
    assert read["content"] == text and "truncated" not in read, read
    part = vm.agent("file-read").get(file="/tmp/oxve-agent.txt", offset=5, count=3)
    assert part["content"] == "one" and part["truncated"] == 1, part
    raw = vm.agent("file-read").get(file="/tmp/oxve-agent.txt", decode=0)
    assert base64.b64decode(raw["content"]).decode() == text, raw
    encoded = base64.b64encode(b"\x00\x01binary\xff").decode()
    vm.agent("file-write").post(file="/tmp/oxve-bin", content=encoded, encode=0)
    back = vm.agent("file-read").get(file="/tmp/oxve-bin", decode=0)
    assert back["content"] == encoded, back
    with pytest.raises(ResourceException, match="Agent error"):
        vm.agent("file-read").get(file="/no/such/file")

    assert "result" in vm.agent("set-user-password").post(username="root", password="s3cret-word")
    seen = vm.agent("file-read").get(file="/run/chpasswd.last")["content"]
    assert "root:s3cret-word" in seen and "-e" not in seen.splitlines()[0], seen
    vm.agent("set-user-password").post(username="root", password="$6$salt$hash", crypted=1)
    seen = vm.agent("file-read").get(file="/run/chpasswd.last")["content"]
    assert "root:$6$salt$hash" in seen and "-e" in seen.splitlines()[0], seen
    assert "s3cret-word" not in agentnode.log_path.read_text(errors="replace")

    # A disk snapshot of the running VM freezes the guest's file systems
    # through the agent around it, and thaws them (a frozen agent would
    # refuse the commands after it).
    upid = vm.snapshot.post(snapname="frozen")
    ok(admin, nodename, upid)
    log = [line["t"] for line in admin.nodes(nodename).tasks(upid).log.get(limit=0)]
    steps = [next(i for i, line in enumerate(log) if line.startswith(step)) for step in (
        "freezing guest filesystem", "froze ", "snapshotting 'drive-scsi0'", "thawing guest filesystem")]
    assert steps == sorted(steps), log
    assert vm.agent("fsfreeze-status").post()["result"] == "thawed"
    assert vm.agent("get-host-name").get()["result"] == {"host-name": "oxve-guest"}
    ok(admin, nodename, vm.snapshot("frozen").delete())

    # qm, as upstream's CLI prints the agent's answers.
    out = agentnode.cli("qm", "guest", "cmd", "502", "get-osinfo").stdout
    assert '"id" : "oxve-test-guest"' in out, out
    assert agentnode.cli("qm", "agent", "502", "ping").stdout == ""
    out = agentnode.cli("qm", "guest", "exec", "502", "--", "sh", "-c", "echo cli-$((1+1))").stdout
    assert '"out-data" : "cli-2\\n"' in out and '"exitcode" : 0' in out, out
    out = agentnode.cli("qm", "guest", "exec", "502", "--pass-stdin", "1", "--", "cat",
                        input="piped\n").stdout
    assert '"out-data" : "piped\\n"' in out, out
    out = agentnode.cli("qm", "guest", "exec", "502", "--synchronous", "0", "--", "true").stdout
    pid = out.split('"pid" : ')[1].split()[0]
    time.sleep(1)
    out = agentnode.cli("qm", "guest", "exec-status", "502", pid).stdout
    assert '"exited" : 1' in out, out
    agentnode.cli("qm", "guest", "passwd", "502", "root", input="cli-pass-1\n")
    assert "root:cli-pass-1" in vm.agent("file-read").get(file="/run/chpasswd.last")["content"]

    # Permissions: VM.Audit alone reaches no agent command; PVEAuditor's
    # VM.GuestAgent.Audit reads but neither runs programs nor touches files.
    agentnode.cli("pveum", "role", "add", "VMAuditOnly", "--privs", "VM.Audit")
    agentnode.add_user("vmaudit@pve", "vmaudit-pass-1", role="VMAuditOnly", path="/vms/502")
    agentnode.add_user("gaudit@pve", "gaudit-pass-1", role="PVEAuditor", path="/vms/502")
    weak = agentnode.proxmox("vmaudit@pve", "vmaudit-pass-1").nodes(nodename).qemu(502)
    for call in (lambda: weak.agent.exec.post(command=["true"]), lambda: weak.agent.ping.post()):
        with pytest.raises(ResourceException) as e:
            call()
        assert e.value.status_code == 403, e.value
    audit = agentnode.proxmox("gaudit@pve", "gaudit-pass-1").nodes(nodename).qemu(502)
    assert audit.agent("get-osinfo").get()["result"]["id"] == "oxve-test-guest"
    for call in (lambda: audit.agent.exec.post(command=["true"]),
                 lambda: audit.agent("file-read").get(file="/etc/passwd"),
                 lambda: audit.agent("file-write").post(file="/tmp/x", content="x"),
                 lambda: audit.agent.shutdown.post()):
        with pytest.raises(ResourceException) as e:
            call()
        assert e.value.status_code == 403, e.value

    # Shutdown through the agent: the guest powers off, QEMU is ended.
    slow.nodes(nodename).qemu(502).agent.shutdown.post()
    deadline = time.monotonic() + 60
    while status(admin, nodename, 502)["status"] != "stopped":
        assert time.monotonic() < deadline, "the guest agent's shutdown left the VM running"
        time.sleep(0.5)
    with pytest.raises(ResourceException, match="VM 502 is not running"):
        vm.agent.ping.post()
    ok(admin, nodename, vm.delete())
