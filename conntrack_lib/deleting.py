"""The deleting half of ConntrackHelper: filtered, planned and exact deletes.

Every ``conntrack -D`` dumps the whole table inside conntrack, so deletes go
through :mod:`conntrack_lib.planner`: requests are merged and each plan
picks ``-D`` lines (``-R`` batches where the release has them) or one dump
matched here and deleted exactly (over netlink when the executor offers it).
:class:`DeletingMixin` holds these methods; :class:`ConntrackHelper
<conntrack_lib.helper.ConntrackHelper>` is the only class that mixes it in.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from oslo_log import log as logging

from conntrack_lib import capabilities, commands, matching, parser, planner
from conntrack_lib import exceptions as exc
from conntrack_lib.executing import CommandRunner, ExactDeleter
from conntrack_lib.models import Entry
from conntrack_lib.rules import (
    SecurityGroupRule,
    remote_ip_requests,
    rule_requests,
)
from conntrack_lib.values import FieldMap, FilterValue

LOG = logging.getLogger(__name__)
_T = TypeVar("_T")
#: What ``-D`` prints when a flow vanished between its dump and its delete.
VANISHED_MESSAGE = "such conntrack doesn't exist"
VANISHED_RETRIES = 3


class DeletingMixin:
    """Delete flows by filters, by plan, by rule or exactly.

    The class using it provides the attributes and methods declared below
    (the executor, the namespace, the release, the table listing).
    """

    executor: CommandRunner
    namespace: str | None
    batch_size: int
    exact_delete_backend: str
    cost_model: planner.CostModel
    _table_size: int | None

    @property
    def capabilities(self) -> capabilities.Capabilities:
        """Return the capabilities of the running release."""
        raise NotImplementedError  # pragma: no cover - ConntrackHelper overrides it

    def _listing(self, fields: FieldMap, output: Sequence[str]) -> Iterator[str]:
        raise NotImplementedError  # pragma: no cover - ConntrackHelper overrides it

    def count(self, **filters: FilterValue) -> int:
        """Return how many entries match ``filters``.

        :param filters: the filter keywords of the public contract.
        :returns: the number of matching flows.
        """
        raise NotImplementedError  # pragma: no cover - ConntrackHelper overrides it

    def flush_zone(self, zone: int) -> int:
        """Delete every flow of ``zone``.

        :param zone: the zone to empty.
        :returns: the number of flows deleted.
        """
        raise NotImplementedError  # pragma: no cover - ConntrackHelper overrides it

    def delete_entries(self, **filters: FilterValue) -> int:
        """Delete the flows matching ``filters``; 0 deleted is not an error.

        :param filters: the filter keywords of the public contract (plus
            ``id``); none deletes every flow.
        :returns: the number of flows deleted.
        :raises InvalidArgumentError: for a bad filter, before any process.
        :raises CommandError: when conntrack fails.
        """
        return self.delete_many([filters]).deleted

    def delete_flows(self, entries: Iterable[Entry]) -> int:
        """Delete these exact flows (tuple, zone and id when known).

        Over netlink every flow is one kernel request and no table dump;
        through the CLI the flows go as ``-D`` lines of ``-R`` batches.
        Flows already gone are skipped, never an error.

        :param entries: parsed flows, for example from
            :meth:`~conntrack_lib.helper.ConntrackHelper.list_entries`.
        :returns: how many flows this call deleted.
        :raises InvalidArgumentError: for something that is not an entry.
        :raises CommandError: when conntrack or netlink fails.
        """
        flows = list(dict.fromkeys(entries))
        for flow in flows:
            if not isinstance(flow, Entry):
                raise exc.InvalidArgumentError("entries", flow, "expected an Entry")
        if not flows:
            return 0
        outcomes = self._exact_delete(flows)
        if outcomes is not None:
            return outcomes
        return self._delete_batched([_exact_command(e) for e in flows])

    def delete(self, entries: Iterable[Entry]) -> int:
        """Delete exact flows (deprecated alias of :meth:`delete_flows`).

        :param entries: parsed flows.
        :returns: how many flows went.
        :raises InvalidArgumentError: for something that is not an entry.
        :raises CommandError: when conntrack or netlink fails.
        """
        warnings.warn("ConntrackHelper.delete is deprecated; use delete_flows",
                      DeprecationWarning, stacklevel=2)
        return self.delete_flows(entries)

    def flush_table(self, zone: int | None = None) -> int:
        """Empty the table, or one zone.

        :param zone: the zone to empty, or None for every flow.
        :returns: how many flows went.
        :raises InvalidArgumentError: for a zone outside 0..65535.
        :raises CommandError: when conntrack fails.
        :raises ZoneStoreError: when a held zone cannot be freed in the
            zone store (see
            :meth:`~conntrack_lib.helper.ConntrackHelper.flush_zone`).
        """
        if zone is not None:
            return self.flush_zone(zone)
        before = self.count()
        self.executor.execute(commands.FlushCommand(), namespace=self.namespace)
        self._table_size = 0
        return before

    def flush(self, zone: int | None = None) -> int:
        """Empty the table (deprecated alias of :meth:`flush_table`).

        :param zone: the zone to empty, or None for every flow.
        :returns: how many flows went.
        :raises InvalidArgumentError: for a zone outside 0..65535.
        :raises CommandError: when conntrack fails.
        """
        warnings.warn("ConntrackHelper.flush is deprecated; use flush_table",
                      DeprecationWarning, stacklevel=2)
        return self.flush_table(zone)

    # -- planned deletes -------------------------------------------------

    def plan_deletes(self, requests: Iterable[Mapping[str, FilterValue] | planner.Request]
                     ) -> planner.DeletePlan:
        """Merge deletion requests into the cheapest plan (no process runs).

        Identical requests merge, a request covered by a broader one goes,
        a request for a whole zone becomes ``-D -w ZONE``; the cost model
        of :mod:`~conntrack_lib.planner` then picks ``-D`` lines or one
        dump with exact deletes, from the requests and the table size last
        seen.

        :param requests: filter mappings or built :class:`~conntrack_lib.planner.Request`.
        :returns: the plan.
        :raises InvalidArgumentError: for an invalid request.
        """
        built = [r if isinstance(r, planner.Request) else planner.Request.build(r)
                 for r in requests]
        caps = self.capabilities
        # Without -R every -D line is a process of its own: the cost model
        # must see a batch of one.
        return planner.plan_deletes(built, table_size=self._table_size,
                                    netlink=self._netlink_usable(),
                                    batch_size=self.batch_size if caps.load_file else 1,
                                    model=self.cost_model, caps=caps)

    def execute_plan(self, plan: planner.DeletePlan) -> planner.DeleteReport:
        """Run a :class:`~conntrack_lib.planner.DeletePlan`.

        :param plan: a plan from :meth:`plan_deletes`.
        :returns: a report with the number of flows deleted and the time.
        :raises CommandError: when conntrack or netlink fails.
        """
        start = time.monotonic()
        deleted = 0
        if plan.dump_requests:
            deleted += self._delete_by_dump(plan.dump_requests, plan.zone_wide)
        deleted += self._delete_batched(plan.cli_lines) if plan.cli_lines else 0
        for request in plan.filtered:
            deleted += self._delete_filtered(request)
        return planner.DeleteReport(plan=plan, deleted=deleted,
                                    seconds=time.monotonic() - start)

    def delete_many(self, requests: Iterable[Mapping[str, FilterValue] | planner.Request]
                    ) -> planner.DeleteReport:
        """Plan and run many deletion requests at once.

        :param requests: filter mappings or built :class:`~conntrack_lib.planner.Request`.
        :returns: the report of the plan that ran.
        :raises InvalidArgumentError: for an invalid request, before any process.
        :raises CommandError: when conntrack or netlink fails.
        """
        return self.execute_plan(self.plan_deletes(requests))

    # -- security-group style deletes ------------------------------------

    def delete_rule(self, rule: SecurityGroupRule | Mapping[str, object],
                    ports: Iterable[tuple[int | None, Iterable[str]]]) -> int:
        """Delete the flows a removed security-group rule allowed, on many ports.

        All ports go into one plan, so a rule shared by many ports costs
        one table dump, not one per port and address.

        :param rule: a :class:`~conntrack_lib.rules.SecurityGroupRule` or
            a Neutron rule dict.
        :param ports: ``(zone, addresses)`` of each port the rule applied to.
        :returns: the number of flows deleted.
        :raises InvalidArgumentError: for a bad rule, zone or address.
        :raises CommandError: when conntrack or netlink fails.
        """
        requests = rule_requests(rule, ports)
        return self.delete_many(requests).deleted if requests else 0

    def delete_by_rule(  # noqa: PLR0917 - Neutron's rule fields, in its order
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
        """Delete the flows a removed security-group rule had allowed on one port.

        A convenience for :meth:`delete_rule` with one port.

        :param zone: the port's zone; None (explicitly) for every zone.
        :param direction: ``ingress`` (flows towards ``ips``) or ``egress``.
        :param ethertype: ``IPv4`` or ``IPv6``; addresses of the other
            family are not the rule's.
        :param protocol: as Neutron sends it (name, number, numeric string);
            None, 0 or ``any`` for every protocol.
        :param port_range_min: first port, or the ICMP type.
        :param port_range_max: last port, or the ICMP code.
        :param remote_ip_prefix: the remote address or CIDR, or None.
        :param ips: the port's own addresses.
        :returns: the number of flows deleted.
        :raises InvalidArgumentError: for a bad value, naming it.
        :raises CommandError: when conntrack or netlink fails.
        """
        rule = SecurityGroupRule(direction, ethertype, protocol, port_range_min,
                                 port_range_max, remote_ip_prefix)
        return self.delete_rule(rule, [(zone, ips)])

    def delete_by_remote_ips(self, zone: int | None, remote_ips: Iterable[str],
                             mark: int | None = None, *,
                             local_ips: Iterable[str] = ()) -> int:
        """Delete the flows to or from ``remote_ips`` in ``zone``.

        :param zone: the zone, or None for every zone.
        :param remote_ips: remote addresses or CIDRs.
        :param mark: only flows with this mark, if given.
        :param local_ips: the port's own addresses: only flows between them
            and the remotes go, and an empty ``remote_ips`` means every flow
            of these addresses (as Neutron's port deletion expects).
        :returns: the number of flows deleted.
        :raises InvalidArgumentError: for no remote and no local address, a
            bad address, or a remote of a family no local address has.
        :raises CommandError: when conntrack or netlink fails.
        """
        requests = remote_ip_requests(zone, remote_ips, mark, local_ips)
        return self.delete_many(requests).deleted

    # -- internals -------------------------------------------------------

    def _delete_batched(self, lines: Sequence[commands.Command]) -> int:
        # Before 1.4.7 there is no -R: each line is a conntrack -D of its own.
        size = self.batch_size if self.capabilities.load_file else 1
        return sum(self._run_deletes(chunk[0] if len(chunk) == 1 else commands.BatchCommand(chunk))
                   for chunk in commands.load_chunks(lines, size))

    def _run_deletes(self, command: commands.Command) -> int:
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
                LOG.warning("a flow vanished during %s; deleting again", command)
                continue
            if isinstance(command, commands.BatchCommand):
                # -R prints no summary; every deleted flow is one stdout line.
                return deleted + _printed_lines(result.stdout)
            return deleted + int(result.count or 0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _netlink_usable(self) -> bool:
        if self.exact_delete_backend == "cli":
            return False
        return isinstance(self.executor, ExactDeleter)

    def _exact_delete(self, flows: Sequence[Entry]) -> int | None:
        if self.exact_delete_backend == "cli":
            return None
        if not isinstance(self.executor, ExactDeleter):
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

    def _delete_by_dump(self, requests: Sequence[planner.Request],
                        zone_wide: Sequence[int]) -> int:
        """Dump once (with ids, and labels when asked), match here, delete exactly."""
        # Index the requests by zone so each entry meets only the requests
        # that can match it; requests without a zone apply to every entry.
        by_zone: dict[int | None, list[matching.Predicate]] = {}
        for request in requests:
            by_zone.setdefault(request.zone, []).append(matching.compile_filters(request.filters))
        anywhere = by_zone.pop(None, [])
        zones = set(zone_wide)
        output = tuple(dict.fromkeys(("id", *(n for r in requests
                                              for n in matching.needs(r.filters)))))
        shared = planner.common_cli_filters(requests, zones, self.capabilities)
        lines = _CountedLines(self._listing(shared, output))
        keep = matching.line_prefilter([r.filters for r in requests], zones)
        # Lines no request can match are not parsed: most of a large table.
        entries = parser.parse_entries(lines if keep is None else filter(keep, lines))
        if not shared:
            self._table_size = lines.count
        doomed = []
        for entry in entries:
            orig, reply = matching.direction_zones(entry)
            zone = orig if orig == reply else -1
            if zone in zones or any(p(entry) for p in by_zone.get(zone, ())) or any(
                    p(entry) for p in anywhere):
                doomed.append(entry)
        return self.delete_flows(doomed)

    def _delete_filtered(self, request: planner.Request) -> int:
        """Delete by a kernel-filtered dump plus Python, for hidden status bits."""
        cli, engine = request.split(self.capabilities)
        output = tuple(dict.fromkeys(("id", *matching.needs(engine))))
        predicate = matching.compile_filters(engine)
        lines = self._listing(cli, output)
        return self.delete_flows([e for e in parser.iter_entries(lines) if predicate(e)])


class _CountedLines:
    """Iterate over lines, counting them (the table size for the cost model)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.count += 1
        return line


def _exact_command(entry: Entry) -> commands.DeleteCommand:
    """Return the ``-D`` naming exactly ``entry``: tuple, zone, and id when known.

    conntrack's zone filters cannot tell a zone-0 flow from one zoned in a
    single direction, but ``-i`` (checked against the dumped id) can.
    """
    fields = commands.DeleteCommand.for_entry(entry).fields
    if entry.id is not None:
        fields["id"] = entry.id
    return commands.DeleteCommand(**fields)


def _printed_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())

