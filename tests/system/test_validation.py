"""Parameter verification, booleans, 501 for unbuilt methods, the extjs format and the OpenAPI document."""

from __future__ import annotations

import re

import pytest
import requests

NOT_IMPLEMENTED_RE = re.compile(r"Method '(GET|POST|PUT|DELETE) (/\S*)' not implemented")


@pytest.fixture(scope="module")
def s(node):
    """A raw session as admin@pve: permissions are never the reason for an error here."""
    return node.admin_session()


def call(node, s, method, path, fmt="json", **kw):
    return s.request(method, node.url_for(path, fmt), timeout=30, **kw)


def assert_param_error(r: requests.Response, *params: str):
    assert r.status_code == 400, f"expected 400, got {r.status_code} {r.reason}: {r.text}"
    body = r.json()
    assert body.get("data") is None, body
    errors = body.get("errors")
    assert isinstance(errors, dict) and errors, f"no per-parameter errors in {body}"
    for p in params:
        assert p in errors, f"errors do not name {p!r}: {errors}"
        assert isinstance(errors[p], str) and errors[p].strip(), errors
    return errors


def test_bad_userid(node, s):
    r = call(node, s, "POST", "/access/users", data={"userid": "bad"})
    assert_param_error(r, "userid")


def test_bad_privilege(node, s):
    r = call(node, s, "POST", "/access/roles", data={"roleid": "BadRole", "privs": "VM.Audit,No.Such.Priv"})
    assert_param_error(r, "privs")
    roles = call(node, s, "GET", "/access/roles").json()["data"]
    assert "BadRole" not in {x["roleid"] for x in roles}


def test_acl_missing_roles(node, s):
    r = call(node, s, "PUT", "/access/acl", data={"path": "/", "users": "admin@pve"})
    assert_param_error(r, "roles")


def test_missing_and_several_params(node, s):
    r = call(node, s, "POST", "/access/users", data={})
    assert_param_error(r, "userid")
    # every wrong parameter is reported, not just the first
    r = call(node, s, "POST", "/access/users",
             data={"userid": "x@pve", "expire": "soon", "email": "not an email", "enable": "maybe"})
    assert_param_error(r, "expire", "email", "enable")
    users = call(node, s, "GET", "/access/users").json()["data"]
    assert "x@pve" not in {u["userid"] for u in users}


def test_integer_bounds(node, s):
    r = call(node, s, "GET", "/cluster/nextid", params={"vmid": 5})
    assert_param_error(r, "vmid")
    r = call(node, s, "GET", "/cluster/nextid", params={"vmid": "abc"})
    assert_param_error(r, "vmid")
    r = call(node, s, "GET", f"/nodes/{node.node}/tasks", params={"limit": -1})
    assert_param_error(r, "limit")
    r = call(node, s, "GET", f"/nodes/{node.node}/tasks", params={"source": "everything"})
    assert_param_error(r, "source")


def test_unknown_parameter(node, s):
    r = call(node, s, "GET", "/version", params={"frobnicate": 1})
    assert_param_error(r, "frobnicate")
    r = call(node, s, "POST", "/access/groups", data={"groupid": "g-unknown", "colour": "blue"})
    assert_param_error(r, "colour")


def test_reason_phrase_is_first_line_of_message(node, s):
    r = call(node, s, "POST", "/access/users", data={"userid": "bad"})
    assert r.status_code == 400
    assert r.reason == "Parameter verification failed.", f"HTTP reason {r.reason!r}"


@pytest.mark.parametrize("value,expected", [("0", 0), ("1", 1), ("false", 0), ("true", 1)])
def test_boolean_forms(node, s, value, expected):
    if not getattr(test_boolean_forms, "_user", False):
        r = call(node, s, "POST", "/access/users", data={"userid": "booly@pve"})
        assert r.status_code == 200, r.text
        test_boolean_forms._user = True
    r = call(node, s, "PUT", "/access/users/booly@pve", data={"enable": value})
    assert r.status_code == 200, f"enable={value}: {r.status_code} {r.text}"
    u = call(node, s, "GET", "/access/users/booly@pve").json()["data"]
    assert int(u["enable"]) == expected, (value, u)
    # query-string booleans too
    r = call(node, s, "GET", f"/nodes/{node.node}/tasks", params={"errors": value})
    assert r.status_code == 200, f"errors={value}: {r.status_code} {r.text}"
    r = call(node, s, "GET", "/access/users", params={"enabled": value, "full": value})
    assert r.status_code == 200, r.text
    listed = {x["userid"]: x for x in r.json()["data"]}
    # `enabled` filters on the enable flag, which booly has just been given
    assert "booly@pve" in listed, (value, sorted(listed))
    assert ("admin@pve" in listed) == bool(expected), (value, sorted(listed))


def test_boolean_garbage_refused(node, s):
    r = call(node, s, "PUT", "/access/users/admin@pve", data={"enable": "maybe"})
    assert_param_error(r, "enable")


def _find_501(node, s, apidata):
    candidates = [f"/nodes/{node.node}/ceph/status", "/cluster/ceph/status", f"/nodes/{node.node}/qemu",
                  "/cluster/sdn/zones", f"/nodes/{node.node}/hardware/pci"]
    for path in candidates:
        r = call(node, s, "GET", path)
        if r.status_code == 501:
            return path, r
    from oxvetest import walk_schema
    for n in walk_schema(apidata):
        if "GET" in n.get("info", {}) and "{" not in n["path"]:
            r = call(node, s, "GET", n["path"])
            if r.status_code == 501:
                return n["path"], r
    return None, None


def test_unimplemented_method_is_501(node, s, apidata):
    path, r = _find_501(node, s, apidata)
    if path is None:
        pytest.skip("every GET method without path variables is implemented")
    m = NOT_IMPLEMENTED_RE.search(r.reason) or NOT_IMPLEMENTED_RE.search(r.text)
    assert m, f"501 for GET {path} without upstream's message: reason={r.reason!r} body={r.text!r}"
    assert m.group(1) == "GET" and m.group(2) == path, m.group(0)
    assert r.reason.startswith("Method 'GET "), f"HTTP reason {r.reason!r}"


def test_unknown_path_is_501(node, s):
    r = call(node, s, "GET", "/no/such/thing")
    assert r.status_code == 501, (r.status_code, r.text)
    assert NOT_IMPLEMENTED_RE.search(r.reason or "") or NOT_IMPLEMENTED_RE.search(r.text), (r.reason, r.text)


def test_extjs_format(node, s):
    r = call(node, s, "GET", "/version", fmt="extjs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] in (1, True), body
    assert body["data"]["release"] == "9.1", body

    r = call(node, s, "POST", "/access/users", fmt="extjs", data={"userid": "bad"})
    assert r.status_code == 200, f"extjs errors travel inside HTTP 200, got {r.status_code}"
    body = r.json()
    assert body["success"] in (0, False), body
    assert "userid" in (body.get("errors") or {}), body
    assert body.get("message", "").startswith("Parameter verification failed"), body

    r = call(node, s, "GET", "/cluster/nextid", fmt="extjs", params={"vmid": 5})
    body = r.json()
    assert r.status_code == 200 and body["success"] in (0, False) and "vmid" in body["errors"], body


def test_openapi_document(node, s, apidata):
    r = requests.get(f"{node.url}/api2/openapi.json", verify=False, timeout=60)
    if r.status_code == 401:  # it may need a ticket
        r = s.get(f"{node.url}/api2/openapi.json", timeout=60)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    doc = r.json()
    assert doc["openapi"] == "3.1.0", doc.get("openapi")
    paths = doc["paths"]
    prefix = "/api2/json"
    got = {p[len(prefix):] if p.startswith(prefix) else p for p in paths}
    from oxvetest import walk_schema
    want = {n["path"] for n in walk_schema(apidata) if n.get("info")}
    assert 400 <= len(paths) <= 470, len(paths)
    missing = sorted(want - got)
    assert not missing, f"{len(missing)} schema paths missing from openapi.json, e.g. {missing[:10]}"
    # methods too
    methods = sum(len([m for m in v if m in ("get", "post", "put", "delete")]) for v in paths.values())
    assert methods >= 649, methods
