"""Children of the privsep daemon hold CAP_NET_ADMIN and CAP_SYS_ADMIN only.

Both ways of starting the daemon are checked: by fork, and through
``conntrack-lib-privsep-helper`` (the command a sudoers or rootwrap rule
names).  A running ``conntrack -E`` child's /proc status is read while it
runs; then every kind of command runs under that reduced set.
"""

from __future__ import annotations

import os
import pathlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from oslo_config import cfg

import conntrack_lib
from conntrack_lib import ConntrackHelper, commands, opts, privileged
from conntrack_lib.daemon import stop as stop_daemon
from conntrack_lib.executor import PrivsepExecutor
from conntrack_lib.privileged import bounding

ROOT = pathlib.Path(conntrack_lib.__file__).resolve().parents[1]
HELPER = os.path.join(os.path.dirname(sys.executable), "conntrack-lib-privsep-helper")
ALLOWED = frozenset({12, 21})  # CAP_NET_ADMIN, CAP_SYS_ADMIN
_CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def _caps(pid: int) -> dict[str, frozenset[int]]:
    """Return each capability set of ``pid`` as capability numbers."""
    found: dict[str, frozenset[int]] = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in _CAP_FIELDS:
            mask = int(value.strip(), 16)
            found[key] = frozenset(bit for bit in range(64) if mask >> bit & 1)
    return found


def _find_child(marker: str, deadline: float) -> int:
    """Return the pid of the running conntrack whose argv holds ``marker``."""
    while time.monotonic() < deadline:
        for entry in pathlib.Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"conntrack") and marker.encode() in argv:
                return int(entry.name)
        time.sleep(0.02)
    raise AssertionError(f"no conntrack child with {marker} appeared")


@pytest.fixture(params=["fork", "helper"])
def daemon(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Start the daemon each way in turn; stop it afterwards."""
    opts.register_opts(cfg.CONF)
    stop_daemon(privileged.default)
    if request.param == "helper":
        assert os.access(HELPER, os.X_OK), f"{HELPER} missing: reinstall the package"
        monkeypatch.setenv("PYTHONPATH", str(ROOT))
        cfg.CONF.set_override("helper_command", HELPER, group=opts.PRIVSEP_SECTION)
    try:
        yield str(request.param)
    finally:
        stop_daemon(privileged.default)
        cfg.CONF.clear_override("helper_command", group=opts.PRIVSEP_SECTION)


def test_running_child_holds_only_the_two_capabilities(daemon: str, ns: str) -> None:
    marker = f"198.51.100.{os.getpid() % 250 + 1}"
    run = PrivsepExecutor()
    outcome: list[Any] = []
    watch = commands.EventsCommand(duration=3, src=marker)
    thread = threading.Thread(
        target=lambda: outcome.append(run.execute(watch, namespace=ns)), daemon=True)
    thread.start()
    pid = _find_child(marker, time.monotonic() + 20)
    caps = _caps(pid)
    thread.join(30)
    assert caps["CapBnd"] <= ALLOWED, caps
    assert caps["CapEff"] <= ALLOWED and caps["CapPrm"] <= ALLOWED, caps
    assert 12 in caps["CapEff"]  # conntrack still holds what it needs
    assert outcome and outcome[0].exit_code == 0


def test_every_command_kind_works_under_the_reduced_set(daemon: str, ns: str) -> None:
    helper = ConntrackHelper(namespace=ns, exact_delete_backend="netlink")
    flow = {"proto": "udp", "src": "10.7.0.1", "dst": "10.7.0.2", "sport": 1000,
            "dport": 53, "timeout": 600}
    events: list[Any] = []
    watch = threading.Thread(target=lambda: events.append(PrivsepExecutor().execute(
        commands.EventsCommand(duration=3, event_mask=["NEW"], src="10.7.0.1"),
        namespace=ns)), daemon=True)
    watch.start()
    # The capture must be listening before the first create: wait for its
    # conntrack (a loaded machine starts the daemon slowly), then let it
    # subscribe.
    _find_child("10.7.0.1", time.monotonic() + 20)
    time.sleep(0.3)
    helper.create_entry(**flow)                                     # create
    created = helper.create_entries([{**flow, "sport": port} for port in range(2000, 2010)])
    assert created == 10                                            # -R batch
    assert helper.count() == 11                                     # count
    listed = helper.list_entries(src="10.7.0.1")                    # list
    assert len(listed) == 11
    assert helper.delete_entries(proto="udp", sport=1000) == 1      # delete
    # Table order is hash order: pick three flows that the delete above left.
    batch = [entry for entry in listed if entry.original.sport != 1000][:3]
    assert helper.delete_flows(batch) == 3                          # netlink delete
    assert helper.count() == 7
    watch.join(30)
    assert events and "[NEW] udp" in events[0].stdout               # events
    assert bounding.bounding_set()  # this process keeps its own set
