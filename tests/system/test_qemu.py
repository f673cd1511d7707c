"""Virtual machines with real QEMU (TCG on this host), driven as users drive
them: proxmoxer for the API, `qm` on the node. The guest is the small test
guest of tests/qemu/build-guest.sh (a Debian kernel with a busybox
initramfs, cached); its NICs hang on a bridge inside the node's own network
namespace, never the host's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from proxmoxer.core import ResourceException

from oxvetest import add_bridge, in_netns, need, qemu_test_guest, wait_task

BRIDGE = "vmbr0"
HOST_IP = "10.78.0.1"


ns = in_netns


@pytest.fixture(scope="module")
def qemu(node):
    need(shutil.which("qemu-system-x86_64") is not None, "QEMU is not installed (qemu-system-x86_64)")
    add_bridge(node, BRIDGE, f"{HOST_IP}/24")
    yield node
    node.stop_vms()


@pytest.fixture(scope="module")
def guest(qemu):
    return qemu_test_guest()


def ok(admin, nodename, upid, timeout=90):
    st = wait_task(admin, nodename, upid, timeout=timeout)
    assert st["exitstatus"] == "OK", (st, task_log(admin, nodename, upid))
    return st


def task_log(admin, nodename, upid) -> str:
    return "\n".join(line["t"] for line in admin.nodes(nodename).tasks(upid).log.get(limit=0))


def kernel_args(guest: Path) -> str:
    return (f"-kernel {guest}/vmlinuz -initrd {guest}/initrd.img "
            "-append 'console=ttyS0 quiet'")


class Serial:
    """The VM's first serial port (`serial0: socket`), read as it prints."""

    def __init__(self, node, vmid: int):
        path = node.root / f"run/oxve/qemu/{vmid}.serial0"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(1)
        self.seen = b""

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            assert time.monotonic() < deadline, f"no {text!r} on the serial console within {timeout}s: {self.seen[-2000:]!r}"
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                continue
            assert chunk, f"serial console closed: {self.seen[-2000:]!r}"
            self.seen += chunk
        return self.seen.decode(errors="replace")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def close(self):
        self.sock.close()


def status(admin, nodename, vmid):
    return admin.nodes(nodename).qemu(vmid).status.current.get()


def test_create_start_console_shutdown(admin, nodename, qemu, guest):
    """A VM created with upstream's parameters boots the test kernel under
    TCG (said in the task log), prints on its serial console, has its tap
    on the bridge in the node's namespace, answers status from QMP, and
    powers off on an ACPI shutdown — after which nothing is left running."""
    upid = admin.nodes(nodename).qemu.post(
        vmid=200, name="vm200", memory=256, cores=1, net0=f"virtio,bridge={BRIDGE}",
        scsi0="local:1", scsihw="virtio-scsi-single", serial0="socket", ostype="l26",
        args=kernel_args(guest))
    ok(admin, nodename, upid)
    conf = admin.nodes(nodename).qemu(200).config.get()
    assert conf["scsi0"].startswith("local:200/vm-200-disk-0."), conf
    assert "size=1G" in conf["scsi0"]
    assert conf["net0"].startswith("virtio=BC:24:11:"), conf
    assert conf["boot"] == "order=scsi0;net0"
    assert conf["smbios1"].startswith("uuid=")
    assert "creation-qemu=" in conf["meta"]
    assert len(conf["vmgenid"]) == 36
    disk = qemu.root / "var/lib/vz/images/200" / conf["scsi0"].split("/")[1].split(",")[0]
    assert disk.exists(), disk

    upid = admin.nodes(nodename).qemu(200).status.start.post()
    ok(admin, nodename, upid)
    serial = Serial(qemu, 200)
    try:
        log = task_log(admin, nodename, upid)
        kvm_ok = subprocess.run(["sh", "-c", "test -w /dev/kvm"]).returncode == 0
        if not kvm_ok or "TCG" in log:
            assert "runs under TCG" in log, log
        st = status(admin, nodename, 200)
        assert st["status"] == "running" and st["qmpstatus"] == "running", st
        assert st["pid"] > 0 and st["running-qemu"], st
        assert st["maxmem"] == 256 * 1024 * 1024
        serial.wait_for("oxve-guest: booted", timeout=120)
        # The tap is on the bridge in the node's namespace, not the host's.
        links = ns(qemu, "ip", "-o", "link", "show", "master", BRIDGE).stdout
        assert "tap200i0" in links, links
        assert subprocess.run(["ip", "link", "show", "tap200i0"], capture_output=True).returncode != 0
        # The console is a shell.
        serial.send("echo marker-$((6*7))")
        serial.wait_for("marker-42", timeout=30)
        listed = {v["vmid"]: v for v in admin.nodes(nodename).qemu.get()}
        assert listed[200]["status"] == "running" and listed[200]["name"] == "vm200"

        upid = admin.nodes(nodename).qemu(200).status.shutdown.post(timeout=60)
        ok(admin, nodename, upid, timeout=90)
        serial.wait_for("oxve-guest: power button", timeout=5)
    finally:
        serial.close()
    st = status(admin, nodename, 200)
    assert st["status"] == "stopped", st
    left = sorted(p.name for p in (qemu.root / "run/oxve/qemu").glob("200.*"))
    assert left == [], left


def test_start_failure_is_reported_and_cleaned(admin, nodename, qemu, guest):
    """QEMU refusing to start ends the task with QEMU's own message and
    leaves nothing behind; a missing bridge is named."""
    upid = admin.nodes(nodename).qemu.post(vmid=201, memory=128, args="-no-such-option")
    ok(admin, nodename, upid)
    upid = admin.nodes(nodename).qemu(201).status.start.post()
    st = wait_task(admin, nodename, upid, timeout=60)
    assert st["exitstatus"] != "OK"
    assert "no-such-option" in st["exitstatus"] + task_log(admin, nodename, upid), st
    assert status(admin, nodename, 201)["status"] == "stopped"
    assert sorted(p.name for p in (qemu.root / "run/oxve/qemu").glob("201.*")) == []

    admin.nodes(nodename).qemu(201).config.put(delete="args", net0="virtio,bridge=nosuchbr0")
    upid = admin.nodes(nodename).qemu(201).status.start.post()
    st = wait_task(admin, nodename, upid, timeout=60)
    assert "bridge 'nosuchbr0' does not exist" in st["exitstatus"], st


def test_stop_and_destroy(admin, nodename, qemu, guest):
    """stop ends a running VM at once; destroy removes config and disks;
    protection blocks destroy."""
    upid = admin.nodes(nodename).qemu.post(vmid=202, memory=128, scsi0="local:1", args=kernel_args(guest))
    ok(admin, nodename, upid)
    ok(admin, nodename, admin.nodes(nodename).qemu(202).status.start.post())
    assert status(admin, nodename, 202)["status"] == "running"
    with pytest.raises(ResourceException, match="running"):
        admin.nodes(nodename).qemu(202).delete()
    ok(admin, nodename, admin.nodes(nodename).qemu(202).status.stop.post())
    assert status(admin, nodename, 202)["status"] == "stopped"
    admin.nodes(nodename).qemu(202).config.put(protection=1)
    with pytest.raises(ResourceException, match="protection"):
        admin.nodes(nodename).qemu(202).delete()
    admin.nodes(nodename).qemu(202).config.put(delete="protection")
    ok(admin, nodename, admin.nodes(nodename).qemu(202).delete())
    assert not (qemu.root / "var/lib/vz/images/202").exists() or \
        list((qemu.root / "var/lib/vz/images/202").iterdir()) == []
    with pytest.raises(ResourceException, match="does not exist"):
        admin.nodes(nodename).qemu(202).config.get()


def test_pause_reset_reboot_and_guest_poweroff_after_daemon_restart(admin, nodename, qemu, guest):
    """suspend/resume pause QEMU (qmpstatus), reset reboots the guest,
    reboot is shutdown + start (pending changes apply); a restarted daemon
    adopts the running VM, and a guest that powers itself off is ended by
    the event listener of the new daemon, its run files removed."""
    ok(admin, nodename, admin.nodes(nodename).qemu.post(
        vmid=203, memory=256, serial0="socket", net0=f"virtio,bridge={BRIDGE}", args=kernel_args(guest)))
    ok(admin, nodename, admin.nodes(nodename).qemu(203).status.start.post())
    serial = Serial(qemu, 203)
    try:
        serial.wait_for("oxve-guest: booted", timeout=120)
        ok(admin, nodename, admin.nodes(nodename).qemu(203).status.suspend.post())
        assert status(admin, nodename, 203)["qmpstatus"] == "paused"
        ok(admin, nodename, admin.nodes(nodename).qemu(203).status.resume.post())
        assert status(admin, nodename, 203)["qmpstatus"] == "running"
        serial.seen = b""
        ok(admin, nodename, admin.nodes(nodename).qemu(203).status.reset.post())
        serial.wait_for("oxve-guest: booted", timeout=120)
    finally:
        serial.close()
    # A change that waits for the next start; reboot applies it.
    admin.nodes(nodename).qemu(203).config.put(memory=320)
    assert any(p["key"] == "memory" and str(p.get("pending")) == "320"
               for p in admin.nodes(nodename).qemu(203).pending.get())
    pid = status(admin, nodename, 203)["pid"]
    ok(admin, nodename, admin.nodes(nodename).qemu(203).status.reboot.post(timeout=60), timeout=120)
    serial = Serial(qemu, 203)
    try:
        serial.wait_for("oxve-guest: booted", timeout=120)
    finally:
        serial.close()
    st = status(admin, nodename, 203)
    assert st["status"] == "running" and st["pid"] != pid and st["maxmem"] == 320 * 1024 * 1024, st
    assert str(admin.nodes(nodename).qemu(203).config.get(current=1)["memory"]) == "320"

    qemu.restart()
    admin = qemu.admin
    st = status(admin, nodename, 203)
    assert st["status"] == "running" and st["qmpstatus"] == "running", st
    serial = Serial(qemu, 203)
    try:
        serial.send("")
        serial.send("echo adopted-$((2+3))")
        serial.wait_for("adopted-5", timeout=60)
        time.sleep(6)  # QEMU reconnects to the new daemon's event socket within 5 s
        serial.send("poweroff -f")
        deadline = time.monotonic() + 60
        while status(admin, nodename, 203)["status"] != "stopped":
            assert time.monotonic() < deadline, "guest powered off but its QEMU still runs"
            time.sleep(0.5)
    finally:
        serial.close()
    deadline = time.monotonic() + 10
    while list((qemu.root / "run/oxve/qemu").glob("203.*")):
        assert time.monotonic() < deadline, list((qemu.root / "run/oxve/qemu").glob("203.*"))
        time.sleep(0.2)


def test_resize_online_and_offline_unlink_monitor(admin, nodename, qemu, guest):
    """resize grows a running VM's disk through QMP (the guest sees the new
    size at once) and a stopped VM's on the storage; unlink turns a disk
    into unused or, forced, removes its volume; the monitor answers."""
    ok(admin, nodename, admin.nodes(nodename).qemu.post(
        vmid=204, memory=256, serial0="socket", virtio0="local:1", args=kernel_args(guest)))
    ok(admin, nodename, admin.nodes(nodename).qemu(204).status.start.post())
    serial = Serial(qemu, 204)
    try:
        serial.wait_for("oxve-guest: booted", timeout=120)
        serial.send("echo size-$(cat /sys/block/vda/size)")
        serial.wait_for(f"size-{2 * 1024 * 1024}", timeout=30)
        ok(admin, nodename, admin.nodes(nodename).qemu(204).resize.put(disk="virtio0", size="+1G"))
        serial.send("echo size-$(cat /sys/block/vda/size)")
        serial.wait_for(f"size-{4 * 1024 * 1024}", timeout=30)
    finally:
        serial.close()
    assert "size=2G" in admin.nodes(nodename).qemu(204).config.get()["virtio0"]
    out = admin.nodes(nodename).qemu(204).monitor.post(command="info status")
    assert "running" in out, out
    st = wait_task(admin, nodename, admin.nodes(nodename).qemu(204).resize.put(disk="virtio0", size="1G"))
    assert "shrinking disks is not supported" in st["exitstatus"], st
    ok(admin, nodename, admin.nodes(nodename).qemu(204).status.stop.post())

    ok(admin, nodename, admin.nodes(nodename).qemu(204).resize.put(disk="virtio0", size="3G"))
    conf = admin.nodes(nodename).qemu(204).config.get()
    assert "size=3G" in conf["virtio0"]
    volpath = qemu.root / "var/lib/vz/images/204" / conf["virtio0"].split("/")[1].split(",")[0]
    info = subprocess.run(["qemu-img", "info", "--output=json", str(volpath)], capture_output=True, text=True)
    assert '"virtual-size": 3221225472' in info.stdout, info.stdout

    admin.nodes(nodename).qemu(204).config.put(scsi1="local:1")
    scsi1 = admin.nodes(nodename).qemu(204).config.get()["scsi1"].split(",")[0]
    admin.nodes(nodename).qemu(204).unlink.put(idlist="virtio0")
    conf = admin.nodes(nodename).qemu(204).config.get()
    assert "virtio0" not in conf and conf["unused0"] == volpath.parent.name + "/" + volpath.name \
        or conf["unused0"].endswith(volpath.name), conf
    admin.nodes(nodename).qemu(204).unlink.put(idlist="scsi1", force=1)
    conf = admin.nodes(nodename).qemu(204).config.get()
    assert "scsi1" not in conf and scsi1 not in conf.values(), conf
    assert not (qemu.root / "var/lib/vz/images" / scsi1.split(":")[1]).exists()
    ok(admin, nodename, admin.nodes(nodename).qemu(204).delete())


def test_serial_console_over_websocket(admin, nodename, qemu, guest):
    """termproxy on a VM's serial port speaks xterm.js's protocol: the
    guest's shell answers through the WebSocket."""
    from oxvetest import ADMIN, ADMIN_PASSWORD, qpath, xterm_roundtrip

    ok(admin, nodename, admin.nodes(nodename).qemu.post(
        vmid=205, memory=256, serial0="socket", args=kernel_args(guest)))
    with pytest.raises(ResourceException, match="not running"):
        admin.nodes(nodename).qemu(205).termproxy.post()
    ok(admin, nodename, admin.nodes(nodename).qemu(205).status.start.post())
    r = admin.nodes(nodename).qemu(205).termproxy.post()
    assert ":vncproxy:205:" in r["upid"]
    xterm_roundtrip(qemu, ADMIN, ADMIN_PASSWORD, f"nodes/{qpath(nodename)}/qemu/205", r,
                    "echo vm-$((40+2))\n", b"vm-42", timeout=120)
    ok(admin, nodename, admin.nodes(nodename).qemu(205).status.stop.post())


def test_uefi_vm_with_efi_disk(admin, nodename, qemu, guest):
    """`bios: ovmf` with a new `efidisk0`: the disk is Debian OVMF's 4 MiB
    variables template (with Microsoft's keys when `pre-enrolled-keys=1`),
    sized as the template whatever size was asked; the VM boots through
    the UEFI firmware."""
    need(Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd").exists(), "Debian's ovmf is not installed")
    upid = admin.nodes(nodename).qemu.post(
        vmid=206, memory=256, cores=1, bios="ovmf", serial0="socket",
        efidisk0="local:1,efitype=4m,pre-enrolled-keys=1", args=kernel_args(guest))
    ok(admin, nodename, upid)
    conf = admin.nodes(nodename).qemu(206).config.get()
    assert conf["efidisk0"].startswith("local:206/vm-206-disk-0."), conf
    assert "efitype=4m" in conf["efidisk0"] and "pre-enrolled-keys=1" in conf["efidisk0"]
    template = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd").read_bytes()
    assert f"size={len(template) // 1024}K" in conf["efidisk0"], conf
    vol = qemu.root / "var/lib/vz/images/206" / conf["efidisk0"].split("/")[1].split(",")[0]
    raw = subprocess.run(["qemu-img", "convert", "-O", "raw", str(vol), "/dev/stdout"],
                         capture_output=True).stdout if vol.suffix == ".qcow2" else vol.read_bytes()
    assert raw[:len(template)] == template
    ok(admin, nodename, admin.nodes(nodename).qemu(206).status.start.post())
    serial = Serial(qemu, 206)
    try:
        serial.wait_for("oxve-guest: booted", timeout=240)
    finally:
        serial.close()
    ok(admin, nodename, admin.nodes(nodename).qemu(206).status.stop.post())
    ok(admin, nodename, admin.nodes(nodename).qemu(206).delete())
    assert not vol.exists()


def test_tpm_state_disk(admin, nodename, qemu, guest):
    """A `tpmstate0` (TPM 2.0) is a raw 4 MiB volume; at start swtpm_setup
    makes the state once and swtpm serves it to QEMU, which shows the TPM
    in QMP; stopping the VM ends the emulator too."""
    need(shutil.which("swtpm") is not None and shutil.which("swtpm_setup") is not None,
         "swtpm is not installed")
    upid = admin.nodes(nodename).qemu.post(
        vmid=207, memory=256, cores=1, serial0="socket", tpmstate0="local:1,version=v2.0",
        args=kernel_args(guest))
    ok(admin, nodename, upid)
    vm = admin.nodes(nodename).qemu(207)
    conf = vm.config.get()
    assert conf["tpmstate0"].startswith("local:207/vm-207-disk-0.raw"), conf
    assert "size=4M" in conf["tpmstate0"] and "version=v2.0" in conf["tpmstate0"], conf
    vol = qemu.root / "var/lib/vz/images/207/vm-207-disk-0.raw"
    assert vol.stat().st_size == 4 * 1024 * 1024 and not vol.read_bytes().strip(b"\0")
    upid = vm.status.start.post()
    ok(admin, nodename, upid)
    assert "TPM 2.0 emulator (swtpm)" in task_log(admin, nodename, upid)
    assert vol.read_bytes().strip(b"\0"), "swtpm_setup wrote no state"
    out = vm.monitor.post(command="info tpm")
    assert "emulator" in out and "tpm-tis" in out, out
    pid = int((qemu.root / "run/oxve/qemu/207.swtpm.pid").read_text())
    ok(admin, nodename, vm.status.stop.post())
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "swtpm still runs"
    ok(admin, nodename, vm.delete())


def vnc_response(password: str, challenge: bytes) -> bytes:
    """The VNC authentication answer: the challenge encrypted by DES with
    the password (8 bytes, zero padded, each byte's bits reversed)."""
    from Crypto.Cipher import DES

    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
    return DES.new(key, DES.MODE_ECB).encrypt(challenge)


class WsStream:
    """Reads exact byte counts from a WebSocket carrying a byte stream."""

    def __init__(self, ws):
        self.ws, self.buf = ws, b""

    def read(self, n: int) -> bytes:
        import websocket

        while len(self.buf) < n:
            op, data = self.ws.recv_data()
            assert op == websocket.ABNF.OPCODE_BINARY, (op, data)
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def vnc_connect(qemu, nodename, proxy, password: str):
    """Opens the VNC WebSocket as noVNC does and authenticates inside the
    RFB protocol; returns (stream, security result)."""
    import ssl
    import struct
    from urllib.parse import quote

    import websocket
    from oxvetest import ADMIN, ADMIN_PASSWORD, qpath

    auth, _ = qemu.ticket(ADMIN, ADMIN_PASSWORD)
    url = (f"wss://{qemu.host}:{qemu.port}/api2/json/nodes/{qpath(nodename)}/qemu/208/vncwebsocket"
           f"?port={proxy['port']}&vncticket={quote(proxy['ticket'], safe='')}")
    ws = websocket.create_connection(url, subprotocols=["binary"], cookie=f"PVEAuthCookie={auth}",
                                     sslopt={"cert_reqs": ssl.CERT_NONE, "check_hostname": False},
                                     timeout=20)
    s = WsStream(ws)
    assert s.read(12) == b"RFB 003.008\n"
    ws.send_binary(b"RFB 003.008\n")
    count = s.read(1)[0]
    types = s.read(count)
    assert 2 in types and 1 not in types, f"VNC must ask for a password, offers {list(types)}"
    ws.send_binary(b"\x02")
    challenge = s.read(16)
    ws.send_binary(vnc_response(password, challenge))
    (result,) = struct.unpack(">I", s.read(4))
    return ws, s, result


def test_vnc_console_over_websocket(admin, nodename, qemu):
    """vncproxy hands out a ticket and a VNC password; the WebSocket carries
    QEMU's own VNC server, which accepts that password (and no other) and
    sends the VM's screen."""
    import struct

    ok(admin, nodename, admin.nodes(nodename).qemu.post(vmid=208, name="vnc-vm", memory=128))
    vm = admin.nodes(nodename).qemu(208)
    with pytest.raises(ResourceException, match="not running"):
        vm.vncproxy.post()
    ok(admin, nodename, vm.status.start.post())

    r = vm.vncproxy.post(websocket=1)
    assert set(r) == {"user", "ticket", "password", "port", "upid", "cert"}, r
    assert ":vncproxy:208:" in r["upid"] and "BEGIN CERTIFICATE" in r["cert"]
    assert len(r["password"]) == 8 and r["ticket"].startswith(r["password"] + ":PVEVNC:")
    ws, s, result = vnc_connect(qemu, nodename, r, r["password"])
    try:
        assert result == 0, "QEMU refused the session's VNC password"
        ws.send_binary(b"\x01")  # ClientInit, shared
        width, height = struct.unpack(">HH", s.read(4))
        s.read(16)  # pixel format
        (name_len,) = struct.unpack(">I", s.read(4))
        assert s.read(name_len) == b"QEMU (vnc-vm)"
        assert width > 0 and height > 0
        ws.send_binary(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
        msg_type, _pad, rects = struct.unpack(">BBH", s.read(4))
        assert msg_type == 0 and rects >= 1, "no framebuffer update"
    finally:
        ws.close()
    ok(admin, nodename, r["upid"])

    # Another session's password: a wrong one is refused by QEMU.
    r2 = vm.vncproxy.post(websocket=1)
    ws, _s, result = vnc_connect(qemu, nodename, r2, r["password"] if r["password"] != r2["password"]
                                 else "wrong!!!")
    ws.close()
    assert result != 0, "QEMU accepted a stale VNC password"

    # `qm vncproxy`: the VNC server on stdin/stdout, with the password
    # from LC_PVE_TICKET; without one it refuses.
    r = qemu.cli("qm", "vncproxy", "208", check=False)
    assert r.returncode != 0 and "LC_PVE_TICKET not set" in r.stderr, r
    env = dict(os.environ, OXVE_ROOT=str(qemu.root), LC_PVE_TICKET="qm-pass1")
    proc = subprocess.Popen([str(qemu.binary), "qm", "vncproxy", "208"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        def read(n):
            data = b""
            while len(data) < n:
                chunk = proc.stdout.read1(n - len(data))
                assert chunk, "qm vncproxy closed"
                data += chunk
            return data

        assert read(12) == b"RFB 003.008\n"
        proc.stdin.write(b"RFB 003.008\n"); proc.stdin.flush()
        assert 2 in read(read(1)[0])
        proc.stdin.write(b"\x02"); proc.stdin.flush()
        proc.stdin.write(vnc_response("qm-pass1", read(16))); proc.stdin.flush()
        assert struct.unpack(">I", read(4))[0] == 0, "QEMU refused qm vncproxy's password"
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
    ok(admin, nodename, vm.status.stop.post())
    ok(admin, nodename, vm.delete())


def test_move_disk_to_another_vm(admin, nodename, qemu):
    """move_disk with target-vmid hands a volume to another VM by renaming
    it (data kept), drops it from the source's config and boot order; a
    running target gets the disk hot-plugged; the refusals (both storage
    and target-vmid, an occupied target key, a running source) change
    nothing."""
    images = qemu.root / "var/lib/vz/images"
    ok(admin, nodename, admin.nodes(nodename).qemu.post(
        vmid=209, memory=64, scsi0="local:0.01,format=qcow2", scsi1="local:0.01,format=raw",
        boot="order=scsi0;scsi1"))
    ok(admin, nodename, admin.nodes(nodename).qemu.post(vmid=210, memory=64, scsi3="local:0.01"))
    ok(admin, nodename, admin.nodes(nodename).qemu.post(vmid=211, memory=64, scsihw="virtio-scsi-pci"))
    src = admin.nodes(nodename).qemu(209)
    raw = images / "209/vm-209-disk-1.raw"
    raw.write_bytes(b"moved-to-210" + raw.read_bytes()[12:])
    before = (src.config.get(), admin.nodes(nodename).qemu(210).config.get())

    with pytest.raises(ResourceException) as e:
        src.move_disk.post(disk="scsi1", storage="local", **{"target-vmid": 210})
    assert e.value.status_code == 400 and "target-vmid" in str(e.value) and "storage" in str(e.value)
    with pytest.raises(ResourceException, match="already in use"):
        src.move_disk.post(disk="scsi1", **{"target-vmid": 210, "target-disk": "scsi3"})
    assert (src.config.get(), admin.nodes(nodename).qemu(210).config.get()) == before
    assert raw.exists()

    ok(admin, nodename, src.move_disk.post(disk="scsi1", **{"target-vmid": 210, "target-disk": "scsi4"}))
    conf = src.config.get()
    assert "scsi1" not in conf and conf["boot"] == "order=scsi0", conf
    tconf = admin.nodes(nodename).qemu(210).config.get()
    assert tconf["scsi4"].startswith("local:210/vm-210-disk-1.raw,") and "size=" in tconf["scsi4"], tconf
    assert not raw.exists()
    assert (images / "210/vm-210-disk-1.raw").read_bytes()[:12] == b"moved-to-210"

    # A running source keeps its disk; a running target hot-plugs it.
    ok(admin, nodename, src.status.start.post())
    with pytest.raises(ResourceException, match="while the source VM is running"):
        src.move_disk.post(disk="scsi0", **{"target-vmid": 211})
    ok(admin, nodename, src.status.stop.post())
    ok(admin, nodename, admin.nodes(nodename).qemu(211).status.start.post())
    ok(admin, nodename, src.move_disk.post(disk="scsi0", **{"target-vmid": 211, "target-disk": "scsi2"}))
    t = admin.nodes(nodename).qemu(211)
    assert t.config.get()["scsi2"].startswith("local:211/vm-211-disk-0.qcow2,")
    assert "scsi2" not in {p["key"] for p in t.pending.get() if "pending" in p}
    assert "drive-scsi2" in t.monitor.post(command="info block")
    assert "scsi0" not in src.config.get() and "boot" not in src.config.get() or \
        "scsi0" not in src.config.get().get("boot", "")
    ok(admin, nodename, t.status.stop.post())
    for vmid in (209, 210, 211):
        ok(admin, nodename, admin.nodes(nodename).qemu(vmid).delete())


def test_qemu_capabilities(admin, nodename, qemu):
    """The VM wizard's lists: machine types and versions of the installed
    QEMU with their +pveN revisions (newest first), CPU models, VM flags."""
    caps = admin.nodes(nodename).capabilities.qemu
    assert {c["name"] for c in caps.get()} == {"cpu", "cpu-flags", "machines", "migration"}
    machines = caps.machines.get()
    ids = [m["id"] for m in machines]
    help_text = subprocess.run(["qemu-system-x86_64", "-machine", "help"], capture_output=True,
                               text=True, check=True).stdout
    default = next(line.split()[0] for line in help_text.splitlines() if "(default)" in line)
    assert default in ids and all(m["type"] in ("i440fx", "q35") for m in machines), ids
    assert ids.index("pc-i440fx-9.2+pve1") < ids.index("pc-i440fx-9.2") < ids.index("pc-i440fx-9.1"), ids
    assert {m["version"] for m in machines if m["id"] == "pc-q35-9.2+pve1"} == {"9.2+pve1"}
    cpus = {c["name"]: c for c in caps.cpu.get()}
    assert cpus["x86-64-v2-AES"]["vendor"] == "default" and cpus["EPYC"]["vendor"] == "AuthenticAMD"
    assert cpus["host"]["custom"] in (0, False)
    assert "md-clear" in {f["name"] for f in caps("cpu-flags").get()}
    assert caps.migration.get() == {"has-dbus-vmstate": 0} or caps.migration.get() == {"has-dbus-vmstate": False}
