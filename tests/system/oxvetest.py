"""Helpers shared by the oxve system tests: find the binary, run a node, talk to it.

A `Node` is one `oxve daemon` process with its own root directory, port and
network namespace. Tests drive it the way users do: with proxmoxer, with raw
`requests` calls, and with the `oxve` command-line tools over its Unix socket.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import urllib3
from proxmoxer import ProxmoxAPI

urllib3.disable_warnings()

REPO = Path(__file__).resolve().parents[2]
NODE_NAME = "testnode"
READY_TIMEOUT = 60
# Password of the `admin@pve` user every node gets (Administrator on /).
ADMIN = "admin@pve"
ADMIN_PASSWORD = "admin-secret-1"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, why: str) -> None:
    """Skip when a required capability is missing; in CI that is a failure."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"required capability missing (CI=true forbids skipping): {why}")
    pytest.skip(why)


def find_binary() -> Path:
    env = os.environ.get("OXVE_BIN")
    if env:
        p = Path(env)
        if not (p.is_file() and os.access(p, os.X_OK)):
            pytest.fail(f"OXVE_BIN={env} is not an executable file")
        return p.resolve()
    for kind in ("release", "debug"):
        p = REPO / "target" / kind / "oxve"
        if p.is_file() and os.access(p, os.X_OK):
            return p
    pytest.fail(
        f"oxve binary not found: set OXVE_BIN or build {REPO}/target/release/oxve "
        f"(cargo build --release) or {REPO}/target/debug/oxve"
    )


def find_apidata() -> Path | None:
    candidates = []
    if os.environ.get("OXVE_SHARED"):
        candidates.append(Path(os.environ["OXVE_SHARED"]) / "pve-api" / "apidata.json")
    candidates.append(REPO.parent / "shared" / "pve-api" / "apidata.json")
    for c in candidates:
        if c.is_file():
            return c
    return None


def load_apidata() -> list:
    p = find_apidata()
    if p is None:
        msg = "upstream API schema apidata.json not found (set OXVE_SHARED or put shared/ beside the repo)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return json.loads(p.read_text())


def walk_schema(nodes):
    for n in nodes:
        yield n
        yield from walk_schema(n.get("children") or [])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def netns_exists(name: str) -> bool:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return any(line.split()[0] == name for line in r.stdout.splitlines() if line.strip())


class Node:
    """One oxve daemon started by the tests (and only ever signalled by its pid)."""

    def __init__(self, binary: Path, node: str = NODE_NAME):
        self.binary = Path(binary)
        self.node = node
        self.root = Path(tempfile.mkdtemp(prefix="oxvet-root-"))
        self.port = free_port()
        self.netns = "oxvet-" + secrets.token_hex(4)
        self.host = "127.0.0.1"
        self.url = f"https://{self.host}:{self.port}"
        self.api_url = f"{self.url}/api2/json"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root.parent / (self.root.name + ".daemon.log")
        self._admin: ProxmoxAPI | None = None
        self._admin_ticket = None
        self.starts = 0

    # ---- process control -------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        self.starts += 1
        log = open(self.log_path, "a", buffering=1)
        log.write(f"===== start #{self.starts} =====\n")
        cmd = [
            str(self.binary), "daemon",
            "--root", str(self.root),
            "--port", str(self.port),
            "--netns", self.netns,
            "--node", self.node,
            "--listen", self.host,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        ready = threading.Event()
        proc = self.proc

        def pump():
            for line in proc.stdout:
                log.write("[stdout] " + line)
                if "ready" in line:
                    ready.set()
            log.flush()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.is_set():
            if proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(
                    f"oxve daemon exited with status {proc.returncode} before it was ready; "
                    f"command: {' '.join(cmd)}\n--- log tail ---\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self._signal(signal.SIGKILL)
                raise RuntimeError(
                    f"oxve daemon printed no 'ready' line within {timeout}s\n--- log tail ---\n{self.log_tail()}"
                )
            ready.wait(0.1)
        # "ready" promises the port accepts TLS connections.
        while True:
            try:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                with socket.create_connection((self.host, self.port), timeout=5) as s:
                    with ctx.wrap_socket(s, server_hostname=self.host):
                        break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"daemon said ready but port {self.port} refuses TLS: {e}")
                time.sleep(0.1)

    def _signal(self, sig) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not stop. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
                raise AssertionError(f"daemon did not stop within {timeout}s of SIGTERM")
        return self.proc.returncode

    def kill9(self) -> None:
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def restart(self) -> None:
        """Stop the daemon (works when it already died) and start it on the same root."""
        self.stop()
        self.start()
        self._admin = None
        self._admin_ticket = None

    def close(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self._signal(signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    self.proc.wait(10)
        finally:
            self.stop_vms()
            self.stop_containers()
            if netns_exists(self.netns):
                subprocess.run(["ip", "netns", "del", self.netns], check=False)
            if os.environ.get("OXVE_KEEP_ROOT"):
                print(f"kept node root {self.root} (log {self.log_path})")
            else:
                shutil.rmtree(self.root, ignore_errors=True)
                try:
                    self.log_path.unlink()
                except FileNotFoundError:
                    pass

    def stop_vms(self) -> None:
        """Kill the QEMU processes of this node's VMs that still run (found
        by their pid files below the node's root, and checked to name that
        pid file on their command line before they are signalled)."""
        rundir = self.root / "run/oxve/qemu"
        if not rundir.is_dir():
            return
        for pidfile in rundir.glob("*.pid"):
            try:
                pid = int(pidfile.read_text().strip())
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            if b"-pidfile" in args and args[args.index(b"-pidfile") + 1] == str(pidfile).encode():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                for _ in range(100):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.05)

    def stop_containers(self) -> None:
        """Kill what containers of this node still run and unmount what is
        mounted below its root, so that removing the root can never reach
        through a mount into something else."""
        lxcpath = self.root / "run/oxve/lxc"
        if lxcpath.is_dir():
            for ct in lxcpath.iterdir():
                if ct.is_dir() and ct.name.isdigit():
                    subprocess.run(
                        ["ip", "netns", "exec", self.netns, "lxc-stop", "-k", "-n", ct.name, "-P", str(lxcpath)]
                        if netns_exists(self.netns) else ["lxc-stop", "-k", "-n", ct.name, "-P", str(lxcpath)],
                        capture_output=True, timeout=30,
                    )
        root = str(self.root.resolve())
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for mp in sorted((p for p in points if p == root or p.startswith(root + "/")), key=len, reverse=True):
            if subprocess.run(["umount", mp], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mp], capture_output=True)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # ---- command line ----------------------------------------------------

    def cli(self, *args, input: str | None = None, check: bool = True, argv0: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `oxve ARGS...` (or a symlink named argv0) with OXVE_ROOT set to this node's root."""
        env = dict(os.environ, OXVE_ROOT=str(self.root))
        exe = argv0 or str(self.binary)
        r = subprocess.run(
            [exe, *[str(a) for a in args]],
            env=env, input=input, capture_output=True, text=True, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"`{' '.join(['oxve', *map(str, args)])}` exited {r.returncode}\n"
                f"stdout: {r.stdout.strip()}\nstderr: {r.stderr.strip()}"
            )
        return r

    def add_user(self, userid: str, password: str, role: str | None = None, path: str = "/") -> None:
        """Create a pve-realm user through pveum (as root over the socket), optionally with a role."""
        self.cli("pveum", "user", "add", userid, "--password", password)
        if role:
            self.cli("pveum", "acl", "modify", path, "--users", userid, "--roles", role)

    # ---- API -------------------------------------------------------------

    def proxmox(self, user: str, password: str | None = None, **kw) -> ProxmoxAPI:
        kw.setdefault("verify_ssl", False)
        kw.setdefault("timeout", 30)
        if password is not None:
            kw["password"] = password
        return ProxmoxAPI(self.host, port=self.port, user=user, **kw)

    @property
    def admin(self) -> ProxmoxAPI:
        """proxmoxer logged in as admin@pve (Administrator on /); created on first use."""
        if self._admin is None:
            if not getattr(self, "_admin_created", False):
                self.add_user(ADMIN, ADMIN_PASSWORD, role="Administrator")
                self._admin_created = True
            self._admin = self.proxmox(ADMIN, ADMIN_PASSWORD)
        return self._admin

    def login(self, user: str, password: str, **extra) -> requests.Response:
        return requests.post(
            f"{self.api_url}/access/ticket",
            data={"username": user, "password": password, **extra},
            verify=False, timeout=30,
        )

    def ticket(self, user: str, password: str) -> tuple[str, str]:
        r = self.login(user, password)
        assert r.status_code == 200, f"login of {user} failed: {r.status_code} {r.reason} {r.text}"
        data = r.json()["data"]
        return data["ticket"], data["CSRFPreventionToken"]

    def admin_session(self) -> requests.Session:
        """A raw requests.Session carrying admin@pve's ticket cookie and CSRF header."""
        self.admin  # make sure the user exists
        ticket, csrf = self.ticket(ADMIN, ADMIN_PASSWORD)
        return ticket_session(ticket, csrf)

    def url_for(self, path: str, fmt: str = "json") -> str:
        return f"{self.url}/api2/{fmt}{path}"


def insecure_session() -> requests.Session:
    """A keep-alive session that accepts the node's self-signed certificate.

    trust_env is off: with REQUESTS_CA_BUNDLE in the environment, requests would
    otherwise override the session's verify=False on every request."""
    s = requests.Session()
    s.trust_env = False
    s.verify = False
    return s


def ticket_session(ticket: str | None = None, csrf: str | None = None) -> requests.Session:
    s = insecure_session()
    if ticket:
        s.cookies.set("PVEAuthCookie", ticket)
    if csrf:
        s.headers["CSRFPreventionToken"] = csrf
    return s


def qpath(*parts) -> str:
    return "/".join(quote(str(p), safe="@:!=,") for p in parts)


def wait_task(api: ProxmoxAPI, node: str, upid: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = api.nodes(node).tasks(upid).status.get()
        if st.get("status") == "stopped":
            return st
        assert time.monotonic() < deadline, f"task {upid} still {st} after {timeout}s"
        time.sleep(0.2)


def xterm_roundtrip(node: "Node", user: str, password: str, api_path: str, proxy: dict,
                    line: str, expect: bytes, timeout: float = 60) -> bytes:
    """Speak xterm.js's termproxy protocol to a guest console: connect the
    WebSocket of `api_path` (e.g. `nodes/n/lxc/101`) with the `proxy`
    answer of its termproxy call, authenticate, and send `line` until
    `expect` comes back. Returns what the console printed."""
    import websocket

    auth, _ = node.ticket(user, password)
    url = (f"wss://{node.host}:{node.port}/api2/json/{api_path}/vncwebsocket"
           f"?port={proxy['port']}&vncticket={quote(proxy['ticket'], safe='')}")
    ws = websocket.create_connection(url, subprotocols=["binary"], cookie=f"PVEAuthCookie={auth}",
                                     sslopt={"cert_reqs": ssl.CERT_NONE, "check_hostname": False},
                                     timeout=20)
    try:
        ws.send(f"{user}:{proxy['ticket']}\n")
        _, first = ws.recv_data()
        assert first.startswith(b"OK"), first
        out = b""
        deadline = time.monotonic() + timeout
        while expect not in out:
            assert time.monotonic() < deadline, out[-1000:]
            ws.send(f"0:{len(line)}:{line}")
            ws.settimeout(3)
            try:
                while expect not in out:
                    out += ws.recv_data()[1]
            except websocket.WebSocketTimeoutException:
                pass
        return out
    finally:
        ws.close()


def in_netns(node: "Node", *cmd, check=True, timeout=30) -> subprocess.CompletedProcess:
    """Runs `cmd` in the node's network namespace."""
    return subprocess.run(["ip", "netns", "exec", node.netns, *cmd], capture_output=True, text=True,
                          check=check, timeout=timeout)


def add_bridge(node: "Node", name: str, address: str | None = None) -> None:
    """A bridge (up, with `address` if given) in the node's namespace."""
    in_netns(node, "ip", "link", "add", name, "type", "bridge")
    if address:
        in_netns(node, "ip", "addr", "add", address, "dev", name)
    in_netns(node, "ip", "link", "set", name, "up")


def qemu_test_guest() -> Path:
    """The VM tests' guest (kernel + initramfs), built once and cached by
    tests/qemu/build-guest.sh; its directory."""
    out = subprocess.run([str(REPO / "tests/qemu/build-guest.sh")], capture_output=True, text=True,
                         timeout=1800)
    assert out.returncode == 0, out.stderr[-2000:]
    return Path(out.stdout.strip().splitlines()[-1])
