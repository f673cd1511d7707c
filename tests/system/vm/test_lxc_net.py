"""Container NIC options on the host end of the veth, with real LXC:
VLAN tags on a VLAN-aware bridge and on a classic one (upstream's
`vmbr2v10` bridges over `bond0.10`), and the rate limit (`rate=` MB/s), as
upstream's tap_plug and tap_rate_limit set them up. In the test host VM
because this host's kernel has neither bridge VLAN filtering, 802.1q and
bonding, nor the tc policer and `basic` classifier of the rate limit."""

from __future__ import annotations

import json
import time

import pytest

from oxvetest import wait_task
from test_lxc import lxc, ns, ok, pct, task_log, templates  # noqa: F401 (fixtures)

MiB = 1 << 20
# The limit: low, as TCG moves only a few MB/s between two CTs anyway.
RATE = 0.25
# Twice the limit's 1 MiB burst: the limited transfer takes at least 4 s.
TRANSFER = 2 * MiB
VBRIDGE = "vmbr1"
# The bridge's own port is in VLAN 20, so the tag-20 CT has someone to reach.
BRIDGE_IP = "10.78.0.1"
# A bridge that is not VLAN-aware, with a bond as its uplink.
CBRIDGE = "vmbr2"
# vmid: (tag, rate, address); CTs 500-502 also have net1 with the same tag
# on CBRIDGE, at 10.79.0.x.
CTS = {500: (10, None, "10.78.0.10"), 501: (10, None, "10.78.0.11"),
       502: (20, None, "10.78.0.12"), 503: (10, RATE, "10.78.0.13")}


@pytest.fixture(scope="module")
def cts(admin, nodename, templates, lxc):  # noqa: F811
    ns(lxc, "ip", "link", "add", VBRIDGE, "type", "bridge", "vlan_filtering", "1")
    ns(lxc, "bridge", "vlan", "del", "dev", VBRIDGE, "vid", "1", "self")
    ns(lxc, "bridge", "vlan", "add", "dev", VBRIDGE, "vid", "20", "pvid", "untagged", "self")
    ns(lxc, "ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", VBRIDGE)
    ns(lxc, "ip", "link", "set", VBRIDGE, "up")
    ns(lxc, "ip", "link", "add", CBRIDGE, "type", "bridge")
    ns(lxc, "ip", "link", "add", "bond0", "type", "bond")
    ns(lxc, "ip", "link", "set", "bond0", "master", CBRIDGE)
    ns(lxc, "ip", "link", "set", "bond0", "up")
    ns(lxc, "ip", "link", "set", CBRIDGE, "up")
    upids = []
    for vmid, (tag, rate, ip) in CTS.items():
        nets = {"net0": f"name=eth0,bridge={VBRIDGE},ip={ip}/24,tag={tag}"
                + (f",rate={rate}" if rate else "")}
        if vmid != 503:
            nets["net1"] = f"name=eth1,bridge={CBRIDGE},ip={classic_ip(vmid)}/24,tag={tag}"
        upids.append(admin.nodes(nodename).lxc.post(
            vmid=vmid, ostemplate=templates, hostname=f"ct{vmid}", memory=64, swap=0,
            rootfs="local:0", start=1, **nets))
    for vmid, upid in zip(CTS, upids):
        st = wait_task(admin, nodename, upid, timeout=180)
        if st["exitstatus"] != "OK":
            pytest.fail(f"{task_log(admin, nodename, upid)}\n--- LXC log ---\n{lxc_log(lxc, vmid)}")
    yield {vmid: ip for vmid, (_, _, ip) in CTS.items()}
    for action in (lambda ct: ct.status.stop.post(), lambda ct: ct.delete()):
        upids = [action(admin.nodes(nodename).lxc(vmid)) for vmid in CTS]
        for upid in upids:
            ok(admin, nodename, upid, timeout=120)


def lxc_log(node, vmid: int) -> str:
    """What LXC logged of a failed start (the net-up hook's errors are there)."""
    path = node.root / f"run/oxve/lxc/{vmid}/lxc.log"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(line for line in lines if "ERROR" in line or "hook" in line)[-3000:]


def classic_ip(vmid: int) -> str:
    return f"10.79.0.{vmid - 490}"


def pings(node, vmid, ip, tries=1) -> bool:
    r = pct(node, "exec", str(vmid), "--", "ping", "-c", str(tries), "-W", "1", ip, check=False)
    return r.returncode == 0


def test_vlan_tags_on_a_vlan_aware_bridge(cts, lxc):
    vlans = json.loads(ns(lxc, "bridge", "-j", "vlan", "show", "dev", "veth500i0").stdout)
    [port] = vlans
    assert [(v["vlan"], sorted(v.get("flags", []))) for v in port["vlans"]] == \
        [(10, ["Egress Untagged", "PVID"])], port
    # The tag-10 CTs reach each other (give their init a moment to set up eth0).
    deadline = time.monotonic() + 30
    while not pings(lxc, 500, cts[501]):
        assert time.monotonic() < deadline, "CT 500 cannot reach CT 501 on VLAN 10"
    # CT 502 is up on VLAN 20 (it reaches the bridge's own port there) ...
    deadline = time.monotonic() + 30
    while not pings(lxc, 502, BRIDGE_IP):
        assert time.monotonic() < deadline, "CT 502 cannot reach the bridge on VLAN 20"
    # ... and reaches no one on VLAN 10, nor they it or the bridge.
    assert not pings(lxc, 502, cts[501], tries=2)
    assert not pings(lxc, 500, cts[502], tries=2)
    assert not pings(lxc, 500, BRIDGE_IP, tries=2)


def test_vlan_tags_on_a_classic_bridge(cts, lxc):
    """On a bridge that is not VLAN-aware a tag puts the NIC on the bridge's
    VLAN bridge, whose uplink is a VLAN device of the bridge's uplink."""
    links = {l["ifname"]: l for l in json.loads(ns(lxc, "ip", "-d", "-j", "link", "show").stdout)}
    masters = {name: links[name].get("master") for name in
               ("veth500i1", "veth501i1", "bond0.10", "veth502i1", "bond0.20")}
    assert masters == {"veth500i1": "vmbr2v10", "veth501i1": "vmbr2v10", "bond0.10": "vmbr2v10",
                       "veth502i1": "vmbr2v20", "bond0.20": "vmbr2v20"}, masters
    for vid in (10, 20):
        info = links[f"bond0.{vid}"]["linkinfo"]
        assert info["info_kind"] == "vlan" and info["info_data"]["id"] == vid, info
        assert links[f"bond0.{vid}"]["link"] == "bond0"
    deadline = time.monotonic() + 30
    while not pings(lxc, 500, classic_ip(501)):
        assert time.monotonic() < deadline, "CT 500 cannot reach CT 501 on vmbr2v10"
    assert not pings(lxc, 500, classic_ip(502), tries=2)


def tc_json(node, *args):
    return json.loads(ns(node, "tc", "-j", *args).stdout or "[]")


def test_rate_limit_shapes_the_host_end(cts, lxc):
    """upstream's tap_rate_limit: htb class 1:1 at the rate for what the CT
    receives, an ingress policer for what it sends, 1 MiB bursts."""
    qdiscs = {q["kind"]: q for q in tc_json(lxc, "qdisc", "show", "dev", "veth503i0")}
    assert qdiscs["htb"]["handle"] == "1:" and qdiscs["htb"]["root"], qdiscs
    assert "ingress" in qdiscs, qdiscs
    classes = ns(lxc, "tc", "class", "show", "dev", "veth503i0").stdout.splitlines()
    assert len(classes) == 1 and classes[0].startswith("class htb 1:1 root"), classes
    # 0.25 MiB/s = 2097152 bit/s
    assert "rate 2097Kbit" in classes[0] and "burst 1Mb" in classes[0], classes
    text = ns(lxc, "tc", "filter", "show", "dev", "veth503i0", "parent", "ffff:").stdout
    assert "basic" in text and "police" in text and "rate 2097Kbit burst 1Mb" in text, text
    kinds = {q["kind"] for q in tc_json(lxc, "qdisc", "show", "dev", "veth501i0")}
    assert not kinds & {"htb", "ingress", "tbf"}, kinds


def transfer_seconds(node, src: int, dst: int, dst_ip: str, port: int) -> float:
    """Sends TRANSFER bytes from CT src to CT dst over TCP and returns how
    long until dst had counted them all (its `wc -c` answers after the
    sender's EOF), timed inside src."""
    pct(node, "exec", str(dst), "--", "sh", "-c",
        f"nc -l -p {port} -e wc -c >/dev/null 2>&1 </dev/null &")
    deadline = time.monotonic() + 20
    while f":{port} " not in pct(node, "exec", str(dst), "--", "netstat", "-ltn").stdout:
        assert time.monotonic() < deadline, f"CT {dst} does not listen on port {port}"
        time.sleep(0.1)
    blocks = TRANSFER // (64 * 1024)
    out = pct(node, "exec", str(src), "--", "sh", "-c",
              "read a _ </proc/uptime; "
              f"n=$(dd if=/dev/zero bs=64k count={blocks} 2>/dev/null | nc {dst_ip} {port}); "
              'read b _ </proc/uptime; echo "$n $a $b"', timeout=120).stdout.split()
    assert out[0] == str(TRANSFER), out
    return float(out[2]) - float(out[1])


def test_rate_limit_bounds_a_transfer(cts, lxc):
    # Both directions of the limited NIC, against the same transfer between
    # two unlimited CTs on the same bridge in the same run.
    free = transfer_seconds(lxc, 500, 501, cts[501], 7101)
    sent = transfer_seconds(lxc, 503, 501, cts[501], 7102)  # the ingress policer
    received = transfer_seconds(lxc, 500, 503, cts[503], 7103)  # the htb class
    print(f"\n{TRANSFER >> 20} MiB: unlimited {free:.2f} s, "
          f"rate={RATE} sending {sent:.2f} s, receiving {received:.2f} s")
    floor = (TRANSFER - MiB) / (RATE * MiB)
    for took in (sent, received):
        assert took > 1.5 * free, (free, sent, received)
        # After the 1 MiB burst the rest goes at RATE at most: a lower bound,
        # which a slow machine cannot break.
        assert took > 0.9 * floor, (floor, free, sent, received)
