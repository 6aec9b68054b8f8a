"""The pieces of the deletion queue that involve no thread: items, errors, scopes.

``Item`` is what one enqueueing call asked for; ``Waiter`` is one
``wait_for`` call.  The functions tell which addresses a request may touch
and describe failed requests; :mod:`conntrack_lib.worker` (the queue's API)
and :mod:`conntrack_lib.worker_loop` (its worker thread) share them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import netaddr

from conntrack_lib import exceptions as exc
from conntrack_lib import planner
from conntrack_lib.models import Entry
from conntrack_lib.planner import DeletePlan

#: What a failed step names: exact flows, planned requests or filter dicts.
Failed = Entry | planner.Request | Mapping[str, Any]

ADDRESS_KEYS = ("src", "dst", "reply_src", "reply_dst")
#: A failed batch of at most this many commands is rerun one command at a
#: time to find the failing ones; a larger one is reported whole.
ISOLATE_MAX = 100
#: Errors that would fail every command alike: no point in isolating.
SYSTEMIC_ERRORS = (exc.NamespaceNotFoundError, exc.PermissionDeniedError,
                    exc.ConntrackUnavailableError, exc.CommandTimeoutError)


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
class Waiter:
    """One wait_for call: what it waits on, and the first failure seen."""

    target: netaddr.IPNetwork
    tickets: frozenset[int]
    failure: str | None = None


#: Address networks a request names; None: no address filter (any address
#: of the IP version given, or of both when None).
Scopes = tuple[tuple[netaddr.IPNetwork | None, int | None], ...]


@dataclasses.dataclass(frozen=True)
class Item:
    """What one enqueueing call asked for, with what wait_for needs."""

    ticket: int
    filters: tuple[planner.Request, ...] = ()
    entries: tuple[Entry, ...] = ()
    # Identities of the distinct requests, computed outside the queue's lock.
    keys: frozenset[Hashable] = frozenset()
    scopes: Scopes = ()

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


def failed_scopes(requests: Sequence[Failed]) -> Scopes:
    """Return the address scopes of failed requests (every address if unsure)."""
    scopes: list[tuple[netaddr.IPNetwork | None, int | None]] = []
    for request in requests:
        try:
            if isinstance(request, Entry):
                scopes.extend(entry_scopes(request))
            elif isinstance(request, planner.Request):
                scopes.extend(filter_scopes(request.filters))
            else:
                scopes.extend(filter_scopes(request))
        except (exc.InvalidArgumentError, AttributeError, TypeError):
            return ((None, None),)
    return tuple(scopes)


def commands_of(plan: DeletePlan) -> list[planner.Request]:
    """Return the requests a plan runs, whole zones included."""
    zones = [planner.Request((("zone", zone),)) for zone in plan.zone_wide]
    return zones + list(plan.requests) + list(plan.cli_requests) + list(plan.filtered)


def isolatable(error: exc.CommandError, plan: DeletePlan) -> bool:
    """Tell whether rerunning a failed plan's commands one by one can help."""
    systemic = isinstance(error, SYSTEMIC_ERRORS)
    count = len(commands_of(plan))
    return not systemic and plan.strategy == "cli" and 1 < count <= ISOLATE_MAX


def describe(request: Failed) -> str:
    """Return a request as text for a log line."""
    if isinstance(request, Entry | planner.Request):
        return str(request)
    return " ".join(f"{k}={v}" for k, v in request.items()) or "everything"


def check_positive(name: str, value: object) -> None:
    """Refuse ``value`` unless it is a positive int.

    :raises InvalidArgumentError: naming the argument ``name``.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise exc.InvalidArgumentError(name, value, "must be a positive integer")


def typed_key(filters: Mapping[str, Any]) -> Hashable:
    """Return an identity that also tells ``1`` from ``True`` and ``"1"``."""
    def typed(value: object) -> object:
        if isinstance(value, list | tuple):
            return (type(value).__name__, tuple(typed(v) for v in value))
        if isinstance(value, dict | set):
            return (type(value).__name__, repr(value))  # unhashable: never equal by accident
        return (type(value).__name__, value)
    return tuple(sorted((k, typed(v)) for k, v in filters.items()))


def network(name: str, value: object) -> netaddr.IPNetwork:
    """Return ``value`` as an IP network.

    :raises InvalidArgumentError: not an address or prefix, naming ``name``.
    """
    try:
        return netaddr.IPNetwork(str(value))
    except (netaddr.AddrFormatError, ValueError, TypeError) as err:
        raise exc.InvalidArgumentError(name, value, "not an IP address or prefix") from err


_VERSION_OF_FAMILY = {"ipv4": 4, "ipv6": 6}


def filter_scopes(filters: Mapping[str, Any]) -> list[tuple[netaddr.IPNetwork | None,
                                                             int | None]]:
    """Return the networks a filter request names (or its IP version alone)."""
    networks = [network(k, filters[k]) for k in ADDRESS_KEYS if k in filters]
    if networks:
        return [(net, net.version) for net in networks]
    return [(None, _VERSION_OF_FAMILY.get(str(filters.get("family"))))]


def entry_scopes(entry: Entry) -> list[tuple[netaddr.IPNetwork, int]]:
    """Return the four addresses of an exact flow as host networks."""
    addresses = {entry.original.src, entry.original.dst, entry.reply.src, entry.reply.dst}
    return [(netaddr.IPNetwork(a), a.version) for a in addresses]
