"""Hot-plug into a running VM (real QEMU, TCG): NICs and disks added and
removed while the guest runs and sees them; a NIC moved to another
bridge; with `hotplug: 0` changes wait in [PENDING]. VM ids 650-659."""

from __future__ import annotations

import shutil
import time

import pytest

from oxvetest import add_bridge, in_netns, need, qemu_test_guest
from test_qemu import Serial, kernel_args, ok
from test_qemu_snapshot import shell

ns = in_netns


@pytest.fixture(scope="module")
def qemu(node):
    need(shutil.which("qemu-system-x86_64") is not None, "QEMU is not installed (qemu-system-x86_64)")
    add_bridge(node, "vmbr0", "10.81.0.1/24")
    add_bridge(node, "vmbr1")
    yield node
    node.stop_vms()


@pytest.fixture(scope="module")
def guest(qemu):
    return qemu_test_guest()


def eventually(check, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.5)


def test_nic_and_disk_hotplug(admin, nodename, qemu, guest):
    upid = admin.nodes(nodename).qemu.post(
        vmid=650, memory=256, cores=1, scsi0="local:1,format=qcow2", scsihw="virtio-scsi-single",
        serial0="socket", net0="virtio,bridge=vmbr0", args=kernel_args(guest))
    ok(admin, nodename, upid)
    vm = admin.nodes(nodename).qemu(650)
    ok(admin, nodename, vm.status.start.post())
    serial = Serial(qemu, 650)
    try:
        serial.wait_for("oxve-guest: booted", timeout=120)
        vm.config.put(net1="virtio,bridge=vmbr0")
        conf = vm.config.get()
        assert conf["net1"].startswith("virtio=BC:24:11:"), conf
        assert vm.pending.get() and not any("pending" in p for p in vm.pending.get()), vm.pending.get()
        assert "tap650i1" in ns(qemu, "ip", "-o", "link", "show", "master", "vmbr0").stdout
        eventually(lambda: "eth1" in shell(serial, "ls /sys/class/net"))

        vm.config.put(scsi1="local:1")
        conf = vm.config.get()
        assert conf["scsi1"].startswith("local:650/vm-650-disk-1"), conf
        eventually(lambda: "sdb" in shell(serial, "ls /sys/block"))

        vm.config.put(net1=conf["net1"].replace("bridge=vmbr0", "bridge=vmbr1"))
        assert "tap650i1" in ns(qemu, "ip", "-o", "link", "show", "master", "vmbr1").stdout
        assert "bridge=vmbr1" in vm.config.get()["net1"]

        vm.config.put(delete="net1")
        assert "net1" not in vm.config.get()
        eventually(lambda: "eth1" not in shell(serial, "ls /sys/class/net"))
        vm.config.put(delete="scsi1")
        conf = vm.config.get()
        assert "scsi1" not in conf and conf["unused0"].startswith("local:650/vm-650-disk-1"), conf
        eventually(lambda: "sdb" not in shell(serial, "ls /sys/block"))
        # Not hot-pluggable: stays pending, says so in the pending list.
        vm.config.put(cores=2)
        pending = {p["key"]: p for p in vm.pending.get()}
        assert pending["cores"]["pending"] == 2, pending
    finally:
        serial.close()
    ok(admin, nodename, vm.status.stop.post())


def test_hotplug_off_keeps_changes_pending(admin, nodename, qemu, guest):
    upid = admin.nodes(nodename).qemu.post(
        vmid=651, memory=256, cores=1, hotplug="0", serial0="socket",
        net0="virtio,bridge=vmbr0", args=kernel_args(guest))
    ok(admin, nodename, upid)
    vm = admin.nodes(nodename).qemu(651)
    ok(admin, nodename, vm.status.start.post())
    vm.config.put(net1="virtio,bridge=vmbr0")
    assert "net1" not in vm.config.get(current=1)
    pending = {p["key"]: p for p in vm.pending.get()}
    assert pending["net1"]["pending"].startswith("virtio="), pending
    assert "tap651i1" not in ns(qemu, "ip", "-o", "link", "show").stdout
    ok(admin, nodename, vm.status.stop.post())
    ok(admin, nodename, vm.status.start.post())
    assert "net1" in vm.config.get(current=1)
    assert "tap651i1" in ns(qemu, "ip", "-o", "link", "show", "master", "vmbr0").stdout
    ok(admin, nodename, vm.status.stop.post())
