"""Backup pruning, volume copy and volume export/import, driven as users do:
proxmoxer for the API, `pvesm` and `pvesh` for the CLI. Backups are real
files with upstream's names and times in the `local` storage's `dump/`
directory; copies and streams move real data between two dir storages and
are checked by checksum."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from proxmoxer.core import ResourceException

from oxvetest import need, wait_task

STAMP = "%Y_%m_%d-%H_%M_%S"


def local_ctime(stamp: str) -> int:
    """The epoch time of a backup name's time stamp (local time, as upstream's timelocal)."""
    return int(time.mktime(time.strptime(stamp, STAMP)))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def storage_path(admin, storage: str) -> Path:
    return Path(admin.storage(storage).get()["path"])


@pytest.fixture(scope="module")
def dump(admin, nodename) -> Path:
    admin.nodes(nodename).storage("local").status.get()  # activates: creates dump/
    d = storage_path(admin, "local") / "dump"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def other(node, admin):
    """A second dir storage for copies and imports."""
    path = node.root / "srv" / "other"
    admin.storage.post(storage="other", type="dir", path=str(path), content="iso,images,backup")
    yield path
    try:
        admin.storage("other").delete()
    except ResourceException:
        pass


# Backups of qemu guest 100 and lxc guest 101 (name time stamps, local time).
QEMU = ["2024_03_01-10_00_00", "2024_03_02-10_00_00", "2024_03_02-18_00_00",
        "2024_03_03-10_00_00", "2024_03_04-10_00_00"]
LXC = ["2024_03_01-09_00_00", "2024_03_04-09_00_00"]
RENAMED = "vzdump-qemu-100-by-hand.vma.zst"


def qemu_name(stamp: str) -> str:
    return f"vzdump-qemu-100-{stamp}.vma.zst"


def lxc_name(stamp: str) -> str:
    return f"vzdump-lxc-101-{stamp}.tar.zst"


def make_backup(dump: Path, name: str, stamp: str | None) -> None:
    p = dump / name
    p.write_bytes(os.urandom(1024))
    t = local_ctime(stamp) if stamp else time.time() - 86400
    os.utime(p, (t, t))
    if stamp:
        base = name.split(".")[0]
        (dump / f"{base}.log").write_text(f"log of {name}\n")
        (dump / f"{name}.notes").write_text(f"notes of {name}\n")


@pytest.fixture
def backups(dump, admin, nodename):
    for f in dump.iterdir():
        f.unlink()
    for s in QEMU:
        make_backup(dump, qemu_name(s), s)
    for s in LXC:
        make_backup(dump, lxc_name(s), s)
    make_backup(dump, RENAMED, None)
    protected = f"local:backup/{qemu_name(QEMU[3])}"
    admin.nodes(nodename).storage("local").content(protected).put(protected=1)
    assert (dump / f"{qemu_name(QEMU[3])}.protected").exists()
    yield dump
    for f in dump.iterdir():
        f.unlink()


# With keep-daily=2, newest first: qemu 03-04 keep, 03-03 protected (covers
# nothing), 03-02 18:00 keep, 03-02 10:00 remove (day taken), 03-01 remove.
EXPECTED = {
    qemu_name(QEMU[0]): ("remove", "qemu", 100, local_ctime(QEMU[0])),
    qemu_name(QEMU[1]): ("remove", "qemu", 100, local_ctime(QEMU[1])),
    qemu_name(QEMU[2]): ("keep", "qemu", 100, local_ctime(QEMU[2])),
    qemu_name(QEMU[3]): ("protected", "qemu", 100, local_ctime(QEMU[3])),
    qemu_name(QEMU[4]): ("keep", "qemu", 100, local_ctime(QEMU[4])),
    lxc_name(LXC[0]): ("keep", "lxc", 101, local_ctime(LXC[0])),
    lxc_name(LXC[1]): ("keep", "lxc", 101, local_ctime(LXC[1])),
}


def by_name(rows):
    return {r["volid"].split("/", 1)[1]: r for r in rows}


def test_dry_run_marks_per_guest(backups, admin, nodename):
    st = admin.nodes(nodename).storage("local")
    rows = by_name(st.prunebackups.get(**{"prune-backups": "keep-daily=2"}))
    assert set(rows) == set(EXPECTED) | {RENAMED}
    for name, (mark, kind, vmid, ctime) in EXPECTED.items():
        r = rows[name]
        assert (r["mark"], r["type"], r["vmid"], r["ctime"]) == (mark, kind, vmid, ctime), r
    assert rows[RENAMED]["mark"] == "renamed" and rows[RENAMED]["type"] == "qemu"
    # Filters: one guest type, one guest.
    lxc = st.prunebackups.get(**{"prune-backups": "keep-last=1", "type": "lxc"})
    assert {r["volid"].split("/", 1)[1]: r["mark"] for r in lxc} == {
        lxc_name(LXC[1]): "keep", lxc_name(LXC[0]): "remove"}
    only = st.prunebackups.get(**{"prune-backups": "keep-all=1", "vmid": 101})
    assert {r["vmid"] for r in only} == {101} and {r["mark"] for r in only} == {"keep"}
    # A dry run removes nothing.
    assert all((backups / n).exists() for n in EXPECTED)


def test_storage_setting_applies_unless_overridden(backups, admin, nodename):
    st = admin.nodes(nodename).storage("local")
    with pytest.raises(ResourceException) as e:
        st.prunebackups.get()
    assert "no prune-backups options configured for storage 'local'" in str(e.value)
    admin.storage("local").put(**{"prune-backups": "keep-last=1"})
    try:
        rows = by_name(st.prunebackups.get())
        assert rows[qemu_name(QEMU[4])]["mark"] == "keep"
        assert rows[qemu_name(QEMU[2])]["mark"] == "remove"
        rows = by_name(st.prunebackups.get(**{"prune-backups": "keep-all=1"}))
        assert rows[qemu_name(QEMU[2])]["mark"] == "keep"
    finally:
        admin.storage("local").put(delete="prune-backups")


def test_pvesm_dry_run_table(backups, node):
    out = node.cli("pvesm", "prune-backups", "local", "--dry-run", "--keep-daily", "2").stdout
    lines = out.splitlines()
    assert lines[0].startswith("NOTE: this is only a preview")
    header = lines[3].split()
    assert header == ["Backup", "Backup-ID", "Prune-Mark"], lines[3]
    rows = {l.split()[0]: l.split()[1:] for l in lines[4:]}
    for name, (mark, kind, vmid, _) in EXPECTED.items():
        assert rows[f"local:backup/{name}"] == [f"{kind}/{vmid}", mark]
    assert rows[f"local:backup/{RENAMED}"] == ["qemu/100", "renamed"]
    # Sorted by guest, then time.
    order = [l.split()[0] for l in lines[4:]]
    assert order.index(f"local:backup/{qemu_name(QEMU[0])}") < order.index(f"local:backup/{qemu_name(QEMU[4])}")
    assert order.index(f"local:backup/{qemu_name(QEMU[4])}") < order.index(f"local:backup/{lxc_name(LXC[0])}")
    assert all((backups / n).exists() for n in EXPECTED)


def test_prune_removes_marked_with_log_and_notes(backups, admin, nodename, node):
    st = admin.nodes(nodename).storage("local")
    before = {p.name for p in backups.iterdir()}
    upid = st.prunebackups.delete(**{"prune-backups": "keep-daily=2"})
    assert ":prunebackups:local:" in upid
    status = wait_task(admin, nodename, upid)
    assert status["exitstatus"] == "OK", status
    log = [l["t"] for l in admin.nodes(nodename).tasks(upid).log.get()]
    removed = [n for n, v in EXPECTED.items() if v[0] == "remove"]
    for n in removed:
        assert f"removing backup 'local:backup/{n}'" in log, log
    gone = set()
    for n in removed:
        gone |= {n, f"{n}.notes", f"{n.split('.')[0]}.log"}
    assert {p.name for p in backups.iterdir()} == before - gone
    kept = by_name(st.content.get(content="backup"))
    assert set(kept) == set(EXPECTED) - set(removed) | {RENAMED}
    prot = qemu_name(QEMU[3])
    assert kept[prot].get("protected") == 1 and kept[prot]["notes"] == f"notes of {prot}"

    # Through the CLI, for one guest: the task's log is printed.
    r = node.cli("pvesm", "prune-backups", "local", "--keep-last", "1", "--vmid", "101")
    assert f"removing backup 'local:backup/{lxc_name(LXC[0])}'" in r.stdout
    assert not (backups / lxc_name(LXC[0])).exists() and (backups / lxc_name(LXC[1])).exists()
    # The protected backup survives even a keep-last=1.
    node.cli("pvesm", "prune-backups", "local", "--keep-last", "1", "--type", "qemu")
    assert (backups / prot).exists() and (backups / f"{prot}.notes").exists()
    assert not (backups / qemu_name(QEMU[2])).exists() and (backups / qemu_name(QEMU[4])).exists()
    assert (backups / RENAMED).exists()


@pytest.mark.parametrize("bad", ["keep-last=-1", "keep-all=1,keep-last=2", "keep-often=3", "keep-daily=x"])
def test_bad_prune_string_is_400(backups, admin, nodename, bad):
    st = admin.nodes(nodename).storage("local")
    for call in (st.prunebackups.get, st.prunebackups.delete):
        with pytest.raises(ResourceException) as e:
            call(**{"prune-backups": bad})
        assert e.value.status_code == 400 and "prune-backups" in e.value.errors, (bad, e.value)
    with pytest.raises(ResourceException) as e:
        st.prunebackups.get(**{"prune-backups": "keep-last=1", "type": "openvz"})
    assert e.value.status_code == 400 and "type" in e.value.errors
    assert all((backups / n).exists() for n in EXPECTED)


def test_prune_permissions(backups, node, nodename):
    node.add_user("pruneaudit@pve", "audit-secret-1", role="PVEAuditor", path="/storage/local")
    audit = node.proxmox("pruneaudit@pve", "audit-secret-1")
    st = audit.nodes(nodename).storage("local")
    assert len(st.prunebackups.get(**{"prune-backups": "keep-last=1"})) == len(EXPECTED) + 1
    with pytest.raises(ResourceException) as e:
        st.prunebackups.delete(**{"prune-backups": "keep-last=1"})
    assert e.value.status_code == 403

    # Datastore.AllocateSpace on the storage plus VM.Backup on the guest:
    # enough for that guest's backups, not for the whole storage.
    node.add_user("prunevm@pve", "vm-secret-1", role="PVEDatastoreUser", path="/storage/local")
    node.cli("pveum", "acl", "modify", "/vms/101", "--users", "prunevm@pve", "--roles", "PVEVMUser")
    vm = node.proxmox("prunevm@pve", "vm-secret-1").nodes(nodename).storage("local")
    with pytest.raises(ResourceException) as e:
        vm.prunebackups.delete(**{"prune-backups": "keep-last=1"})
    assert e.value.status_code == 403
    with pytest.raises(ResourceException) as e:
        vm.prunebackups.delete(**{"prune-backups": "keep-last=1", "vmid": 100})
    assert e.value.status_code == 403
    upid = vm.prunebackups.delete(**{"prune-backups": "keep-last=1", "vmid": 101})
    assert ":prunebackups:101@local:" in upid
    assert wait_task(node.admin, nodename, upid)["exitstatus"] == "OK"
    assert not (backups / lxc_name(LXC[0])).exists()
    assert all((backups / qemu_name(s)).exists() for s in QEMU)


# ---- copy ----


def pvesh_copy(node, nodename, volid, target, *extra, check=True):
    storage = volid.split(":")[0]
    r = node.cli("pvesh", "create", f"/nodes/{nodename}/storage/{storage}/content/{volid}",
                 "--target", target, *extra, check=check)
    return r


def wait_cli_task(node, admin, nodename, r) -> dict:
    upid = r.stdout.strip().splitlines()[-1]
    assert upid.startswith("UPID:"), r.stdout
    return wait_task(admin, nodename, upid)


def test_copy_iso_and_images_between_dir_storages(admin, nodename, node, other, tmp_path):
    local = admin.nodes(nodename).storage("local")
    data = os.urandom(512 * 1024 + 3)
    iso = tmp_path / "copyme.iso"
    iso.write_bytes(data)
    with iso.open("rb") as f:
        assert wait_task(admin, nodename, local.upload.post(content="iso", filename=f))["exitstatus"] == "OK"

    # Copy has no permission rule upstream: root only.
    with pytest.raises(ResourceException) as e:
        local.content("local:iso/copyme.iso").post(target="other:iso/copyme.iso")
    assert e.value.status_code == 403

    st = wait_cli_task(node, admin, nodename, pvesh_copy(node, nodename, "local:iso/copyme.iso", "other:iso/copyme.iso"))
    assert st["exitstatus"] == "OK", st
    assert (other / "template/iso/copyme.iso").read_bytes() == data
    # Again onto the existing copy: the task fails, the copy stays.
    st = wait_cli_task(node, admin, nodename, pvesh_copy(node, nodename, "local:iso/copyme.iso", "other:iso/copyme.iso"))
    assert st["exitstatus"] != "OK" and "already exists" in st["exitstatus"], st
    assert (other / "template/iso/copyme.iso").read_bytes() == data
    assert not [p for p in (other / "template/iso").iterdir() if p.name.startswith(".")]

    images = {}
    for fmt in ("raw", "qcow2"):
        volid = local.content.post(vmid=100, filename=f"vm-100-disk-7.{fmt}", size="2M", format=fmt)
        path = Path(local.content(volid).get()["path"])
        if fmt == "raw":
            with path.open("r+b") as f:
                f.write(os.urandom(256 * 1024))
        else:
            need(shutil.which("qemu-io") is not None, "qemu-io (qemu-utils) is needed to write into qcow2")
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 64k 128k", str(path)],
                           check=True, capture_output=True)
        images[fmt] = (volid, path)
        target = f"other:100/vm-100-disk-7.{fmt}"
        st = wait_cli_task(node, admin, nodename, pvesh_copy(node, nodename, volid, target))
        assert st["exitstatus"] == "OK", st
        copy = other / f"images/100/vm-100-disk-7.{fmt}"
        assert sha256(copy) == sha256(path)
        listed = {v["volid"]: v for v in admin.nodes(nodename).storage("other").content.get(content="images")}
        assert listed[target]["format"] == fmt and listed[target]["size"] == 2 * 1024 * 1024
    # A name relative to the same storage works too.
    volid, path = images["qcow2"]
    st = wait_cli_task(node, admin, nodename, pvesh_copy(node, nodename, volid, "100/vm-100-disk-8.qcow2"))
    assert st["exitstatus"] == "OK", st
    assert sha256(path.parent / "vm-100-disk-8.qcow2") == sha256(path)
    # A qcow2 image cannot become a raw file by its name: nothing is left behind.
    st = wait_cli_task(node, admin, nodename, pvesh_copy(node, nodename, volid, "other:100/vm-100-disk-9.raw"))
    assert st["exitstatus"] != "OK"
    assert not (other / "images/100/vm-100-disk-9.raw").exists()


def test_copy_refusals(node, nodename, admin):
    r = pvesh_copy(node, nodename, "local:iso/x.iso", "local:iso/y.iso", "--target_node", "elsewhere", check=False)
    assert r.returncode != 0 and "not supported" in r.stderr and "elsewhere" in r.stderr
    r = node.cli("pvesh", "create", f"/nodes/{nodename}/storage/local/content/other:iso/x.iso",
                 "--target", "local:iso/y.iso", check=False)
    assert r.returncode != 0 and "storage ID mismatch" in r.stderr
    r = pvesh_copy(node, nodename, "local:iso/x.iso", "local:iso/x.iso", check=False)
    assert r.returncode != 0 and "target" in r.stderr


# ---- export / import ----


def pipe(node, left: list[str], right: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OXVE_ROOT=str(node.root))
    b = str(node.binary)
    cmd = " ".join([b, *left]) + " | " + " ".join([b, *right])
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=env, capture_output=True, timeout=120)


def test_export_import_round_trip(admin, nodename, node, other, tmp_path):
    local = admin.nodes(nodename).storage("local")
    volid = local.content.post(vmid=100, filename="vm-100-disk-20.raw", size="3M")
    src = Path(local.content(volid).get()["path"])
    with src.open("r+b") as f:
        f.write(os.urandom(3 * 1024 * 1024))

    r = pipe(node, ["pvesm", "export", volid, "raw+size", "-"],
             ["pvesm", "import", "other:100/vm-100-disk-20.raw", "raw+size", "-"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "successfully imported 'other:100/vm-100-disk-20.raw'"
    dst = other / "images/100/vm-100-disk-20.raw"
    assert sha256(dst) == sha256(src)

    # The name is taken: refused without --allow-rename, renamed with it.
    r = pipe(node, ["pvesm", "export", volid, "raw+size", "-"],
             ["pvesm", "import", "other:100/vm-100-disk-20.raw", "raw+size", "-"])
    assert r.returncode != 0 and b"already exists" in r.stderr
    assert sha256(dst) == sha256(src)
    r = pipe(node, ["pvesm", "export", volid, "raw+size", "-"],
             ["pvesm", "import", "other:100/vm-100-disk-20.raw", "raw+size", "-", "--allow-rename", "1"])
    assert r.returncode == 0, r.stderr
    new = re.fullmatch(r"successfully imported '(other:100/vm-100-disk-\d+\.raw)'", r.stdout.decode().strip())
    assert new and new.group(1) != "other:100/vm-100-disk-20.raw", r.stdout
    assert sha256(other / "images" / new.group(1).split(":")[1]) == sha256(src)

    # Through a file, in qcow2+size.
    qvol = local.content.post(vmid=100, filename="vm-100-disk-21.qcow2", size="1M", format="qcow2")
    qsrc = Path(local.content(qvol).get()["path"])
    stream = tmp_path / "disk.stream"
    node.cli("pvesm", "export", qvol, "qcow2+size", str(stream))
    assert stream.stat().st_size == qsrc.stat().st_size + 8
    out = node.cli("pvesm", "import", "other:100/vm-100-disk-21.qcow2", "qcow2+size", str(stream)).stdout
    assert "successfully imported 'other:100/vm-100-disk-21.qcow2'" in out
    assert sha256(other / "images/100/vm-100-disk-21.qcow2") == sha256(qsrc)


def test_export_import_refusals(admin, nodename, node, other, tmp_path):
    local = admin.nodes(nodename).storage("local")
    volid = local.content.post(vmid=100, filename="vm-100-disk-30.raw", size="1M")
    out = tmp_path / "wrong.stream"
    r = node.cli("pvesm", "export", volid, "qcow2+size", str(out), check=False)
    assert r.returncode != 0 and "raw+size" in r.stderr
    assert not out.exists(), "a failed export leaves no file"
    r = node.cli("pvesm", "export", volid, "raw+size", str(out), "--base", "snap1", check=False)
    assert r.returncode != 0 and "--base" in r.stderr
    r = node.cli("pvesm", "export", volid, "nosuch", "-", check=False)
    assert r.returncode == 2 and "enumeration" in r.stderr
    # A stream cut short leaves no half-imported image.
    node.cli("pvesm", "export", volid, "raw+size", str(out))
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    r = node.cli("pvesm", "import", "other:100/vm-100-disk-30.raw", "raw+size", str(out), check=False)
    assert r.returncode != 0
    assert not (other / "images/100/vm-100-disk-30.raw").exists()
    # Content the storage does not allow.
    r = node.cli("pvesm", "import", "nosuchstore:100/vm-100-disk-30.raw", "raw+size", str(out), check=False)
    assert r.returncode != 0 and "nosuchstore" in r.stderr


@pytest.fixture(scope="module")
def btrfs_store(node, admin):
    """A btrfs storage on a loop-mounted image inside the node's root."""
    need(os.geteuid() == 0, "a btrfs storage needs root (loop mount)")
    need(shutil.which("mkfs.btrfs") is not None and shutil.which("btrfs") is not None,
         "btrfs-progs (mkfs.btrfs, btrfs) is not installed")
    image = node.root / "btrfs.img"
    mnt = node.root / "srv" / "btrfs"
    mnt.mkdir(parents=True)
    with image.open("wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
    r = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True)
    need(r.returncode == 0, f"cannot loop-mount a btrfs image: {r.stderr.strip()}")
    try:
        admin.storage.post(storage="bt", type="btrfs", path=str(mnt), content="images")
        yield mnt
    finally:
        try:
            admin.storage("bt").delete()
        except ResourceException:
            pass
        subprocess.run(["umount", str(mnt)], check=False)


def test_export_import_with_btrfs(admin, nodename, node, btrfs_store):
    local = admin.nodes(nodename).storage("local")
    bt = admin.nodes(nodename).storage("bt")
    volid = local.content.post(vmid=100, filename="vm-100-disk-40.raw", size="2M")
    src = Path(local.content(volid).get()["path"])
    with src.open("r+b") as f:
        f.write(os.urandom(2 * 1024 * 1024))
    # dir -> btrfs as raw+size.
    r = pipe(node, ["pvesm", "export", volid, "raw+size", "-"],
             ["pvesm", "import", "bt:100/vm-100-disk-40.raw", "raw+size", "-"])
    assert r.returncode == 0, r.stderr
    first = Path(bt.content("bt:100/vm-100-disk-40.raw").get()["path"])
    assert sha256(first) == sha256(src)
    # btrfs -> btrfs as a btrfs send stream.
    r = pipe(node, ["pvesm", "export", "bt:100/vm-100-disk-40.raw", "btrfs", "-"],
             ["pvesm", "import", "bt:100/vm-100-disk-41.raw", "btrfs", "-"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "successfully imported 'bt:100/vm-100-disk-41.raw'"
    second = Path(bt.content("bt:100/vm-100-disk-41.raw").get()["path"])
    assert sha256(second) == sha256(src)
    # The copy API picks the common format on its own (raw+size from dir).
    r = pvesh_copy(node, nodename, volid, "bt:100/vm-100-disk-42.raw")
    assert wait_cli_task(node, admin, nodename, r)["exitstatus"] == "OK"
    assert sha256(Path(bt.content("bt:100/vm-100-disk-42.raw").get()["path"])) == sha256(src)
    # qcow2 has no way into btrfs: the copy fails cleanly.
    qvol = local.content.post(vmid=100, filename="vm-100-disk-43.qcow2", size="1M", format="qcow2")
    r = pvesh_copy(node, nodename, qvol, "bt:100/vm-100-disk-43.raw")
    st = wait_cli_task(node, admin, nodename, r)
    assert st["exitstatus"] != "OK" and "no common stream format" in st["exitstatus"], st
    assert "bt:100/vm-100-disk-43.raw" not in [v["volid"] for v in bt.content.get()]


def test_max_protected_backups_per_guest(admin, nodename, dump, node):
    """`max-protected-backups` limits protected backups per guest; the
    default is 5 for users without Datastore.Allocate, unlimited for others."""
    names = [f"vzdump-qemu-310-2026_01_0{d}-10_00_00.vma.zst" for d in range(1, 8)]
    for n, name in enumerate(names):
        make_backup(dump, name, f"2026_01_0{n + 1}-10_00_00")
    content = admin.nodes(nodename).storage("local").content
    try:
        admin.storage("local").put(**{"max-protected-backups": 1})
        content(f"local:backup/{names[0]}").put(protected=1)
        with pytest.raises(ResourceException, match="limited to 1"):
            content(f"local:backup/{names[1]}").put(protected=1)
        assert not (dump / f"{names[1]}.protected").exists()
        content(f"local:backup/{names[0]}").put(protected=1)  # already protected: fine
        admin.storage("local").put(delete="max-protected-backups")

        # Without the option: no limit for admin, 5 for a backup operator.
        node.add_user("bkp@pve", "bkp-pass-123", role="PVEDatastoreUser", path="/storage/local")
        node.cli("pveum", "acl", "modify", "/vms/310", "--users", "bkp@pve", "--roles", "PVEVMAdmin")
        user = node.proxmox("bkp@pve", "bkp-pass-123").nodes(nodename).storage("local").content
        for name in names[1:5]:
            user(f"local:backup/{name}").put(protected=1)
        with pytest.raises(ResourceException, match="limited to 5"):
            user(f"local:backup/{names[5]}").put(protected=1)
        content(f"local:backup/{names[5]}").put(protected=1)  # admin: unlimited
    finally:
        for name in names:
            content(f"local:backup/{name}").put(protected=0)
            content(f"local:backup/{name}").delete()
