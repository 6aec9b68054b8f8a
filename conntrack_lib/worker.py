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
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from oslo_log import log as logging

from conntrack_lib import commands, planner
from conntrack_lib import exceptions as exc
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Entry
from conntrack_lib.rules import (
    SecurityGroupRule,
    remote_ip_requests,
    rule_requests,
)
from conntrack_lib.worker_items import (  # ISOLATE_MAX: public, kept importable from here
    ISOLATE_MAX,  # noqa: F401
    DeletionFailedError,
    Item,
    QueueClosedError,
    QueueFullError,
    Scopes,
    Waiter,
    check_positive,
    entry_scopes,
    filter_scopes,
    network,
    typed_key,
)
from conntrack_lib.worker_loop import WorkerLoop

LOG = logging.getLogger(__name__)

#: A queued deletion: a dict of filter keywords, or one exact flow.
Request = Mapping[str, Any] | Entry
#: Called from the worker thread with the error and the requests it hit.
ErrorCallback = Callable[[BaseException, list[Request]], None]

#: How many validated requests a queue remembers (then it starts afresh).
_CHECKED_CACHE_SIZE = 65536
_STAT_NAMES = ("enqueued", "coalesced", "batches", "processes", "deleted", "failed",
               "dropped")


class DeletionQueue(WorkerLoop):
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
        check_positive("maxsize", maxsize)
        check_positive("batch_max", batch_max)
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
        self._pending: collections.deque[Item] = collections.deque()
        self._pending_size = 0
        self._running: list[Item] = []
        self._tickets = itertools.count(1)
        self._last_ticket = 0
        self._done_upto = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stats = dict.fromkeys(_STAT_NAMES, 0)
        self._checked: dict[Hashable, planner.Request] = {}
        self._waiters: list[Waiter] = []

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
        scopes = tuple(scope for flow in flows for scope in entry_scopes(flow))
        return self._put(Item(0, entries=flows, keys=frozenset(flows), scopes=scopes),
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
        return self._put(Item(0, filters=tuple(requests), keys=frozenset(requests),
                               scopes=scopes), block, timeout)

    def _check(self, request: Mapping[str, Any]) -> planner.Request:
        """Validate one filter mapping into a request, once per distinct input.

        Agents repeat the same requests, so the outcome of a successful
        validation is remembered by the exact keys, types and values.
        """
        if not isinstance(request, Mapping):
            raise exc.InvalidArgumentError("request", request, "expected a mapping of filters")
        typed = typed_key({k: v for k, v in request.items() if v is not None})
        known = self._checked.get(typed)
        if known is None:
            known = planner.Request.build(request)
            if len(self._checked) >= _CHECKED_CACHE_SIZE:
                self._checked.clear()
            self._checked[typed] = known
        return known

    @staticmethod
    def _scopes(request: planner.Request) -> Scopes:
        return tuple(filter_scopes(request.filters))

    def _put(self, item: Item, block: bool | None, timeout: float | None) -> int:
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
        target = network("ip", ip)
        with self._progress:
            self._start_for_waiters()
            touching = frozenset(i.ticket for i in itertools.chain(self._running, self._pending)
                                 if i.touches(target))
            waiter = Waiter(target, touching)
            self._waiters.append(waiter)
            try:
                done = self._wait_done(max(touching, default=0), timeout)
            finally:
                self._waiters.remove(waiter)
        if waiter.failure is not None:
            raise DeletionFailedError(str(ip), waiter.failure)
        return done

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


__all__ = ["DeletionFailedError", "DeletionQueue", "QueueClosedError", "QueueFullError",
           "Request"]
