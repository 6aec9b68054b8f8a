"""Property tests of conntrack_lib.parser.

Random valid entries are rendered in conntrack's text grammar (reference
section 5.1, field order included) by an independent renderer below and
must parse back to equal values, on both the fast and the line-by-line
path.  Random garbage must never raise anything but ParseError in strict
mode, and nothing at all in lenient mode.
"""

from __future__ import annotations

import contextlib
import datetime
from typing import Any

import netaddr
from hypothesis import given
from hypothesis import strategies as st

from conntrack_lib import constants, exceptions, parser
from conntrack_lib.models import Counters, Entry, Event, FlowTuple
from conntrack_lib.parser import base
from conntrack_lib.parser import lines as line_parser

PORT_PROTOS = {"tcp": 6, "udp": 17, "udplite": 136, "sctp": 132, "dccp": 33}
KNOWN_NUMBERS = set(constants.PROTOCOL_NUMBERS.values())
FLAGS = ("ASSURED", "OFFLOAD", "HW_OFFLOAD")
u8 = st.integers(0, 255)
u16 = st.integers(0, 65535)
u32 = st.integers(0, 2**32 - 1)
word = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)


@st.composite
def _addresses(draw: st.DrawFn, v6: bool) -> tuple[str, str]:
    strategy = st.ip_addresses(v=6 if v6 else 4)
    return str(draw(strategy)), str(draw(strategy))


@st.composite
def _l4(draw: st.DrawFn, proto: str) -> tuple[str, dict[str, int]]:
    """Return the printed layer-4 words of one direction and the FlowTuple fields."""
    if proto in PORT_PROTOS:
        sport, dport = draw(u16), draw(u16)
        return f" sport={sport} dport={dport}", {"sport": sport, "dport": dport}
    if proto in ("icmp", "icmpv6"):
        kind, code, ident = draw(u8), draw(u8), draw(u16)
        return (f" type={kind} code={code} id={ident}",
                {"icmp_type": kind, "icmp_code": code, "icmp_id": ident})
    if proto == "gre":
        src, dst = draw(u16), draw(u16)
        return f" srckey={src:#x} dstkey={dst:#x}", {"srckey": src, "dstkey": dst}
    return "", {}


def _ctime(moment: datetime.datetime) -> str:
    return moment.strftime("%a %b ") + f"{moment.day:2d}" + moment.strftime(" %H:%M:%S %Y")


def _opt(draw: st.DrawFn, strategy: st.SearchStrategy[Any]) -> Any:
    return draw(st.none() | strategy)


@st.composite
def rendered_entries(draw: st.DrawFn) -> tuple[str, Entry]:
    """Return a conntrack text line and the Entry it stands for."""
    v6 = draw(st.booleans())
    proto = draw(st.sampled_from([*PORT_PROTOS, "icmpv6" if v6 else "icmp", "gre", "unknown"]))
    if proto == "unknown":
        protonum = draw(st.integers(0, 255).filter(lambda n: n not in KNOWN_NUMBERS))
    else:
        protonum = constants.PROTOCOL_NUMBERS[proto]
    osrc, odst = draw(_addresses(v6))
    rsrc, rdst = draw(_addresses(v6))
    ol4, ofields = draw(_l4(proto))
    rl4, rfields = draw(_l4(proto))
    timeout = _opt(draw, u32)
    states = constants.STATES_BY_PROTOCOL.get(proto)
    state = _opt(draw, st.sampled_from(states)) if states else None
    counters = _opt(draw, st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
                                     st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)))
    unreplied = draw(st.booleans())
    flag = _opt(draw, st.sampled_from(FLAGS))
    orig_zone, reply_zone = _opt(draw, u16), _opt(draw, u16)
    mark, secmark = _opt(draw, u32), _opt(draw, u32)
    secctx = _opt(draw, st.from_regex(r"[a-z_]+:[a-z_]+:[a-z_]+:s0", fullmatch=True))
    zone = draw(st.integers(0, 65535))
    delta = _opt(draw, u32)
    moments = st.datetimes(datetime.datetime(2000, 1, 1), datetime.datetime(2099, 1, 1))
    start, stop = _opt(draw, moments), _opt(draw, moments)
    helper = _opt(draw, st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True))
    use, entry_id = _opt(draw, u32), _opt(draw, u32)
    labels = draw(st.frozensets(word, max_size=3))
    extra = draw(st.dictionaries(word.map(lambda w: "x-" + w),
                                 st.from_regex(r"[A-Za-z0-9,.:-]{0,8}", fullmatch=True),
                                 max_size=2))
    extended = draw(st.booleans())

    family = "ipv6" if v6 else "ipv4"
    words = [f"{family:<8s} {10 if v6 else 2} " if extended else "",
             f"{proto:<8s} {protonum}"]
    words += [f" {timeout}" if timeout is not None else "", f" {state}" if state else ""]
    words += [f" src={osrc} dst={odst}", ol4]
    words += [f" zone-orig={orig_zone}" if orig_zone is not None else ""]
    words += [f" packets={counters[0]} bytes={counters[1]}" if counters else ""]
    words += [" [UNREPLIED]" if unreplied else "", f" src={rsrc} dst={rdst}", rl4]
    words += [f" zone-reply={reply_zone}" if reply_zone is not None else ""]
    words += [f" packets={counters[2]} bytes={counters[3]}" if counters else ""]
    words += [f" [{flag}]" if flag else "", f" mark={mark}" if mark is not None else ""]
    words += [f" secmark={secmark}" if secmark is not None else ""]
    words += [f" secctx={secctx}" if secctx else "", f" zone={zone}" if zone else ""]
    words += [f" delta-time={delta}" if delta is not None else ""]
    words += [f" [start={_ctime(start)}]" if start else "",
              f" [stop={_ctime(stop)}]" if stop else ""]
    words += [f" helper={helper}" if helper else "", f" use={use}" if use is not None else ""]
    words += [f" id={entry_id}" if entry_id is not None else ""]
    words += [f" labels={','.join(sorted(labels))}" if labels else ""]
    words += [f" {key}={value}" for key, value in extra.items()]

    pairs = dict(extra)
    if start:
        pairs["start"] = _ctime(start)
    if stop:
        pairs["stop"] = _ctime(stop)
    status = {flag} if flag else set()
    if unreplied:
        status.add("UNREPLIED")
    entry = Entry(
        family=family, proto=proto, protonum=protonum,
        original=FlowTuple(netaddr.IPAddress(osrc), netaddr.IPAddress(odst), **ofields),
        reply=FlowTuple(netaddr.IPAddress(rsrc), netaddr.IPAddress(rdst), **rfields),
        state=state, timeout=timeout, status=frozenset(status), mark=mark, zone=zone,
        orig_zone=orig_zone, reply_zone=reply_zone, use=use, id=entry_id, labels=labels,
        counters=Counters(*counters) if counters else None, secctx=secctx, secmark=secmark,
        helper=helper, delta_time=delta, extra=tuple(sorted(pairs.items())),
    )
    return "".join(words), entry


@given(rendered_entries())
def test_property_rendered_entry_round_trips(case: tuple[str, Entry]) -> None:
    line, expected = case
    assert parser.parse_entries(line, strict=True) == [expected]
    assert line_parser.parse_text(line, base.Addresses()) == expected
    assert list(parser.iter_entries([line + "\n"], strict=True)) == [expected]


@given(st.lists(rendered_entries(), min_size=1, max_size=8), st.data())
def test_property_table_with_summary_round_trips(cases: list[tuple[str, Entry]],
                                                  data: st.DataObject) -> None:
    lines = [line for line, _ in cases]
    at = data.draw(st.integers(0, len(lines)))
    lines.insert(at, f"{len(cases)} flow entries have been shown.")
    stats = parser.ParseStats()
    entries = parser.parse_entries("\n".join(lines) + "\n", strict=True, stats=stats)
    assert entries == [entry for _, entry in cases]
    assert (stats.entries, stats.summaries, stats.skipped) == (len(cases), 1, 0)


@given(rendered_entries(), st.sampled_from(constants.EVENT_TYPES),
       st.none() | st.tuples(st.integers(10**8, 2**40), st.integers(0, 999_999)),
       st.none() | u32, st.none() | st.from_regex(r"[a-z][a-z0-9 _.-]{0,14}", fullmatch=True))
def test_property_event_round_trips(case: tuple[str, Entry], event_type: str,
                                    stamp: tuple[int, int] | None, portid: int | None,
                                    progname: str | None) -> None:
    line, entry = case
    head = f"[{stamp[0]}.{stamp[1]:06d}]\t" if stamp else ""
    tail = ""
    if portid is not None:
        tail = f" [USERSPACE] portid={portid}" + (f" progname={progname}" if progname else "")
    text = f"{head}{'[' + event_type + ']':>9s} {line}{tail}"
    (event,) = parser.parse_events(text, strict=True)
    timestamp = stamp[0] + stamp[1] / 1_000_000 if stamp else None
    assert event == Event(event_type, entry, timestamp, portid,
                          progname.strip() if portid is not None and progname else None)


# ---------------------------------------------------------------------------
# Garbage

garbage_text = st.text(st.characters(codec="utf-8"), max_size=300) | st.lists(
    st.sampled_from(["src=1.2.3.4", "dst=::1", "sport=1", "id=5", "[UNREPLIED]", "tcp", "6",
                     "udp", "17", "99", "use=1", "zone=-1", "=", "[", "]", "[start=x",
                     "ipv4", "2", "<flow>", "</flow>", "type=1", "code=x", "srckey=0xg",
                     "\t", "\n", "[NEW]", "[USERSPACE]", "portid=x", "cpu=0"]),
    max_size=40).map(" ".join)


@st.composite
def mutated_lines(draw: st.DrawFn) -> str:
    """Return a valid line with one token removed, repeated, cut or changed."""
    line, _ = draw(rendered_entries())
    tokens = line.split(" ")
    index = draw(st.integers(0, len(tokens) - 1))
    action = draw(st.sampled_from(["drop", "repeat", "cut", "char"]))
    if action == "drop":
        del tokens[index]
    elif action == "repeat":
        tokens.insert(index, tokens[index])
    elif action == "cut":
        return line[: draw(st.integers(0, len(line)))]
    else:
        token = tokens[index]
        at = draw(st.integers(0, len(token)))
        tokens[index] = token[:at] + draw(st.characters(codec="utf-8")) + token[at + 1:]
    return " ".join(tokens)


def _only_parse_errors(func: Any, *args: Any) -> None:
    try:
        result = func(*args, strict=True)
        list(result)
    except exceptions.ParseError as exc:
        assert exc.lineno >= 1
        assert isinstance(exc.line, str)


@given(garbage_text | mutated_lines())
def test_property_garbage_strict_raises_only_parse_error(text: str) -> None:
    _only_parse_errors(parser.parse_entries, text)
    _only_parse_errors(parser.iter_entries, text.splitlines())
    _only_parse_errors(parser.parse_events, text)
    _only_parse_errors(parser.parse_xml, text)


@given(garbage_text | mutated_lines())
def test_property_garbage_lenient_never_raises(text: str) -> None:
    stats = parser.ParseStats()
    entries = parser.parse_entries(text, stats=stats)
    assert stats.entries == len(entries)
    assert stats.skipped + stats.entries + stats.summaries <= max(stats.lines, 1)
    assert list(parser.iter_entries(text.splitlines())) == entries
    list(parser.parse_events(text))
    parser.parse_xml(text)


@given(garbage_text)
def test_property_garbage_stats_count_summary(text: str) -> None:
    for func in (parser.parse_stats, parser.parse_count):
        with contextlib.suppress(exceptions.ParseError):
            func(text)
    summary = parser.parse_summary(text)
    assert summary is None or summary[0] >= 0


@given(st.integers(0, 2**32 - 1) | st.integers(2**32, 2**128 - 1))
def test_property_fast_addresses_equal_netaddr(value: int) -> None:
    version = 4 if value < 2**32 else 6
    text = str(netaddr.IPAddress(value, version))
    made = base.Addresses()[text]
    assert made == netaddr.IPAddress(text)
    assert (made.version, str(made), hash(made)) == (version, text, hash(netaddr.IPAddress(text)))
