"""Exact-flow deletes over ctnetlink against the real kernel, in namespaces.

Tables are filled with ``conntrack -R -`` inside throwaway namespaces; the
deletes go through :func:`conntrack_lib.netlink_socket.delete_flows`
(and once through a privsep daemon started by fork).
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import random
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from conntrack_lib import exceptions, netlink, netlink_socket
from conntrack_lib.privileged import netlink as priv
from tests.functional import netns

DATA = pathlib.Path(__file__).parent.parent / "unit" / "data"
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


def make_flow(family: str, protonum: int, n: int, zone: int) -> dict[str, Any]:
    """Return a distinct flow (number ``n``) in primitive form."""
    if family == "ipv4":
        src, dst = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}", "10.250.0.1"
    else:
        src, dst = f"fd00::{n >> 16:x}:{n & 0xFFFF:x}", "fd00:ffff::1"
    icmp = protonum in (1, 58)
    return {
        "family": family, "protonum": protonum, "src": src, "dst": dst,
        "sport": None if icmp else 1024 + n % 60000, "dport": None if icmp else 53,
        "icmp_type": (8 if protonum == 1 else 128) if icmp else None,
        "icmp_code": 0 if icmp else None, "icmp_id": n % 65536 if icmp else None,
        "zone": zone,
    }


def tuple_args(f: dict[str, Any]) -> list[str]:
    """Return the CLI options naming ``f``'s original tuple and zone."""
    proto = PROTO_NAMES[f["protonum"]]
    args = ["-p", proto, "-s", f["src"], "-d", f["dst"]]
    if f["sport"] is not None:
        args += ["--sport", str(f["sport"]), "--dport", str(f["dport"])]
    if f["icmp_type"] is not None:
        opt = "--icmpv6-" if proto == "icmpv6" else "--icmp-"
        args += [opt + "type", str(f["icmp_type"]), opt + "code", str(f["icmp_code"]),
                 opt + "id", str(f["icmp_id"])]
    return [*args, "-w", str(f["zone"])]


def insert_line(f: dict[str, Any]) -> str:
    """Return the ``-R`` line that creates ``f``."""
    extra = {"tcp": ["--state", "ESTABLISHED"],
             "sctp": ["--state", "ESTABLISHED", "--orig-vtag", "1", "--reply-vtag", "2"]}
    args = tuple_args(f)
    if f["zone"] == 0:
        args = args[:-2]
    return " ".join(["-I", *args, *extra.get(PROTO_NAMES[f["protonum"]], []), "-t", "600"])


def fill(ns: str, flows: Iterable[dict[str, Any]]) -> None:
    """Create ``flows`` in ``ns`` with one ``conntrack -R -``."""
    done = netns.load(ns, "".join(insert_line(f) + "\n" for f in flows))
    assert done.returncode == 0, done.stderr


def count(ns: str) -> int:
    return int(netns.run(ns, ["-C"], check=True).stdout)


def table_without_timeouts(ns: str) -> set[str]:
    """Return the ``conntrack -L`` lines with the ticking timeout removed."""
    lines = set()
    for line in netns.table(ns):
        words = line.split()
        lines.add(" ".join(words[:2] + words[3:]))
    return lines


def current_netns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


@pytest.fixture
def ns2() -> Iterator[str]:
    """Yield a second fresh namespace."""
    with netns.namespace() as name:
        yield name


def test_deletes_existing_and_reports_missing(ns: str) -> None:
    flows = [make_flow(fam, proto, n, zone)
             for n, (fam, proto, zone) in enumerate([
                 ("ipv4", 17, 0), ("ipv4", 6, 7), ("ipv4", 1, 65535), ("ipv4", 132, 4097),
                 ("ipv6", 17, 0), ("ipv6", 6, 1), ("ipv6", 58, 7), ("ipv6", 132, 0)])]
    fill(ns, flows)
    keep = make_flow("ipv4", 17, 100, 0)
    fill(ns, [keep])
    absent = make_flow("ipv4", 17, 200, 0)
    results = netlink_socket.delete_flows(ns, [*flows, absent])
    assert results == [0] * len(flows) + [errno.ENOENT]
    remaining = netns.table(ns)
    assert len(remaining) == 1
    assert f"src={keep['src']} dst={keep['dst']} " in remaining[0]
    # Deleting again finds nothing.
    assert netlink_socket.delete_flows(ns, flows[:2]) == [errno.ENOENT] * 2


def test_wrong_zone_is_not_found_and_leaves_the_flow(ns: str) -> None:
    zoned = make_flow("ipv4", 6, 1, 5)
    default = make_flow("ipv6", 17, 2, 0)
    fill(ns, [zoned, default])
    results = netlink_socket.delete_flows(
        ns, [{**zoned, "zone": 6}, {**zoned, "zone": 0}, {**default, "zone": 5}])
    assert results == [errno.ENOENT] * 3
    assert count(ns) == 2
    assert netlink_socket.delete_flows(ns, [zoned, default]) == [0, 0]
    assert count(ns) == 0


def test_wrong_family(ns: str) -> None:
    v4 = make_flow("ipv4", 17, 1, 3)
    fill(ns, [v4])
    mapped = {**v4, "family": "ipv6", "src": "::ffff:" + v4["src"],
              "dst": "::ffff:" + v4["dst"]}
    assert netlink_socket.delete_flows(ns, [mapped]) == [errno.ENOENT]
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink_socket.delete_flows(ns, [{**v4, "family": "ipv6"}])
    assert count(ns) == 1


def test_missing_namespace_is_an_error_and_is_not_created() -> None:
    name = netns.unique_name("ctlt-absent")
    with pytest.raises(exceptions.NamespaceNotFoundError):
        netlink_socket.delete_flows(name, [make_flow("ipv4", 17, 1, 0)])
    assert netns.netlink_answers(name) is False
    assert not os.path.exists(f"/run/netns/{name}")


def test_only_the_named_namespace_is_touched(ns: str, ns2: str) -> None:
    flows = [make_flow("ipv4", 17, n, 9) for n in range(20)]
    fill(ns, flows)
    fill(ns2, flows)
    before = current_netns()
    assert netlink_socket.delete_flows(ns, flows) == [0] * 20
    assert current_netns() == before
    assert count(ns) == 0
    assert count(ns2) == 20


def test_probe_says_usable(ns: str) -> None:
    assert netns.netlink_answers(ns) is True


def test_large_batch_of_50000_in_one_call(ns: str) -> None:
    flows = [make_flow("ipv4", 17, n, 1 + n % 10) for n in range(50_000)]
    fill(ns, flows)
    assert count(ns) == 50_000
    started = time.monotonic()
    results = netlink_socket.delete_flows(ns, flows, batch_size=1000)
    elapsed = time.monotonic() - started
    assert results == [0] * 50_000
    assert count(ns) == 0
    # Generous bound: the point is "seconds, not minutes" (the CLI needs hours).
    assert elapsed < 20, elapsed


def test_small_batches_give_the_same_answers(ns: str) -> None:
    flows = [make_flow("ipv6", 6, n, n % 3) for n in range(300)]
    fill(ns, flows[::2])
    results = netlink_socket.delete_flows(ns, flows, batch_size=7)
    assert results == [0, errno.ENOENT] * 150
    assert count(ns) == 0


def load_sample(path: pathlib.Path) -> dict[str, Any]:
    sample: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split(" ", 1)
            sample[key] = json.loads(value) if key == "flow" else bytes.fromhex(value)
    return sample


@pytest.mark.parametrize("path", sorted(DATA.glob("netlink_*.hex")), ids=lambda p: p.stem)
def test_stored_bytes_still_delete_on_this_kernel(ns: str, path: pathlib.Path) -> None:
    sample = load_sample(path)
    fill(ns, [sample["flow"]])
    sock = netlink_socket.open_socket(ns)
    with sock:
        sock.setblocking(True)
        sock.send(sample["request"])
        ack = sock.recv(4096)
        portid = sock.getsockname()[0]
    assert count(ns) == 0
    # Identical to the stored ack except the port id the kernel gave our socket.
    assert ack[:12] == sample["ack"][:12]
    assert ack[16:] == sample["ack"][16:]
    assert int.from_bytes(ack[12:16], "little", signed=True) == portid


def random_flows(rng: random.Random, total: int) -> list[dict[str, Any]]:
    """Return ``total`` distinct flows over several zones, families and protocols."""
    kinds = [("ipv4", 6), ("ipv4", 17), ("ipv4", 1), ("ipv4", 132),
             ("ipv6", 6), ("ipv6", 17), ("ipv6", 58), ("ipv6", 132)]
    zones = [0, 1, 7, 4097, 65535]
    return [make_flow(*rng.choice(kinds), n, rng.choice(zones)) for n in range(total)]


@pytest.mark.parametrize("seed", [11, 2026])
def test_same_result_as_the_cli(ns: str, ns2: str, seed: int) -> None:
    rng = random.Random(seed)
    flows = random_flows(rng, 400)
    fill(ns, flows)
    fill(ns2, flows)
    assert table_without_timeouts(ns) == table_without_timeouts(ns2)
    chosen = rng.sample(flows, 150)
    # Plus flows that exist only in another zone: both paths must skip them.
    chosen += [{**f, "zone": (f["zone"] + 1) % 65536} for f in rng.sample(flows, 20)]
    results = netlink_socket.delete_flows(ns, chosen)
    assert results.count(0) == 150
    delete_lines = "".join(" ".join(["-D", *tuple_args(f)]) + "\n" for f in chosen)
    netns.load(ns2, delete_lines)
    remaining = table_without_timeouts(ns)
    assert len(remaining) == 250
    assert remaining == table_without_timeouts(ns2)


def test_through_a_forked_privsep_daemon(ns: str) -> None:
    from oslo_privsep import priv_context

    from conntrack_lib import privileged

    flows = [make_flow("ipv4", 17, n, 4) for n in range(100)]
    fill(ns, flows)
    privileged.default.start(priv_context.Method.FORK)
    try:
        # With a channel, entrypoint calls are sent to the forked daemon.
        assert privileged.default.channel is not None
        results = priv.delete_flows(ns, [*flows[:60], make_flow("ipv4", 17, 999, 4)])
        with pytest.raises(exceptions.NamespaceNotFoundError):
            priv.delete_flows(netns.unique_name("ctlt-absent"), flows[:1])
        with pytest.raises(exceptions.InvalidArgumentError):
            priv.delete_flows(ns, [{**flows[0], "zone": -1}])
    finally:
        privileged.default.stop()
    assert list(results) == [0] * 60 + [errno.ENOENT]
    assert count(ns) == 40


def test_socket_is_bound_to_the_namespace(ns: str) -> None:
    sock = netlink_socket.open_socket(ns)
    with sock:
        flow = make_flow("ipv4", 17, 1, 2)
        fill(ns, [flow])
        body = netlink.encode_body(netlink.validate_flow(flow))
        # Used from this (the host's) thread, it still reaches the namespace.
        assert netlink_socket._exchange(sock, [body], 10) == [0]
        assert sock.family == socket.AF_NETLINK
    assert count(ns) == 0


def test_recovers_when_the_kernel_drops_acks(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    flows = [make_flow("ipv4", 17, n, 3) for n in range(3000)]
    fill(ns, flows[:2000])
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        sock = netlink_socket._run_in_namespace(fd, ns, lambda: socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_NETFILTER))
    finally:
        os.close(fd)
    # A default-sized receive buffer and a window sized as if acks were free:
    # the kernel must drop acks (ENOBUFS) and the exchange must recover.
    monkeypatch.setattr(netlink_socket, "ACK_TRUESIZE", 1)
    with sock:
        sock.bind((0, 0))
        sock.setblocking(False)
        bodies = [netlink.encode_body(netlink.validate_flow(f)) for f in flows]
        results = netlink_socket._exchange(sock, bodies, 2000)
    assert count(ns) == 0
    assert set(results[:2000]) <= {0, errno.ENOENT}
    # Flows that existed but answer ENOENT were re-sent after a lost ack:
    # proof that the overrun happened and was recovered from.
    assert results[:2000].count(errno.ENOENT) > 0
    assert results[2000:] == [errno.ENOENT] * 1000
    # The first acks of the first window fit the buffer and are exact.
    assert results[:100] == [0] * 100
