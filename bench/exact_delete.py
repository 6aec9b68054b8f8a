"""Benchmark exact-flow deletes: batched ctnetlink vs pyroute2 vs the CLI.

Run as root from the repository root::

    .venv/bin/python -m bench.exact_delete [--flows 10000] [--table 20000]

Everything happens in a namespace of its own (``ip netns add``, deleted in
``finally``); the host's conntrack table is never touched.  The table holds
``--table`` udp flows spread over 10 zones and is refilled before each
run; each method deletes the same ``--flows`` of them:

(a)  conntrack_lib's batched IPCTNL_MSG_CT_DELETE, in this process;
(a') the same through a privsep daemon started by fork (adds the msgpack
     round trip of the flow list);
(b)  pyroute2's ``Conntrack().entry('del', ...)`` loop, in a child process
     started with ``ip netns exec`` (pyroute2's own netns helper would
     create a missing namespace, so it is not used);
(c)  one ``conntrack -D`` process per flow, timed on ``--cli-sample`` flows
     from a child in the namespace and scaled linearly.

It also measures how many requests one ``send`` can carry before the socket
buffers push back, with the default buffers and with the FORCE-enlarged ones.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from conntrack_lib import constants, netlink, netlink_socket
from conntrack_lib.privileged import netlink as priv
from conntrack_lib.testing import namespaces

IP = namespaces.ip_binary() or "ip"
CONNTRACK = constants.CONNTRACK_BINARY
ZONES = 10

PYROUTE2_CHILD = """
import json, socket, sys, time
from pyroute2 import Conntrack
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
flows = json.load(open(sys.argv[1]))
ct = Conntrack()
deleted = 0
started = time.perf_counter()
for f in flows:
    tup = NFCTAttrTuple(family=socket.AF_INET, saddr=f["src"], daddr=f["dst"],
                        proto=f["protonum"], sport=f["sport"], dport=f["dport"])
    try:
        ct.entry("del", tuple_orig=tup, zone=f["zone"])
        deleted += 1
    except NetlinkError:
        pass
elapsed = time.perf_counter() - started
ct.close()
print(json.dumps({"elapsed": elapsed, "deleted": deleted}))
"""

CLI_CHILD = """
import json, subprocess, sys, time
flows = json.load(open(sys.argv[1]))
conntrack = sys.argv[2]
deleted = 0
started = time.perf_counter()
for f in flows:
    rc = subprocess.run([conntrack, "-D", "-p", "udp", "-s", f["src"],
                         "-d", f["dst"], "--sport", str(f["sport"]), "--dport",
                         str(f["dport"]), "-w", str(f["zone"])],
                        capture_output=True).returncode
    deleted += rc == 0
elapsed = time.perf_counter() - started
print(json.dumps({"elapsed": elapsed, "deleted": deleted}))
"""


def make_flow(n: int) -> dict[str, Any]:
    """Return udp flow number ``n`` in primitive form, zone 1..ZONES."""
    return {"family": "ipv4", "protonum": 17,
            "src": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}", "dst": "10.250.0.1",
            "sport": 1024 + n % 60000, "dport": 53, "icmp_type": None, "icmp_code": None,
            "icmp_id": None, "zone": 1 + n % ZONES}


def refill(ns: str, flows: list[dict[str, Any]]) -> None:
    """Empty the namespace's table and load ``flows`` with one ``conntrack -R``."""
    conntrack(ns, "-F")
    lines = "".join(
        f"-I -p udp -s {f['src']} -d {f['dst']} --sport {f['sport']} --dport {f['dport']} "
        f"-t 3600 -w {f['zone']}\n" for f in flows)
    subprocess.run([IP, "netns", "exec", ns, CONNTRACK, "-R", "-"], input=lines, text=True,
                   check=True, capture_output=True)
    assert count(ns) == len(flows)


def conntrack(ns: str, *args: str) -> str:
    return subprocess.run([IP, "netns", "exec", ns, CONNTRACK, *args], text=True,
                          capture_output=True, check=True).stdout


def count(ns: str) -> int:
    return int(conntrack(ns, "-C"))


def run_child(ns: str, code: str, flows: list[dict[str, Any]], *args: str) -> dict[str, Any]:
    """Run ``code`` with a flows file and ``args`` in a Python child inside ``ns``."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
        json.dump(flows, handle)
        handle.flush()
        out = subprocess.run([IP, "netns", "exec", ns, sys.executable, "-c", code,
                              handle.name, *args], capture_output=True, text=True,
                             check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def bench_netlink(ns: str, table: list[dict[str, Any]], targets: list[dict[str, Any]],
                  batch: int) -> float:
    refill(ns, table)
    started = time.perf_counter()
    results = netlink_socket.delete_flows(ns, targets, batch)
    elapsed = time.perf_counter() - started
    assert results == [0] * len(targets), "netlink: not every flow was deleted"
    assert count(ns) == len(table) - len(targets)
    return elapsed


def bench_privsep(ns: str, table: list[dict[str, Any]], targets: list[dict[str, Any]]) -> float:
    from oslo_privsep import priv_context

    from conntrack_lib import privileged

    refill(ns, table)
    privileged.default.start(priv_context.Method.FORK)
    try:
        priv.delete_flows(ns, [])  # the daemon's start-up is not what we measure
        started = time.perf_counter()
        results = priv.delete_flows(ns, targets)
        elapsed = time.perf_counter() - started
    finally:
        privileged.default.stop()
    assert list(results) == [0] * len(targets)
    return elapsed


def bench_pyroute2(ns: str, table: list[dict[str, Any]],
                   targets: list[dict[str, Any]]) -> float:
    refill(ns, table)
    result = run_child(ns, PYROUTE2_CHILD, targets)
    assert result["deleted"] == len(targets), result
    assert count(ns) == len(table) - len(targets)
    return float(result["elapsed"])


def bench_cli(ns: str, table: list[dict[str, Any]], targets: list[dict[str, Any]],
              sample: int) -> float:
    refill(ns, table)
    result = run_child(ns, CLI_CHILD, targets[:sample], CONNTRACK)
    assert result["deleted"] == sample, result
    return float(result["elapsed"])


def pushback(ns: str, force: bool) -> tuple[int, int, int | None]:
    """Return (rcvbuf, largest batch fully acknowledged, smallest batch refused by send)."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        sock = netlink_socket._run_in_namespace(fd, ns, lambda: _plain_socket(force))
    finally:
        os.close(fd)
    # Deletes of flows that do not exist: same ack size, nothing changes.
    body = netlink.encode_body(netlink.validate_flow({**make_flow(0), "zone": 65535}))
    largest, refused = 0, None
    with sock:
        for size in (64, 128, 192, 224, 240, 248, 255, 256, 257, 264, 320, 512, 1024,
                     2048, 2600, 2700, 4096, 8192, 10240, 16384):
            try:
                sock.send(netlink.encode_batch([body] * size, 1))
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    raise
                refused = size
                break
            acks, overrun = _read_all(sock)
            if acks == size and not overrun:
                largest = size
        rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return rcvbuf, largest, refused


def _plain_socket(force: bool) -> socket.socket:
    if force:
        return netlink_socket._new_socket()
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.setsockopt(netlink_socket.SOL_NETLINK, netlink_socket.NETLINK_CAP_ACK, 1)
    sock.setblocking(False)
    return sock


def _read_all(sock: socket.socket) -> tuple[int, bool]:
    acks, overrun = 0, False
    while True:
        try:
            acks += len(netlink.decode_acks(sock.recv(65536)))
        except BlockingIOError:
            return acks, overrun
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            overrun = True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=int, default=20_000)
    parser.add_argument("--flows", type=int, default=10_000)
    parser.add_argument("--cli-sample", type=int, default=200)
    parser.add_argument("--batch", type=int, default=netlink_socket.DEFAULT_BATCH)
    parser.add_argument("--runs", type=int, default=3, help="runs of (a); best is kept")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (ip netns, CAP_NET_ADMIN)", file=sys.stderr)
        return 2
    table = [make_flow(n) for n in range(args.table)]
    targets = table[::2][:args.flows]
    with namespaces.throwaway_namespace("ctbench-delete") as ns:
        report(ns, table, targets, args)
    return 0


def report(ns: str, table: list[dict[str, Any]], targets: list[dict[str, Any]],
           args: argparse.Namespace) -> None:
    n = len(targets)
    print(f"table {len(table)} udp flows over {ZONES} zones; deleting {n} exact flows")
    times_a = [bench_netlink(ns, table, targets, args.batch) for _ in range(args.runs)]
    a = min(times_a)
    a_priv = bench_privsep(ns, table, targets)
    b = bench_pyroute2(ns, table, targets)
    c_sample = bench_cli(ns, table, targets, args.cli_sample)
    c = c_sample * n / args.cli_sample
    rows = [
        (f"(a)  ctnetlink batch={args.batch}, in process", a,
         "runs: " + ", ".join(f"{t:.3f}" for t in times_a)),
        ("(a') same through a forked privsep daemon", a_priv, ""),
        ("(b)  pyroute2 Conntrack().entry('del') loop", b, ""),
        ("(c)  conntrack -D, one process per flow", c,
         f"measured {c_sample:.2f} s for {args.cli_sample}, scaled x{n / args.cli_sample:g}"),
    ]
    print(f"{'method':46} {'seconds':>9} {'us/flow':>9} {'vs (a)':>9}")
    for label, seconds, note in rows:
        print(f"{label:46} {seconds:9.3f} {seconds / n * 1e6:9.1f} {seconds / a:8.1f}x  {note}")
    print(f"targets: (a) <= 0.5 s: {'met' if a <= 0.5 else 'MISSED'}; "
          f"(b)/(a) >= 10: {'met' if b / a >= 10 else 'MISSED'}; "
          f"(c)/(a) >= 500: {'met' if c / a >= 500 else 'MISSED'}")
    for size in (64, 256, 1000, 4096):
        print(f"batch {size:5}: {bench_netlink(ns, table, targets, size):.3f} s")
    for force in (False, True):
        rcvbuf, largest, refused = pushback(ns, force)
        print(f"socket buffers {'FORCE 4 MiB' if force else 'default    '} (SO_RCVBUF reads "
              f"{rcvbuf}): largest batch with every ack = {largest}; "
              f"send refused (EMSGSIZE) from {refused}; window used by the library = "
              f"{max(1, min(netlink_socket.MAX_BATCH, rcvbuf // netlink_socket.ACK_TRUESIZE))}")


if __name__ == "__main__":
    sys.exit(main())
