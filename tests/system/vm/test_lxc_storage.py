"""Containers with real LXC on LVM, LVM-thin and NFS storages, driven with
proxmoxer and pct: create from the busybox template, start, exec, snapshot
and rollback (LVM-thin), resize, linked clone of a template (LVM-thin),
destroy. Runs only inside the test host VM (tests/hostvm/storage-tests.sh
starts the services and passes them in OXVE_VM_CT_* variables)."""

from __future__ import annotations

from pathlib import Path

import pytest
from proxmoxer.core import ResourceException

from oxvetest import wait_task
from test_lxc import create, lxc, ok, pct, task_log, templates  # noqa: F401 (fixtures)
from test_storage_plugins import contents, sh, vm_env

MiB = 1 << 20
# rootfs of 0.25 GiB: upstream's `STORAGE:SIZE` takes GiB, fractions too.
SIZE = 256 * MiB


@pytest.fixture(scope="module")
def storages(admin, lxc):  # noqa: F811
    vg, pool = vm_env("OXVE_VM_CT_VG"), vm_env("OXVE_VM_CT_THINPOOL")
    export = vm_env("OXVE_VM_CT_NFS_EXPORT")
    admin.storage.post(storage="ctlvm", type="lvm", vgname=vg, content="rootdir,images")
    admin.storage.post(storage="ctthin", type="lvmthin", vgname=vg, thinpool=pool,
                       content="rootdir,images")
    admin.storage.post(storage="ctnfs", type="nfs", server="127.0.0.1", export=export,
                       content="rootdir,images", options="vers=4.2")
    yield {"vg": vg, "export": Path(export)}
    lxc.stop_containers()
    for s in ("ctlvm", "ctthin", "ctnfs"):
        admin.storage(s).delete()


def lvs(vg: str) -> dict[str, dict]:
    """The VG's logical volumes: name -> size (bytes), pool, origin."""
    out = sh("lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", "|",
             "-o", "lv_name,lv_size,pool_lv,origin", vg)
    rows = [line.strip().split("|") for line in out.splitlines() if line.strip()]
    return {r[0]: {"size": int(r[1]), "pool": r[2], "origin": r[3]} for r in rows}


def lv_active(vg: str, lv: str) -> bool:
    out = sh("lvs", "--noheadings", "-o", "lv_active", f"{vg}/{lv}").strip()
    return out == "active"


def exec_out(node, vmid, script) -> str:
    return pct(node, "exec", str(vmid), "--", "sh", "-c", script).stdout.strip()


def fs_bytes(path: str) -> int:
    """The size of the (unmounted) ext4 file system on a volume."""
    if path.startswith("/dev/") and not Path(path).exists():
        sh("lvchange", "-ay", path.removeprefix("/dev/"))  # inactive after the stop
    fields = dict(line.split(":", 1) for line in sh("tune2fs", "-l", path).splitlines()
                  if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


def snapshot_refused(admin, nodename, vmid) -> str:
    """Asks for a snapshot that the storage cannot take: the refusal's text."""
    api = admin.nodes(nodename).lxc(vmid)
    assert api.feature.get(feature="snapshot")["hasFeature"] in (0, False)
    try:
        upid = api.snapshot.post(snapname="nope")
    except ResourceException as e:
        message = str(e)
    else:
        st = wait_task(admin, nodename, upid)
        assert st["exitstatus"] != "OK", st
        message = st["exitstatus"]
    assert [s["name"] for s in api.snapshot.get()] == ["current"]
    assert "lock" not in api.config.get()
    return message


def backend_size(storages, storage, vmid) -> int:
    """The volume's size as LVM or the NFS server has it."""
    if storage == "ctnfs":
        return (storages["export"] / f"images/{vmid}/vm-{vmid}-disk-0.raw").stat().st_size
    return lvs(storages["vg"])[f"vm-{vmid}-disk-0"]["size"]


@pytest.mark.parametrize("storage,vmid", [("ctlvm", 400), ("ctthin", 410), ("ctnfs", 420)])
def test_container_lifecycle(admin, nodename, templates, lxc, storages, storage, vmid):  # noqa: F811
    api = admin.nodes(nodename).lxc(vmid)
    st = create(admin, nodename, vmid, templates, rootfs=f"{storage}:0.25")
    assert st["exitstatus"] == "OK", task_log(admin, nodename, st["upid"])
    volname = f"{vmid}/vm-{vmid}-disk-0.raw" if storage == "ctnfs" else f"vm-{vmid}-disk-0"
    volid = f"{storage}:{volname}"
    assert api.config.get()["rootfs"] == f"{volid},size=256M"
    assert contents(admin, nodename, storage, vmid=vmid)[volid]["size"] == SIZE
    assert backend_size(storages, storage, vmid) == SIZE
    if storage == "ctthin":
        assert lvs(storages["vg"])[f"vm-{vmid}-disk-0"]["pool"] == vm_env("OXVE_VM_CT_THINPOOL")

    # Start; the rootfs is the volume itself (the LV, or a loop device on
    # the image on the NFS mount), and a file written inside stays there.
    ok(admin, nodename, api.status.start.post())
    assert api.status.current.get()["status"] == "running"
    rootfs = str((lxc.root / f"run/oxve/lxc/{vmid}/rootfs").resolve())
    source = next(line.split()[0] for line in Path("/proc/self/mounts").read_text().splitlines()
                  if line.split()[1] == rootfs)
    path = lxc.cli("pvesm", "path", volid).stdout.strip()
    if storage == "ctnfs":
        assert path == str(lxc.root / f"mnt/pve/ctnfs/images/{volname}")
        assert path in sh("losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE", source)
    else:
        assert Path(source).resolve() == Path(path).resolve(), (source, path)
    assert exec_out(lxc, vmid, "echo before > /root/marker && sync && cat /root/marker") == "before"

    if storage == "ctthin":
        # A thin snapshot of the running CT, then a rollback to it.
        ok(admin, nodename, api.snapshot.post(snapname="s1"))
        assert f"snap_vm-{vmid}-disk-0_s1" in lvs(storages["vg"])
        exec_out(lxc, vmid, "echo after > /root/marker && sync")
        ok(admin, nodename, api.snapshot("s1").rollback.post(start=1), timeout=120)
        assert api.status.current.get()["status"] == "running"
        assert exec_out(lxc, vmid, "cat /root/marker") == "before"
        ok(admin, nodename, api.snapshot("s1").delete())
        assert f"snap_vm-{vmid}-disk-0_s1" not in lvs(storages["vg"])
    else:
        # Plain LVM and raw images on NFS have no snapshots (upstream:
        # "snapshot feature is not available"): refused, nothing changed.
        message = snapshot_refused(admin, nodename, vmid)
        assert "snapshot feature is not available" in message, message
        print(f"\n{storage}: snapshot refused: {message}")

    # Grow the stopped CT's rootfs by 128 MiB: the volume and the ext4
    # file system on it, with the files kept.
    ok(admin, nodename, api.status.stop.post())
    if storage == "ctlvm":
        # A stopped CT's logical volumes go inactive, as upstream's (thin
        # volumes stay active there, as upstream keeps them).
        assert lv_active(storages["vg"], f"vm-{vmid}-disk-0") is False
    assert fs_bytes(path) == SIZE
    ok(admin, nodename, api.resize.put(disk="rootfs", size="+128M"), timeout=120)
    assert api.config.get()["rootfs"] == f"{volid},size=384M"
    assert contents(admin, nodename, storage, vmid=vmid)[volid]["size"] == SIZE + 128 * MiB
    assert backend_size(storages, storage, vmid) == SIZE + 128 * MiB
    assert fs_bytes(path) == SIZE + 128 * MiB
    assert sh("debugfs", "-R", "cat /root/marker", path).strip() == "before"

    # Destroy: no volume left on the storage.
    ok(admin, nodename, api.delete())
    assert contents(admin, nodename, storage, vmid=vmid) == {}
    if storage == "ctnfs":
        assert not list((storages["export"] / "images").glob(f"{vmid}/*"))
    else:
        assert not [lv for lv in lvs(storages["vg"]) if f"-{vmid}-" in lv]
    assert vmid not in [c["vmid"] for c in admin.nodes(nodename).lxc.get()]


def test_linked_clone_of_a_template_on_lvmthin(admin, nodename, templates, lxc, storages):  # noqa: F811
    """A template's rootfs becomes a base volume; a linked clone is a thin
    snapshot of it that boots with the template's files."""
    vg, base, clone = storages["vg"], 430, 431
    api = admin.nodes(nodename).lxc(base)
    st = create(admin, nodename, base, templates, rootfs="ctthin:0.25")
    assert st["exitstatus"] == "OK", task_log(admin, nodename, st["upid"])
    ok(admin, nodename, api.status.start.post())
    exec_out(lxc, base, "echo from-template > /root/marker && sync")
    ok(admin, nodename, api.status.stop.post())

    r = api.template.post()
    if isinstance(r, str) and r.startswith("UPID:"):
        ok(admin, nodename, r)
    conf = api.config.get()
    assert conf["template"] == 1
    assert conf["rootfs"].startswith(f"ctthin:base-{base}-disk-0,"), conf["rootfs"]
    assert f"base-{base}-disk-0" in lvs(vg) and f"vm-{base}-disk-0" not in lvs(vg)

    ok(admin, nodename, api.clone.post(newid=clone, hostname="linked"), timeout=120)
    # As upstream, the clone is a thin snapshot of the base volume, under a
    # name of its own.
    cconf = admin.nodes(nodename).lxc(clone).config.get()
    assert cconf["rootfs"] == f"ctthin:vm-{clone}-disk-0,size=256M", cconf["rootfs"]
    assert lvs(vg)[f"vm-{clone}-disk-0"]["origin"] == f"base-{base}-disk-0"
    assert f"ctthin:vm-{clone}-disk-0" in contents(admin, nodename, "ctthin", vmid=clone)

    # Thin snapshots do not depend on their origin: upstream lets the
    # template go while the clone stays, and the clone keeps its files.
    ok(admin, nodename, api.delete())
    assert not [lv for lv in lvs(vg) if f"-{base}-" in lv]
    capi = admin.nodes(nodename).lxc(clone)
    ok(admin, nodename, capi.status.start.post())
    assert exec_out(lxc, clone, "cat /root/marker") == "from-template"
    assert exec_out(lxc, clone, "hostname") == "linked"
    ok(admin, nodename, capi.status.stop.post())
    ok(admin, nodename, capi.delete())
    assert not [lv for lv in lvs(vg) if f"-{clone}-" in lv]
    assert contents(admin, nodename, "ctthin") == {}
