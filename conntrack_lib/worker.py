"""DeletionQueue: conntrack deletions off the caller's thread, merged and batched.

An agent's main loop must not wait for ``conntrack -D``: every such
command dumps the whole table, and agents ask for the same deletions over
and over (the same remote addresses, the same zones).  The queue takes
requests from any thread, validates them on the spot, and a single
background thread drains them in batches: each batch becomes one
:class:`~conntrack_lib.planner.DeletePlan` (identical requests merged,
narrower ones dropped, the strategy chosen by the cost model) and one call
of :meth:`~conntrack_lib.helper.ConntrackHelper.delete_flows` for exact
flows.  The queue's methods have the helper's names and arguments:
``delete_entries(**filters)``, ``delete_flows(entries)``,
``delete_by_rule(...)``/``delete_rule(rule, ports)`` and
``delete_by_remote_ips(...)``; they return how many requests were queued.

Only ``threading`` and ``collections`` primitives are used, so the
queue works the same under eventlet's monkey-patching, where the worker
becomes a green thread.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
import time
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import netaddr
from oslo_log import log as logging

from conntrack_lib import commands, planner
from conntrack_lib import exceptions as exc
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Entry
from conntrack_lib.planner import DeletePlan
from conntrack_lib.rules import (
    SecurityGroupRule,
    remote_ip_requests,
    rule_requests,
)

LOG = logging.getLogger(__name__)

#: A queued deletion: a dict of filter keywords, or one exact flow.
Request = Mapping[str, Any] | Entry
#: Called from the worker thread with the error and the requests it hit.
ErrorCallback = Callable[[BaseException, list[Request]], None]

_ADDRESS_KEYS = ("src", "dst", "reply_src", "reply_dst")
#: A failed batch of at most this many commands is rerun one command at a
#: time to find the failing ones; a larger one is reported whole.
ISOLATE_MAX = 100
#: Errors that would fail every command alike: no point in isolating.
_SYSTEMIC_ERRORS = (exc.NamespaceNotFoundError, exc.PermissionDeniedError,
                    exc.ConntrackUnavailableError, exc.CommandTimeoutError)
#: How many validated requests a queue remembers (then it starts afresh).
_CHECKED_CACHE_SIZE = 65536
#: How many failed requests an error log line names.
_LOGGED_REQUESTS = 10
_STAT_NAMES = ("enqueued", "coalesced", "batches", "processes", "deleted", "failed",
               "dropped")


class QueueFullError(exc.ConntrackError):
    """The deletion queue is full and the caller chose not to wait (longer)."""

    def __init__(self, maxsize: int, pending: int = 0, timeout: float | None = None) -> None:
        super().__init__(maxsize, pending, timeout)
        self.maxsize = maxsize
        self.pending = pending
        self.timeout = timeout

    def __str__(self) -> str:
        waited = "" if self.timeout is None else f" after waiting {self.timeout}s"
        return f"deletion queue full ({self.pending}/{self.maxsize} requests){waited}"


class QueueClosedError(exc.ConntrackError):
    """The deletion queue was stopped; it accepts no more requests."""

    def __init__(self, reason: str = "deletion queue stopped") -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class DeletionFailedError(exc.ConntrackError):
    """A deletion that :meth:`DeletionQueue.wait_for` waited on failed or was dropped.

    The flows of ``ip`` it was meant to remove may still be present.
    """

    def __init__(self, ip: str, reason: str) -> None:
        super().__init__(ip, reason)
        self.ip = ip
        self.reason = reason

    def __str__(self) -> str:
        return f"deletion of flows of {self.ip} did not complete: {self.reason}"


@dataclasses.dataclass
class _Waiter:
    """One wait_for call: what it waits on, and the first failure seen."""

    target: netaddr.IPNetwork
    tickets: frozenset[int]
    failure: str | None = None


#: Address networks a request names; None: no address filter (any address
#: of the IP version given, or of both when None).
_Scopes = tuple[tuple[netaddr.IPNetwork | None, int | None], ...]


@dataclasses.dataclass(frozen=True)
class _Item:
    """What one enqueueing call asked for, with what wait_for needs."""

    ticket: int
    filters: tuple[planner.Request, ...] = ()
    entries: tuple[Entry, ...] = ()
    # Identities of the distinct requests, computed outside the queue's lock.
    keys: frozenset[Hashable] = frozenset()
    scopes: _Scopes = ()

    @property
    def size(self) -> int:
        """Return how many requests this item holds."""
        return len(self.filters) + len(self.entries)

    def touches(self, target: netaddr.IPNetwork) -> bool:
        """Tell whether deleting this item may remove flows of ``target``."""
        for network, version in self.scopes:
            if network is None:
                if version in (None, target.version):
                    return True
            elif network.version == target.version and (
                    target in network or network in target):
                return True
        return False


class DeletionQueue:
    """Run conntrack deletions in the background, merged and batched.

    :param helper: the :class:`~conntrack_lib.helper.ConntrackHelper` that
        plans and runs the deletions.
    :param maxsize: how many requests may wait; a call that would exceed it
        blocks or raises :class:`QueueFullError`.  One call larger than
        ``maxsize`` is admitted when the queue is empty.
    :param batch_max: how many distinct requests one batch takes at most;
        duplicates of requests already in the batch come along for free.
    :param linger: seconds the worker waits after the first request of a
        batch for more to arrive, unless the batch is already full.
    :param on_error: called from the worker thread with the error and the
        requests of the failed step; failures are also counted, and logged
        at DEBUG (at WARNING when there is no ``on_error``).
    :param block: whether a full queue makes callers wait (True) or raise
        :class:`QueueFullError` at once (False); each call may override it.
    :raises InvalidArgumentError: for a non-positive size or negative linger.
    """

    def __init__(
        self,
        helper: ConntrackHelper,
        *,
        maxsize: int = 100_000,
        batch_max: int = 5000,
        linger: float = 0.05,
        on_error: ErrorCallback | None = None,
        block: bool = True,
    ) -> None:
        _check_positive("maxsize", maxsize)
        _check_positive("batch_max", batch_max)
        if not isinstance(linger, int | float) or isinstance(linger, bool) or linger < 0:
            raise exc.InvalidArgumentError("linger", linger, "must be a number >= 0")
        self.helper = helper
        self.maxsize = maxsize
        self.batch_max = batch_max
        self.linger = float(linger)
        self.on_error = on_error
        self.block = block
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)
        self._progress = threading.Condition(lock)
        self._pending: collections.deque[_Item] = collections.deque()
        self._pending_size = 0
        self._running: list[_Item] = []
        self._tickets = itertools.count(1)
        self._last_ticket = 0
        self._done_upto = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stats = dict.fromkeys(_STAT_NAMES, 0)
        self._checked: dict[Hashable, planner.Request] = {}
        self._waiters: list[_Waiter] = []

    def __repr__(self) -> str:
        return (f"DeletionQueue(helper={self.helper!r}, maxsize={self.maxsize}, "
                f"batch_max={self.batch_max}, linger={self.linger})")

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread; requests queued before now run too.

        :raises QueueClosedError: if the queue was stopped.
        """
        with self._not_empty:
            if self._closed:
                raise QueueClosedError("a stopped deletion queue cannot start again")
            if self._thread is None:
                self._thread = self._spawn()

    def _spawn(self) -> threading.Thread:
        # A daemon thread: a forgotten queue must not keep the process alive.
        thread = threading.Thread(target=self._run, name="conntrack-deletion-queue",
                                  daemon=True)
        thread.start()
        return thread

    @property
    def running(self) -> bool:
        """Tell whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, drain: bool = True, timeout: float | None = None) -> int:
        """Stop accepting requests and end the worker thread.

        With ``drain`` every queued request runs first (a queue that was
        never started starts its thread for that); without it the queued
        requests are dropped (a batch already running completes).  Callers
        blocked on a full queue get :class:`QueueClosedError`.

        :param drain: run the queued requests first (True) or drop them.
        :param timeout: seconds to wait for the thread; None waits for good.
        :returns: how many requests were dropped.
        """
        with self._not_empty:
            self._closed = True
            dropped = 0 if drain else self._drop_pending()
            if self._thread is None and self._pending:
                self._thread = self._spawn()
            self._not_empty.notify_all()
            self._not_full.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                LOG.warning("deletion queue thread still busy after %ss", timeout)
        return dropped

    def _drop_pending(self) -> int:
        dropped = self._pending_size
        for item in self._pending:
            self._fail_waiters((item.ticket,), item.scopes,
                               "dropped: the queue stopped without draining")
        if self._pending:
            self._done_upto = self._pending[-1].ticket
        self._pending.clear()
        self._pending_size = 0
        self._stats["dropped"] += dropped
        self._progress.notify_all()
        if dropped:
            # stop(drain=False) asked for this and returns the number.
            LOG.debug("deletion queue stopped: %d pending requests dropped", dropped)
        return dropped

    # -- enqueueing ------------------------------------------------------

    def delete_entries(self, *, block: bool | None = None, timeout: float | None = None,
                       **filters: Any) -> int:
        """Queue the deletion of every flow matching ``filters``.

        :param block: wait while the queue is full (default: the queue's).
        :param timeout: seconds to wait for room; None waits for good.
        :param filters: the filter keywords of
            :meth:`~conntrack_lib.helper.ConntrackHelper.delete_entries`.
        :returns: how many requests were queued (1).
        :raises InvalidArgumentError: for an invalid filter, at once.
        :raises QueueFullError: when the queue stays full.
        :raises QueueClosedError: when the queue was stopped.
        """
        return self._put_filters([filters], block, timeout)

    def delete(self, *, block: bool | None = None, timeout: float | None = None,
               **filters: Any) -> int:
        """Queue a filtered deletion (deprecated alias of :meth:`delete_entries`).

        :param block: wait while the queue is full (default: the queue's).
        :param timeout: seconds to wait for room; None waits for good.
        :param filters: the filter keywords of
            :meth:`~conntrack_lib.helper.ConntrackHelper.delete_entries`.
        :returns: how many requests were queued (1).
        :raises InvalidArgumentError: for an invalid filter, at once.
        :raises QueueFullError: when the queue stays full.
        :raises QueueClosedError: when the queue was stopped.
        """
        warnings.warn("DeletionQueue.delete is deprecated; use delete_entries",
                      DeprecationWarning, stacklevel=2)
        return self.delete_entries(block=block, timeout=timeout, **filters)

    def delete_flows(self, entries: Iterable[Entry], *, block: bool | None = None,
                     timeout: float | None = None) -> int:
        """Queue the deletion of these exact flows (tuple, zone and id).

        :param entries: parsed flows.
        :param block: wait while the queue is full (default: the queue's).
        :param timeout: seconds to wait for room; None waits for good.
        :returns: how many flows were queued.
        :raises InvalidArgumentError: for something that is not a valid entry.
        :raises QueueFullError: when the queue stays full.
        :raises QueueClosedError: when the queue was stopped.
        """
        flows = tuple(entries)
        for flow in flows:
            if not isinstance(flow, Entry):
                raise exc.InvalidArgumentError("entries", flow, "expected an Entry")
            commands.DeleteCommand.for_entry(flow)
        if not flows:
            return 0
        scopes = tuple(scope for flow in flows for scope in _entry_scopes(flow))
        return self._put(_Item(0, entries=flows, keys=frozenset(flows), scopes=scopes),
                         block, timeout)

    def delete_by_remote_ips(self, zone: int | None, remote_ips: Iterable[str],
                             mark: int | None = None, *, local_ips: Iterable[str] = (),
                             block: bool | None = None, timeout: float | None = None) -> int:
        """Queue the deletion of flows to and from ``remote_ips`` in ``zone``.

        :param zone: the zone, or None for every zone.
        :param remote_ips: remote addresses or CIDRs.
        :param mark: only flows with this mark, if given.
        :param local_ips: the port's own addresses (see
            :meth:`~conntrack_lib.helper.ConntrackHelper.delete_by_remote_ips`).
        :param block: wait while the queue is full (default: the queue's).
        :param timeout: seconds to wait for room; None waits for good.
        :returns: how many filtered requests were queued.
        :raises InvalidArgumentError: for a bad value, at once.
        :raises QueueFullError: when the queue stays full.
        :raises QueueClosedError: when the queue was stopped.
        """
        requests = remote_ip_requests(zone, remote_ips, mark, local_ips)
        return self._put_requests(requests, block, timeout)

    def delete_remote_ips(self, zone: int | None, ips: Iterable[str], mark: int | None = None,
                          *, block: bool | None = None, timeout: float | None = None) -> int:
        """Queue remote-address deletes (deprecated alias of :meth:`delete_by_remote_ips`).

        :param zone: the zone, or None for every zone.
        :param ips: remote addresses or CIDRs.
        :param mark: only flows with this mark, if given.
        :param block: wait while the queue is full (default: the queue's).
        :param timeout: seconds to wait for room; None waits for good.
        :returns: how many filtered requests were queued.
        :raises InvalidArgumentError: for a bad value, at once.
        :raises QueueFullError: when the queue stays full.
        :raises QueueClosedError: when the queue was stopped.
        """
        warnings.warn("DeletionQueue.delete_remote_ips is deprecated; use "
                      "delete_by_remote_ips", DeprecationWarning, stacklevel=2)
        return self.delete_by_remote_ips(zone, ips, mark, block=block, timeout=timeout)

    def delete_rule(self, rule: SecurityGroupRule | Mapping[str, Any],
                    ports: Iterable[tuple[int | None, Iterable[str]]], *,
                    block: bool | None = None, timeout: float | None = None) -> int:
        """Queue the deletion of the flows a removed rule allowed, on many ports.

        :param rule: a :class:`~conntrack_lib.rules.SecurityGroupRule` or a
            Neutron rule dict.
        :param ports: ``(zone, addresses)`` of each port the rule applied to.
        :param block: wait while the queue is full (default: the queue's).
        :param timeout: seconds to wait for room; None waits for good.
        :returns: how many filtered requests were queued.
        :raises InvalidArgumentError: for a bad rule, zone or address, at once.
        :raises QueueFullError: when the queue stays full.
        :raises QueueClosedError: when the queue was stopped.
        """
        requests = rule_requests(rule, ports)
        return self._put_requests(requests, block, timeout)

    def delete_by_rule(  # noqa: PLR0917 - mirrors ConntrackHelper.delete_by_rule
        self,
        zone: int | None,
        direction: str,
        ethertype: str,
        protocol: str | int | None,
        port_range_min: int | None,
        port_range_max: int | None,
        remote_ip_prefix: str | None,
        ips: Iterable[str],
        *,
        block: bool | None = None,
        timeout: float | None = None,
    ) -> int:
        """Queue the deletion of the flows a removed rule allowed on one port.

        The arguments of
        :meth:`~conntrack_lib.helper.ConntrackHelper.delete_by_rule`, plus
        ``block`` and ``timeout``.

        :param zone: the port's zone; None (explicitly) for every zone.
        :param direction: ``ingress`` (flows towards ``ips``) or ``egress``.
        :param ethertype: ``IPv4`` or ``IPv6``.
        :param protocol: as Neutron sends it (name, number, numeric string);
            None, 0 or ``any`` for every protocol.
        :param port_range_min: first port, or the ICMP type.
        :param port_range_max: last port, or the ICMP code.
        :param remote_ip_prefix: the remote address or CIDR, or None.
        :param ips: the port's own addresses.
        :param block: wait while the queue is full (default: the queue's).
        :param timeout: seconds to wait for room; None waits for good.
        :returns: how many filtered requests were queued.
        :raises InvalidArgumentError: for a bad value, at once.
        :raises QueueFullError: when the queue stays full.
        :raises QueueClosedError: when the queue was stopped.
        """
        rule = SecurityGroupRule(direction, ethertype, protocol, port_range_min,
                                 port_range_max, remote_ip_prefix)
        return self.delete_rule(rule, [(zone, ips)], block=block, timeout=timeout)

    def _put_filters(self, requests: Sequence[Mapping[str, Any]], block: bool | None,
                     timeout: float | None) -> int:
        return self._put_requests([self._check(r) for r in requests], block, timeout)

    def _put_requests(self, requests: Sequence[planner.Request], block: bool | None,
                      timeout: float | None) -> int:
        if not requests:
            return 0
        scopes = tuple(scope for r in requests for scope in self._scopes(r))
        return self._put(_Item(0, filters=tuple(requests), keys=frozenset(requests),
                               scopes=scopes), block, timeout)

    def _check(self, request: Mapping[str, Any]) -> planner.Request:
        """Validate one filter mapping into a request, once per distinct input.

        Agents repeat the same requests, so the outcome of a successful
        validation is remembered by the exact keys, types and values.
        """
        if not isinstance(request, Mapping):
            raise exc.InvalidArgumentError("request", request, "expected a mapping of filters")
        typed = _typed_key({k: v for k, v in request.items() if v is not None})
        known = self._checked.get(typed)
        if known is None:
            known = planner.Request.build(request)
            if len(self._checked) >= _CHECKED_CACHE_SIZE:
                self._checked.clear()
            self._checked[typed] = known
        return known

    @staticmethod
    def _scopes(request: planner.Request) -> _Scopes:
        return tuple(_filter_scopes(request.filters))

    def _put(self, item: _Item, block: bool | None, timeout: float | None) -> int:
        wait = self.block if block is None else block
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._not_full:
            while not self._closed and self._is_full(item.size):
                remaining = None if deadline is None else deadline - time.monotonic()
                if not wait or (remaining is not None and remaining <= 0):
                    raise QueueFullError(self.maxsize, self._pending_size,
                                         timeout if wait else None)
                self._not_full.wait(remaining)
            if self._closed:
                raise QueueClosedError()
            self._last_ticket = next(self._tickets)
            self._pending.append(dataclasses.replace(item, ticket=self._last_ticket))
            self._pending_size += item.size
            self._stats["enqueued"] += item.size
            self._not_empty.notify()
        return item.size

    def _is_full(self, size: int) -> bool:
        return bool(self._pending) and self._pending_size + size > self.maxsize

    # -- waiting ---------------------------------------------------------

    def pending(self) -> int:
        """Return how many requests wait or run right now.

        :returns: the requests queued and not yet done.
        """
        with self._not_empty:
            return self._pending_size + sum(i.size for i in self._running)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every request queued before this call has run or been dropped.

        :param timeout: seconds to wait at most; None waits for good.
        :returns: False if ``timeout`` seconds passed first.
        """
        with self._progress:
            self._start_for_waiters()
            return self._wait_done(self._last_ticket, timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for the queued requests (deprecated alias of :meth:`wait`).

        :param timeout: seconds to wait at most; None waits for good.
        :returns: False if ``timeout`` seconds passed first.
        """
        warnings.warn("DeletionQueue.flush is deprecated; use wait", DeprecationWarning,
                      stacklevel=2)
        return self.wait(timeout)

    def wait_for(self, ip: str, timeout: float | None = None) -> bool:
        """Wait until no queued or running deletion can touch ``ip``.

        A request touches an address when one of its ``src``/``dst``/
        ``reply_src``/``reply_dst`` filters (or an exact flow's addresses)
        equals, contains or lies inside it; a request with no address filter
        (a whole zone, a mark) touches every address of its family.

        :param ip: an address or CIDR.
        :param timeout: seconds to wait at most; None waits for good.
        :returns: True when every deletion touching ``ip`` succeeded, False
            if ``timeout`` seconds passed first.
        :raises InvalidArgumentError: for something that is not an address.
        :raises DeletionFailedError: a deletion touching ``ip`` that was
            queued before this call failed, or was dropped by
            ``stop(drain=False)``: its flows may still be present.
        """
        target = _network("ip", ip)
        with self._progress:
            self._start_for_waiters()
            touching = frozenset(i.ticket for i in itertools.chain(self._running, self._pending)
                                 if i.touches(target))
            waiter = _Waiter(target, touching)
            self._waiters.append(waiter)
            try:
                done = self._wait_done(max(touching, default=0), timeout)
            finally:
                self._waiters.remove(waiter)
        if waiter.failure is not None:
            raise DeletionFailedError(str(ip), waiter.failure)
        return done

    def _fail_waiters(self, tickets: Iterable[int], scopes: _Scopes, reason: str) -> None:
        """Tell the waiters on ``tickets`` whose address ``scopes`` touch that they failed.

        Called with the lock held.
        """
        probe = _Item(0, scopes=scopes)
        hit = frozenset(tickets)
        for waiter in self._waiters:
            if waiter.failure is None and waiter.tickets & hit and probe.touches(waiter.target):
                waiter.failure = reason

    def _start_for_waiters(self) -> None:
        # Waiting on a queue nobody started would wait for ever: start it.
        if self._thread is None and self._pending and not self._closed:
            self._thread = self._spawn()

    def _wait_done(self, ticket: int, timeout: float | None) -> bool:
        return self._progress.wait_for(lambda: self._is_done(ticket), timeout)

    def _is_done(self, ticket: int) -> bool:
        # A drop can pass tickets of the batch still running: check it too.
        return self._done_upto >= ticket and all(i.ticket > ticket for i in self._running)

    def stats(self) -> dict[str, int]:
        """Return the counters of this queue since it was built.

        ``enqueued``, ``coalesced`` (merged into or covered by another
        request of the same batch), ``failed`` (merged requests whose
        deletion failed), ``dropped`` and ``pending`` count requests, so
        that enqueued = coalesced + run + failed + dropped + pending;
        ``deleted`` counts flows; ``batches`` counts worker rounds and
        ``processes`` the conntrack processes their plans started (the sum
        of ``DeletePlan.processes``, exact-flow deletes not included).

        :returns: counter name to value, a copy.
        """
        with self._not_empty:
            counters = dict(self._stats)
            counters["pending"] = self._pending_size + sum(i.size for i in self._running)
        return counters

    # -- the worker thread -----------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._process(batch)
            finally:
                self._finish(batch)

    def _next_batch(self) -> list[_Item] | None:
        with self._not_empty:
            while not self._pending:
                if self._closed:
                    return None
                self._not_empty.wait()
            self._linger()
            if not self._pending:  # stop(drain=False) emptied it meanwhile
                return None
            batch = list(self._take())
            self._running = batch
            self._not_full.notify_all()
            return batch

    def _linger(self) -> None:
        """Give producers ``linger`` seconds to fill the batch (lock held)."""
        deadline = time.monotonic() + self.linger
        while self._pending_size < self.batch_max and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._not_empty.wait(remaining)

    def _take(self) -> Iterator[_Item]:
        """Pop items while the batch holds at most ``batch_max`` distinct requests.

        Duplicates cost nothing once merged, so they ride along: a queue full
        of the same few requests drains in one batch.
        """
        distinct: set[Hashable] = set()
        while self._pending:
            fresh = self._pending[0].keys - distinct
            if distinct and len(distinct) + len(fresh) > self.batch_max:
                return
            item = self._pending.popleft()
            self._pending_size -= item.size
            distinct |= fresh
            yield item

    def _finish(self, batch: list[_Item]) -> None:
        with self._progress:
            self._running = []
            self._done_upto = max(self._done_upto, batch[-1].ticket)
            self._stats["batches"] += 1
            self._progress.notify_all()

    def _process(self, batch: list[_Item]) -> None:
        filters = [f for item in batch for f in item.filters]
        entries = [e for item in batch for e in item.entries]
        started = time.monotonic()
        if entries:
            self._step(self._delete_exact, entries)
        if filters:
            self._step(self._delete_planned, filters)
        LOG.debug("deletion batch of %d filters and %d exact flows ran in %.3f s",
                  len(filters), len(entries), time.monotonic() - started)

    def _step(self, action: Callable[[Any], None], requests: list[Any]) -> None:
        try:
            action(requests)
        except Exception as error:  # reported below: logged, counted, on_error
            self._report(error, requests)

    def _delete_exact(self, entries: list[Entry]) -> None:
        unique = list(dict.fromkeys(entries))
        self._count(coalesced=len(entries) - len(unique))
        try:
            deleted = self.helper.delete_flows(unique)
        except Exception as error:  # reported: logged, counted, on_error
            self._report(error, unique)
            return
        self._count(deleted=deleted)

    def _delete_planned(self, filters: list[planner.Request]) -> None:
        unique = list(dict.fromkeys(filters))
        plan = self.helper.plan_deletes(unique)
        merged = _commands_of(plan)
        self._count(coalesced=len(filters) - len(merged), processes=plan.processes)
        try:
            report = self.helper.execute_plan(plan)
        except Exception as error:  # reported: logged, counted, on_error
            if isinstance(error, exc.CommandError) and _isolatable(error, plan):
                self._isolate(error, merged)
            else:
                self._report(error, merged)
            return
        self._count(deleted=report.deleted)

    def _isolate(self, error: exc.CommandError, merged: list[planner.Request]) -> None:
        # One bad line aborts a whole -R batch: rerun each command alone so
        # the innocent ones still run and only the guilty are reported.
        LOG.warning("conntrack deletion batch of %d commands failed (%s); "
                    "running them one by one", len(merged), error)
        for request in merged:
            self._step(self._delete_alone, [request])

    def _delete_alone(self, requests: list[planner.Request]) -> None:
        plan = self.helper.plan_deletes(requests)
        self._count(processes=plan.processes)
        self._count(deleted=self.helper.execute_plan(plan).deleted)

    def _report_to_waiters(self, error: Exception, requests: list[Any]) -> None:
        scopes = _failed_scopes(requests)
        with self._progress:
            tickets = [item.ticket for item in self._running]
            self._fail_waiters(tickets, scopes, f"{type(error).__name__}: {error}")

    def _count(self, **increments: int) -> None:
        with self._not_empty:
            for name, value in increments.items():
                self._stats[name] += value

    def _report(self, error: Exception, requests: list[Any]) -> None:
        self._count(failed=len(requests))
        self._report_to_waiters(error, requests)
        # A batch's argv is only "-R -": name the requests so the log says what failed.
        shown = ", ".join(_describe(r) for r in requests[:_LOGGED_REQUESTS])
        more = f" and {len(requests) - _LOGGED_REQUESTS} more" if (
            len(requests) > _LOGGED_REQUESTS) else ""
        # on_error hands the error to the caller, who decides how loud it
        # is; without a callback only the counters would know: say it here.
        level = logging.DEBUG if self.on_error is not None else logging.WARNING
        unseen = "" if self.on_error is not None else " (no on_error callback)"
        if isinstance(error, exc.CommandError):
            LOG.log(level, "conntrack deletion of %d requests failed%s: %s exited %s: %s "
                    "(requests: %s%s)", len(requests), unseen, " ".join(map(str, error.cmd)),
                    error.exit_code, error.stderr.strip(), shown, more)
        else:
            LOG.log(level, "conntrack deletion of %d requests failed%s: %r (requests: %s%s)",
                    len(requests), unseen, error, shown, more, exc_info=error)
        if self.on_error is None:
            return
        try:
            # Callers get filter dicts (or entries), not the internal request type.
            self.on_error(error, [r.filters if isinstance(r, planner.Request) else r
                                  for r in requests])
        except Exception:  # the callback must not kill the worker
            LOG.warning("on_error callback of the deletion queue raised; ignored so the "
                        "worker keeps running", exc_info=True)


def _failed_scopes(requests: Sequence[Any]) -> _Scopes:
    """Return the address scopes of failed requests (every address if unsure)."""
    scopes: list[tuple[netaddr.IPNetwork | None, int | None]] = []
    for request in requests:
        try:
            if isinstance(request, Entry):
                scopes.extend(_entry_scopes(request))
            elif isinstance(request, planner.Request):
                scopes.extend(_filter_scopes(request.filters))
            else:
                scopes.extend(_filter_scopes(request))
        except (exc.InvalidArgumentError, AttributeError, TypeError):
            return ((None, None),)
    return tuple(scopes)


def _commands_of(plan: DeletePlan) -> list[planner.Request]:
    """Return the requests a plan runs, whole zones included."""
    zones = [planner.Request((("zone", zone),)) for zone in plan.zone_wide]
    return zones + list(plan.requests) + list(plan.cli_requests) + list(plan.filtered)


def _isolatable(error: exc.CommandError, plan: DeletePlan) -> bool:
    """Tell whether rerunning a failed plan's commands one by one can help."""
    systemic = isinstance(error, _SYSTEMIC_ERRORS)
    count = len(_commands_of(plan))
    return not systemic and plan.strategy == "cli" and 1 < count <= ISOLATE_MAX


def _describe(request: Any) -> str:
    if isinstance(request, Entry | planner.Request):
        return str(request)
    return " ".join(f"{k}={v}" for k, v in request.items()) or "everything"


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise exc.InvalidArgumentError(name, value, "must be a positive integer")


def _typed_key(filters: Mapping[str, Any]) -> Hashable:
    """Return an identity that also tells ``1`` from ``True`` and ``"1"``."""
    def typed(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return (type(value).__name__, tuple(typed(v) for v in value))
        if isinstance(value, dict | set):
            return (type(value).__name__, repr(value))  # unhashable: never equal by accident
        return (type(value).__name__, value)
    return tuple(sorted((k, typed(v)) for k, v in filters.items()))


def _network(name: str, value: Any) -> netaddr.IPNetwork:
    try:
        return netaddr.IPNetwork(str(value))
    except (netaddr.AddrFormatError, ValueError, TypeError) as err:
        raise exc.InvalidArgumentError(name, value, "not an IP address or prefix") from err


_VERSION_OF_FAMILY = {"ipv4": 4, "ipv6": 6}


def _filter_scopes(filters: Mapping[str, Any]) -> list[tuple[netaddr.IPNetwork | None,
                                                             int | None]]:
    networks = [_network(k, filters[k]) for k in _ADDRESS_KEYS if k in filters]
    if networks:
        return [(net, net.version) for net in networks]
    return [(None, _VERSION_OF_FAMILY.get(str(filters.get("family"))))]


def _entry_scopes(entry: Entry) -> list[tuple[netaddr.IPNetwork, int]]:
    addresses = {entry.original.src, entry.original.dst, entry.reply.src, entry.reply.dst}
    return [(netaddr.IPNetwork(a), a.version) for a in addresses]


__all__ = ["DeletionFailedError", "DeletionQueue", "QueueClosedError", "QueueFullError",
           "Request"]
