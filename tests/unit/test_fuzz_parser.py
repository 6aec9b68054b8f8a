"""Fuzz every parser with hostile text built from real conntrack output.

Inputs: any unicode (control characters and every line separator that
``str.splitlines`` knows), lines of up to 100 KB, real lines from
``tests/unit/data`` shuffled, truncated or with one character changed, and
random XML fragments built from conntrack's own XML vocabulary.

Invariants: strict mode raises nothing but ParseError (whose ``line`` is a
line of the input), lenient mode never raises, strict success means lenient
finds the same values, and no call takes a second or more.
"""

from __future__ import annotations

import functools
import pathlib
import re
from collections.abc import Callable
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from conntrack_lib import exceptions, netlink, parser
from conntrack_lib.models import CpuStats, Entry, Event
from tests.fuzz import timed

DATA = pathlib.Path(__file__).parent / "data"
#: Every separator str.splitlines() honours; the fast scan only knows '\n'.
SEPARATORS = ("\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
              "\u2029")
XML_TAGS = ("flow", "meta", "layer3", "layer4", "src", "dst", "sport", "dport", "type", "code",
            "id", "srckey", "dstkey", "counters", "packets", "bytes", "state", "timeout",
            "mark", "secmark", "use", "zone", "labels", "label", "timestamp", "start", "stop",
            "deltatime", "unreplied", "assured", "secctx", "helper", "when", "hour", "min",
            "sec", "year", "month", "day", "conntrack")
XML_ATTRS = ("direction", "protonum", "protoname", "type")
XML_TEXT = ("", "0", "1", "65535", "4294967296", "-1", "0x10", "0xg", "10.0.0.1", "::1",
            "tcp", "ipv4", "ESTABLISHED", "original", "reply", "independent", "new",
            "destroy", "\u00b2", " 1", "&amp;", "&lt;", "&#0;", "&#65;")


@functools.cache
def real_lines() -> tuple[str, ...]:
    """Return every non-empty line of the saved conntrack outputs."""
    lines: list[str] = []
    for path in sorted(DATA.glob("*.out")) + sorted(DATA.glob("*.err")):
        lines.extend(line for line in path.read_text().splitlines() if line.strip())
    return tuple(lines)


def _real_line() -> st.SearchStrategy[str]:
    return st.deferred(lambda: st.sampled_from(real_lines()))


@st.composite
def changed_real_lines(draw: st.DrawFn) -> str:
    """Return a real line truncated, shuffled, or with one character replaced."""
    line = draw(_real_line())
    action = draw(st.sampled_from(["cut", "shuffle", "char", "repeat"]))
    if action == "cut":
        return line[: draw(st.integers(0, len(line)))]
    if action == "shuffle":
        return " ".join(draw(st.permutations(line.split(" "))))
    if action == "repeat":
        words = line.split(" ")
        at = draw(st.integers(0, len(words) - 1))
        return " ".join(words[:at] + [words[at]] * draw(st.integers(2, 50)) + words[at:])
    at = draw(st.integers(0, len(line) - 1))
    return line[:at] + draw(st.characters(codec="utf-8")) + line[at + 1:]


@st.composite
def long_lines(draw: st.DrawFn) -> str:
    """Return one line of 1 to 100 KB: a real token or a bracket repeated."""
    size = draw(st.integers(1_000, 100_000))
    words = draw(_real_line()).split(" ")
    unit = draw(st.one_of(st.sampled_from(words), st.sampled_from(
        ["[", "[start", "[start=", "[stop=", "stop=", "src=", "=", "<flow>", "0x", "9", " ",
         "\t", "a=b ", "9 have been"])))
    head = draw(st.sampled_from(["", "ipv4     2 tcp      6 5 ", "    [NEW] ", "<flow>",
                                 "[1.2]\t[NEW] tcp 6 1 ", "cpu=0 "]))
    body = (unit + draw(st.sampled_from(["", " "]))) * (size // (len(unit) + 1) + 1)
    return (head + body)[:size]


@st.composite
def xml_elements(draw: st.DrawFn, depth: int = 0) -> str:
    """Return a random (sometimes malformed) XML element from conntrack's vocabulary."""
    tag = draw(st.sampled_from(XML_TAGS))
    attrs = "".join(f' {name}="{draw(st.sampled_from(XML_TEXT))}"'
                    for name in draw(st.lists(st.sampled_from(XML_ATTRS), max_size=2,
                                              unique=True)))
    if depth >= 3 or draw(st.integers(0, 3)) == 0:
        inner = draw(st.sampled_from(XML_TEXT))
    else:
        inner = "".join(draw(st.lists(xml_elements(depth + 1), max_size=3)))
    closing = draw(st.sampled_from([f"</{tag}>"] * 6 + ["", "</flow>", f"</{tag}"]))
    if not inner and draw(st.booleans()):
        return f"<{tag}{attrs}/>"
    return f"<{tag}{attrs}>{inner}{closing}"


@st.composite
def xml_lines(draw: st.DrawFn) -> str:
    """Return a ``<flow>`` line from random elements, maybe with a trailing tag."""
    body = "".join(draw(st.lists(xml_elements(1), max_size=4)))
    kind = draw(st.sampled_from(["", ' type="new"', ' type="destroy"', ' type="x"']))
    tail = draw(st.sampled_from(["", " [USERSPACE] portid=1", " [USERSPACE] x", " junk"]))
    return f"<flow{kind}>{body}</flow>{tail}"


any_unicode = st.text(st.characters(codec="utf-8"), max_size=400)
separators_heavy = st.lists(
    st.one_of(st.sampled_from(SEPARATORS), _real_line(), st.text(max_size=5)), max_size=20,
).map("".join)
single_lines = st.one_of(any_unicode, changed_real_lines(), long_lines(), xml_lines(),
                         _real_line())


@st.composite
def documents(draw: st.DrawFn) -> str:
    """Return several fuzzed lines joined by random line separators (at most ~100 KB)."""
    parts = draw(st.lists(single_lines, min_size=1, max_size=6))
    text = parts[0]
    for part in parts[1:]:
        text += draw(st.sampled_from(SEPARATORS)) + part
    return text[:100_000]


texts = st.one_of(documents(), separators_heavy, single_lines)

STREAMING: dict[str, Callable[..., Any]] = {
    "parse_entries": parser.parse_entries,
    "parse_entries_lines": lambda text, **kw: parser.parse_entries(text.splitlines(True), **kw),
    "iter_entries": lambda text, **kw: parser.iter_entries(text.splitlines(), **kw),
    "parse_events": parser.parse_events,
    "parse_events_lines": lambda text, **kw: parser.parse_events(iter(text.splitlines()), **kw),
    "parse_xml": parser.parse_xml,
}
VALUE_TYPES = {"parse_events": Event, "parse_events_lines": Event}


def _strict(name: str, text: str) -> list[Any] | None:
    """Run one parser strictly; return its values, or None after a checked ParseError."""
    try:
        return list(timed(STREAMING[name], text, strict=True))
    except exceptions.ParseError as err:
        assert err.lineno >= 1
        assert isinstance(err.line, str) and err.line in text
        assert isinstance(err.reason, str) and err.reason
        return None


def _lenient(name: str, text: str) -> list[Any]:
    """Run one parser leniently; check its statistics and value types."""
    stats = parser.ParseStats()
    values = list(timed(STREAMING[name], text, stats=stats))
    assert stats.entries == len(values)
    assert min(stats.lines, stats.entries, stats.skipped, stats.summaries) >= 0
    assert all(type(value) is VALUE_TYPES.get(name, Entry) for value in values)
    return values


@given(texts)
@example("1 flow entries have been deleted.\x0b\x85tcp 6 1 src=1.1.1.1")
@example("<flow>" + "<meta>" * 200 + "</flow>")
@example('<!DOCTYPE f [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
         '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">'
         ']><flow>&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;</flow>')
@example("tcp 6 1 src=1.1.1.1 " + "[start=" * 5000)
@example("9" * 40_000 + " have been")
def test_fuzz_parsers_strict_and_lenient(text: str) -> None:
    for name in STREAMING:
        strict = _strict(name, text)
        lenient = _lenient(name, text)
        if strict is not None:
            # What strict mode accepts as a whole, lenient mode reads the same.
            assert lenient == strict, name


@given(st.binary(max_size=400) | st.lists(_real_line().map(str.encode)).map(b"".join))
@example(b"\x10\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00")
@example(b"\xff\xff\xff\xff" + b"\x00" * 12)
def test_fuzz_netlink_acks(data: bytes) -> None:
    try:
        acks = timed(netlink.decode_acks, data)
    except exceptions.ParseError as err:
        assert err.lineno >= 0
        return
    assert all(isinstance(ack.seq, int) and isinstance(ack.errno, int) for ack in acks)
    assert len(acks) <= len(data) // 20


@given(texts | st.from_regex(r"\s*[0-9]{1,30}\s*", fullmatch=True))
@example("\u0663")
@example("9" * 25_000 + " flow entries have been deleted.")
@example("9" * 5000)
@example("\u00b2")
@example("cpu=0 found=1\x85cpu=1 found=\u00b2")
@example("0 flow entries have been 0.")
def test_fuzz_stats_count_summary(text: str) -> None:
    try:
        stats = timed(parser.parse_stats, text)
    except exceptions.ParseError as err:
        assert err.line in text
    else:
        assert all(type(cpu) is CpuStats and cpu.cpu >= 0 for cpu in stats)
    try:
        count = timed(parser.parse_count, text)
    except exceptions.ParseError as err:
        assert err.line == text
    else:
        assert count >= 0 and text.split() == [text.strip()]
    summary = timed(parser.parse_summary, text)
    assert summary is None or (summary[0] >= 0 and re.fullmatch(r"\w+", summary[1]))
