"""Capture the IPCTNL_MSG_CT_NEW byte strings that tests/unit/test_netlink_create.py checks.

For each sample create command, in a throwaway namespace: record what
``conntrack -I`` itself sends for it (``strace``), flush, then send this
library's request twice and record the kernel's two answers (created, then
EEXIST).  The results go to ``tests/unit/data/ctnew_*.hex``.

Run as root from the repository root, with strace installed::

    .venv/bin/python tools/capture_netlink_create.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from capture_netlink import cli_request_bytes, write_sample  # noqa: E402 - needs tools/ on the path

from conntrack_lib import commands, netlink, netlink_create, netlink_socket  # noqa: E402
from tests.functional import netns  # noqa: E402

#: name -> CreateCommand keywords.
SAMPLES: dict[str, dict[str, Any]] = {
    "udp4_zone": {"proto": "udp", "src": "10.1.2.3", "dst": "10.4.5.6", "sport": 1000,
                  "dport": 53, "timeout": 300, "zone": 7},
    "tcp6_status_mark": {"proto": "tcp", "src": "fd00::1", "dst": "fd00::2", "sport": 40000,
                         "dport": 443, "state": "ESTABLISHED", "timeout": 300, "mark": 42,
                         "status": "ASSURED"},
    "tcp4_time_wait_reply_only": {"proto": "tcp", "reply_src": "10.9.8.7",
                                  "reply_dst": "10.6.5.4", "reply_sport": 5000,
                                  "reply_dport": 6000, "state": "TIME_WAIT", "timeout": 120},
    "icmp4_orig_zone": {"proto": "icmp", "src": "10.0.0.1", "dst": "10.0.0.2", "icmp_type": 8,
                        "icmp_code": 0, "icmp_id": 4660, "timeout": 30, "orig_zone": 3},
    "icmpv6_reply_zone": {"proto": "icmpv6", "src": "fd00::1", "dst": "fd00::2",
                          "icmp_type": 128, "icmp_code": 0, "timeout": 30, "reply_zone": 9},
    "udp4_both_directions": {"proto": "udp", "src": "10.9.8.7", "dst": "10.6.5.4",
                             "sport": 5000, "dport": 6000, "reply_src": "10.1.1.1",
                             "reply_dst": "10.9.8.7", "reply_sport": 7, "reply_dport": 5000,
                             "timeout": 300, "status": ["SEEN_REPLY", "FIXED_TIMEOUT"]},
    "sctp4_vtags": {"proto": "sctp", "src": "10.9.8.7", "dst": "10.6.5.4", "sport": 5000,
                    "dport": 6000, "state": "ESTABLISHED", "orig_vtag": 1, "reply_vtag": 2,
                    "timeout": 300},
    "gre4_keys": {"proto": "gre", "src": "10.9.8.7", "dst": "10.6.5.4", "srckey": 5,
                  "dstkey": 6, "timeout": 300},
    "proto51_mark0_zone0": {"proto": 51, "src": "10.9.8.7", "dst": "10.6.5.4", "timeout": 300,
                            "mark": 0, "zone": 0},
    "udplite6_unset": {"proto": "udplite", "src": "fd00::7", "dst": "fd00::8", "sport": 1,
                       "dport": 2, "timeout": 300, "status": "UNSET"},
}


def kernel_answers(ns: str, body: bytes) -> tuple[bytes, bytes, bytes]:
    """Send one create twice inside ``ns``; return the request and both acks."""
    with netlink_socket.open_socket(ns) as sock:
        sock.setblocking(True)
        request = netlink.encode_message(body, 1, netlink_create.MSG_CT_NEW,
                                         netlink_create.CREATE_FLAGS)
        sock.send(request)
        ack = sock.recv(4096)
        sock.send(netlink.encode_message(body, 2, netlink_create.MSG_CT_NEW,
                                         netlink_create.CREATE_FLAGS))
        ack_exists = sock.recv(4096)
    return request, ack, ack_exists


def capture(name: str, fields: dict[str, Any]) -> None:
    """Capture one sample and write its .hex file."""
    command = commands.CreateCommand(**fields)
    with netns.namespace("ctcap") as ns:
        cli = cli_request_bytes(ns, list(command.argv()), "IPCTNL_MSG_CT_NEW")
        netns.run(ns, ["-F"], check=True)
        request, ack, ack_exists = kernel_answers(ns, netlink_create.encode_body(command))
        if len(netns.table(ns)) != 1:
            raise SystemExit(f"{name}: expected exactly one flow after the create")
    if netlink.decode_acks(ack) != [(1, 0)] or netlink.decode_acks(ack_exists) != [(2, 17)]:
        raise SystemExit(f"{name}: unexpected acks {ack.hex()} {ack_exists.hex()}")
    notes = [
        f"command: primitive form of conntrack {' '.join(command.argv())}",
        "request: this library's IPCTNL_MSG_CT_NEW (seq 1), which created the flow",
        "ack: the kernel's reply to it (errno 0); ack_exists: reply to the same request "
        "re-sent (seq 2, EEXIST)",
        "cli_request: what conntrack -I sent for the same command (strace -e write); "
        "its padding bytes are uninitialised",
    ]
    write_sample(f"ctnew_{name}.hex", notes, ("command", command.to_primitive()),
                 [("request", request), ("ack", ack), ("ack_exists", ack_exists),
                  ("cli_request", cli)])


def main() -> None:
    """Capture every sample."""
    for name, fields in SAMPLES.items():
        capture(name, fields)


if __name__ == "__main__":
    main()
