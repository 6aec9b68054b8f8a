"""The worker thread of the deletion queue: take a batch, plan it, run it, report.

:class:`WorkerLoop` holds the state both halves of
:class:`~conntrack_lib.worker.DeletionQueue` share and the code that runs
in its background thread; the public methods that producers and waiters
call live in :mod:`conntrack_lib.worker`.  Failures are counted, handed to
the waiters of the addresses they touch, to ``on_error``, and logged.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from oslo_log import log as logging

from conntrack_lib import exceptions as exc
from conntrack_lib import planner
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Entry
from conntrack_lib.worker_items import (
    Failed,
    Item,
    Scopes,
    Waiter,
    commands_of,
    describe,
    failed_scopes,
    isolatable,
)

LOG = logging.getLogger(__name__)

_Step = TypeVar("_Step", Entry, planner.Request)

#: How many failed requests an error log line names.
_LOGGED_REQUESTS = 10


class WorkerLoop:
    """The worker-thread half of a deletion queue (and the state it shares)."""

    helper: ConntrackHelper
    batch_max: int
    linger: float
    # Spelled out, not conntrack_lib.worker.ErrorCallback: worker imports this module.
    on_error: Callable[[BaseException, list[Any]], None] | None
    _not_empty: threading.Condition
    _not_full: threading.Condition
    _progress: threading.Condition
    _pending: collections.deque[Item]
    _pending_size: int
    _running: list[Item]
    _done_upto: int
    _closed: bool
    _stats: dict[str, int]
    _waiters: list[Waiter]

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._process(batch)
            finally:
                self._finish(batch)

    def _next_batch(self) -> list[Item] | None:
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

    def _take(self) -> Iterator[Item]:
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

    def _finish(self, batch: list[Item]) -> None:
        with self._progress:
            self._running = []
            self._done_upto = max(self._done_upto, batch[-1].ticket)
            self._stats["batches"] += 1
            self._progress.notify_all()

    def _process(self, batch: list[Item]) -> None:
        filters = [f for item in batch for f in item.filters]
        entries = [e for item in batch for e in item.entries]
        started = time.monotonic()
        if entries:
            self._step(self._delete_exact, entries)
        if filters:
            self._step(self._delete_planned, filters)
        LOG.debug("deletion batch of %d filters and %d exact flows ran in %.3f s",
                  len(filters), len(entries), time.monotonic() - started)

    def _step(self, action: Callable[[list[_Step]], None], requests: list[_Step]) -> None:
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
        merged = commands_of(plan)
        self._count(coalesced=len(filters) - len(merged), processes=plan.processes)
        try:
            report = self.helper.execute_plan(plan)
        except Exception as error:  # reported: logged, counted, on_error
            if isinstance(error, exc.CommandError) and isolatable(error, plan):
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

    def _report_to_waiters(self, error: Exception, requests: Sequence[Failed]) -> None:
        scopes = failed_scopes(requests)
        with self._progress:
            tickets = [item.ticket for item in self._running]
            self._fail_waiters(tickets, scopes, f"{type(error).__name__}: {error}")

    def _count(self, **increments: int) -> None:
        with self._not_empty:
            for name, value in increments.items():
                self._stats[name] += value

    def _report(self, error: Exception, requests: Sequence[Failed]) -> None:
        self._count(failed=len(requests))
        self._report_to_waiters(error, requests)
        # A batch's argv is only "-R -": name the requests so the log says what failed.
        shown = ", ".join(describe(r) for r in requests[:_LOGGED_REQUESTS])
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


    def _fail_waiters(self, tickets: Iterable[int], scopes: Scopes, reason: str) -> None:
        """Tell the waiters on ``tickets`` whose address ``scopes`` touch that they failed.

        Called with the lock held.
        """
        probe = Item(0, scopes=scopes)
        hit = frozenset(tickets)
        for waiter in self._waiters:
            if waiter.failure is None and waiter.tickets & hit and probe.touches(waiter.target):
                waiter.failure = reason

