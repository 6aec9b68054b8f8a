"""The pure zone table and its storable snapshot; no locking, no I/O."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conntrack_lib import exceptions
from conntrack_lib.constants import MIN_CONNTRACK_ZONE_ID
from conntrack_lib.zones.validation import validate_key, validate_zone

#: Version of the JSON document written by the file store.
STORE_FORMAT_VERSION = 1
#: Value of the document's ``format`` field, to refuse foreign JSON files.
STORE_FORMAT_NAME = "conntrack_lib.zones"


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


class ZoneTable:
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

    def allocate_many(self, keys: Sequence[str]) -> tuple[dict[str, int], bool]:
        """Return ``(zones, changed)`` for ``keys``: every key gets a zone or none does.

        :raises exceptions.ZoneExhaustedError: when fewer zones are free than
            keys without one; the table is then unchanged.
        """
        missing = [key for key in dict.fromkeys(keys) if key not in self.by_key]
        if len(missing) > self.free_count():
            raise exceptions.ZoneExhaustedError(self.low, self.high, missing[0])
        for key in missing:
            self.allocate(key)
        return {key: self.by_key[key] for key in keys}, bool(missing)

    def free_count(self) -> int:
        """Return how many zones could still be handed out."""
        # Reserved zones are never owned or held, so the four sets are disjoint.
        taken = len(self.by_zone) + len(self.held) + len(self.reserved)
        return self.high - self.low + 1 - taken

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
    ) -> ZoneTable:
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


