"""VMs with real QEMU on LVM and LVM-thin storages and on VLAN-aware
bridges, driven with proxmoxer: disks allocated as logical volumes and
opened by QEMU, online resize (lvextend, QEMU sees the size), snapshots
refused on plain LVM and taken with the VM running on LVM-thin, rollback,
online move LVM -> LVM-thin, template, linked and full clones, destroy;
NIC taps with VLAN tags, trunks and a rate limit. VM ids 800-849.

Runs only inside the test host VM (tests/hostvm/storage-tests.sh starts
the services and passes them in OXVE_VM_QM_* variables): this host lacks
device-mapper and bridge VLAN filtering. QEMU runs under TCG inside the
TCG-emulated test host VM, far too slow to boot an OS: the guests have
blank disks and stay in the BIOS, which is enough for QEMU to have their
drives and taps open. Data on the disks is written and read from outside
the guest (O_DIRECT, past QEMU)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from proxmoxer.core import ResourceException

from oxvetest import in_netns, need, wait_task
from test_lxc_storage import lv_active, lvs
from test_qemu import ok, task_log
from test_storage_plugins import contents, sh, vm_env

MiB = 1 << 20
# Disks of 1/16 GiB (upstream's `STORAGE:SIZE` takes GiB, fractions too):
# an online move or a full clone copies all of it, at TCG speed (~7 MiB/s).
DISK = "0.0625"
SIZE = 64 * MiB
BLOCK = 4096
# A VLAN-aware bridge, and a classic one with a bond as its uplink.
VBRIDGE = "vmbr1"
CBRIDGE = "vmbr2"

ns = in_netns


@pytest.fixture(scope="module")
def qm(node):
    need(shutil.which("qemu-system-x86_64") is not None, "QEMU is not installed (qemu-system-x86_64)")
    yield node
    node.stop_vms()


@pytest.fixture(scope="module")
def storages(admin, qm):
    vg, pool = vm_env("OXVE_VM_QM_VG"), vm_env("OXVE_VM_QM_THINPOOL")
    admin.storage.post(storage="qmlvm", type="lvm", vgname=vg, content="images")
    admin.storage.post(storage="qmthin", type="lvmthin", vgname=vg, thinpool=pool, content="images")
    yield {"vg": vg, "pool": pool}
    qm.stop_vms()
    for s in ("qmlvm", "qmthin"):
        admin.storage(s).delete()


def volname(conf: dict, key: str) -> str:
    """`qmthin:vm-800-disk-1,size=64M` -> `vm-800-disk-1`."""
    return conf[key].split(",")[0].split(":", 1)[1]


def device(vg: str, lv: str) -> str:
    """The LV's device node, activated if it is not (thin snapshots skip
    activation by default)."""
    path = f"/dev/{vg}/{lv}"
    if not Path(path).exists():
        sh("lvchange", "-ay", "-K", f"{vg}/{lv}")
    return path


def write_block(path: str, text: str) -> None:
    """Writes `text` as the first block of a device, bypassing the page
    cache (QEMU has the device open with O_DIRECT too)."""
    subprocess.run(["dd", f"of={path}", f"bs={BLOCK}", "count=1", "oflag=direct", "iflag=fullblock",
                    "conv=notrunc", "status=none"], input=text.encode().ljust(BLOCK, b"\0"), check=True)


def read_block(path: str) -> str:
    out = subprocess.run(["dd", f"if={path}", f"bs={BLOCK}", "count=1", "iflag=direct", "status=none"],
                         capture_output=True, check=True).stdout
    return out.rstrip(b"\0").decode(errors="replace")


def monitor(api, command: str) -> str:
    return api.monitor.post(command=command)


def qemu_size(api, key: str) -> int:
    """The virtual size QEMU has for drive `key` (HMP `info block -v`)."""
    out = monitor(api, f"info block -v drive-{key}")
    m = re.search(r"virtual size: .*\((\d+) bytes\)", out)
    assert m, out
    return int(m.group(1))


def failed(admin, nodename, upid) -> str:
    st = wait_task(admin, nodename, upid, timeout=120)
    assert st["exitstatus"] != "OK", st
    return st["exitstatus"] + "\n" + task_log(admin, nodename, upid)


def vm_lvs(vg: str, vmid: int) -> dict[str, dict]:
    return {name: lv for name, lv in lvs(vg).items() if f"-{vmid}-" in name}


def test_disks_on_lvm_and_lvmthin(admin, nodename, qm, storages):
    """One VM's life on LVM and LVM-thin with QEMU running: its disks are
    LVs QEMU has open; an online resize extends the LV and QEMU's view; a
    snapshot is refused while a disk is on plain LVM; an online move to
    LVM-thin frees the old LV; a disk-only snapshot of the running VM and
    a rollback to it; a template, a linked clone that starts, a full clone
    to LVM that starts and whose LVs go inactive when it stops, both with
    the data; destroy leaves no LV."""
    vg, pool = storages["vg"], storages["pool"]
    api = admin.nodes(nodename).qemu(800)
    ok(admin, nodename, admin.nodes(nodename).qemu.post(
        vmid=800, name="vm800", memory=64, scsihw="virtio-scsi-single",
        scsi0=f"qmlvm:{DISK}", virtio0=f"qmthin:{DISK}"))
    conf = api.config.get()
    lvm_lv, thin_lv = volname(conf, "scsi0"), volname(conf, "virtio0")
    assert conf["scsi0"] == f"qmlvm:{lvm_lv},size=64M", conf
    assert conf["virtio0"] == f"qmthin:{thin_lv},size=64M", conf
    have = vm_lvs(vg, 800)
    assert set(have) == {lvm_lv, thin_lv}, have
    assert have[lvm_lv]["size"] == SIZE and have[lvm_lv]["pool"] == "", have
    assert have[thin_lv]["size"] == SIZE and have[thin_lv]["pool"] == pool, have
    assert set(contents(admin, nodename, "qmlvm", vmid=800)) == {f"qmlvm:{lvm_lv}"}
    write_block(device(vg, lvm_lv), "lvm-data")
    write_block(device(vg, thin_lv), "before")

    # Running: QEMU has both LVs open (QMP answers for both drives).
    upid = api.status.start.post()
    ok(admin, nodename, upid, timeout=120)
    assert "runs under TCG" in task_log(admin, nodename, upid)
    st = api.status.current.get()
    assert st["status"] == "running" and st["qmpstatus"] == "running", st
    assert {"scsi0", "virtio0"} <= set(st["blockstat"]), st["blockstat"]
    block = monitor(api, "info block")
    for lv in (lvm_lv, thin_lv):
        assert f"/dev/{vg}/{lv}" in block, block
    assert qemu_size(api, "scsi0") == SIZE

    # Online resize on plain LVM: lvextend, then QEMU's block_resize.
    ok(admin, nodename, api.resize.put(disk="scsi0", size="+32M"))
    assert vm_lvs(vg, 800)[lvm_lv]["size"] == 96 * MiB
    assert api.config.get()["scsi0"] == f"qmlvm:{lvm_lv},size=96M"
    assert qemu_size(api, "scsi0") == 96 * MiB
    ok(admin, nodename, api.resize.put(disk="virtio0", size="80M"))
    assert vm_lvs(vg, 800)[thin_lv]["size"] == 80 * MiB
    assert qemu_size(api, "virtio0") == 80 * MiB

    # Plain LVM has no snapshots: refused, with the reason, and nothing
    # changed (no LV, no snapshot section, no lock; the VM runs on).
    assert api.feature.get(feature="snapshot")["hasFeature"] in (0, False)
    before = (api.config.get(), vm_lvs(vg, 800))
    try:
        err = failed(admin, nodename, api.snapshot.post(snapname="nope"))
    except ResourceException as e:
        err = str(e)
    assert "snapshot feature is not available" in err and "scsi0" in err, err
    print(f"\nsnapshot on LVM refused: {err.splitlines()[0]}")
    assert (api.config.get(), vm_lvs(vg, 800)) == before
    assert [s["name"] for s in api.snapshot.get()] == ["current"]
    assert api.status.current.get()["qmpstatus"] == "running"

    # Online move LVM -> LVM-thin (drive-mirror); delete=1 frees the old LV.
    upid = api.move_disk.post(disk="scsi0", storage="qmthin", delete=1)
    ok(admin, nodename, upid, timeout=180)
    log = task_log(admin, nodename, upid)
    assert "while the VM runs" in log and "switched to the copy" in log, log
    conf = api.config.get()
    moved_lv = volname(conf, "scsi0")
    assert conf["scsi0"] == f"qmthin:{moved_lv},size=96M", conf
    assert not [k for k in conf if k.startswith("unused")], conf
    have = vm_lvs(vg, 800)
    assert lvm_lv not in have, have
    assert have[moved_lv]["pool"] == pool and have[moved_lv]["size"] == 96 * MiB, have
    assert f"/dev/{vg}/{moved_lv}" in monitor(api, "info block")
    assert read_block(device(vg, moved_lv)) == "lvm-data"
    assert api.status.current.get()["qmpstatus"] == "running"

    # Disk-only snapshot of the running VM: thin snapshots of both LVs.
    assert api.feature.get(feature="snapshot")["hasFeature"] in (1, True)
    ok(admin, nodename, api.snapshot.post(snapname="s1"), timeout=120)
    have = vm_lvs(vg, 800)
    for lv in (moved_lv, thin_lv):
        assert have[f"snap_{lv}_s1"]["origin"] == lv, have
    assert api.status.current.get()["qmpstatus"] == "running"
    assert "vmstate" not in api.snapshot("s1").config.get()
    write_block(device(vg, thin_lv), "after")
    # Rollback: stopped, the LVs back to the snapshot, started again.
    ok(admin, nodename, api.snapshot("s1").rollback.post(start=1), timeout=180)
    assert api.status.current.get()["qmpstatus"] == "running"
    assert read_block(device(vg, thin_lv)) == "before"
    assert read_block(device(vg, moved_lv)) == "lvm-data"
    ok(admin, nodename, api.snapshot("s1").delete(), timeout=120)
    assert not [lv for lv in vm_lvs(vg, 800) if lv.startswith("snap_")]
    ok(admin, nodename, api.status.stop.post())

    # Template: the LVs become base volumes.
    r = api.template.post()
    if isinstance(r, str) and r.startswith("UPID:"):
        ok(admin, nodename, r)
    tconf = api.config.get()
    assert tconf["template"] == 1, tconf
    bases = {key: volname(tconf, key) for key in ("scsi0", "virtio0")}
    assert all(b.startswith("base-800-disk-") for b in bases.values()), tconf
    assert set(vm_lvs(vg, 800)) == set(bases.values())

    # Linked clone: thin snapshots of the base volumes, which start.
    ok(admin, nodename, api.clone.post(newid=801, name="linked"), timeout=180)
    capi = admin.nodes(nodename).qemu(801)
    cconf = capi.config.get()
    for key, base in bases.items():
        lv = volname(cconf, key)
        assert lv.startswith("vm-801-disk-"), cconf
        assert lvs(vg)[lv]["origin"] == base, lvs(vg)
    assert read_block(device(vg, volname(cconf, "virtio0"))) == "before"
    ok(admin, nodename, capi.status.start.post(), timeout=120)
    block = monitor(capi, "info block")
    for key in bases:
        assert f"/dev/{vg}/{volname(cconf, key)}" in block, block
    ok(admin, nodename, capi.status.stop.post())

    # Full clone of the template to plain LVM: copies with the data.
    ok(admin, nodename, api.clone.post(newid=802, name="full", full=1, storage="qmlvm"), timeout=180)
    fconf = admin.nodes(nodename).qemu(802).config.get()
    have = vm_lvs(vg, 802)
    assert fconf["scsi0"] == f"qmlvm:{volname(fconf, 'scsi0')},size=96M", fconf
    assert fconf["virtio0"] == f"qmlvm:{volname(fconf, 'virtio0')},size=80M", fconf
    for key in bases:
        assert have[volname(fconf, key)]["pool"] == "", have
    # It runs on them; stopped, its (plain) LVs are deactivated, as
    # upstream's vm_stop_cleanup does.
    fapi = admin.nodes(nodename).qemu(802)
    ok(admin, nodename, fapi.status.start.post(), timeout=120)
    block = monitor(fapi, "info block")
    for key in bases:
        assert f"/dev/{vg}/{volname(fconf, key)}" in block, block
    ok(admin, nodename, fapi.status.stop.post())
    for key in bases:
        assert lv_active(vg, volname(fconf, key)) is False, key
    assert read_block(device(vg, volname(fconf, "scsi0"))) == "lvm-data"
    assert read_block(device(vg, volname(fconf, "virtio0"))) == "before"

    # Destroy: no LV of any of them left.
    for vmid in (801, 802, 800):
        ok(admin, nodename, admin.nodes(nodename).qemu(vmid).delete(), timeout=120)
    assert not [lv for lv in lvs(vg) if re.search(r"-80[012]-", lv)], lvs(vg)
    assert contents(admin, nodename, "qmlvm") == {} and contents(admin, nodename, "qmthin") == {}


@pytest.fixture(scope="module")
def bridges(qm):
    ns(qm, "ip", "link", "add", VBRIDGE, "type", "bridge", "vlan_filtering", "1")
    ns(qm, "ip", "link", "set", VBRIDGE, "up")
    ns(qm, "ip", "link", "add", CBRIDGE, "type", "bridge")
    ns(qm, "ip", "link", "add", "bond0", "type", "bond")
    ns(qm, "ip", "link", "set", "bond0", "master", CBRIDGE)
    ns(qm, "ip", "link", "set", "bond0", "up")
    ns(qm, "ip", "link", "set", CBRIDGE, "up")
    return qm


def port_vlans(node, ifname: str) -> dict[int, list[str]]:
    """The VLANs of a bridge port: vid -> sorted flags."""
    [port] = json.loads(ns(node, "bridge", "-j", "vlan", "show", "dev", ifname).stdout)
    return {vid: sorted(v.get("flags", [])) for v in port["vlans"]
            for vid in range(v["vlan"], v.get("vlanEnd", v["vlan"]) + 1)}


def test_nic_vlans_and_rate_limit(admin, nodename, bridges):
    """QEMU's bridge hook plugs each tap as upstream's tap_plug: a tag is
    the port's only VLAN (untagged, PVID) on a VLAN-aware bridge, trunks
    are tagged VLANs beside the default PVID 1, a tag on a classic bridge
    puts the tap on its VLAN bridge (over a VLAN device of the uplink);
    `rate` shapes the tap as tap_rate_limit. The taps go with QEMU."""
    api = admin.nodes(nodename).qemu(810)
    ok(admin, nodename, admin.nodes(nodename).qemu.post(
        vmid=810, memory=64, net0=f"virtio,bridge={VBRIDGE},tag=42,rate=0.5",
        net1=f"virtio,bridge={VBRIDGE},trunks=10;20-22", net2=f"e1000,bridge={CBRIDGE},tag=42"))
    ok(admin, nodename, api.status.start.post(), timeout=120)
    assert api.status.current.get()["qmpstatus"] == "running"
    links = {l["ifname"]: l for l in json.loads(ns(bridges, "ip", "-d", "-j", "link", "show").stdout)}
    masters = {name: links.get(name, {}).get("master")
               for name in ("tap810i0", "tap810i1", "tap810i2", "bond0.42")}
    assert masters == {"tap810i0": VBRIDGE, "tap810i1": VBRIDGE, "tap810i2": f"{CBRIDGE}v42",
                       "bond0.42": f"{CBRIDGE}v42"}, masters
    assert links["bond0.42"]["linkinfo"]["info_data"]["id"] == 42
    assert port_vlans(bridges, "tap810i0") == {42: ["Egress Untagged", "PVID"]}
    assert port_vlans(bridges, "tap810i1") == {1: ["Egress Untagged", "PVID"], 10: [], 20: [], 21: [],
                                                22: []}

    # rate=0.5 MB/s = 4194304 bit/s, both ways, with 1 MiB bursts.
    classes = ns(bridges, "tc", "class", "show", "dev", "tap810i0").stdout.splitlines()
    assert len(classes) == 1 and classes[0].startswith("class htb 1:1 root"), classes
    assert "rate 4194Kbit" in classes[0] and "burst 1Mb" in classes[0], classes
    text = ns(bridges, "tc", "filter", "show", "dev", "tap810i0", "parent", "ffff:").stdout
    assert "police" in text and "rate 4194Kbit burst 1Mb" in text, text
    for tap in ("tap810i1", "tap810i2"):
        qdiscs = ns(bridges, "tc", "qdisc", "show", "dev", tap).stdout
        assert "htb" not in qdiscs and "ingress" not in qdiscs, qdiscs

    ok(admin, nodename, api.status.stop.post())
    for tap in ("tap810i0", "tap810i1", "tap810i2"):
        assert ns(bridges, "ip", "link", "show", tap, check=False).returncode != 0, tap
    ok(admin, nodename, api.delete())
