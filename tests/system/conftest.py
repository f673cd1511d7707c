"""Fixtures for the oxve system tests.

`node` (module scope) is a running `oxve daemon` on a temporary root, a free
port on 127.0.0.1 and its own network namespace `oxvet-<random>`; see
oxvetest.Node for what it offers (url, port, root, node, cli(), proxmox(),
restart(), admin). Everything is torn down after the module: the daemon is
stopped by its pid, the namespace deleted, the root removed.
"""

from __future__ import annotations

import atexit
import os
import shutil

import pytest

import oxvetest
from oxvetest import Node, find_binary, need

_live_nodes: list[Node] = []

# tests/system/vm needs the services of the test host VM: it runs there, from
# tests/hostvm/storage-tests.sh (which scripts/test.sh calls), never on the host.
collect_ignore = [] if os.path.isdir("/run/oxve-ctl") else ["vm"]


@atexit.register
def _cleanup_leftovers():
    # Only reached when pytest dies without running fixture teardown.
    for n in list(_live_nodes):
        try:
            n.close()
        except Exception:
            pass


@pytest.fixture(scope="session")
def oxve_bin():
    b = find_binary()
    print(f"\nusing oxve binary {b}")
    return b


@pytest.fixture(scope="session")
def privileged():
    need(os.geteuid() == 0, "system tests need root (network namespaces, root-only socket)")
    need(shutil.which("ip") is not None, "the `ip` tool (iproute2) is needed for network namespaces")


@pytest.fixture(scope="module")
def node(oxve_bin, privileged):
    n = Node(oxve_bin)
    _live_nodes.append(n)
    try:
        n.start()
    except Exception:
        n.close()
        _live_nodes.remove(n)
        raise
    yield n
    try:
        n.close()
    finally:
        _live_nodes.remove(n)


@pytest.fixture(scope="module")
def admin(node):
    """proxmoxer session of admin@pve (Administrator on /)."""
    return node.admin


@pytest.fixture(scope="module")
def nodename(node):
    return node.node


@pytest.fixture(scope="session")
def apidata():
    return oxvetest.load_apidata()
