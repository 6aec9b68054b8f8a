"""Flows created over ctnetlink (IPCTNL_MSG_CT_NEW) against the real kernel, in namespaces.

Each test makes its own throwaway namespaces; the host's table is never
touched.  What ``conntrack -I`` of the release under test creates is the
reference: the same commands sent by
:meth:`conntrack_lib.executor.ProcessExecutor.create_flows` must list
identically (``conntrack -L -o extended``, read by the library's parser).
These run on every release, including 1.4.5 and 1.4.6, which have no ``-R``.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from typing import Any

import pytest

from conntrack_lib import ConntrackHelper, capabilities, commands, exceptions, executor, parser
from conntrack_lib.models import Entry
from tests.functional import netns

#: A spread of flows: both families, udp/tcp (several states)/icmp/icmpv6/
#: sctp/gre/a port-less protocol, every kind of zone, marks, statuses,
#: explicit and reply-only tuples.
SPREAD: list[dict[str, Any]] = [
    {"proto": "udp", "src": "10.1.0.1", "dst": "10.2.0.1", "sport": 1000, "dport": 53,
     "timeout": 300},
    {"proto": "udp", "src": "10.1.0.1", "dst": "10.2.0.1", "sport": 1000, "dport": 53,
     "timeout": 300, "zone": 4097, "mark": 7},
    {"proto": "udp", "src": "fd00::1", "dst": "fd00::2", "sport": 5353, "dport": 5353,
     "timeout": 200, "orig_zone": 12, "status": "ASSURED"},
    {"proto": "tcp", "src": "10.1.0.2", "dst": "10.2.0.2", "sport": 40000, "dport": 443,
     "state": "ESTABLISHED", "timeout": 3600, "mark": 0xFFFFFFFF,
     "status": ["ASSURED", "SEEN_REPLY"]},
    {"proto": "tcp", "src": "fd00::3", "dst": "fd00::4", "sport": 40001, "dport": 22,
     "state": "SYN_SENT", "timeout": 120, "reply_zone": 13},
    {"proto": "tcp", "src": "10.1.0.3", "dst": "10.2.0.3", "sport": 40002, "dport": 80,
     "state": "TIME_WAIT", "timeout": 100, "zone": 65535},
    {"proto": "tcp", "reply_src": "10.2.0.4", "reply_dst": "10.1.0.4", "reply_sport": 8080,
     "reply_dport": 40003, "state": "CLOSE_WAIT", "timeout": 60},
    {"proto": "tcp", "src": "10.1.0.5", "dst": "10.2.0.5", "sport": 40004, "dport": 80,
     "reply_src": "192.0.2.5", "reply_dst": "10.1.0.5", "reply_sport": 8080,
     "reply_dport": 40004, "state": "ESTABLISHED", "timeout": 60},
    {"proto": "icmp", "src": "10.1.0.6", "dst": "10.2.0.6", "icmp_type": 8, "icmp_code": 0,
     "icmp_id": 4660, "timeout": 30, "zone": 3},
    {"proto": "icmp", "src": "10.1.0.6", "dst": "10.2.0.6", "icmp_type": 13, "icmp_code": 0,
     "timeout": 30},
    {"proto": "icmpv6", "src": "fd00::6", "dst": "fd00::7", "icmp_type": 128, "icmp_code": 0,
     "icmp_id": 9, "timeout": 30, "mark": 1},
    {"proto": "sctp", "src": "10.1.0.7", "dst": "10.2.0.7", "sport": 5000, "dport": 6000,
     "state": "ESTABLISHED", "orig_vtag": 1, "reply_vtag": 2, "timeout": 300},
    {"proto": "gre", "src": "10.1.0.8", "dst": "10.2.0.8", "srckey": 5, "dstkey": 6,
     "timeout": 300},
    {"proto": 51, "src": "10.1.0.9", "dst": "10.2.0.9", "timeout": 300, "zone": 9},
    {"proto": "udplite", "src": "fd00::8", "dst": "fd00::9", "sport": 1, "dport": 2,
     "timeout": 300, "status": "FIXED_TIMEOUT"},
]


def listing(ns: str) -> list[Entry]:
    """Return the namespace's flows, timeouts and ids cleared, in a stable order."""
    entries: list[Entry] = []
    # One dump per family, each kept to its family: 1.4.6's -L without -f
    # shows IPv4 only, 1.4.5's -L -f ipv6 shows both.
    for family in ("ipv4", "ipv6"):
        done = netns.run(ns, ["-L", "-f", family, "-o", "extended"], check=True)
        entries += [e for e in parser.parse_entries(done.stdout) if e.family == family]
    cleared = [dataclasses.replace(e, timeout=None, id=None) for e in entries]
    return sorted(cleared, key=repr)


def cli_create(ns: str, command: commands.CreateCommand) -> None:
    done = netns.run(ns, command.argv())
    assert done.returncode == 0, (command, done.stderr)


class _WithoutLoadFile(executor.ProcessExecutor):
    """The process executor as if its conntrack were 1.4.6, so creates use netlink."""

    def release(self) -> capabilities.Release:
        return (1, 4, 6)


@pytest.fixture
def ns2() -> Any:
    with netns.namespace() as name:
        yield name


def test_spread_lists_exactly_like_conntrack_dash_i(ns: str, ns2: str) -> None:
    built = [commands.CreateCommand(**fields) for fields in SPREAD]
    for command in built:
        cli_create(ns, command)
    results = executor.ProcessExecutor().create_flows(built, namespace=ns2)
    assert results == [0] * len(built)
    by_cli, by_netlink = listing(ns), listing(ns2)
    assert len(by_cli) == len(SPREAD)
    assert by_netlink == by_cli
    # The listing shows what was asked (a sample, to be sure the comparison
    # compared something).
    marks = {e.mark for e in by_netlink}
    assert {7, 0xFFFFFFFF, 1} <= marks
    assert {e.zone for e in by_netlink} >= {4097, 65535, 3, 9}


def test_duplicate_answers_eexist_and_the_helper_raises_entry_exists(ns: str) -> None:
    first = commands.CreateCommand(**SPREAD[0])
    cli_create(ns, first)
    runner = executor.ProcessExecutor()
    other_zone = commands.CreateCommand(**{**SPREAD[0], "zone": 8})
    assert runner.create_flows([first, other_zone, other_zone], namespace=ns) == [
        errno.EEXIST, 0, errno.EEXIST]
    helper = ConntrackHelper(namespace=ns, executor=_WithoutLoadFile())
    with pytest.raises(exceptions.EntryExistsError) as info:
        helper.create_entries([SPREAD[3], SPREAD[0]])
    assert info.value.cmd[:2] == ("netlink", "create")
    assert info.value.exit_code == 1 and f"errno {errno.EEXIST}:" in info.value.stderr
    # The flow before the duplicate was created; nothing was created twice.
    assert len(listing(ns)) == 3


def test_kernel_refusal_is_a_typed_command_error(ns: str) -> None:
    # ICMP type 3 has no reply type: conntrack -I sends 255, the kernel says EINVAL.
    bad = commands.CreateCommand(proto="icmp", src="10.0.0.1", dst="10.0.0.2", icmp_type=3,
                                 icmp_code=1, timeout=30)
    assert netns.run(ns, bad.argv()).returncode != 0
    helper = ConntrackHelper(namespace=ns, executor=_WithoutLoadFile())
    with pytest.raises(exceptions.CommandError) as info:
        helper.create_entries([{"proto": "icmp", "src": "10.0.0.1", "dst": "10.0.0.2",
                                "icmp_type": 3, "icmp_code": 1, "timeout": 30}])
    assert type(info.value) is exceptions.CommandError
    cli = netns.run(ns, bad.argv())
    # The same exit code as conntrack -I; the errno in the text.
    assert info.value.exit_code == cli.returncode == 1
    assert f"errno {errno.EINVAL}:" in info.value.stderr
    assert listing(ns) == []


def test_batch_of_1000_in_one_call(ns: str) -> None:
    built = [commands.CreateCommand(proto="tcp", src=f"10.7.{n // 250}.{n % 250 + 1}",
                                    dst="10.8.0.1", sport=1024 + n, dport=443,
                                    state="ESTABLISHED", timeout=600, zone=1 + n % 3)
             for n in range(1000)]
    helper = ConntrackHelper(namespace=ns, executor=_WithoutLoadFile())
    assert helper.create_entries(command.fields for command in built) == 1000
    entries = listing(ns)
    assert len(entries) == 1000
    assert {e.zone for e in entries} == {1, 2, 3}
    assert {e.state for e in entries} == {"ESTABLISHED"}
    assert {(str(e.original.src), e.original.sport) for e in entries} == {
        (c.get("src"), c.get("sport")) for c in built}
    # Every one of them is now a duplicate.
    again = executor.ProcessExecutor().create_flows(built, namespace=ns)
    assert again == [errno.EEXIST] * 1000


def test_missing_namespace_is_an_error_and_is_not_created() -> None:
    name = netns.unique_name("ctlt-absent")
    with pytest.raises(exceptions.NamespaceNotFoundError):
        executor.ProcessExecutor().create_flows(
            [commands.CreateCommand(**SPREAD[0])], namespace=name)
    assert not os.path.exists(f"/run/netns/{name}")


def test_only_the_named_namespace_is_touched(ns: str, ns2: str) -> None:
    executor.ProcessExecutor().create_flows(
        [commands.CreateCommand(**SPREAD[0])], namespace=ns)
    assert len(listing(ns)) == 1
    assert listing(ns2) == []


def test_through_a_forked_privsep_daemon(ns: str) -> None:
    from oslo_privsep import priv_context

    from conntrack_lib import netlink_create, privileged
    from conntrack_lib.privileged import netlink as priv

    built = [commands.CreateCommand(**fields) for fields in SPREAD[:6]]
    prims = [netlink_create.to_primitive(command) for command in built]
    privileged.default.start(priv_context.Method.FORK)
    try:
        assert privileged.default.channel is not None
        results = priv.create_flows(ns, [*prims, prims[0]])
        with pytest.raises(exceptions.InvalidArgumentError):
            priv.create_flows(ns, [{**prims[0], "sport": 70000}])
        with pytest.raises(exceptions.NamespaceNotFoundError):
            priv.create_flows(netns.unique_name("ctlt-absent"), prims[:1])
    finally:
        privileged.default.stop()
    assert list(results) == [0] * 6 + [errno.EEXIST]
    assert len(listing(ns)) == 6
