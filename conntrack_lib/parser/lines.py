"""The general parser of one text entry line (``-L``/``-G``/``-D``/``-U``, ``-E`` bodies).

It reads every shape conntrack prints: any protocol (ICMP type/code/id,
GRE keys), ``-o extended/id/ktimestamp/labels``, zones per direction,
security contexts, helpers.  Lines of the common shape are read faster by
:mod:`conntrack_lib.parser.fast`; this parser takes the rest and decides
whenever the fast path refuses a line.
"""

from __future__ import annotations

import re

from conntrack_lib import constants
from conntrack_lib.models import Counters, Entry, FlowTuple
from conntrack_lib.parser.base import EMPTY, Addresses, LineError, status, to_hex, to_int
from conntrack_lib.parser.builders import build_entry, build_flow

_KTIMESTAMP_RE = re.compile(r" ?\[(start|stop)=([^\]\[]{0,64})\]")
_FAMILY_WORDS = frozenset(constants.FAMILIES)
#: Integer fields that belong to the whole entry: key as printed -> Entry field.
_ENTRY_INTS = {
    "mark": "mark", "use": "use", "zone": "zone", "delta-time": "delta_time",
    "zone-orig": "orig_zone", "zone-reply": "reply_zone", "secmark": "secmark",
}
_ENTRY_STRINGS = frozenset({"secctx", "helper"})
#: Fields printed once per direction, converted as they are read.
_DIRECTION_INTS = frozenset({"sport", "dport", "packets", "bytes", "type", "code"})
_DIRECTION_HEX = frozenset({"srckey", "dstkey"})


class _Direction:
    """The raw fields of one direction (original or reply) of a line."""

    __slots__ = (
        "bytes",
        "code",
        "dport",
        "dst",
        "dstkey",
        "icmp_id",
        "packets",
        "sport",
        "src",
        "srckey",
        "type",
    )

    def __init__(self, src: str) -> None:
        self.src = src
        self.dst: str | None = None
        self.sport: int | None = None
        self.dport: int | None = None
        self.packets: int | None = None
        self.bytes: int | None = None
        self.type: int | None = None
        self.code: int | None = None
        self.icmp_id: int | None = None
        self.srckey: int | None = None
        self.dstkey: int | None = None

    def flow(self, addresses: Addresses) -> FlowTuple:
        """Build this direction's FlowTuple."""
        if self.dst is None:
            raise LineError("incomplete tuple (src= and dst= are required in both directions)")
        return build_flow(addresses[self.src], addresses[self.dst], self.sport, self.dport,
                          self.type, self.code, self.icmp_id, self.srckey, self.dstkey)


class _Fields:
    """Collect the ``key=value`` words and ``[FLAGS]`` of one line."""

    def __init__(self, extra: list[tuple[str, str]]) -> None:
        self.directions: list[_Direction] = []
        self.ints: dict[str, int] = {}
        self.strings: dict[str, str] = {}
        self.labels: frozenset[str] = EMPTY
        self.flags: tuple[str, ...] = ()
        self.extra = extra
        self.prev = ""

    def add(self, tok: str) -> None:
        """Store one word of the line after its head."""
        if tok[0] == "[":
            if tok[-1] != "]" or len(tok) < 3:
                raise LineError(f"bad flag {tok!r}")
            self.flags += (tok[1:-1],)
            return
        key, sep, value = tok.partition("=")
        if not sep or not key:
            raise LineError(f"unexpected word {tok!r}")
        if key == "src":
            if len(self.directions) == 2:
                raise LineError("more than two src= fields")
            self.directions.append(_Direction(value))
        elif key in _ENTRY_INTS:
            self.ints[_ENTRY_INTS[key]] = to_int(value)
        elif key == "id" and self.prev != "code":
            self.ints["id"] = to_int(value)  # -o id; ICMP prints "code=N id=N"
        elif key in _ENTRY_STRINGS:
            self.strings[key] = value
        elif key == "labels":
            self.labels = frozenset(value.split(",")) if value else EMPTY
        elif not self._directional(key, value):
            self.extra.append((key, value))
        self.prev = key

    def _directional(self, key: str, value: str) -> bool:
        """Store a field of the current direction; False if ``key`` is not one."""
        if key not in _DIRECTION_INTS and key not in _DIRECTION_HEX and key not in ("dst", "id"):
            return False
        if not self.directions:
            raise LineError(f"{key}= before src=")
        direction = self.directions[-1]
        if key == "dst":
            direction.dst = value
        elif key == "id":
            direction.icmp_id = to_int(value)
        else:
            setattr(direction, key, to_hex(value) if key in _DIRECTION_HEX else to_int(value))
        return True

    def counters(self) -> Counters | None:
        """Return the packet/byte counters, or None when the line has none."""
        orig, reply = self.directions
        if orig.packets is None and reply.packets is None and orig.bytes is None \
                and reply.bytes is None:
            return None
        return Counters(orig.packets or 0, orig.bytes or 0, reply.packets or 0,
                        reply.bytes or 0)


def split_ktimestamps(line: str) -> tuple[str, list[tuple[str, str]]]:
    """Remove ``[start=ctime]``/``[stop=ctime]`` (they hold spaces) from a line."""
    found = [(m.group(1), m.group(2)) for m in _KTIMESTAMP_RE.finditer(line)]
    return _KTIMESTAMP_RE.sub("", line), found


def _head(toks: list[str]) -> tuple[str | None, str, int, int | None, str | None, int]:
    """Read family, protocol, timeout and state; return them and the next index."""
    family = None
    i = 0
    if toks[0] in _FAMILY_WORDS:
        family = toks[0]
        if constants.FAMILY_NUMBERS[family] != to_int(toks[1]):
            raise LineError("layer-3 number does not match the family")
        i = 2
    proto = toks[i]
    protonum = to_int(toks[i + 1])
    if proto in constants.PROTOCOL_NUMBERS and constants.PROTOCOL_NUMBERS[proto] != protonum:
        raise LineError("protocol number does not match the name")
    i += 2
    timeout = state = None
    word = toks[i]
    if word.isdigit():
        timeout = int(word)
        i += 1
        word = toks[i]
    if "=" not in word and word[0] != "[":
        if not word.isupper():
            raise LineError(f"unexpected word {word!r}")
        state = word
        i += 1
    return family, proto, protonum, timeout, state, i


def parse_text(line: str, addresses: Addresses) -> Entry:
    """Parse one entry line; raise LineError (or ValueError/IndexError) if unreadable."""
    extra: list[tuple[str, str]] = []
    if "[st" in line:
        line, extra = split_ktimestamps(line)
    toks = line.split()
    family, proto, protonum, timeout, state, i = _head(toks)
    fields = _Fields(extra)
    for tok in toks[i:]:
        fields.add(tok)
    if len(fields.directions) != 2:
        raise LineError("incomplete tuple (src= and dst= are required in both directions)")
    original = fields.directions[0].flow(addresses)
    reply = fields.directions[1].flow(addresses)
    derived = "ipv6" if original.src.version == 6 else "ipv4"
    if family is not None and family != derived:
        raise LineError("address family does not match the ipv4/ipv6 prefix")
    ints, strings = fields.ints, fields.strings
    return build_entry(
        derived, proto, protonum, original, reply, state, timeout,
        status(fields.flags) if fields.flags else EMPTY, ints.get("mark"),
        ints.get("zone", 0), ints.get("orig_zone"), ints.get("reply_zone"), ints.get("use"),
        ints.get("id"), fields.labels, fields.counters(), strings.get("secctx"),
        ints.get("secmark"), strings.get("helper"), ints.get("delta_time"),
        tuple(sorted(fields.extra)) if fields.extra else ())
