"""Match parsed entries against filter keywords in Python, as conntrack does.

conntrack applies most filters in user space after a full dump (reference
section 2), so a caller that already holds a dump can answer many filtered
questions with no further table dump.  The semantics follow conntrack 1.4.7:
``zone`` compares the entry's zone attribute (``zone=0`` excludes non-zero
zones; directional zones are separate), ``mark`` is ``(mark & mask) ==
value``, ``status`` positive words must all be set and ``!WORD`` clear.

Callers validate the keywords first (through a command object); this module
only normalises and compares.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import netaddr

from conntrack_lib import constants
from conntrack_lib.models import Entry, FlowTuple

Predicate = Callable[[Entry], bool]


def compile_filters(filters: Mapping[str, Any]) -> Predicate:
    """Return a predicate telling whether an entry matches every filter.

    :param filters: validated filter keywords of the public contract.
    :returns: a function of one :class:`~conntrack_lib.models.Entry`.
    :raises KeyError: for a keyword this module cannot evaluate.
    """
    checks = [_COMPILERS[name](value) for name, value in filters.items() if value is not None]
    return lambda entry: all(check(entry) for check in checks)


def matches(entry: Entry, filters: Mapping[str, Any]) -> bool:
    """Tell whether ``entry`` matches every filter of ``filters``."""
    return compile_filters(filters)(entry)


def subsumes(broad: Mapping[str, Any], narrow: Mapping[str, Any]) -> bool:
    """Tell whether every entry matching ``narrow`` also matches ``broad``.

    The test is conservative: it answers True only when each filter of
    ``broad`` is also in ``narrow`` with an equal or narrower value (a CIDR
    that contains the other's address or network).
    """
    for name, value in broad.items():
        if value is None:
            continue
        other = narrow.get(name)
        if other is None:
            return False
        if name in ("src", "dst"):
            if _network(other) not in _network(value):
                return False
        elif _normalise(name, other) != _normalise(name, value):
            return False
    return True


def _normalise(name: str, value: Any) -> Any:
    if name == "proto":
        return _protonum(value)
    if name in ("status", "labels"):
        return frozenset([value] if isinstance(value, str) else value)
    if name == "mark" and isinstance(value, int):
        return (value, constants.MAX_MARK)
    if name == "mark":
        return tuple(value)
    return value


def _network(value: Any) -> netaddr.IPNetwork:
    return _parse_network(str(value))


@functools.lru_cache(maxsize=65536)
def _parse_network(text: str) -> netaddr.IPNetwork:
    # Plans compare the same few addresses many times; parse each once.
    return netaddr.IPNetwork(text)


def _protonum(value: Any) -> int:
    if isinstance(value, int):
        return value
    return constants.PROTOCOL_NUMBERS[str(value).lower()]


def _address_check(side: Callable[[Entry], netaddr.IPAddress]) -> Callable[[Any], Predicate]:
    def compile_(value: Any) -> Predicate:
        net = _network(value)
        if net.prefixlen == net.netmask.bits().count("1") and net.size == 1:
            single = net.ip
            return lambda entry: side(entry) == single
        return lambda entry: side(entry) in net
    return compile_


def _field_check(get: Callable[[Entry], Any]) -> Callable[[Any], Predicate]:
    def compile_(value: Any) -> Predicate:
        return lambda entry: get(entry) == value
    return compile_


def _tuple_field(direction: str, name: str) -> Callable[[Any], Predicate]:
    def get(entry: Entry) -> Any:
        flow: FlowTuple = getattr(entry, direction)
        return getattr(flow, name)
    return _field_check(get)


def _family(value: Any) -> Predicate:
    return lambda entry: entry.family == value


def _proto(value: Any) -> Predicate:
    number = _protonum(value)
    return lambda entry: entry.protonum == number


def _mark(value: Any) -> Predicate:
    mark, mask = _normalise("mark", value)
    return lambda entry: ((entry.mark or 0) & mask) == mark


def _status(value: Any) -> Predicate:
    words = [value] if isinstance(value, str) else list(value)
    must_set = {w for w in words if not w.startswith("!") and w != "UNREPLIED"}
    must_clear = {w[1:] for w in words if w.startswith("!")}
    if "UNREPLIED" in words:
        must_clear.add("SEEN_REPLY")

    def check(entry: Entry) -> bool:
        flags = _status_bits(entry)
        return must_set <= flags and not (must_clear & flags)
    return check


def _status_bits(entry: Entry) -> set[str]:
    """Return the status bits an entry's printed flags reveal."""
    bits = set(entry.status) - {"UNREPLIED"}
    if "UNREPLIED" not in entry.status:
        bits.add("SEEN_REPLY")
    return bits


def _labels(value: Any) -> Predicate:
    wanted = frozenset([value] if isinstance(value, str) else value)
    return lambda entry: wanted <= entry.labels


def _secmark(value: Any) -> Predicate:
    # conntrack matches everything when the kernel reports no secmark.
    return lambda entry: entry.secmark is None or entry.secmark == value


def _nat(which: str) -> Callable[[Any], Predicate]:
    def compile_(value: Any) -> Predicate:
        if value is not True:
            # An address or port makes conntrack compare NAT details the text
            # output does not carry; leave such filters to conntrack itself.
            raise ValueError(f"{which}={value!r} can only be evaluated by conntrack")

        def check(entry: Entry) -> bool:
            inverted = entry.original.inverted()
            snat = entry.reply.dst != inverted.dst or entry.reply.dport != inverted.dport
            dnat = entry.reply.src != inverted.src or entry.reply.sport != inverted.sport
            return {"src_nat": snat, "dst_nat": dnat, "any_nat": snat or dnat}[which]
        return check
    return compile_


_COMPILERS: dict[str, Callable[[Any], Predicate]] = {
    "family": _family,
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
    "zone": _field_check(lambda e: e.zone),
    "orig_zone": _field_check(lambda e: e.orig_zone),
    "reply_zone": _field_check(lambda e: e.reply_zone),
    "mark": _mark,
    "status": _status,
    "state": _field_check(lambda e: e.state),
    "labels": _labels,
    "secmark": _secmark,
    "id": _field_check(lambda e: e.id),
    "src_nat": _nat("src_nat"),
    "dst_nat": _nat("dst_nat"),
    "any_nat": _nat("any_nat"),
}

#: Filter keywords this module evaluates.
SUPPORTED = frozenset(_COMPILERS)
