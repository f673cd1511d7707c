"""pveam and /nodes/{node}/aplinfo: an appliance index and real template
tarballs served by a loopback HTTP server started here, the node's sources
pointed at it, then `pveam update/available/download/list/remove` and the
API through proxmoxer. Refusals (bad checksum, bad index, bad signature,
missing privilege) must leave nothing behind."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from proxmoxer.core import ResourceException

from oxvetest import need, wait_task

TEMPLATE = "testos-minimal_1.0-1_amd64.tar.gz"
TKL_TEMPLATE = "debian-12-turnkey-demo_18.0-1_amd64.tar.gz"
MAIL_TEMPLATE = "mailbox-small_2.1-1_amd64.tar.xz"
BROKEN = "broken-sum_1.0-1_amd64.tar.gz"


def template_tarball(name: str) -> bytes:
    """A small container root filesystem as a .tar.gz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        files = {
            "etc/os-release": f'NAME="{name}"\nID=testos\n'.encode(),
            "etc/hostname": b"template\n",
            "bin/hello": b"#!/bin/sh\necho hello\n" + os.urandom(4096).hex().encode(),
        }
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o755 if path.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def record(**fields) -> str:
    """One index record; `Description` goes last with its continuation lines."""
    desc = fields.pop("Description")
    lines = [f"{k}: {v}" for k, v in fields.items()]
    head, *rest = desc.split("\n")
    lines.append(f"Description: {head}")
    lines += [f" {r}" if r else " ." for r in rest]
    return "\n".join(lines) + "\n"


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class AplServer:
    """The web root with two sources: a gzip-compressed system index with
    relative locations, and a plain TurnKey-like one with absolute ones."""

    def __init__(self, root: Path, base: str):
        self.root = root
        self.base = base
        self.blobs: dict[str, bytes] = {}
        (root / "images" / "system").mkdir(parents=True)
        (root / "tkl").mkdir()
        for name, sub in [(TEMPLATE, "images/system"), (BROKEN, "images/system"),
                          (MAIL_TEMPLATE, "images/mail"), (TKL_TEMPLATE, "tkl")]:
            data = template_tarball(name)
            self.blobs[name] = data
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / name).write_bytes(data)
        self.write_indexes()

    @property
    def system_url(self) -> str:
        return f"{self.base}/images/aplinfo-test.dat.gz"

    @property
    def tkl_url(self) -> str:
        return f"{self.base}/tkl/aplinfo.dat"

    def system_index(self) -> str:
        common = dict(Type="lxc", Maintainer="Test Team <test@example.org>", Architecture="amd64")
        return "\n".join([
            record(Package="pve-web-news", Version="1.0", Type="lxc",
                   Description="news\nNothing to see."),
            record(Package="testos-minimal", Version="1.0-1", OS="testos", Section="system",
                   Location=f"system/{TEMPLATE}",
                   md5sum=hashlib.md5(self.blobs[TEMPLATE]).hexdigest(),
                   sha512sum=hashlib.sha512(self.blobs[TEMPLATE]).hexdigest(),
                   Infopage="https://testos.example.org", **common,
                   Description="TestOS minimal\nA tiny root file system\nfor tests.\n\nSecond paragraph."),
            record(Package="mailbox-small", Version="2.1-1", OS="testos", Section="mail",
                   Location=f"mail/{MAIL_TEMPLATE}",
                   sha512sum=hashlib.sha512(self.blobs[MAIL_TEMPLATE]).hexdigest(),
                   Infopage="https://mail.example.org", **common,
                   Description="Mailbox\nA small mail server."),
            record(Package="broken-sum", Version="1.0-1", OS="testos", Section="system",
                   Location=f"system/{BROKEN}", sha512sum="ab" * 64,
                   Infopage="https://broken.example.org", **common,
                   Description="Broken\nIts checksum does not match."),
        ])

    def tkl_index(self) -> str:
        return record(
            Package="turnkey-demo", Version="18.0-1", Type="lxc", OS="debian-12",
            Section="turnkeylinux", Architecture="amd64", Certified="yes",
            Location=f"{self.base}/tkl/{TKL_TEMPLATE}", Infopage="https://www.example.org/demo",
            ManageUrl="https://__IPADDRESS__/",
            sha512sum=hashlib.sha512(self.blobs[TKL_TEMPLATE]).hexdigest(),
            Description="TurnKey Demo\nA demo appliance.",
        )

    def write_indexes(self, system: str | None = None) -> None:
        text = system if system is not None else self.system_index()
        (self.root / "images" / "aplinfo-test.dat").write_text(text)
        (self.root / "images" / "aplinfo-test.dat.gz").write_bytes(gzip.compress(text.encode()))
        (self.root / "tkl" / "aplinfo.dat").write_text(self.tkl_index())


@pytest.fixture(scope="module")
def apl(tmp_path_factory, node):
    root = tmp_path_factory.mktemp("apl-www")
    handler = lambda *a, **kw: _Files(*a, directory=str(root), **kw)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    server = AplServer(root, f"http://127.0.0.1:{srv.server_address[1]}")
    set_sources(node, f"{server.system_url}\n{server.tkl_url}\n")
    yield server
    srv.shutdown()


def set_sources(node, text: str) -> None:
    path = node.root / "etc/oxve/aplinfo-sources"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by test_pveam.py\n" + text)


def index_dir(node) -> Path:
    return node.root / "var/lib/oxve/apl-info"


def cache_dir(node) -> Path:
    return node.root / "var/lib/vz/template/cache"


def hidden(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".")] if d.exists() else []


def one_line_error(r, what: str) -> str:
    assert r.returncode != 0, f"{what}: exit 0, stdout {r.stdout!r}"
    err = r.stderr.strip()
    assert err and "\n" not in err, f"{what}: stderr is not one line: {r.stderr!r}"
    return err


@pytest.fixture(scope="module")
def updated(node, apl):
    r = node.cli("pveam", "update")
    assert r.stdout.strip() == "update successful", r.stdout + r.stderr
    return apl


# ---- update and available ----------------------------------------------------


def test_available_before_update_is_empty(node, apl):
    r = node.cli("pveam", "available")
    assert r.stdout == "" and "pveam update" in r.stderr


def test_update_stores_indexes(node, updated):
    names = sorted(p.name for p in index_dir(node).iterdir())
    assert names == [n for n in names if not n.startswith(".")], "no temporary files left"
    assert len(names) == 2, names
    stored = next(index_dir(node).glob("*aplinfo-test.dat"))
    assert stored.read_text() == updated.system_index(), "stored decompressed, as downloaded"
    log = (node.root / "var/log/oxve/pveam.log").read_text()
    assert "starting update" in log and f"start download {updated.system_url}" in log


def test_available_lists_sections(node, updated):
    lines = node.cli("pveam", "available").stdout.splitlines()
    assert [l.split() for l in lines] == [
        ["mail", MAIL_TEMPLATE],
        ["system", BROKEN],
        ["system", TEMPLATE],
        ["turnkeylinux", TKL_TEMPLATE],
    ], lines
    assert lines[0] == f"{'mail':<15} {MAIL_TEMPLATE}"
    tkl = node.cli("pveam", "available", "--section", "turnkeylinux").stdout
    assert tkl.splitlines() == [f"{'turnkeylinux':<15} {TKL_TEMPLATE}"]
    err = one_line_error(node.cli("pveam", "available", "--section", "games", check=False), "bad section")
    assert "section" in err and "games" in err


def test_failed_update_keeps_previous_index(node, updated):
    stored = next(index_dir(node).glob("*aplinfo-test.dat"))
    before = stored.read_text()
    updated.write_indexes(system="Package: half-a-record\nVersion: 1.0\n")
    try:
        err = one_line_error(node.cli("pveam", "update", check=False), "incomplete index")
        assert "update failed" in err and "incomplete appliance records" in err, err
        assert stored.read_text() == before
        assert hidden(index_dir(node)) == []
    finally:
        updated.write_indexes()
    set_sources(node, f"{updated.base}/images/missing.dat.gz\n")
    try:
        err = one_line_error(node.cli("pveam", "update", check=False), "missing index")
        assert "missing.dat.gz" in err and "404" in err, err
    finally:
        set_sources(node, f"{updated.system_url}\n{updated.tkl_url}\n")
    assert node.cli("pveam", "update").stdout.strip() == "update successful"


def test_signed_index(node, updated, tmp_path):
    need(shutil.which("gpg") is not None, "gpg is needed to sign a test index")
    need(shutil.which("gpgv") is not None or shutil.which("sqv") is not None,
         "gpgv or sqv is needed to verify index signatures")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--quiet", "--homedir", str(home), "--passphrase", "",
           "--pinentry-mode", "loopback"]
    try:
        subprocess.run(gpg + ["--quick-gen-key", "oxve test <test@example.org>", "ed25519", "sign", "never"],
                       check=True, capture_output=True)
        keyring = tmp_path / "trusted.gpg"
        keyring.write_bytes(subprocess.run(gpg + ["--export"], check=True, capture_output=True).stdout)
        dat = updated.root / "images/aplinfo-test.dat"
        subprocess.run(gpg + ["--detach-sign", "--armor", "--output", f"{dat}.asc", str(dat)],
                       check=True, capture_output=True)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)
    set_sources(node, f"{updated.system_url} keyring={keyring}\n")
    try:
        assert node.cli("pveam", "update").stdout.strip() == "update successful"
        assert "signature verification" in (node.root / "var/log/oxve/pveam.log").read_text()
        # A changed index no longer matches its signature.
        tampered = updated.system_index().replace("TestOS minimal", "TestOS evil")
        gz = updated.root / "images/aplinfo-test.dat.gz"
        gz.write_bytes(gzip.compress(tampered.encode()))
        err = one_line_error(node.cli("pveam", "update", check=False), "tampered index")
        assert "unable to verify signature" in err, err
        stored = next(index_dir(node).glob("*aplinfo-test.dat"))
        assert "TestOS evil" not in stored.read_text()
    finally:
        updated.write_indexes()
        set_sources(node, f"{updated.system_url}\n{updated.tkl_url}\n")
        node.cli("pveam", "update")


# ---- the API -----------------------------------------------------------------


def test_api_lists_appliances(admin, nodename, updated, node):
    apps = {a["template"]: a for a in admin.nodes(nodename).aplinfo.get()}
    assert set(apps) == {TEMPLATE, TKL_TEMPLATE, MAIL_TEMPLATE, BROKEN}, "no news record"
    a = apps[TEMPLATE]
    assert a["package"] == "testos-minimal" and a["version"] == "1.0-1" and a["type"] == "lxc"
    assert a["os"] == "testos" and a["section"] == "system" and a["architecture"] == "amd64"
    assert a["headline"] == "TestOS minimal"
    assert a["description"] == "A tiny root file system for tests.\n\nSecond paragraph."
    assert a["location"] == f"{updated.base}/images/system/{TEMPLATE}"
    assert a["source"] == f"{updated.base}/images"
    assert a["sha512sum"] == hashlib.sha512(updated.blobs[TEMPLATE]).hexdigest()
    assert a["maintainer"] == "Test Team <test@example.org>"
    t = apps[TKL_TEMPLATE]
    assert t["location"] == f"{updated.base}/tkl/{TKL_TEMPLATE}" and t["certified"] == "yes"
    assert t["manageurl"] == "https://__IPADDRESS__/"
    # Any authenticated user may list (upstream: user => 'all').
    node.add_user("nobody@pve", "nobody-secret-1")
    nobody = node.proxmox("nobody@pve", "nobody-secret-1")
    assert len(nobody.nodes(nodename).aplinfo.get()) == 4


def test_api_download_runs_a_task(admin, nodename, updated, node):
    upid = admin.nodes(nodename).aplinfo.post(storage="local", template=TKL_TEMPLATE)
    assert f":download:{TKL_TEMPLATE}:" in upid
    status = wait_task(admin, nodename, upid)
    assert status["exitstatus"] == "OK", status
    log = [l["t"] for l in admin.nodes(nodename).tasks(upid).log.get(limit=0)]
    assert any(f"downloading {updated.base}/tkl/{TKL_TEMPLATE}" in l for l in log), log
    assert "checksum verified" in log and log[-1] == "TASK OK", log
    assert (cache_dir(node) / TKL_TEMPLATE).read_bytes() == updated.blobs[TKL_TEMPLATE]
    vols = admin.nodes(nodename).storage("local").content.get(content="vztmpl")
    assert f"local:vztmpl/{TKL_TEMPLATE}" in [v["volid"] for v in vols]
    admin.nodes(nodename).storage("local").content(f"local:vztmpl/{TKL_TEMPLATE}").delete()


def test_api_download_refusals(admin, nodename, updated, node):
    with pytest.raises(ResourceException) as e:
        admin.nodes(nodename).aplinfo.post(storage="local", template="nosuch_1.0_amd64.tar.gz")
    assert e.value.status_code == 400 and "no such template" in str(e.value)
    admin.storage.post(storage="isoonly", type="dir", path=str(node.root / "srv/isoonly"), content="iso")
    try:
        with pytest.raises(ResourceException) as e:
            admin.nodes(nodename).aplinfo.post(storage="isoonly", template=TEMPLATE)
        assert "does not support templates" in str(e.value)
    finally:
        admin.storage("isoonly").delete()
    # Datastore.AllocateTemplate on /storage/{storage} is required.
    node.add_user("auditor@pve", "auditor-secret-1", role="PVEAuditor")
    auditor = node.proxmox("auditor@pve", "auditor-secret-1")
    with pytest.raises(ResourceException) as e:
        auditor.nodes(nodename).aplinfo.post(storage="local", template=TEMPLATE)
    assert e.value.status_code == 403
    assert not (cache_dir(node) / TEMPLATE).exists()


def test_bad_checksum_leaves_nothing(admin, nodename, updated, node):
    upid = admin.nodes(nodename).aplinfo.post(storage="local", template=BROKEN)
    status = wait_task(admin, nodename, upid)
    assert "checksum mismatch" in status["exitstatus"], status
    assert not (cache_dir(node) / BROKEN).exists()
    assert hidden(cache_dir(node)) == []
    r = node.cli("pveam", "download", "local", BROKEN, check=False)
    assert "checksum mismatch" in one_line_error(r, "bad checksum")
    assert not (cache_dir(node) / BROKEN).exists() and hidden(cache_dir(node)) == []


# ---- download, list, remove on the command line ------------------------------


def test_cli_download_list_remove(node, updated):
    r = node.cli("pveam", "download", "local", TEMPLATE)
    assert f"downloading {updated.base}/images/system/{TEMPLATE}" in r.stdout, r.stdout
    assert r.stdout.strip().splitlines()[-1] == (
        f"download of '{updated.base}/images/system/{TEMPLATE}' to '{cache_dir(node) / TEMPLATE}' finished")
    assert "TASK OK" not in r.stdout
    target = cache_dir(node) / TEMPLATE
    assert target.read_bytes() == updated.blobs[TEMPLATE]
    with tarfile.open(target) as tar:
        assert "etc/os-release" in tar.getnames()

    # The same file again is fine (as upstream); a different one is refused.
    again = node.cli("pveam", "download", "local", TEMPLATE)
    assert "no need to download" in again.stdout

    lines = node.cli("pveam", "list", "local").stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE"]
    row = next(l for l in lines if l.startswith(f"local:vztmpl/{TEMPLATE}"))
    size_mb = len(updated.blobs[TEMPLATE]) / (1024 * 1024)
    assert row.split()[1] == f"{size_mb:.2f}MB", row

    node.cli("pveam", "remove", f"local:vztmpl/{TEMPLATE}")
    assert not target.exists()
    assert f"local:vztmpl/{TEMPLATE}" not in node.cli("pveam", "list", "local").stdout

    target.write_bytes(b"something else")
    try:
        err = one_line_error(node.cli("pveam", "download", "local", TEMPLATE, check=False), "other file")
        assert "checksum mismatch" in err and "aborting" in err
        assert target.read_bytes() == b"something else"
    finally:
        target.unlink()


def test_cli_errors_are_one_line(node, updated):
    cases = [
        (["pveam", "remove", "local:iso/x.iso"], "not a container template"),
        (["pveam", "download", "local", "nosuch_1.0_amd64.tar.gz"], "no such template"),
        (["pveam", "list", "nosuch"], "nosuch"),
        (["pveam", "download", "local"], "expected 2 argument"),
        (["pveam", "frobnicate"], None),
    ]
    for args, text in cases:
        r = node.cli(*args, check=False)
        if text is None:
            assert r.returncode != 0 and "unknown command" in r.stderr
            continue
        err = one_line_error(r, " ".join(args))
        assert text in err, (args, err)
    help_text = node.cli("pveam", "download", "--help").stdout
    assert "pveam download <storage> <template>" in help_text and "--storage" not in help_text
    assert "pveam update" in node.cli("pveam", "--help").stdout
