"""Property tests of ZoneAllocator against a plain reference model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conntrack_lib import exceptions
from conntrack_lib.zones import FileZoneStore, ZoneAllocator

# FileZoneStore is deprecated; these tests keep covering it until it goes.
pytestmark = pytest.mark.filterwarnings("ignore:FileZoneStore is deprecated:DeprecationWarning")

LOW, HIGH = 20, 31
RESERVED = frozenset({22, 27})
KEYS = st.sampled_from([f"k{i}" for i in range(16)])
ZONES = st.integers(min_value=LOW - 2, max_value=HIGH + 2)


class ZoneModel:
    """State the allocator must agree with, written in the plainest way."""

    def __init__(self) -> None:
        self.owned: dict[str, int] = {}
        self.held: set[int] = set()
        # Zones that were never handed out, held or restored.
        self.untouched = set(range(LOW, HIGH + 1)) - RESERVED
        # Freed zones, oldest first.
        self.recycled: list[int] = []

    def _claim(self, zone: int) -> None:
        self.untouched.discard(zone)
        if zone in self.recycled:
            self.recycled.remove(zone)

    def allocate(self, key: str) -> int | None:
        """Return the expected zone, or None when the range is exhausted."""
        if key in self.owned:
            return self.owned[key]
        if self.untouched:
            zone = min(self.untouched)
        elif self.recycled:
            zone = self.recycled[0]
        else:
            return None
        self._claim(zone)
        self.owned[key] = zone
        return zone

    def release(self, key: str) -> int | None:
        """Return the expected freed zone."""
        zone = self.owned.pop(key, None)
        if zone is not None:
            self.recycled.append(zone)
        return zone

    def restore_error(self, mapping: dict[str, int]) -> bool:
        """Return whether restoring ``mapping`` must be refused."""
        zones = list(mapping.values())
        if len(set(zones)) != len(zones):
            return True
        owners = {zone: key for key, zone in self.owned.items()}
        for key, zone in mapping.items():
            if not LOW <= zone <= HIGH or zone in RESERVED:
                return True
            if self.owned.get(key, zone) != zone or owners.get(zone, key) != key:
                return True
        return False

    def restore(self, mapping: dict[str, int]) -> None:
        """Adopt ``mapping`` (already checked)."""
        for key, zone in mapping.items():
            if self.owned.get(key) != zone:
                self.owned[key] = zone
                self.held.discard(zone)
                self._claim(zone)

    def hold(self, zones: list[int]) -> frozenset[int]:
        """Return the zones expected to be newly held."""
        added = set()
        for zone in zones:
            in_range = LOW <= zone <= HIGH and zone not in RESERVED
            if in_range and zone not in self.owned.values() and zone not in self.held:
                self.held.add(zone)
                self._claim(zone)
                added.add(zone)
        return frozenset(added)

    def unhold(self, zone: int) -> bool:
        """Return whether ``zone`` was held."""
        if zone not in self.held:
            return False
        self.held.remove(zone)
        self.recycled.append(zone)
        return True


class ZoneAllocatorMachine(RuleBasedStateMachine):
    """Drive an allocator and the model with the same random operations."""

    def __init__(self) -> None:
        super().__init__()
        self.model = ZoneModel()
        self.alloc = self.make_allocator()

    def make_allocator(self) -> ZoneAllocator:
        """Return the allocator under test."""
        return ZoneAllocator((LOW, HIGH), reserved=RESERVED)

    @rule(key=KEYS)
    def allocate(self, key: str) -> None:
        expected = self.model.allocate(key)
        if expected is None:
            with pytest.raises(exceptions.ZoneExhaustedError):
                self.alloc.allocate(key)
        else:
            assert self.alloc.allocate(key) == expected
            # Idempotence: asking again changes nothing.
            assert self.alloc.allocate(key) == expected

    @rule(key=KEYS)
    def release(self, key: str) -> None:
        assert self.alloc.release(key) == self.model.release(key)

    @rule(mapping=st.dictionaries(KEYS, ZONES, max_size=4))
    def restore(self, mapping: dict[str, int]) -> None:
        if self.model.restore_error(mapping):
            before = self.alloc.items()
            with pytest.raises(exceptions.InvalidZoneError):
                self.alloc.restore(mapping)
            assert self.alloc.items() == before
        else:
            self.alloc.restore(mapping)
            self.model.restore(mapping)

    @rule(zones=st.lists(ZONES, max_size=4))
    def hold(self, zones: list[int]) -> None:
        assert self.alloc.hold(zones) == self.model.hold(zones)

    @precondition(lambda self: bool(self.model.held))
    @rule(data=st.data())
    def unhold_held(self, data: st.DataObject) -> None:
        zone = data.draw(st.sampled_from(sorted(self.model.held)))
        assert self.alloc.unhold(zone) is self.model.unhold(zone)

    @rule(zone=ZONES)
    def unhold_any(self, zone: int) -> None:
        assert self.alloc.unhold(zone) is self.model.unhold(zone)

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.alloc.items() == self.model.owned
        assert self.alloc.held() == frozenset(self.model.held)

    @invariant()
    def zones_are_distinct_in_range_and_free_of_reserved_and_held(self) -> None:
        zones = list(self.alloc.items().values())
        assert len(zones) == len(set(zones))
        assert self.alloc.in_use() == frozenset(zones)
        for zone in zones:
            assert LOW <= zone <= HIGH
            assert zone not in RESERVED
            assert zone not in self.alloc.held()


class FileZoneAllocatorMachine(ZoneAllocatorMachine):
    """Run the same machine through a file store, reopened at every step."""

    def make_allocator(self) -> ZoneAllocator:
        """Return an allocator over a fresh file in a fresh directory."""
        self.directory = Path(tempfile.mkdtemp(prefix="zones-property-"))
        return self.reopen()

    def reopen(self) -> ZoneAllocator:
        """Return a new allocator that knows only what the file holds."""
        store = FileZoneStore(self.directory / "zones.json")
        return ZoneAllocator((LOW, HIGH), reserved=RESERVED, store=store)

    @invariant()
    def survives_a_restart(self) -> None:
        # A process started now must agree with the model, order included.
        self.alloc = self.reopen()

    def teardown(self) -> None:
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()


TestZoneAllocatorProperty = ZoneAllocatorMachine.TestCase
TestFileZoneAllocatorProperty = FileZoneAllocatorMachine.TestCase
TestFileZoneAllocatorProperty.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)


@given(
    reserved=st.frozensets(st.integers(1, 40), max_size=10),
    keys=st.lists(st.text(min_size=1, max_size=8).filter(lambda k: "\x00" not in k
                                                         and "\n" not in k), max_size=60),
)
def test_property_allocation_fills_exactly_the_unreserved_zones(
    reserved: frozenset[int], keys: list[str]
) -> None:
    alloc = ZoneAllocator((1, 40), reserved=reserved)
    capacity = 40 - len(reserved)
    distinct = list(dict.fromkeys(keys))
    for key in distinct[:capacity]:
        zone = alloc.allocate(key)
        assert zone not in reserved
    assert alloc.in_use() == frozenset(sorted(set(range(1, 41)) - reserved)[: len(distinct)])
    for key in distinct[capacity:]:
        with pytest.raises(exceptions.ZoneExhaustedError):
            alloc.allocate(key)
