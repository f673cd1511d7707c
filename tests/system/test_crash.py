"""SIGKILL during a burst of config writes: nothing acknowledged is lost, the store stays usable."""

from __future__ import annotations

import json
import threading
import time

import requests

from oxvetest import insecure_session, ADMIN, ADMIN_PASSWORD


def test_kill9_during_user_creation_burst(node):
    node.admin  # creates admin@pve while the daemon is healthy
    ticket, csrf = node.ticket(ADMIN, ADMIN_PASSWORD)
    acked: list[str] = []
    attempted: list[str] = []
    stop = threading.Event()
    errors: list[str] = []

    def writer(wid: int):
        s = insecure_session()
        s.cookies.set("PVEAuthCookie", ticket)
        s.headers["CSRFPreventionToken"] = csrf
        i = 0
        while not stop.is_set():
            userid = f"burst{wid}x{i}@pve"
            i += 1
            attempted.append(userid)
            try:
                r = s.post(f"{node.api_url}/access/users", data={"userid": userid, "comment": "burst"},
                           timeout=10)
            except requests.RequestException:
                return  # the daemon is gone: this write was never acknowledged
            if r.status_code == 200:
                acked.append(userid)
            else:
                errors.append(f"{userid}: {r.status_code} {r.text[:200]}")
                return

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    pid = node.pid
    node.kill9()
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, f"writes failed before the kill: {errors[:5]}"
    assert len(acked) >= 5, f"only {len(acked)} users were created in 2 s before the kill"
    print(f"{len(acked)} acknowledged of {len(attempted)} attempted before SIGKILL of {pid}")

    node.restart()
    api = node.proxmox(ADMIN, ADMIN_PASSWORD)
    users = {u["userid"] for u in api.access.users.get()}
    lost = [u for u in acked if u not in users]
    assert not lost, f"{len(lost)} acknowledged users lost by kill -9: {lost[:10]}"
    # whatever got in beyond the acknowledged ones must be a whole, readable user
    for u in users:
        if u.startswith("burst"):
            assert u in attempted, u
    for u in acked[-3:]:
        assert api.access.users(u).get()["comment"] == "burst"

    # the store is consistent and writable: create, change and delete again
    api.access.users.post(userid="after-crash@pve", comment="fine")
    api.access.users("after-crash@pve").put(comment="still fine")
    assert api.access.users("after-crash@pve").get()["comment"] == "still fine"
    api.access.users(acked[0]).delete()
    assert acked[0] not in {u["userid"] for u in api.access.users.get()}
    # ...and the CLI sees the same state
    out = node.cli("pveum", "user", "list", "--output-format", "json").stdout
    cli_users = {u["userid"] for u in json.loads(out)}
    assert "after-crash@pve" in cli_users and acked[-1] in cli_users
