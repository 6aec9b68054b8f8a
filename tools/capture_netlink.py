"""Capture the netlink byte strings that tests/unit/test_netlink.py checks.

For each sample flow, in a throwaway namespace: insert the flow, record what
``conntrack -D`` itself sends for it (``strace``), insert it again, send this
library's IPCTNL_MSG_CT_DELETE twice and record the kernel's two answers
(deleted, then ENOENT).  The results go to ``tests/unit/data/netlink_*.hex``.

Run as root from the repository root, with strace installed::

    .venv/bin/python tools/capture_netlink.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conntrack_lib import netlink, netlink_socket  # noqa: E402 - needs ROOT on the path
from tests.functional import netns  # noqa: E402

_NO_ICMP = {"icmp_type": None, "icmp_code": None, "icmp_id": None}
_NO_PORTS = {"sport": None, "dport": None}

#: name -> (flow primitive, conntrack tuple options, extra -I options)
SAMPLES: dict[str, tuple[dict[str, Any], str, str]] = {
    "udp4_zone7": (
        {"family": "ipv4", "protonum": 17, "src": "10.1.2.3", "dst": "10.4.5.6",
         "sport": 1000, "dport": 53, "zone": 7, **_NO_ICMP},
        "-p udp -s 10.1.2.3 -d 10.4.5.6 --sport 1000 --dport 53 -w 7", "-t 300"),
    "tcp6_zone0": (
        {"family": "ipv6", "protonum": 6, "src": "fd00::1", "dst": "fd00::2",
         "sport": 40000, "dport": 443, "zone": 0, **_NO_ICMP},
        "-p tcp -s fd00::1 -d fd00::2 --sport 40000 --dport 443", "--state ESTABLISHED -t 300"),
    "icmp4_zone3": (
        {"family": "ipv4", "protonum": 1, "src": "10.0.0.1", "dst": "10.0.0.2",
         "icmp_type": 8, "icmp_code": 0, "icmp_id": 4660, "zone": 3, **_NO_PORTS},
        "-p icmp -s 10.0.0.1 -d 10.0.0.2 --icmp-type 8 --icmp-code 0 --icmp-id 4660 -w 3",
        "-t 30"),
    "icmpv6_zone0": (
        {"family": "ipv6", "protonum": 58, "src": "fd00::1", "dst": "fd00::2",
         "icmp_type": 128, "icmp_code": 0, "icmp_id": 77, "zone": 0, **_NO_PORTS},
        "-p icmpv6 -s fd00::1 -d fd00::2 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 77",
        "-t 30"),
    "sctp4_zone65535": (
        {"family": "ipv4", "protonum": 132, "src": "10.9.8.7", "dst": "10.6.5.4",
         "sport": 5000, "dport": 6000, "zone": 65535, **_NO_ICMP},
        "-p sctp -s 10.9.8.7 -d 10.6.5.4 --sport 5000 --dport 6000 -w 65535",
        "--state ESTABLISHED --orig-vtag 1 --reply-vtag 2 -t 300"),
}

_HEXDUMP_LINE = re.compile(r"\s*\| [0-9a-f]{5}  (.{48})")


def cli_delete_bytes(ns: str, tuple_options: str) -> bytes:
    """Return the IPCTNL_MSG_CT_DELETE message ``conntrack -D`` sends."""
    return cli_request_bytes(ns, ["-D", *tuple_options.split()], "IPCTNL_MSG_CT_DELETE")


def cli_request_bytes(ns: str, args: list[str], message: str, *,
                      check: bool = True) -> bytes:
    """Return the first ``message`` (an IPCTNL_MSG_* name) that ``conntrack ARGS`` sends."""
    with tempfile.NamedTemporaryFile(suffix=".strace") as trace:
        subprocess.run([netns.IP, "netns", "exec", ns, "strace", "-e", "trace=sendto",
                        "-e", "write=3,4,5", "-o", trace.name, netns.CONNTRACK, *args],
                       capture_output=True, check=check)
        lines = Path(trace.name).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if message in line)
    words: list[str] = []
    for line in lines[start + 1:]:
        match = _HEXDUMP_LINE.match(line)
        if not match:
            break
        words += match.group(1).split()
    return bytes.fromhex("".join(words))


def kernel_exchange(ns: str, body: bytes) -> tuple[bytes, bytes, bytes]:
    """Send one delete twice inside ``ns``; return the request and both acks."""
    with netlink_socket.open_socket(ns) as sock:
        sock.setblocking(True)
        request = netlink.encode_message(body, 1)
        sock.send(request)
        ack = sock.recv(4096)
        sock.send(netlink.encode_message(body, 2))
        ack_enoent = sock.recv(4096)
    return request, ack, ack_enoent


def capture(name: str, flow: dict[str, Any], tuple_options: str, extra: str) -> None:
    """Capture one sample and write its .hex file."""
    with netns.namespace("ctcap") as ns:
        insert = f"-I {tuple_options} {extra}".split()
        netns.run(ns, insert, check=True)
        cli = cli_delete_bytes(ns, tuple_options)
        netns.run(ns, insert, check=True)
        body = netlink.encode_body(netlink.validate_flow(flow))
        request, ack, ack_enoent = kernel_exchange(ns, body)
        if netns.table(ns):
            raise SystemExit(f"{name}: the flow survived its delete")
    if netlink.decode_acks(ack) != [(1, 0)] or netlink.decode_acks(ack_enoent) != [(2, 2)]:
        raise SystemExit(f"{name}: unexpected acks {ack.hex()} {ack_enoent.hex()}")
    notes = [
        f"flow: primitive form of the flow inserted with: conntrack -I {tuple_options} {extra}",
        "request: this library's IPCTNL_MSG_CT_DELETE (seq 1), which deleted the flow",
        "ack: the kernel's reply to it (errno 0); ack_enoent: reply to the same request "
        "re-sent (seq 2)",
        f"cli_request: what `conntrack -D {tuple_options}` sent for the same flow "
        "(strace -e write)",
    ]
    write_sample(f"netlink_{name}.hex", notes, ("flow", flow),
                 [("request", request), ("ack", ack), ("ack_enoent", ack_enoent),
                  ("cli_request", cli)])


def write_sample(filename: str, notes: list[str], value: tuple[str, Any],
                 blobs: list[tuple[str, bytes]]) -> None:
    """Write one sample under tests/unit/data: provenance, one JSON line, hex lines.

    ``blobs`` must hold ``request`` and ``cli_request``.
    """
    header = (f"# Captured on Linux {os.uname().release} with conntrack-tools 1.4.7 "
              "in a throwaway netns.\n" + "".join(f"# {note}\n" for note in notes))
    lines = [f"{value[0]} {json.dumps(value[1], sort_keys=True)}"]
    lines += [f"{key} {data.hex()}" for key, data in blobs]
    out = ROOT / "tests" / "unit" / "data" / filename
    out.write_text(header + "\n".join(lines) + "\n")
    sizes = dict(blobs)
    print(f"{out.stem}: request {len(sizes['request'])} bytes, "
          f"conntrack's {len(sizes['cli_request'])} bytes -> {out.name}")


def main() -> None:
    """Capture every sample."""
    for name, (flow, tuple_options, extra) in SAMPLES.items():
        capture(name, flow, tuple_options, extra)


if __name__ == "__main__":
    main()
