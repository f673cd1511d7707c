"""LVM, LVM-thin, NFS, CIFS and iSCSI storages through the API and pvesm, as
a proxmoxer user drives them, against real services. Runs only inside the
test host VM (tests/hostvm/storage-tests.sh starts the services and passes
them in OXVE_VM_* variables); this host lacks device-mapper and the network
file system clients."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from proxmoxer.core import ResourceException

from oxvetest import need, wait_task

MiB = 1 << 20


def vm_env(name: str) -> str:
    value = os.environ.get(name)
    need(bool(value), f"{name} is not set: run through tests/hostvm/storage-tests.sh")
    return value


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def contents(admin, nodename, storage, **kw) -> dict[str, dict]:
    return {c["volid"]: c for c in admin.nodes(nodename).storage(storage).content.get(**kw)}


def delete_volume(admin, nodename, storage, volid):
    upid = admin.nodes(nodename).storage(storage).content(volid).delete()
    st = wait_task(admin, nodename, upid)
    assert st["exitstatus"] == "OK", st


@pytest.fixture(scope="module")
def pvesm(node):
    def run(*args, check=True):
        return node.cli("pvesm", *args, check=check)
    return run


def test_lvm_storage(admin, nodename, pvesm):
    vg = vm_env("OXVE_VM_VG")
    admin.storage.post(storage="vmlvm", type="lvm", vgname=vg, content="images,rootdir")
    st = admin.nodes(nodename).storage("vmlvm")
    status = st.status.get()
    assert status["active"] == 1 and status["type"] == "lvm"
    assert status["total"] >= 900 * MiB and status["avail"] <= status["total"]

    volid = st.content.post(vmid=100, filename="vm-100-disk-0", size="32M")
    assert volid == "vmlvm:vm-100-disk-0"
    lvs = sh("lvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size", vg)
    assert ("vm-100-disk-0", str(32 * MiB)) in [tuple(l.split()) for l in lvs.splitlines()]
    listed = contents(admin, nodename, "vmlvm", vmid=100)
    assert listed[volid]["size"] == 32 * MiB and listed[volid]["format"] == "raw"
    assert listed[volid]["vmid"] == 100

    path = pvesm("path", volid).stdout.strip()
    assert path == f"/dev/{vg}/vm-100-disk-0"
    assert Path(path).resolve().is_block_device()

    # The same name again is refused, and the first volume is untouched.
    with pytest.raises(ResourceException, match="already exists"):
        st.content.post(vmid=100, filename="vm-100-disk-0", size="8M")
    # Out of space: a clear error and no volume left behind.
    with pytest.raises(ResourceException) as e:
        st.content.post(vmid=100, filename="vm-100-disk-1", size="64G")
    assert "space" in str(e.value) or "extents" in str(e.value)
    assert list(contents(admin, nodename, "vmlvm", vmid=100)) == [volid]

    status_table = pvesm("status", "--storage", "vmlvm").stdout
    assert "vmlvm" in status_table and "lvm" in status_table and "active" in status_table
    assert "vm-100-disk-0" in pvesm("list", "vmlvm").stdout

    delete_volume(admin, nodename, "vmlvm", volid)
    assert "vm-100-disk-0" not in sh("lvs", "--noheadings", "-o", "lv_name", vg)
    admin.storage("vmlvm").delete()


def test_lvmthin_storage(admin, nodename, pvesm):
    vg, pool = vm_env("OXVE_VM_VG"), vm_env("OXVE_VM_THINPOOL")
    pvesm("add", "lvmthin", "vmthin", "--vgname", vg, "--thinpool", pool, "--content", "images,rootdir")
    st = admin.nodes(nodename).storage("vmthin")
    assert st.status.get()["active"] == 1
    # Thin volumes may be larger than the pool.
    volid = st.content.post(vmid=110, filename="vm-110-disk-0", size="2G")
    assert volid == "vmthin:vm-110-disk-0"
    attrs = sh("lvs", "--noheadings", "-o", "lv_name,pool_lv,lv_attr", vg)
    row = next(l.split() for l in attrs.splitlines() if l.split()[0] == "vm-110-disk-0")
    assert row[1] == pool and row[2].startswith("V"), row
    pvesm("alloc", "vmthin", "110", "vm-110-disk-1", "1G")
    assert set(contents(admin, nodename, "vmthin", vmid=110)) == {
        "vmthin:vm-110-disk-0", "vmthin:vm-110-disk-1"}
    pvesm("free", "vmthin:vm-110-disk-1")
    delete_volume(admin, nodename, "vmthin", volid)
    assert contents(admin, nodename, "vmthin", vmid=110) == {}
    # A thin pool that does not exist: the add is refused and not kept.
    with pytest.raises(ResourceException, match="nopool"):
        admin.storage.post(storage="vmthin2", type="lvmthin", vgname=vg, thinpool="nopool",
                           content="images")
    assert "vmthin2" not in [s["storage"] for s in admin.storage.get()]
    pvesm("remove", "vmthin")


def test_nfs_storage(admin, nodename, node, tmp_path):
    server, export = vm_env("OXVE_VM_NFS_SERVER"), vm_env("OXVE_VM_NFS_EXPORT")
    admin.storage.post(storage="vmnfs", type="nfs", server=server, export=export,
                       content="images,iso,backup", options="vers=4.2")
    mnt = node.root / "mnt/pve/vmnfs"
    assert admin.storage("vmnfs").get()["path"] == str(mnt)
    assert mounted(mnt), "adding an NFS storage mounts it"
    st = admin.nodes(nodename).storage("vmnfs")
    assert st.status.get()["active"] == 1

    volid = st.content.post(vmid=120, filename="vm-120-disk-0.qcow2", size="16M")
    assert volid == "vmnfs:120/vm-120-disk-0.qcow2"
    assert Path(export, "images/120/vm-120-disk-0.qcow2").is_file(), "the server holds the image"

    # An ISO uploaded through the API lands on the server.
    iso = tmp_path / "tiny.iso"
    data = os.urandom(3 * MiB)
    iso.write_bytes(data)
    with open(iso, "rb") as f:
        upid = st.upload.post(content="iso", filename=f,
                              checksum=hashlib.sha256(data).hexdigest(),
                              **{"checksum-algorithm": "sha256"})
    assert wait_task(admin, nodename, upid)["exitstatus"] == "OK"
    assert Path(export, "template/iso/tiny.iso").read_bytes() == data
    assert "vmnfs:iso/tiny.iso" in contents(admin, nodename, "vmnfs", content="iso")

    delete_volume(admin, nodename, "vmnfs", volid)
    delete_volume(admin, nodename, "vmnfs", "vmnfs:iso/tiny.iso")
    assert not Path(export, "images/120/vm-120-disk-0.qcow2").exists()
    admin.storage("vmnfs").delete()
    assert not mounted(mnt), "removing an NFS storage unmounts it"


def test_nfs_unreachable_export_is_not_added(admin):
    server = vm_env("OXVE_VM_NFS_SERVER")
    with pytest.raises(ResourceException) as e:
        admin.storage.post(storage="vmnfsbad", type="nfs", server=server, export="/srv/not-exported",
                           content="images")
    assert "not-exported" in str(e.value) or "mount" in str(e.value)
    assert "vmnfsbad" not in [s["storage"] for s in admin.storage.get()]


def test_cifs_storage(admin, nodename, node):
    share, user = vm_env("OXVE_VM_CIFS_SHARE"), vm_env("OXVE_VM_CIFS_USER")
    password, server_dir = vm_env("OXVE_VM_CIFS_PASSWORD"), vm_env("OXVE_VM_CIFS_DIR")

    # A wrong password: refused, nothing kept, the secret shown nowhere.
    with pytest.raises(ResourceException) as e:
        admin.storage.post(storage="vmcifs", type="cifs", server="127.0.0.1", share=share,
                           username=user, password="wrong-pw-42", content="images")
    assert "wrong-pw-42" not in str(e.value)
    assert "vmcifs" not in [s["storage"] for s in admin.storage.get()]

    admin.storage.post(storage="vmcifs", type="cifs", server="127.0.0.1", share=share,
                       username=user, password=password, content="images,snippets")
    mnt = node.root / "mnt/pve/vmcifs"
    assert mounted(mnt)
    cfg = admin.storage("vmcifs").get()
    assert "password" not in cfg and password not in str(cfg)
    storage_cfg = node.cli("pvesh", "get", "/storage", "--output-format", "json").stdout
    assert password not in storage_cfg

    st = admin.nodes(nodename).storage("vmcifs")
    volid = st.content.post(vmid=130, filename="vm-130-disk-0.raw", size="8M")
    assert Path(server_dir, "images/130/vm-130-disk-0.raw").stat().st_size == 8 * MiB
    delete_volume(admin, nodename, "vmcifs", volid)
    admin.storage("vmcifs").delete()
    assert not mounted(mnt)
    log = node.log_tail(400)
    assert password not in log and "wrong-pw-42" not in log


def test_iscsi_storage(admin, nodename, pvesm):
    portal, target = vm_env("OXVE_VM_ISCSI_PORTAL"), vm_env("OXVE_VM_ISCSI_TARGET")
    admin.storage.post(storage="vmiscsi", type="iscsi", portal=portal, target=target, content="images")
    assert target in sh("iscsiadm", "-m", "session")
    st = admin.nodes(nodename).storage("vmiscsi")
    assert st.status.get()["active"] == 1
    luns = []
    for _ in range(50):  # udev makes the by-id link shortly after login
        luns = st.content.get()
        if luns:
            break
        import time
        time.sleep(0.2)
    assert len(luns) == 1, luns
    lun = luns[0]
    assert lun["volid"].startswith("vmiscsi:0.0.1.") and lun["size"] == 64 * MiB
    path = pvesm("path", lun["volid"]).stdout.strip()
    assert path.startswith("/dev/disk/by-id/") and Path(path).resolve().is_block_device()
    # LUNs are the target's: oxve does not allocate on them.
    with pytest.raises(ResourceException):
        st.content.post(vmid=140, filename="vm-140-disk-0", size="1M")
    admin.storage("vmiscsi").delete()
    assert target not in subprocess.run(["iscsiadm", "-m", "session"], capture_output=True,
                                        text=True).stdout, "removing the storage logs out"


def test_scans_find_the_real_services(admin, nodename, node):
    """/nodes/{node}/scan/* and `pvesm scan` against the VM's real servers."""
    vg, pool = vm_env("OXVE_VM_VG"), vm_env("OXVE_VM_THINPOOL")
    export = vm_env("OXVE_VM_NFS_EXPORT")
    share, user = vm_env("OXVE_VM_CIFS_SHARE"), vm_env("OXVE_VM_CIFS_USER")
    password = vm_env("OXVE_VM_CIFS_PASSWORD")
    portal, target = vm_env("OXVE_VM_ISCSI_PORTAL"), vm_env("OXVE_VM_ISCSI_TARGET")
    scan = admin.nodes(nodename).scan

    assert vg in [v["vg"] for v in scan.lvm.get()]
    assert pool in [v["lv"] for v in scan.lvmthin.get(vg=vg)]
    nfs = scan.nfs.get(server="127.0.0.1")
    assert export in [e["path"] for e in nfs], nfs
    shares = scan.cifs.get(server="127.0.0.1", username=user, password=password)
    assert share in [s["share"] for s in shares], shares
    targets = scan.iscsi.get(portal=portal)
    assert target in [t["target"] for t in targets], targets

    assert export in node.cli("pvesm", "scan", "nfs", "127.0.0.1").stdout
    assert vg in node.cli("pvesm", "scan", "lvm").stdout
    assert target in node.cli("pvesm", "scan", "iscsi", portal).stdout
    out = node.cli("pvesm", "scan", "cifs", "127.0.0.1", "--username", user,
                   "--password", password)
    assert share in out.stdout and password not in out.stdout + out.stderr


def test_pvesm_export_import_from_lvm_to_lvmthin(node, pvesm, tmp_path):
    """A volume streamed out of LVM and into LVM-thin keeps its bytes."""
    vg, pool = vm_env("OXVE_VM_VG"), vm_env("OXVE_VM_THINPOOL")
    pvesm("add", "lvm", "xlvm", "--vgname", vg, "--content", "images")
    pvesm("add", "lvmthin", "xthin", "--vgname", vg, "--thinpool", pool, "--content", "images")
    try:
        pvesm("alloc", "xlvm", "150", "vm-150-disk-0", "8M")
        src = pvesm("path", "xlvm:vm-150-disk-0").stdout.strip()
        data = os.urandom(8 * MiB)
        with open(src, "r+b") as f:
            f.write(data)
        stream = tmp_path / "vm-150.raw+size"
        pvesm("export", "xlvm:vm-150-disk-0", "raw+size", str(stream))
        assert stream.stat().st_size == 8 + 8 * MiB
        pvesm("import", "xthin:vm-151-disk-0", "raw+size", str(stream))
        dst = pvesm("path", "xthin:vm-151-disk-0").stdout.strip()
        with open(dst, "rb") as f:
            assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
        # Importing onto an existing volume is refused; the volume keeps its bytes.
        r = pvesm("import", "xthin:vm-151-disk-0", "raw+size", str(stream), check=False)
        assert r.returncode != 0 and "exists" in r.stderr
    finally:
        for v in ("xlvm:vm-150-disk-0", "xthin:vm-151-disk-0"):
            pvesm("free", v, check=False)
        pvesm("remove", "xlvm", check=False)
        pvesm("remove", "xthin", check=False)
