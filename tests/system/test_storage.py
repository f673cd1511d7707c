"""Storage through the API, as proxmoxer users drive it: definitions in
storage.cfg, the default `local`, allocation, content listing, streamed
uploads, download-url from a loopback server, and refusals that leave
nothing behind."""

from __future__ import annotations

import hashlib
import json
import http.server
import lzma
import os
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from proxmoxer.core import ResourceException

from oxvetest import ADMIN, ADMIN_PASSWORD, wait_task


def storage_dir(node, storage="local") -> Path:
    return Path(node.admin.storage(storage).get()["path"])


def hidden_files(d: Path) -> list[str]:
    return [p.name for p in d.rglob(".*")] if d.exists() else []


@pytest.fixture(scope="module")
def extra_dir(node, admin):
    path = node.root / "srv" / "extra"
    admin.storage.post(storage="extra", type="dir", path=str(path), content="iso,images,snippets")
    yield path
    try:
        admin.storage("extra").delete()
    except ResourceException:
        pass


def test_fresh_node_has_local(admin, nodename, node):
    local = admin.storage("local").get()
    assert local["type"] == "dir"
    assert local["path"] == str(node.root / "var/lib/vz")
    assert set(local["content"].split(",")) == {
        "backup", "images", "import", "iso", "rootdir", "snippets", "vztmpl"}
    st = {s["storage"]: s for s in admin.nodes(nodename).storage.get()}
    assert st["local"]["active"] == 1 and st["local"]["enabled"] == 1
    assert st["local"]["total"] > 0 and 0 <= st["local"]["avail"] <= st["local"]["total"]


def test_add_update_remove_dir_storage(admin, node, nodename):
    path = node.root / "srv" / "d1"
    admin.storage.post(storage="d1", type="dir", path=str(path), content="iso,vztmpl")
    assert (path / "template" / "iso").is_dir(), "subdirectories are created on add"
    assert "d1" in [s["storage"] for s in admin.storage.get(type="dir")]
    admin.storage("d1").put(content="iso,backup", disable=1)
    got = admin.storage("d1").get()
    assert got["content"] == "backup,iso" and got["disable"] == 1
    listed = {s["storage"]: s for s in admin.nodes(nodename).storage.get()}
    assert listed["d1"]["enabled"] == 0 and listed["d1"]["active"] == 0
    assert "d1" not in [s["storage"] for s in admin.nodes(nodename).storage.get(enabled=1)]
    with pytest.raises(ResourceException) as e:
        admin.storage("d1").put(path="/elsewhere")
    assert "path" in str(e.value)
    admin.storage("d1").delete()
    assert "d1" not in [s["storage"] for s in admin.storage.get()]


def test_type_options_are_checked(admin):
    with pytest.raises(ResourceException) as e:
        admin.storage.post(storage="bad1", type="dir", path="/tmp/x", thinpool="data")
    assert e.value.status_code == 400 and "thinpool" in e.value.errors
    with pytest.raises(ResourceException) as e:
        admin.storage.post(storage="bad2", type="lvmthin", vgname="pve", thinpool="data", content="iso")
    assert e.value.status_code == 400 and "content" in e.value.errors
    with pytest.raises(ResourceException) as e:
        admin.storage.post(storage="bad3", type="dir")
    assert "path" in e.value.errors
    with pytest.raises(ResourceException) as e:
        admin.storage.post(storage="local", type="dir", path="/tmp/y")
    assert "already defined" in str(e.value)
    assert not {"bad1", "bad2", "bad3"} & {s["storage"] for s in admin.storage.get()}


def test_cifs_password_never_leaves_priv(admin, node):
    # Activation (the mount) fails here, so the add is rolled back - with the secret.
    with pytest.raises(ResourceException):
        admin.storage.post(storage="smb", type="cifs", server="127.0.0.1", share="s",
                           username="u", password="hunter2-secret")
    assert "smb" not in [s["storage"] for s in admin.storage.get()]
    out = node.cli("pvesh", "get", "/storage", "--output-format", "json").stdout
    assert "hunter2-secret" not in out
    assert "hunter2-secret" not in node.log_tail(400)


def test_alloc_list_free_images(admin, nodename, extra_dir):
    st = admin.nodes(nodename).storage("extra")
    volid = st.content.post(vmid=100, filename="vm-100-disk-0.qcow2", size="1M", format="qcow2")
    assert volid == "extra:100/vm-100-disk-0.qcow2"
    raw = st.content.post(vmid=100, filename="vm-100-disk-1.raw", size="2M")
    assert raw == "extra:100/vm-100-disk-1.raw"
    with pytest.raises(ResourceException) as e:
        st.content.post(vmid=100, filename="vm-100-disk-1.raw", size="2M")
    assert "already exists" in str(e.value)
    with pytest.raises(ResourceException) as e:
        st.content.post(vmid=100, filename="vm-101-disk-0.raw", size="2M")
    assert "vm-100-" in str(e.value)
    images = {v["volid"]: v for v in st.content.get(content="images")}
    assert images[volid]["format"] == "qcow2" and images[volid]["size"] == 1024 * 1024
    assert images[raw]["size"] == 2 * 1024 * 1024 and images[raw]["vmid"] == 100
    info = st.content(raw).get()
    assert info["path"] == str(extra_dir / "images/100/vm-100-disk-1.raw")
    assert [v["volid"] for v in st.content.get(vmid=101)] == []
    for v in (volid, raw):
        wait_task(admin, nodename, st.content(v).delete())
    assert st.content.get(content="images") == []


def test_alloc_refused_without_images_content(admin, nodename, node):
    admin.storage.post(storage="isoonly", type="dir", path=str(node.root / "srv/isoonly"), content="iso")
    try:
        with pytest.raises(ResourceException) as e:
            admin.nodes(nodename).storage("isoonly").content.post(vmid=100, filename="vm-100-disk-0.raw", size="1M")
        assert "does not allow content 'images' (allowed: iso)" in str(e.value)
    finally:
        admin.storage("isoonly").delete()


def test_upload_iso_and_snippet(admin, nodename, node, tmp_path, extra_dir):
    data = os.urandom(3 * 1024 * 1024 + 17)
    iso = tmp_path / "tiny.iso"
    iso.write_bytes(data)
    st = admin.nodes(nodename).storage("extra")
    with iso.open("rb") as f:
        upid = st.upload.post(content="iso", filename=f, checksum=hashlib.sha256(data).hexdigest(),
                              **{"checksum-algorithm": "sha256"})
    status = wait_task(admin, nodename, upid)
    assert status["exitstatus"] == "OK", status
    log = "\n".join(l["t"] for l in admin.nodes(nodename).tasks(upid).log.get())
    assert "checksum verified" in log
    assert (extra_dir / "template/iso/tiny.iso").read_bytes() == data
    assert "extra:iso/tiny.iso" in [v["volid"] for v in st.content.get(content="iso")]

    snippet = tmp_path / "user-data.yaml"
    snippet.write_text("#cloud-config\nhostname: t\n")
    with snippet.open("rb") as f:
        upid = st.upload.post(content="snippets", filename=f)
    assert wait_task(admin, nodename, upid)["exitstatus"] == "OK"
    assert (extra_dir / "snippets/user-data.yaml").read_text().startswith("#cloud-config")

    # Uploading the same name again is refused and keeps the original.
    with iso.open("rb") as f:
        with pytest.raises(ResourceException) as e:
            st.upload.post(content="iso", filename=f)
    assert "existing file" in str(e.value)
    wait_task(admin, nodename, st.content("extra:iso/tiny.iso").delete())
    assert not (extra_dir / "template/iso/tiny.iso").exists()


def test_upload_bad_checksum_leaves_nothing(admin, nodename, tmp_path, extra_dir):
    iso = tmp_path / "bad.iso"
    iso.write_bytes(b"x" * 100000)
    st = admin.nodes(nodename).storage("extra")
    with iso.open("rb") as f:
        upid = st.upload.post(content="iso", filename=f, checksum="0" * 64, **{"checksum-algorithm": "sha256"})
    status = wait_task(admin, nodename, upid)
    assert status["exitstatus"].startswith("checksum mismatch"), status
    assert not (extra_dir / "template/iso/bad.iso").exists()
    assert hidden_files(extra_dir) == []


def test_out_of_space_upload_and_alloc_leave_nothing(admin, nodename, tmp_path, node):
    """A full storage fails the upload with the reason and keeps no partial
    file; a preallocated image that does not fit is removed again."""
    tiny = node.root / "srv" / "tiny"
    tiny.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "oxvet-tiny", str(tiny)], check=True)
    try:
        admin.storage.post(storage="tiny", type="dir", path=str(tiny), content="iso,images",
                           preallocation="full")
        st = admin.nodes(nodename).storage("tiny")
        iso = tmp_path / "big.iso"
        iso.write_bytes(os.urandom(8 << 20))
        failed = None
        with iso.open("rb") as f:
            try:
                upid = st.upload.post(content="iso", filename=f)
                failed = wait_task(admin, nodename, upid)["exitstatus"]
            except ResourceException as e:
                failed = str(e)
        assert "No space left" in failed or "space" in failed.lower(), failed
        assert not (tiny / "template/iso/big.iso").exists()
        assert hidden_files(tiny) == []

        with pytest.raises(ResourceException):
            st.content.post(vmid=100, filename="vm-100-disk-0.raw", size="16M")
        assert not (tiny / "images/100/vm-100-disk-0.raw").exists()
        assert st.content.get(vmid=100) == []
        admin.storage("tiny").delete()
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


def test_upload_refuses_bad_names(admin, nodename, tmp_path, extra_dir, node):
    f = tmp_path / "x.txt"
    f.write_bytes(b"hello")
    url = node.url_for(f"/nodes/{nodename}/storage/extra/upload")
    s = node.admin_session()
    for name, content in [("../evil.iso", "iso"), ("x.txt", "iso"), (".hidden.iso", "iso"), ("a/b.iso", "iso")]:
        r = s.post(url, data={"content": content}, files={"filename": (name, b"hello")})
        assert r.status_code == 400, (name, r.status_code, r.text)
    assert hidden_files(extra_dir) == []
    assert not list((extra_dir / "template/iso").glob("*"))


def test_volume_of_other_storage_is_refused(admin, nodename, node):
    with pytest.raises(ResourceException) as e:
        admin.nodes(nodename).storage("local").content("extra:iso/x.iso").get()
    assert e.value.status_code == 400 and "not on storage 'local'" in str(e.value)
    # Encoded, so that no client folds the dot segments away first.
    r = node.admin_session().get(node.url_for(
        f"/nodes/{nodename}/storage/local/content/" + quote("local:iso/../../x.iso", safe="")))
    assert r.status_code == 400, r.text


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    handler = lambda *a, **kw: _Files(*a, directory=str(root), **kw)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_url_with_checksum_and_xz(admin, nodename, http_files, extra_dir):
    root, base = http_files
    data = os.urandom(200000)
    packed = lzma.compress(data)
    (root / "img.iso.xz").write_bytes(packed)
    meta = admin.nodes(nodename)("query-url-metadata").get(url=f"{base}/img.iso.xz")
    assert meta["size"] == len(packed) and meta["filename"] == "img.iso.xz"
    st = admin.nodes(nodename).storage("extra")
    upid = st("download-url").post(url=f"{base}/img.iso.xz", content="iso", filename="img.iso",
                                   compression="xz", checksum=hashlib.sha512(packed).hexdigest(),
                                   **{"checksum-algorithm": "sha512"})
    status = wait_task(admin, nodename, upid)
    assert status["exitstatus"] == "OK", status
    assert (extra_dir / "template/iso/img.iso").read_bytes() == data

    upid = st("download-url").post(url=f"{base}/img.iso.xz", content="iso", filename="wrong.iso",
                                   checksum="ab" * 32, **{"checksum-algorithm": "sha256"})
    status = wait_task(admin, nodename, upid)
    assert "checksum mismatch" in status["exitstatus"]
    assert not (extra_dir / "template/iso/wrong.iso").exists()
    upid = st("download-url").post(url=f"{base}/missing.iso", content="iso", filename="missing.iso")
    assert wait_task(admin, nodename, upid)["exitstatus"] != "OK"
    assert hidden_files(extra_dir) == []


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_large_upload_is_streamed(admin, nodename, node, tmp_path, extra_dir):
    """A 2 GiB upload must not grow the daemon by more than a few MiB."""
    big = tmp_path / "big.iso"
    with big.open("wb") as f:
        f.truncate(2 * 1024 ** 3)
    pid = node.pid
    base = _rss_kib(pid)
    peak = base
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss_kib(pid))
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    t.start()
    ticket, csrf = node.ticket(ADMIN, ADMIN_PASSWORD)
    r = subprocess.run(
        ["curl", "-sk", "--fail-with-body", "-H", f"CSRFPreventionToken: {csrf}",
         "-b", f"PVEAuthCookie={ticket}", "-F", "content=iso", "-F", f"filename=@{big}",
         node.url_for(f"/nodes/{nodename}/storage/extra/upload")],
        capture_output=True, text=True, timeout=900)
    stop.set()
    t.join()
    assert r.returncode == 0, r.stdout + r.stderr
    upid = json.loads(r.stdout)["data"]
    assert wait_task(admin, nodename, upid, timeout=300)["exitstatus"] == "OK"
    target = extra_dir / "template/iso/big.iso"
    assert target.stat().st_size == 2 * 1024 ** 3
    grew_mib = (peak - base) / 1024
    print(f"daemon RSS {base / 1024:.1f} MiB -> peak {peak / 1024:.1f} MiB during a 2 GiB upload")
    assert grew_mib < 16, f"daemon RSS grew by {grew_mib:.1f} MiB during a 2 GiB upload"
    target.unlink()


def test_storage_in_cluster_resources(admin):
    res = {r["id"]: r for r in admin.cluster.resources.get(type="storage")}
    local = next(r for r in res.values() if r["storage"] == "local")
    assert local["type"] == "storage" and local["plugintype"] == "dir"
    assert local["status"] == "available" and local["maxdisk"] > 0


def test_pvesm_end_to_end(node):
    path = node.root / "srv" / "cli"
    node.cli("pvesm", "add", "dir", "clistore", "--path", str(path), "--content", "images,iso")
    status = node.cli("pvesm", "status").stdout.splitlines()
    assert status[0].split() == ["Name", "Type", "Status", "Total", "Used", "Available", "%"]
    row = next(l for l in status if l.startswith("clistore"))
    assert row.split()[1:3] == ["dir", "active"] and row.endswith("%")
    out = node.cli("pvesm", "alloc", "clistore", "100", "vm-100-disk-0.qcow2", "1M", "--format", "qcow2").stdout
    assert "successfully created 'clistore:100/vm-100-disk-0.qcow2'" in out
    listing = node.cli("pvesm", "list", "clistore").stdout.splitlines()
    assert listing[0].split() == ["Volid", "Format", "Type", "Size", "VMID"]
    assert listing[1].split() == ["clistore:100/vm-100-disk-0.qcow2", "qcow2", "images", "1048576", "100"]
    p = node.cli("pvesm", "path", "clistore:100/vm-100-disk-0.qcow2").stdout.strip()
    assert p == str(path / "images/100/vm-100-disk-0.qcow2") and Path(p).is_file()
    node.cli("pvesm", "free", "clistore:100/vm-100-disk-0.qcow2")
    assert not Path(p).exists()
    node.cli("pvesm", "set", "clistore", "--disable", "1")
    assert "disabled" in next(l for l in node.cli("pvesm", "status").stdout.splitlines() if l.startswith("clistore"))
    r = node.cli("pvesm", "alloc", "nosuch", "100", "vm-100-disk-0.raw", "1M", check=False)
    assert r.returncode != 0 and "nosuch" in r.stderr and "\n" not in r.stderr.strip()
    node.cli("pvesm", "remove", "clistore")
    assert "clistore" not in node.cli("pvesm", "status").stdout
