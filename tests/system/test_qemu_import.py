"""Disk import: `import-from=` on VM create and config update (POST task and
PUT), from a host file and from another VM's volume (also while that VM
runs: copied by its QEMU), into a stopped and a running VM (hot-plugged);
`qm importdisk` / `qm disk import` making `unused<n>` or a given drive.
Failures (missing source, unknown storage, bad syntax, an image with a
backing file, missing privileges) leave no volume behind and the config
unchanged. Data is checked with `qemu-img compare`. No guest boots: a VM
that runs has no disk to boot from and idles in its BIOS. VM ids 700-719."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from proxmoxer.core import ResourceException

from oxvetest import need, wait_task

MIB = 1024 * 1024
PASSWORD = "import-secret-1"


@pytest.fixture(scope="module")
def qemu(node):
    need(shutil.which("qemu-system-x86_64") is not None, "QEMU is not installed (qemu-system-x86_64)")
    need(shutil.which("qemu-img") is not None, "qemu-img is not installed")
    yield node
    node.stop_vms()


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """Source images: `raw` (8 MiB, data at 0 and 5 MiB), the same as
    `qcow2`, and `backed` (a qcow2 whose backing file is the raw one)."""
    d = tmp_path_factory.mktemp("import-src")
    raw = d / "disk.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(MIB))
        f.seek(5 * MIB)
        f.write(os.urandom(MIB // 2))
        f.truncate(8 * MIB)
    qcow2 = d / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2], check=True)
    backed = d / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", raw, "-F", "raw", backed], check=True)
    return {"raw": raw, "qcow2": qcow2, "backed": backed, "dir": d}


def task(admin, nodename, upid, timeout=120):
    st = wait_task(admin, nodename, upid, timeout=timeout)
    log = "\n".join(line["t"] for line in admin.nodes(nodename).tasks(upid).log.get(limit=0))
    return st["exitstatus"], log


def ok(admin, nodename, upid):
    status, log = task(admin, nodename, upid)
    assert status == "OK", log
    return log


def images(node, vmid) -> list[str]:
    d = node.root / f"var/lib/vz/images/{vmid}"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def volume_path(node, value: str) -> Path:
    volid = value.split(",")[0]
    assert volid.startswith("local:"), value
    return node.root / "var/lib/vz/images" / volid[len("local:"):]


def same_data(a: Path, b: Path) -> bool:
    r = subprocess.run(["qemu-img", "compare", "-U", str(a), str(b)], capture_output=True, text=True)
    return r.returncode == 0


def qm(node, *args, check=True, input=None):
    return node.cli("qm", *[str(a) for a in args], check=check, input=input, timeout=120)


def empty_vm(admin, nodename, vmid, **extra):
    ok(admin, nodename, admin.nodes(nodename).qemu.post(vmid=vmid, memory=128, scsihw="virtio-scsi-pci", **extra))
    return admin.nodes(nodename).qemu(vmid)


def test_create_from_file_and_from_volume(admin, nodename, qemu, src):
    upid = admin.nodes(nodename).qemu.post(
        vmid=700, memory=128, scsihw="virtio-scsi-pci",
        scsi0=f"local:0,import-from={src['qcow2']},iothread=0,discard=on",
        scsi1=f"local:0,import-from={src['raw']},format=qcow2")
    log = ok(admin, nodename, upid)
    assert "transferred 100%" in log, log
    assert "scsi0: successfully created disk 'local:700/vm-700-disk-0.raw," in log, log
    conf = admin.nodes(nodename).qemu(700).config.get()
    # The storage's default format for a file; the requested one; the
    # other options kept; `import-from` and `format` gone; the size written.
    assert conf["scsi0"] == "local:700/vm-700-disk-0.raw,iothread=0,discard=on,size=8M", conf
    assert conf["scsi1"] == "local:700/vm-700-disk-1.qcow2,size=8M", conf
    assert conf["boot"] == "order=scsi0", conf
    assert same_data(src["raw"], volume_path(qemu, conf["scsi0"]))
    assert same_data(src["raw"], volume_path(qemu, conf["scsi1"]))

    # From another VM's volume: the copy keeps the source's format.
    upid = admin.nodes(nodename).qemu.post(
        vmid=701, memory=128, virtio0="local:0,import-from=local:700/vm-700-disk-1.qcow2")
    log = ok(admin, nodename, upid)
    conf1 = admin.nodes(nodename).qemu(701).config.get()
    assert conf1["virtio0"] == "local:701/vm-701-disk-0.qcow2,size=8M", conf1
    assert same_data(src["raw"], volume_path(qemu, conf1["virtio0"]))
    # The source VM is as it was.
    assert admin.nodes(nodename).qemu(700).config.get()["scsi1"] == conf["scsi1"]


def test_running_vm_source_and_target(admin, nodename, qemu, src):
    """VM 700 runs (no bootable disk, it idles in the BIOS): a VM created from
    its attached disk gets a copy made by 700's QEMU; a disk imported into
    the running 700 is hot-plugged; `qm disk import` adds `unused0` to the
    running VM's config at once."""
    vm = admin.nodes(nodename).qemu(700)
    ok(admin, nodename, vm.status.start.post())
    try:
        upid = admin.nodes(nodename).qemu.post(
            vmid=702, memory=128, scsi0="local:0,import-from=local:700/vm-700-disk-0.raw,format=qcow2")
        log = ok(admin, nodename, upid)
        assert "mirror" in log or "transferred" in log, log
        conf = admin.nodes(nodename).qemu(702).config.get()
        assert conf["scsi0"] == "local:702/vm-702-disk-0.qcow2,size=8M", conf
        assert same_data(src["raw"], volume_path(qemu, conf["scsi0"]))
        assert vm.status.current.get()["status"] == "running"
        # 700 still runs on its own image.
        out = qm(qemu, "monitor", 700, input="info block\n").stdout
        assert "vm-700-disk-0.raw" in out and "vm-702" not in out, out

        log = ok(admin, nodename, vm.config.post(scsi2=f"local:0,import-from={src['qcow2']}"))
        assert "hotplug: scsi2 applied" in log, log
        current = vm.config.get(current=1)
        assert current["scsi2"] == "local:700/vm-700-disk-2.raw,size=8M", current
        assert not any("pending" in p for p in vm.pending.get()), vm.pending.get()
        assert "vm-700-disk-2.raw" in qm(qemu, "monitor", 700, input="info block\n").stdout
        assert same_data(src["raw"], volume_path(qemu, current["scsi2"]))

        out = qm(qemu, "disk", "import", 700, src["raw"], "local").stdout
        assert "unused0: successfully imported disk 'local:700/vm-700-disk-3.raw'" in out, out
        assert vm.config.get(current=1)["unused0"] == "local:700/vm-700-disk-3.raw"
    finally:
        ok(admin, nodename, vm.status.stop.post())


def test_config_update_into_stopped_vm(admin, nodename, qemu, src):
    vm = empty_vm(admin, nodename, 703)
    log = ok(admin, nodename, vm.config.post(scsi0=f"local:0,import-from={src['qcow2']},format=qcow2"))
    assert "scsi0: successfully created disk" in log, log
    # The synchronous PUT imports too.
    assert vm.config.put(virtio0="local:0,import-from=local:703/vm-703-disk-0.qcow2,format=raw") is None
    conf = vm.config.get(current=1)
    assert conf["scsi0"] == "local:703/vm-703-disk-0.qcow2,size=8M", conf
    assert conf["virtio0"] == "local:703/vm-703-disk-1.raw,size=8M", conf
    for key in ("scsi0", "virtio0"):
        assert same_data(src["raw"], volume_path(qemu, conf[key])), key
    # An `import` volume (PVE 8.2+): untrusted like a host file.
    (qemu.root / "var/lib/vz/import").mkdir(parents=True, exist_ok=True)
    shutil.copy(src["qcow2"], qemu.root / "var/lib/vz/import/appliance-disk.qcow2")
    shutil.copy(src["backed"], qemu.root / "var/lib/vz/import/backed.qcow2")
    ok(admin, nodename, vm.config.post(sata0="local:0,import-from=local:import/appliance-disk.qcow2"))
    conf = vm.config.get(current=1)
    assert conf["sata0"] == "local:703/vm-703-disk-2.qcow2,size=8M", conf
    assert same_data(src["raw"], volume_path(qemu, conf["sata0"]))
    status, log = task(admin, nodename, vm.config.post(sata1="local:0,import-from=local:import/backed.qcow2"))
    assert status != "OK" and "backing file not allowed" in status, (status, log)
    assert "vm-703-disk-3.raw" not in images(qemu, 703) and "vm-703-disk-3.qcow2" not in images(qemu, 703)
    # A format the storage lacks falls back to its default, with a warning.
    log = ok(admin, nodename, vm.config.post(scsi1=f"local:0,import-from={src['raw']},format=qed"))
    assert "format 'qed' is not supported by the target storage - using 'raw' instead" in log, log


def test_qm_importdisk(admin, nodename, qemu, src):
    vm = empty_vm(admin, nodename, 704)
    out = qm(qemu, "importdisk", 704, src["qcow2"], "local").stdout
    assert out.startswith(f"importing disk '{src['qcow2']}' to VM 704 ...\n"), out
    assert out.rstrip().endswith("unused0: successfully imported disk 'local:704/vm-704-disk-0.raw'"), out
    out = qm(qemu, "disk", "import", 704, src["raw"], "local", "--format", "qcow2").stdout
    assert "unused1: successfully imported disk 'local:704/vm-704-disk-1.qcow2'" in out, out
    # `--target-disk unused<n>` means the next unused entry, as upstream.
    out = qm(qemu, "disk", "import", 704, src["raw"], "local", "--target-disk", "unused0").stdout
    assert "unused2: successfully imported disk 'local:704/vm-704-disk-2.raw'" in out, out
    out = qm(qemu, "disk", "import", 704, src["qcow2"], "local", "--target-disk", "scsi0").stdout
    assert "scsi0: successfully imported disk 'local:704/vm-704-disk-3.raw,size=8M'" in out, out
    conf = vm.config.get()
    assert [conf.get(f"unused{i}") for i in range(3)] == [
        "local:704/vm-704-disk-0.raw", "local:704/vm-704-disk-1.qcow2", "local:704/vm-704-disk-2.raw"], conf
    for value in (conf["unused0"], conf["unused1"], conf["scsi0"]):
        assert same_data(src["raw"], volume_path(qemu, value)), value

    before = images(qemu, 704)
    r = qm(qemu, "disk", "import", 704, src["raw"], "local", "--target-disk", "scsi0", check=False)
    assert r.returncode != 0 and "cowardly refusing to overwrite existing entry: scsi0" in r.stderr, r
    r = qm(qemu, "importdisk", 704, src["raw"], "local", "--format", "qed", check=False)
    assert r.returncode == 2 and "format: value 'qed' does not have a value in the enumeration" in r.stderr, r
    r = qm(qemu, "importdisk", 704, src["raw"], "local", "--target-disk", "bogus0", check=False)
    assert r.returncode == 2 and "target-disk" in r.stderr, r
    r = qm(qemu, "importdisk", 704, src["dir"] / "nosuch.raw", "local", check=False)
    assert r.returncode != 0 and "nosuch.raw: non-existent or non-regular file" in r.stderr, r
    r = qm(qemu, "importdisk", 704, src["raw"], "nosuch", check=False)
    assert r.returncode != 0 and "nosuch" in r.stderr, r
    r = qm(qemu, "importdisk", 704, src["backed"], "local", check=False)
    assert r.returncode != 0 and "backing file not allowed" in r.stderr, r
    assert images(qemu, 704) == before
    assert vm.config.get()["digest"] == conf["digest"]


def test_failures_leave_nothing_behind(admin, nodename, qemu, src):
    # A create whose second import fails: the first volume is freed, no VM.
    upid = admin.nodes(nodename).qemu.post(
        vmid=710, memory=128, scsi0=f"local:0,import-from={src['raw']}",
        scsi1=f"local:0,import-from={src['dir']}/missing.qcow2")
    status, log = task(admin, nodename, upid)
    assert status != "OK" and f"can't find file '{src['dir']}/missing.qcow2'" in status, (status, log)
    assert images(qemu, 710) == []
    with pytest.raises(ResourceException):
        admin.nodes(nodename).qemu(710).config.get()

    vm = empty_vm(admin, nodename, 711)
    digest = vm.config.get()["digest"]
    failing = {
        f"local:0,import-from={src['dir']}/missing.raw": "can't find file",
        "local:0,import-from=local:700/vm-700-disk-9.raw": "cannot import from 'local:700/vm-700-disk-9.raw'",
        f"local:0,import-from={src['backed']}": "backing file not allowed",
    }
    for value, why in failing.items():
        status, log = task(admin, nodename, vm.config.post(scsi0=value))
        assert status != "OK" and why in status, (value, status, log)
    refused = {
        f"nosuch:0,import-from={src['raw']}": "nosuch",
        f"local:1,import-from={src['raw']}": "requires special syntax",
        "local:0,import-from=local:iso/x.iso": "wrong type 'iso'",
        "local:0,import-from=local:import/a.ova/disk1.vmdk": "OVA",
    }
    for value, why in refused.items():
        with pytest.raises(ResourceException) as e:
            vm.config.post(scsi0=value)
        assert why in str(e.value), (value, e.value)
    assert images(qemu, 711) == []
    assert vm.config.get()["digest"] == digest


def test_permissions(admin, nodename, qemu, src):
    vm = empty_vm(admin, nodename, 712)
    user = "importer@pve"
    qemu.add_user(user, PASSWORD, role="PVEVMAdmin", path="/vms/712")
    qemu.cli("pveum", "acl", "modify", "/storage/local", "--users", user, "--roles", "PVEDatastoreUser")
    api = qemu.proxmox(user, PASSWORD)
    mine = api.nodes(nodename).qemu(712)
    digest = vm.config.get()["digest"]
    # A host path needs Sys.Modify on / (upstream: root@pam only).
    with pytest.raises(ResourceException) as e:
        mine.config.post(scsi0=f"local:0,import-from={src['raw']}")
    assert e.value.status_code == 403 and "Sys.Modify" in str(e.value), e.value
    # Another VM's volume needs VM.Clone on that VM.
    with pytest.raises(ResourceException) as e:
        mine.config.post(scsi0="local:0,import-from=local:700/vm-700-disk-0.raw")
    assert e.value.status_code == 403 and "/vms/700" in str(e.value), e.value
    assert images(qemu, 712) == [] and vm.config.get()["digest"] == digest

    qemu.cli("pveum", "role", "add", "ImportClone", "--privs", "VM.Clone")
    qemu.cli("pveum", "acl", "modify", "/vms/700", "--users", user, "--roles", "ImportClone")
    ok(admin, nodename, mine.config.post(scsi0="local:0,import-from=local:700/vm-700-disk-0.raw"))
    conf = vm.config.get()
    assert conf["scsi0"] == "local:712/vm-712-disk-0.raw,size=8M", conf
    assert same_data(src["raw"], volume_path(qemu, conf["scsi0"]))
