"""The filter engine: what each filter keyword means, for every path.

One meaning, defined by the kernel's flow rather than by what one release's
``conntrack`` filter happens to do.  The helper's dump strategy, its list
and count filters, :class:`~conntrack_lib.testing.fake.FakeConntrack` and the
CLI's dry run all decide membership here.

The meaning of each keyword, on a flow as ``conntrack -L -o extended`` and
``-o xml`` show it:

* ``zone``: the flow is in that zone in **both** directions.  A flow
  created with ``-w N`` is; a flow with only ``zone-orig=N`` is in zone N
  originally and in zone 0 in reply, so neither ``zone=N`` nor ``zone=0``
  matches it.
* ``orig_zone`` / ``reply_zone``: the flow's zone in that direction (its
  ``zone-orig``/``zone-reply``, else its ``zone``, else 0).
* addresses (a CIDR matches every address inside it), ports, ICMP fields,
  GRE keys: the original (``src`` ...) or reply (``reply_src`` ...) tuple.
* ``mark``: ``(mark & mask) == value``.
* ``status``: every positive word set, every ``!WORD`` clear, ``UNREPLIED``
  meaning SEEN_REPLY clear (positive and negative words may be mixed).
* ``labels``: the flow carries every listed label.  ``id``: its id.
* ``src_nat``/``dst_nat``/``any_nat``: ``True`` means source-/destination-/
  any NAT happened (the reply tuple is not the inverted original).  An
  address (and optional port) also requires the translated address to be
  that one: the reply destination for SNAT, the reply source for DNAT; both
  families.

Some facts are not in a plain dump: ``id`` and ``labels`` need ``-o id`` /
``-o labels`` (:func:`needs` tells which), and the status bits
FIXED_TIMEOUT, EXPECTED and UNSET are in no text dump at all: callers send
those to the kernel's status filter and match the rest here
(:func:`split_status`).  This module is pure and assumes validated values.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping

import netaddr

from conntrack_lib import constants
from conntrack_lib.models import Entry, FlowTuple
from conntrack_lib.values import Fields, FieldValue

Predicate = Callable[[Entry], bool]
#: Validated filter keywords; a None value is no filter.
_Filters = Mapping[str, FieldValue | None]

#: Status bits no text or XML dump shows; only the kernel can filter them.
HIDDEN_STATUS = frozenset({"FIXED_TIMEOUT", "EXPECTED", "UNSET"})
#: ``-o`` keywords a dump needs for a keyword to be visible in it.
_OUTPUT_NEEDS = {"id": "id", "labels": "labels"}


class UnmatchableError(ValueError):
    """A filter this engine cannot decide from a dump (hidden status bits)."""


def compile_filters(filters: _Filters, *, full_status: bool = False) -> Predicate:
    """Return a predicate telling whether an entry matches every filter.

    :param filters: validated filter keywords of the public contract.
    :param full_status: the entries' ``status`` holds every set bit by name
        (FIXED_TIMEOUT and EXPECTED too), as a test double's entries do.
    :returns: a function of one :class:`~conntrack_lib.models.Entry`.
    :raises KeyError: for a keyword this module does not know.
    :raises UnmatchableError: for status bits no dump shows, unless
        ``full_status``.
    """
    checks = [_compile_one(name, value, filters, full_status) for name, value in filters.items()
              if value is not None and name not in ("mask_src", "mask_dst")]
    if not checks:
        return lambda entry: True
    if len(checks) == 1:
        return checks[0]
    return lambda entry: all(check(entry) for check in checks)


def matches(entry: Entry, filters: _Filters) -> bool:
    """Tell whether ``entry`` matches every filter of ``filters``.

    :param entry: a parsed flow.
    :param filters: validated filter keywords.
    :returns: True when every filter holds.
    """
    return compile_filters(filters)(entry)


def needs(filters: _Filters) -> tuple[str, ...]:
    """Return the ``-o`` keywords a dump needs to show what ``filters`` test.

    :param filters: validated filter keywords.
    :returns: a sorted tuple such as ``("id", "labels")``; empty for none.
    """
    return tuple(sorted({_OUTPUT_NEEDS[k] for k, v in filters.items()
                         if v is not None and k in _OUTPUT_NEEDS}))


def split_status(filters: _Filters) -> tuple[Fields, Fields]:
    """Split ``filters`` into what the kernel must filter and what this module can.

    :param filters: validated filter keywords.
    :returns: ``(kernel, engine)``: ``kernel`` holds a ``status`` of the
        hidden words only (empty when there are none), ``engine`` the rest.
    """
    engine = {k: v for k, v in filters.items() if v is not None}
    words = _words(engine.get("status", ()))
    hidden = tuple(w for w in words if w.lstrip("!") in HIDDEN_STATUS)
    if not hidden:
        return {}, engine
    visible = tuple(w for w in words if w not in hidden)
    if visible:
        engine["status"] = visible
    else:
        engine.pop("status")
    return {"status": hidden}, engine


def line_prefilter(requests: Iterable[_Filters],
                   zones: Iterable[int] = ()) -> Callable[[str], bool] | None:
    """Return a cheap test a dump line must pass to match any of ``requests``.

    Each request (and each whole zone of ``zones``) gives one text token its
    matching lines must hold, each with its trailing space: a port as
    ``dport=N``, else an exact address as ``src=A`` or ``dst=A``, else a
    non-zero zone as ``zone=N``.  Lines holding none of the tokens cannot
    match and need not be parsed.  The test is necessary, never
    sufficient: lines that pass are still matched in full.

    :param requests: validated filter keywords, one mapping per request.
    :param zones: whole zones that go too.
    :returns: the test, or None when some request gives no token.
    """
    tokens = [f"zone={zone} " for zone in zones]
    for filters in requests:
        token = _anchor(filters)
        if token is None:
            return None
        tokens.append(token)
    if not tokens:
        return None
    search = re.compile("|".join(re.escape(t) for t in dict.fromkeys(tokens))).search
    return lambda line: search(line) is not None


def _anchor(filters: _Filters) -> str | None:
    # The most selective token first: a rule's port picks its flows out of
    # every port's, an address one port's (or one remote's) flows.
    for name in ("dport", "sport"):
        if filters.get(name) is not None:
            return f"{name}={filters[name]} "
    for name in ("dst", "src"):
        value = filters.get(name)
        # conntrack prints addresses as inet_ntop does, which for these
        # forms is the validators' canonical text; a CIDR has no one token.
        if isinstance(value, str) and "/" not in value and not (
                ":" in value and "." in value):
            return f"{name}={value} "
    zone = filters.get("zone")
    if zone:
        return f"zone={zone} "
    return None


def subsumes(broad: _Filters, narrow: _Filters) -> bool:
    """Tell whether every entry matching ``narrow`` also matches ``broad``.

    The test is conservative: it answers True only when each filter of
    ``broad`` is also in ``narrow`` with an equal or narrower value (a CIDR
    that contains the other's address or network).

    :param broad: validated filter keywords.
    :param narrow: validated filter keywords.
    :returns: True only when ``broad`` provably covers ``narrow``.
    """
    for name, value in broad.items():
        if value is None:
            continue
        other = narrow.get(name)
        if other is None:
            return False
        if name in ("src", "dst", "reply_src", "reply_dst"):
            if _network(other) not in _network(value):
                return False
        elif _normalise(name, other) != _normalise(name, value):
            return False
    return True


def direction_zones(entry: Entry) -> tuple[int, int]:
    """Return the zone of ``entry`` in its original and its reply direction.

    :param entry: a parsed flow.
    :returns: ``(original zone, reply zone)``; 0 is the default zone.
    """
    orig = entry.orig_zone if entry.orig_zone is not None else entry.zone
    reply = entry.reply_zone if entry.reply_zone is not None else entry.zone
    return orig or 0, reply or 0


def _normalise(name: str, value: FieldValue) -> object:
    """Return ``value`` in the form two filters compare equal in."""
    if name == "proto":
        return _protonum(value)
    if name in ("status", "labels"):
        return frozenset(_words(value))
    if name == "mark":
        return _mark_pair(value)
    return value


def _mark_pair(value: object) -> tuple[int, int]:
    """Return a mark filter as ``(mark, mask)``; a bare mark has the full mask."""
    if isinstance(value, int):
        return (value, constants.MAX_MARK)
    if isinstance(value, list | tuple) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise TypeError(f"not a mark: {value!r}")


def _words(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(w for w in value.split(",") if w)
    if not isinstance(value, Iterable):
        raise TypeError(f"not a word list: {value!r}")
    return tuple(str(w) for w in value)


def _network(value: object) -> netaddr.IPNetwork:
    return _parse_network(str(value))


@functools.lru_cache(maxsize=65536)
def _parse_network(text: str) -> netaddr.IPNetwork:
    # Plans compare the same few addresses many times; parse each once.
    return netaddr.IPNetwork(text)


def _protonum(value: object) -> int:
    if isinstance(value, int):
        return value
    return constants.PROTOCOL_NUMBERS[str(value).lower()]


def _compile_one(name: str, value: FieldValue, filters: _Filters,
                 full_status: bool) -> Predicate:
    if name == "status":
        return _status(value, full_status)
    mask_key = {"src": "mask_src", "dst": "mask_dst"}.get(name)
    mask = filters.get(mask_key) if mask_key else None
    if mask is not None:
        return _masked(name, value, mask)
    return _COMPILERS[name](value)


def _masked(side: str, value: FieldValue, mask: FieldValue) -> Predicate:
    netmask = int(netaddr.IPAddress(str(mask)))
    wanted = int(_network(value).ip) & netmask
    if side == "src":
        return lambda e: (int(e.original.src) & netmask) == wanted
    return lambda e: (int(e.original.dst) & netmask) == wanted


def _address_check(side: Callable[[Entry], netaddr.IPAddress]
                   ) -> Callable[[FieldValue], Predicate]:
    def compile_(value: FieldValue) -> Predicate:
        net = _network(value)
        if net.size == 1:
            single = net.ip
            return lambda entry: side(entry) == single
        return lambda entry: side(entry) in net
    return compile_


def _field_check(get: Callable[[Entry], object]) -> Callable[[FieldValue], Predicate]:
    def compile_(value: FieldValue) -> Predicate:
        return lambda entry: get(entry) == value
    return compile_


def _tuple_field(direction: str, name: str) -> Callable[[FieldValue], Predicate]:
    def get(entry: Entry) -> object:
        flow: FlowTuple = getattr(entry, direction)
        return getattr(flow, name)
    return _field_check(get)


def _proto(value: FieldValue) -> Predicate:
    number = _protonum(value)
    return lambda entry: entry.protonum == number


def _zone(value: FieldValue) -> Predicate:
    return lambda entry: direction_zones(entry) == (value, value)


def _orig_zone(value: FieldValue) -> Predicate:
    return lambda entry: direction_zones(entry)[0] == value


def _reply_zone(value: FieldValue) -> Predicate:
    return lambda entry: direction_zones(entry)[1] == value


def _mark(value: FieldValue) -> Predicate:
    mark, mask = _mark_pair(value)
    return lambda entry: ((entry.mark or 0) & mask) == mark


def _status(value: FieldValue, full_status: bool = False) -> Predicate:
    words = _words(value)
    if "UNSET" in words:
        # UNSET asks for no bit at all; every confirmed flow has some.
        return lambda entry: False
    hidden = [w for w in words if w.lstrip("!") in HIDDEN_STATUS]
    if hidden and not full_status:
        raise UnmatchableError(f"status {','.join(hidden)} is in no dump; "
                               "the kernel's status filter must decide it")
    must_set = {w for w in words if not w.startswith("!") and w != "UNREPLIED"}
    must_clear = {w[1:] for w in words if w.startswith("!")}
    if "UNREPLIED" in words:
        must_clear.add("SEEN_REPLY")

    def check(entry: Entry) -> bool:
        flags = status_bits(entry)
        return must_set <= flags and not (must_clear & flags)
    return check


def status_bits(entry: Entry) -> set[str]:
    """Return the status bits an entry's printed flags reveal.

    :param entry: a parsed flow.
    :returns: the set bit names; SEEN_REPLY is set unless UNREPLIED shows.
    """
    bits = set(entry.status) - {"UNREPLIED"}
    if "UNREPLIED" not in entry.status:
        bits.add("SEEN_REPLY")
    return bits


def _labels(value: FieldValue) -> Predicate:
    wanted = frozenset(_words(value))
    return lambda entry: wanted <= entry.labels


def _secmark(value: FieldValue) -> Predicate:
    return lambda entry: (entry.secmark or 0) == value


def is_snat(entry: Entry) -> bool:
    """Tell whether the reply tuple shows a source translation.

    :param entry: a parsed flow.
    :returns: True when the reply's destination is not the original source.
    """
    return entry.reply.dst != entry.original.src or entry.reply.dport != entry.original.sport


def is_dnat(entry: Entry) -> bool:
    """Tell whether the reply tuple shows a destination translation.

    :param entry: a parsed flow.
    :returns: True when the reply's source is not the original destination.
    """
    return entry.reply.src != entry.original.dst or entry.reply.sport != entry.original.dport


def _nat_target(value: FieldValue) -> tuple[netaddr.IPAddress, int | None]:
    if isinstance(value, list | tuple):
        return netaddr.IPAddress(str(value[0])), int(value[1])
    return netaddr.IPAddress(str(value)), None


def _snat_to(value: FieldValue) -> Predicate:
    if value is True:
        return is_snat
    address, port = _nat_target(value)
    return lambda e: is_snat(e) and e.reply.dst == address and (
        port is None or e.reply.dport == port)


def _dnat_to(value: FieldValue) -> Predicate:
    if value is True:
        return is_dnat
    address, port = _nat_target(value)
    return lambda e: is_dnat(e) and e.reply.src == address and (
        port is None or e.reply.sport == port)


def _any_nat(value: FieldValue) -> Predicate:
    snat, dnat = _snat_to(value), _dnat_to(value)
    return lambda e: snat(e) or dnat(e)


_COMPILERS: dict[str, Callable[[FieldValue], Predicate]] = {
    "family": _field_check(lambda e: e.family),
    "proto": _proto,
    "src": _address_check(lambda e: e.original.src),
    "dst": _address_check(lambda e: e.original.dst),
    "reply_src": _address_check(lambda e: e.reply.src),
    "reply_dst": _address_check(lambda e: e.reply.dst),
    "sport": _tuple_field("original", "sport"),
    "dport": _tuple_field("original", "dport"),
    "reply_sport": _tuple_field("reply", "sport"),
    "reply_dport": _tuple_field("reply", "dport"),
    "icmp_type": _tuple_field("original", "icmp_type"),
    "icmp_code": _tuple_field("original", "icmp_code"),
    "icmp_id": _tuple_field("original", "icmp_id"),
    "srckey": _tuple_field("original", "srckey"),
    "dstkey": _tuple_field("original", "dstkey"),
    "reply_srckey": _tuple_field("reply", "srckey"),
    "reply_dstkey": _tuple_field("reply", "dstkey"),
    "zone": _zone,
    "orig_zone": _orig_zone,
    "reply_zone": _reply_zone,
    "mark": _mark,
    "status": _status,
    "state": _field_check(lambda e: e.state),
    "labels": _labels,
    "secmark": _secmark,
    "id": _field_check(lambda e: e.id),
    "src_nat": _snat_to,
    "dst_nat": _dnat_to,
    "any_nat": _any_nat,
}

#: Filter keywords this module evaluates.
SUPPORTED = frozenset((*_COMPILERS, "mask_src", "mask_dst"))
