"""The in-memory conntrack table of the fake kernel, and the flows it holds.

:class:`~conntrack_lib.testing.fake.FakeConntrack` runs commands; this module
is the data they work on, with no command dispatch: the :class:`Flow` entry
and the per-namespace :class:`Table` with its kernel-like hash index;
:func:`render` and :func:`to_entry`, which show an entry as conntrack 1.4.7
prints it; the filter predicate built on :mod:`conntrack_lib.matching`; the
building of entries from ``-I`` fields or seeded
:class:`~conntrack_lib.models.Entry` values; and the ``-U`` helpers that
compute and apply the changes to one entry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TypedDict

import netaddr

from conntrack_lib import constants, matching
from conntrack_lib.models import Counters, Entry, FlowTuple
from conntrack_lib.values import FieldMap, FieldValue

#: HZ=250 kernels clamp larger timeouts to this many seconds.
MAX_KERNEL_TIMEOUT = 8589934
#: Timeout given to entries seeded through
#: :meth:`~conntrack_lib.testing.fake.FakeConntrack.add_entry` without one.
DEFAULT_SEED_TIMEOUT = 3600

# Kernel status bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
EXPECTED = 1 << 0
SEEN_REPLY = 1 << 1
ASSURED = 1 << 2
CONFIRMED = 1 << 3
SRC_NAT_DONE = 1 << 7
DST_NAT_DONE = 1 << 8
FIXED_TIMEOUT = 1 << 10
OFFLOAD = 1 << 14
HW_OFFLOAD = 1 << 15
STATUS_BITS: Mapping[str, int] = {
    "EXPECTED": EXPECTED,
    "SEEN_REPLY": SEEN_REPLY,
    "ASSURED": ASSURED,
    "FIXED_TIMEOUT": FIXED_TIMEOUT,
    "OFFLOAD": OFFLOAD,
    "HW_OFFLOAD": HW_OFFLOAD,
    "UNSET": 0,
}

ORIGINAL = 0
REPLY = 1

#: Protocols the test kernel has no tracker for: stored generically, ports lost.
_UNTRACKED_PORT_PROTOCOLS = frozenset({"dccp"})


class KernelError(Exception):
    """A netlink request failed; the text follows "Operation failed: "."""


# ---------------------------------------------------------------------------
# The table


@dataclasses.dataclass(slots=True, eq=False)
class Flow:
    """One mutable conntrack entry of the fake kernel table."""

    family: str
    protonum: int
    original: FlowTuple
    reply: FlowTuple
    deadline: float
    state: str | None = None
    status: int = CONFIRMED
    mark: int = 0
    zone: int = 0
    orig_zone: int | None = None
    reply_zone: int | None = None
    id: int = 0
    labels: frozenset[str] = frozenset()
    #: The kernel keeps labels only for entries created with label storage.
    label_storage: bool = False
    counters: Counters | None = None
    secmark: int | None = None
    secctx: str | None = None
    helper: str | None = None
    #: Where the table files the entry (ids of seeded entries may repeat).
    key: int = -1

    @property
    def proto(self) -> str:
        """Return the protocol name conntrack prints ("unknown" if none)."""
        return constants.PROTOCOL_NAMES.get(self.protonum, "unknown")

    def tuple(self, direction: int) -> FlowTuple:
        """Return the tuple of one direction."""
        return self.original if direction == ORIGINAL else self.reply

    def zone_id(self, direction: int) -> int:
        """Return the zone the kernel hashes ``direction``'s tuple in."""
        if self.zone:
            return self.zone
        directional = self.orig_zone if direction == ORIGINAL else self.reply_zone
        return directional or 0

    def remaining(self, now: float) -> int:
        """Return the whole seconds left before the entry expires."""
        return max(0, math.floor(self.deadline - now))

    def copy(self) -> Flow:
        """Return an independent copy (what a dump hands to user space)."""
        return dataclasses.replace(self)


_IndexKey = tuple[str, int, FlowTuple, int]


def _index_key(flow: Flow, direction: int) -> _IndexKey:
    return (flow.family, flow.protonum, flow.tuple(direction), flow.zone_id(direction))


@dataclasses.dataclass(slots=True)
class Table:
    """The conntrack table of one network namespace."""

    flows: dict[int, Flow] = dataclasses.field(default_factory=dict)  # by Flow.key
    #: Like the kernel's hash: (family, protonum, tuple, zone of that
    #: direction) -> the entries and directions filed there.
    index: dict[_IndexKey, list[tuple[Flow, int]]] = dataclasses.field(default_factory=dict)
    inserted: int = 0
    #: No entry expires before this time (a lower bound; saves scans).
    next_expiry: float = math.inf
    #: (event type, the entry as it was, the line ``-E`` prints) since the
    #: last ``-E``.
    events: list[tuple[str, Flow, str]] = dataclasses.field(default_factory=list)
    #: A ruleset that uses labels is loaded: new flows get label storage.
    labels_used: bool = False

    def add(self, flow: Flow) -> None:
        """File ``flow`` (its ``key`` is set) in the table and the index."""
        self.flows[flow.key] = flow
        self.schedule(flow.deadline)
        for direction in (ORIGINAL, REPLY):
            self.index.setdefault(_index_key(flow, direction), []).append((flow, direction))

    def remove(self, flow: Flow) -> None:
        """Take ``flow`` out of the table and the index."""
        del self.flows[flow.key]
        # A looped flow files both directions under one key.
        for key in dict.fromkeys(_index_key(flow, d) for d in (ORIGINAL, REPLY)):
            bucket = [item for item in self.index[key] if item[0] is not flow]
            if bucket:
                self.index[key] = bucket
            else:
                del self.index[key]

    def clear(self) -> None:
        """Drop every entry."""
        self.flows.clear()
        self.index.clear()

    def schedule(self, deadline: float) -> None:
        """Note that some entry now expires at ``deadline``."""
        self.next_expiry = min(self.next_expiry, deadline)

    def expire(self, now: float) -> None:
        """Drop the entries whose timeout ran out."""
        if now < self.next_expiry:
            return
        self.next_expiry = min((f.deadline for f in self.flows.values() if f.deadline > now),
                               default=math.inf)
        for flow in [f for f in self.flows.values() if f.deadline <= now]:
            self.remove(flow)
            # Expiry is the kernel's doing: no [USERSPACE] tag.
            line = "[DESTROY] " + render(flow, now, use=None, event=True)
            self.events.append(("DESTROY", flow, line))

    def live(self) -> list[Flow]:
        """Return the entries in dump order."""
        return list(self.flows.values())

    def find(self, family: str, protonum: int, flow: FlowTuple,
             zone_of: Callable[[int], int],
             buckets: Collection[int] | None = None) -> tuple[Flow, int] | None:
        """Return the entry and direction the kernel finds for ``flow``.

        Like the kernel's hash, an entry's tuple is filed under the zone of
        its direction: it is found when that zone is one of ``buckets``
        (default: ``zone_of`` of either direction) and equals the zone the
        request names for that direction (``zone_of``).
        """
        if buckets is None:
            buckets = dict.fromkeys((zone_of(ORIGINAL), zone_of(REPLY)))
        for zone in buckets:
            # The kernel adds to the head of a hash chain: newest found first.
            for entry, direction in reversed(self.index.get((family, protonum, flow, zone), ())):
                if zone == zone_of(direction):
                    return entry, direction
        return None

    def clashes(self, new: Flow) -> bool:
        """Tell whether the kernel refuses ``new`` as existing (EEXIST).

        The create path looks the original tuple up, then the insert checks
        each tuple in its own direction's zone.
        """
        found = self.find(new.family, new.protonum, new.original, new.zone_id)
        return found is not None or self.find(
            new.family, new.protonum, new.reply, new.zone_id, {new.zone_id(REPLY)}
        ) is not None


# ---------------------------------------------------------------------------
# Rendering: conntrack's default text grammar (reference section 5.1)


def _tuple_words(flow: FlowTuple, proto: str) -> list[str]:
    words = [f"src={flow.src}", f"dst={flow.dst}"]
    if flow.sport is not None:
        words += [f"sport={flow.sport}", f"dport={flow.dport}"]
    elif flow.icmp_type is not None:
        words += [f"type={flow.icmp_type}", f"code={flow.icmp_code}", f"id={flow.icmp_id}"]
    elif flow.srckey is not None and proto == "gre":
        words += [f"srckey={flow.srckey:#x}", f"dstkey={flow.dstkey or 0:#x}"]
    return words


def _flag_word(status: int) -> list[str]:
    for bit, name in ((HW_OFFLOAD, "HW_OFFLOAD"), (OFFLOAD, "OFFLOAD"), (ASSURED, "ASSURED")):
        if status & bit:
            return [f"[{name}]"]
    return []


def _counter_words(packets: int, octets: int) -> list[str]:
    return [f"packets={packets}", f"bytes={octets}"]


def _optional(name: str, value: object) -> list[str]:
    return [] if value is None else [f"{name}={value}"]


def render(flow: Flow, now: float, *, output: Sequence[str] = (), use: int | None = 1,
           event: bool = False) -> str:
    """Return the line conntrack prints for ``flow`` (``-o`` keywords apply).

    :param use: the reference count to print (``None``: none).
    :param event: render an event body, which omits a zero mark.
    """
    words: list[str] = []
    if "extended" in output:
        words.append(f"{flow.family:<8} {constants.FAMILY_NUMBERS[flow.family]}")
    words += [f"{flow.proto:<8} {flow.protonum}", str(flow.remaining(now))]
    words += [flow.state] if flow.state else []
    words += _tuple_words(flow.original, flow.proto) + _optional("zone-orig", flow.orig_zone)
    if flow.counters is not None:
        words += _counter_words(flow.counters.orig_packets, flow.counters.orig_bytes)
    words += [] if flow.status & SEEN_REPLY else ["[UNREPLIED]"]
    words += _tuple_words(flow.reply, flow.proto) + _optional("zone-reply", flow.reply_zone)
    if flow.counters is not None:
        words += _counter_words(flow.counters.reply_packets, flow.counters.reply_bytes)
    words += _flag_word(flow.status) + _optional("mark", flow.mark if flow.mark or not event
                                                 else None)
    words += _optional("secmark", flow.secmark) + _optional("secctx", flow.secctx)
    words += _optional("zone", flow.zone or None) + _optional("helper", flow.helper)
    words += _optional("use", use)
    words += _optional("id", flow.id if "id" in output else None)
    if "labels" in output and flow.labels:
        words.append("labels=" + ",".join(sorted(flow.labels)))
    return " ".join(words)


def to_entry(flow: Flow, now: float) -> Entry:
    """Return the :class:`~conntrack_lib.models.Entry` a parser would read from ``flow``'s line."""
    flags = frozenset(
        [w[1:-1] for w in _flag_word(flow.status)]
        + ([] if flow.status & SEEN_REPLY else ["UNREPLIED"])
    )
    return Entry(
        family=flow.family, proto=flow.proto, protonum=flow.protonum,
        original=flow.original, reply=flow.reply, state=flow.state,
        timeout=flow.remaining(now), status=flags, mark=flow.mark, zone=flow.zone,
        orig_zone=flow.orig_zone, reply_zone=flow.reply_zone, use=1, id=flow.id,
        labels=flow.labels, counters=flow.counters, secctx=flow.secctx,
        secmark=flow.secmark, helper=flow.helper,
    )


# ---------------------------------------------------------------------------
# Value normalisation (command objects hold validated, canonical values)


def protocol_number(value: object) -> int:
    """Return the protocol number of a ``proto`` field (a number or a name)."""
    if isinstance(value, int):
        return value
    return constants.PROTOCOL_NUMBERS[str(value).lower()]


def _network(value: object) -> netaddr.IPNetwork:
    return netaddr.IPNetwork(str(value))


def _address(value: object) -> netaddr.IPAddress:
    return netaddr.IPAddress(str(value))


def label_set(value: object) -> frozenset[str]:
    """Return the label names of a ``label_add``/``labels`` value."""
    return frozenset(_words(value))


def _words(value: object) -> list[str]:
    if isinstance(value, str):
        return [w for w in value.split(",") if w]
    if not isinstance(value, Iterable):
        raise TypeError(f"not a word list: {value!r}")
    return [str(w) for w in value]


def _mark_pair(value: object) -> tuple[int, int]:
    if isinstance(value, int):
        return value, constants.MAX_MARK
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise TypeError(f"not a mark: {value!r}")


def _number(fields: FieldMap, name: str) -> int | None:
    """Return an integer field (validated, so an int when set), or None."""
    value = fields.get(name)
    return value if isinstance(value, int) else None


def _nat_target(value: object) -> tuple[netaddr.IPAddress | None, int | None]:
    if value is True or value is None:
        return None, None
    if isinstance(value, list | tuple):
        return _address(value[0]), int(value[1])
    return _address(value), None


# ---------------------------------------------------------------------------
# Filters: -L, -D and -U's match, decided by the library's one filter engine


Predicate = Callable[[Flow], bool]
_HIDDEN_BITS = {"FIXED_TIMEOUT": FIXED_TIMEOUT, "EXPECTED": EXPECTED}


def engine_view(flow: Flow, now: float) -> Entry:
    """Return ``flow`` as the filter engine sees it, status bits in full.

    A dump hides FIXED_TIMEOUT and EXPECTED; the fake knows them, so its
    filters decide them as the kernel's status filter would.
    """
    entry = to_entry(flow, now)
    hidden = [name for name, bit in _HIDDEN_BITS.items() if flow.status & bit]
    if not hidden:
        return entry
    return dataclasses.replace(entry, status=entry.status | frozenset(hidden))


def compile_filters(filters: Mapping[str, FieldValue | None], *, kind: str = "list",
                    now: float = 0.0) -> Predicate:
    """Return a predicate for ``filters`` with the meaning :mod:`~conntrack_lib.matching` defines.

    :param filters: validated filter keywords (``timeout`` is ``-D -t``'s
        exact remaining-timeout match).
    :param kind: ``'list'``, ``'delete'`` or ``'update'``; one meaning for all.
    :param now: the clock reading, for the timeout match.
    :returns: a function of one flow.
    :raises NotImplementedError: for a filter keyword the engine does not know.
    """
    del kind  # every command kind filters with the same meaning
    timeout = filters.get("timeout")
    rest = {k: v for k, v in filters.items() if k != "timeout" and v is not None}
    unknown = set(rest) - matching.SUPPORTED
    if unknown:
        raise NotImplementedError(f"FakeConntrack cannot filter on {sorted(unknown)}")
    predicate = matching.compile_filters(rest, full_status=True)
    if timeout is None:
        return lambda f: predicate(engine_view(f, now))
    return lambda f: f.remaining(now) == timeout and predicate(engine_view(f, now))


# ---------------------------------------------------------------------------
# Building flows from create (and get) fields


def _invert(flow: FlowTuple, proto: str) -> FlowTuple:
    """Return the reply of ``flow`` as the kernel derives it (no NAT)."""
    inverted = flow.inverted()
    if proto in constants.ICMP_REPLY_TYPES and flow.icmp_type is not None:
        reply_type = constants.ICMP_REPLY_TYPES[proto].get(flow.icmp_type)
        if reply_type is None:
            raise KernelError("invalid parameters")
        inverted = dataclasses.replace(inverted, icmp_type=reply_type)
    return inverted


def direction_tuple(fields: FieldMap, prefix: str, proto: str) -> FlowTuple | None:
    """Return the tuple named by ``prefix``-ed fields, or None if absent."""
    src = fields.get(prefix + "src")
    if src is None:
        return None
    ends = _address(src), _address(fields[prefix + "dst"])
    if proto in _UNTRACKED_PORT_PROTOCOLS:
        return FlowTuple(*ends, sport=0, dport=0)
    if proto in constants.PORT_PROTOCOLS:
        return FlowTuple(*ends, sport=_number(fields, prefix + "sport"),
                         dport=_number(fields, prefix + "dport"))
    if proto == "gre":
        return FlowTuple(*ends, srckey=_number(fields, prefix + "srckey") or 0,
                         dstkey=_number(fields, prefix + "dstkey") or 0)
    if proto in constants.ICMP_PROTOCOLS and not prefix:
        return FlowTuple(*ends, icmp_type=_number(fields, "icmp_type"),
                         icmp_code=_number(fields, "icmp_code"),
                         icmp_id=_number(fields, "icmp_id") or 0)
    return FlowTuple(*ends)


def _tuples(fields: FieldMap, proto: str) -> tuple[FlowTuple, FlowTuple]:
    """Return (original, reply) of a create, deriving a missing one by inversion."""
    original = direction_tuple(fields, "", proto)
    reply = direction_tuple(fields, "reply_", proto)
    if original is None and reply is not None:
        return _invert(reply, proto), reply
    if original is None:
        raise KernelError("invalid parameters")
    derived = _invert(original, proto)
    if reply is None:
        return original, derived
    if proto in constants.ICMP_PROTOCOLS:
        # Only the addresses of an ICMP reply are options; the rest is derived.
        reply = dataclasses.replace(derived, src=reply.src, dst=reply.dst)
    return original, reply


def _apply_nat(reply: FlowTuple, fields: FieldMap) -> tuple[FlowTuple, int]:
    """Return the reply tuple and status bits after ``-n``/``-g`` of a create."""
    status = 0
    for name, addr_side, port_side, bit in (("src_nat", "dst", "dport", SRC_NAT_DONE),
                                           ("dst_nat", "src", "sport", DST_NAT_DONE)):
        addr, port = _nat_target(fields.get(name))
        if addr is None:
            continue
        changes: dict[str, netaddr.IPAddress | int] = {addr_side: addr}
        if port is not None and reply.sport is not None:
            changes[port_side] = port
        reply = dataclasses.replace(reply, **changes)
        status |= bit
    return reply, status


def _status_value(words: object) -> int:
    value = 0
    for word in _words(words or ()):
        value |= STATUS_BITS[word.upper()]
    return value


def flow_from_fields(fields: FieldMap, now: float, flow_id: int) -> Flow:
    """Return the entry a ``-I`` with these canonical fields creates.

    :raises KernelError: the kernel would refuse it ("invalid parameters").
    """
    protonum = protocol_number(fields["proto"])
    proto = constants.PROTOCOL_NAMES.get(protonum, "unknown")
    original, reply = _tuples(fields, proto)
    reply, nat_bits = _apply_nat(reply, fields)
    timeout = min(_number(fields, "timeout") or 0, MAX_KERNEL_TIMEOUT)
    given_state = fields.get("state")
    state = None if proto in _UNTRACKED_PORT_PROTOCOLS or given_state is None \
        else str(given_state)
    return Flow(
        family=constants.IPV6 if original.src.version == 6 else constants.IPV4,
        protonum=protonum, original=original, reply=reply, deadline=now + timeout,
        state=state, status=CONFIRMED | nat_bits | _status_value(fields.get("status")),
        mark=_number(fields, "mark") or 0, zone=_number(fields, "zone") or 0,
        orig_zone=_number(fields, "orig_zone") or None,
        reply_zone=_number(fields, "reply_zone") or None,
        id=flow_id,
    )


def flow_from_entry(entry: Entry, now: float, flow_id: int) -> Flow:
    """Return a table entry holding everything ``entry`` shows."""
    status = CONFIRMED
    for name in entry.status:
        status |= STATUS_BITS.get(name, 0)
    if "UNREPLIED" not in entry.status:
        status |= SEEN_REPLY
    return Flow(
        family=entry.family, protonum=entry.protonum, original=entry.original,
        reply=entry.reply,
        deadline=now + (DEFAULT_SEED_TIMEOUT if entry.timeout is None else entry.timeout),
        state=entry.state, status=status, mark=entry.mark or 0, zone=entry.zone,
        orig_zone=entry.orig_zone, reply_zone=entry.reply_zone,
        id=flow_id if entry.id is None else entry.id, labels=entry.labels,
        label_storage=bool(entry.labels),
        counters=entry.counters, secmark=entry.secmark, secctx=entry.secctx,
        helper=entry.helper,
    )


# ---------------------------------------------------------------------------
# -U: what changes, and whether anything does


class UpdateValues(TypedDict, total=False):
    """The attributes one ``-U`` request sends (those it changes)."""

    timeout: int
    mark: int
    status: int
    state: str
    labels: frozenset[str]


def update_values(flow: Flow, changes: FieldMap) -> UpdateValues:
    """Return the attributes ``-U`` would send for ``flow`` (computed from the dump)."""
    values: UpdateValues = {}
    if "timeout" in changes:
        values["timeout"] = min(_number(changes, "timeout") or 0, MAX_KERNEL_TIMEOUT)
    if "mark" in changes:
        wanted, mask = _mark_pair(changes["mark"])
        values["mark"] = (flow.mark & ~mask & constants.MAX_MARK) ^ wanted
    if "status" in changes:
        # Status bits can only be added.
        values["status"] = flow.status | _status_value(changes["status"])
    if "state" in changes:
        values["state"] = str(changes["state"])
    if "label_add" in changes:
        values["labels"] = flow.labels | frozenset(_words(changes["label_add"]))
    if "label_del" in changes:
        dropped = changes["label_del"]
        values["labels"] = frozenset() if dropped is True else flow.labels - set(_words(dropped))
    return values


def unchanged(flow: Flow, values: UpdateValues, now: float) -> bool:
    """Tell whether ``flow`` already has every ``-U`` value in ``values``."""
    current = {"timeout": flow.remaining(now), "mark": flow.mark, "status": flow.status,
               "state": flow.state, "labels": flow.labels}
    return all(current[name] == value for name, value in values.items())


def apply_update(flow: Flow, values: UpdateValues, now: float) -> str | None:
    """Apply ``-U`` values in the kernel's order; return a per-entry error, if any.

    The kernel changes timeout, status, protocol state, mark, labels in that
    order and stops at the first error.
    """
    if "timeout" in values:
        flow.deadline = now + values["timeout"]
    status = values.get("status", flow.status)
    if flow.status & ~status & (SEEN_REPLY | ASSURED):
        # SEEN_REPLY and ASSURED can only be set (EBUSY).  This happens when
        # a zoned flow's request lands on its zone-0 twin.
        return "Operation failed: Device or resource busy"
    flow.status = status
    flow.state = values.get("state", flow.state)
    flow.mark = values.get("mark", flow.mark)
    if "labels" not in values:
        return None
    if not flow.label_storage:
        # Without a ruleset that uses labels the kernel keeps no label
        # storage: ENOSPC, which 1.4.7 prints and still counts.
        return "Operation failed: No space left on device"
    flow.labels = values["labels"]
    return None
