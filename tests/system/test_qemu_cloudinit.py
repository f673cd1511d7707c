"""Cloud-init drives with real QEMU (TCG) and the test guest, driven through
proxmoxer and `qm`: `ide2: local:cloudinit` allocates the drive, the seed
is rendered from the config (`cloudinit/dump`), written as an ISO at every
start and on `PUT cloudinit` (a running VM's medium swapped), and the
guest's init mounts it and prints the host name it names. VM ids 400-409.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from proxmoxer.core import ResourceException

from oxvetest import add_bridge, need, qemu_test_guest, wait_task
from test_qemu import Serial, kernel_args, ok, status, task_log

BRIDGE = "vmbr0"
SSHKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOxve test@oxve"


@pytest.fixture(scope="module")
def qemu(node):
    need(shutil.which("qemu-system-x86_64") is not None, "QEMU is not installed (qemu-system-x86_64)")
    need(shutil.which("genisoimage") is not None, "genisoimage is not installed (scripts/install-deps.sh)")
    need(shutil.which("isoinfo") is not None, "isoinfo is not installed (genisoimage)")
    add_bridge(node, BRIDGE, "10.77.0.1/24")
    yield node
    node.stop_vms()


@pytest.fixture(scope="module")
def guest(qemu):
    return qemu_test_guest()


def vm(admin, nodename, vmid):
    return admin.nodes(nodename).qemu(vmid)


def create(admin, nodename, vmid, guest, **extra):
    upid = admin.nodes(nodename).qemu.post(
        vmid=vmid, memory=256, cores=1, serial0="socket", net0=f"virtio,bridge={BRIDGE}",
        ide2="local:cloudinit", args=kernel_args(guest), **extra)
    ok(admin, nodename, upid)


def dump(admin, nodename, vmid, kind) -> str:
    return vm(admin, nodename, vmid).cloudinit.dump.get(type=kind)


def volume(node, vmid) -> Path:
    return node.root / f"var/lib/vz/images/{vmid}/vm-{vmid}-cloudinit.qcow2"


def iso_of(node, vmid, tmp: Path) -> Path:
    """The drive's content as a raw ISO file (read while QEMU may hold it)."""
    raw = tmp / f"{vmid}.iso"
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(volume(node, vmid)), str(raw)],
                   check=True, capture_output=True)
    return raw


def iso_label(iso: Path) -> str:
    out = subprocess.run(["isoinfo", "-d", "-i", str(iso)], check=True, capture_output=True, text=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Volume id:"))


def iso_file(iso: Path, path: str) -> str:
    return subprocess.run(["isoinfo", "-R", "-i", str(iso), "-x", path], check=True, capture_output=True,
                          text=True).stdout


def guest_shell(serial: Serial, command: str, marker: str, timeout: float = 30) -> str:
    """Runs `command` on the guest's console; returns what it printed up to `marker`."""
    start = len(serial.seen)
    serial.send(f"{command}; echo {marker}-$((1+1))")
    serial.wait_for(f"{marker}-2", timeout=timeout)
    return serial.seen[start:].decode(errors="replace")


def test_nocloud_drive_regenerated_and_seen_by_the_guest(admin, nodename, qemu, guest, tmp_path):
    """The drive is allocated from `local:cloudinit`, the password stored
    hashed and hidden, the dumps are upstream's texts with an instance id
    over user data and network config, the guest mounts the `cidata` ISO
    and sees its host name; a running VM's name change is recorded in
    `cloudinit` (pending) until `PUT cloudinit` swaps the medium, a stopped
    VM's change reaches the guest at the next start; destroy removes the
    drive."""
    create(admin, nodename, 400, guest, name="ci400", ciuser="tester", cipassword="s3cret-pw",
           ipconfig0="ip=10.77.1.5/24,gw=10.77.1.1", nameserver="10.77.0.53", searchdomain="example.test",
           sshkeys=urllib.parse.quote(SSHKEY, safe=""))
    conf = vm(admin, nodename, 400).config.get()
    assert conf["ide2"] == "local:400/vm-400-cloudinit.qcow2,media=cdrom", conf
    assert conf["cipassword"] == "**********"
    assert volume(qemu, 400).exists()
    mac = conf["net0"].split(",")[0].split("=")[1].lower()

    user = dump(admin, nodename, 400, "user")
    hashed = next(line.split(": ", 1)[1] for line in user.splitlines() if line.startswith("password: "))
    assert hashed.startswith("$6$") and "s3cret-pw" not in user, user
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "s3cret-pw"], check=True,
                           capture_output=True, text=True).stdout.strip()
    assert again == hashed
    assert user == (
        "#cloud-config\nhostname: ci400\nmanage_etc_hosts: true\nfqdn: ci400.example.test\n"
        f"user: tester\npassword: {hashed}\nssh_authorized_keys:\n  - {SSHKEY}\n"
        "chpasswd:\n  expire: False\nusers:\n  - default\npackage_upgrade: true\n")
    network = dump(admin, nodename, 400, "network")
    assert network == (
        "version: 1\nconfig:\n    - type: physical\n      name: eth0\n"
        f"      mac_address: '{mac}'\n      subnets:\n      - type: static\n"
        "        address: '10.77.1.5'\n        netmask: '255.255.255.0'\n        gateway: '10.77.1.1'\n"
        "    - type: nameserver\n      address:\n      - '10.77.0.53'\n      search:\n      - 'example.test'\n")
    meta = dump(admin, nodename, 400, "meta")
    # No vendor data: the instance id is upstream's.
    instance = hashlib.sha1((user + network).encode()).hexdigest()
    assert meta == f"instance-id: {instance}\nlocal-hostname: ci400\n"
    # Someone who may only look at the VM gets the password masked.
    qemu.add_user("ciaudit@pve", "audit-secret-1", role="PVEAuditor", path="/vms/400")
    auditor = qemu.proxmox("ciaudit@pve", "audit-secret-1")
    assert "password: **********\n" in auditor.nodes(nodename).qemu(400).cloudinit.dump.get(type="user")
    with pytest.raises(ResourceException, match="403"):
        auditor.nodes(nodename).qemu(400).cloudinit.put()

    upid = vm(admin, nodename, 400).status.start.post()
    ok(admin, nodename, upid)
    serial = Serial(qemu, 400)
    try:
        serial.wait_for("oxve-guest: seed local-hostname: ci400", timeout=120)
        serial.wait_for("oxve-guest: booted", timeout=60)
        iso = iso_of(qemu, 400, tmp_path)
        assert iso_label(iso) == "cidata"
        assert iso_file(iso, "/user-data") == user
        assert iso_file(iso, "/network-config") == network
        assert iso_file(iso, "/meta-data") == meta
        assert vm(admin, nodename, 400).cloudinit.get() != []

        # A running VM takes cloud-init options and its name at once; the
        # drive keeps the old values until regenerated.
        vm(admin, nodename, 400).config.put(name="ci400b", ciuser="tester2")
        conf = vm(admin, nodename, 400).config.get()
        assert conf["name"] == "ci400b" and conf["ciuser"] == "tester2"
        changes = {c["key"]: c for c in vm(admin, nodename, 400).cloudinit.get()}
        assert changes["name"] == {"key": "name", "value": "ci400", "pending": "ci400b"}, changes
        assert changes["ciuser"] == {"key": "ciuser", "value": "tester", "pending": "tester2"}, changes
        assert changes["cipassword"]["value"] == "**********"
        assert vm(admin, nodename, 400).cloudinit.put() is None
        changes = vm(admin, nodename, 400).cloudinit.get()
        assert all("pending" not in c and "delete" not in c for c in changes), changes
        # The guest sees the new medium.
        out = guest_shell(serial, "umount /cidata; mount -t iso9660 -o ro /dev/sr0 /cidata && "
                          "cat /cidata/meta-data", "remount")
        assert "local-hostname: ci400b" in out, out
    finally:
        serial.close()
    ok(admin, nodename, vm(admin, nodename, 400).status.stop.post())

    # A stopped VM: the drive is written again at the next start.
    vm(admin, nodename, 400).config.put(name="ci400c")
    assert vm(admin, nodename, 400).cloudinit.get() != []
    ok(admin, nodename, vm(admin, nodename, 400).status.start.post())
    serial = Serial(qemu, 400)
    try:
        serial.wait_for("oxve-guest: seed local-hostname: ci400c", timeout=120)
    finally:
        serial.close()
    ok(admin, nodename, vm(admin, nodename, 400).status.stop.post())

    ok(admin, nodename, vm(admin, nodename, 400).delete())
    assert not volume(qemu, 400).exists()


def test_configdrive2_seen_by_the_guest(admin, nodename, qemu, guest, tmp_path):
    """`citype: configdrive2`: a `config-2` ISO in OpenStack's layout with
    the network in Debian's interfaces syntax; the guest reads its
    `meta_data.json`."""
    create(admin, nodename, 401, guest, name="ci401", citype="configdrive2",
           ipconfig0="ip=10.77.2.7/24,gw=10.77.2.1", nameserver="10.77.0.53")
    network = dump(admin, nodename, 401, "network")
    assert network == (
        "auto lo\niface lo inet loopback\n\n        dns_nameservers 10.77.0.53\n"
        "auto eth0\niface eth0 inet static\n        address 10.77.2.7\n        netmask 255.255.255.0\n"
        "        gateway 10.77.2.1\n")
    user = dump(admin, nodename, 401, "user")
    instance = hashlib.sha1((user + network).encode()).hexdigest()
    meta = dump(admin, nodename, 401, "meta")
    assert f'"uuid": "{instance}"' in meta and '"hostname": "ci401"' in meta, meta

    ok(admin, nodename, vm(admin, nodename, 401).status.start.post())
    serial = Serial(qemu, 401)
    try:
        serial.wait_for('oxve-guest: seed      "hostname": "ci401",', timeout=120)
        iso = iso_of(qemu, 401, tmp_path)
        assert iso_label(iso) == "config-2"
        assert iso_file(iso, "/openstack/content/0000") == network
        assert iso_file(iso, "/openstack/latest/user_data") == user
        assert iso_file(iso, "/openstack/latest/meta_data.json") == meta
    finally:
        serial.close()
    ok(admin, nodename, vm(admin, nodename, 401).status.stop.post())
    ok(admin, nodename, vm(admin, nodename, 401).delete())
    assert not volume(qemu, 401).exists()


def test_qm_cloudinit_commands(qemu, admin, nodename, guest, tmp_path):
    """`qm cloudinit dump/pending/update` go through the API; `update`
    writes the drive of a stopped VM; deleting the drive frees its volume."""
    create(admin, nodename, 402, guest, name="ci402", ciuser="ops")
    out = qemu.cli("qm", "cloudinit", "dump", "402", "user").stdout
    assert "hostname: ci402\n" in out and "user: ops\n" in out, out
    out = qemu.cli("qm", "cloudinit", "dump", "402", "meta").stdout
    assert out.startswith("instance-id: "), out
    out = qemu.cli("qm", "cloudinit", "pending", "402").stdout
    assert "ciuser" in out and "ops" in out, out
    qemu.cli("qm", "cloudinit", "update", "402")
    iso = iso_of(qemu, 402, tmp_path)
    assert iso_label(iso) == "cidata"
    assert "hostname: ci402\n" in iso_file(iso, "/user-data")
    # A second cloud-init drive is refused; removing the drive frees it.
    with pytest.raises(ResourceException, match="cloud-init drive is already attached at 'ide2'"):
        vm(admin, nodename, 402).config.put(ide0="local:cloudinit")
    vm(admin, nodename, 402).config.put(delete="ide2")
    assert not volume(qemu, 402).exists()
    assert "unused0" not in vm(admin, nodename, 402).config.get()
    ok(admin, nodename, vm(admin, nodename, 402).delete())


def test_snippets_and_failures(admin, nodename, qemu, guest):
    """`cicustom` snippets from the `snippets` content of a storage: a
    changed vendor snippet changes the instance id (upstream keeps it); a
    volume on an unknown storage or of another content is refused at set
    time with the config unchanged; a missing snippet file fails
    regeneration and the start with a clear error, the config unchanged
    and nothing running."""
    snippets = qemu.root / "var/lib/vz/snippets"
    snippets.mkdir(parents=True, exist_ok=True)
    (snippets / "vendor-403.yaml").write_text("#cloud-config\npackages:\n  - htop\n")
    create(admin, nodename, 403, guest, name="ci403", cicustom="vendor=local:snippets/vendor-403.yaml")
    first = dump(admin, nodename, 403, "meta")
    (snippets / "vendor-403.yaml").write_text("#cloud-config\npackages:\n  - curl\n")
    second = dump(admin, nodename, 403, "meta")
    assert first != second and first.startswith("instance-id: ")
    user, network = dump(admin, nodename, 403, "user"), dump(admin, nodename, 403, "network")
    vendor = (snippets / "vendor-403.yaml").read_text()
    assert second.split("\n")[0] == "instance-id: " + hashlib.sha1((user + network + vendor).encode()).hexdigest()

    before = vm(admin, nodename, 403).config.get()
    with pytest.raises(ResourceException, match="nosuch"):
        vm(admin, nodename, 403).config.put(cicustom="user=nosuch:snippets/u.yaml")
    with pytest.raises(ResourceException, match="not in the snippets directory"):
        vm(admin, nodename, 403).config.put(cicustom="user=local:iso/seed.iso")
    assert vm(admin, nodename, 403).config.get()["digest"] == before["digest"]

    # A snippet that is not there: the set passes (it may be uploaded
    # later, as upstream), regeneration and start fail and say why.
    vm(admin, nodename, 403).config.put(cicustom="user=local:snippets/missing-403.yaml")
    before = vm(admin, nodename, 403).config.get()
    with pytest.raises(ResourceException, match="missing-403.yaml"):
        vm(admin, nodename, 403).cloudinit.put()
    upid = vm(admin, nodename, 403).status.start.post()
    st = wait_task(admin, nodename, upid, timeout=60)
    assert st["exitstatus"] != "OK"
    assert "missing-403.yaml" in st["exitstatus"] + task_log(admin, nodename, upid), st
    assert status(admin, nodename, 403)["status"] == "stopped"
    assert vm(admin, nodename, 403).config.get()["digest"] == before["digest"]
    ok(admin, nodename, vm(admin, nodename, 403).delete())
    assert not volume(qemu, 403).exists()


def test_drive_dropped_while_running_is_freed_at_start(admin, nodename, qemu, guest):
    """A cloud-init drive deleted while the VM runs waits in [PENDING]; the
    next start applies it and frees the volume instead of keeping it as
    unused (as upstream)."""
    create(admin, nodename, 405, guest, ciuser="alice")
    v = vm(admin, nodename, 405)
    ok(admin, nodename, v.status.start.post())
    assert volume(qemu, 405).exists()
    v.config.put(delete="ide2")
    assert "ide2" in v.config.get(current=1)
    ok(admin, nodename, v.status.stop.post())
    ok(admin, nodename, v.status.start.post())
    conf = v.config.get(current=1)
    assert "ide2" not in conf and not any(k.startswith("unused") for k in conf), conf
    assert not volume(qemu, 405).exists()
    ok(admin, nodename, v.status.stop.post())


def test_hotplug_cloudinit_regenerates_the_running_drive(admin, nodename, qemu, guest, tmp_path):
    """With `hotplug` listing `cloudinit`, a changed cloud-init value of a
    running VM reaches its drive at once (nothing stays pending); without
    it the drive keeps the old value until regenerated."""
    create(admin, nodename, 403, guest, name="ci403", ciuser="first",
           hotplug="network,disk,usb,cloudinit")
    create(admin, nodename, 404, guest, name="ci404", ciuser="first")
    for vmid in (403, 404):
        ok(admin, nodename, vm(admin, nodename, vmid).status.start.post())
        vm(admin, nodename, vmid).config.put(ciuser="second")
    assert "user: second\n" in iso_file(iso_of(qemu, 403, tmp_path), "/user-data")
    assert not [p for p in vm(admin, nodename, 403).cloudinit.get() if "pending" in p or "delete" in p]
    assert "user: first\n" in iso_file(iso_of(qemu, 404, tmp_path), "/user-data")
    pend = {p["key"]: p for p in vm(admin, nodename, 404).cloudinit.get()}
    assert pend["ciuser"]["value"] == "first" and pend["ciuser"]["pending"] == "second", pend
    # The medium is back in the running VM.
    out = vm(admin, nodename, 403).monitor.post(command="info block")
    assert "vm-403-cloudinit.qcow2" in out and "Attached to:      ide2" in out, out
    for vmid in (403, 404):
        ok(admin, nodename, vm(admin, nodename, vmid).status.stop.post())
        ok(admin, nodename, vm(admin, nodename, vmid).delete())
