"""Differential test: text and XML dumps of one real table parse to the same entries.

A throwaway namespace is filled through ``conntrack -R -`` with a varied
table (every protocol ``-I`` accepts, IPv4 and IPv6, zones and directional
zones, marks, states, statuses, timeouts, NAT-like reply tuples, counters
on), dumped in the default, ``-o extended`` and ``-o xml`` formats, and the
three parses are compared field by field.

Known defects of conntrack 1.4.7's XML, handled explicitly here:

1. ICMP/ICMPv6 flows carry no type/code/id in XML: those three fields are
   compared only between the text dumps (XML must show None).
2. SCTP/DCCP states are printed with TCP state names in XML: the parser
   translates them back; the raw XML is checked to still hold the wrong names.
3. An empty table prints nothing at all in XML (no document): parse_xml
   must give [].
4. The dumps are taken at different instants, so timeouts and delta-time
   tick between them (not an XML defect, but it shows here): both are
   compared within TIMEOUT_TOLERANCE seconds, not for equality.
5. ``<id>`` is always present in XML but only printed with ``-o id`` in text:
   ids are compared between XML and an ``-o extended,id`` dump only.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator

from conntrack_lib import constants, parser
from conntrack_lib.models import Entry, FlowTuple
from tests.functional import netns

FLOWS = 5500
TIMEOUT_TOLERANCE = 3
TCP_STATES = ("ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
              "TIME_WAIT", "CLOSE")
SCTP_STATES = ("CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
               "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT")
ZONES = (0, 0, 5, 7, 4097, 65535)
KINDS = ("tcp", "tcp6", "udp", "udp6", "udplite", "sctp", "dccp", "icmp", "icmpv6", "gre",
         "unknown")


def _addresses(i: int, v6: bool) -> tuple[str, str, str, str]:
    """Return original src/dst and NAT-like reply src/dst for flow ``i``."""
    if v6:
        return f"fd00::{i:x}:1", f"fd01::{i % 250 + 1:x}", f"fd02::{i:x}", f"fd03::{i:x}"
    a, b = (i >> 8) & 0xFF, i & 0xFF
    return f"10.{a}.{b}.1", f"10.200.0.{i % 250 + 1}", f"172.16.{a}.{b}", f"172.17.{a}.{b}"


def _l4_options(kind: str, i: int, nat: bool) -> list[str]:  # noqa: PLR0911 - one per protocol
    ports = ["--sport", str(1024 + i % 60000), "--dport", str(1 + i % 1000)]
    if nat:
        ports += ["--reply-port-src", str(2000 + i % 5000), "--reply-port-dst", str(3000 + i)]
    if kind in ("tcp", "tcp6"):
        return ["-p", "tcp", *ports, "--state", TCP_STATES[i % len(TCP_STATES)]]
    if kind in ("udp", "udp6", "udplite"):
        return ["-p", "udplite" if kind == "udplite" else "udp", *ports]
    if kind == "sctp":
        return ["-p", "sctp", *ports, "--state", SCTP_STATES[i % len(SCTP_STATES)],
                "--orig-vtag", str(i), "--reply-vtag", str(i + 1)]
    if kind == "dccp":
        return ["-p", "dccp", *ports, "--state", "OPEN", "--role", "client"]
    if kind == "icmp":
        return ["-p", "icmp", "--icmp-type", "8", "--icmp-code", "0", "--icmp-id", str(i)]
    if kind == "icmpv6":
        return ["-p", "icmpv6", "--icmpv6-type", "128", "--icmpv6-code", "0",
                "--icmpv6-id", str(i)]
    if kind == "gre":
        return ["-p", "gre", "--srckey", str(i % 65536), "--dstkey", str((i * 7) % 65536)]
    return ["-p", "89" if i % 2 else "112"]


def _load_line(i: int) -> str:
    """Return the -R line creating flow ``i`` (deterministic, unique tuple)."""
    kind = KINDS[i % len(KINDS)]
    v6 = kind in ("tcp6", "udp6", "icmpv6") or (kind in ("gre", "sctp", "unknown") and i % 2)
    src, dst, rsrc, rdst = _addresses(i, v6)
    nat = i % 4 == 0 and kind not in ("icmp", "icmpv6", "gre", "unknown", "dccp")
    words = ["-I", "-s", src, "-d", dst]
    if nat:
        words += ["-r", rsrc, "-q", rdst]
    words += _l4_options(kind, i, nat)
    words += ["-t", str(100 + (i % 50) * 37)]
    if kind in ("tcp", "tcp6") and i % 3 == 0:
        words += ["-u", "SEEN_REPLY,ASSURED"]  # -u before -m: 1.4.7 overwrites the mark
    if i % 5:
        words += ["-m", str((i * 7919) % 2**32)]
    if i % 13 == 0:
        words += ["--orig-zone", "9"]
    elif i % 17 == 0:
        words += ["--reply-zone", "11"]
    elif ZONES[i % len(ZONES)]:
        words += ["-w", str(ZONES[i % len(ZONES)])]
    return " ".join(words)


def _without_icmp(flow: FlowTuple) -> FlowTuple:
    return dataclasses.replace(flow, icmp_type=None, icmp_code=None, icmp_id=None)


def _xml_view(entry: Entry) -> Entry:
    """Return what XML and text must agree on: no clocks, id or ICMP fields."""
    return dataclasses.replace(entry, timeout=None, delta_time=None, id=None,
                               original=_without_icmp(entry.original),
                               reply=_without_icmp(entry.reply))


def _by_view(entries: list[Entry]) -> dict[Entry, Entry]:
    views = {_xml_view(e): e for e in entries}
    assert len(views) == len(entries)  # every flow is distinct even without ICMP fields
    return views


def _dumps(ns: str, *options: str) -> list[str]:
    """Return the output of ``-L`` with ``options``: one per family where -L lists IPv4 only.

    1.4.6 lists IPv4 only without ``-f``; every other release lists all in one.
    """
    families: list[list[str]] = [[]]
    if netns.release_caps().default_family is not None:
        families = [["-f", "ipv4"], ["-f", "ipv6"]]
    results = [netns.run(ns, ["-L", *family, *options], check=True) for family in families]
    shown = sum(int(r.stderr.strip().rsplit(": ", 1)[-1].split()[0]) for r in results)
    assert shown == FLOWS
    return [r.stdout for r in results]


def _entries(ns: str, *options: str) -> list[Entry]:
    return [e for out in _dumps(ns, *options) for e in parser.parse_entries(out, strict=True)]


def _assert_clocks_close(left: list[Entry], right: list[Entry]) -> None:
    right_views = _by_view(right)
    for entry in left:
        other = right_views[_xml_view(entry)]
        assert entry.timeout is not None and other.timeout is not None
        assert abs(entry.timeout - other.timeout) <= TIMEOUT_TOLERANCE, (entry, other)
        assert entry.delta_time is not None and other.delta_time is not None
        assert abs(entry.delta_time - other.delta_time) <= TIMEOUT_TOLERANCE, (entry, other)


def _kinds(entries: list[Entry]) -> Iterator[tuple[str, str]]:
    return ((e.family, e.proto) for e in entries)


def test_text_and_xml_dumps_agree(ns: str) -> None:
    netns.sysctl(ns, "net.netfilter.nf_conntrack_acct=1", "net.netfilter.nf_conntrack_timestamp=1")
    # Defect 3: before anything exists, XML prints no document at all.
    empty = netns.run(ns, ["-L", "-o", "xml"], check=True).stdout
    assert empty == ""
    assert parser.parse_xml(empty, strict=True) == []

    load = netns.load(ns, "\n".join(map(_load_line, range(FLOWS))) + "\n")
    assert load.returncode == 0, load.stderr
    assert parser.parse_count(netns.run(ns, ["-C"], check=True).stdout) == FLOWS

    default = _entries(ns)
    extended = _entries(ns, "-o", "extended,id")
    xml_documents = _dumps(ns, "-o", "xml")
    raw_xml = "".join(xml_documents)
    xml = [e for doc in xml_documents for e in parser.parse_xml(doc, strict=True)]
    assert len(default) == len(extended) == len(xml) == FLOWS

    # The table is as varied as intended.
    kinds = collections.Counter(_kinds(default))
    for proto in ("tcp", "udp", "udplite", "sctp", "dccp", "gre", "unknown"):
        assert kinds["ipv4", proto] > 0, proto
    for proto in ("tcp", "udp", "icmpv6", "gre", "sctp", "unknown"):
        assert kinds["ipv6", proto] > 0, proto
    assert kinds["ipv4", "icmp"] > 0
    assert {e.zone for e in default} == set(ZONES)
    assert {e.orig_zone for e in default} == {None, 9}
    assert {e.reply_zone for e in default} == {None, 11}
    assert sum(e.is_nat for e in default) > 500
    assert all(e.counters is not None for e in default)
    assert len({e.state for e in default if e.proto == "sctp"}) == len(SCTP_STATES)
    assert {e.protonum for e in default if e.proto == "unknown"} == {89, 112}

    # Default and extended text: identical apart from ticking timeouts and -o id.
    assert {_xml_view(e) for e in default} == {_xml_view(e) for e in extended}
    assert {(e.original, e.reply) for e in default} == {(e.original, e.reply)
                                                         for e in extended}
    _assert_clocks_close(default, extended)

    # Text versus XML, field by field for everything XML carries.
    assert {_xml_view(e) for e in xml} == {_xml_view(e) for e in extended}
    _assert_clocks_close(xml, extended)
    extended_views = _by_view(extended)
    for entry in xml:
        assert entry.id == extended_views[_xml_view(entry)].id  # defect 5
        if entry.proto in constants.ICMP_PROTOCOLS:  # defect 1
            assert entry.original.icmp_type is None and entry.reply.icmp_id is None
            assert extended_views[_xml_view(entry)].original.icmp_type is not None

    # Defect 2: XML prints SCTP states with TCP names; the parser undoes it.
    tcp_fin_wait = sum(e.proto == "tcp" and e.state == "FIN_WAIT" for e in default)
    sctp_established = sum(e.proto == "sctp" and e.state == "ESTABLISHED" for e in default)
    # SCTP ESTABLISHED (4) is printed as TCP state 4, FIN_WAIT.
    assert raw_xml.count("<state>FIN_WAIT</state>") == tcp_fin_wait + sctp_established
    sctp_states = {e.state for e in xml if e.proto == "sctp"}
    assert sctp_states == set(SCTP_STATES)
