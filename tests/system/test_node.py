"""Node and cluster read endpoints, VMID allocation and worker tasks."""

from __future__ import annotations

import re
import threading
import time

import pytest
from proxmoxer.core import ResourceException

from oxvetest import ADMIN, ADMIN_PASSWORD, wait_task

UPID_RE = re.compile(
    r"^UPID:(?P<node>[a-zA-Z0-9\-_.]+):(?P<pid>[0-9A-F]{8}):(?P<pstart>[0-9A-F]{8,9}):"
    r"(?P<starttime>[0-9A-F]{8}):(?P<type>[^:\s]+):(?P<id>[^:\s]*):(?P<user>[^:\s]+):$"
)


def test_version(admin):
    v = admin.version.get()
    assert v["version"].startswith("9."), v
    assert v["release"] == "9.1", v
    assert re.fullmatch(r"[0-9a-fA-F]{8,64}", v["repoid"]), v


def test_nodes_list(node, admin):
    nodes = admin.nodes.get()
    assert [n["node"] for n in nodes] == [node.node], nodes
    n = nodes[0]
    assert n["status"] == "online"
    assert n["maxcpu"] >= 1 and n["maxmem"] > 0
    assert n.get("type", "node") == "node"


def test_node_status(node, admin):
    st = admin.nodes(node.node).status.get()
    assert st["memory"]["total"] > 0 and 0 < st["memory"]["used"] <= st["memory"]["total"], st["memory"]
    assert st["cpuinfo"]["cpus"] >= 1, st["cpuinfo"]
    assert st["cpuinfo"].get("model"), st["cpuinfo"]
    assert st["uptime"] > 0
    assert len(st["loadavg"]) == 3, st["loadavg"]
    for x in st["loadavg"]:
        float(x)
    assert st["kversion"], st
    assert st["rootfs"]["total"] > 0, st.get("rootfs")
    assert 0 <= float(st["cpu"]) <= st["cpuinfo"]["cpus"]
    assert st["pveversion"].startswith("pve-manager/9."), st.get("pveversion")

    with pytest.raises(ResourceException) as e:
        admin.nodes("no-such-node").status.get()
    assert e.value.status_code >= 400


def test_node_time(node, admin):
    t = admin.nodes(node.node).time.get()
    assert abs(int(t["time"]) - time.time()) < 60, t
    assert abs(int(t["localtime"]) - int(t["time"])) <= 14 * 3600 + 60, t
    assert t["timezone"], t


def test_cluster_status(node, admin):
    st = admin.cluster.status.get()
    nodes = [e for e in st if e["type"] == "node"]
    assert len(nodes) == 1, st
    me = nodes[0]
    assert me["name"] == node.node
    assert me["online"] in (1, True)
    assert me["local"] in (1, True)
    assert me["id"] == f"node/{node.node}"


def test_cluster_resources_nodes(node, admin):
    res = admin.cluster.resources.get(type="node")
    assert len(res) == 1, res
    r = res[0]
    assert r["type"] == "node" and r["node"] == node.node and r["id"] == f"node/{node.node}"
    assert r["status"] == "online"
    assert r["maxcpu"] >= 1 and r["maxmem"] > 0 and r["maxdisk"] > 0
    # every entry of the unfiltered list has the documented id/type
    for e in admin.cluster.resources.get():
        assert e["type"] in ("node", "storage", "qemu", "lxc", "pool", "sdn", "network", "openvz"), e
        assert e["id"]


def test_nextid_concurrent_clients_get_distinct_ids(node, admin):
    clients = [node.proxmox(ADMIN, ADMIN_PASSWORD) for _ in range(20)]
    barrier = threading.Barrier(len(clients))
    ids: list = [None] * len(clients)
    errors: list = []

    def grab(i, api):
        try:
            barrier.wait(10)
            ids[i] = int(api.cluster.nextid.get())
        except Exception as e:  # recorded, asserted below
            errors.append(repr(e))

    threads = [threading.Thread(target=grab, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(isinstance(i, int) and i >= 100 for i in ids), ids
    assert len(set(ids)) == 20, f"nextid handed out duplicates: {sorted(ids)}"

    # the same client asking twice also gets two ids
    a, b = int(admin.cluster.nextid.get()), int(admin.cluster.nextid.get())
    assert a != b
    # a free explicit id is confirmed; a reserved one is refused
    free = max(ids + [a, b]) + 50
    assert int(admin.cluster.nextid.get(vmid=free)) == free
    with pytest.raises(ResourceException) as e:
        admin.cluster.nextid.get(vmid=ids[0])
    assert e.value.status_code >= 400


def _post_task(admin, node, what):
    try:
        return admin.nodes(node.node).post(what)
    except ResourceException as e:
        if e.status_code == 501:
            pytest.fail(f"POST /nodes/{{node}}/{what} is not implemented yet (501: {e}); "
                        f"this test needs it to produce a worker task")
        raise


_tasks: dict = {}


def test_startall_task(node, admin):
    upid = _post_task(admin, node, "startall")
    m = UPID_RE.match(upid)
    assert m, f"not a UPID: {upid!r}"
    assert m["node"] == node.node and m["type"] == "startall" and m["user"] == ADMIN, m.groupdict()

    st = wait_task(admin, node.node, upid)
    assert st["exitstatus"] == "OK", st
    assert st["upid"] == upid and st["type"] == "startall" and st["user"] == ADMIN, st
    assert st["node"] == node.node

    log = admin.nodes(node.node).tasks(upid).log.get()
    assert log, "empty task log"
    assert [line["n"] for line in log] == list(range(1, len(log) + 1)), log
    assert log[-1]["t"] == "TASK OK", log

    listed = {t["upid"]: t for t in admin.nodes(node.node).tasks.get(limit=500)}
    assert upid in listed, f"{upid} not in the task list"
    t = listed[upid]
    assert t["status"] == "OK" and t["type"] == "startall" and t["endtime"] >= t["starttime"], t
    _tasks["startall"] = upid

    upid2 = _post_task(admin, node, "stopall")
    assert UPID_RE.match(upid2) and upid2 != upid
    st = wait_task(admin, node.node, upid2)
    assert st["exitstatus"] == "OK", st
    assert admin.nodes(node.node).tasks(upid2).log.get()[-1]["t"] == "TASK OK"
    _tasks["stopall"] = upid2

    # filters
    only = admin.nodes(node.node).tasks.get(typefilter="stopall", limit=500)
    assert upid2 in {t["upid"] for t in only} and upid not in {t["upid"] for t in only}


def test_tasks_survive_restart(node, admin):
    if not _tasks:
        pytest.fail("no task was recorded by test_startall_task")
    old_session = admin
    node.restart()
    api = node.proxmox(ADMIN, ADMIN_PASSWORD)
    listed = {t["upid"]: t for t in api.nodes(node.node).tasks.get(limit=500)}
    for kind, upid in _tasks.items():
        assert upid in listed, f"{kind} task {upid} lost by the restart"
        assert listed[upid]["status"] == "OK", listed[upid]
        st = api.nodes(node.node).tasks(upid).status.get()
        assert st["status"] == "stopped" and st["exitstatus"] == "OK", st
        assert api.nodes(node.node).tasks(upid).log.get()[-1]["t"] == "TASK OK"
    # a ticket issued before the restart is still valid
    assert old_session.nodes(node.node).tasks.get(limit=1), "ticket from before the restart refused"
