"""Authentication and access control, driven with proxmoxer and raw requests as users do."""

from __future__ import annotations

import time

import pyotp
import pytest
import requests
from proxmoxer import AuthenticationError
from proxmoxer.core import ResourceException

from oxvetest import ADMIN, ticket_session


def status_of(excinfo) -> int:
    return excinfo.value.status_code


# ---- tickets -------------------------------------------------------------


def test_ticket_login_with_proxmoxer(node, admin):
    node.add_user("alice@pve", "alice-pass-1", role="PVEAuditor")
    r = node.login("alice@pve", "alice-pass-1")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["username"] == "alice@pve"
    assert data["ticket"].startswith("PVE:alice@pve:"), data["ticket"]
    assert len(data["CSRFPreventionToken"]) > 10

    api = node.proxmox("alice@pve", "alice-pass-1")
    ticket, csrf = api.get_tokens()
    assert ticket and csrf
    version = api.version.get()
    assert version["release"] == "9.1"
    # The auditor can read the user list (Sys.Audit on /) ...
    users = {u["userid"] for u in api.access.users.get()}
    assert {"alice@pve", ADMIN} <= users
    # ... but not create users.
    with pytest.raises(ResourceException) as e:
        api.access.users.post(userid="mallory@pve")
    assert status_of(e) == 403


def test_wrong_password_is_401(node, admin):
    with pytest.raises(AuthenticationError):
        node.proxmox("alice@pve", "wrong-password")
    r = node.login("alice@pve", "wrong-password")
    assert r.status_code == 401, (r.status_code, r.text)
    r = node.login("nobody@pve", "whatever-pass")
    assert r.status_code == 401, (r.status_code, r.text)
    # no ticket at all
    r = requests.get(node.url_for("/access/users"), verify=False, timeout=30)
    assert r.status_code == 401, (r.status_code, r.text)
    # a forged ticket
    s = ticket_session("PVE:alice@pve:66000000::AAAA", None)
    r = s.get(node.url_for("/access/users"), timeout=30)
    assert r.status_code == 401, (r.status_code, r.text)


def test_ticket_renewal(node, admin):
    ticket, _ = node.ticket("alice@pve", "alice-pass-1")
    r = node.login("alice@pve", ticket)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["username"] == "alice@pve"
    new_ticket = data["ticket"]
    assert new_ticket.startswith("PVE:alice@pve:")
    s = ticket_session(new_ticket, data["CSRFPreventionToken"])
    r = s.get(node.url_for("/access/users"), timeout=30)
    assert r.status_code == 200, r.text
    # a ticket for alice cannot be renewed as somebody else
    r = node.login(ADMIN, ticket)
    assert r.status_code == 401, r.text


def test_csrf_token_required_for_writes(node, admin):
    ticket, csrf = node.ticket(ADMIN, "admin-secret-1")
    url = node.url_for("/access/groups")

    s = ticket_session(ticket, None)
    assert s.get(url, timeout=30).status_code == 200  # GET needs no CSRF token
    r = s.post(url, data={"groupid": "csrf-test"}, timeout=30)
    assert r.status_code == 401, f"POST without CSRFPreventionToken: {r.status_code} {r.text}"

    r = s.post(url, data={"groupid": "csrf-test"}, headers={"CSRFPreventionToken": csrf[:-4] + "AAAA"}, timeout=30)
    assert r.status_code == 401, f"POST with a wrong CSRFPreventionToken: {r.status_code} {r.text}"

    groups = {g["groupid"] for g in admin.access.groups.get()}
    assert "csrf-test" not in groups, "a refused POST created the group anyway"

    r = s.post(url, data={"groupid": "csrf-test"}, headers={"CSRFPreventionToken": csrf}, timeout=30)
    assert r.status_code == 200, r.text
    assert "csrf-test" in {g["groupid"] for g in admin.access.groups.get()}
    admin.access.groups("csrf-test").delete()


# ---- TOTP ------------------------------------------------------------------


def test_totp_login(node, admin):
    userid, password = "bob@pve", "bob-pass-123"
    node.add_user(userid, password, role="PVEAuditor")
    totp = pyotp.TOTP(pyotp.random_base32())
    uri = totp.provisioning_uri(name=userid, issuer_name="oxve-test")

    bob = node.proxmox(userid, password)
    reg_code = totp.now()
    res = bob.access.tfa(userid).post(type="totp", totp=uri, value=reg_code, password=password,
                                      description="test phone")
    assert res.get("id"), res
    entries = bob.access.tfa(userid).get()
    assert [e["type"] for e in entries] == ["totp"], entries
    assert entries[0]["description"] == "test phone"

    # The password alone now yields only a TFA challenge.
    r = node.login(userid, password)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data.get("NeedTFA") or data["ticket"].startswith("PVE:!tfa!"), data
    assert data.get("NeedTFA") is not None, "proxmoxer only continues with TFA when NeedTFA is in the answer"
    challenge = data["ticket"]
    # ... which is no ticket for the API.
    r = ticket_session(challenge, data.get("CSRFPreventionToken")).get(node.url_for("/access/users"), timeout=30)
    assert r.status_code == 401, f"a TFA challenge worked as a ticket: {r.status_code}"

    # A wrong code fails.
    wrong = "%06d" % ((int(totp.now()) + 500000) % 1000000)
    r = node.login(userid, f"totp:{wrong}", **{"tfa-challenge": challenge})
    assert r.status_code == 401, (r.status_code, r.text)
    with pytest.raises(AuthenticationError):
        node.proxmox(userid, password, otp=wrong)

    # proxmoxer's own TFA login with the right code.
    try:
        api = node.proxmox(userid, password, otp=totp.now())
    except AuthenticationError:
        # A server may refuse to accept a code twice (the one used to register);
        # then the next window's code must work.
        assert totp.now() == reg_code, "TOTP login with a fresh, correct code failed"
        time.sleep(31 - time.time() % 30)
        api = node.proxmox(userid, password, otp=totp.now())
    ticket, _ = api.get_tokens()
    assert ticket.startswith("PVE:bob@pve:"), ticket
    assert "!tfa!" not in ticket
    assert userid in {u["userid"] for u in api.access.users.get()}


# ---- API tokens ------------------------------------------------------------


def test_api_tokens(node, admin):
    userid = "carol@pve"
    node.add_user(userid, "carol-pass-1", role="PVEAuditor")
    n = node.node

    res = admin.access.users(userid).token("sep").post(privsep=1, comment="separated")
    assert res["full-tokenid"] == "carol@pve!sep", res
    sep_secret = res["value"]
    assert len(sep_secret) >= 16
    res = admin.access.users(userid).token("full").post(privsep=0)
    full_secret = res["value"]
    assert res["info"]["privsep"] in (0, False, "0"), res

    tokens = {t["tokenid"]: t for t in admin.access.users(userid).token.get()}
    assert set(tokens) == {"sep", "full"}, tokens
    assert tokens["sep"]["comment"] == "separated"
    info = admin.access.users(userid).token("sep").get()
    assert info["privsep"] in (1, True, "1"), info
    assert "value" not in info, "the token secret must only be shown once"

    # privilege-separated token without an ACL of its own: nothing.
    sep = node.proxmox(userid, token_name="sep", token_value=sep_secret)
    with pytest.raises(ResourceException) as e:
        sep.nodes(n).status.get()
    assert status_of(e) == 403
    assert sep.access.permissions.get() in ({}, []), "a privsep token without ACLs has no privileges"
    assert sep.version.get()["release"] == "9.1"  # but it is authenticated

    # the unseparated token has the user's privileges.
    full = node.proxmox(userid, token_name="full", token_value=full_secret)
    assert full.nodes(n).status.get()["cpuinfo"]["cpus"] >= 1

    # give the separated token its own ACL: now it works.
    admin.access.acl.put(path="/", roles="PVEAuditor", tokens="carol@pve!sep")
    acl = admin.access.acl.get()
    assert any(a["ugid"] == "carol@pve!sep" and a["type"] == "token" and a["roleid"] == "PVEAuditor"
               and a["path"] == "/" for a in acl), acl
    assert sep.nodes(n).status.get()["cpuinfo"]["cpus"] >= 1

    # a token can never exceed its user: Administrator on the token, auditor on the user.
    admin.access.acl.put(path="/", roles="Administrator", tokens="carol@pve!sep")
    with pytest.raises(ResourceException) as e:
        sep.access.users.post(userid="tokenmade@pve")
    assert status_of(e) == 403
    assert "tokenmade@pve" not in {u["userid"] for u in admin.access.users.get()}

    # wrong secret, then removed token: 401.
    bad = node.proxmox(userid, token_name="sep", token_value="00000000-0000-0000-0000-000000000000")
    with pytest.raises(ResourceException) as e:
        bad.version.get()
    assert status_of(e) == 401
    admin.access.users(userid).token("sep").delete()
    with pytest.raises(ResourceException) as e:
        sep.version.get()
    assert status_of(e) == 401
    assert {t["tokenid"] for t in admin.access.users(userid).token.get()} == {"full"}
    assert not any(a["ugid"] == "carol@pve!sep" for a in admin.access.acl.get()), \
        "removing a token must remove its ACL entries"


# ---- CRUD ------------------------------------------------------------------


def test_users_crud(node, admin):
    admin.access.groups.post(groupid="devs")
    admin.access.users.post(userid="dan@pve", password="dan-pass-12", email="dan@example.com",
                            firstname="Dan", lastname="Dev", comment="first", groups="devs",
                            expire=4102444800)
    u = admin.access.users("dan@pve").get()
    assert u["email"] == "dan@example.com"
    assert u["firstname"] == "Dan" and u["lastname"] == "Dev"
    assert u["comment"] == "first"
    assert u["groups"] == ["devs"], u
    assert u["expire"] == 4102444800
    assert u["enable"] in (1, True)
    listed = {x["userid"]: x for x in admin.access.users.get()}
    assert "dan@pve" in listed and listed["dan@pve"]["email"] == "dan@example.com"
    assert admin.access.groups("devs").get()["members"] == ["dan@pve"]

    admin.access.users("dan@pve").put(comment="second", email="dan2@example.com", enable=0)
    u = admin.access.users("dan@pve").get()
    assert u["comment"] == "second" and u["email"] == "dan2@example.com"
    assert u["enable"] in (0, False)
    # the disabled user cannot log in
    assert node.login("dan@pve", "dan-pass-12").status_code == 401

    with pytest.raises(ResourceException) as e:
        admin.access.users.post(userid="dan@pve")
    assert status_of(e) >= 400, "creating an existing user must fail"

    admin.access.users("dan@pve").delete()
    assert "dan@pve" not in {x["userid"] for x in admin.access.users.get()}
    with pytest.raises(ResourceException):
        admin.access.users("dan@pve").get()
    assert admin.access.groups("devs").get()["members"] == []
    admin.access.groups("devs").delete()


def test_groups_crud(node, admin):
    admin.access.groups.post(groupid="ops", comment="operators")
    g = admin.access.groups("ops").get()
    assert g["comment"] == "operators" and g["members"] == [], g
    listed = {g["groupid"]: g for g in admin.access.groups.get()}
    assert listed["ops"]["comment"] == "operators"
    admin.access.groups("ops").put(comment="ops team")
    assert admin.access.groups("ops").get()["comment"] == "ops team"
    node.add_user("ops1@pve", "ops1-pass-1")
    admin.access.users("ops1@pve").put(groups="ops")
    assert admin.access.groups("ops").get()["members"] == ["ops1@pve"]
    listed = {g["groupid"]: g for g in admin.access.groups.get()}
    assert listed["ops"].get("users") == "ops1@pve", listed["ops"]
    with pytest.raises(ResourceException):
        admin.access.groups.post(groupid="ops")
    admin.access.groups("ops").delete()
    assert "ops" not in {g["groupid"] for g in admin.access.groups.get()}
    assert admin.access.users("ops1@pve").get().get("groups", []) == []
    with pytest.raises(ResourceException):
        admin.access.groups("ops").get()


def test_roles_crud(node, admin):
    roles = {r["roleid"]: r for r in admin.access.roles.get()}
    for builtin in ("Administrator", "NoAccess", "PVEAuditor", "PVEVMAdmin", "PVEVMUser", "PVEAdmin",
                    "PVEUserAdmin", "PVEPoolAdmin", "PVEDatastoreAdmin", "PVESysAdmin"):
        assert builtin in roles, f"built-in role {builtin} missing"
        assert roles[builtin]["special"] in (1, True), roles[builtin]
    assert admin.access.roles("NoAccess").get() == {}
    adm = admin.access.roles("Administrator").get()
    assert {"Sys.Modify", "Permissions.Modify", "VM.Allocate", "Datastore.Allocate"} <= set(adm)

    admin.access.roles.post(roleid="Watcher", privs="VM.Audit,Sys.Audit")
    assert set(admin.access.roles("Watcher").get()) == {"VM.Audit", "Sys.Audit"}
    listed = {r["roleid"]: r for r in admin.access.roles.get()}
    assert set(listed["Watcher"]["privs"].split(",")) == {"VM.Audit", "Sys.Audit"}
    assert listed["Watcher"].get("special", 0) in (0, False)

    admin.access.roles("Watcher").put(privs="Datastore.Audit", append=1)
    assert set(admin.access.roles("Watcher").get()) == {"VM.Audit", "Sys.Audit", "Datastore.Audit"}
    admin.access.roles("Watcher").put(privs="Pool.Audit")
    assert set(admin.access.roles("Watcher").get()) == {"Pool.Audit"}

    with pytest.raises(ResourceException) as e:
        admin.access.roles("Administrator").put(privs="VM.Audit")
    assert status_of(e) >= 400, "built-in roles cannot be modified"

    admin.access.roles("Watcher").delete()
    assert "Watcher" not in {r["roleid"] for r in admin.access.roles.get()}


def test_acl_crud(node, admin):
    node.add_user("acl1@pve", "acl1-pass-1")
    admin.access.groups.post(groupid="aclgrp")
    admin.access.acl.put(path="/vms/100", roles="PVEVMUser", users="acl1@pve")
    admin.access.acl.put(path="/storage/local", roles="PVEDatastoreUser", groups="aclgrp", propagate=0)
    acl = admin.access.acl.get()

    def find(path, ugid):
        return [a for a in acl if a["path"] == path and a["ugid"] == ugid]

    e1 = find("/vms/100", "acl1@pve")
    assert len(e1) == 1 and e1[0]["type"] == "user" and e1[0]["roleid"] == "PVEVMUser"
    assert e1[0]["propagate"] in (1, True)
    e2 = find("/storage/local", "aclgrp")
    assert len(e2) == 1 and e2[0]["type"] == "group" and e2[0]["roleid"] == "PVEDatastoreUser"
    assert e2[0]["propagate"] in (0, False)

    admin.access.acl.put(path="/vms/100", roles="PVEVMUser", users="acl1@pve", delete=1)
    acl = admin.access.acl.get()
    assert find("/vms/100", "acl1@pve") == []
    assert len(find("/storage/local", "aclgrp")) == 1

    # unknown users, roles and malformed paths are refused
    for bad in ({"path": "/", "roles": "NoSuchRole", "users": "acl1@pve"},
                {"path": "/", "roles": "PVEAuditor", "users": "ghost@pve"},
                {"path": "/no/such/kind", "roles": "PVEAuditor", "users": "acl1@pve"}):
        with pytest.raises(ResourceException) as e:
            admin.access.acl.put(**bad)
        assert status_of(e) >= 400, bad

    admin.access.groups("aclgrp").delete()
    assert find_after_delete(admin, "/storage/local", "aclgrp") == [], \
        "deleting a group must remove its ACL entries"


def find_after_delete(admin, path, ugid):
    return [a for a in admin.access.acl.get() if a["path"] == path and a["ugid"] == ugid]


def test_pools_crud(node, admin):
    admin.pools.post(poolid="pool1", comment="first pool")
    pools = {p["poolid"]: p for p in admin.pools.get()}
    assert pools["pool1"]["comment"] == "first pool"
    one = admin.pools.get(poolid="pool1")
    assert len(one) == 1 and one[0]["poolid"] == "pool1" and one[0]["members"] == []
    legacy = admin.pools("pool1").get()
    assert legacy["members"] == [] and legacy["comment"] == "first pool"

    admin.pools.put(poolid="pool1", comment="renamed")
    assert admin.pools.get(poolid="pool1")[0]["comment"] == "renamed"
    admin.pools("pool1").put(comment="legacy update")
    assert admin.pools.get(poolid="pool1")[0]["comment"] == "legacy update"

    with pytest.raises(ResourceException):
        admin.pools.post(poolid="pool1")
    admin.pools.delete(poolid="pool1")
    assert "pool1" not in {p["poolid"] for p in admin.pools.get()}


# ---- permissions -----------------------------------------------------------


def test_permissions_of_restricted_user(node, admin):
    admin.access.roles.post(roleid="VMAuditOnly", privs="VM.Audit")
    node.add_user("eve@pve", "eve-pass-12")
    admin.access.acl.put(path="/vms/100", roles="VMAuditOnly", users="eve@pve")
    eve = node.proxmox("eve@pve", "eve-pass-12")
    perms = eve.access.permissions.get()
    assert set(perms) == {"/vms/100"}, perms
    assert set(perms["/vms/100"]) == {"VM.Audit"}, perms
    assert perms["/vms/100"]["VM.Audit"] in (1, True)
    # a path below the ACL path inherits (propagate=1), other paths have nothing
    assert eve.access.permissions.get(path="/vms/100").get("/vms/100", {}).get("VM.Audit") in (1, True)
    assert not eve.access.permissions.get(path="/").get("/", {}), "eve has no privileges on /"

    for call in (lambda: eve.nodes(node.node).status.get(),
                 lambda: eve.access.users.post(userid="evil@pve"),
                 lambda: eve.access.acl.put(path="/", roles="Administrator", users="eve@pve"),
                 lambda: eve.cluster.status.get()):
        with pytest.raises(ResourceException) as e:
            call()
        assert status_of(e) == 403, e.value
    assert "evil@pve" not in {u["userid"] for u in admin.access.users.get()}
    # the user list of an unprivileged user holds only itself
    assert {u["userid"] for u in eve.access.users.get()} == {"eve@pve"}

    # root (or an admin) may ask for another user's permissions
    perms = admin.access.permissions.get(userid="eve@pve")
    assert set(perms) == {"/vms/100"}, perms


def test_password_change(node, admin):
    node.add_user("frank@pve", "frank-old-1")
    frank = node.proxmox("frank@pve", "frank-old-1")
    frank.access.password.put(userid="frank@pve", password="frank-new-2",
                              **{"confirmation-password": "frank-old-1"})
    api = node.proxmox("frank@pve", "frank-new-2")
    assert api.version.get()["release"] == "9.1"
    with pytest.raises(AuthenticationError):
        node.proxmox("frank@pve", "frank-old-1")
    # one user cannot change another's password
    with pytest.raises(ResourceException) as e:
        api.access.password.put(userid="alice@pve", password="hijacked-1",
                                **{"confirmation-password": "frank-new-2"})
    assert status_of(e) == 403
    assert node.login("alice@pve", "hijacked-1").status_code == 401
    # an administrator can
    admin.access.password.put(userid="frank@pve", password="frank-admin-3",
                              **{"confirmation-password": "admin-secret-1"})
    assert node.login("frank@pve", "frank-admin-3").status_code == 200
