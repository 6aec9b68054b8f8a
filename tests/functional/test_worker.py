"""DeletionQueue against the real conntrack binary in a throwaway namespace."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from conntrack_lib import exceptions as exc
from conntrack_lib.executor import ProcessExecutor
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.worker import DeletionQueue
from tests.functional import netns

pytestmark = pytest.mark.functional

WAIT = 60.0
ZONES = (1, 2, 3, 4)
REMOTES = tuple(f"10.1.0.{i}" for i in range(1, 11))
LOCAL = "10.2.0.1"


def _flows() -> list[dict[str, Any]]:
    """Return 400 flows: every remote talks to LOCAL in every zone, both ways."""
    flows = []
    for zone in ZONES:
        for n, remote in enumerate(REMOTES):
            for k in range(5):
                flows.append({"proto": "tcp", "src": remote, "dst": LOCAL, "sport": 2000 + k,
                              "dport": 80 + n % 2, "state": "ESTABLISHED", "timeout": 600,
                              "zone": zone})
                flows.append({"proto": "udp", "src": LOCAL, "dst": remote,
                              "sport": 3000 + k, "dport": 53, "timeout": 600, "zone": zone})
    return flows


def _summary(line: str) -> tuple[str, str, str, int]:
    """Return (proto, original src, original dst, zone) of one ``-L`` line."""
    words = line.split()
    fields: dict[str, str] = {}
    for word in words:
        key, _, value = word.partition("=")
        fields.setdefault(key, value)  # the first src=/dst= are the original tuple
    return words[0], fields["src"], fields["dst"], int(fields.get("zone", 0))


def _table(ns: str) -> list[tuple[str, str, str, int]]:
    return sorted(_summary(line) for line in netns.table(ns))


@pytest.fixture
def helper(ns: str) -> ConntrackHelper:
    made = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    made.create_entries(_flows())
    assert len(netns.table(ns)) == len(_flows())
    return made


@pytest.fixture
def queue(helper: ConntrackHelper) -> Iterator[DeletionQueue]:
    made = DeletionQueue(helper, linger=0.02)
    made.start()
    yield made
    made.stop(drain=False, timeout=WAIT)


def test_duplicated_remote_ip_requests_from_threads(ns: str, queue: DeletionQueue) -> None:
    before = _table(ns)
    doomed = {(2, "10.1.0.3"), (2, "10.1.0.4"), (4, "10.1.0.3")}

    def produce() -> None:
        for _ in range(200):
            for zone, remote in sorted(doomed):
                queue.delete_by_remote_ips(zone, [remote])

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert queue.wait(WAIT)
    expected = [f for f in before if (f[3], f[1]) not in doomed and (f[3], f[2]) not in doomed]
    assert len(before) - len(expected) == 3 * 10  # 5 tcp + 5 udp per pair
    assert _table(ns) == expected
    stats = queue.stats()
    assert stats["enqueued"] == 4 * 200 * 3 * 2
    assert stats["deleted"] == 30
    assert stats["failed"] == 0
    assert stats["processes"] <= stats["batches"]
    assert stats["coalesced"] >= stats["enqueued"] - 6 * stats["batches"]


def test_exact_entries_and_filters_in_one_drain(ns: str, helper: ConntrackHelper,
                                                queue: DeletionQueue) -> None:
    victims = helper.list_entries(zone=3, proto="udp")[:7]
    assert len(victims) == 7
    queue.delete_flows(victims)
    queue.delete_flows(victims[:3])
    queue.delete_entries(zone=1)
    assert queue.wait(WAIT)
    gone = {(e.proto, str(e.original.src), str(e.original.dst), e.zone,
             e.original.sport) for e in victims}
    remaining = helper.list_entries()
    assert not any((e.proto, str(e.original.src), str(e.original.dst), e.zone,
                    e.original.sport) in gone for e in remaining)
    assert not any(e.zone == 1 for e in remaining)
    assert len(netns.table(ns)) == len(_flows()) - 100 - 7
    assert queue.stats()["deleted"] == 107


def test_rule_deletion_keeps_other_ports(ns: str, queue: DeletionQueue) -> None:
    before = _table(ns)
    assert queue.delete_by_rule(4, "ingress", "IPv4", "tcp", 80, 80, None, [LOCAL]) == 1
    assert queue.wait_for(LOCAL, timeout=WAIT)
    after = _table(ns)
    # Remotes with an even index used dport 80 (5 flows each), odd ones 81.
    assert len(before) - len(after) == 5 * 5
    assert sum(1 for f in after if f[0] == "tcp" and f[3] == 4) == 25


def test_failure_is_delivered_and_the_worker_survives() -> None:
    errors: list[BaseException] = []
    with netns.namespace() as doomed_ns:
        helper = ConntrackHelper(namespace=doomed_ns, executor=ProcessExecutor())
        queue = DeletionQueue(helper, linger=0.0,
                              on_error=lambda err, reqs: errors.append(err))
    # The namespace is gone now: every command must fail, and be reported.
    queue.start()
    try:
        queue.delete_entries(zone=5)
        assert queue.wait(WAIT)
        queue.delete_entries(zone=6)
        assert queue.wait(WAIT)
        assert queue.running
    finally:
        queue.stop(timeout=WAIT)
    assert len(errors) == 2
    assert all(isinstance(err, exc.CommandError) for err in errors)
    assert queue.stats()["failed"] == 2
