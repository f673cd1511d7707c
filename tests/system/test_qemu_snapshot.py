"""VM snapshots (disk-only and with RAM), rollback, templates and clones
with real QEMU (TCG) on the test guest, driven through proxmoxer and `qm`.
VM ids 600-649."""

from __future__ import annotations

import concurrent.futures
import shutil
import socket
import subprocess
import time

import pytest
from proxmoxer.core import ResourceException

from oxvetest import add_bridge, need, qemu_test_guest, wait_task
from test_qemu import Serial, kernel_args, ok, status, task_log

BRIDGE = "vmbr0"


@pytest.fixture(scope="module")
def qemu(node):
    need(shutil.which("qemu-system-x86_64") is not None, "QEMU is not installed (qemu-system-x86_64)")
    add_bridge(node, BRIDGE, "10.79.0.1/24")
    yield node
    node.stop_vms()


@pytest.fixture(scope="module")
def guest(qemu):
    return qemu_test_guest()


def create(admin, nodename, vmid, guest, disk="local:1,format=qcow2", **extra):
    upid = admin.nodes(nodename).qemu.post(
        vmid=vmid, name=f"vm{vmid}", memory=256, cores=1, scsi0=disk,
        scsihw="virtio-scsi-single", serial0="socket", net0=f"virtio,bridge={BRIDGE}",
        args=kernel_args(guest), **extra)
    ok(admin, nodename, upid)


def failed(admin, nodename, upid) -> str:
    st = wait_task(admin, nodename, upid, timeout=120)
    assert st["exitstatus"] != "OK", st
    return st["exitstatus"] + "\n" + task_log(admin, nodename, upid)


def shell(serial: Serial, command: str, timeout: float = 30) -> str:
    """Runs `command` on the guest's console; returns what it printed (up
    to an end marker the console's echo of the command cannot contain)."""
    start = len(serial.seen)
    serial.send(command + "; echo END$((6*7))")
    deadline = time.monotonic() + timeout
    while b"END42" not in serial.seen[start:]:
        assert time.monotonic() < deadline, f"no answer to {command!r}: {serial.seen[-2000:]!r}"
        try:
            chunk = serial.sock.recv(4096)
        except socket.timeout:
            continue
        assert chunk, f"serial console closed: {serial.seen[-2000:]!r}"
        serial.seen += chunk
    return serial.seen[start:].decode(errors="replace")


def disk_marker(serial: Serial, tag: str) -> str:
    """The first bytes of the guest's /dev/sda, printed between tags."""
    return shell(serial, f"sync; echo 3 > /proc/sys/vm/drop_caches; echo {tag}-[$(head -c 16 /dev/sda | tr -d '\\0')]")


def test_snapshot_with_ram_and_rollback(admin, nodename, qemu, guest):
    """A running VM's snapshot with RAM saves disks and memory; after both
    changed, a rollback brings back the running guest as it was — the
    shell's file in RAM and the disk's first bytes — and deleting the
    snapshot of the running VM removes the qcow2 snapshot and the state
    volume."""
    create(admin, nodename, 600, guest)
    vm = admin.nodes(nodename).qemu(600)
    ok(admin, nodename, vm.status.start.post())
    serial = Serial(qemu, 600)
    try:
        serial.wait_for("oxve-guest: booted", timeout=120)
        shell(serial, "echo ram-before > /tmp/m; printf disk-before | dd of=/dev/sda conv=fsync 2>/dev/null; true")
        upid = vm.snapshot.post(snapname="s1", description="with ram", vmstate=1)
        ok(admin, nodename, upid, timeout=180)
        log = task_log(admin, nodename, upid)
        assert "saving VM state and RAM" in log, log
        assert status(admin, nodename, 600)["qmpstatus"] == "running"
        snaps = {s["name"]: s for s in vm.snapshot.get()}
        assert snaps["s1"]["vmstate"] == 1 and snaps["s1"]["description"] == "with ram", snaps
        assert snaps["current"]["parent"] == "s1" and snaps["current"]["running"] == 1
        sconf = vm.snapshot("s1").config.get()
        assert sconf["vmstate"].startswith("local:600/vm-600-state-s1"), sconf
        assert sconf["runningmachine"].startswith("pc-i440fx-"), sconf
        state = qemu.root / "var/lib/vz/images/600" / sconf["vmstate"].split("/")[1]
        assert state.exists() and state.stat().st_blocks > 0, state
        shell(serial, "echo ram-after > /tmp/m; printf disk-after! | dd of=/dev/sda conv=fsync 2>/dev/null; true")
    finally:
        serial.close()

    upid = vm.snapshot("s1").rollback.post()
    ok(admin, nodename, upid, timeout=180)
    log = task_log(admin, nodename, upid)
    assert "loading the VM state" in log, log
    st = status(admin, nodename, 600)
    assert st["status"] == "running" and st["qmpstatus"] == "running", st
    serial = Serial(qemu, 600)
    try:
        out = shell(serial, "echo ram-is-$(cat /tmp/m)")
        assert "ram-is-ram-before\r" in out or "ram-is-ram-before\n" in out, out
        out = disk_marker(serial, "sda")
        assert "disk-before" in out and "disk-after" not in out, out
    finally:
        serial.close()
    conf = vm.config.get()
    assert conf["parent"] == "s1" and "vmstate" not in conf and "runningmachine" not in conf

    upid = vm.snapshot("s1").delete()
    ok(admin, nodename, upid, timeout=120)
    assert [s["name"] for s in vm.snapshot.get()] == ["current"]
    assert "parent" not in vm.config.get()
    assert not state.exists()
    disk = qemu.root / "var/lib/vz/images/600" / conf["scsi0"].split("/")[1].split(",")[0]
    listing = subprocess.run(["qemu-img", "snapshot", "-U", "-l", str(disk)], capture_output=True, text=True)
    assert "s1" not in listing.stdout, listing.stdout
    ok(admin, nodename, vm.status.stop.post())


def test_snapshot_refusals_and_offline_rollback(admin, nodename, qemu, guest):
    """A raw image on a directory storage cannot be snapshotted: the task
    says why and the config is as before. A stopped qcow2 VM's snapshot
    and rollback with start=1; a snapshot's description can be edited; a
    VM with snapshots cannot become a template."""
    create(admin, nodename, 601, guest, disk="local:1,format=raw")
    vm = admin.nodes(nodename).qemu(601)
    before = vm.config.get()
    err = failed(admin, nodename, vm.snapshot.post(snapname="nope"))
    assert "snapshot feature is not available" in err and "scsi0" in err, err
    after = vm.config.get()
    assert after == before and "lock" not in after
    assert [s["name"] for s in vm.snapshot.get()] == ["current"]

    create(admin, nodename, 602, guest)
    vm = admin.nodes(nodename).qemu(602)
    ok(admin, nodename, vm.snapshot.post(snapname="base"))
    vm.config.put(memory=384)
    vm.snapshot("base").config.put(description="edited")
    assert vm.snapshot("base").config.get()["description"].strip() == "edited"
    with pytest.raises(ResourceException) as e:
        vm.snapshot.post(snapname="base")
    assert "already used" in str(e.value)
    err = failed(admin, nodename, vm.template.post())
    assert "contains snapshots" in err, err
    ok(admin, nodename, vm.snapshot("base").rollback.post(start=1), timeout=120)
    assert vm.config.get()["memory"] in (256, "256")
    assert status(admin, nodename, 602)["status"] == "running"
    # A full clone of a running VM from its snapshot.
    ok(admin, nodename, vm.clone.post(newid=603, snapname="base", full=1, name="from-snap"), timeout=180)
    c = admin.nodes(nodename).qemu(603).config.get()
    assert c["name"] == "from-snap" and c["scsi0"].startswith("local:603/vm-603-disk-0"), c
    assert "parent" not in c and "snaptime" not in c
    ok(admin, nodename, vm.status.stop.post())
    ok(admin, nodename, vm.snapshot("base").delete())


def test_template_linked_and_full_clones(admin, nodename, qemu, guest):
    """A template's disk becomes a base image; linked clones (many at once,
    none failing on a lock) are qcow2 children of it, full clones copies in
    any format; clones get their own name, MACs and SMBIOS UUID; a linked
    clone boots; a template cannot start."""
    create(admin, nodename, 610, guest)
    vm = admin.nodes(nodename).qemu(610)
    src = vm.config.get()
    ok(admin, nodename, vm.template.post())
    tconf = vm.config.get()
    assert tconf["template"] == 1 and tconf["scsi0"].startswith("local:610/base-610-disk-0.qcow2"), tconf
    err = failed(admin, nodename, vm.status.start.post())
    assert "template" in err, err
    assert vm.feature.get(feature="clone")["hasFeature"] == 1

    with pytest.raises(ResourceException) as e:
        vm.clone.post(newid=611, full=0, storage="local")
    assert "not allowed for linked clones" in str(e.value)

    ids = list(range(620, 632))
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(ids)) as pool:
        upids = list(pool.map(lambda i: vm.clone.post(newid=i, name=f"linked{i}"), ids))
    for upid in upids:
        ok(admin, nodename, upid, timeout=180)
    macs = set()
    for i in ids:
        c = admin.nodes(nodename).qemu(i).config.get()
        assert c["scsi0"].startswith(f"local:610/base-610-disk-0.qcow2/{i}/vm-{i}-disk-0.qcow2"), c
        assert c["name"] == f"linked{i}" and "template" not in c
        assert c["smbios1"] != src["smbios1"]
        macs.add(c["net0"].split(",")[0])
    assert len(macs) == len(ids) and src["net0"].split(",")[0] not in macs

    ok(admin, nodename, vm.clone.post(newid=612, full=1, format="raw"), timeout=180)
    full = admin.nodes(nodename).qemu(612).config.get()
    assert full["name"] == "Copy-of-VM-vm610" and full["scsi0"].startswith("local:612/vm-612-disk-0.raw"), full
    raw = qemu.root / "var/lib/vz/images/612/vm-612-disk-0.raw"
    assert raw.stat().st_size == 1024 ** 3

    clone = admin.nodes(nodename).qemu(620)
    ok(admin, nodename, clone.status.start.post())
    serial = Serial(qemu, 620)
    try:
        serial.wait_for("oxve-guest: booted", timeout=120)
    finally:
        serial.close()
    ok(admin, nodename, clone.status.stop.post())
    for i in ids + [612]:
        ok(admin, nodename, admin.nodes(nodename).qemu(i).delete())
    ok(admin, nodename, vm.delete())
    assert not (qemu.root / "var/lib/vz/images/610").exists() or not any((qemu.root / "var/lib/vz/images/610").iterdir())


def test_qm_snapshot_commands(qemu, admin, nodename, guest):
    """`qm snapshot`, `listsnapshot`, `rollback`, `delsnapshot`, `clone`,
    `template` on the node."""
    create(admin, nodename, 640, guest)
    qemu.cli("qm", "snapshot", "640", "first", "--description", "one")
    qemu.cli("qm", "snapshot", "640", "second")
    tree = qemu.cli("qm", "listsnapshot", "640").stdout
    assert "first" in tree and "second" in tree and "current" in tree, tree
    assert tree.index("first") < tree.index("second") < tree.index("current")
    qemu.cli("qm", "rollback", "640", "first")
    assert admin.nodes(nodename).qemu(640).config.get()["parent"] == "first"
    qemu.cli("qm", "delsnapshot", "640", "second")
    qemu.cli("qm", "delsnapshot", "640", "first")
    qemu.cli("qm", "template", "640")
    qemu.cli("qm", "clone", "640", "641", "--name", "qmclone")
    assert admin.nodes(nodename).qemu(641).config.get()["name"] == "qmclone"
    bad = qemu.cli("qm", "rollback", "640", "missing", check=False)
    assert bad.returncode != 0 and "snapshot 'missing' does not exist" in bad.stderr, bad.stderr


def test_move_disk_online_and_clone_a_running_vm(admin, nodename, qemu, guest):
    """A running VM's disk moves to another storage and format while the
    guest keeps using it (drive-mirror), the old volume stays as unused;
    a full clone of the running VM copies its disk as the guest wrote it;
    an unused volume moves offline and the old one is deleted."""
    second = qemu.root / "second-store"
    second.mkdir()
    admin.storage.post(storage="second", type="dir", path=str(second), content="images")
    create(admin, nodename, 645, guest)
    vm = admin.nodes(nodename).qemu(645)
    ok(admin, nodename, vm.status.start.post())
    serial = Serial(qemu, 645)
    try:
        serial.wait_for("oxve-guest: booted", timeout=120)
        shell(serial, "printf moved-data | dd of=/dev/sda conv=fsync 2>/dev/null; true")
        old = vm.config.get()["scsi0"].split(",")[0]
        upid = vm.move_disk.post(disk="scsi0", storage="second", format="raw")
        ok(admin, nodename, upid, timeout=180)
        log = task_log(admin, nodename, upid)
        assert "while the VM runs" in log and "switched to the copy" in log, log
        conf = vm.config.get()
        assert conf["scsi0"].startswith("second:645/vm-645-disk-"), conf
        assert ".raw" in conf["scsi0"] and "format=" not in conf["scsi0"]
        assert conf["unused0"] == old, conf
        assert status(admin, nodename, 645)["qmpstatus"] == "running"
        # The guest reads and writes the new disk.
        out = disk_marker(serial, "sda")
        assert "moved-data" in out, out
        shell(serial, "printf after-move | dd of=/dev/sda conv=fsync 2>/dev/null; true")
        newfile = second / "images/645" / conf["scsi0"].split("/")[1].split(",")[0]
        assert newfile.read_bytes()[:10] == b"after-move"

        upid = vm.clone.post(newid=646, full=1, storage="local", format="raw", name="running-copy")
        ok(admin, nodename, upid, timeout=180)
        assert "copy complete" in task_log(admin, nodename, upid)
        c = admin.nodes(nodename).qemu(646).config.get()
        copy = qemu.root / "var/lib/vz/images/646" / c["scsi0"].split("/")[1].split(",")[0]
        assert copy.read_bytes()[:10] == b"after-move", c
        assert status(admin, nodename, 645)["qmpstatus"] == "running"
    finally:
        serial.close()
    ok(admin, nodename, vm.move_disk.post(disk="unused0", storage="second", delete=1), timeout=120)
    conf = vm.config.get()
    assert conf["unused0"].startswith("second:645/"), conf
    assert not (qemu.root / "var/lib/vz/images/645" / old.split("/")[1]).exists()
    with pytest.raises(ResourceException) as e:
        vm.move_disk.post(disk="scsi7", storage="second")
    assert "does not exist" in str(e.value)
    ok(admin, nodename, vm.status.stop.post())


def test_suspend_to_disk_and_resume(admin, nodename, qemu, guest):
    """Suspend to disk saves RAM into a `vm-<id>-state-suspend-<date>`
    volume and ends QEMU; the config is locked `suspended` with the machine
    and CPU the state needs. Resume loads the state (the guest's RAM file is
    there again) and frees the volume. A refused suspend changes nothing."""
    create(admin, nodename, 647, guest)
    vm = admin.nodes(nodename).qemu(647)
    ok(admin, nodename, vm.status.start.post())
    serial = Serial(qemu, 647)
    try:
        serial.wait_for("oxve-guest: booted", timeout=120)
        shell(serial, "echo hibernated-ram > /tmp/h")
    finally:
        serial.close()
    before = vm.config.get()
    with pytest.raises(ResourceException, match="storage .nosuch. does not exist"):
        vm.status.suspend.post(statestorage="nosuch", todisk=1)
    with pytest.raises(ResourceException, match="todisk"):
        vm.status.suspend.post(statestorage="local")
    assert vm.config.get() == before

    upid = vm.status.suspend.post(todisk=1)
    ok(admin, nodename, upid, timeout=180)
    log = task_log(admin, nodename, upid)
    assert "saving VM state and RAM" in log and "state saved, quitting" in log, log
    st = status(admin, nodename, 647)
    assert st["status"] == "stopped", st
    conf = vm.config.get()
    assert conf["lock"] == "suspended", conf
    assert conf["vmstate"].startswith("local:647/vm-647-state-suspend-"), conf
    assert conf["runningmachine"].startswith("pc-i440fx-") and conf["runningcpu"], conf
    state = qemu.root / "var/lib/vz/images/647" / conf["vmstate"].split("/")[1]
    assert state.exists() and state.stat().st_blocks > 0, state
    # Locked: the config cannot change under the saved state.
    with pytest.raises(ResourceException, match="locked"):
        vm.config.put(cores=2)

    upid = vm.status.resume.post()
    ok(admin, nodename, upid, timeout=180)
    assert "Resuming suspended VM" in task_log(admin, nodename, upid)
    st = status(admin, nodename, 647)
    assert st["status"] == "running" and st["qmpstatus"] == "running", st
    conf = vm.config.get()
    for key in ("lock", "vmstate", "runningmachine", "runningcpu"):
        assert key not in conf, conf
    assert not state.exists()
    serial = Serial(qemu, 647)
    try:
        out = shell(serial, "echo ram-is-$(cat /tmp/h)")
        assert "ram-is-hibernated-ram" in out, out
    finally:
        serial.close()

    # Suspended again, a plain start resumes too (as upstream).
    ok(admin, nodename, vm.status.suspend.post(todisk=1), timeout=180)
    assert vm.config.get()["lock"] == "suspended"
    upid = vm.status.start.post()
    ok(admin, nodename, upid, timeout=180)
    assert "Resuming suspended VM" in task_log(admin, nodename, upid)
    assert "lock" not in vm.config.get()
    ok(admin, nodename, vm.status.stop.post())
    ok(admin, nodename, vm.delete())
    assert not (qemu.root / "var/lib/vz/images/647").exists() or not any(
        (qemu.root / "var/lib/vz/images/647").iterdir())
