"""ConntrackHelper: zones per owner and every table operation, batched.

One helper serves one network namespace.  It keeps the zone map of its
owners (ports, networks, routers) in a :class:`~conntrack_lib.zones.ZoneAllocator`
and runs table operations through an executor, which by default is the
privsep daemon.  Creates go out as ``-R`` batches; deletes go through a
small planner, because every ``conntrack -D`` dumps the whole table.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from oslo_log import log as logging

from conntrack_lib import (
    capabilities,
    commands,
    constants,
    matching,
    netlink_create,
    parser,
    planner,
)
from conntrack_lib import exceptions as exc
from conntrack_lib.deleting import DeletingMixin
from conntrack_lib.executing import CommandRunner, EventStreamer, FlowCreator, ReleaseReporter
from conntrack_lib.models import CpuStats, Entry, Event
from conntrack_lib.planner import DeletePlan, DeleteReport
from conntrack_lib.rules import SecurityGroupRule, remote_ip_requests
from conntrack_lib.values import FieldMap, Fields, FilterValue
from conntrack_lib.zones import AnyZoneStore, SQLiteZoneStore, ZoneAllocator

if TYPE_CHECKING:
    from oslo_config import cfg

LOG = logging.getLogger(__name__)
#: Longest capture :meth:`ConntrackHelper.events` runs, in seconds.
MAX_EVENTS_DURATION = 3600.0

#: conntrack 1.4.7 aborts a bulk ``-U`` after about 256 updates (ENOBUFS).
UPDATE_BULK_LIMIT = 200



class ConntrackHelper(DeletingMixin):
    """Allocate conntrack zones and manage the table of one namespace.

    :param namespace: network namespace name, or None for the caller's own.
    :param executor: an :class:`~conntrack_lib.executing.Executor`; defaults
        to a :class:`~conntrack_lib.executor.PrivsepExecutor`.  One that is
        only a :class:`~conntrack_lib.executing.CommandRunner` works too: the
        helper then runs everything through conntrack processes.
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
    :param cost_model: the :class:`~conntrack_lib.planner.CostModel` that
        picks each deletion's strategy.
    :raises InvalidZoneError: for a range outside 1..65535.
    :raises ZoneStoreError: when the zone store is unsafe or unusable.
    """

    def __init__(
        self,
        namespace: str | None = None,
        executor: CommandRunner | None = None,
        zone_range: tuple[int, int] = (constants.MIN_CONNTRACK_ZONE_ID,
                                       constants.MAX_CONNTRACK_ZONE_ID),
        zone_store: AnyZoneStore | None = None,
        *,
        reserved: Iterable[int] = (),
        batch_size: int | None = None,
        exact_delete_backend: str | None = None,
        conf: cfg.ConfigOpts | None = None,
        cost_model: planner.CostModel = planner.DEFAULT_COST_MODEL,
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
        self.cost_model = cost_model
        #: Flows in the table when last seen whole; the cost model's input.
        self._table_size: int | None = None

    def __repr__(self) -> str:
        return f"ConntrackHelper(namespace={self.namespace!r}, executor={self.executor!r})"

    # -- the release ---------------------------------------------------------

    @property
    def conntrack_version(self) -> capabilities.Release:
        """Return the release of the conntrack binary, e.g. ``(1, 4, 7)``.

        Asked once per executor (``conntrack --version``; through the
        daemon for the privsep executor).

        :raises UnsupportedReleaseError: a release older than 1.4.5, or
            output that names none.
        """
        if not isinstance(self.executor, ReleaseReporter):
            # An executor of the caller's that runs no binary (a recorder,
            # an older fake): it behaves as the newest release.
            return capabilities.LATEST.release
        return self.executor.release()

    @property
    def capabilities(self) -> capabilities.Capabilities:
        """Return what the running release can do (see :mod:`~conntrack_lib.capabilities`).

        :raises UnsupportedReleaseError: a release older than 1.4.5.
        """
        return capabilities.for_release(self.conntrack_version)

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
        :raises CommandError: when the table dump fails.
        :raises ZoneStoreError: when the zone store cannot be updated.
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

        The first call recovers the zones that have live flows but no
        owner (see :meth:`recover`), so they are not handed out.

        :param key: the owner (port, network, router), a non-empty str
            without NUL or newline.
        :returns: the zone, the same one on every call until released.
        :raises InvalidArgumentError: for a bad key.
        :raises ZoneExhaustedError: when no zone is free in the range.
        :raises ZoneStoreError: when the zone store cannot be updated.
        :raises CommandError: when the first call's table dump fails.
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
        :raises CommandError: when the first call's table dump fails.
        """
        wanted = list(keys)
        if not self._recovered:
            self.recover()
        return self._allocator.allocate_many(wanted)

    def get_zone(self, key: str) -> int | None:
        """Return the zone of ``key``, or None.

        :param key: the owner.
        :returns: the zone, or None when ``key`` has none.
        :raises InvalidArgumentError: for a bad key.
        :raises ZoneStoreError: when the zone store cannot be read.
        """
        return self._allocator.get(key)

    def release_zone(self, key: str, flush: bool = False) -> int | None:
        """Release the zone of ``key``; with ``flush`` delete its flows first.

        The zone becomes free only after its flows are gone, so a failed
        flush leaves it allocated.

        :param key: the owner.
        :param flush: delete the zone's flows before releasing it.
        :returns: the released zone, or None if ``key`` had none.
        :raises InvalidArgumentError: for a bad key.
        :raises CommandError: when the flush fails; the zone stays allocated.
        :raises ZoneStoreError: when the zone store cannot be updated.
        """
        zone = self._allocator.get(key)
        if zone is None:
            return None
        if flush:
            self.delete_entries(zone=zone)
        self._allocator.release(key)
        return zone

    def zones(self) -> Mapping[str, int]:
        """Return a copy of the key-to-zone map.

        :returns: key to zone, for every key that owns one.
        :raises ZoneStoreError: when the zone store cannot be read.
        """
        return self._allocator.items()

    def flush_zone(self, zone: int) -> int:
        """Delete every flow of ``zone`` and stop holding it if it was held.

        :param zone: the zone to empty.
        :returns: the number of flows deleted.
        :raises InvalidArgumentError: for a zone outside 0..65535.
        :raises CommandError: when conntrack or netlink fails; a held zone
            stays held.
        :raises ZoneStoreError: when the zone store cannot be updated.
        """
        deleted = self.delete_entries(zone=zone)
        if zone in self._allocator.held():
            self._allocator.unhold(zone)
        return deleted


    # -- reading ---------------------------------------------------------

    def iter_entries(self, **filters: FilterValue) -> Iterator[Entry]:
        """Yield the entries matching ``filters`` as they are parsed.

        :param filters: the filter keywords of the public contract, plus
            ``output`` (``-o`` keywords; xml is refused).
        :returns: an iterator of :class:`~conntrack_lib.models.Entry`.
        :raises InvalidArgumentError: for a bad filter or an xml ``output``,
            before any process.
        :raises CommandError: when conntrack fails.
        """
        fields, output, predicate = self._list_filters(filters)
        lines = self._listing(fields, output)
        entries = parser.iter_entries(lines)
        try:
            if predicate is None:
                yield from entries
            else:
                yield from (e for e in entries if predicate(e))
        finally:
            # Closing this generator releases the daemon's copy at once.
            _close(lines)

    def list_entries(self, **filters: FilterValue) -> list[Entry]:
        """Return the entries matching ``filters``.

        :param filters: the filter keywords of the public contract, plus
            ``output`` (``-o`` keywords; xml is refused).
        :returns: the matching entries.
        :raises InvalidArgumentError: for a bad filter or an xml ``output``,
            before any process.
        :raises CommandError: when conntrack fails.
        """
        fields, output, predicate = self._list_filters(filters)
        # parse_entries scans blocks of lines as they arrive, cheaper than
        # building the list from iter_entries(...) line by line.
        entries = parser.parse_entries(self._listing(fields, output))
        if not filters:
            self._table_size = len(entries)
        return entries if predicate is None else [e for e in entries if predicate(e)]

    def _list_filters(self, filters: Mapping[str, FilterValue]
                      ) -> tuple[Fields, tuple[str, ...], matching.Predicate | None]:
        """Return the ``-L`` filters and output keywords, and the predicate to apply after.

        conntrack filters what it gets right on the running release; the
        rest (per-direction zones, zone 0, NAT addresses, mixed status
        words, and what an older release misreads) is matched here, on a
        dump that shows what it needs.
        """
        given = dict(filters)
        output = _text_output(given.pop("output", None))
        request = planner.Request.build(given, kind="list")
        caps = self.capabilities
        if request.cli_ok_for(caps):
            return request.cli_filters(caps), output, None
        cli, engine = request.split(caps)
        output = tuple(dict.fromkeys(output + matching.needs(engine)))
        return cli, output, matching.compile_filters(engine)

    def _listing(self, fields: FieldMap, output: Sequence[str]) -> Iterator[str]:
        """Return the lines of ``conntrack -L`` with ``fields``, whatever the release.

        Where the release lists one family only without ``-f`` (1.4.6),
        the lines are those of one ``-L`` per family, one after the other.
        """
        built = [commands.ListCommand(**f, output=output)
                 for f in planner.listings(fields, self.capabilities)]
        if len(built) == 1:
            return iter(self.executor.iter_lines(built[0], namespace=self.namespace))
        return self._chained_lines(built)

    def _chained_lines(self, listings: Sequence[commands.ListCommand]) -> Iterator[str]:
        for listing in listings:
            lines = self.executor.iter_lines(listing, namespace=self.namespace)
            try:
                yield from lines
            finally:
                # An early stop closes the listing that runs (the daemon's copy).
                _close(lines)

    def count(self, **filters: FilterValue) -> int:
        """Return how many entries match ``filters`` (all with none).

        :param filters: the filter keywords of the public contract.
        :returns: the number of matching flows.
        :raises InvalidArgumentError: for a bad filter, before any process.
        :raises CommandError: when conntrack fails.
        """
        if not filters:
            result = self.executor.execute(commands.CountCommand(), namespace=self.namespace)
            total = int(result.count if result.count is not None
                        else parser.parse_count(result.stdout))
            self._table_size = total
            return total
        return sum(1 for _ in self.iter_entries(**filters))

    def events(self, *, duration: float | None = None, count: int | None = None,
               event_mask: Sequence[str] = ("ALL",), **filters: FilterValue) -> Iterator[Event]:
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
        command = commands.EventsCommand.from_fields(
            {**filters, "event_mask": event_mask, "duration": duration})
        caps = self.capabilities
        given = command.get("family")
        family = given if isinstance(given, str) else None
        fields = planner.prefixes_for_release(command.fields, caps)
        if family is not None and not caps.events_family:
            # Before 1.4.7, -E refuses -f: watch every family, keep one here.
            del fields["family"]
        else:
            family = None
        if fields != command.fields:
            command = command.with_filters(fields)
        if isinstance(self.executor, EventStreamer):
            lines: Iterable[str] = self.executor.iter_events(command, namespace=self.namespace)
        else:  # an executor without streaming (a fake): the whole capture at once
            lines = self.executor.execute(command, namespace=self.namespace).stdout.splitlines()
        return _counted_events(lines, count, family)

    def stats(self) -> list[CpuStats]:
        """Return the per-CPU statistics.

        :returns: one :class:`~conntrack_lib.models.CpuStats` per CPU.
        :raises CommandError: when conntrack fails.
        """
        result = self.executor.execute(commands.StatsCommand(), namespace=self.namespace)
        return parser.parse_stats(result.stdout)

    # -- writing ---------------------------------------------------------

    def create_entry(self, **fields: FilterValue) -> int:
        """Create one flow.

        :param fields: the keywords naming one flow, plus ``timeout``
            (required) and optional ``mark``, ``status``, zones, NAT.
        :returns: 1, the number of flows created.
        :raises InvalidArgumentError: for a bad or missing field.
        :raises EntryExistsError: when the flow exists in that zone.
        :raises CommandError: when conntrack fails otherwise.
        """
        if "timeout" not in fields:
            raise exc.InvalidArgumentError("timeout", None, "a new flow needs a timeout")
        command = commands.CreateCommand.from_fields(fields)
        if not self.capabilities.load_file:
            # Before 1.4.7 conntrack -I refuses a flow naming its reply
            # addresses without reply ports or ICMP fields; netlink create
            # sends what 1.4.7 sends.
            return self._create_without_load_file([command])
        self.executor.execute(command, namespace=self.namespace)
        return 1

    def create_entries(self, flows: Iterable[Mapping[str, FilterValue]]) -> int:
        """Create many flows, ``batch_size`` per ``conntrack -R`` process.

        All flows are validated before the first process starts.  A
        duplicate stops its batch (conntrack aborts at the first kernel
        error) and raises :class:`~conntrack_lib.exceptions.EntryExistsError`.  Releases without
        ``-R`` (1.4.5, 1.4.6) create the flows in one batched ctnetlink
        exchange when the executor has ``create_flows``: every flow is
        tried, and the first failure raises.

        :param flows: one mapping of :meth:`create_entry` fields per flow.
        :returns: the number of flows created.
        :raises InvalidArgumentError: for a bad flow, before any process.
        :raises EntryExistsError: for a flow that exists.
        :raises CommandError: when conntrack fails otherwise.
        """
        built = [commands.CreateCommand.from_fields(flow) for flow in flows]
        if not built:
            return 0
        if self.capabilities.load_file:
            for chunk in commands.load_chunks(built, self.batch_size):
                self.executor.execute(commands.BatchCommand(chunk), namespace=self.namespace)
            return len(built)
        return self._create_without_load_file(built)

    def _create_without_load_file(self, built: Sequence[commands.CreateCommand]) -> int:
        """Create flows on a release without ``-R``: one netlink batch, else one process each.

        Flows netlink create does not encode (NAT, labels) take the process path.
        """
        by_process: Sequence[commands.CreateCommand] = built
        if isinstance(self.executor, FlowCreator):
            by_netlink = [command for command in built if netlink_create.encodable(command)]
            by_process = [command for command in built if not netlink_create.encodable(command)]
            outcomes = (self.executor.create_flows(by_netlink, namespace=self.namespace)
                        if by_netlink else [])
            for command, errno_ in zip(by_netlink, outcomes, strict=True):
                if errno_:
                    raise netlink_create.create_error(errno_, command)
        if by_process:
            LOG.warning("conntrack %s has no -R and no netlink create for these flows: "
                        "creating %d flows one process each", self.capabilities.version,
                        len(by_process))
        for command in by_process:
            self.executor.execute(command, namespace=self.namespace)
        return len(built)

    def update_entries(self, match: Mapping[str, FilterValue], **changes: FilterValue) -> int:
        """Update the flows matching ``match``; return how many changed.

        The flows are listed first (with their ids) and matched as
        :mod:`~conntrack_lib.matching` defines, so ``id`` selects exactly
        one flow.  conntrack 1.4.7 cannot update flows outside zone 0 and
        aborts bulk updates after about 256 entries, so this refuses zoned
        matches and updates large or Python-matched sets one flow (tuple
        and id) at a time.

        :param match: filter keywords of ``-U`` (``id`` included).
        :param changes: ``timeout``, ``mark``, ``status``, ``state``,
            ``label_add`` or ``label_del``.
        :returns: the number of flows updated.
        :raises InvalidArgumentError: for a bad keyword, or when a matching
            flow is in a zone.
        :raises CommandError: when conntrack fails.
        """
        command = commands.UpdateCommand(match=match, **changes)
        wanted = command.match
        listed = {k: v for k, v in wanted.items() if k != "id"}
        predicate = matching.compile_filters(wanted)
        output = tuple(dict.fromkeys(("id", *matching.needs(wanted))))
        matched = [e for e in self.list_entries(**listed, output=output) if predicate(e)]
        zoned = [e for e in matched if any(matching.direction_zones(e))]
        if zoned:
            raise exc.InvalidArgumentError(
                "match", dict(match),
                f"{len(zoned)} matching flows are in non-zero zones, which conntrack "
                "1.4.7 cannot update; delete and re-create them instead")
        if not matched:
            return 0
        request = planner.Request.build(listed, "list")
        caps = self.capabilities
        # One -U only where it selects what the list did: no 1.4.5 prefix
        # rewritten as a mask (-U has no --mask-src).
        if (len(matched) <= UPDATE_BULK_LIMIT and request.cli_ok_for(caps)
                and request.cli_filters(caps) == request.filters):
            return self._run_count(command)
        return sum(self._run_count(commands.UpdateCommand(match=_exact_match(e), **changes))
                   for e in matched)

    # -- internals -------------------------------------------------------

    def _run_count(self, command: commands.Command) -> int:
        result = self.executor.execute(command, namespace=self.namespace)
        return int(result.count or 0)

def _counted_events(lines: Iterable[str], count: int | None,
                    family: str | None = None) -> Iterator[Event]:
    """Parse event lines (of ``family`` only, if given), stop after ``count`` events."""
    seen = 0
    try:
        for event in parser.parse_events(lines):
            if family is not None and event.entry.family != family:
                continue
            yield event
            seen += 1
            if count is not None and seen >= count:
                return
    finally:
        _close(lines)


def _close(lines: Iterable[object]) -> None:
    """Close a stream of lines that can be closed (a generator, a daemon listing)."""
    close = getattr(lines, "close", None)
    if close is not None:
        close()


def _text_output(output: FilterValue) -> tuple[str, ...]:
    """Return the ``-o`` keywords of a listing, refusing xml.

    The entry parser reads the text format only; an xml dump would parse to
    no entry at all, which must not pass for an empty table.
    """
    keywords = commands.ListCommand.from_fields({"output": output or ()}).output
    if "xml" in keywords:
        raise exc.InvalidArgumentError(
            "output", output, "xml is not parsed into entries; list without it")
    return tuple(keywords)


def _options(conf: cfg.ConfigOpts | None) -> cfg.ConfigOpts.GroupAttr:
    """Return the ``[conntrack_lib]`` option group, registering it if needed."""
    from oslo_config import cfg  # noqa: PLC0415 - only when a default is needed

    from conntrack_lib import opts  # noqa: PLC0415

    conf = cfg.CONF if conf is None else conf
    opts.register_opts(conf)
    return conf[opts.GROUP]


def _configured_zone_store(conf: cfg.ConfigOpts | None) -> SQLiteZoneStore | None:
    """Return the store the ``zone_store_path`` option names, or None for memory."""
    group = _options(conf)
    if not group.zone_store_path:
        return None
    return SQLiteZoneStore(group.zone_store_path,
                           migrate_from=group.zone_store_migrate_from or None)


def _exact_match(entry: Entry) -> dict[str, FilterValue]:
    proto: str | int = entry.proto if entry.proto != "unknown" else entry.protonum
    match: dict[str, FilterValue] = {"family": entry.family, "proto": proto,
                             "src": str(entry.original.src), "dst": str(entry.original.dst)}
    for name in ("sport", "dport", "icmp_type", "icmp_code", "icmp_id"):
        value = getattr(entry.original, name)
        if value is not None:
            match[name] = value
    if entry.id is not None:
        match["id"] = entry.id
    return match


__all__ = ["ConntrackHelper", "DeletePlan", "DeleteReport", "SecurityGroupRule",
           "remote_ip_requests"]
