"""Turn the output of the ``conntrack`` command into typed values.

Pure functions only: no process, no file, no clock.  The grammar is the one
conntrack-tools 1.4.7 prints (text lines of ``-L``/``-G``/``-D``/``-U``,
``-o extended/id/ktimestamp/labels``, ``-o xml``, ``-E`` events, ``-S`` and
``-C``).

Lenient mode (the default) skips a line it cannot read, counts it in
:class:`ParseStats` and logs one WARNING per call; strict mode raises
:class:`~conntrack_lib.exceptions.ParseError` instead.  Unknown ``key=value``
pairs never fail: they land in ``Entry.extra``.

Speed matters because a dump can hold hundreds of thousands of lines and
parsing should cost no more than the ``conntrack -L`` that printed them:

* one regular expression reads the common line shape (ports or no layer-4
  fields, the usual metadata) in a single scan; every other line goes
  through a general tokeniser built on :meth:`str.split`;
* each distinct address and small number is converted once per call;
* models are filled without their dataclass ``__init__`` (see
  ``_build_entry``), and the cyclic garbage collector is held while a whole
  text is parsed (it is restored afterwards; parsing makes no cycles).

Address objects are therefore shared between the entries of one call: treat
them as immutable (``netaddr.IPAddress`` supports an in-place ``+=`` that
would change every entry holding the same object).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import re
import socket
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

import netaddr

from conntrack_lib import constants
from conntrack_lib.exceptions import ParseError
from conntrack_lib.models import Counters, CpuStats, Entry, Event, FlowTuple

LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Drop the per-call address cache when it grows past this many strings, so
#: memory stays bounded on huge tables with few repeated addresses.
ADDRESS_CACHE_SIZE = 65536

# Both patterns are bounded so that hostile input cannot make them
# backtrack quadratically: a count starts after a non-digit and has at most
# 20 digits; a ctime stamp is short.
_SUMMARY_RE = re.compile(
    r"(?<![0-9])([0-9]{1,20}) (?:flow entries|flow events|expectations|expectation events) "
    r"have been (\w+)\.",
    re.ASCII,
)
_KTIMESTAMP_RE = re.compile(r" ?\[(start|stop)=([^\]\[]{0,64})\]")
_DECIMAL_RE = re.compile(r"[0-9]{1,20}", re.ASCII)
_EVENT_TIMESTAMP_RE = re.compile(r"\[(\d+)\.(\d+) *\]\t?")
_EVENT_TYPES = {f"[{name}]": name for name in constants.EVENT_TYPES}
_XML_EVENT_TYPES = {name.lower(): name for name in constants.EVENT_TYPES}
_FAMILY_WORDS = frozenset(constants.FAMILIES)
_USERSPACE_TAG = " [USERSPACE]"
_EMPTY: frozenset[str] = frozenset()
_IPV4_MAX_TEXT = len("255.255.255.255")


class _LineError(Exception):
    """Raised inside the parser for a line it cannot read (reason in args[0])."""


@dataclasses.dataclass(slots=True)
class ParseStats:
    """Count what a parse call saw; pass one in to read the figures afterwards.

    ``lines`` counts every line looked at, ``entries`` the ones that became
    values, ``skipped`` the unreadable ones (lenient mode) and ``summaries``
    the ``N flow entries have been ...`` lines.
    """

    lines: int = 0
    entries: int = 0
    skipped: int = 0
    summaries: int = 0


# ---------------------------------------------------------------------------
# Addresses and small shared values


def _public_address(value: int, version: int) -> netaddr.IPAddress:
    """Build an IPAddress through netaddr's own constructor."""
    return netaddr.IPAddress(value, version)


def _slot_address(value: int, version: int) -> netaddr.IPAddress:
    """Build an IPAddress from its integer without the checks of its __init__.

    Only used after _address_from_int was verified against the public
    constructor below; about three times faster, and a dump converts one
    new address per flow.
    """
    address: netaddr.IPAddress = _new(netaddr.IPAddress)
    _ip_value(address, value)
    _ip_module(address, _IP_MODULES[version])
    return address


def _pick_address_builder() -> Callable[[int, int], netaddr.IPAddress]:
    """Use the slot builder only if it yields what netaddr itself builds."""
    try:
        samples = ((0x0A000001, 4), (0x20010DB8 << 96 | 1, 6))
        if all(_slot_address(v, n) == netaddr.IPAddress(v, n)
               and str(_slot_address(v, n)) == str(netaddr.IPAddress(v, n))
               and _slot_address(v, n).version == n for v, n in samples):
            return _slot_address
    except (AttributeError, KeyError, TypeError, ValueError):
        pass
    return _public_address


_new = object.__new__
try:
    _ip_value = netaddr.IPAddress.__mro__[1].__dict__["_value"].__set__
    _ip_module = netaddr.IPAddress.__mro__[1].__dict__["_module"].__set__
    _IP_MODULES = {4: netaddr.IPAddress("127.0.0.1")._module,
                   6: netaddr.IPAddress("::")._module}
except (AttributeError, KeyError, IndexError):  # another netaddr layout
    _IP_MODULES = {}
_address_from_int = _pick_address_builder()


_SLOT_ADDRESSES = _address_from_int is _slot_address
_IPAddress = netaddr.IPAddress
_inet_aton = socket.inet_aton
_inet_pton = socket.inet_pton
_AF_INET6 = socket.AF_INET6


def _make_address(text: str) -> netaddr.IPAddress:
    """Build an address object; the integer path is much faster than from text."""
    return _Addresses()[text]


class _Addresses(dict[str, netaddr.IPAddress]):
    """Map address text to a shared address object, converting on first use.

    The conversion is written out inline: it runs for every new address of
    a dump, which is one per flow in a table of distinct clients.
    """

    def __missing__(self, text: str) -> netaddr.IPAddress:
        try:
            if ":" in text:
                value, version = int.from_bytes(_inet_pton(_AF_INET6, text), "big"), 6
            elif len(text) <= _IPV4_MAX_TEXT and text.count(".") == 3:
                # The count rules out what inet_aton also takes ("1.2.3",
                # "0x01020304"); conntrack never prints those.
                value, version = int.from_bytes(_inet_aton(text), "big"), 4
            else:
                raise _LineError(f"not an IP address: {text!r}")
        except OSError as exc:
            raise _LineError(f"not an IP address: {text!r}") from exc
        if _SLOT_ADDRESSES:
            address = _new(_IPAddress)
            _ip_value(address, value)
            _ip_module(address, _IP_MODULES[version])
        else:  # pragma: no cover - another netaddr layout
            address = _IPAddress(value, version)
        if len(self) >= ADDRESS_CACHE_SIZE:
            self.clear()
        self[text] = address
        return address


_STATUS_CACHE: dict[tuple[str, ...], frozenset[str]] = {}


def _status(flags: tuple[str, ...]) -> frozenset[str]:
    """Return one shared frozenset per combination of flags."""
    found = _STATUS_CACHE.get(flags)
    if found is None:
        found = frozenset(flags)
        if len(_STATUS_CACHE) < 1024:
            _STATUS_CACHE[flags] = found
    return found


def _int(text: str) -> int:
    """Convert a decimal field; reject signs and spaces that int() allows."""
    if _DECIMAL_RE.fullmatch(text) is None:
        raise _LineError(f"not a number: {text[:40]!r}")
    return int(text)


def _hex(text: str) -> int:
    """Convert a GRE key as conntrack prints it (``0x1f``)."""
    if _HEX_RE.fullmatch(text) is None:
        raise _LineError(f"not a hexadecimal key: {text!r}")
    return int(text, 16)


_HEX_RE = re.compile(r"0x[0-9a-f]+", re.ASCII)


# ---------------------------------------------------------------------------
# Text lines (-L, -G, -D, -U output and the body of -E lines)


class _Side:
    """Collect the ICMP or GRE fields of one direction."""

    __slots__ = ("code", "dstkey", "icmp_id", "srckey", "type")

    def __init__(self) -> None:
        self.type: int | None = None
        self.code: int | None = None
        self.icmp_id: int | None = None
        self.srckey: int | None = None
        self.dstkey: int | None = None


def _split_ktimestamps(line: str) -> tuple[str, list[tuple[str, str]]]:
    """Remove ``[start=ctime]``/``[stop=ctime]`` (they hold spaces) from a line."""
    found = [(m.group(1), m.group(2)) for m in _KTIMESTAMP_RE.finditer(line)]
    return _KTIMESTAMP_RE.sub("", line), found


def _tuple(addresses: _Addresses, src: str | None, dst: str | None, sport: int | None,
           dport: int | None, *, side: _Side | None) -> FlowTuple:
    """Build one FlowTuple from the raw fields of a direction."""
    if src is None or dst is None:
        raise _LineError("incomplete tuple (src= and dst= are required in both directions)")
    if side is None:
        return _build_flow(addresses[src], addresses[dst], sport, dport, None, None, None,
                           None, None)
    return _build_flow(addresses[src], addresses[dst], sport, dport, side.type, side.code,
                       side.icmp_id, side.srckey, side.dstkey)


def _l4_key(sides: list[_Side | None], index: int, key: str, value: str) -> list[_Side | None]:
    """Store an ICMP type/code/id or a GRE key for one direction."""
    side = sides[index]
    if side is None:
        side = sides[index] = _Side()
    if key == "srckey":
        side.srckey = _hex(value)
    elif key == "dstkey":
        side.dstkey = _hex(value)
    elif key == "type":
        side.type = _int(value)
    elif key == "code":
        side.code = _int(value)
    else:
        side.icmp_id = _int(value)
    return sides


_L4_KEYS = frozenset({"type", "code", "srckey", "dstkey"})


def _head(toks: list[str]) -> tuple[str | None, str, int, int | None, str | None, int]:
    """Read family, protocol, timeout and state; return them and the next index."""
    family = None
    i = 0
    if toks[0] in _FAMILY_WORDS:
        family = toks[0]
        if constants.FAMILY_NUMBERS[family] != _int(toks[1]):
            raise _LineError("layer-3 number does not match the family")
        i = 2
    proto = toks[i]
    protonum = _int(toks[i + 1])
    if proto in constants.PROTOCOL_NUMBERS and constants.PROTOCOL_NUMBERS[proto] != protonum:
        raise _LineError("protocol number does not match the name")
    i += 2
    timeout = state = None
    word = toks[i]
    if word.isdigit():
        timeout = int(word)
        i += 1
        word = toks[i]
    if "=" not in word and word[0] != "[":
        if not word.isupper():
            raise _LineError(f"unexpected word {word!r}")
        state = word
        i += 1
    return family, proto, protonum, timeout, state, i


def _parse_text(line: str, addresses: _Addresses) -> Entry:  # noqa: PLR0912, PLR0915
    """Parse one entry line; raise _LineError (or ValueError/IndexError) if unreadable.

    One flat loop on purpose: this runs once per entry of a dump, and every
    function call or dict dispatch per token shows in the benchmark.
    """
    extra: list[tuple[str, str]] = []
    if "[st" in line:
        line, extra = _split_ktimestamps(line)
    toks = line.split()
    family, proto, protonum, timeout, state, i = _head(toks)

    osrc = odst = rsrc = rdst = None
    osport = odport = rsport = rdport = None
    opk = oby = rpk = rby = None
    mark = use = entry_id = delta = None
    zone = 0
    labels = _EMPTY
    flags: tuple[str, ...] = ()
    sides: list[_Side | None] = [None, None]
    orig_zone = reply_zone = secmark = None
    secctx = helper = None
    reply = 0
    prev = ""
    for tok in toks[i:]:
        if tok[0] == "[":
            if tok[-1] != "]" or len(tok) < 3:
                raise _LineError(f"bad flag {tok!r}")
            flags += (tok[1:-1],)
            continue
        key, sep, value = tok.partition("=")
        if not sep or not key:
            raise _LineError(f"unexpected word {tok!r}")
        if key == "src":
            if osrc is None:
                osrc = value
            elif rsrc is None:
                rsrc = value
                reply = 1
            else:
                raise _LineError("more than two src= fields")
        elif key == "dst":
            if reply:
                rdst = value
            else:
                odst = value
        elif key == "sport":
            if reply:
                rsport = _int(value)
            else:
                osport = _int(value)
        elif key == "dport":
            if reply:
                rdport = _int(value)
            else:
                odport = _int(value)
        elif key == "packets":
            if reply:
                rpk = _int(value)
            else:
                opk = _int(value)
        elif key == "bytes":
            if reply:
                rby = _int(value)
            else:
                oby = _int(value)
        elif key == "mark":
            mark = _int(value)
        elif key == "use":
            use = _int(value)
        elif key == "zone":
            zone = _int(value)
        elif key == "delta-time":
            delta = _int(value)
        elif key == "id":
            # ICMP prints "code=N id=N" inside a tuple; -o id appends "id=N".
            if prev == "code":
                sides = _l4_key(sides, reply, key, value)
            else:
                entry_id = _int(value)
        elif key in _L4_KEYS:
            sides = _l4_key(sides, reply, key, value)
        elif key == "zone-orig":
            orig_zone = _int(value)
        elif key == "zone-reply":
            reply_zone = _int(value)
        elif key == "secmark":
            secmark = _int(value)
        elif key == "secctx":
            secctx = value
        elif key == "helper":
            helper = value
        elif key == "labels":
            labels = frozenset(value.split(",")) if value else _EMPTY
        else:
            extra.append((key, value))
        prev = key

    original = _tuple(addresses, osrc, odst, osport, odport, side=sides[0])
    reply_tuple = _tuple(addresses, rsrc, rdst, rsport, rdport, side=sides[1])
    derived = "ipv6" if original.src.version == 6 else "ipv4"
    if family is not None and family != derived:
        raise _LineError("address family does not match the ipv4/ipv6 prefix")
    counters = None
    if opk is not None or rpk is not None or oby is not None or rby is not None:
        counters = Counters(opk or 0, oby or 0, rpk or 0, rby or 0)
    return _build_entry(derived, proto, protonum, original, reply_tuple, state, timeout,
                        _status(flags) if flags else _EMPTY, mark, zone, orig_zone, reply_zone,
                        use, entry_id, labels, counters, secctx, secmark, helper, delta,
                        tuple(sorted(extra)) if extra else ())


# ---------------------------------------------------------------------------
# Construction without the dataclass __init__
#
# A frozen dataclass' generated __init__ stores each field through
# object.__setattr__, which costs about a third of the parse of a dump line.
# Instead, a plain class with exactly the same slots is filled with ordinary
# attribute stores and then given the model's class (``__class__``
# assignment, allowed between classes whose slot layouts are identical).
# The result is indistinguishable from a constructed instance; this is
# verified when the module loads and by tests/unit/test_parser.py.

_ENTRY_FIELDS = (
    "family", "proto", "protonum", "original", "reply", "state", "timeout", "status",
    "mark", "zone", "orig_zone", "reply_zone", "use", "id", "labels", "counters", "secctx",
    "secmark", "helper", "delta_time", "extra",
)
_FLOW_FIELDS = (
    "src", "dst", "sport", "dport", "icmp_type", "icmp_code", "icmp_id", "srckey", "dstkey",
)


def _field_names(cls: type) -> tuple[str, ...]:
    """Return the dataclass field names of ``cls`` in declaration order."""
    return tuple(field.name for field in dataclasses.fields(cls))


class _EntryShell:
    """Mutable stand-in with Entry's slots, turned into an Entry when filled."""

    __slots__ = _ENTRY_FIELDS


class _FlowShell:
    """Mutable stand-in with FlowTuple's slots, turned into a FlowTuple when filled."""

    __slots__ = _FLOW_FIELDS


def _build_entry(family: str, proto: str, protonum: int, original: FlowTuple,  # noqa: PLR0917
                 reply: FlowTuple, state: str | None, timeout: int | None,
                 status: frozenset[str], mark: int | None, zone: int, orig_zone: int | None,
                 reply_zone: int | None, use: int | None, id_: int | None,
                 labels: frozenset[str], counters: Counters | None, secctx: str | None,
                 secmark: int | None, helper: str | None, delta_time: int | None,
                 extra: tuple[tuple[str, str], ...]) -> Entry:
    """Return what Entry(...) with these positional arguments returns, faster."""
    entry: Any = _new(_EntryShell)
    entry.family = family
    entry.proto = proto
    entry.protonum = protonum
    entry.original = original
    entry.reply = reply
    entry.state = state
    entry.timeout = timeout
    entry.status = status
    entry.mark = mark
    entry.zone = zone
    entry.orig_zone = orig_zone
    entry.reply_zone = reply_zone
    entry.use = use
    entry.id = id_
    entry.labels = labels
    entry.counters = counters
    entry.secctx = secctx
    entry.secmark = secmark
    entry.helper = helper
    entry.delta_time = delta_time
    entry.extra = extra
    entry.__class__ = Entry
    return cast(Entry, entry)


def _build_flow(src: netaddr.IPAddress, dst: netaddr.IPAddress,  # noqa: PLR0917
                sport: int | None, dport: int | None, icmp_type: int | None,
                icmp_code: int | None, icmp_id: int | None, srckey: int | None,
                dstkey: int | None) -> FlowTuple:
    """Return what FlowTuple(...) with these positional arguments returns, faster."""
    flow: Any = _new(_FlowShell)
    flow.src = src
    flow.dst = dst
    flow.sport = sport
    flow.dport = dport
    flow.icmp_type = icmp_type
    flow.icmp_code = icmp_code
    flow.icmp_id = icmp_id
    flow.srckey = srckey
    flow.dstkey = dstkey
    flow.__class__ = FlowTuple
    return cast(FlowTuple, flow)


def _builders_are_exact() -> bool:
    """Tell whether the shells still build exactly what the models' constructors do."""
    if _field_names(Entry) != _ENTRY_FIELDS or _field_names(FlowTuple) != _FLOW_FIELDS:
        return False
    address = netaddr.IPAddress("192.0.2.1")
    args = (address, address, 1, 2, 3, 4, 5, 6, 7)
    flow = _build_flow(*args)
    values = ("ipv4", "tcp", 6, flow, flow, "CLOSE", 1, _EMPTY, 2, 3, 4, 5, 6, 7, _EMPTY,
              None, "c", 8, "h", 9, ())
    entry = _build_entry(*values)
    return (type(flow) is FlowTuple and flow == FlowTuple(*args)
            and type(entry) is Entry and entry == Entry(*values)
            and hash(entry) == hash(Entry(*values)))


if not _builders_are_exact():  # pragma: no cover - models.py changed its fields
    raise ImportError("conntrack_lib.models changed: update the parser's builders")


# ---------------------------------------------------------------------------
# Fast path: the common shape of a dump line, read by one regular expression

# Possessive quantifiers (++, *+) never give characters back: no field can
# end inside a run of digits or address characters, and not backtracking
# makes the scan about 15% faster.  Python 3.10's re has no possessive
# quantifiers; there the greedy form matches the same lines, only slower.
_FAST_PATTERN = (
    r"(?:(ipv4 ++2|ipv6 ++10) ++)?"
    r"([a-z]++) ++(\d++) ++(?:(\d++) )?(?:([A-Z][A-Z0-9_]*+) )?"
    r"src=([0-9a-f.:]++) dst=([0-9a-f.:]++) (?:sport=(\d++) dport=(\d++) )?"
    r"(?:packets=(\d++) bytes=(\d++) )?(\[UNREPLIED\] )?"
    r"src=([0-9a-f.:]++) dst=([0-9a-f.:]++) (?:sport=(\d++) dport=(\d++) )?"
    r"(?:packets=(\d++) bytes=(\d++) )?(?:\[(ASSURED|OFFLOAD|HW_OFFLOAD)\] )?"
    r"(?:mark=(\d++) )?(?:zone=(\d++) )?(?:delta-time=(\d++) )?use=(\d++)(?: id=(\d++))?"
)
if sys.version_info < (3, 11):
    _FAST_PATTERN = _FAST_PATTERN.replace("++", "+").replace("*+", "*")
_FAST_RE = re.compile(_FAST_PATTERN, re.ASCII)
_fast_match = _FAST_RE.fullmatch
# The same shape as whole lines of a text (no leading or trailing blanks).
_FAST_LINE_RE = re.compile(r"^" + _FAST_RE.pattern + r"$", re.ASCII | re.MULTILINE)
_UNREPLIED = frozenset({"UNREPLIED"})


class _Numbers(dict[str | None, int | None]):
    """Map decimal text (or None) to its int; fields like use=1 repeat a lot."""

    def __init__(self) -> None:
        super().__init__({None: None})

    def __missing__(self, text: str | None) -> int | None:
        value = int(text)  # type: ignore[arg-type]  # None is always present
        if len(self) >= ADDRESS_CACHE_SIZE:
            self.clear()
            self[None] = None
        self[text] = value
        return value


def _opt_ports(*ports: str | None) -> tuple[int | None, ...]:
    """Convert ports of a line whose tuples lack some (portless protocols)."""
    return tuple(None if port is None else int(port) for port in ports)


def _fast_entry(groups: tuple[str | None, ...], addresses: _Addresses,  # noqa: PLR0915
                nums: _Numbers) -> Entry:
    """Build an Entry from the groups of _FAST_RE (ports-or-nothing protocols).

    Fills the shells inline (see _build_entry): this runs once per dump line.
    """
    (family, proto, protonum, timeout, state, osrc, odst, osport, odport, opk, oby, unreplied,
     rsrc, rdst, rsport, rdport, rpk, rby, flag, mark, zone, delta, use, id_) = groups
    if (proto, protonum) not in _FAST_PROTOCOLS and proto != "unknown":
        raise _LineError("protocol does not match its fields")
    if flag is None:
        status = _UNREPLIED if unreplied else _EMPTY
    else:
        status = _status(("UNREPLIED", flag) if unreplied else (flag,))
    counters = None
    if opk is not None or rpk is not None:
        counters = Counters(int(opk or 0), int(oby or 0), int(rpk or 0), int(rby or 0))
    derived = "ipv6" if ":" in osrc else "ipv4"  # type: ignore[operator]
    if family is not None and family[:4] != derived:
        raise _LineError("address family does not match the ipv4/ipv6 prefix")
    if osport is None or odport is None or rsport is None or rdport is None:
        osp, odp, rsp, rdp = _opt_ports(osport, odport, rsport, rdport)
    else:
        # Convert each port once when the reply mirrors the original.
        osp, odp = int(osport), int(odport)
        rsp = odp if rsport == odport else int(rsport)
        rdp = osp if rdport == osport else int(rdport)
    original: Any = _new(_FlowShell)
    original.src = addresses[osrc]  # type: ignore[index]
    original.dst = addresses[odst]  # type: ignore[index]
    original.sport = osp
    original.dport = odp
    original.icmp_type = original.icmp_code = original.icmp_id = None
    original.srckey = original.dstkey = None
    original.__class__ = FlowTuple
    reply: Any = _new(_FlowShell)
    reply.src = addresses[rsrc]  # type: ignore[index]
    reply.dst = addresses[rdst]  # type: ignore[index]
    reply.sport = rsp
    reply.dport = rdp
    reply.icmp_type = reply.icmp_code = reply.icmp_id = None
    reply.srckey = reply.dstkey = None
    reply.__class__ = FlowTuple
    entry: Any = _new(_EntryShell)
    entry.family = derived
    entry.proto = proto
    entry.protonum = nums[protonum]
    entry.original = original
    entry.reply = reply
    entry.state = state
    entry.timeout = nums[timeout]
    entry.status = status
    entry.mark = nums[mark]
    entry.zone = nums[zone] or 0
    entry.orig_zone = entry.reply_zone = None
    entry.use = nums[use]
    entry.id = None if id_ is None else int(id_)
    entry.labels = _EMPTY
    entry.counters = counters
    entry.secctx = entry.secmark = entry.helper = None
    entry.delta_time = nums[delta]
    entry.extra = ()
    entry.__class__ = Entry
    return cast(Entry, entry)


#: (name, number) of the protocols the fast path reads; ICMP and GRE tuples
#: hold other fields and "unknown" takes any number.
_FAST_PROTOCOLS = frozenset(
    (name, str(number)) for name, number in constants.PROTOCOL_NUMBERS.items()
    if name not in ("icmp", "icmpv6", "gre")
)


# ---------------------------------------------------------------------------
# Shared line driver: summaries, blank lines, strict/lenient, statistics


#: What reading a bad line can raise: our own error, failed int()/address
#: conversions, a line that ends early, too large numbers, broken XML.
_UNREADABLE = (_LineError, ValueError, IndexError, KeyError, OverflowError, ET.ParseError)


def _summary_line(line: str) -> bool:
    """Tell whether a line is one of conntrack's "N ... have been ..." summaries."""
    return "have been" in line and _SUMMARY_RE.search(line) is not None


def _drive(lines: Iterable[str], parse_one: Callable[[str], _T | None], strict: bool,  # noqa: PLR0917
           stats: ParseStats | None, what: str | None, line_base: int = 0) -> Iterator[_T]:
    """Feed non-empty lines to ``parse_one`` with the strict/lenient policy.

    Counts in local variables and publishes them to ``stats`` when the
    iteration ends (also when the caller stops early): attribute updates per
    line would cost more than the parse of a short line.
    """
    lineno = line_base
    entries = skipped = summaries = 0
    try:
        for raw in lines:
            lineno += 1
            line = raw.strip()
            if not line:
                continue
            try:
                value = parse_one(line)
            except _UNREADABLE as exc:
                if _summary_line(line):
                    summaries += 1
                    continue
                if strict:
                    raise ParseError(raw.rstrip("\n"), lineno, _reason(exc)) from None
                skipped += 1
                continue
            if value is not None:
                entries += 1
                yield value
    finally:
        if stats is not None:
            stats.lines += lineno - line_base
            stats.entries += entries
            stats.skipped += skipped
            stats.summaries += summaries
        if skipped and what:
            LOG.warning("Skipped %d unreadable line(s) of conntrack %s output", skipped, what)


def _reason(exc: Exception) -> str:
    """Return a short human reason for a parse failure."""
    if isinstance(exc, _LineError):
        return str(exc.args[0])
    if isinstance(exc, IndexError):
        return "line ends too early"
    return f"{type(exc).__name__}: {exc}"


def iter_entries(lines: Iterable[str], *, strict: bool = False,
                 stats: ParseStats | None = None) -> Iterator[Entry]:
    """Yield one Entry per entry line of ``conntrack -L/-G/-D/-U`` text output.

    Streams: lines are read one at a time, so a pipe or a file object works
    and memory does not grow with the table.  Summary lines are counted,
    blank lines ignored.  To collect a whole table into a list,
    :func:`parse_entries` (which also takes lines) is faster.

    :param lines: text lines (default format, ``-o extended``, ``id``,
        ``ktimestamp``, ``labels`` in any combination).
    :param strict: raise on an unreadable line instead of skipping it.
    :param stats: optional counters, added to when the iteration ends (or
        is closed early).
    :returns: an iterator of :class:`~conntrack_lib.models.Entry`.
    :raises ParseError: in strict mode, for the first unreadable line.
    """
    addresses = _Addresses()
    nums = _Numbers()

    def parse_one(line: str) -> Entry:
        match = _fast_match(line)
        if match is not None:
            try:
                return _fast_entry(match.groups(), addresses, nums)
            except (_LineError, ValueError):
                pass  # the line parser decides, as in parse_entries
        if line[0] == "[" or line[0] == "<":
            raise _LineError("not an entry line")
        return _parse_text(line, addresses)

    return _drive(lines, parse_one, strict, stats, "entry")


def parse_entries(text: str | Iterable[str], *, strict: bool = False,
                  stats: ParseStats | None = None) -> list[Entry]:
    """Return the entries of a whole ``conntrack -L``-style output.

    Same result as ``list(iter_entries(...))``, faster: the cyclic garbage
    collector is held while the list is built, and given one string the
    common line shape is matched over the whole text in one scan (other
    lines go through the line-by-line parser).

    :param text: the whole output, or its lines (a pipe being read works;
        the collector stays held until it is exhausted).
    :raises ParseError: in strict mode, for the first unreadable line.
    """
    with _gc_paused():
        if isinstance(text, str):
            return _scan_entries(text, strict, stats)
        return list(iter_entries(text, strict=strict, stats=stats))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while building a large list.

    Parsing creates no reference cycles, but hundreds of thousands of new
    tracked objects trigger repeated full collections that cost more than
    the parse itself.  Restored on exit, also on errors.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _scan_entries(text: str, strict: bool, stats: ParseStats | None) -> list[Entry]:
    """Parse a whole text: fast scan for common lines, line parser for the rest."""
    addresses = _Addresses()
    nums = _Numbers()
    slow = ParseStats()  # what the line parser saw, across every gap
    entries: list[Entry] = []
    append = entries.append
    pos = 0
    for match in _FAST_LINE_RE.finditer(text):
        start = match.start()
        if start != pos:
            entries.extend(_slow_lines(text[pos:start], addresses, strict, slow, entries))
        try:
            append(_fast_entry(match.groups(), addresses, nums))
        except (_LineError, ValueError):
            entries.extend(_slow_lines(match.group(), addresses, strict, slow, entries))
        pos = match.end() + 1  # past the newline
    if pos < len(text):
        entries.extend(_slow_lines(text[pos:], addresses, strict, slow, entries))
    if stats is not None:
        stats.lines += slow.lines + len(entries) - slow.entries
        stats.entries += len(entries)
        stats.skipped += slow.skipped
        stats.summaries += slow.summaries
    if slow.skipped:
        LOG.warning("Skipped %d unreadable line(s) of conntrack entry output", slow.skipped)
    return entries


def _slow_lines(text: str, addresses: _Addresses, strict: bool, slow: ParseStats,
                done: list[Entry]) -> Iterator[Entry]:
    """Parse the lines the fast scan left, numbering them after those before."""
    line_base = slow.lines + len(done) - slow.entries
    return _drive(text.splitlines(), lambda line: _parse_text(line, addresses), strict, slow,
                  None, line_base)


# ---------------------------------------------------------------------------
# Events (-E)


def _split_event_head(line: str) -> tuple[float | None, str, str]:
    """Split the optional ``-o timestamp`` prefix and the ``[TYPE]`` word off."""
    timestamp = None
    if line.startswith("[") and line[1:2].isdigit():
        match = _EVENT_TIMESTAMP_RE.match(line)
        if match is None:
            raise _LineError("bad event timestamp")
        timestamp = int(match.group(1)) + int(match.group(2)) / 1_000_000
        line = line[match.end():].lstrip()
    word, _, rest = line.partition(" ")
    event_type = _EVENT_TYPES.get(word)
    if event_type is None:
        raise _LineError(f"unknown event type {word!r}")
    return timestamp, event_type, rest


def _split_userspace(line: str) -> tuple[str, int | None, str | None]:
    """Cut the ``[USERSPACE] portid=N progname=NAME`` tail off an event line."""
    body, tag, tail = line.partition(_USERSPACE_TAG)
    if not tag:
        return line, None, None
    portid = progname = None
    tail = tail.strip()
    name_at = tail.find("progname=")
    if name_at >= 0:
        progname = tail[name_at + len("progname="):]
        tail = tail[:name_at]
    for word in tail.split():
        key, _, value = word.partition("=")
        if key != "portid":
            raise _LineError(f"unexpected {word!r} after [USERSPACE]")
        portid = _int(value)
    return body, portid, progname


def _parse_event_line(line: str, addresses: _Addresses) -> Event | None:
    """Parse one -E line (text or a one-line XML flow); None for XML framing."""
    if line[0] == "<":
        return _parse_xml_event(line, addresses)
    timestamp, event_type, rest = _split_event_head(line)
    body, portid, progname = _split_userspace(rest)
    entry = _parse_text(body, addresses)
    return Event(event_type, entry, timestamp, portid, progname)


def parse_events(source: str | Iterable[str], *, strict: bool = False,
                 stats: ParseStats | None = None) -> Iterator[Event]:
    """Yield one Event per line of ``conntrack -E`` output (text or ``-o xml``).

    Handles the ``-o timestamp`` prefix, ``-o extended/id/ktimestamp`` and
    the ``[USERSPACE] portid=N progname=NAME`` tail (also when it follows
    ``</flow>`` in XML mode).  ``source`` may be the whole text or any
    iterable of lines, such as a pipe being read.

    :raises ParseError: in strict mode, for the first unreadable line.
    """
    lines = source.splitlines() if isinstance(source, str) else source
    addresses = _Addresses()
    return _drive(lines, lambda line: _parse_event_line(line, addresses), strict, stats,
                  "event")


# ---------------------------------------------------------------------------
# XML (-o xml)

_XML_FRAMING = ("<?xml", "<conntrack>", "</conntrack>")


def _xml_int(element: ET.Element | None, name: str) -> int | None:
    """Return the integer text of a child element, or None when absent."""
    child = element.find(name) if element is not None else None
    if child is None or child.text is None:
        return None
    return _xml_number(child.text)


def _xml_number(text: str) -> int:
    """Convert an XML number: decimal, zero-padded (``<sec>01</sec>``) or GRE hex."""
    return _hex(text) if text.startswith("0x") else _int(text)


def _xml_direction(meta: ET.Element, addresses: _Addresses) -> tuple[
        FlowTuple, int | None, tuple[int, int] | None]:
    """Read one ``<meta direction=...>``: the tuple, its zone and its counters."""
    layer3 = meta.find("layer3")
    layer4 = meta.find("layer4")
    if layer3 is None or layer4 is None:
        raise _LineError("flow direction without layer3/layer4")
    src, dst = layer3.findtext("src"), layer3.findtext("dst")
    if not src or not dst:
        raise _LineError("flow direction without addresses")
    flow = FlowTuple(
        addresses[src], addresses[dst],
        _xml_int(layer4, "sport"), _xml_int(layer4, "dport"),
        _xml_int(layer4, "type"), _xml_int(layer4, "code"), _xml_int(layer4, "id"),
        _xml_int(layer4, "srckey"), _xml_int(layer4, "dstkey"),
    )
    counters = meta.find("counters")
    if counters is None:
        return flow, _xml_int(meta, "zone"), None
    packets_bytes = (_xml_int(counters, "packets") or 0, _xml_int(counters, "bytes") or 0)
    return flow, _xml_int(meta, "zone"), packets_bytes


def _fix_state(proto: str, state: str | None) -> str | None:
    """Undo the XML printer's use of TCP state names for SCTP and DCCP.

    libnetfilter_conntrack 1.0.9 looks the SCTP/DCCP state number up in the
    TCP name table, so SCTP ESTABLISHED (4) is printed as FIN_WAIT (TCP 4).
    """
    names = _XML_STATE_NAMES.get(proto)
    if names is None or state is None or state not in constants.TCP_STATES:
        return state
    number = constants.TCP_STATES.index(state)
    return names[number] if number < len(names) else state


_XML_STATE_NAMES: dict[str, tuple[str, ...]] = {
    "sctp": (*constants.SCTP_STATES, "HEARTBEAT_SENT", "HEARTBEAT_ACKED"),
    "dccp": constants.DCCP_STATES,
}
_XML_INDEPENDENT_INTS = {"timeout", "mark", "secmark", "use", "id", "zone", "deltatime"}


def _xml_independent(meta: ET.Element | None) -> tuple[dict[str, int], dict[str, str],
                                                        list[str], frozenset[str],
                                                        list[tuple[str, str]]]:
    """Read ``<meta direction="independent">`` into ints, strings, flags, labels, extra."""
    ints: dict[str, int] = {}
    strings: dict[str, str] = {}
    flags: list[str] = []
    labels: frozenset[str] = _EMPTY
    extra: list[tuple[str, str]] = []
    for child in meta if meta is not None else ():
        tag = child.tag
        if tag in _XML_INDEPENDENT_INTS:
            ints[tag] = _xml_number(child.text or "")
        elif tag in ("state", "secctx"):
            strings[tag] = child.text or ""
        elif tag == "labels":
            labels = frozenset(label.text or "" for label in child.iter("label"))
        elif tag == "timestamp":
            extra.extend((part.tag, part.text or "") for part in child)
        elif len(child) == 0 and not (child.text or "").strip():
            flags.append(tag.upper())
        else:
            extra.append((tag, child.text or ""))
    return ints, strings, flags, labels, extra


def _parse_xml_flow(flow: ET.Element, addresses: _Addresses) -> Entry:
    """Build an Entry from one ``<flow>`` element."""
    metas = {meta.get("direction"): meta for meta in flow.findall("meta")}
    if "original" not in metas or "reply" not in metas:
        raise _LineError("flow without original and reply directions")
    original, orig_zone, orig_counters = _xml_direction(metas["original"], addresses)
    reply, reply_zone, reply_counters = _xml_direction(metas["reply"], addresses)
    layer3 = metas["original"].find("layer3")
    layer4 = metas["original"].find("layer4")
    if layer3 is None or layer4 is None:
        raise _LineError("flow direction without layer3/layer4")
    proto = layer4.get("protoname") or ""
    ints, strings, flags, labels, extra = _xml_independent(metas.get("independent"))
    counters = None
    if orig_counters is not None or reply_counters is not None:
        counters = Counters(*(orig_counters or (0, 0)), *(reply_counters or (0, 0)))
    return Entry(
        family=layer3.get("protoname") or "", proto=proto,
        protonum=_int(layer4.get("protonum") or ""),
        original=original, reply=reply,
        state=_fix_state(proto, strings.get("state")), timeout=ints.get("timeout"),
        status=_status(tuple(flags)) if flags else _EMPTY, mark=ints.get("mark"),
        zone=ints.get("zone", 0), orig_zone=orig_zone, reply_zone=reply_zone,
        use=ints.get("use"), id=ints.get("id"), labels=labels, counters=counters,
        secctx=strings.get("secctx"), secmark=ints.get("secmark"),
        helper=flow.findtext("helper"), delta_time=ints.get("deltatime"),
        extra=tuple(sorted(extra)),
    )


def _xml_when(flow: ET.Element) -> float | None:
    """Convert the ``<when>`` of ``-E -o xml,timestamp`` to seconds since the epoch.

    conntrack prints the receiving host's local time, to the second, so this
    reads it in this process' time zone (the same host).
    """
    when = flow.find("when")
    if when is None:
        return None
    year, month, day, hour, minute, second = (
        _xml_int(when, name) or 0 for name in ("year", "month", "day", "hour", "min", "sec"))
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))


def _xml_flow_element(line: str) -> tuple[ET.Element, str]:
    """Parse one ``<flow>...</flow>`` line; return it and any text after it."""
    end = line.rfind("</flow>")
    if end < 0:
        raise _LineError("unterminated <flow>")
    end += len("</flow>")
    element = ET.fromstring(line[:end])  # noqa: S314 - local conntrack output, not remote data
    if element.tag != "flow":
        raise _LineError(f"unexpected element <{element.tag}>")
    return element, line[end:]


def _parse_xml_event(line: str, addresses: _Addresses) -> Event | None:
    """Parse one XML event line; None for the document framing lines."""
    if line.startswith(_XML_FRAMING):
        return None
    element, tail = _xml_flow_element(line)
    event_type = _XML_EVENT_TYPES.get(element.get("type") or "")
    if event_type is None:
        raise _LineError("XML event without a known type")
    _, portid, progname = _split_userspace(tail)
    return Event(event_type, _parse_xml_flow(element, addresses), _xml_when(element), portid,
                 progname)


def parse_xml(text: str, *, strict: bool = False,
              stats: ParseStats | None = None) -> list[Entry]:
    """Return the entries of ``conntrack -L -o xml`` output (stdlib XML only).

    Known defects of conntrack 1.4.7's XML, handled here: ICMP/ICMPv6 flows
    carry no type/code/id (those fields stay None); SCTP/DCCP states are
    printed with TCP names (translated back); an empty table prints nothing
    (returns []); ``-D``/``-U`` print bare ``<flow>`` lines with no document
    around them (accepted); a ``[USERSPACE]`` tag may follow ``</flow>``
    (ignored).  ``<timestamp>`` start/stop (nanoseconds) go to ``extra``.

    :raises ParseError: in strict mode, for the first unreadable line.
    """
    addresses = _Addresses()

    def parse_one(line: str) -> Entry | None:
        if line.startswith(_XML_FRAMING):
            return None
        element, _ = _xml_flow_element(line)
        return _parse_xml_flow(element, addresses)

    return list(_drive(text.splitlines(), parse_one, strict, stats, "XML"))


# ---------------------------------------------------------------------------
# -S, -C and the stderr summary


def _parse_stats_line(line: str) -> CpuStats:
    """Parse ``cpu=N<TAB>name=value ...`` into CpuStats."""
    words = line.split()
    key, _, cpu = words[0].partition("=")
    if key != "cpu":
        raise _LineError("statistics line does not start with cpu=")
    counters = []
    for word in words[1:]:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise _LineError(f"unexpected word {word!r}")
        counters.append((name, _int(value)))
    return CpuStats(_int(cpu), tuple(counters))


def parse_stats(text: str) -> list[CpuStats]:
    """Return one CpuStats per CPU line of ``conntrack -S`` output.

    Works for the netlink form and for the ``/proc`` fallback (other names).

    :raises ParseError: for a line that is not a statistics line.
    """
    return list(_drive(text.splitlines(), _parse_stats_line, True, None, "statistics"))


def parse_count(text: str) -> int:
    """Return the number printed by ``conntrack -C``.

    :raises ParseError: when the output is not a single non-negative integer.
    """
    words = text.split()
    if len(words) != 1 or _DECIMAL_RE.fullmatch(words[0]) is None:
        raise ParseError(text, 1, "expected a single integer")
    return int(words[0])


def parse_summary(text: str) -> tuple[int, str] | None:
    """Return ``(N, word)`` from the last "N flow entries have been <word>." line.

    The summary goes to stderr.  Also matches the "flow events" and
    "expectations" forms.  Returns None when there is no summary (``-R``,
    ``-C``, ``-S``, ``-F`` print none).
    """
    found = None
    for match in _SUMMARY_RE.finditer(text):
        found = (int(match.group(1)), match.group(2))
    return found


__all__ = [
    "ParseStats",
    "iter_entries",
    "parse_count",
    "parse_entries",
    "parse_events",
    "parse_stats",
    "parse_summary",
    "parse_xml",
]
