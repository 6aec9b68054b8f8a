#!/usr/bin/env python3
"""Capture real conntrack output into tests/unit/data for the parser tests.

Run as root from the repository root::

    .venv/bin/python tools/capture_parser_data.py [OUTDIR]

Everything happens inside a throwaway network namespace that is removed
afterwards; the host's own conntrack table is never touched.  Every file is
written as ``<name>.out`` (stdout) and, when not empty, ``<name>.err``
(stderr, where the summary lines go).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conntrack_lib import constants  # noqa: E402 - needs ROOT on the path
from conntrack_lib.testing import namespaces  # noqa: E402

CONNTRACK = constants.CONNTRACK_BINARY
IP = namespaces.ip_binary() or "ip"

# One flow per line: every protocol -I accepts, both families, zones,
# directional zones, marks, statuses and reply tuples that are not the
# inverted original (what NAT looks like).
LOAD_LINES = (
    "-I -p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1000 --dport 80 --state ESTABLISHED"
    " -t 300 -u SEEN_REPLY,ASSURED -m 5",
    "-I -p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1001 --dport 80 --state SYN_SENT -t 120",
    "-I -p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1002 --dport 80 --state TIME_WAIT -t 60"
    " -w 10 -m 4294967295",
    "-I -p tcp -s 2001:db8::1 -d 2001:db8::2 --sport 5555 --dport 443 --state ESTABLISHED"
    " -t 400 -u ASSURED",
    "-I -p udp -s 10.0.0.1 -d 10.0.0.2 --sport 1 --dport 6 -r 10.9.9.9 -q 10.9.9.8"
    " --reply-port-src 7 --reply-port-dst 8 -t 200",
    "-I -p udp -s 10.0.0.1 -d 192.168.1.1 --sport 4000 --dport 53 -g 10.0.0.53:5353 -t 30",
    "-I -p udp -s 10.0.0.7 -d 192.168.1.1 --sport 4001 --dport 53 -n 172.16.0.1:40000 -t 30",
    "-I -p udp -s fd00::1 -d fd00::2 --sport 10 --dport 20 -t 50 -w 7 -m 9",
    "-I -p udplite -s 10.0.0.1 -d 10.0.0.2 --sport 7 --dport 8 -t 99",
    "-I -p udplite -s 2001:db8::a -d 2001:db8::b --sport 7 --dport 8 -t 99 --orig-zone 12",
    "-I -p icmp -s 10.0.0.1 -d 10.0.0.2 --icmp-type 8 --icmp-code 0 --icmp-id 77 -t 100"
    " --orig-zone 5",
    "-I -p icmp -s 10.0.0.3 -d 10.0.0.2 --icmp-type 13 --icmp-code 0 --icmp-id 9 -t 100",
    "-I -p icmpv6 -s 2001:db8::1 -d 2001:db8::2 --icmpv6-type 128 --icmpv6-code 0"
    " --icmpv6-id 5 -t 100 --reply-zone 6",
    "-I -p sctp -s 10.0.0.1 -d 10.0.0.2 --sport 5 --dport 6 --state ESTABLISHED"
    " --orig-vtag 1 --reply-vtag 2 -t 99",
    "-I -p sctp -s 2001:db8::5 -d 2001:db8::6 --sport 5 --dport 6 --state COOKIE_WAIT"
    " --orig-vtag 3 --reply-vtag 4 -t 99 -w 20",
    "-I -p dccp -s 10.0.0.1 -d 10.0.0.2 --sport 5 --dport 6 --state OPEN --role client -t 99",
    "-I -p gre -s 10.0.0.1 -d 10.0.0.2 --srckey 0x10 --dstkey 0x20 -t 99",
    "-I -p gre -s 2001:db8::1 -d 2001:db8::2 --srckey 1 --dstkey 65535 -t 99 -m 3",
    "-I -p 89 -s 10.0.0.3 -d 10.0.0.4 -t 200 -w 3",
    "-I -p 112 -s 2001:db8::3 -d 2001:db8::4 -t 200",
)

LIST_FORMATS = {
    "list_default": (),
    "list_extended": ("-o", "extended"),
    "list_id": ("-o", "id"),
    "list_extended_id": ("-o", "extended,id"),
    "list_ktimestamp": ("-o", "ktimestamp"),
    "list_all_options": ("-o", "extended,id,ktimestamp,labels"),
    "list_xml": ("-o", "xml"),
    "list_xml_ktimestamp": ("-o", "xml,ktimestamp"),
}


def _ns_argv(ns: str, args: Sequence[str]) -> list[str]:
    return [IP, "netns", "exec", ns, CONNTRACK, *args]


def _run(ns: str, args: Sequence[str], stdin: str | None = None) -> tuple[str, str]:
    proc = subprocess.run(_ns_argv(ns, args), input=stdin, capture_output=True,
                          text=True, check=False, timeout=60)
    return proc.stdout, proc.stderr


def _save(outdir: Path, name: str, out: str, err: str = "") -> None:
    (outdir / f"{name}.out").write_text(out)
    if err:
        (outdir / f"{name}.err").write_text(err)


def _capture_events(outdir: Path, ns: str, name: str, options: Sequence[str]) -> None:
    """Record -E while flows are created, updated and deleted, then stop it."""
    proc = subprocess.Popen(_ns_argv(ns, ["-E", *options]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        _run(ns, ["-I", "-p", "tcp", "-s", "10.7.0.1", "-d", "10.7.0.2", "--sport", "11",
                  "--dport", "22", "--state", "ESTABLISHED", "-t", "500", "-m", "5"])
        _run(ns, ["-I", "-p", "udp", "-s", "fd07::3", "-d", "fd07::4", "--sport", "11",
                  "--dport", "22", "-t", "499", "-w", "4"])
        _run(ns, ["-I", "-p", "icmp", "-s", "10.7.0.5", "-d", "10.7.0.6", "--icmp-type", "8",
                  "--icmp-code", "0", "--icmp-id", "3", "-t", "30"])
        _run(ns, ["-U", "-s", "10.7.0.1", "-p", "tcp", "-t", "900", "-m", "7"])
        _run(ns, ["-D", "-s", "10.7.0.1"])
        _run(ns, ["-D", "-w", "4"])
        _run(ns, ["-D", "-s", "10.7.0.5"])
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    _save(outdir, name, out, err)


def capture(outdir: Path) -> None:
    """Fill a fresh namespace and save every output format into ``outdir``."""
    with namespaces.throwaway_namespace("ctcap") as ns:
        subprocess.run([IP, "netns", "exec", ns, "sysctl", "-qw",
                        "net.netfilter.nf_conntrack_acct=1",
                        "net.netfilter.nf_conntrack_timestamp=1"], check=True)
        _, err = _run(ns, ["-R", "-"], stdin="\n".join(LOAD_LINES) + "\n")
        if err.strip():
            raise SystemExit(f"load failed: {err}")
        for name, opts in LIST_FORMATS.items():
            _save(outdir, name, *_run(ns, ["-L", *opts]))
        _save(outdir, "list_empty_zone_xml", *_run(ns, ["-L", "-w", "999", "-o", "xml"]))
        _save(outdir, "get_tcp", *_run(ns, ["-G", "-p", "tcp", "-s", "10.0.0.1", "-d",
                                            "10.0.0.2", "--sport", "1000", "--dport", "80"]))
        _save(outdir, "stats", *_run(ns, ["-S"]))
        _save(outdir, "count", *_run(ns, ["-C"]))
        _capture_events(outdir, ns, "events_default", [])
        _capture_events(outdir, ns, "events_extended_id_timestamp",
                        ["-o", "extended,id,timestamp,ktimestamp"])
        _capture_events(outdir, ns, "events_xml", ["-o", "xml"])
        _capture_events(outdir, ns, "events_xml_timestamp", ["-o", "xml,timestamp,id"])
        _save(outdir, "delete_zone", *_run(ns, ["-D", "-w", "20"]))
        _save(outdir, "delete_none", *_run(ns, ["-D", "-w", "999"]))


def main(argv: Sequence[str]) -> int:
    """Capture into the directory named on the command line (or the default)."""
    default = ROOT / "tests" / "unit" / "data"
    outdir = Path(argv[1]) if len(argv) > 1 else default
    outdir.mkdir(parents=True, exist_ok=True)
    capture(outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
