"""Where a zone space lives: the store protocols and the in-memory store."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from conntrack_lib.zones.table import ZoneSnapshot


@runtime_checkable
class ZoneStore(Protocol):
    """Keep a zone space somewhere and guard its read-modify-write cycles.

    The allocator calls :meth:`locked` around every mutation, then
    :meth:`load` inside it and :meth:`save` with the new state.  A store
    whose :attr:`persistent` is false keeps nothing itself: the allocator's
    memory is the state and :meth:`load`/:meth:`save` are not called.
    """

    @property
    def persistent(self) -> bool:
        """Return whether the store keeps the state outside the allocator."""
        ...

    @property
    def location(self) -> str:
        """Return a human-readable name of where the state lives."""
        ...

    def locked(self) -> contextlib.AbstractContextManager[object]:
        """Return a context that excludes every other writer of this store."""
        ...

    def load(self) -> ZoneSnapshot | None:
        """Return the stored state, or ``None`` when nothing is stored yet.

        :raises exceptions.ZoneStoreError: when the stored state is unreadable.
        """
        ...

    def save(self, snapshot: ZoneSnapshot) -> None:
        """Store ``snapshot`` atomically.

        :raises exceptions.ZoneStoreError: when it cannot be stored; the
            previous state is then still in place.
        """
        ...


class MemoryZoneStore:
    """Keep nothing: the allocator's memory is the only copy of the state.

    Use it (the default) when zones need not survive a restart, or when the
    caller rebuilds them with :meth:`ZoneAllocator.restore`.
    """

    persistent = False
    location = "<memory>"

    def locked(self) -> contextlib.AbstractContextManager[object]:
        """Return a context that does nothing (the allocator's lock suffices).

        :returns: a null context manager.
        """
        return contextlib.nullcontext()

    def load(self) -> ZoneSnapshot | None:
        """Return ``None``: nothing is kept here.

        :returns: ``None``, always.
        """
        return None

    def save(self, snapshot: ZoneSnapshot) -> None:
        """Discard ``snapshot``: nothing is kept here.

        :param snapshot: the state, ignored.
        """




class ZoneSpace(Protocol):
    """Run the allocator's operations on one zone space, each atomically.

    A :class:`TransactionalZoneStore` opens one for an allocator's range and
    reserved zones.  Arguments arrive validated; every method either applies
    its whole change or none of it.
    """

    def allocate(self, key: str) -> int:
        """Return the zone of ``key``, giving it the next free zone if needed."""
        ...

    def allocate_many(self, keys: Sequence[str]) -> dict[str, int]:
        """Return the zone of every key; all get one or none does."""
        ...

    def release(self, key: str) -> int | None:
        """Free the zone of ``key`` to the back of the free order."""
        ...

    def get(self, key: str) -> int | None:
        """Return the zone of ``key``, or ``None``."""
        ...

    def items(self) -> dict[str, int]:
        """Return the key to zone mapping."""
        ...

    def in_use(self) -> frozenset[int]:
        """Return the zones owned by a key."""
        ...

    def held(self) -> frozenset[int]:
        """Return the held zones."""
        ...

    def restore(self, mapping: Mapping[str, int]) -> None:
        """Adopt every pair of ``mapping`` or none."""
        ...

    def hold(self, zones: Sequence[int]) -> frozenset[int]:
        """Hold every unowned zone of ``zones``; return those newly held."""
        ...

    def unhold(self, zone: int) -> bool:
        """Free held ``zone``; return whether it was held."""
        ...

    def count(self) -> int:
        """Return how many keys own a zone."""
        ...


@runtime_checkable
class TransactionalZoneStore(Protocol):
    """Keep a zone space that runs each operation as one transaction.

    Unlike a :class:`ZoneStore`, such a store never hands the whole state
    to the allocator: the allocator opens a :class:`ZoneSpace` once and
    forwards every operation to it.
    """

    @property
    def location(self) -> str:
        """Return a human-readable name of where the state lives."""
        ...

    def open_space(self, zone_range: tuple[int, int], reserved: frozenset[int]) -> ZoneSpace:
        """Return the zone space for this range and these reserved zones.

        :raises exceptions.ZoneStoreError: when the stored state is
            unusable or belongs to another range.
        """
        ...
