"""`qm` on the node, end to end: every command goes through the daemon's
socket as root@pam (tasks followed with their log), `showcmd`, `monitor`
and `terminal` work on the node itself. One real VM (QEMU under TCG here)
boots the cached test guest of tests/qemu/build-guest.sh; its NIC hangs on
a bridge inside the node's own network namespace, never the host's. VM ids
300-349 belong to this module."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import socket
import subprocess
import termios
import time
from pathlib import Path

import pytest

from oxvetest import add_bridge, need, qemu_test_guest

BRIDGE = "vmbr0"


def qm(node, *args, input=None, check=True, timeout=120):
    return node.cli("qm", *args, input=input, check=check, timeout=timeout)


def fails(r) -> str:
    """The one-line error of a failed command."""
    assert r.returncode != 0, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def vmnode(node):
    need(shutil.which("qemu-system-x86_64") is not None, "QEMU is not installed (qemu-system-x86_64)")
    add_bridge(node, BRIDGE)
    yield node
    node.stop_vms()


@pytest.fixture(scope="module")
def guest(vmnode):
    return qemu_test_guest()


def wait_for_serial(node, vmid: int, text: str, timeout: float = 120) -> None:
    """Reads the VM's serial port until `text` shows, then lets go of it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(node.root / f"run/oxve/qemu/{vmid}.serial0"))
    sock.settimeout(1)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while text.encode() not in seen:
            assert time.monotonic() < deadline, f"no {text!r} on the serial port: {seen[-2000:]!r}"
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                continue
            assert chunk, f"serial port closed: {seen[-2000:]!r}"
            seen += chunk
    finally:
        sock.close()


def terminal_on_a_tty(node, vmid: int) -> None:
    """`qm terminal` on a pseudo terminal: raw mode (a CR goes through as
    typed), the guest's shell answers, Ctrl+O ends it and the terminal's
    settings are back as they were."""
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([str(node.binary), "qm", "terminal", str(vmid)], stdin=slave, stdout=slave,
                            stderr=slave, env=dict(os.environ, OXVE_ROOT=str(node.root)), close_fds=True)
    seen = b""

    def read_until(text: bytes, timeout: float = 30) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen:
            assert time.monotonic() < deadline, f"no {text!r} on the terminal: {seen[-2000:]!r}"
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 4096)

    try:
        read_until(b"(press Ctrl+O to exit)")
        time.sleep(0.3)  # until the terminal is raw
        os.write(master, b"echo tty-$((6*7))\r")
        read_until(b"tty-42")
        os.write(master, b"\x0f")
        assert proc.wait(timeout=10) == 0, seen
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def config_lines(node, vmid, *extra) -> list[str]:
    return qm(node, "config", vmid, *extra).stdout.splitlines()


def test_help_and_usage_errors(node, tmp_path):
    out = qm(node, "--help").stdout
    os.symlink(node.binary, tmp_path / "qm")
    assert node.cli("--help", argv0=str(tmp_path / "qm")).stdout == out
    assert "qm start <vmid>" in out and "qm disk move <vmid> <disk> <storage>" in out
    assert "qm showcmd <vmid>" in out and "qm terminal <vmid>" in out
    out = qm(node, "start", "--help").stdout
    assert out.startswith("USAGE: qm start <vmid> [OPTIONS]"), out
    assert "--skiplock <boolean>" in out and "--node" not in out
    out = qm(node, "showcmd", "--help").stdout
    assert "--pretty" in out and "--snapshot <name>" in out
    # Upstream's old names still work.
    assert "USAGE: qm disk move <vmid> <disk> <storage>" in qm(node, "move-disk", "--help").stdout
    assert "qm disk import" in qm(node, "disk").stdout
    r = qm(node, "nosuch", check=False)
    assert r.returncode == 2 and "unknown command 'qm nosuch'" in r.stderr
    assert "expected 1 argument(s): <vmid>" in fails(qm(node, "start", check=False))
    assert fails(qm(node, "status", "300", "--bogus", check=False)) == "qm status: unknown option '--bogus'"


def test_lifecycle(vmnode, guest):
    node = vmnode
    args = f"-kernel {guest}/vmlinuz -initrd {guest}/initrd.img -append 'console=ttyS0 quiet'"
    qm(node, "create", "300", "--memory", "128", "--scsi0", "local:1", "--net0", f"virtio,bridge={BRIDGE}",
       "--serial0", "socket", "--args", args)
    conf = config_lines(node, 300)
    assert "memory: 128" in conf and "serial0: socket" in conf, conf
    assert not any(line.startswith("digest:") for line in conf)
    assert conf == sorted(conf, key=lambda line: line.split(":")[0])
    scsi0 = next(line for line in conf if line.startswith("scsi0: "))
    assert re.fullmatch(r"scsi0: local:300/vm-300-disk-0\.raw,.*size=1G.*", scsi0), scsi0
    assert any(re.fullmatch(r"net0: virtio=BC:24:11:[0-9A-F:]{8},bridge=vmbr0", line) for line in conf), conf

    qm(node, "set", "300", "--name", "qmtest", "--description", "first: line\nsecond")
    conf = config_lines(node, 300)
    assert "name: qmtest" in conf
    assert "description: first%3A line%0Asecond" in conf, conf
    pending = qm(node, "pending", "300").stdout.splitlines()
    assert "cur name: qmtest" in pending and "cur memory: 128" in pending, pending

    # A bad option is refused by the daemon in one line.
    err = fails(qm(node, "set", "300", "--nosuchopt", "1", check=False))
    assert "nosuchopt" in err, err

    out = qm(node, "list").stdout.splitlines()
    assert out[0] == "      VMID NAME                 STATUS     MEM(MB)    BOOTDISK(GB) PID       ", out
    assert out[1] == "       300 qmtest               stopped    128                1.00 0         ", out

    out = qm(node, "showcmd", "300", "--pretty").stdout
    disk = node.root / "var/lib/vz/images/300/vm-300-disk-0.raw"
    assert "-pidfile" in out and str(disk) in out, out
    assert " \\\n  -name " in out, out
    assert "\n" not in qm(node, "showcmd", "300").stdout.rstrip("\n")
    assert qm(node, "status", "300").stdout == "status: stopped\n"

    qm(node, "start", "300", timeout=180)
    try:
        assert qm(node, "status", "300").stdout == "status: running\n"
        verbose = qm(node, "status", "300", "--verbose").stdout
        assert "qmpstatus: running\n" in verbose and "ha:\n\tmanaged: 0\n" in verbose, verbose
        assert re.search(r"^pid: \d+$", verbose, re.M), verbose
        row = qm(node, "list").stdout.splitlines()[1].split()
        assert row[:4] == ["300", "qmtest", "running", "128"] and int(row[5]) > 0, row

        # Changes to a running VM wait in [PENDING].
        qm(node, "set", "300", "--memory", "256")
        pending = qm(node, "pending", "300").stdout.splitlines()
        assert "cur memory: 128" in pending and "new memory: 256" in pending, pending
        assert "memory: 128" in config_lines(node, 300, "--current")
        assert "memory: 256" in config_lines(node, 300)

        out = qm(node, "monitor", "300", input="info status\n\nquit\ninfo name\n").stdout
        assert out.startswith("Entering QEMU Monitor for VM 300 - type 'help' for help\n"), out
        assert "VM status: running" in out and "qm> " not in out, out
        out = qm(node, "monitor", "300", input="nosuchcommand\n").stdout
        assert "unknown command" in out, out

        # The serial port as a terminal; stdin is a pipe here.
        wait_for_serial(node, 300, "oxve-guest: booted")
        out = qm(node, "terminal", "300", input="echo marker-$((6*7))\n").stdout
        assert out.startswith("starting serial terminal on interface serial0 (press Ctrl+O to exit)\n"), out
        assert "marker-42" in out, out
        terminal_on_a_tty(node, 300)
        assert fails(qm(node, "terminal", "300", "--iface", "serial1", check=False)) == \
            "serial interface 'serial1' is not configured"

        assert fails(qm(node, "wait", "300", "--timeout", "1", check=False)) == "wait failed - got timeout"

        qm(node, "set", "300", "--lock", "backup")
        assert "lock: backup" in config_lines(node, 300)
        assert "locked" in fails(qm(node, "set", "300", "--name", "other", check=False))
        qm(node, "unlock", "300")
        assert not any(line.startswith("lock:") for line in config_lines(node, 300))
        qm(node, "unlock", "300")  # no lock: nothing to do, as upstream

        qm(node, "stop", "300", timeout=120)
    finally:
        node.stop_vms()
    assert qm(node, "status", "300").stdout == "status: stopped\n"
    assert "ERROR: VM 300 not running" in qm(node, "monitor", "300", input="info status\n").stdout
    assert fails(qm(node, "terminal", "300", check=False)) == "VM 300 not running"
    qm(node, "wait", "300")  # not running: returns at once

    qm(node, "destroy", "300", timeout=120)
    assert not disk.exists()
    assert "does not exist" in fails(qm(node, "config", "300", check=False))
    assert qm(node, "list").stdout == ""


def test_daemon_errors_in_one_line(vmnode):
    """What the daemon refuses (or has not built yet: 501) fails with its
    one-line answer, never a pretended success."""
    node = vmnode
    qm(node, "create", "301", "--memory", "64")
    try:
        for args in (["guest", "cmd", "301", "ping"],
                     ["sendkey", "301", "ctrl-alt-delete"], ["disk", "rescan", "--vmid", "999"]):
            err = fails(qm(node, *args, check=False))
            assert err, args
    finally:
        qm(node, "destroy", "301")


def test_disk_rescan(node):
    """`qm disk rescan` sets a drive's size to its volume's real size and
    adds the VM's volumes no config names as unused; --dryrun only says so."""
    qm(node, "create", "302", "--memory", "64", "--scsi0", "local:0.01,format=raw")
    images = node.root / "var/lib/vz/images/302"
    subprocess.run(["qemu-img", "resize", "-f", "raw", str(images / "vm-302-disk-0.raw"), "32M"],
                   check=True, capture_output=True)
    node.cli("pvesm", "alloc", "local", "302", "vm-302-disk-7.qcow2", "4M")
    before = config_lines(node, 302)
    out = qm(node, "disk", "rescan", "--vmid", "302", "--dryrun", "1").stdout
    assert "dry-run" in out
    assert "VM 302 (scsi0): size of disk 'local:302/vm-302-disk-0.raw' updated from 10M to 32M" in out, out
    assert "VM 302: add unreferenced volume 'local:302/vm-302-disk-7.qcow2' as 'unused0' to config" in out
    assert config_lines(node, 302) == before
    out = qm(node, "rescan", "--vmid", "302").stdout
    assert "as 'unused0'" in out, out
    lines = config_lines(node, 302)
    assert "unused0: local:302/vm-302-disk-7.qcow2" in lines, lines
    assert any(line.startswith("scsi0: local:302/vm-302-disk-0.raw") and line.endswith("size=32M")
               for line in lines), lines
    # Nothing left to do.
    out = qm(node, "disk", "rescan").stdout
    assert "updated" not in out and "unreferenced" not in out, out
    qm(node, "destroy", "302")
