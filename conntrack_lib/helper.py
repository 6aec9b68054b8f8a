"""ConntrackHelper: zones per owner and every table operation, batched.

One helper serves one network namespace.  It keeps the zone map of its
owners (ports, networks, routers) in a :class:`~conntrack_lib.zones.ZoneAllocator`
and runs table operations through an executor, which by default is the
privsep daemon.  Creates go out as ``-R`` batches; deletes go through a
small planner, because every ``conntrack -D`` dumps the whole table.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import netaddr
from oslo_log import log as logging

from conntrack_lib import commands, constants, matching, parser
from conntrack_lib import exceptions as exc
from conntrack_lib.models import CpuStats, Entry, Event
from conntrack_lib.zones import AnyZoneStore, SQLiteZoneStore, ZoneAllocator

LOG = logging.getLogger(__name__)
#: Longest capture :meth:`ConntrackHelper.events` runs, in seconds.
MAX_EVENTS_DURATION = 3600.0

#: conntrack 1.4.7 aborts a bulk ``-U`` after about 256 updates (ENOBUFS).
UPDATE_BULK_LIMIT = 200
#: What ``-D`` prints when a flow vanished between its dump and its delete.
VANISHED_MESSAGE = "such conntrack doesn't exist"
VANISHED_RETRIES = 3


@dataclasses.dataclass(frozen=True)
class DeletePlan:
    """What a set of deletion requests costs once merged.

    :ivar requests: the distinct, non-subsumed requests, as filter dicts.
    :ivar zone_wide: zones whose every flow goes (one ``-D -w ZONE`` each).
    :ivar strategy: ``"cli"`` (one ``-R`` batch of ``-D`` lines, each a
        table dump) or ``"dump"`` (one ``-L`` dump, matching in Python,
        then exact deletes over netlink).
    :ivar received: how many requests came in.
    :ivar merged: how many were identical to another one.
    :ivar dropped: how many a broader request of the same plan covered.
    """

    requests: tuple[Mapping[str, Any], ...]
    zone_wide: tuple[int, ...]
    strategy: str
    received: int
    merged: int
    dropped: int
    batch_size: int = 1000

    @property
    def dumps(self) -> int:
        """Return how many full table dumps executing the plan costs."""
        if not self.requests and not self.zone_wide:
            return 0
        if self.strategy == "dump":
            return 1
        return len(self.requests) + len(self.zone_wide)

    @property
    def processes(self) -> int:
        """Return how many conntrack processes executing the plan starts."""
        lines = len(self.requests) + len(self.zone_wide)
        if not lines:
            return 0
        if self.strategy == "dump":
            return 1  # the dump; the deletes themselves go over netlink
        return -(-lines // self.batch_size)


@dataclasses.dataclass(frozen=True)
class DeleteReport:
    """What executing a :class:`DeletePlan` did."""

    plan: DeletePlan
    deleted: int
    seconds: float


class ConntrackHelper:
    """Allocate conntrack zones and manage the table of one namespace.

    :param namespace: network namespace name, or None for the caller's own.
    :param executor: an :class:`~conntrack_lib.executor.Executor`; defaults
        to a :class:`~conntrack_lib.executor.PrivsepExecutor`.
    :param zone_range: inclusive ``(low, high)`` zones this helper may hand
        out, within ``1..MAX_CONNTRACK_ZONE_ID``.
    :param zone_store: where the zone map persists, e.g. a
        :class:`~conntrack_lib.zones.SQLiteZoneStore`; defaults to the
        ``[conntrack_lib] zone_store_path`` option, and to memory when that
        is unset.
    :param reserved: zones never handed out (for example OVS's VLAN tags).
    :param batch_size: lines per ``-R`` process for batched creates and
        deletes; defaults to the ``[conntrack_lib] batch_size`` option.
    :param exact_delete_backend: ``"auto"`` (netlink when the executor
        offers it, else the CLI), ``"netlink"`` or ``"cli"``; defaults to
        the ``[conntrack_lib] exact_delete_backend`` option.
    :param conf: the oslo.config object those defaults come from
        (``cfg.CONF`` when None).
    :raises InvalidZoneError: for a range outside 1..65535.
    :raises ZoneStoreError: when the zone store is unsafe or unusable.
    """

    def __init__(
        self,
        namespace: str | None = None,
        executor: Any = None,
        zone_range: tuple[int, int] = (constants.MIN_CONNTRACK_ZONE_ID,
                                       constants.MAX_CONNTRACK_ZONE_ID),
        zone_store: AnyZoneStore | None = None,
        *,
        reserved: Iterable[int] = (),
        batch_size: int | None = None,
        exact_delete_backend: str | None = None,
        conf: Any = None,
    ) -> None:
        if batch_size is None or exact_delete_backend is None:
            group = _options(conf)
            batch_size = group.batch_size if batch_size is None else batch_size
            if exact_delete_backend is None:
                exact_delete_backend = group.exact_delete_backend
        if executor is None:
            from conntrack_lib.executor import PrivsepExecutor  # noqa: PLC0415 - lazy: no daemon at import

            executor = PrivsepExecutor()
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise exc.InvalidArgumentError("batch_size", batch_size, "must be a positive integer")
        if exact_delete_backend not in ("auto", "netlink", "cli"):
            raise exc.InvalidArgumentError("exact_delete_backend", exact_delete_backend,
                                           "must be auto, netlink or cli")
        self.namespace = namespace
        self.executor = executor
        self.batch_size = batch_size
        self.exact_delete_backend = exact_delete_backend
        if zone_store is None:
            zone_store = _configured_zone_store(conf)
        self._allocator = ZoneAllocator(zone_range=zone_range, reserved=reserved,
                                        store=zone_store)
        self._recovered = False
        self._recover_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ConntrackHelper(namespace={self.namespace!r}, executor={self.executor!r})"

    # -- zones -----------------------------------------------------------

    @property
    def allocator(self) -> ZoneAllocator:
        """Return the zone allocator (for inspection)."""
        return self._allocator

    def recover(self) -> frozenset[int]:
        """Hold every zone that has live flows but no owner, with one dump.

        A zone in use in the kernel must not go to a new owner before its
        flows are flushed (they would be inherited).  Runs once, on the first
        allocation at the latest; later calls return the zones still held.
        Processes sharing a file store should each recover before they
        create flows, or a zone another process filled meanwhile may be held
        by this one until :meth:`flush_zone` frees it.

        :returns: the zones held.
        """
        with self._recover_lock:
            if not self._recovered:
                lo, hi = self._allocator.zone_range
                live = {z for z in self._live_zones() if lo <= z <= hi}
                self._allocator.hold(live - self._allocator.in_use())
                self._recovered = True
        return self._allocator.held()

    def _live_zones(self) -> set[int]:
        zones: set[int] = set()
        for entry in self.iter_entries():
            for zone in (entry.zone, entry.orig_zone, entry.reply_zone):
                if zone:
                    zones.add(zone)
        return zones

    def allocate_zone(self, key: str) -> int:
        """Return the zone of ``key``, allocating one if it has none.

        :raises ZoneExhaustedError: when no zone is free in the range.
        """
        if not self._recovered:
            self.recover()
        return self._allocator.allocate(key)

    def allocate_zones(self, keys: Iterable[str]) -> dict[str, int]:
        """Return the zone of every key, allocating in one step those that have none.

        An agent's resync gives every port its zone at once: with a
        :class:`~conntrack_lib.zones.SQLiteZoneStore` this is one
        transaction instead of one per key.  Either every key gets a zone
        or none does.  Like :meth:`allocate_zone`, the first call recovers
        the zones that have live flows but no owner, so they are not handed
        out.

        :param keys: the owners (ports, networks, routers), each a non-empty
            str without NUL or newline; a repeated key gets one zone.
        :returns: key to zone for every key given, in the order given.
        :raises InvalidArgumentError: for a bad key; nothing is allocated.
        :raises ZoneExhaustedError: when fewer zones are free in the range
            than keys without one; nothing is allocated.
        :raises ZoneStoreError: when the zone store cannot be updated or
            stays busy beyond its timeout; nothing is allocated.
        """
        wanted = list(keys)
        if not self._recovered:
            self.recover()
        return self._allocator.allocate_many(wanted)

    def get_zone(self, key: str) -> int | None:
        """Return the zone of ``key``, or None."""
        return self._allocator.get(key)

    def release_zone(self, key: str, flush: bool = False) -> int | None:
        """Release the zone of ``key``; with ``flush`` delete its flows first.

        The zone becomes free only after its flows are gone, so a failed
        flush leaves it allocated.

        :returns: the released zone, or None if ``key`` had none.
        """
        zone = self._allocator.get(key)
        if zone is None:
            return None
        if flush:
            self.delete_entries(zone=zone)
        self._allocator.release(key)
        return zone

    def zones(self) -> Mapping[str, int]:
        """Return a copy of the key-to-zone map."""
        return self._allocator.items()

    def flush_zone(self, zone: int) -> int:
        """Delete every flow of ``zone`` and stop holding it if it was held.

        :returns: the number of flows deleted.
        """
        deleted = self.delete_entries(zone=zone)
        if zone in self._allocator.held():
            self._allocator.unhold(zone)
        return deleted

    # -- reading ---------------------------------------------------------

    def iter_entries(self, **filters: Any) -> Iterator[Entry]:
        """Yield the entries matching ``filters`` as they are parsed.

        :raises InvalidArgumentError: bad filters, or ``output`` asks for xml.
        """
        command = _list_command(filters)
        lines = self.executor.iter_lines(command, namespace=self.namespace)
        try:
            yield from parser.iter_entries(lines)
        finally:
            # Closing this generator releases the daemon's copy at once.
            close = getattr(lines, "close", None)
            if close is not None:
                close()

    def list_entries(self, **filters: Any) -> list[Entry]:
        """Return the entries matching ``filters``.

        :raises InvalidArgumentError: bad filters, or ``output`` asks for xml.
        """
        command = _list_command(filters)
        # parse_entries builds the list with the garbage collector held off,
        # a third cheaper than list(iter_entries(...)) on large tables.
        return parser.parse_entries(self.executor.iter_lines(command, namespace=self.namespace))

    def count(self, **filters: Any) -> int:
        """Return how many entries match ``filters`` (all with none)."""
        if not filters:
            result = self.executor.execute(commands.CountCommand(), namespace=self.namespace)
            return int(result.count if result.count is not None
                       else parser.parse_count(result.stdout))
        return sum(1 for _ in self.iter_entries(**filters))

    def events(self, *, duration: float | None = None, count: int | None = None,
               event_mask: Sequence[str] = ("ALL",), **filters: Any) -> Iterator[Event]:
        """Yield the conntrack events matching ``filters`` as they arrive.

        The capture starts when this method is called and is streamed:
        through the privsep daemon in bounded memory, whatever its length.
        Closing the returned iterator (or dropping it) stops the capture.

        :param duration: seconds to watch (0.001..3600); by default 10 s,
            or the full 3600 s when ``count`` is given.
        :param count: stop after this many events.
        :param event_mask: event types to watch (``NEW``, ``UPDATE``,
            ``DESTROY`` or ``ALL``).
        :param filters: the filter keywords of :meth:`list_entries` that
            ``conntrack -E`` accepts.
        :returns: an iterator of :class:`~conntrack_lib.models.Event`.
        :raises InvalidArgumentError: bad filters, duration or count.
        :raises CommandError: (also from the iteration) conntrack failed.
        """
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 1):
            raise exc.InvalidArgumentError("count", count, "must be a positive integer")
        if duration is None:
            duration = MAX_EVENTS_DURATION if count is not None else \
                commands.EventsCommand.DEFAULT_DURATION
        command = commands.EventsCommand(event_mask=event_mask, duration=duration, **filters)
        stream = getattr(self.executor, "iter_events", None)
        if stream is not None:
            lines: Iterable[str] = stream(command, namespace=self.namespace)
        else:  # an executor without streaming (a fake): the whole capture at once
            lines = self.executor.execute(command, namespace=self.namespace).stdout.splitlines()
        return _counted_events(lines, count)

    def stats(self) -> list[CpuStats]:
        """Return the per-CPU statistics."""
        result = self.executor.execute(commands.StatsCommand(), namespace=self.namespace)
        return parser.parse_stats(result.stdout)

    # -- writing ---------------------------------------------------------

    def create_entry(self, **fields: Any) -> None:
        """Create one flow.

        :raises EntryExistsError: when the flow exists in that zone.
        """
        self.executor.execute(commands.CreateCommand(**fields), namespace=self.namespace)

    def create_entries(self, flows: Iterable[Mapping[str, Any]]) -> int:
        """Create many flows, ``batch_size`` per ``conntrack -R`` process.

        All flows are validated before the first process starts.  A
        duplicate stops its batch (conntrack aborts at the first kernel
        error) and raises :class:`EntryExistsError`.

        :returns: the number of flows created.
        """
        built = [commands.CreateCommand(**dict(flow)) for flow in flows]
        for chunk in _chunks(built, self.batch_size):
            self.executor.execute(commands.BatchCommand(chunk), namespace=self.namespace)
        return len(built)

    def update_entries(self, match: Mapping[str, Any], **changes: Any) -> int:
        """Update the flows matching ``match``; return how many changed.

        conntrack 1.4.7 cannot update flows outside zone 0 and aborts bulk
        updates after about 256 entries, so this refuses zoned matches and
        updates large sets one flow at a time.

        :raises InvalidArgumentError: when a matching flow is in a zone.
        """
        command = commands.UpdateCommand(match=match, **changes)
        listed = {k: v for k, v in match.items() if k != "id"}
        matched = self.list_entries(**listed)
        zoned = [e for e in matched if e.zone or e.orig_zone or e.reply_zone]
        if zoned:
            raise exc.InvalidArgumentError(
                "match", dict(match),
                f"{len(zoned)} matching flows are in non-zero zones, which conntrack "
                "1.4.7 cannot update; delete and re-create them instead")
        if not matched:
            return 0
        if len(matched) <= UPDATE_BULK_LIMIT:
            return self._run_count(command)
        return sum(self._run_count(commands.UpdateCommand(match=_exact_match(e), **changes))
                   for e in matched)

    def delete_entries(self, **filters: Any) -> int:
        """Delete the flows matching ``filters``; 0 deleted is not an error.

        conntrack 1.4.7 aborts a ``-D`` when a matching flow vanishes
        between its dump and its delete (a timeout, another deleter); the
        delete is then run again, since deleting is idempotent.

        :returns: the number of flows deleted.
        """
        return self._run_deletes(commands.DeleteCommand(**filters))

    def delete(self, entries: Iterable[Entry]) -> int:
        """Delete these exact flows (tuple and zone) in as few steps as possible.

        Over netlink every flow is one kernel request and no table dump;
        through the CLI the flows go as ``-D`` lines of ``-R`` batches.
        Flows already gone are skipped, never an error.

        :returns: how many flows this call deleted.
        """
        flows = list(dict.fromkeys(entries))
        if not flows:
            return 0
        outcomes = self._exact_delete(flows)
        if outcomes is not None:
            return outcomes
        return self._delete_batched([commands.DeleteCommand.for_entry(e) for e in flows])

    def flush(self, zone: int | None = None) -> int:
        """Empty the table, or one zone; return how many flows went."""
        if zone is not None:
            return self.flush_zone(zone)
        before = self.count()
        self.executor.execute(commands.FlushCommand(), namespace=self.namespace)
        return before

    # -- planned deletes -------------------------------------------------

    def plan_deletes(self, requests: Iterable[Mapping[str, Any]]) -> DeletePlan:
        """Merge deletion requests into the cheapest plan.

        Identical requests merge, a request covered by a broader one goes,
        a request for a whole zone becomes ``-D -w ZONE``.  With a netlink
        backend, several requests cost one dump in all.

        :raises InvalidArgumentError: for an invalid request (before any
            process starts).
        """
        received = list(requests)
        for request in received:
            commands.DeleteCommand(**dict(request))
        unique = list({_freeze(r): dict(r) for r in received}.values())
        kept = _drop_subsumed(_join_families(unique))
        zone_wide = tuple(sorted(r["zone"] for r in kept if _is_zone_wide(r)))
        rest = tuple(r for r in kept if not _is_zone_wide(r))
        strategy = "cli"
        if len(rest) + len(zone_wide) > 1 and self._netlink_usable() and all(
                _python_matchable(r) for r in rest):
            strategy = "dump"
        return DeletePlan(requests=rest, zone_wide=zone_wide, strategy=strategy,
                          received=len(received), merged=len(received) - len(unique),
                          dropped=len(unique) - len(kept), batch_size=self.batch_size)

    def execute_plan(self, plan: DeletePlan) -> DeleteReport:
        """Run a :class:`DeletePlan`; return how many flows it deleted."""
        start = time.monotonic()
        if plan.strategy == "dump":
            deleted = self._execute_by_dump(plan)
        else:
            lines = [commands.DeleteCommand(zone=z) for z in plan.zone_wide]
            lines += [commands.DeleteCommand(**dict(r)) for r in plan.requests]
            deleted = self._delete_batched(lines)
        return DeleteReport(plan=plan, deleted=deleted, seconds=time.monotonic() - start)

    def delete_many(self, requests: Iterable[Mapping[str, Any]]) -> DeleteReport:
        """Plan and run many deletion requests at once."""
        return self.execute_plan(self.plan_deletes(requests))

    # -- security-group style deletes ------------------------------------

    def delete_by_rule(  # noqa: PLR0917 - the positional order agents already use
        self,
        zone: int | None,
        direction: str,
        ethertype: str,
        protocol: str | int | None,
        port_range_min: int | None,
        port_range_max: int | None,
        remote_ip_prefix: str | None,
        ips: Iterable[str],
    ) -> int:
        """Delete the flows a removed security-group rule had allowed.

        ``direction`` is ``ingress`` (flows towards ``ips``) or ``egress``
        (flows from them); ``ethertype`` ``IPv4`` or ``IPv6`` keeps the
        families apart; ``protocol`` 0 or None means any.  ``zone`` is
        required: pass None explicitly to delete across every zone.

        :returns: the number of flows deleted.
        """
        requests = rule_requests(zone, direction, ethertype, protocol, port_range_min,
                                 port_range_max, remote_ip_prefix, ips)
        return self.delete_many(requests).deleted if requests else 0

    def delete_by_remote_ips(self, zone: int | None, remote_ips: Iterable[str],
                             mark: int | None = None) -> int:
        """Delete the flows to or from ``remote_ips`` in ``zone``.

        :returns: the number of flows deleted.
        """
        requests = remote_ip_requests(zone, remote_ips, mark)
        return self.delete_many(requests).deleted if requests else 0

    # -- internals -------------------------------------------------------

    def _run_count(self, command: Any) -> int:
        result = self.executor.execute(command, namespace=self.namespace)
        return int(result.count or 0)

    def _delete_batched(self, lines: Sequence[Any]) -> int:
        return sum(self._run_deletes(chunk[0] if len(chunk) == 1 else commands.BatchCommand(chunk))
                   for chunk in _chunks(list(lines), self.batch_size))

    def _run_deletes(self, command: Any) -> int:
        """Run a ``-D`` (or a ``-R`` batch of them); return how many flows went.

        conntrack 1.4.7 aborts when a matching flow vanishes between its
        table dump and its delete (it timed out, another process deleted
        it).  Deleting is idempotent, so the command then runs again; the
        flows the aborted run deleted were printed and are counted.
        """
        deleted = 0
        for attempt in range(1, VANISHED_RETRIES + 1):
            try:
                result = self.executor.execute(command, namespace=self.namespace)
            except exc.CommandError as err:
                if VANISHED_MESSAGE not in err.stderr or attempt == VANISHED_RETRIES:
                    raise
                deleted += _printed_lines(err.stdout)
                LOG.info("a flow vanished during %s; deleting again", command)
                continue
            if command.kind == "batch":
                # -R prints no summary; every deleted flow is one stdout line.
                return deleted + _printed_lines(result.stdout)
            return deleted + int(result.count or 0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _netlink_usable(self) -> bool:
        if self.exact_delete_backend == "cli":
            return False
        return callable(getattr(self.executor, "delete_flows", None))

    def _exact_delete(self, flows: Sequence[Entry]) -> int | None:
        if not self._netlink_usable():
            if self.exact_delete_backend == "netlink":
                raise exc.ConntrackUnavailableError(
                    ("netlink",), None, "", "the executor offers no netlink deletes")
            return None
        try:
            outcomes = self.executor.delete_flows(flows, namespace=self.namespace)
        except exc.ConntrackUnavailableError:
            if self.exact_delete_backend == "netlink":
                raise
            LOG.warning("netlink deletes refused in namespace %s; falling back to "
                        "conntrack -D batches", self.namespace)
            return None
        failed = [(f, e) for f, e in zip(flows, outcomes, strict=True) if e not in (0, 2)]
        if failed:
            flow, errno_ = failed[0]
            raise exc.CommandError(("netlink", "delete"), errno_, "",
                                   f"{len(failed)} deletes failed, first {flow}: errno {errno_}")
        return sum(1 for e in outcomes if e == 0)

    def _execute_by_dump(self, plan: DeletePlan) -> int:
        # Index the requests by zone so each entry meets only the requests
        # that can match it; requests without a zone apply to every entry.
        by_zone: dict[int | None, list[matching.Predicate]] = {}
        for request in plan.requests:
            by_zone.setdefault(request.get("zone"), []).append(matching.compile_filters(request))
        anywhere = by_zone.pop(None, [])
        zones = set(plan.zone_wide)
        doomed = [e for e in self.iter_entries()
                  if e.zone in zones
                  or any(p(e) for p in by_zone.get(e.zone, ()))
                  or any(p(e) for p in anywhere)]
        deleted = self._exact_delete(doomed)
        if deleted is None:  # netlink refused between planning and now
            return self._delete_batched(
                [commands.DeleteCommand(zone=z) for z in plan.zone_wide]
                + [commands.DeleteCommand(**dict(r)) for r in plan.requests])
        return deleted


def _counted_events(lines: Iterable[str], count: int | None) -> Iterator[Event]:
    """Parse event lines, stop after ``count`` events, and stop the capture then."""
    seen = 0
    try:
        for event in parser.parse_events(lines):
            yield event
            seen += 1
            if count is not None and seen >= count:
                return
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()


def _list_command(filters: Mapping[str, Any]) -> commands.ListCommand:
    """Build the list command of ``filters``, refusing an xml listing.

    The entry parser reads the text format only; an xml dump would parse to
    no entry at all, which must not pass for an empty table.
    """
    command = commands.ListCommand(**filters)
    if "xml" in command.output:
        raise exc.InvalidArgumentError(
            "output", filters.get("output"),
            "xml is not parsed into entries; list without it")
    return command


def _options(conf: Any) -> Any:
    """Return the ``[conntrack_lib]`` option group, registering it if needed."""
    from oslo_config import cfg  # noqa: PLC0415 - only when a default is needed

    from conntrack_lib import opts  # noqa: PLC0415

    conf = cfg.CONF if conf is None else conf
    opts.register_opts(conf)
    return conf[opts.GROUP]


def _configured_zone_store(conf: Any) -> SQLiteZoneStore | None:
    """Return the store the ``zone_store_path`` option names, or None for memory."""
    group = _options(conf)
    if not group.zone_store_path:
        return None
    return SQLiteZoneStore(group.zone_store_path,
                           migrate_from=group.zone_store_migrate_from or None)


def rule_requests(  # noqa: PLR0917 - mirrors ConntrackHelper.delete_by_rule
    zone: int | None,
    direction: str,
    ethertype: str,
    protocol: str | int | None,
    port_range_min: int | None,
    port_range_max: int | None,
    remote_ip_prefix: str | None,
    ips: Iterable[str],
) -> list[dict[str, Any]]:
    """Expand one security-group rule into filtered deletion requests.

    :raises InvalidArgumentError: for an unknown direction or ethertype, or
        a remote prefix of the other family.
    """
    if direction not in ("ingress", "egress"):
        raise exc.InvalidArgumentError("direction", direction, "must be ingress or egress")
    family = {"IPv4": constants.IPV4, "IPv6": constants.IPV6}.get(ethertype)
    if family is None:
        raise exc.InvalidArgumentError("ethertype", ethertype, "must be IPv4 or IPv6")
    version = 4 if family == constants.IPV4 else 6
    local_key, remote_key = ("dst", "src") if direction == "ingress" else ("src", "dst")
    base: dict[str, Any] = {"family": family}
    if zone is not None:
        base["zone"] = zone
    if protocol not in (None, 0, "0", "any"):
        base["proto"] = _icmp_for_family(protocol, version)
    if remote_ip_prefix:
        if _ip_version(remote_ip_prefix) != version:
            raise exc.InvalidArgumentError("remote_ip_prefix", remote_ip_prefix,
                                           f"is not an {ethertype} prefix")
        base[remote_key] = remote_ip_prefix
    ports = _port_filters(base.get("proto"), port_range_min, port_range_max)
    requests = []
    for ip in dict.fromkeys(ips):
        if _ip_version(ip) != version:
            continue  # the other family's flows are not this rule's
        for port in ports:
            requests.append({**base, local_key: ip, **port})
    return requests


def remote_ip_requests(zone: int | None, remote_ips: Iterable[str],
                       mark: int | None = None) -> list[dict[str, Any]]:
    """Expand remote addresses into deletes of flows to and from each one."""
    requests = []
    for ip in dict.fromkeys(remote_ips):
        base: dict[str, Any] = {"family": constants.IPV4 if _ip_version(ip) == 4
                                else constants.IPV6}
        if zone is not None:
            base["zone"] = zone
        if mark is not None:
            base["mark"] = mark
        requests.append({**base, "src": ip})
        requests.append({**base, "dst": ip})
    return requests


#: A port range wider than this is deleted without a port filter (a
#: superset: the flows still allowed re-establish) rather than one request
#: per port.
MAX_EXPANDED_PORTS = 64


def _port_filters(proto: Any, low: int | None, high: int | None) -> list[dict[str, Any]]:
    if proto is None or low is None or str(proto) not in constants.PORT_PROTOCOLS:
        return [{}]
    high = low if high is None else high
    if high - low + 1 > MAX_EXPANDED_PORTS:
        return [{}]
    return [{"dport": port} for port in range(low, high + 1)]


def _icmp_for_family(protocol: str | int, version: int) -> str | int:
    if version == 6 and protocol in ("icmp", 1, "1"):
        return "icmpv6"
    return protocol


def _ip_version(text: str) -> int:
    try:
        return int(netaddr.IPNetwork(text).version)
    except (netaddr.AddrFormatError, ValueError, TypeError) as err:
        raise exc.InvalidArgumentError("ip", text, "not an IP address or prefix") from err


def _set_keys(request: Mapping[str, Any]) -> set[str]:
    return {k for k, v in request.items() if v is not None}


def _is_zone_wide(request: Mapping[str, Any]) -> bool:
    return _set_keys(request) == {"zone"}


def _join_families(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace an IPv4 and an IPv6 request for the same whole zone by one."""
    by_zone: dict[int, set[str]] = {}
    for r in requests:
        if _set_keys(r) == {"zone", "family"}:
            by_zone.setdefault(r["zone"], set()).add(r["family"])
    whole = {z for z, fams in by_zone.items() if fams >= set(constants.FAMILIES)}
    if not whole:
        return requests
    joined = [r for r in requests
              if not (_set_keys(r) == {"zone", "family"} and r["zone"] in whole)]
    return joined + [{"zone": z} for z in sorted(whole) if {"zone": z} not in joined]


def _freeze(request: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    def hashable(v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v
    return tuple(sorted((k, hashable(v)) for k, v in request.items() if v is not None))


def _drop_subsumed(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop every request another (different) request of the list covers.

    A request with a zone can only be covered by one of the same zone or
    one without a zone, so candidates are looked up by zone.  Of two
    requests that cover each other, the first stays.
    """
    by_zone: dict[Any, list[int]] = {}
    for i, request in enumerate(requests):
        by_zone.setdefault(request.get("zone"), []).append(i)
    kept = []
    for i, narrow in enumerate(requests):
        candidates = by_zone.get(narrow.get("zone"), []) + (
            by_zone.get(None, []) if narrow.get("zone") is not None else [])
        covered = any(j != i and _covers(requests[j], narrow)
                      and not (j > i and _covers(narrow, requests[j]))
                      for j in candidates)
        if not covered:
            kept.append(narrow)
    return kept


def _covers(broad: Mapping[str, Any], narrow: Mapping[str, Any]) -> bool:
    try:
        return matching.subsumes(broad, narrow)
    except (ValueError, KeyError, netaddr.AddrFormatError):
        return False


def _python_matchable(request: Mapping[str, Any]) -> bool:
    try:
        matching.compile_filters(request)
    except (ValueError, KeyError):
        return False
    return True


def _exact_match(entry: Entry) -> dict[str, Any]:
    proto: str | int = entry.proto if entry.proto != "unknown" else entry.protonum
    match: dict[str, Any] = {"family": entry.family, "proto": proto,
                             "src": str(entry.original.src), "dst": str(entry.original.dst)}
    for name in ("sport", "dport", "icmp_type", "icmp_code", "icmp_id"):
        value = getattr(entry.original, name)
        if value is not None:
            match[name] = value
    return match


def _printed_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
