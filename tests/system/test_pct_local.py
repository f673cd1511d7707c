"""`pct mount`, `unmount`, `unlock` and `fsck`, and mount-point quotas:
real mounts, real loop devices, real fsck and real LXC, with `pct` run on
the node as upstream's, proxmoxer for the rest."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from proxmoxer.core import ResourceException

from oxvetest import wait_task
from test_lxc import create, lxc, ok, pct, task_log, templates  # noqa: F401 (fixtures)


def rootfs_of(node, vmid) -> Path:
    return node.root / "run/oxve/lxc" / str(vmid) / "rootfs"


def mountinfo() -> list[list[str]]:
    return [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def mounts_below(path: Path) -> list[str]:
    p = str(path.resolve())
    return [f[4] for f in mountinfo() if f[4] == p or f[4].startswith(p + "/")]


def mount_entry(path: Path) -> dict:
    """The top mount at `path`: its options, file system type and source."""
    p = str(path.resolve())
    found = [f for f in mountinfo() if f[4] == p]
    assert found, f"nothing mounted at {p}"
    f = found[-1]
    sep = f.index("-")
    return {"dev": f[2], "fstype": f[sep + 1], "source": f[sep + 2], "options": f[sep + 3]}


def fails(r) -> str:
    assert r.returncode != 0, r.stdout + r.stderr
    return r.stderr.strip()


@pytest.fixture(scope="module")
def ct120(admin, nodename, templates, lxc):  # noqa: F811
    """An unprivileged CT: a raw-image rootfs and a subvolume mount point."""
    st = create(admin, nodename, 120, templates, rootfs="local:1", mp0="local:0,mp=/srv/sub")
    assert st["exitstatus"] == "OK", task_log(admin, nodename, st["upid"])
    return 120


def test_help_texts(lxc):  # noqa: F811
    out = pct(lxc, "fsck", "--help").stdout
    assert "USAGE: pct fsck <vmid>" in out and "--device" in out and "--force" in out
    assert "emergency maintenance" in pct(lxc, "mount", "--help").stdout
    assert "pct unlock <vmid>" in pct(lxc, "help").stdout


def test_mount_shows_files_and_holds_the_lock(admin, nodename, ct120, lxc):  # noqa: F811
    api = admin.nodes(nodename).lxc(ct120)
    rootfs = rootfs_of(lxc, ct120)
    out = pct(lxc, "mount", str(ct120)).stdout
    assert out == f"mounted CT {ct120} in '{rootfs}'\n"
    assert (rootfs / "etc/hostname").read_text().strip() == "ct120"
    assert mount_entry(rootfs)["fstype"] == "ext4"
    assert str((rootfs / "srv/sub").resolve()) in mounts_below(rootfs)
    # Files written now are in the volumes afterwards.
    (rootfs / "srv/sub/marker").write_text("written while mounted\n")
    assert api.config.get()["lock"] == "mounted"
    assert "lock: mounted" in pct(lxc, "config", str(ct120)).stdout
    assert fails(pct(lxc, "mount", str(ct120), check=False)) == "CT is locked (mounted)"
    with pytest.raises(ResourceException) as e:
        api.config.put(memory=256)
    assert "CT is locked (mounted)" in str(e.value)

    pct(lxc, "unmount", str(ct120))
    assert mounts_below(rootfs) == []
    assert "lock" not in api.config.get()
    image = lxc.root / f"var/lib/vz/images/{ct120}/vm-{ct120}-disk-0.raw"
    assert subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout == ""
    err = fails(pct(lxc, "unmount", str(ct120), check=False))
    assert err == "no lock found trying to remove 'mounted' lock"
    # The next mount sees what was written.
    pct(lxc, "mount", str(ct120))
    assert (rootfs / "srv/sub/marker").read_text() == "written while mounted\n"
    pct(lxc, "unmount", str(ct120))
    assert mounts_below(rootfs) == []


def test_start_of_a_mounted_ct_and_unmount_while_running(admin, nodename, ct120, lxc):  # noqa: F811
    api = admin.nodes(nodename).lxc(ct120)
    rootfs = rootfs_of(lxc, ct120)
    pct(lxc, "mount", str(ct120))
    # Upstream lets a CT with the `mounted` lock start (and stop); the start
    # mounts afresh.
    ok(admin, nodename, api.status.start.post())
    assert api.status.current.get()["status"] == "running"
    assert api.config.get()["lock"] == "mounted"
    assert pct(lxc, "exec", str(ct120), "--", "cat", "/srv/sub/marker").stdout == "written while mounted\n"
    assert fails(pct(lxc, "mount", str(ct120), check=False)) == "CT is locked (mounted)"
    # Unmounting a running CT only drops the lock: the mounts are its own.
    pct(lxc, "unmount", str(ct120))
    assert "lock" not in api.config.get()
    assert pct(lxc, "exec", str(ct120), "--", "cat", "/etc/hostname").stdout.strip() == "ct120"
    assert fails(pct(lxc, "mount", str(ct120), check=False)) == f"CT {ct120} is running"
    ok(admin, nodename, api.status.stop.post())
    assert mounts_below(rootfs) == []


def test_unlock_removes_any_lock(admin, nodename, ct120, lxc):  # noqa: F811
    api = admin.nodes(nodename).lxc(ct120)
    pct(lxc, "set", str(ct120), "--lock", "backup")
    assert api.config.get()["lock"] == "backup"
    assert fails(pct(lxc, "mount", str(ct120), check=False)) == "CT is locked (backup)"
    err = fails(pct(lxc, "unmount", str(ct120), check=False))
    assert err == "found lock 'backup' trying to remove 'mounted' lock"
    pct(lxc, "unlock", str(ct120))
    assert "lock" not in api.config.get()
    err = fails(pct(lxc, "unlock", str(ct120), check=False))
    assert err == "no lock found trying to remove any lock"


def test_failed_mount_unmounts_and_unlocks(admin, nodename, ct120, lxc):  # noqa: F811
    api = admin.nodes(nodename).lxc(ct120)
    shared = lxc.root / "srv/shared"
    shared.mkdir(parents=True, exist_ok=True)
    # A mount point on a file of the rootfs: the rootfs is mounted first,
    # then this one fails.
    pct(lxc, "set", str(ct120), "--mp1", f"{shared},mp=/etc/hostname")
    err = fails(pct(lxc, "mount", str(ct120), check=False))
    assert "'/etc/hostname'" in err and "Not a directory" in err, err
    assert mounts_below(rootfs_of(lxc, ct120)) == []
    assert "lock" not in api.config.get()
    pct(lxc, "set", str(ct120), "--delete", "mp1")


def test_mount_point_behind_an_absolute_symlink(admin, nodename, ct120, lxc):  # noqa: F811
    """`/srvlink -> /srv` in the CT: the mount lands in the CT's /srv, not
    the host's."""
    api = admin.nodes(nodename).lxc(ct120)
    rootfs = rootfs_of(lxc, ct120)
    pct(lxc, "mount", str(ct120))
    try:
        os.symlink("/srv", rootfs / "srvlink")
    finally:
        pct(lxc, "unmount", str(ct120))
    shared = lxc.root / "srv/shared"
    shared.mkdir(parents=True, exist_ok=True)
    (shared / "hello").write_text("from the host\n")
    pct(lxc, "set", str(ct120), "--mp1", f"{shared},mp=/srvlink/data")
    ok(admin, nodename, api.status.start.post())
    try:
        assert str((rootfs / "srv/data").resolve()) in mounts_below(rootfs)
        out = pct(lxc, "exec", str(ct120), "--", "cat", "/srvlink/data/hello").stdout
        assert out == "from the host\n"
        assert not Path("/srv/data/hello").exists()
    finally:
        ok(admin, nodename, api.status.stop.post())
    pct(lxc, "set", str(ct120), "--delete", "mp1")
    assert mounts_below(rootfs) == []


def test_fsck(admin, nodename, ct120, lxc):  # noqa: F811
    api = admin.nodes(nodename).lxc(ct120)
    image = lxc.root / f"var/lib/vz/images/{ct120}/vm-{ct120}-disk-0.raw"
    r = pct(lxc, "fsck", str(ct120), "--force")
    assert str(image) in r.stdout + r.stderr
    pct(lxc, "fsck", str(ct120), "--device", "rootfs")
    # A subvolume has no file system of its own.
    err = fails(pct(lxc, "fsck", str(ct120), "--device", "mp0", check=False))
    volid = api.config.get()["mp0"].split(",")[0]
    assert err == f"unable to run fsck for '{volid}' (format == subvol)"
    err = fails(pct(lxc, "fsck", str(ct120), "--device", "mp7", check=False))
    assert err == "cannot run command on non-existing mount point mp7"
    assert "enumeration" in fails(pct(lxc, "fsck", str(ct120), "--device", "disk0", check=False))
    # A volume whose file system is destroyed: fsck's failure is one line.
    pct(lxc, "set", str(ct120), "--mp2", "local:1,mp=/mnt/broken")
    broken = lxc.root / "var/lib/vz/images" / str(ct120) / \
        api.config.get()["mp2"].split(",")[0].split("/")[-1]
    with open(broken, "r+b") as f:
        f.write(b"\0" * (2 * 1024 * 1024))
    err = fails(pct(lxc, "fsck", str(ct120), "--device", "mp2", check=False))
    assert err.splitlines()[-1].startswith(f"command 'fsck -a -l {broken}' failed: exit code "), err
    pct(lxc, "set", str(ct120), "--delete", "mp2")
    # Not while it runs.
    ok(admin, nodename, api.status.start.post())
    err = fails(pct(lxc, "fsck", str(ct120), check=False))
    assert err == "cannot run fsck when container is running"
    ok(admin, nodename, api.status.stop.post())


def test_quota_on_a_privileged_ct(admin, nodename, templates, lxc):  # noqa: F811
    shared = lxc.root / "srv/shared"
    shared.mkdir(parents=True, exist_ok=True)
    st = create(admin, nodename, 121, templates, rootfs="local:1", unprivileged=0,
                mp0="local:1,mp=/data,quota=1")
    assert st["exitstatus"] == "OK", task_log(admin, nodename, st["upid"])
    pct(lxc, "set", "121", "--mp1", f"{shared},mp=/shared,quota=1")
    api = admin.nodes(nodename).lxc(121)
    rootfs = rootfs_of(lxc, 121)
    # pct mount mounts with the journaled quota options too, and warns
    # about the bind mount.
    r = pct(lxc, "mount", "121")
    assert "cannot enable quota control for bind mounts" in r.stderr
    assert "usrjquota=aquota.user" in mount_entry(rootfs / "data")["options"]
    pct(lxc, "unmount", "121")

    upid = api.status.start.post()
    ok(admin, nodename, upid)
    assert "cannot enable quota control for bind mounts" in task_log(admin, nodename, upid)
    entry = mount_entry(rootfs / "data")
    for opt in ("usrjquota=aquota.user", "grpjquota=aquota.group", "jqfmt=vfsv0"):
        assert opt in entry["options"], entry
    assert "usrjquota" not in mount_entry(rootfs)["options"]
    # The volume's block device is usable inside (quotacheck reads it).
    dev = entry["source"]
    assert dev.startswith("/dev/loop"), entry
    out = pct(lxc, "exec", "121", "--", "sh", "-c",
              f"ls -l {dev} && dd if={dev} of=/dev/null bs=4096 count=1 2>&1").stdout
    assert out.startswith("b") and "1+0 records in" in out, out
    # Other block devices stay out of reach.
    root_dev = mount_entry(rootfs)["source"]
    r = pct(lxc, "exec", "121", "--", "ls", root_dev, check=False)
    assert r.returncode != 0
    ok(admin, nodename, api.status.stop.post())
    assert mounts_below(rootfs) == []


def test_quota_refused_for_unprivileged(admin, nodename, templates, lxc):  # noqa: F811
    st = create(admin, nodename, 122, templates, rootfs="local:1,quota=1")
    assert st["exitstatus"] == "OK", task_log(admin, nodename, st["upid"])
    st = wait_task(admin, nodename, admin.nodes(nodename).lxc(122).status.start.post())
    assert st["exitstatus"] == "Quotas are not supported by unprivileged containers.", st
    assert mounts_below(rootfs_of(lxc, 122)) == []
