"""pvesh and pveum, as the multi-call `oxve` binary and through pvesh/pveum symlinks."""

from __future__ import annotations

import json
import os
import re

import pytest


def jcli(node, *args, **kw):
    r = node.cli(*args, "--output-format", "json", **kw)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"`{' '.join(args)} --output-format json` printed no JSON: {r.stdout!r}")


def assert_one_line_error(r, what):
    assert r.returncode != 0, f"{what}: exit 0, stdout {r.stdout!r}"
    err = r.stderr.strip()
    assert err, f"{what}: nothing on stderr"
    assert "\n" not in err, f"{what}: stderr is not one line: {r.stderr!r}"
    return err


# ---- pvesh -------------------------------------------------------------------


def test_pvesh_get_version_formats(node):
    text = node.cli("pvesh", "get", "/version").stdout
    assert re.search(r"\brelease\b.*\b9\.1\b", text), text
    assert re.search(r"\bversion\b.*\b9\.1\.", text), text

    data = jcli(node, "pvesh", "get", "/version")
    assert data["release"] == "9.1" and data["version"].startswith("9.")
    out = node.cli("pvesh", "get", "/version", "--output-format", "json").stdout
    assert out.count("\n") <= 1, "json output is one line"

    pretty = node.cli("pvesh", "get", "/version", "--output-format", "json-pretty").stdout
    assert json.loads(pretty) == data
    assert pretty.count("\n") >= len(data), pretty

    yaml = node.cli("pvesh", "get", "/version", "--output-format", "yaml").stdout
    assert re.search(r"^release: ['\"]?9\.1['\"]?\s*$", yaml, re.M), yaml
    assert re.search(r"^version: ['\"]?9\.1\.\S+['\"]?\s*$", yaml, re.M), yaml


def test_pvesh_ls_root(node):
    out = node.cli("pvesh", "ls", "/").stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert {"access", "cluster", "nodes", "pools", "storage", "version"} <= names, out
    nodes = node.cli("pvesh", "ls", "/nodes").stdout
    assert node.node in {line.split()[-1] for line in nodes.splitlines() if line.strip()}, nodes


def test_pvesh_usage(node):
    out = node.cli("pvesh", "usage", "/access/users", "--verbose").stdout
    assert "pvesh get /access/users" in out, out
    assert "pvesh create /access/users" in out, out
    assert "--userid" in out and "--enabled" in out, out
    # oxve's schema carries no upstream prose: --verbose shows types and constraints.
    assert "--userid <string>" in out and "(required)" in out, out
    assert "format=pve-userid" in out, out
    short = node.cli("pvesh", "usage", "/access/users").stdout
    assert "--userid" not in short, short


def test_pvesh_create_set_delete(node):
    node.cli("pvesh", "create", "/access/users", "--userid", "x@pve", "--comment", "from pvesh")
    u = jcli(node, "pvesh", "get", "/access/users/x@pve")
    assert u["comment"] == "from pvesh"
    node.cli("pvesh", "set", "/access/users/x@pve", "--comment", "changed", "--enable", "0")
    u = jcli(node, "pvesh", "get", "/access/users/x@pve")
    assert u["comment"] == "changed" and int(u["enable"]) == 0
    node.cli("pvesh", "delete", "/access/users/x@pve")
    users = {x["userid"] for x in jcli(node, "pvesh", "get", "/access/users")}
    assert "x@pve" not in users and "root@pam" in users


def test_pvesh_errors(node):
    r = node.cli("pvesh", "get", "/no/such/path", check=False)
    assert_one_line_error(r, "pvesh get /no/such/path")
    r = node.cli("pvesh", "create", "/access/users", "--userid", "bad", check=False)
    err = assert_one_line_error(r, "pvesh create with a bad userid")
    assert "userid" in err, err
    r = node.cli("pvesh", "get", "/access/users/ghost@pve", check=False)
    assert_one_line_error(r, "pvesh get of a missing user")


# ---- pveum -------------------------------------------------------------------


def test_pveum_users(node):
    node.cli("pveum", "user", "add", "u1@pve", "--password", "u1-pass-123", "--email", "u1@example.com",
             "--comment", "cli user")
    users = {u["userid"]: u for u in jcli(node, "pveum", "user", "list")}
    assert users["u1@pve"]["email"] == "u1@example.com" and users["u1@pve"]["comment"] == "cli user"
    assert node.login("u1@pve", "u1-pass-123").status_code == 200

    node.cli("pveum", "user", "modify", "u1@pve", "--comment", "modified", "--enable", "0")
    u = jcli(node, "pvesh", "get", "/access/users/u1@pve")
    assert u["comment"] == "modified" and int(u["enable"]) == 0
    assert node.login("u1@pve", "u1-pass-123").status_code == 401
    node.cli("pveum", "user", "modify", "u1@pve", "--enable", "1")

    r = node.cli("pveum", "user", "add", "u1@pve", check=False)
    assert_one_line_error(r, "adding an existing user")

    node.cli("pveum", "user", "delete", "u1@pve")
    assert "u1@pve" not in {u["userid"] for u in jcli(node, "pveum", "user", "list")}


def test_pveum_groups_roles_acl(node):
    node.cli("pveum", "group", "add", "cligrp", "--comment", "cli group")
    groups = {g["groupid"]: g for g in jcli(node, "pveum", "group", "list")}
    assert groups["cligrp"]["comment"] == "cli group"
    node.cli("pveum", "group", "modify", "cligrp", "--comment", "changed")
    assert jcli(node, "pvesh", "get", "/access/groups/cligrp")["comment"] == "changed"

    node.cli("pveum", "role", "add", "CliRole", "--privs", "VM.Audit,Sys.Audit")
    roles = {r["roleid"]: r for r in jcli(node, "pveum", "role", "list")}
    assert set(roles["CliRole"]["privs"].split(",")) == {"VM.Audit", "Sys.Audit"}
    node.cli("pveum", "role", "modify", "CliRole", "--privs", "Datastore.Audit", "--append", "1")
    assert set(jcli(node, "pvesh", "get", "/access/roles/CliRole")) == {"VM.Audit", "Sys.Audit", "Datastore.Audit"}

    node.cli("pveum", "user", "add", "u2@pve", "--password", "u2-pass-123", "--groups", "cligrp")
    node.cli("pveum", "acl", "modify", "/vms/100", "--users", "u2@pve", "--roles", "CliRole")
    node.cli("pveum", "acl", "modify", "/storage/local", "--groups", "cligrp", "--roles", "PVEDatastoreUser")
    acl = jcli(node, "pveum", "acl", "list")
    assert any(a["path"] == "/vms/100" and a["ugid"] == "u2@pve" and a["roleid"] == "CliRole"
               and a["type"] == "user" for a in acl), acl
    assert any(a["path"] == "/storage/local" and a["ugid"] == "cligrp" and a["type"] == "group" for a in acl), acl

    perms = jcli(node, "pveum", "user", "permissions", "u2@pve")
    assert set(perms) == {"/vms/100", "/storage/local"}, perms
    assert set(perms["/vms/100"]) == {"VM.Audit", "Sys.Audit", "Datastore.Audit"}, perms
    perms = jcli(node, "pveum", "user", "permissions", "u2@pve", "--path", "/vms/100")
    assert "VM.Audit" in perms["/vms/100"], perms

    node.cli("pveum", "acl", "delete", "/vms/100", "--users", "u2@pve", "--roles", "CliRole")
    acl = jcli(node, "pveum", "acl", "list")
    assert not any(a["path"] == "/vms/100" and a["ugid"] == "u2@pve" for a in acl), acl

    node.cli("pveum", "role", "delete", "CliRole")
    assert "CliRole" not in {r["roleid"] for r in jcli(node, "pveum", "role", "list")}
    node.cli("pveum", "group", "delete", "cligrp")
    assert "cligrp" not in {g["groupid"] for g in jcli(node, "pveum", "group", "list")}


def test_pveum_pools(node):
    node.cli("pveum", "pool", "add", "clipool", "--comment", "cli pool")
    pools = {p["poolid"]: p for p in jcli(node, "pveum", "pool", "list")}
    assert pools["clipool"]["comment"] == "cli pool"
    node.cli("pveum", "pool", "modify", "clipool", "--comment", "changed")
    assert {p["poolid"]: p for p in jcli(node, "pveum", "pool", "list")}["clipool"]["comment"] == "changed"
    node.cli("pveum", "pool", "delete", "clipool")
    assert "clipool" not in {p["poolid"] for p in jcli(node, "pveum", "pool", "list")}


def test_pveum_tokens(node):
    node.cli("pveum", "user", "add", "u3@pve", "--password", "u3-pass-123")
    node.cli("pveum", "acl", "modify", "/", "--users", "u3@pve", "--roles", "PVEAuditor")
    tok = jcli(node, "pveum", "user", "token", "add", "u3@pve", "ci", "--privsep", "0", "--comment", "for ci")
    assert tok["full-tokenid"] == "u3@pve!ci", tok
    secret = tok["value"]
    listed = {t["tokenid"]: t for t in jcli(node, "pveum", "user", "token", "list", "u3@pve")}
    assert listed["ci"]["comment"] == "for ci", listed
    api = node.proxmox("u3@pve", token_name="ci", token_value=secret)
    assert api.nodes(node.node).status.get()["cpuinfo"]["cpus"] >= 1
    node.cli("pveum", "user", "token", "modify", "u3@pve", "ci", "--comment", "renamed")
    assert jcli(node, "pveum", "user", "token", "list", "u3@pve")[0]["comment"] == "renamed"
    node.cli("pveum", "user", "token", "remove", "u3@pve", "ci")
    assert jcli(node, "pveum", "user", "token", "list", "u3@pve") == []


def test_pveum_passwd_from_stdin(node):
    node.cli("pveum", "user", "add", "u4@pve", "--password", "u4-old-pass")
    node.cli("pveum", "passwd", "u4@pve", input="u4-new-pass\nu4-new-pass\n")
    assert node.login("u4@pve", "u4-new-pass").status_code == 200
    assert node.login("u4@pve", "u4-old-pass").status_code == 401
    r = node.cli("pveum", "passwd", "u4@pve", input="short\nshort\n", check=False)
    assert_one_line_error(r, "a too short password")


# ---- help and dispatch ----------------------------------------------------------


@pytest.mark.parametrize("args,expect", [
    (["--help"], "pvesh"),
    (["pvesh", "--help"], "get"),
    (["pveum", "--help"], "user"),
    (["pveum", "user", "add", "--help"], "userid"),
    (["pvesh", "get", "/version", "--help"], "pvesh get /version"),
    (["daemon", "--help"], "--netns"),
])
def test_help(node, args, expect):
    r = node.cli(*args)
    out = r.stdout + r.stderr
    assert expect in out, f"`oxve {' '.join(args)}` output lacks {expect!r}: {out!r}"


def test_symlink_dispatch(node, tmp_path):
    for name in ("pvesh", "pveum"):
        os.symlink(node.binary, tmp_path / name)
    r = node.cli("get", "/version", "--output-format", "json", argv0=str(tmp_path / "pvesh"))
    assert json.loads(r.stdout)["release"] == "9.1"
    r = node.cli("user", "list", "--output-format", "json", argv0=str(tmp_path / "pveum"))
    assert "root@pam" in {u["userid"] for u in json.loads(r.stdout)}
    r = node.cli("--help", argv0=str(tmp_path / "pveum"))
    assert "user" in r.stdout + r.stderr
