"""One namespace check for the CLI path and the netlink path, on real files.

A FIFO, a plain file or a symlink planted under /run/netns is refused by
both paths at once, never waited on.  Each check runs in a child process
with a timeout, so a regression that blocks fails instead of hanging.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.functional import netns

_PROBE = """
import sys
from conntrack_lib import exceptions, netns
from conntrack_lib import netlink_socket
from tests.functional import netns as helpers
name = sys.argv[1]
flow = {"family": "ipv4", "protonum": 17, "src": "10.0.0.1", "dst": "10.0.0.2",
        "sport": 1, "dport": 2, "icmp_type": None, "icmp_code": None,
        "icmp_id": None, "zone": 0}
outcomes = []
outcomes.append("probe=" + str(helpers.netlink_answers(name)))
try:
    netlink_socket.delete_flows(name, [flow])
    outcomes.append("delete=ran")
except exceptions.NamespaceNotFoundError:
    outcomes.append("delete=refused")
try:
    netns.ensure_exists(name)
    outcomes.append("cli=ran")
except exceptions.NamespaceNotFoundError:
    outcomes.append("cli=refused")
print(" ".join(outcomes))
"""


def _check(name: str) -> str:
    done = subprocess.run([sys.executable, "-c", _PROBE, name], capture_output=True,
                          text=True, timeout=30, check=True)
    return done.stdout.strip()


@pytest.fixture
def planted() -> Iterator[str]:
    name = netns.unique_name("ctlt-planted")
    path = f"/run/netns/{name}"
    yield name
    if os.path.lexists(path):
        os.unlink(path)


def test_fifo_under_run_netns_is_refused_without_hanging(planted: str) -> None:
    os.makedirs("/run/netns", exist_ok=True)
    os.mkfifo(f"/run/netns/{planted}", 0o600)
    assert _check(planted) == "probe=False delete=refused cli=refused"


def test_plain_file_under_run_netns_is_refused(planted: str) -> None:
    os.makedirs("/run/netns", exist_ok=True)
    with open(f"/run/netns/{planted}", "w", encoding="ascii"):
        pass
    assert _check(planted) == "probe=False delete=refused cli=refused"


def test_symlink_to_a_real_namespace_is_refused(planted: str, ns: str) -> None:
    os.symlink(f"/run/netns/{ns}", f"/run/netns/{planted}")
    assert _check(planted) == "probe=False delete=refused cli=refused"


def test_real_namespace_still_accepted(ns: str) -> None:
    assert _check(ns) == "probe=True delete=ran cli=ran"
