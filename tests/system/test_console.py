"""The node's xterm.js console: POST /nodes/{node}/termproxy and the WebSocket
at GET /nodes/{node}/vncwebsocket, spoken as upstream's xterm.js client does.

Protocol (upstream's termproxy): the client's first message is
`<user>:<ticket>\\n`, the server answers `OK`; then `0:<bytes>:<data>` is
input, `1:<cols>:<rows>:` a resize, `2` a ping; output comes as binary frames.

root@pam gets a root login shell (`/bin/login -f root`). PAM logins need the
host's root password, which tests do not have, so root@pam comes in the way
the host's own tools do: proxmoxer's `local` backend (pvesh) and the WebSocket
over the daemon's root-only Unix socket. Other users go through HTTPS with the
PVEAuthCookie, as the web UI does, and get upstream's `/bin/login` prompt.
"""

from __future__ import annotations

import os
import socket
import ssl
import time

import pytest
import requests
import websocket
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from oxvetest import ADMIN, ADMIN_PASSWORD, qpath, ticket_session, wait_task

PASSWORD = "console-secret-1"


@pytest.fixture(scope="module")
def root_api(node, tmp_path_factory):
    """proxmoxer as root@pam: the `local` backend running pvesh (the oxve
    binary under that name) against this node's Unix socket."""
    bindir = tmp_path_factory.mktemp("bin")
    os.symlink(node.binary, bindir / "pvesh")
    mp = pytest.MonkeyPatch()
    mp.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    mp.setenv("OXVE_ROOT", str(node.root))
    yield ProxmoxAPI(backend="local", service="PVE", timeout=60)
    mp.undo()


@pytest.fixture(scope="module")
def users(node):
    node.add_user("console@pve", PASSWORD, role="PVEAdmin")  # has Sys.Console
    node.add_user("auditor@pve", PASSWORD, role="PVEAuditor")  # has not
    return node


def ws_url(node, port, ticket, scheme="wss"):
    host = f"{node.host}:{node.port}" if scheme == "wss" else "localhost"
    return (
        f"{scheme}://{host}/api2/json/nodes/{qpath(node.node)}/vncwebsocket"
        f"?port={port}&vncticket={requests.utils.quote(ticket, safe='')}"
    )


def connect_cookie(node, port, ticket, auth_ticket) -> websocket.WebSocket:
    """Over HTTPS with the login cookie, as the web UI's xterm.js does."""
    return websocket.create_connection(
        ws_url(node, port, ticket),
        subprotocols=["binary"],
        cookie=f"PVEAuthCookie={auth_ticket}",
        sslopt={"cert_reqs": ssl.CERT_NONE, "check_hostname": False},
        timeout=20,
    )


def connect_local(node, port, ticket) -> websocket.WebSocket:
    """Over the root-only Unix socket (peer credentials: root@pam)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect(str(node.root / "run/oxve/api.sock"))
    return websocket.create_connection(
        ws_url(node, port, ticket, scheme="ws"), subprotocols=["binary"], socket=sock, timeout=20
    )


def data(text: str) -> str:
    return f"0:{len(text.encode())}:{text}"


def read_until(ws: websocket.WebSocket, needle: bytes, timeout: float = 30) -> bytes:
    """Collects output frames until `needle` appears; fails on timeout or close."""
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out:
        assert time.monotonic() < deadline, f"{needle!r} not seen within {timeout}s; got {out[-2000:]!r}"
        op, payload = ws.recv_data()
        assert op in (websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_TEXT), (
            f"connection closed (opcode {op}) before {needle!r}; got {out[-2000:]!r}"
        )
        assert op == websocket.ABNF.OPCODE_BINARY, "terminal output must come as binary frames"
        out += payload
    return out


def authenticate(ws: websocket.WebSocket, user: str, ticket: str) -> bytes:
    ws.send(f"{user}:{ticket}\n")
    op, first = ws.recv_data()
    assert op == websocket.ABNF.OPCODE_BINARY and first.startswith(b"OK"), (op, first)
    return first[2:]


def test_root_shell_runs_commands_and_resizes(node, root_api):
    r = root_api.nodes(node.node).termproxy.post()
    assert set(r) == {"user", "ticket", "port", "upid"}, r
    assert r["user"] == "root@pam"
    assert 5900 <= int(r["port"]) <= 5999
    assert r["ticket"].startswith("PVEVNC:")
    assert r["upid"].startswith(f"UPID:{node.node}:") and ":vncshell::root@pam:" in r["upid"]

    ws = connect_local(node, r["port"], r["ticket"])
    assert ws.getsubprotocol() == "binary"
    try:
        authenticate(ws, "root@pam", r["ticket"])
        ws.send("1:111:37:")
        ws.send("2")  # a ping in between changes nothing
        ws.send(data("echo oxve-$((6*7))\n"))
        read_until(ws, b"oxve-42")
        # The resize reached the terminal; one message may also be split
        # across frames and several may share one.
        cmd = data("stty size; echo size-$((1+1))\n")
        ws.send(cmd[:5])
        ws.send(cmd[5:] + data("tty\n"))
        out = read_until(ws, b"size-2")
        assert b"37 111" in out, out[-500:]
        read_until(ws, b"/dev/pts/")
        ws.send(data("exit\n"))
        # The shell's end closes the session.
        deadline = time.monotonic() + 20
        while True:
            op, _ = ws.recv_data(control_frame=True)
            if op == websocket.ABNF.OPCODE_CLOSE:
                break
            assert time.monotonic() < deadline, "session still open after the shell exited"
    finally:
        ws.close()
    st = wait_task(root_api, node.node, r["upid"])
    assert st["exitstatus"] == "OK", st


def test_other_users_get_a_login_prompt_over_https(node, users):
    api = node.proxmox("console@pve", PASSWORD)
    r = api.nodes(node.node).termproxy.post()
    assert r["user"] == "console@pve"
    auth, _csrf = node.ticket("console@pve", PASSWORD)
    ws = connect_cookie(node, r["port"], r["ticket"], auth)
    try:
        authenticate(ws, "console@pve", r["ticket"])
        ws.send("1:80:24:")
        # Upstream: anyone but root@pam must log in on the host (/bin/login).
        read_until(ws, b"login: ")
    finally:
        ws.close()
    st = wait_task(api, node.node, r["upid"])
    assert st["exitstatus"] == "OK", st


def test_ticket_is_checked_bound_and_single_use(node, users):
    api = node.proxmox("console@pve", PASSWORD)
    auth, _ = node.ticket("console@pve", PASSWORD)

    # A wrong ticket on the WebSocket request: refused before any upgrade.
    r = api.nodes(node.node).termproxy.post()
    forged = r["ticket"][:-4] + ("0000" if not r["ticket"].endswith("0000") else "1111")
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        connect_cookie(node, r["port"], forged, auth)
    assert e.value.status_code == 401
    # The right ticket on another port is wrong too.
    other = api.nodes(node.node).termproxy.post()
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        connect_cookie(node, other["port"], r["ticket"], auth)
    assert e.value.status_code == 401

    # A ticket issued to one user is no good to another, even one allowed a console.
    assert node.admin  # creates admin@pve (Administrator: Sys.Console everywhere)
    admin_auth, _ = node.ticket(ADMIN, ADMIN_PASSWORD)
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        connect_cookie(node, r["port"], r["ticket"], admin_auth)
    assert e.value.status_code == 401

    # The right ticket upgrades, but a wrong first line ends the session.
    ws = connect_cookie(node, r["port"], r["ticket"], auth)
    try:
        ws.send(f"console@pve:{forged}\n")
        op, payload = ws.recv_data(control_frame=True)
        assert op == websocket.ABNF.OPCODE_CLOSE, (op, payload)
    finally:
        ws.close()
    st = wait_task(api, node.node, r["upid"])
    assert "authentication request failed" in st["exitstatus"], st

    # A ticket connects once.
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        connect_cookie(node, r["port"], r["ticket"], auth)
    assert e.value.status_code == 401

    # Nobody connecting: the session gives up after 10 s, as upstream's termproxy.
    st = wait_task(api, node.node, other["upid"], timeout=30)
    assert "timed out" in st["exitstatus"], st


def test_sys_console_is_required(node, users):
    auditor = node.proxmox("auditor@pve", PASSWORD)
    s = ticket_session(*node.ticket("auditor@pve", PASSWORD))
    r = s.post(node.url_for(f"/nodes/{qpath(node.node)}/termproxy"))
    assert r.status_code == 403, (r.status_code, r.text)
    assert "Sys.Console" in r.text
    r = s.get(
        node.url_for(f"/nodes/{qpath(node.node)}/vncwebsocket"),
        params={"port": 5900, "vncticket": "PVEVNC:00000000::00"},
    )
    assert r.status_code == 403, (r.status_code, r.text)
    assert auditor.nodes(node.node).status.get()  # the user as such works


def test_root_only_commands_and_unknown_nodes(node, root_api, users):
    s = ticket_session(*node.ticket("console@pve", PASSWORD))
    url = node.url_for(f"/nodes/{qpath(node.node)}/termproxy")
    # `upgrade` and `ceph_install` are not built: a clear 501, not a shell.
    with pytest.raises(ResourceException) as e:
        root_api.nodes(node.node).termproxy.post(cmd="upgrade")
    assert "not implemented" in str(e.value)
    with pytest.raises(ResourceException) as e:
        root_api.nodes(node.node).termproxy.post(cmd="ceph_install")
    assert "not implemented" in str(e.value)
    resp = s.post(url, data={"cmd": "nosuch"})
    assert resp.status_code == 400, resp.text
    resp = s.post(node.url_for("/nodes/othernode/termproxy"))
    assert resp.status_code == 500 and "no such cluster node" in resp.text, resp.text
