"""Turn validated deletion requests into the cheapest plan; pure, no I/O.

A :class:`Request` is built once, at the edge (a helper or queue call), from
filter keywords: it holds their validated, canonical values and knows which
of them ``conntrack``'s own filter gets right (:data:`CLI_TRUSTED`) and
which only :mod:`conntrack_lib.matching` can decide.  :func:`plan_deletes`
merges the requests (duplicates, requests a broader one covers, whole zones)
and picks a strategy with a :class:`CostModel`:

``cli``
    one ``conntrack -D`` line per request (``-R`` batches where the release
    has them); every line dumps the whole table inside conntrack.
``dump``
    one ``conntrack -L`` dump (with ``-o id`` and, when needed, ``labels``),
    matching in Python, then exact deletes (netlink, else ``-D`` by tuple
    and id).

Whole zones (other than 0) go as ``-D -w ZONE`` in a ``cli`` plan and ride
along for free in a ``dump`` plan.  Requests on status bits no dump shows
(FIXED_TIMEOUT, EXPECTED) that also need Python go as ``filtered`` dumps:
``-L`` with the kernel's status filter, the rest matched in Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import netaddr

from conntrack_lib import capabilities, commands, matching
from conntrack_lib import exceptions as exc
from conntrack_lib.values import FieldMap, Fields, FieldValue, FilterValue

#: Keywords whose ``conntrack`` filter means what :mod:`~conntrack_lib.matching` says on
#: every supported release.  Left out: ``orig_zone``/``reply_zone`` (1.4.7
#: ``--orig-zone 0`` lists zone-7 flows, ``--reply-zone 0`` lists every
#: flow), ``zone`` 0 (``-w 0`` keeps flows zoned in one direction), NAT
#: addresses (1.4.7 compares IPv4 ones only), ``secmark`` (matches
#: everything when the kernel reports none) and the GRE keys (``--srckey``,
#: ``--dstkey``, ``--reply-key-src``, ``--reply-key-dst``: every release from
#: 1.4.5 to 1.4.9 lists and deletes every GRE flow with them).
CLI_TRUSTED = frozenset({
    "family", "proto", "src", "dst", "reply_src", "reply_dst", "mask_src", "mask_dst",
    "sport", "dport", "reply_sport", "reply_dport", "icmp_type", "icmp_code", "icmp_id",
    "state", "mark", "labels", "id", "zone", "status",
})

#: Address keywords: any of them pins the family of a command.
_ADDRESS_KEYS = ("src", "dst", "reply_src", "reply_dst")
#: The families a ``-L``/``-D`` without ``-f`` must be split into where the
#: release covers one family only.
FAMILIES = ("ipv4", "ipv6")


@dataclasses.dataclass(frozen=True)
class Request:
    """One validated filter request: every flow matching all its filters.

    :ivar items: the canonical ``(keyword, value)`` pairs, in rendering order.
    :ivar command: the command :meth:`build` validated them as, which a plan
        sends as it is: nothing behind the edge validates a request again.
        None for a request the planner made itself (a whole zone).
    """

    items: tuple[tuple[str, FieldValue], ...]
    command: commands.Command | None = dataclasses.field(default=None, compare=False,
                                                         repr=False)

    @classmethod
    def build(cls, filters: Mapping[str, FilterValue], kind: str = "delete") -> Request:
        """Validate ``filters`` as a ``kind`` command would and freeze them.

        :param filters: filter keywords; None values are left out.
        :param kind: ``"delete"`` or ``"list"`` (which keywords are legal).
        :returns: the request.
        :raises InvalidArgumentError: for a bad keyword, value or combination.
        """
        if not isinstance(filters, Mapping):
            raise exc.InvalidArgumentError("request", filters, "expected a mapping of filters")
        given = {k: v for k, v in filters.items() if v is not None}
        if kind == "list":
            command: commands.Command = commands.ListCommand(**given)
        else:
            command = commands.DeleteCommand(**given)
        return cls(tuple(command.fields.items()), command)

    @property
    def filters(self) -> Fields:
        """Return the filters as a dict."""
        return dict(self.items)

    @property
    def zone(self) -> int | None:
        """Return the zone this request filters on, or None for every zone."""
        zone = self.filters.get("zone")
        return zone if isinstance(zone, int) else None

    @property
    def keys(self) -> frozenset[str]:
        """Return the keywords this request sets."""
        return frozenset(k for k, _ in self.items)

    @property
    def zone_wide(self) -> bool:
        """Tell whether the request is a whole non-default zone."""
        return self.keys == {"zone"} and self.filters["zone"] != 0

    @property
    def cli_ok(self) -> bool:
        """Tell whether conntrack's own filter decides this request right."""
        fields = self.filters
        if not self.keys <= CLI_TRUSTED or fields.get("zone") == 0:
            return False
        status = matching._words(fields.get("status", ()))
        # conntrack's -u never matches positive and negative words together.
        return not (any(w.startswith("!") or w == "UNREPLIED" for w in status)
                    and any(not w.startswith("!") and w != "UNREPLIED" for w in status))

    def cli_ok_for(self, caps: capabilities.Capabilities = capabilities.LATEST) -> bool:
        """Tell whether one conntrack command decides this request right on a release.

        :param caps: the release's capabilities.  Before 1.4.7 ``-u`` takes
            no ``!FLAG`` (or ``UNREPLIED``) word; 1.4.5 ignores ``-f`` unless
            an address or a mark filter goes with it; 1.4.6 (and 1.4.5 with
            a mark filter) covers IPv4 only when neither a family nor an
            address is given.  1.4.5's prefixes go as masks (see
            :meth:`cli_filters`).
        :returns: True when the command's filter means what
            :mod:`~conntrack_lib.matching` says.
        """
        if not self.cli_ok:
            return False
        fields = self.filters
        # UNREPLIED is the library's word for !SEEN_REPLY: refused alike.
        if not caps.negated_status and any(
                w.startswith("!") or w == "UNREPLIED"
                for w in matching._words(fields.get("status", ()))):
            return False
        if _pinned(fields):
            return True
        if "family" in fields:
            return _family_honoured(fields, caps)
        return not _one_family_only(fields, caps)

    def cli_filters(self, caps: capabilities.Capabilities = capabilities.LATEST
                    ) -> Fields:
        """Return the filters as the release's conntrack must be given them.

        Equal to :attr:`filters` except on 1.4.5, whose ``-s ADDR/LEN``
        matches nothing: there a src or dst prefix goes as the network
        address plus ``--mask-src``/``--mask-dst``.
        """
        return _for_release(self.filters, caps)

    @property
    def dump_ok(self) -> bool:
        """Tell whether one plain dump holds everything this request tests."""
        kernel, _ = matching.split_status(self.filters)
        return not kernel

    def split(self, caps: capabilities.Capabilities = capabilities.LATEST
              ) -> tuple[Fields, Fields]:
        """Return ``(for conntrack, for Python)`` halves of the filters.

        conntrack gets the hidden status words and every keyword it gets
        right on the release ``caps`` describes; Python decides the rest.
        ``id`` stays on the Python side because ``-L`` has no ``-i``.  The
        conntrack half may lack a family the release then lists only in
        part (1.4.6): :func:`listings` splits it.
        """
        kernel, engine = matching.split_status(self.filters)
        cli = {k: v for k, v in engine.items()
               if k in CLI_TRUSTED and k not in ("status", "id")
               and not (k == "zone" and v == 0)}
        if "mask_src" in cli and "src" not in cli:
            cli.pop("mask_src")
        if "mask_dst" in cli and "dst" not in cli:
            cli.pop("mask_dst")
        return _for_release({**cli, **kernel}, caps), engine

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.items) or "everything"


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Seconds each strategy costs, measured on the reference machine.

    The figures and how they were measured are in ``docs/performance.rst``
    (``bench/cost_model.py`` measures them again).

    :ivar process: starting one conntrack process through the daemon.
    :ivar cli_scan: one ``-D`` line's table dump and filter, per flow.
    :ivar dump_scan: one ``-L`` dump read and prefiltered in Python, per flow.
    :ivar dump_parse: parsing one dumped flow in Python.
    :ivar candidate_share: the share of a table one prefilter token lets
        through, per request (an address or zone of one port among many).
    :ivar match: one request matched in Python, per flow.
    :ivar netlink_delete: one exact netlink delete.
    :ivar cli_delete: one exact ``-D`` by tuple and id, per table flow.
    """

    process: float = 0.003
    cli_scan: float = 6e-6
    dump_scan: float = 6e-6
    dump_parse: float = 16e-6
    candidate_share: float = 0.01
    match: float = 1e-6
    netlink_delete: float = 40e-6
    cli_delete: float = 6e-6

    def cli_cost(self, lines: int, table_size: int, batch_size: int) -> float:
        """Return the estimated seconds of ``lines`` filtered ``-D`` lines."""
        if not lines:
            return 0.0
        processes = -(-lines // batch_size)
        return processes * self.process + lines * table_size * self.cli_scan

    def dump_cost(self, requests: int, table_size: int, netlink: bool,
                  prefiltered: bool = False, narrowed: bool = False) -> float:
        """Return the estimated seconds of one dump, matching and exact deletes.

        The deletes themselves are not counted: both strategies delete the
        same flows, and the kernel's per-flow work is the same.  Without
        netlink every exact delete is a ``-D`` that scans the table, so
        one dump then never wins.  A
        prefiltered dump parses only the lines holding a request's token.
        """
        parsed = table_size
        if prefiltered or narrowed:
            parsed = int(table_size * min(1.0, requests * self.candidate_share))
        # A dump narrowed by shared filters prints only candidates: it costs
        # what one -D line's scan costs.
        scan = self.cli_scan if narrowed else self.dump_scan
        cost = (self.process + table_size * scan
                + parsed * (self.dump_parse + requests * self.match))
        if not netlink:
            # Each exact -D scans the table; assume one victim per request.
            cost += requests * table_size * self.cli_delete
        return cost

    def crossover(self, table_size: int, netlink: bool, batch_size: int = 1000,
                  prefiltered: bool = False) -> int:
        """Return the fewest requests for which one dump beats ``-D`` lines.

        :param table_size: flows in the table.
        :param netlink: whether exact deletes go over netlink.
        :param batch_size: ``-D`` lines per ``-R`` process.
        :param prefiltered: whether the requests give prefilter tokens.
        :returns: the request count, at most 10,000.
        """
        for lines in range(1, 10_001):
            if self.dump_cost(lines, table_size, netlink, prefiltered) < self.cli_cost(
                    lines, table_size, batch_size):
                return lines
        return 10_001


_L4_KEYS = frozenset({"sport", "dport", "reply_sport", "reply_dport", "icmp_type", "icmp_code",
                      "icmp_id", "srckey", "dstkey", "reply_srckey", "reply_dstkey", "state"})


def _is_prefix(value: FieldValue | None) -> bool:
    return isinstance(value, str) and "/" in value


def _for_release(fields: FieldMap, caps: capabilities.Capabilities) -> Fields:
    """Return ``fields`` in the form the release's conntrack filters right.

    Only narrows what conntrack is asked to filter, never what matches: a
    family 1.4.5 would misread is left to Python.  (Prefixes are accepted
    for src and dst only, which ``--mask-src``/``--mask-dst`` express.)
    """
    out = prefixes_for_release(fields, caps)
    if not _pinned(out) and not _family_honoured(out, caps):
        out.pop("family", None)
    return out


def prefixes_for_release(fields: FieldMap, caps: capabilities.Capabilities
                         ) -> Fields:
    """Return ``fields`` with src and dst prefixes as the release's conntrack takes them.

    1.4.5's ``-s NET/LEN`` (with ``-L``, ``-D`` and ``-E`` alike) matches
    nothing, while its ``--mask-src``/``--mask-dst`` work: there a prefix
    becomes the network address plus a mask.  Other releases get ``fields``
    as they are.
    """
    out = dict(fields)
    if not caps.prefix_filters:
        for name in ("src", "dst"):
            if _is_prefix(out.get(name)):
                network = netaddr.IPNetwork(out[name])
                out[name] = str(network.network)
                out[f"mask_{name}"] = str(network.netmask)
    return out


def _pinned(fields: FieldMap) -> bool:
    """Tell whether an address pins the family of a command (on every release)."""
    return any(k in fields for k in _ADDRESS_KEYS)


def _family_honoured(fields: FieldMap, caps: capabilities.Capabilities) -> bool:
    """Tell whether the release keeps a ``-L``/``-D`` with ``fields`` to ``-f``'s family."""
    return caps.family_filter or "mark" in fields


def _one_family_only(fields: FieldMap, caps: capabilities.Capabilities) -> bool:
    """Tell whether a family-less ``-L``/``-D`` with ``fields`` covers IPv4 only."""
    return caps.default_family is not None or (caps.mark_ipv4_only and "mark" in fields)


def listings(fields: FieldMap, caps: capabilities.Capabilities = capabilities.LATEST
             ) -> list[Fields]:
    """Return the filters of the ``-L`` (or ``-D``) commands that together cover ``fields``.

    One command, except where the release covers IPv4 only without a
    family or an address (1.4.6; 1.4.5 with a mark filter): then one per
    family, leaving out a family the other filters exclude (icmp, a NAT
    address).

    :param fields: filters in the release's form (see :meth:`Request.split`).
    :param caps: the release's capabilities.
    :returns: the filters of each command.
    """
    if _pinned(fields) or "family" in fields or not _one_family_only(fields, caps):
        return [dict(fields)]
    return [{**fields, "family": family} for family in FAMILIES if _fits(fields, family)]


def _fits(fields: FieldMap, family: str) -> bool:
    """Tell whether ``fields`` can select flows of ``family`` (icmp, a NAT address)."""
    try:
        commands._check_family({**fields, "family": family})
    except exc.InvalidArgumentError:
        return False
    return True


def common_cli_filters(requests: Iterable[Request], zones: Iterable[int] = (),
                       caps: capabilities.Capabilities = capabilities.LATEST) -> Fields:
    """Return the filters every request (and whole zone) shares that ``-L`` gets right.

    Passed to the dump, they make conntrack print only the flows that can
    match: printing, not scanning, is most of a dump's cost.

    :param requests: the requests the dump decides.
    :param zones: whole zones the dump takes along.
    :param caps: the release's capabilities.
    :returns: the shared filters; empty when nothing is shared.
    """
    pairs = [set(r.split(caps)[0].items()) for r in requests]
    pairs += [{("zone", z)} for z in zones]
    if not pairs:
        return {}
    shared = dict(set.intersection(*pairs))
    for name in ("status", "labels"):
        shared.pop(name, None)
    for name in ("src", "dst"):
        # An address some request masks (1.4.5's form of a prefix) is no
        # exact address to share.
        if any(f"mask_{name}" in dict(pair) for pair in pairs):
            shared.pop(name, None)
        shared.pop(f"mask_{name}", None)
    if "proto" not in shared:
        for name in _L4_KEYS:
            shared.pop(name, None)
    return shared


#: The model measured on the reference machine.
DEFAULT_COST_MODEL = CostModel()
#: Table size assumed before the helper has seen the table.
DEFAULT_TABLE_SIZE = 10_000


@dataclasses.dataclass(frozen=True)
class DeletePlan:
    """What a set of deletion requests costs once merged.

    :ivar requests: the distinct, non-subsumed requests of the plan's
        strategy (zone-wide ones excluded).
    :ivar zone_wide: zones whose every flow goes.
    :ivar strategy: ``"cli"`` or ``"dump"`` (see the module docstring).
    :ivar cli_requests: requests that go as ``-D`` lines whatever the
        strategy (hidden status bits, decided by conntrack).
    :ivar filtered: requests that need a status-filtered dump each.
    :ivar received: how many requests came in.
    :ivar merged: how many were identical to another one.
    :ivar dropped: how many a broader request of the same plan covered.
    :ivar batch_size: ``-D`` lines per ``-R`` process.
    :ivar estimate: the cost model's estimate of the chosen strategy, in seconds.
    :ivar caps: the release the ``-D`` lines are written for.
    """

    requests: tuple[Request, ...]
    zone_wide: tuple[int, ...]
    strategy: str
    received: int
    merged: int
    dropped: int
    batch_size: int = 1000
    cli_requests: tuple[Request, ...] = ()
    filtered: tuple[Request, ...] = ()
    estimate: float = 0.0
    caps: capabilities.Capabilities = capabilities.LATEST

    @property
    def dump_requests(self) -> tuple[Request, ...]:
        """Return the requests the shared dump decides (empty for ``cli``)."""
        return self.requests if self.strategy == "dump" else ()

    @property
    def cli_lines(self) -> tuple[commands.DeleteCommand, ...]:
        """Return the ``-D`` lines the plan runs."""
        lines = list(self.cli_requests)
        zones = list(self.zone_wide)
        if self.strategy == "cli":
            lines = list(self.requests) + lines
        elif zones and self.requests:
            zones = []  # the dump takes the whole zones along
        # A whole zone is one -D, or one per family where the release's
        # family-less -D takes IPv4 only (1.4.6).
        return tuple([commands.DeleteCommand(**f) for z in zones
                      for f in listings({"zone": z}, self.caps)]
                     + [_delete_line(r, self.caps) for r in lines])

    @property
    def dumps(self) -> int:
        """Return how many full table dumps executing the plan costs."""
        shared = 1 if self.strategy == "dump" and self.requests else 0
        return shared + len(self.cli_lines) + len(self.filtered)

    @property
    def processes(self) -> int:
        """Return how many conntrack processes executing the plan starts."""
        lines = len(self.cli_lines)
        shared = 1 if self.strategy == "dump" and self.requests else 0
        return shared + len(self.filtered) + (-(-lines // self.batch_size) if lines else 0)


@dataclasses.dataclass(frozen=True)
class DeleteReport:
    """What executing a :class:`DeletePlan` did.

    :ivar plan: the plan that ran.
    :ivar deleted: how many flows went.
    :ivar seconds: wall-clock time of the run.
    """

    plan: DeletePlan
    deleted: int
    seconds: float


def plan_deletes(
    requests: Iterable[Request],
    *,
    table_size: int | None = None,
    netlink: bool = False,
    batch_size: int = 1000,
    model: CostModel = DEFAULT_COST_MODEL,
    caps: capabilities.Capabilities = capabilities.LATEST,
) -> DeletePlan:
    """Merge ``requests`` and choose the cheapest way to run them.

    :param requests: validated requests (see :meth:`Request.build`).
    :param table_size: flows in the table, if known; the cost model then
        assumes :data:`DEFAULT_TABLE_SIZE`.
    :param netlink: whether exact deletes can go over netlink.
    :param batch_size: ``-D`` lines per ``-R`` process.
    :param model: the cost model.
    :param caps: the release's capabilities: requests its conntrack would
        misread (see :meth:`Request.cli_ok_for`) are matched on a dump.
    :returns: the plan.
    """
    received = list(requests)
    unique = list(dict.fromkeys(received))
    kept = _drop_subsumed(_join_families(unique))
    zone_wide = tuple(sorted(r.zone or 0 for r in kept if r.zone_wide))
    rest = [r for r in kept if not r.zone_wide]
    cli = {r: r.cli_ok_for(caps) for r in rest}
    both = [r for r in rest if cli[r] and r.dump_ok]
    cli_only = tuple(r for r in rest if cli[r] and not r.dump_ok)
    dump_only = [r for r in rest if r.dump_ok and not cli[r]]
    filtered = tuple(r for r in rest if not cli[r] and not r.dump_ok)
    size = DEFAULT_TABLE_SIZE if table_size is None else table_size
    cli_cost = model.cli_cost(len(both) + len(zone_wide), size, batch_size)
    prefiltered = matching.line_prefilter([r.filters for r in both + dump_only],
                                          zone_wide) is not None
    narrowed = bool(common_cli_filters(both + dump_only, zone_wide, caps))
    dump_cost = model.dump_cost(len(both) + len(dump_only), size, netlink, prefiltered,
                                narrowed)
    strategy = "dump" if dump_only or (both and dump_cost < cli_cost) else "cli"
    chosen = both + dump_only if strategy == "dump" else both
    return DeletePlan(requests=tuple(chosen), zone_wide=zone_wide, strategy=strategy,
                      received=len(received), merged=len(received) - len(unique),
                      dropped=len(unique) - len(kept), batch_size=batch_size,
                      cli_requests=cli_only, filtered=filtered,
                      estimate=dump_cost if strategy == "dump" else cli_cost, caps=caps)


def _delete_line(request: Request, caps: capabilities.Capabilities) -> commands.DeleteCommand:
    """Return the ``-D`` of ``request``: the command built at the edge when it fits the release."""
    fields = request.cli_filters(caps)
    if isinstance(request.command, commands.DeleteCommand) and fields == request.filters:
        return request.command
    # A whole zone the planner made, or 1.4.5's mask form of a prefix.
    return commands.DeleteCommand(**fields)


def _join_families(requests: list[Request]) -> list[Request]:
    """Replace an IPv4 and an IPv6 request for the same whole zone by one."""
    families: dict[int, set[str]] = {}
    for r in requests:
        if r.keys == {"zone", "family"}:
            families.setdefault(r.zone or 0, set()).add(str(r.filters["family"]))
    whole = {z for z, fams in families.items() if len(fams) == 2}
    if not whole:
        return requests
    joined = [r for r in requests
              if not (r.keys == {"zone", "family"} and r.filters["zone"] in whole)]
    extra = [Request((("zone", z),)) for z in sorted(whole)]
    return joined + [r for r in extra if r not in joined]


def _drop_subsumed(requests: list[Request]) -> list[Request]:
    """Drop every request another (different) request of the list covers.

    A request with a zone can only be covered by one of the same zone or
    one without a zone, so candidates are looked up by zone.  Of two
    requests that cover each other, the first stays.
    """
    by_zone: dict[int | None, list[int]] = {}
    for i, request in enumerate(requests):
        by_zone.setdefault(request.zone, []).append(i)
    kept = []
    for i, narrow in enumerate(requests):
        zone = narrow.zone
        candidates = by_zone.get(zone, []) + (by_zone.get(None, []) if zone is not None else [])
        covered = any(j != i and _covers(requests[j], narrow)
                      and not (j > i and _covers(narrow, requests[j]))
                      for j in candidates)
        if not covered:
            kept.append(narrow)
    return kept


def _covers(broad: Request, narrow: Request) -> bool:
    # A hidden status word can only be compared by equality, which subsumes does.
    return matching.subsumes(broad.filters, narrow.filters)
