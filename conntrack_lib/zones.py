"""Conntrack zone allocation that survives restarts and shares one host.

A :class:`ZoneAllocator` hands out conntrack zones to string keys (a port,
a router, a network) from a configured range, one zone per key.

Design
------

* **State.** The allocator keeps the key to zone mapping in two dicts (both
  directions), the set of *held* zones (zones with live kernel flows but no
  owner, never handed out until unheld), a *cursor* and a *recycled* queue.

* **Reuse order.** Zones that were never handed out come first, in
  ascending order, found by a cursor that only moves forward over the range.
  Once the range has been walked, zones come from the recycled queue, which
  holds released (and unheld) zones in the order they were freed: the zone
  freed longest ago is reused first and a zone that was just freed is reused
  last.  This keeps a freed zone's number out of circulation for as long as
  possible, so that late kernel flows or stale rules that still name it do
  not leak into a new owner.

* **Cost.** The recycled queue is an :class:`collections.OrderedDict`, so
  appending at the back, popping at the front and removing any zone are all
  O(1).  The cursor skips each zone at most once, so allocation is amortised
  O(1); every other mutation is O(1) per zone it names.

* **Stores.** A :class:`ZoneStore` decides where the state lives.
  :class:`MemoryZoneStore` (the default) keeps nothing beyond the allocator's
  memory.  :class:`FileZoneStore` keeps a JSON document on disk and an
  oslo.concurrency external lock beside it; every allocator operation then
  reloads the document (under the lock when it mutates), applies the change
  to a fresh copy, writes the document atomically and only then adopts the
  copy.  Several processes on one host therefore share one zone space, and a
  failed write leaves both the file and the in-memory state as they were.

The allocator does no process work and touches no kernel state; flushing the
flows of a released or held zone is the caller's business.

Example::

    store = FileZoneStore("/var/lib/myservice/ct-zones.json")
    zones = ZoneAllocator((4097, MAX_CONNTRACK_ZONE_ID), store=store)
    zone = zones.allocate("port-6f1c")   # the same zone on every call
    zones.release("port-6f1c")           # back of the free order

After a restart without a file store, rebuild the mapping with
:meth:`ZoneAllocator.restore` and protect zones that still have flows but no
owner with :meth:`ZoneAllocator.hold`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from oslo_concurrency import lockutils
from oslo_log import log as logging

from conntrack_lib import exceptions
from conntrack_lib.constants import MAX_CONNTRACK_ZONE_ID, MIN_CONNTRACK_ZONE_ID

LOG = logging.getLogger(__name__)

#: Longest key accepted, in characters.
MAX_KEY_LENGTH = 255
#: Version of the JSON document written by :class:`FileZoneStore`.
STORE_FORMAT_VERSION = 1
#: Value of the document's ``format`` field, to refuse foreign JSON files.
STORE_FORMAT_NAME = "conntrack_lib.zones"

_T = TypeVar("_T")


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def validate_key(key: object) -> str:
    """Return ``key`` when it is a usable allocation key.

    :param key: the candidate key.
    :returns: the key, unchanged.
    :raises exceptions.InvalidArgumentError: when it is not a non-empty
        str of at most :data:`MAX_KEY_LENGTH` characters without NUL or
        newline.
    """
    if not isinstance(key, str):
        raise exceptions.InvalidArgumentError("key", key, "must be a str")
    if not key:
        raise exceptions.InvalidArgumentError("key", key, "must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise exceptions.InvalidArgumentError(
            "key", key, f"longer than {MAX_KEY_LENGTH} characters"
        )
    if "\x00" in key or "\n" in key:
        raise exceptions.InvalidArgumentError("key", key, "contains NUL or newline")
    return key


def validate_zone(zone: object) -> int:
    """Return ``zone`` when it is an int in 1..MAX_CONNTRACK_ZONE_ID.

    :param zone: the candidate zone.
    :returns: the zone, unchanged.
    :raises exceptions.InvalidZoneError: otherwise (bools are refused too).
    """
    if not isinstance(zone, int) or isinstance(zone, bool):
        raise exceptions.InvalidZoneError(zone, "zone must be an int")
    if not MIN_CONNTRACK_ZONE_ID <= zone <= MAX_CONNTRACK_ZONE_ID:
        raise exceptions.InvalidZoneError(
            zone, f"outside {MIN_CONNTRACK_ZONE_ID}..{MAX_CONNTRACK_ZONE_ID}"
        )
    return zone


def validate_range(zone_range: object) -> tuple[int, int]:
    """Return ``zone_range`` as a ``(low, high)`` tuple of valid zones.

    :param zone_range: a pair of ints, both ends included.
    :returns: the pair as a tuple.
    :raises exceptions.InvalidZoneError: when it is not a pair, an end is
        not a valid zone or ``low > high``.
    """
    if not isinstance(zone_range, tuple | list) or len(zone_range) != 2:
        raise exceptions.InvalidZoneError(zone_range, "zone range must be a (low, high) pair")
    low, high = validate_zone(zone_range[0]), validate_zone(zone_range[1])
    if low > high:
        raise exceptions.InvalidZoneError(zone_range, "zone range low end is above its high end")
    return low, high


# --------------------------------------------------------------------------
# Snapshot: what a store keeps
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ZoneSnapshot:
    """Hold the complete, storable state of a zone space.

    Zones at or above ``next_fresh`` that are neither mapped, held nor listed
    in ``released`` have never been handed out.

    :param zone_range: ``(low, high)``, both ends included.
    :param zones: key to zone mapping.
    :param released: free zones that were handed out before, oldest first.
    :param held: zones with live flows and no owner.
    :param next_fresh: where the never-used cursor stands (low..high + 1).
    :param reserved: the reserved zones of the allocator that wrote it.
    """

    zone_range: tuple[int, int]
    zones: Mapping[str, int]
    released: tuple[int, ...] = ()
    held: tuple[int, ...] = ()
    next_fresh: int = MIN_CONNTRACK_ZONE_ID
    reserved: tuple[int, ...] = ()

    @classmethod
    def empty(cls, zone_range: tuple[int, int]) -> ZoneSnapshot:
        """Return the snapshot of a zone space where nothing was handed out."""
        return cls(zone_range, {}, (), (), zone_range[0])

    def to_document(self) -> dict[str, Any]:
        """Return the JSON-ready document :class:`FileZoneStore` writes."""
        return {
            "format": STORE_FORMAT_NAME,
            "version": STORE_FORMAT_VERSION,
            "range": list(self.zone_range),
            "next_fresh": self.next_fresh,
            "zones": dict(self.zones),
            "released": list(self.released),
            "held": list(self.held),
            "reserved": list(self.reserved),
        }

    @classmethod
    def from_document(cls, doc: object) -> ZoneSnapshot:
        """Build a snapshot from a decoded document, checking its shape.

        Only types and shape are checked here; whether the content is
        consistent with an allocator's range and reserved zones is checked
        when an allocator adopts it.

        :param doc: the decoded JSON value.
        :returns: the snapshot.
        :raises ValueError: when a field is missing or of the wrong type.
        """
        if not isinstance(doc, dict):
            raise ValueError("top level is not an object")
        if doc.get("format") != STORE_FORMAT_NAME:
            raise ValueError(f"format is not {STORE_FORMAT_NAME!r}")
        if doc.get("version") != STORE_FORMAT_VERSION:
            raise ValueError(f"unsupported version {doc.get('version')!r}")
        zone_range = _int_list(doc.get("range"), "range")
        if len(zone_range) != 2:
            raise ValueError("range is not a pair")
        zones = doc.get("zones")
        if not isinstance(zones, dict):
            raise ValueError("zones is not an object")
        for zone in zones.values():
            _check_int(zone, "zones")
        return cls(
            zone_range=(zone_range[0], zone_range[1]),
            zones=dict(zones),
            released=tuple(_int_list(doc.get("released"), "released")),
            held=tuple(_int_list(doc.get("held"), "held")),
            next_fresh=_check_int(doc.get("next_fresh"), "next_fresh"),
            reserved=tuple(_int_list(doc.get("reserved"), "reserved")),
        )


def _check_int(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{field} holds a non-integer {value!r}")
    return value


def _int_list(value: object, field: str) -> list[int]:
    if not isinstance(value, list):
        raise ValueError(f"{field} is not a list")
    return [_check_int(item, field) for item in value]


# --------------------------------------------------------------------------
# The pure table
# --------------------------------------------------------------------------


class _ZoneTable:
    """Keep the mapping and the free order; no locking, no I/O.

    Every method validates all of its input before it mutates anything, so
    a raised error leaves the table as it was.
    """

    __slots__ = ("by_key", "by_zone", "cursor", "held", "high", "low", "recycled", "reserved")

    def __init__(self, low: int, high: int, reserved: frozenset[int]) -> None:
        self.low = low
        self.high = high
        self.reserved = reserved
        self.by_key: dict[str, int] = {}
        self.by_zone: dict[int, str] = {}
        self.held: set[int] = set()
        # Released zones, oldest release first; values are unused.
        self.recycled: OrderedDict[int, None] = OrderedDict()
        # Zones >= cursor not otherwise accounted for were never handed out.
        self.cursor = low

    # -- queries ----------------------------------------------------------

    def _accounted(self, zone: int) -> bool:
        # A zone the cursor must not hand out as never-used.
        return (
            zone in self.by_zone
            or zone in self.held
            or zone in self.reserved
            or zone in self.recycled
        )

    def in_range(self, zone: int) -> bool:
        """Return whether ``zone`` lies in this table's range."""
        return self.low <= zone <= self.high

    # -- mutations --------------------------------------------------------

    def allocate(self, key: str) -> tuple[int, bool]:
        """Return ``(zone, changed)`` for ``key``, giving it a zone if needed."""
        zone = self.by_key.get(key)
        if zone is not None:
            return zone, False
        zone = self._take_free()
        if zone is None:
            raise exceptions.ZoneExhaustedError(self.low, self.high, key)
        self.by_key[key] = zone
        self.by_zone[zone] = key
        return zone, True

    def _take_free(self) -> int | None:
        while self.cursor <= self.high and self._accounted(self.cursor):
            self.cursor += 1
        if self.cursor <= self.high:
            self.cursor += 1
            return self.cursor - 1
        if self.recycled:
            return self.recycled.popitem(last=False)[0]
        return None

    def release(self, key: str) -> int | None:
        """Free the zone of ``key`` to the back of the free order."""
        zone = self.by_key.pop(key, None)
        if zone is not None:
            del self.by_zone[zone]
            self.recycled[zone] = None
        return zone

    def check_restore(self, mapping: Mapping[str, int]) -> None:
        """Raise unless every pair of ``mapping`` can be adopted."""
        seen: dict[int, str] = {}
        for key, zone in mapping.items():
            validate_key(key)
            self._check_restorable_zone(validate_zone(zone))
            if zone in seen:
                raise exceptions.InvalidZoneError(
                    zone, f"given to both {seen[zone]!r} and {key!r}"
                )
            seen[zone] = key
            self._check_no_conflict(key, zone)

    def _check_restorable_zone(self, zone: int) -> None:
        if not self.in_range(zone):
            raise exceptions.InvalidZoneError(zone, f"outside the range {self.low}..{self.high}")
        if zone in self.reserved:
            raise exceptions.InvalidZoneError(zone, "zone is reserved")

    def _check_no_conflict(self, key: str, zone: int) -> None:
        current = self.by_key.get(key)
        if current is not None and current != zone:
            raise exceptions.InvalidZoneError(zone, f"{key!r} already owns zone {current}")
        owner = self.by_zone.get(zone)
        if owner is not None and owner != key:
            raise exceptions.InvalidZoneError(zone, f"zone already owned by {owner!r}")

    def restore(self, mapping: Mapping[str, int]) -> bool:
        """Adopt every pair of ``mapping``; return whether anything changed."""
        self.check_restore(mapping)
        changed = False
        for key, zone in mapping.items():
            if self.by_key.get(key) == zone:
                continue
            self.by_key[key] = zone
            self.by_zone[zone] = key
            self.held.discard(zone)
            self.recycled.pop(zone, None)
            changed = True
        return changed

    def hold(self, zones: Iterable[int]) -> frozenset[int]:
        """Hold every unowned zone of ``zones`` in range; return those newly held."""
        wanted = [validate_zone(zone) for zone in zones]
        added: set[int] = set()
        for zone in wanted:
            if not self.in_range(zone) or zone in self.reserved or zone in self.by_zone:
                continue
            if zone not in self.held:
                self.held.add(zone)
                self.recycled.pop(zone, None)
                added.add(zone)
        return frozenset(added)

    def unhold(self, zone: int) -> bool:
        """Free held ``zone`` to the back of the free order; return whether it was held."""
        validate_zone(zone)
        if zone not in self.held:
            return False
        self.held.remove(zone)
        self.recycled[zone] = None
        return True

    # -- snapshots --------------------------------------------------------

    def snapshot(self) -> ZoneSnapshot:
        """Return the storable state of this table."""
        return ZoneSnapshot(
            zone_range=(self.low, self.high),
            zones=dict(self.by_key),
            released=tuple(self.recycled),
            held=tuple(sorted(self.held)),
            next_fresh=self.cursor,
            reserved=tuple(sorted(self.reserved)),
        )

    @classmethod
    def from_snapshot(
        cls, snap: ZoneSnapshot, low: int, high: int, reserved: frozenset[int]
    ) -> _ZoneTable:
        """Build a table from ``snap``, checking it against this configuration.

        :raises ValueError: when the snapshot is inconsistent or belongs to
            another range.
        """
        if snap.zone_range != (low, high):
            raise ValueError(
                f"stored range {snap.zone_range[0]}..{snap.zone_range[1]} "
                f"differs from the configured {low}..{high}"
            )
        if not low <= snap.next_fresh <= high + 1:
            raise ValueError(f"next_fresh {snap.next_fresh} outside {low}..{high + 1}")
        table = cls(low, high, reserved)
        try:
            table.restore(snap.zones)
        except exceptions.ConntrackError as exc:
            raise ValueError(f"invalid mapping: {exc}") from exc
        table._adopt_free_lists(snap)
        table.cursor = snap.next_fresh
        table._recycle_unreserved(snap.reserved)
        return table

    def _recycle_unreserved(self, stored_reserved: Iterable[int]) -> None:
        # A zone reserved when the cursor passed it, and no longer reserved
        # now, would otherwise never be handed out again.
        for zone in sorted(stored_reserved):
            if self.low <= zone < self.cursor and not self._accounted(zone):
                self.recycled[zone] = None

    def _adopt_free_lists(self, snap: ZoneSnapshot) -> None:
        for name, zones in (("held", snap.held), ("released", snap.released)):
            for zone in zones:
                if not self.in_range(zone):
                    raise ValueError(f"{name} zone {zone} outside {self.low}..{self.high}")
                if zone in self.by_zone or zone in self.held or zone in self.recycled:
                    raise ValueError(f"{name} zone {zone} listed twice")
                # A zone reserved since it was stored is never handed out anyway.
                if zone in self.reserved:
                    continue
                if name == "held":
                    self.held.add(zone)
                else:
                    self.recycled[zone] = None


# --------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------


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
        """Return a context that does nothing (the allocator's lock suffices)."""
        return contextlib.nullcontext()

    def load(self) -> ZoneSnapshot | None:
        """Return ``None``: nothing is kept here."""
        return None

    def save(self, snapshot: ZoneSnapshot) -> None:
        """Discard ``snapshot``: nothing is kept here."""


class FileZoneStore:
    """Keep a zone space in a JSON file shared by the processes of a host.

    The document holds the mapping, the released zones in release order,
    the held zones, the never-used cursor and the reserved zones (see
    :class:`ZoneSnapshot`).  Every process sharing the file must use the
    same range; a different range is refused.  A zone that was reserved
    when the document was written and is not reserved any more joins the
    back of the free order.

    Writes are atomic: the document goes to a temporary file in the same
    directory, which is fsynced, renamed over the target with
    :func:`os.replace`, and then the directory is fsynced.  A crash at any
    point therefore leaves either the previous or the new document.

    Read-modify-write cycles are guarded by an oslo.concurrency external
    lock named after the file; every process sharing the file must use the
    same ``lock_path``.  A missing file is an empty zone space; a file that
    cannot be decoded or has the wrong shape is refused, never reset.

    :param path: the JSON file; its directory must exist.
    :param lock_path: directory of the lock file; defaults to the
        directory of ``path``.
    """

    persistent = True

    def __init__(self, path: str | os.PathLike[str], lock_path: str | None = None) -> None:
        self._path = os.path.abspath(os.fspath(path))
        self._dir = os.path.dirname(self._path)
        self._lock_path = lock_path if lock_path is not None else self._dir
        self._lock_name = os.path.basename(self._path) + ".lock"
        self._tmp_prefix = "." + os.path.basename(self._path) + "."
        self._swept = False

    @property
    def path(self) -> str:
        """Return the absolute path of the JSON file."""
        return self._path

    @property
    def location(self) -> str:
        """Return the absolute path of the JSON file."""
        return self._path

    def __repr__(self) -> str:
        return f"FileZoneStore({self._path!r}, lock_path={self._lock_path!r})"

    @contextlib.contextmanager
    def locked(self) -> Iterator[object]:
        """Hold the external (inter-process) lock of this file.

        :raises exceptions.ZoneStoreError: when the lock file cannot be
            created or locked (read-only or full disk).
        """
        with contextlib.ExitStack() as stack:
            try:
                held = stack.enter_context(lockutils.lock(
                    self._lock_name, external=True, lock_path=self._lock_path, do_log=False
                ))
            except OSError as exc:
                raise self._error("cannot lock", exc) from exc
            yield held

    def load(self) -> ZoneSnapshot | None:
        """Return the stored snapshot, or ``None`` when the file is missing.

        :raises exceptions.ZoneStoreError: when the file cannot be read,
            decoded or has the wrong shape.
        """
        try:
            with open(self._path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("cannot read", exc) from exc
        try:
            doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_object)
            return ZoneSnapshot.from_document(doc)
        except (ValueError, RecursionError) as exc:
            raise exceptions.ZoneStoreError(self._path, f"refused: {exc}") from exc

    def save(self, snapshot: ZoneSnapshot) -> None:
        """Write ``snapshot`` atomically; call it while holding :meth:`locked`.

        :raises exceptions.ZoneStoreError: when any step of the write fails;
            the previous file is then untouched.
        """
        data = json.dumps(snapshot.to_document(), separators=(",", ":")).encode("utf-8")
        self._sweep_stale_temps()
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=self._tmp_prefix, suffix=".tmp", dir=self._dir)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
            tmp = None
        except OSError as exc:
            raise self._error("cannot write", exc) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        try:
            self._fsync_dir()
        except OSError as exc:
            # The rename already published the new state to every reader:
            # failing now would tell the caller "not saved" while other
            # processes see it.  Only its durability across a power loss is
            # in doubt.
            LOG.warning("zone store %s: saved, but syncing its directory failed: %s",
                        self._path, exc)

    def _fsync_dir(self) -> None:
        # Makes the rename itself durable, not only the file's content.
        fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sweep_stale_temps(self) -> None:
        # Under the lock no other writer is mid-write, so a temporary file
        # left here is debris of a writer killed before its rename.
        if self._swept:
            return
        with contextlib.suppress(OSError):
            for name in os.listdir(self._dir):
                if name.startswith(self._tmp_prefix) and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self._dir, name))
        self._swept = True

    def _error(self, what: str, exc: OSError) -> exceptions.ZoneStoreError:
        return exceptions.ZoneStoreError(self._path, f"{what}: {exc.strerror or exc}")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key would silently collapse two owners into one.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


# --------------------------------------------------------------------------
# The allocator
# --------------------------------------------------------------------------


class ZoneAllocator:
    """Hand out conntrack zones to keys, one zone per key, thread-safely.

    See the module documentation for the reuse order and the cost of each
    operation.  With a :class:`FileZoneStore` every operation first reloads
    the file, so several processes share one zone space; a mutation runs
    under the store's external lock and is adopted in memory only after
    the file was written.

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
        store: ZoneStore | None = None,
    ) -> None:
        self._low, self._high = validate_range(zone_range)
        self._reserved = self._check_reserved(reserved)
        self._store: ZoneStore = store if store is not None else MemoryZoneStore()
        self._lock = threading.Lock()
        self._table = _ZoneTable(self._low, self._high, self._reserved)
        if self._store.persistent:
            # Refuse an unusable file now rather than at the first allocation.
            self._table = self._loaded_table()

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
    def store(self) -> ZoneStore:
        """Return the store that keeps this allocator's state."""
        return self._store

    # -- plumbing ---------------------------------------------------------

    def _loaded_table(self) -> _ZoneTable:
        snap = self._store.load()
        if snap is None:
            return _ZoneTable(self._low, self._high, self._reserved)
        try:
            return _ZoneTable.from_snapshot(snap, self._low, self._high, self._reserved)
        except ValueError as exc:
            raise exceptions.ZoneStoreError(self._store.location, f"refused: {exc}") from exc

    def _read(self, query: Callable[[_ZoneTable], _T]) -> _T:
        with self._lock:
            if self._store.persistent:
                # os.replace makes every file we open complete: no lock needed.
                self._table = self._loaded_table()
            return query(self._table)

    def _mutate(self, change: Callable[[_ZoneTable], tuple[_T, bool]]) -> _T:
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
        return self._mutate(lambda table: table.allocate(key))

    def release(self, key: str) -> int | None:
        """Free the zone of ``key``; it goes to the back of the free order.

        :param key: the owner.
        :returns: the freed zone, or ``None`` when ``key`` had none.
        :raises exceptions.InvalidArgumentError: for a bad key.
        :raises exceptions.ZoneStoreError: when the store cannot be updated;
            the zone then stays allocated.
        """
        validate_key(key)

        def change(table: _ZoneTable) -> tuple[int | None, bool]:
            zone = table.release(key)
            return zone, zone is not None

        return self._mutate(change)

    def get(self, key: str) -> int | None:
        """Return the zone of ``key``, or ``None`` when it has none.

        :raises exceptions.InvalidArgumentError: for a bad key.
        """
        validate_key(key)
        return self._read(lambda table: table.by_key.get(key))

    def items(self) -> dict[str, int]:
        """Return a copy of the key to zone mapping."""
        return self._read(lambda table: dict(table.by_key))

    def in_use(self) -> frozenset[int]:
        """Return the zones owned by a key."""
        return self._read(lambda table: frozenset(table.by_zone))

    def held(self) -> frozenset[int]:
        """Return the zones held by :meth:`hold` and not yet unheld."""
        return self._read(lambda table: frozenset(table.held))

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
        pairs = dict(mapping)
        self._mutate(lambda table: (None, table.restore(pairs)))

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
        wanted = list(zones)

        def change(table: _ZoneTable) -> tuple[frozenset[int], bool]:
            added = table.hold(wanted)
            return added, bool(added)

        return self._mutate(change)

    def unhold(self, zone: int) -> bool:
        """Free a held zone (once its flows are flushed) to the back of the free order.

        :param zone: the held zone.
        :returns: whether the zone was held.
        :raises exceptions.InvalidZoneError: when ``zone`` is not a zone.
        :raises exceptions.ZoneStoreError: when the store cannot be updated.
        """
        validate_zone(zone)

        def change(table: _ZoneTable) -> tuple[bool, bool]:
            freed = table.unhold(zone)
            return freed, freed

        return self._mutate(change)

    def __len__(self) -> int:
        """Return how many keys own a zone."""
        return self._read(lambda table: len(table.by_key))

    def __contains__(self, key: object) -> bool:
        """Return whether ``key`` owns a zone (False for a non-str)."""
        if not isinstance(key, str):
            return False
        return self._read(lambda table: key in table.by_key)

    def __repr__(self) -> str:
        return (
            f"ZoneAllocator(zone_range=({self._low}, {self._high}), "
            f"reserved={sorted(self._reserved)!r}, store={self._store!r})"
        )


__all__ = [
    "MAX_KEY_LENGTH",
    "FileZoneStore",
    "MemoryZoneStore",
    "ZoneAllocator",
    "ZoneSnapshot",
    "ZoneStore",
    "validate_key",
    "validate_range",
    "validate_zone",
]
