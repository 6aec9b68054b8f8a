"""Build Entry and FlowTuple values without running their dataclass ``__init__``.

A frozen dataclass' generated ``__init__`` stores each field through
``object.__setattr__``, which costs about a third of the parse of a dump
line.  Instead, a plain class with exactly the same slots is filled with
ordinary attribute stores and then given the model's class (``__class__``
assignment, allowed between classes whose slot layouts are identical).
The result is indistinguishable from a constructed instance; this is
verified when the module loads and by tests/unit/test_parser.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import netaddr

from conntrack_lib.models import Counters, Entry, FlowTuple
from conntrack_lib.parser.base import EMPTY

ENTRY_FIELDS = (
    "family", "proto", "protonum", "original", "reply", "state", "timeout", "status",
    "mark", "zone", "orig_zone", "reply_zone", "use", "id", "labels", "counters", "secctx",
    "secmark", "helper", "delta_time", "extra",
)
FLOW_FIELDS = (
    "src", "dst", "sport", "dport", "icmp_type", "icmp_code", "icmp_id", "srckey", "dstkey",
)

#: Allocate a shell without calling any ``__init__``.
new = object.__new__


class EntryShell:
    """Mutable stand-in with Entry's slots, turned into an Entry when filled."""

    __slots__ = ENTRY_FIELDS


class FlowShell:
    """Mutable stand-in with FlowTuple's slots, turned into a FlowTuple when filled."""

    __slots__ = FLOW_FIELDS


def field_names(cls: type) -> tuple[str, ...]:
    """Return the dataclass field names of ``cls`` in declaration order."""
    return tuple(field.name for field in dataclasses.fields(cls))


def build_entry(family: str, proto: str, protonum: int, original: FlowTuple,  # noqa: PLR0917
                reply: FlowTuple, state: str | None, timeout: int | None,
                status: frozenset[str], mark: int | None, zone: int, orig_zone: int | None,
                reply_zone: int | None, use: int | None, id_: int | None,
                labels: frozenset[str], counters: Counters | None, secctx: str | None,
                secmark: int | None, helper: str | None, delta_time: int | None,
                extra: tuple[tuple[str, str], ...]) -> Entry:
    """Return what Entry(...) with these positional arguments returns, faster."""
    entry: Any = new(EntryShell)
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


def build_flow(src: netaddr.IPAddress, dst: netaddr.IPAddress,  # noqa: PLR0917
               sport: int | None, dport: int | None, icmp_type: int | None = None,
               icmp_code: int | None = None, icmp_id: int | None = None,
               srckey: int | None = None, dstkey: int | None = None) -> FlowTuple:
    """Return what FlowTuple(...) with these positional arguments returns, faster."""
    flow: Any = new(FlowShell)
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


def builders_are_exact() -> bool:
    """Tell whether the shells still build exactly what the models' constructors do."""
    if field_names(Entry) != ENTRY_FIELDS or field_names(FlowTuple) != FLOW_FIELDS:
        return False
    address = netaddr.IPAddress("192.0.2.1")
    args = (address, address, 1, 2, 3, 4, 5, 6, 7)
    flow = build_flow(*args)
    values = ("ipv4", "tcp", 6, flow, flow, "CLOSE", 1, EMPTY, 2, 3, 4, 5, 6, 7, EMPTY,
              None, "c", 8, "h", 9, ())
    entry = build_entry(*values)
    return (type(flow) is FlowTuple and flow == FlowTuple(*args)
            and type(entry) is Entry and entry == Entry(*values)
            and hash(entry) == hash(Entry(*values)))


if not builders_are_exact():  # pragma: no cover - models.py changed its fields
    raise ImportError("conntrack_lib.models changed: update the parser's builders")
