"""An in-memory conntrack that behaves like the 1.4.7 command line.

:class:`FakeConntrack` is an executor: it takes the same command objects as
the real executors, works on an in-memory table per network namespace, and
produces the ``(exit_code, stdout, stderr)`` that ``/usr/sbin/conntrack``
would print.  That triple then goes through the one exit-code interpreter of
:mod:`conntrack_lib.executor`, so callers see the same results and the same
exception types as against the kernel.

The semantics are the measured ones of conntrack-tools 1.4.7 on Linux 6.x,
including the quirks a caller can trip over: ``-D`` ignores negated status
words, ``-U`` cannot reach flows in non-zero zones, ``-F -f FAMILY`` empties
the whole table, ``-G`` cannot see a flow through its reply tuple.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import netaddr

from conntrack_lib import capabilities, constants, executor, matching, netlink_create
from conntrack_lib import exceptions as exc
from conntrack_lib import netns as netns_names
from conntrack_lib.models import Counters, Entry, FlowTuple

#: Every message conntrack itself prints starts with this.
PREFIX = "conntrack v1.4.7 (conntrack-tools): "
#: HZ=250 kernels clamp larger timeouts to this many seconds.
MAX_KERNEL_TIMEOUT = 8589934
#: 1.4.7 leaves one netlink ACK unread per ``-U`` request; the socket
#: overflows after this many.
UPDATE_ACK_LIMIT = 256
#: Timeout given to entries seeded through :meth:`FakeConntrack.add_entry`
#: without one.
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
ENOENT = 2
EEXIST = 17
EINVAL = 22

#: Protocols the test kernel has no tracker for: stored generically, ports lost.
_UNTRACKED_PORT_PROTOCOLS = frozenset({"dccp"})

Clock = Callable[[], float]


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
    """Return the :class:`Entry` a parser would read from ``flow``'s line."""
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


def _protonum(value: Any) -> int:
    if isinstance(value, int):
        return value
    return constants.PROTOCOL_NUMBERS[str(value).lower()]


def _network(value: Any) -> netaddr.IPNetwork:
    return netaddr.IPNetwork(str(value))


def _address(value: Any) -> netaddr.IPAddress:
    return netaddr.IPAddress(str(value))


def _words(value: Any) -> list[str]:
    if isinstance(value, str):
        return [w for w in value.split(",") if w]
    return [str(w) for w in value]


def _mark_pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, constants.MAX_MARK
    return int(value[0]), int(value[1])


def _nat_target(value: Any) -> tuple[netaddr.IPAddress | None, int | None]:
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


def compile_filters(filters: Mapping[str, Any], *, kind: str = "list",
                    now: float = 0.0) -> Predicate:
    """Return a predicate for ``filters`` with the meaning :mod:`matching` defines.

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


def _direction(fields: Mapping[str, Any], prefix: str, proto: str) -> FlowTuple | None:
    """Return the tuple named by ``prefix``-ed fields, or None if absent."""
    src = fields.get(prefix + "src")
    if src is None:
        return None
    ends = _address(src), _address(fields[prefix + "dst"])
    if proto in _UNTRACKED_PORT_PROTOCOLS:
        return FlowTuple(*ends, sport=0, dport=0)
    if proto in constants.PORT_PROTOCOLS:
        return FlowTuple(*ends, sport=fields.get(prefix + "sport"),
                         dport=fields.get(prefix + "dport"))
    if proto == "gre":
        return FlowTuple(*ends, srckey=fields.get(prefix + "srckey", 0),
                         dstkey=fields.get(prefix + "dstkey", 0))
    if proto in constants.ICMP_PROTOCOLS and not prefix:
        return FlowTuple(*ends, icmp_type=fields.get("icmp_type"),
                         icmp_code=fields.get("icmp_code"), icmp_id=fields.get("icmp_id", 0))
    return FlowTuple(*ends)


def _tuples(fields: Mapping[str, Any], proto: str) -> tuple[FlowTuple, FlowTuple]:
    """Return (original, reply) of a create, deriving a missing one by inversion."""
    original = _direction(fields, "", proto)
    reply = _direction(fields, "reply_", proto)
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


def _apply_nat(reply: FlowTuple, fields: Mapping[str, Any]) -> tuple[FlowTuple, int]:
    """Return the reply tuple and status bits after ``-n``/``-g`` of a create."""
    status = 0
    for name, addr_side, port_side, bit in (("src_nat", "dst", "dport", SRC_NAT_DONE),
                                           ("dst_nat", "src", "sport", DST_NAT_DONE)):
        addr, port = _nat_target(fields.get(name))
        if addr is None:
            continue
        changes: dict[str, Any] = {addr_side: addr}
        if port is not None and reply.sport is not None:
            changes[port_side] = port
        reply = dataclasses.replace(reply, **changes)
        status |= bit
    return reply, status


def _status_value(words: Any) -> int:
    value = 0
    for word in _words(words or ()):
        value |= STATUS_BITS[word.upper()]
    return value


def flow_from_fields(fields: Mapping[str, Any], now: float, flow_id: int) -> Flow:
    """Return the entry a ``-I`` with these canonical fields creates.

    :raises KernelError: the kernel would refuse it ("invalid parameters").
    """
    protonum = _protonum(fields["proto"])
    proto = constants.PROTOCOL_NAMES.get(protonum, "unknown")
    original, reply = _tuples(fields, proto)
    reply, nat_bits = _apply_nat(reply, fields)
    timeout = min(int(fields["timeout"]), MAX_KERNEL_TIMEOUT)
    state = None if proto in _UNTRACKED_PORT_PROTOCOLS else fields.get("state")
    return Flow(
        family=constants.IPV6 if original.src.version == 6 else constants.IPV4,
        protonum=protonum, original=original, reply=reply, deadline=now + timeout,
        state=state, status=CONFIRMED | nat_bits | _status_value(fields.get("status")),
        mark=int(fields.get("mark", 0)), zone=int(fields.get("zone", 0)),
        orig_zone=fields.get("orig_zone") or None, reply_zone=fields.get("reply_zone") or None,
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


def _new_values(flow: Flow, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Return the attributes ``-U`` would send for ``flow`` (computed from the dump)."""
    values: dict[str, Any] = {}
    if "timeout" in changes:
        values["timeout"] = min(int(changes["timeout"]), MAX_KERNEL_TIMEOUT)
    if "mark" in changes:
        wanted, mask = _mark_pair(changes["mark"])
        values["mark"] = (flow.mark & ~mask & constants.MAX_MARK) ^ wanted
    if "status" in changes:
        # Status bits can only be added.
        values["status"] = flow.status | _status_value(changes["status"])
    if "state" in changes:
        values["state"] = changes["state"]
    if "label_add" in changes:
        values["labels"] = flow.labels | frozenset(_words(changes["label_add"]))
    if "label_del" in changes:
        dropped = changes["label_del"]
        values["labels"] = frozenset() if dropped is True else flow.labels - set(_words(dropped))
    return values


def _unchanged(flow: Flow, values: Mapping[str, Any], now: float) -> bool:
    current = {"timeout": flow.remaining(now), "mark": flow.mark, "status": flow.status,
               "state": flow.state, "labels": flow.labels}
    return all(current[name] == value for name, value in values.items())


def _apply(flow: Flow, values: Mapping[str, Any], now: float) -> str | None:
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


# ---------------------------------------------------------------------------
# Commands: each returns (exit_code, stdout, stderr) as conntrack prints them


@dataclasses.dataclass(slots=True)
class Output:
    """What one conntrack process printed, and its exit status."""

    exit_code: int = constants.EXIT_OK
    stdout: list[str] = dataclasses.field(default_factory=list)
    stderr: list[str] = dataclasses.field(default_factory=list)

    def line(self, text: str) -> None:
        """Print one data line on stdout."""
        self.stdout.append(text + "\n")

    def message(self, text: str, *, raw: bool = False) -> None:
        """Print one message on stderr, prefixed unless ``raw``."""
        self.stderr.append(("" if raw else PREFIX) + text + "\n")

    def summary(self, count: int, word: str, *, zero_fails: bool) -> None:
        """Print the "N flow entries have been <word>." line and set the exit code."""
        self.message(f"{count} flow entries have been {word}.")
        if count == 0 and zero_fails:
            self.exit_code = constants.EXIT_FAILURE

    def fail(self, error: KernelError) -> None:
        """Print a kernel error and exit 1."""
        self.message(f"Operation failed: {error}")
        self.exit_code = constants.EXIT_FAILURE


class Kernel:
    """The fake kernel side: tables per namespace and the commands on them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tables: dict[str | None, Table] = {None: Table()}
        self._ids = itertools.count(0x10000000)
        self._keys = itertools.count()
        self._portids = itertools.count(4000)

    def table(self, namespace: str | None) -> Table:
        """Return the namespace's table after dropping expired entries."""
        table = self.tables[namespace]
        table.expire(self.clock())
        return table

    def next_id(self) -> int:
        """Return a fresh entry id."""
        return next(self._ids)

    def event(self, table: Table, kind: str, flow: Flow) -> None:
        """Record the event a user-space request triggers."""
        body = render(flow, self.clock(), use=None, event=True)
        tag = f" [USERSPACE] portid={next(self._portids)} progname=conntrack"
        table.events.append((kind, flow.copy(), f"{'[' + kind + ']':>9} {body}{tag}"))

    # -- single commands ------------------------------------------------------

    def run(self, command: Any, namespace: str | None) -> Output:
        """Run one command against the namespace's table."""
        table = self.table(namespace)
        out = Output()
        handler = getattr(self, "_run_" + command.kind, None)
        if handler is None:
            raise NotImplementedError(f"FakeConntrack cannot run {command.kind!r} commands")
        handler(table, command, out)
        return out

    def _run_list(self, table: Table, command: Any, out: Output) -> None:
        fields = command.fields
        output = tuple(fields.pop("output", ()))
        if "xml" in output:
            raise NotImplementedError("FakeConntrack renders text output only")
        now = self.clock()
        match = compile_filters(fields, kind="list", now=now)
        shown = [f for f in table.live() if match(f)]
        for flow in shown:
            out.line(render(flow, now, output=output))
        out.summary(len(shown), "shown", zero_fails=False)

    def _run_get(self, table: Table, command: Any, out: Output) -> None:
        fields = command.fields
        output = tuple(fields.pop("output", ()))
        now = self.clock()
        try:
            flow, wanted = self._lookup(table, fields)
        except KernelError as error:
            out.fail(error)
            return
        checks = {k: fields[k] for k in ("state", "labels", "id") if k in fields}
        # The lookup finds either direction, but conntrack then compares the
        # original tuple in user space: a reply-tuple hit shows nothing.
        if flow.original != wanted or not compile_filters(checks, kind="list")(flow):
            out.summary(0, "shown", zero_fails=True)
            return
        out.line(render(flow, now, output=output))
        out.summary(1, "shown", zero_fails=True)

    def _lookup(self, table: Table, fields: Mapping[str, Any]) -> tuple[Flow, FlowTuple]:
        protonum = _protonum(fields["proto"])
        proto = constants.PROTOCOL_NAMES.get(protonum, "unknown")
        wanted = _direction(fields, "", proto)
        if wanted is None or (wanted.icmp_type is not None
                              and wanted.icmp_type not in constants.ICMP_REPLY_TYPES[proto]):
            # The kernel parses only trackable ICMP types (EINVAL otherwise).
            raise KernelError("invalid parameters")
        family = constants.IPV6 if wanted.src.version == 6 else constants.IPV4
        found = table.find(family, protonum, wanted, lambda _d: 0)
        if found is None:
            raise KernelError("such conntrack doesn't exist")
        return found[0], wanted

    def _run_create(self, table: Table, command: Any, out: Output) -> None:
        try:
            self.create(table, command.fields)
        except KernelError as error:
            out.fail(error)
            return
        out.summary(1, "created", zero_fails=False)

    def _run_delete(self, table: Table, command: Any, out: Output) -> None:
        deleted = self.delete(table, command.fields, out)
        out.summary(deleted, "deleted", zero_fails=True)

    def _run_update(self, table: Table, command: Any, out: Output) -> None:
        try:
            updated = self.update(table, command.match, command.changes, out)
        except KernelError as error:
            out.fail(error)
            return
        out.summary(updated, "updated", zero_fails=True)

    def _run_flush(self, table: Table, command: Any, out: Output) -> None:
        # 1.4.7 on Linux 6.x: "-F -f FAMILY" empties both families too.
        self.flush(table)
        out.message("connection tracking table has been emptied.")

    def _run_count(self, table: Table, command: Any, out: Output) -> None:
        out.line(str(len(table.flows)))

    def _run_stats(self, table: Table, command: Any, out: Output) -> None:
        counters = {"found": 0, "invalid": 0, "insert": table.inserted, "insert_failed": 0,
                    "drop": 0, "early_drop": 0, "error": 0, "search_restart": 0,
                    "clash_resolve": 0, "chaintoolong": 0}
        out.line(f"cpu={0:<4}\t" + "".join(f"{k}={v} " for k, v in counters.items()))

    def _run_events(self, table: Table, command: Any, out: Output) -> None:
        # The fake cannot wait for traffic: -E reports what user space did
        # (and what expired) since the previous -E of the namespace.
        fields = command.fields
        for name in ("event_mask", "output", "duration"):
            fields.pop(name, None)
        masks = set(command.event_mask)
        kinds = {"NEW", "UPDATE", "DESTROY"} if "ALL" in masks else {
            {"UPDATES": "UPDATE"}.get(mask, mask) for mask in masks}
        match = compile_filters(fields, kind="list")
        shown = [line for kind, flow, line in table.events if kind in kinds and match(flow)]
        table.events.clear()
        for line in shown:
            out.line(line)
        out.message(f"{len(shown)} flow events have been shown.")

    def _run_batch(self, table: Table, command: Any, out: Output) -> None:
        # Everything was validated (parsed) before; lines run in order and
        # the first kernel error stops the rest.  No summary is printed.
        for sub in command:
            try:
                self._batch_line(table, sub, out)
            except KernelError as error:
                out.fail(error)
                return

    def _batch_line(self, table: Table, command: Any, out: Output) -> None:
        if command.kind == "create":
            self.create(table, command.fields)
        elif command.kind == "delete":
            self.delete(table, command.fields, out)
        elif command.kind == "update":
            self.update(table, command.match, command.changes, out)
        elif command.kind == "flush":
            self.flush(table)
            out.message("connection tracking table has been emptied.")
        else:
            raise NotImplementedError(f"{command.kind!r} is not a load-file command")

    # -- table operations -----------------------------------------------------

    def create(self, table: Table, fields: Mapping[str, Any]) -> Flow:
        """Insert the flow ``fields`` describe.

        :raises KernelError: it exists (either tuple, same zone) or is invalid.
        """
        now = self.clock()
        flow = flow_from_fields(fields, now, self.next_id())
        self.insert(table, flow)
        return flow

    def insert(self, table: Table, flow: Flow) -> None:
        """Insert a built flow unless one of its tuples is taken."""
        if table.clashes(flow):
            raise KernelError("Such conntrack exists, try -U to update")
        flow.key = next(self._keys)
        table.add(flow)
        table.inserted += 1
        self.event(table, "NEW", flow)
        table.expire(self.clock())

    def delete(self, table: Table, fields: Mapping[str, Any], out: Output) -> int:
        """Delete the matching flows, printing each; return how many."""
        now = self.clock()
        match = compile_filters(fields, kind="delete", now=now)
        victims = [f for f in table.live() if match(f)]
        for flow in victims:
            out.line(render(flow, now))
            table.remove(flow)
            self.event(table, "DESTROY", flow)
        return len(victims)

    def update(self, table: Table, match: Mapping[str, Any], changes: Mapping[str, Any],
               out: Output) -> int:
        """Apply ``changes`` as 1.4.7's ``-U`` does; return how many were counted.

        Each request names the original tuple without a zone, so it reaches
        the zone-0 entry holding that tuple (ENOENT for zoned flows).

        :raises KernelError: the netlink socket overflowed (over 256 requests).
        """
        now = self.clock()
        selected = compile_filters(match, kind="update", now=now)
        dump = [flow.copy() for flow in table.live() if selected(flow)]
        counted = sent = 0
        for snapshot in dump:
            values = _new_values(snapshot, changes)
            if _unchanged(snapshot, values, now):
                continue
            sent += 1
            if sent > UPDATE_ACK_LIMIT:
                raise KernelError("No buffer space available")
            found = table.find(snapshot.family, snapshot.protonum, snapshot.original,
                               lambda _d: 0)
            if found is None:
                out.message("Operation failed: No such file or directory", raw=True)
                continue
            error = _apply(found[0], values, now)
            table.schedule(found[0].deadline)
            if error:
                out.message(error, raw=True)
            counted += 1
            self.event(table, "UPDATE", found[0])
            out.line(render(found[0], now, use=2))
        return counted

    def delete_exact(self, table: Table, entry: Entry) -> int:
        """Delete the flow a ctnetlink request for ``entry`` reaches; return the errno."""
        if entry.orig_zone is not None:
            zone = entry.orig_zone
        elif entry.reply_zone is not None:
            zone = 0
        else:
            zone = entry.zone
        found = table.find(entry.family, entry.protonum, entry.original, lambda _d: zone)
        if found is None:
            return ENOENT
        table.remove(found[0])
        self.event(table, "DESTROY", found[0])
        return 0

    def flush(self, table: Table) -> None:
        """Empty the table."""
        for flow in table.live():
            self.event(table, "DESTROY", flow)
        table.clear()


# ---------------------------------------------------------------------------
# The executor


class FakeClock:
    """A clock that moves only when a test advances it.

    :param start: the first reading, in seconds.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __repr__(self) -> str:
        return f"FakeClock({self.now!r})"

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``.

        :raises ValueError: for a negative step (time does not run back).
        """
        if seconds < 0:
            raise ValueError(f"cannot move a clock back by {seconds!r} s")
        self.now += seconds


class FakeConntrack:
    """An executor that runs command objects against in-memory tables.

    Each network namespace has its own table; ``None`` is the caller's own
    namespace and always exists.  Results and errors come from the same
    :func:`conntrack_lib.executor.interpret` the real executors use.

    Differences a test may notice: entries are listed in insertion order
    (the kernel uses hash order; rely on neither), ``-o xml`` is not
    rendered, labels are kept only on entries seeded with labels (as in a
    namespace without a ruleset that uses them), and ``-E`` returns at once
    with the events that user space (and expiry) caused since the previous
    ``-E`` instead of waiting for traffic.

    :param clock: returns the time in seconds; entry timeouts count down
        with it (defaults to :func:`time.monotonic`).
    :param namespaces: names of the network namespaces that exist.
    """

    def __init__(self, clock: Clock | None = None,
                 namespaces: Iterable[str] | None = None) -> None:
        self._kernel = Kernel(clock or time.monotonic)
        #: Every command run (or attempted), in order.
        self.calls: list[Any] = []
        #: How many conntrack processes a real executor would have started.
        self.processes = 0
        #: How many flows were named in :meth:`delete_flows` and
        #: :meth:`create_flows` calls.
        self.netlink_requests = 0
        self._failures: list[BaseException] = []
        for name in namespaces or ():
            self.add_namespace(name)

    def __repr__(self) -> str:
        names = sorted(n for n in self._kernel.tables if n is not None)
        return f"FakeConntrack(namespaces={names!r})"

    @property
    def clock(self) -> Clock:
        """Return the clock entry timeouts count down with."""
        return self._kernel.clock

    # -- namespaces -----------------------------------------------------------

    def add_namespace(self, name: str) -> None:
        """Create the (empty) network namespace ``name``; existing ones stay."""
        self._kernel.tables.setdefault(netns_names.validate_name(name), Table())

    def remove_namespace(self, name: str) -> None:
        """Delete the namespace ``name`` and its table."""
        self._kernel.tables.pop(netns_names.validate_name(name), None)

    @property
    def namespaces(self) -> list[str]:
        """Return the names of the namespaces that exist (without ``None``)."""
        return sorted(n for n in self._kernel.tables if n is not None)

    # -- the Executor protocol ------------------------------------------------

    def release(self) -> capabilities.Release:
        """Return the release the fake behaves as: the newest measured one.

        :returns: the release as ``(major, minor, patch)``.
        """
        return capabilities.LATEST.release

    def execute(self, command: Any, *, namespace: str | None = None,
                timeout: float | None = None) -> executor.Result:
        """Run ``command`` and return its :class:`~conntrack_lib.executor.Result`.

        :raises CommandError: (and subclasses) as the real executors do.
        :raises InvalidArgumentError: a bad namespace name.
        :raises NotImplementedError: an output format or filter the fake lacks.
        """
        cmd = self._start(command, namespace)
        out = self._kernel.run(command, namespace)
        return executor.interpret(cmd, out.exit_code, "".join(out.stdout),
                                  "".join(out.stderr), command)

    def iter_lines(self, command: Any, *, namespace: str | None = None,
                   timeout: float | None = None) -> Iterator[str]:
        """Run a list command and return an iterator over its stdout lines.

        :raises InvalidArgumentError: not a list command.
        """
        if command.kind != "list":
            raise exc.InvalidArgumentError("command", command.kind,
                                           "iter_lines needs a list command")
        result = self.execute(command, namespace=namespace, timeout=timeout)
        return iter(result.stdout.splitlines())

    def _start(self, command: Any, namespace: str | None) -> tuple[str, ...]:
        """Account for one conntrack process; return its argv or raise."""
        argv = (constants.CONNTRACK_BINARY, *command.argv())
        if namespace is not None:
            path = netns_names.namespace_path(namespace)
            if namespace not in self._kernel.tables:
                raise exc.NamespaceNotFoundError(
                    argv, None, "", f"network namespace {namespace!r} not found in "
                    f"{constants.NETNS_RUN_DIR}")
            argv = (netns_names.NSENTER, f"--net={path}", "--", *argv)
        self.calls.append(command)
        self.processes += 1
        if self._failures:
            raise self._failures.pop(0)
        return argv

    def delete_flows(self, entries: Sequence[Entry], *,
                     namespace: str | None = None) -> list[int]:
        """Delete exact flows as ctnetlink requests would; return one errno per flow.

        Each request names the original tuple and one zone (the orig-zone,
        0 for a reply-zone flow, else the zone), like
        :mod:`conntrack_lib.netlink`.  No conntrack process is involved.

        :returns: 0 for a deleted flow, 2 (ENOENT) for one already gone.
        """
        table = self._table(namespace)
        self.netlink_requests += len(entries)
        if self._failures:
            raise self._failures.pop(0)
        return [self._kernel.delete_exact(table, entry) for entry in entries]

    def create_flows(self, creates: Sequence[Any], *,
                     namespace: str | None = None) -> list[int]:
        """Create flows as IPCTNL_MSG_CT_NEW requests would; return one errno per flow.

        Every command is checked first (NAT and labels are refused, as the
        real executors refuse them); then each flow is created unless one of
        its tuples exists in its zone.  No conntrack process is involved.

        :returns: 0 for a created flow, 17 (EEXIST) for one that exists, 22
            (EINVAL) for one the kernel would refuse.
        :raises InvalidArgumentError: a command netlink create cannot encode.
        """
        table = self._table(namespace)
        for command in creates:
            netlink_create.to_primitive(command)
        self.netlink_requests += len(creates)
        if self._failures:
            raise self._failures.pop(0)
        return [self._create_errno(table, command) for command in creates]

    def _create_errno(self, table: Table, command: Any) -> int:
        try:
            self._kernel.create(table, command.fields)
        except KernelError as error:
            return EEXIST if "exists" in str(error) else EINVAL
        return 0

    # -- inspection and seeding for tests -------------------------------------

    def fail_next(self, error: BaseException) -> None:
        """Make the next command raise ``error`` (after it is counted as a call)."""
        self._failures.append(error)

    def entries(self, namespace: str | None = None) -> list[Entry]:
        """Return the live entries of a namespace, as a parser would read them."""
        now = self._kernel.clock()
        return [to_entry(flow, now) for flow in self._table(namespace).live()]

    def add_entry(self, entry: Entry, namespace: str | None = None) -> None:
        """Insert ``entry`` directly (no call, no process), e.g. to seed a test.

        Its status, mark, zones, counters and labels are kept; a missing
        timeout becomes :data:`DEFAULT_SEED_TIMEOUT`.

        :raises EntryExistsError: a flow with one of its tuples exists.
        """
        table = self._table(namespace)
        flow = flow_from_entry(entry, self._kernel.clock(), self._kernel.next_id())
        try:
            self._kernel.insert(table, flow)
        except KernelError as error:
            raise exc.EntryExistsError((), constants.EXIT_FAILURE, "",
                                       f"Operation failed: {error}") from None

    def clear(self, namespace: str | None = None) -> None:
        """Empty one namespace's table (no call, no process)."""
        self._table(namespace).clear()

    def _table(self, namespace: str | None) -> Table:
        try:
            return self._kernel.table(namespace)
        except KeyError:
            raise exc.NamespaceNotFoundError(
                (), None, "", f"network namespace {namespace!r} not found") from None


__all__ = ["PREFIX", "FakeClock", "FakeConntrack", "KernelError", "render", "to_entry"]
