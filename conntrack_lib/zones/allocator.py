"""ZoneAllocator: the thread-safe front of a zone space, whatever its store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from conntrack_lib import exceptions
from conntrack_lib.constants import MAX_CONNTRACK_ZONE_ID, MIN_CONNTRACK_ZONE_ID
from conntrack_lib.zones.stores import (
    MemoryZoneStore,
    TransactionalZoneStore,
    ZoneSpace,
    ZoneStore,
)
from conntrack_lib.zones.table import ZoneTable
from conntrack_lib.zones.validation import validate_key, validate_range, validate_zone

_T = TypeVar("_T")

#: Any store an allocator accepts.
AnyZoneStore = ZoneStore | TransactionalZoneStore


class TableSpace:
    """Run a zone space on a :class:`ZoneTable`, kept in memory or in a snapshot store.

    With a persistent snapshot store (the deprecated file store) every
    operation first reloads the store; a mutation runs under the store's
    external lock and is adopted in memory only after the store was written.
    """

    def __init__(self, store: ZoneStore, low: int, high: int, reserved: frozenset[int]) -> None:
        self._store = store
        self._low, self._high, self._reserved = low, high, reserved
        self._lock = threading.Lock()
        self._table = ZoneTable(low, high, reserved)
        if store.persistent:
            # Refuse an unusable file now rather than at the first allocation.
            self._table = self._loaded_table()

    def _loaded_table(self) -> ZoneTable:
        snap = self._store.load()
        if snap is None:
            return ZoneTable(self._low, self._high, self._reserved)
        try:
            return ZoneTable.from_snapshot(snap, self._low, self._high, self._reserved)
        except ValueError as exc:
            raise exceptions.ZoneStoreError(self._store.location, f"refused: {exc}") from exc

    def _read(self, query: Callable[[ZoneTable], _T]) -> _T:
        with self._lock:
            if self._store.persistent:
                # os.replace makes every file we open complete: no lock needed.
                self._table = self._loaded_table()
            return query(self._table)

    def _mutate(self, change: Callable[[ZoneTable], tuple[_T, bool]]) -> _T:
        with self._lock:
            if not self._store.persistent:
                return change(self._table)[0]
            with self._store.locked():
                table = self._loaded_table()
                result, changed = change(table)
                if changed:
                    self._store.save(table.snapshot())
                self._table = table
                return result

    def allocate(self, key: str) -> int:
        """Return the zone of ``key``, giving it the next free zone if needed."""
        return self._mutate(lambda table: table.allocate(key))

    def allocate_many(self, keys: Sequence[str]) -> dict[str, int]:
        """Return the zone of every key; all get one or none does."""
        return self._mutate(lambda table: table.allocate_many(keys))

    def release(self, key: str) -> int | None:
        """Free the zone of ``key`` to the back of the free order."""

        def change(table: ZoneTable) -> tuple[int | None, bool]:
            zone = table.release(key)
            return zone, zone is not None

        return self._mutate(change)

    def get(self, key: str) -> int | None:
        """Return the zone of ``key``, or ``None``."""
        return self._read(lambda table: table.by_key.get(key))

    def items(self) -> dict[str, int]:
        """Return a copy of the key to zone mapping."""
        return self._read(lambda table: dict(table.by_key))

    def in_use(self) -> frozenset[int]:
        """Return the zones owned by a key."""
        return self._read(lambda table: frozenset(table.by_zone))

    def held(self) -> frozenset[int]:
        """Return the held zones."""
        return self._read(lambda table: frozenset(table.held))

    def restore(self, mapping: Mapping[str, int]) -> None:
        """Adopt every pair of ``mapping`` or none."""
        self._mutate(lambda table: (None, table.restore(mapping)))

    def hold(self, zones: Sequence[int]) -> frozenset[int]:
        """Hold every unowned zone of ``zones``; return those newly held."""

        def change(table: ZoneTable) -> tuple[frozenset[int], bool]:
            added = table.hold(zones)
            return added, bool(added)

        return self._mutate(change)

    def unhold(self, zone: int) -> bool:
        """Free held ``zone``; return whether it was held."""

        def change(table: ZoneTable) -> tuple[bool, bool]:
            freed = table.unhold(zone)
            return freed, freed

        return self._mutate(change)

    def count(self) -> int:
        """Return how many keys own a zone."""
        return self._read(lambda table: len(table.by_key))


class ZoneAllocator:
    """Hand out conntrack zones to keys, one zone per key, thread-safely.

    See the package documentation for the reuse order and the cost of each
    operation.  With a :class:`~conntrack_lib.zones.SQLiteZoneStore` every
    operation is one database transaction, so several processes share one
    zone space and a crash never leaves half an operation behind.

    :param zone_range: ``(low, high)`` zones to hand out, both included,
        within 1..:data:`~conntrack_lib.constants.MAX_CONNTRACK_ZONE_ID`.
    :param reserved: zones inside the range that are never handed out.
    :param store: where the state lives; :class:`MemoryZoneStore` if omitted.
    :raises exceptions.InvalidZoneError: for a bad range or reserved zone.
    :raises exceptions.ZoneStoreError: when the store holds unusable state.
    """

    def __init__(
        self,
        zone_range: tuple[int, int] = (MIN_CONNTRACK_ZONE_ID, MAX_CONNTRACK_ZONE_ID),
        reserved: Iterable[int] = (),
        store: AnyZoneStore | None = None,
    ) -> None:
        self._low, self._high = validate_range(zone_range)
        self._reserved = self._check_reserved(reserved)
        self._store: AnyZoneStore = store if store is not None else MemoryZoneStore()
        self._space: ZoneSpace
        if isinstance(self._store, TransactionalZoneStore):
            self._space = self._store.open_space((self._low, self._high), self._reserved)
        else:
            self._space = TableSpace(self._store, self._low, self._high, self._reserved)

    def _check_reserved(self, reserved: Iterable[int]) -> frozenset[int]:
        zones = frozenset(validate_zone(zone) for zone in reserved)
        for zone in sorted(zones):
            if not self._low <= zone <= self._high:
                raise exceptions.InvalidZoneError(
                    zone, f"reserved zone outside the range {self._low}..{self._high}"
                )
        return zones

    # -- properties -------------------------------------------------------

    @property
    def zone_range(self) -> tuple[int, int]:
        """Return ``(low, high)``, both ends included."""
        return self._low, self._high

    @property
    def reserved(self) -> frozenset[int]:
        """Return the zones that are never handed out."""
        return self._reserved

    @property
    def store(self) -> AnyZoneStore:
        """Return the store that keeps this allocator's state."""
        return self._store

    # -- public API -------------------------------------------------------

    def allocate(self, key: str) -> int:
        """Return the zone of ``key``, giving it a free zone if it has none.

        :param key: the owner, a non-empty str without NUL or newline.
        :returns: the zone, the same one on every call until released.
        :raises exceptions.InvalidArgumentError: for a bad key.
        :raises exceptions.ZoneExhaustedError: when no zone is free.
        :raises exceptions.ZoneStoreError: when the store cannot be updated;
            nothing is then allocated.
        """
        validate_key(key)
        return self._space.allocate(key)

    def allocate_many(self, keys: Iterable[str]) -> dict[str, int]:
        """Return the zone of every key, giving a free zone to those without one.

        Every key gets its zone in one step (one transaction with a
        database store): either all of them or, on error, none.  Keys
        without a zone get them in the order given; a repeated key gets
        one zone.

        :param keys: the owners, each a non-empty str without NUL or newline.
        :returns: key to zone, for every key given.
        :raises exceptions.InvalidArgumentError: for a bad key (nothing is
            then allocated).
        :raises exceptions.ZoneExhaustedError: when fewer zones are free than
            keys without one; nothing is then allocated.
        :raises exceptions.ZoneStoreError: when the store cannot be updated.
        """
        wanted = [validate_key(key) for key in keys]
        if not wanted:
            return {}
        return self._space.allocate_many(wanted)

    def release(self, key: str) -> int | None:
        """Free the zone of ``key``; it goes to the back of the free order.

        :param key: the owner.
        :returns: the freed zone, or ``None`` when ``key`` had none.
        :raises exceptions.InvalidArgumentError: for a bad key.
        :raises exceptions.ZoneStoreError: when the store cannot be updated;
            the zone then stays allocated.
        """
        validate_key(key)
        return self._space.release(key)

    def get(self, key: str) -> int | None:
        """Return the zone of ``key``, or ``None`` when it has none.

        :param key: the owner.
        :returns: the zone, or ``None``.
        :raises exceptions.InvalidArgumentError: for a bad key.
        :raises exceptions.ZoneStoreError: when the store cannot be read.
        """
        validate_key(key)
        return self._space.get(key)

    def items(self) -> dict[str, int]:
        """Return a copy of the key to zone mapping.

        :returns: key to zone, for every key that owns one.
        :raises exceptions.ZoneStoreError: when the store cannot be read.
        """
        return self._space.items()

    def in_use(self) -> frozenset[int]:
        """Return the zones owned by a key.

        :returns: the owned zones.
        :raises exceptions.ZoneStoreError: when the store cannot be read.
        """
        return self._space.in_use()

    def held(self) -> frozenset[int]:
        """Return the zones held by :meth:`hold` and not yet unheld.

        :returns: the held zones.
        :raises exceptions.ZoneStoreError: when the store cannot be read.
        """
        return self._space.held()

    def restore(self, mapping: Mapping[str, int]) -> None:
        """Adopt known key to zone pairs, e.g. rebuilt after a restart.

        Pairs already present are kept; a held zone named here gets its
        owner back.  Either every pair is adopted or none is.

        :param mapping: key to zone pairs.
        :raises exceptions.InvalidArgumentError: for a bad key.
        :raises exceptions.InvalidZoneError: when a zone is outside the
            range, reserved, named twice, owned by another key, or a key
            already owns another zone.
        :raises exceptions.ZoneStoreError: when the store cannot be updated.
        """
        self._space.restore(dict(mapping))

    def hold(self, zones: Iterable[int]) -> frozenset[int]:
        """Keep zones that have live kernel flows but no owner from being handed out.

        Zones outside the range, reserved or owned are never handed out
        anyway and are ignored.

        :param zones: zones seen in the kernel table.
        :returns: the zones that were newly held.
        :raises exceptions.InvalidZoneError: when a value is not a zone in
            1..MAX_CONNTRACK_ZONE_ID (nothing is held then).
        :raises exceptions.ZoneStoreError: when the store cannot be updated.
        """
        wanted = [validate_zone(zone) for zone in zones]
        return self._space.hold(wanted)

    def unhold(self, zone: int) -> bool:
        """Free a held zone (once its flows are flushed) to the back of the free order.

        :param zone: the held zone.
        :returns: whether the zone was held.
        :raises exceptions.InvalidZoneError: when ``zone`` is not a zone.
        :raises exceptions.ZoneStoreError: when the store cannot be updated.
        """
        validate_zone(zone)
        return self._space.unhold(zone)

    def __len__(self) -> int:
        """Return how many keys own a zone."""
        return self._space.count()

    def __contains__(self, key: object) -> bool:
        """Return whether ``key`` owns a zone (False for a non-str or invalid key)."""
        if not isinstance(key, str):
            return False
        try:
            validate_key(key)
        except exceptions.InvalidArgumentError:
            return False
        return self._space.get(key) is not None

    def __repr__(self) -> str:
        return (
            f"ZoneAllocator(zone_range=({self._low}, {self._high}), "
            f"reserved={sorted(self._reserved)!r}, store={self._store!r})"
        )
