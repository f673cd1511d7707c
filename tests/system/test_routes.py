"""Every method of upstream's schema, called anonymously and as a user without any ACL.

(a) anonymous: everything except the methods upstream opens to the "world" answers 401;
(b) authenticated, no privileges: nothing guarded by a privilege check answers 2xx.
Calls carry an empty body / query, so they mutate nothing on a correct daemon.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from oxvetest import insecure_session, qpath, walk_schema

NOBODY = "nobody@pve"
NOBODY_PASSWORD = "nobody-pass-1"
WORKERS = 16


def path_values(node: str) -> dict:
    return {
        "node": node, "node_id": node, "vmid": "100", "storage": "local", "userid": "root@pam",
        "groupid": "nogroup", "group": "nogroup", "roleid": "PVEAdmin", "poolid": "nopool",
        "realm": "pve", "tokenid": "notoken",
        "upid": f"UPID:{node}:00001234:00005678:65000000:vzdump:100:root@pam:",
        "snapname": "snap1", "volume": "vm-100-disk-0.raw", "iface": "vmbr0", "id": "dummy",
        "name": "dummy", "cidr": "10.0.0.1", "controller": "ctrl1", "dns": "dns1", "ipam": "pve",
        "zone": "zone1", "vnet": "vnet1", "subnet": "zone1-10.0.0.0-24", "fabric": "fab1",
        "fabric_id": "fab1", "monid": "mon1", "osdid": "0", "pos": "0", "rule": "rule1",
        "service": "pveproxy", "sid": "vm:100", "flag": "noout",
    }


def methods(apidata):
    out = []
    for n in walk_schema(apidata):
        for m, info in sorted((n.get("info") or {}).items()):
            out.append((m, n["path"], info.get("permissions") or {}))
    return out


def fill(path: str, values: dict) -> str:
    def sub(m):
        name = m.group(1)
        assert name in values, f"no test value for path variable {{{name}}} in {path}"
        return qpath(values[name])
    return re.sub(r"\{(\w+)\}", sub, path)


def check_needs_privileges(check) -> bool:
    """Whether a permission check can only pass with some privilege (or as another user)."""
    kind = check[0]
    if kind == "or":
        return all(check_needs_privileges(c) for c in check[1:])
    if kind == "and":
        return any(check_needs_privileges(c) for c in check[1:])
    # perm, perm-modify, userid-group, userid-param (the userid we pass is never the caller)
    return True


def open_to_all_users(perm: dict) -> bool:
    if perm.get("user") in ("all", "world"):
        return True
    if not perm:
        return False  # no permissions at all: root@pam only
    check = perm.get("check")
    return bool(check) and not check_needs_privileges(check)


def sweep(url_base, calls, make_session):
    """Run the calls on WORKERS threads, each with its own keep-alive session."""
    local = threading.local()

    def one(item):
        method, template, path, perm = item
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = make_session()
        url = url_base + path
        for attempt in range(2):
            try:
                if method == "GET":
                    r = s.get(url, timeout=60)
                else:
                    r = s.request(method, url, data={}, timeout=60)
                return item, r.status_code, (r.reason or "")[:120]
            except requests.ConnectionError as e:
                if attempt:
                    return item, None, f"connection error: {e}"[:200]
        raise AssertionError("unreachable")

    with ThreadPoolExecutor(WORKERS) as ex:
        return list(ex.map(one, calls))


@pytest.fixture(scope="module")
def calls(node, apidata):
    values = path_values(node.node)
    out = [(m, t, fill(t, values), p) for m, t, p in methods(apidata)]
    assert len(out) == 649, f"the schema lists {len(out)} methods, expected 649"
    return out


def report(bad, total, what):
    lines = [f"{m} {t} -> {st} {reason}" for (m, t, _, _), st, reason in bad]
    return f"{len(bad)} of {total} methods {what}:\n" + "\n".join(lines[:80]) + \
        (f"\n... and {len(lines) - 80} more" if len(lines) > 80 else "")


def test_anonymous_gets_401_everywhere_but_world(node, calls):
    def make():
        s = insecure_session()
        return s

    t0 = time.monotonic()
    results = sweep(node.api_url, calls, make)
    elapsed = time.monotonic() - t0
    print(f"anonymous sweep: {len(results)} calls in {elapsed:.1f}s; "
          f"statuses {Counter(st for _, st, _ in results)}")
    world = [(i, st, r) for i, st, r in results if i[3].get("user") == "world"]
    bad = [(i, st, r) for i, st, r in results if i[3].get("user") != "world" and st != 401]
    assert not bad, report(bad, len(results), "did not answer 401 to an anonymous caller")
    domains = [x for x in world if x[0][0] == "GET" and x[0][1] == "/access/domains"]
    assert domains and domains[0][1] == 200, f"GET /access/domains is open to the world: {domains}"
    for (m, t, _, _), st, reason in world:
        if t in ("/access/ticket", "/access/vncticket") and m == "POST":
            continue  # empty credentials may well be refused
        assert st is not None and st != 401, f"{m} {t} is open to the world but answered {st} {reason}"
    assert node.alive(), "the daemon died during the anonymous sweep"


def test_user_without_acl_reaches_nothing_protected(node, calls):
    node.add_user(NOBODY, NOBODY_PASSWORD)
    ticket, csrf = node.ticket(NOBODY, NOBODY_PASSWORD)

    def make():
        s = insecure_session()
        s.cookies.set("PVEAuthCookie", ticket)
        s.headers["CSRFPreventionToken"] = csrf
        return s

    t0 = time.monotonic()
    results = sweep(node.api_url, calls, make)
    elapsed = time.monotonic() - t0
    print(f"unprivileged sweep: {len(results)} calls in {elapsed:.1f}s; "
          f"statuses {Counter(st for _, st, _ in results)}")
    assert node.alive(), "the daemon died during the unprivileged sweep"

    leaked = [(i, st, r) for i, st, r in results
              if not open_to_all_users(i[3]) and st is not None and 200 <= st < 300]
    assert not leaked, report(leaked, len(results), "answered 2xx to a user without privileges")

    protected = [(i, st, r) for i, st, r in results
                 if not open_to_all_users(i[3]) and st not in (400, 403, 501)]
    assert not protected, report(protected, len(results),
                                 "guarded by a privilege check answered other than 400/403/501")

    unauth = [(i, st, r) for i, st, r in results
              if i[3].get("user") != "world" and (st == 401 or st is None)]
    assert not unauth, report(unauth, len(results), "refused a valid ticket (401) or dropped the connection")

    # nothing was changed by the sweep
    r = node.admin_session().get(f"{node.api_url}/access/users/root@pam", timeout=30)
    assert r.status_code == 200, f"root@pam is gone or unreadable after the sweep: {r.status_code} {r.text}"
