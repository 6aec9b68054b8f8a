"""Unit tests of conntrack_lib.zones: allocator rules and the file store."""

from __future__ import annotations

import errno
import json
import os
import random
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

from conntrack_lib import exceptions
from conntrack_lib.constants import MAX_CONNTRACK_ZONE_ID
from conntrack_lib.zones import (
    FileZoneStore,
    MemoryZoneStore,
    ZoneAllocator,
    ZoneSnapshot,
    ZoneStore,
)

# FileZoneStore is deprecated; these tests keep covering it until it goes.
pytestmark = pytest.mark.filterwarnings("ignore:FileZoneStore is deprecated:DeprecationWarning")

# -- bounds -----------------------------------------------------------------


@pytest.mark.parametrize("zone_range", [(1, 1), (1, 65535), (65535, 65535), (4097, 65535)])
def test_valid_ranges_are_accepted(zone_range: tuple[int, int]) -> None:
    alloc = ZoneAllocator(zone_range)
    assert alloc.zone_range == zone_range
    assert alloc.allocate("a") == zone_range[0]


@pytest.mark.parametrize(
    "zone_range",
    [(0, 10), (1, 65536), (0, 0), (65536, 65536), (10, 9), (-1, 5), (1.0, 5), (True, 5), (1,)],
)

def test_invalid_ranges_are_refused(zone_range: tuple[int, int]) -> None:
    with pytest.raises(exceptions.InvalidZoneError):
        ZoneAllocator(zone_range)


def test_default_range_is_the_whole_zone_space() -> None:
    assert ZoneAllocator().zone_range == (1, MAX_CONNTRACK_ZONE_ID)


@pytest.mark.parametrize("zone", [0, 11, 65536, -3])
def test_reserved_zone_outside_range_is_refused(zone: int) -> None:
    with pytest.raises(exceptions.InvalidZoneError) as info:
        ZoneAllocator((1, 10), reserved=[2, zone])
    assert info.value.zone == zone


def test_invalid_zone_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="zone"):
        ZoneAllocator((5, 1))


@pytest.mark.parametrize(
    "key", ["", "x" * 256, "a\x00b", "a\nb", None, 5, b"bytes"]
)
def test_bad_keys_are_refused_everywhere(key: object) -> None:
    alloc = ZoneAllocator((1, 10))
    for call in (alloc.allocate, alloc.release, alloc.get):
        with pytest.raises(exceptions.InvalidArgumentError):
            call(key)  # type: ignore[arg-type]
    assert len(alloc) == 0


def test_longest_key_is_accepted() -> None:
    alloc = ZoneAllocator((1, 10))
    key = "k" * 255
    assert alloc.allocate(key) == 1
    assert key in alloc


def test_contains_is_false_for_non_keys() -> None:
    alloc = ZoneAllocator((1, 10))
    alloc.allocate("a")
    assert "a" in alloc
    assert "b" not in alloc
    assert 1 not in alloc


# -- allocation -------------------------------------------------------------


def test_allocate_is_idempotent_per_key() -> None:
    alloc = ZoneAllocator((100, 200))
    first = alloc.allocate("port-1")
    assert alloc.allocate("port-1") == first
    assert alloc.allocate("port-2") != first
    assert len(alloc) == 2
    assert alloc.get("port-1") == first


def test_never_used_zones_come_in_ascending_order() -> None:
    alloc = ZoneAllocator((10, 20))
    assert [alloc.allocate(f"k{i}") for i in range(11)] == list(range(10, 21))


def test_exhaustion_raises_with_range_and_key() -> None:
    alloc = ZoneAllocator((1, 3), reserved=[2])
    alloc.allocate("a")
    alloc.allocate("b")
    with pytest.raises(exceptions.ZoneExhaustedError) as info:
        alloc.allocate("c")
    assert (info.value.low, info.value.high, info.value.key) == (1, 3, "c")
    assert "c" not in alloc
    # An existing key still gets its zone when the range is full.
    assert alloc.allocate("a") == 1


def test_exhausted_error_rebuilds_from_its_args() -> None:
    alloc = ZoneAllocator((7, 7))
    alloc.allocate("a")
    with pytest.raises(exceptions.ZoneExhaustedError) as info:
        alloc.allocate("b")
    copy = type(info.value)(*info.value.args)
    assert (copy.low, copy.high, copy.key) == (7, 7, "b")
    assert str(copy) == str(info.value)


def test_reserved_zones_are_never_handed_out() -> None:
    reserved = {1, 3, 5, 7, 9}
    alloc = ZoneAllocator((1, 10), reserved=reserved)
    zones = {alloc.allocate(f"k{i}") for i in range(5)}
    assert zones == {2, 4, 6, 8, 10}
    for i in range(5):
        alloc.release(f"k{i}")
        assert alloc.allocate(f"n{i}") not in reserved
    assert alloc.reserved == frozenset(reserved)


def test_release_returns_the_zone_and_forgets_the_key() -> None:
    alloc = ZoneAllocator((1, 10))
    zone = alloc.allocate("a")
    assert alloc.release("a") == zone
    assert alloc.get("a") is None
    assert "a" not in alloc
    assert alloc.release("a") is None
    assert alloc.in_use() == frozenset()


def test_released_zone_goes_to_the_back_of_the_free_order() -> None:
    alloc = ZoneAllocator((1, 5))
    for i in range(5):
        alloc.allocate(f"k{i}")
    # Release 4, then 2, then 5: reuse must follow release order.
    for key in ("k3", "k1", "k4"):
        alloc.release(key)
    assert [alloc.allocate(f"n{i}") for i in range(3)] == [4, 2, 5]


def test_just_released_zone_waits_while_never_used_zones_remain() -> None:
    alloc = ZoneAllocator((1, 4))
    assert alloc.allocate("a") == 1
    alloc.release("a")
    assert [alloc.allocate(k) for k in "bcd"] == [2, 3, 4]
    assert alloc.allocate("e") == 1


def test_oldest_release_is_reused_first() -> None:
    alloc = ZoneAllocator((1, 3))
    for key in "abc":
        alloc.allocate(key)
    alloc.release("a")
    alloc.release("b")
    assert alloc.allocate("x") == 1
    alloc.release("c")
    assert alloc.allocate("y") == 2
    assert alloc.allocate("z") == 3


def test_items_returns_a_copy() -> None:
    alloc = ZoneAllocator((1, 10))
    alloc.allocate("a")
    snapshot = alloc.items()
    snapshot["b"] = 2
    assert alloc.items() == {"a": 1}


def test_in_use_lists_owned_zones() -> None:
    alloc = ZoneAllocator((1, 10))
    for key in "abc":
        alloc.allocate(key)
    alloc.release("b")
    assert alloc.in_use() == frozenset({1, 3})


# -- restore ----------------------------------------------------------------


def test_restore_adopts_a_valid_mapping() -> None:
    alloc = ZoneAllocator((1, 10))
    alloc.restore({"a": 3, "b": 7})
    assert alloc.items() == {"a": 3, "b": 7}
    assert alloc.allocate("a") == 3
    # Restored zones are skipped by later allocations.
    assert [alloc.allocate(f"k{i}") for i in range(4)] == [1, 2, 4, 5]


def test_restore_is_idempotent_and_merges() -> None:
    alloc = ZoneAllocator((1, 10))
    alloc.allocate("x")
    alloc.restore({"a": 3})
    alloc.restore({"a": 3, "b": 4})
    assert alloc.items() == {"x": 1, "a": 3, "b": 4}


@pytest.mark.parametrize(
    ("mapping", "bad_zone"),
    [
        ({"a": 3, "b": 3}, 3),
        ({"a": 11}, 11),
        ({"a": 0}, 0),
        ({"a": 65536}, 65536),
        ({"a": 5}, 5),
    ],
)
def test_restore_refuses_bad_mappings_atomically(
    mapping: dict[str, int], bad_zone: int
) -> None:
    alloc = ZoneAllocator((1, 10), reserved=[5])
    alloc.allocate("keep")
    with pytest.raises(exceptions.InvalidZoneError) as info:
        alloc.restore({"good": 2, **mapping})
    assert info.value.zone == bad_zone
    assert alloc.items() == {"keep": 1}


def test_restore_refuses_zone_owned_by_another_key() -> None:
    alloc = ZoneAllocator((1, 10))
    alloc.allocate("a")
    with pytest.raises(exceptions.InvalidZoneError, match="owned by 'a'"):
        alloc.restore({"b": 1})


def test_restore_refuses_key_that_owns_another_zone() -> None:
    alloc = ZoneAllocator((1, 10))
    alloc.allocate("a")
    with pytest.raises(exceptions.InvalidZoneError, match="already owns zone 1"):
        alloc.restore({"a": 2})
    assert alloc.items() == {"a": 1}


def test_restore_refuses_bad_keys_and_non_int_zones() -> None:
    alloc = ZoneAllocator((1, 10))
    with pytest.raises(exceptions.InvalidArgumentError):
        alloc.restore({"": 2})
    with pytest.raises(exceptions.InvalidZoneError):
        alloc.restore({"a": "2"})  # type: ignore[dict-item]
    with pytest.raises(exceptions.InvalidZoneError):
        alloc.restore({"a": True})
    assert len(alloc) == 0


def test_restore_takes_a_zone_out_of_the_recycled_queue() -> None:
    alloc = ZoneAllocator((1, 2))
    alloc.allocate("a")
    alloc.allocate("b")
    alloc.release("a")
    alloc.restore({"c": 1})
    with pytest.raises(exceptions.ZoneExhaustedError):
        alloc.allocate("d")


# -- hold / unhold ----------------------------------------------------------


def test_held_zones_are_never_handed_out() -> None:
    alloc = ZoneAllocator((1, 5))
    assert alloc.hold([2, 4]) == frozenset({2, 4})
    assert alloc.held() == frozenset({2, 4})
    assert [alloc.allocate(k) for k in "abc"] == [1, 3, 5]
    with pytest.raises(exceptions.ZoneExhaustedError):
        alloc.allocate("d")


def test_hold_ignores_owned_reserved_and_out_of_range_zones() -> None:
    alloc = ZoneAllocator((10, 20), reserved=[15])
    alloc.allocate("a")
    assert alloc.hold([10, 15, 5, 30, 12, 12]) == frozenset({12})
    assert alloc.held() == frozenset({12})
    assert alloc.hold([12]) == frozenset()


@pytest.mark.parametrize("bad", [0, 65536, "3", None, True])
def test_hold_refuses_non_zones_and_holds_nothing(bad: object) -> None:
    alloc = ZoneAllocator((1, 10))
    with pytest.raises(exceptions.InvalidZoneError):
        alloc.hold([3, bad])  # type: ignore[list-item]
    assert alloc.held() == frozenset()


def test_unhold_frees_the_zone_to_the_back() -> None:
    alloc = ZoneAllocator((1, 3))
    alloc.hold([1])
    assert alloc.allocate("a") == 2
    alloc.release("a")
    assert alloc.unhold(1) is True
    assert alloc.unhold(1) is False
    assert alloc.held() == frozenset()
    # Never-used 3 first, then 2 (released earlier), then 1 (unheld later).
    assert [alloc.allocate(k) for k in "bcd"] == [3, 2, 1]


def test_unhold_refuses_non_zones() -> None:
    alloc = ZoneAllocator((1, 3))
    with pytest.raises(exceptions.InvalidZoneError):
        alloc.unhold(0)


def test_hold_takes_a_zone_out_of_the_recycled_queue() -> None:
    alloc = ZoneAllocator((1, 2))
    alloc.allocate("a")
    alloc.allocate("b")
    alloc.release("a")
    alloc.hold([1])
    with pytest.raises(exceptions.ZoneExhaustedError):
        alloc.allocate("c")


def test_restore_gives_a_held_zone_its_owner() -> None:
    alloc = ZoneAllocator((1, 5))
    alloc.hold([3])
    alloc.restore({"a": 3})
    assert alloc.held() == frozenset()
    assert alloc.get("a") == 3


# -- complexity -------------------------------------------------------------


def test_full_range_and_churn_run_fast() -> None:
    alloc = ZoneAllocator()
    start = time.perf_counter()
    for i in range(MAX_CONNTRACK_ZONE_ID):
        alloc.allocate(f"k{i}")
    rng = random.Random(7)
    victims = rng.sample(range(MAX_CONNTRACK_ZONE_ID), 10_000)
    for i in victims:
        alloc.release(f"k{i}")
    for i in victims:
        alloc.allocate(f"n{i}")
    elapsed = time.perf_counter() - start
    assert len(alloc.in_use()) == MAX_CONNTRACK_ZONE_ID
    # Measured ~0.15 s alone, 2.2 s once beside another suite on 2 cores; a
    # linear scan per allocation would take minutes.
    assert elapsed < 10.0


# -- thread safety ----------------------------------------------------------


def _hammer(alloc: ZoneAllocator, worker: int, owned: dict[str, int], errors: list[str]) -> None:
    rng = random.Random(worker)
    mine: dict[str, int] = {}
    for step in range(1500):
        if mine and rng.random() < 0.4:
            key = rng.choice(sorted(mine))
            if alloc.release(key) != mine.pop(key):
                errors.append(f"release of {key} returned another zone")
        else:
            key = f"w{worker}-{step}"
            mine[key] = alloc.allocate(key)
    owned.update(mine)


def test_threads_never_share_a_zone_nor_lose_an_update() -> None:
    alloc = ZoneAllocator((1, 20_000))
    results: list[dict[str, int]] = [{} for _ in range(8)]
    errors: list[str] = []
    threads = [
        threading.Thread(target=_hammer, args=(alloc, n, results[n], errors)) for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {key: zone for result in results for key, zone in result.items()}
    assert errors == []
    assert alloc.items() == expected
    assert len(set(expected.values())) == len(expected)


def test_threads_sharing_a_file_store_never_collide(tmp_path: Path) -> None:
    # Two allocators over one file stand for two processes; threads in each.
    allocs = [_file_alloc(tmp_path, zone_range=(1, 1000)) for _ in range(2)]
    got: list[list[int]] = [[] for _ in range(4)]

    def work(n: int) -> None:
        got[n].extend(allocs[n % 2].allocate(f"t{n}-{i}") for i in range(40))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    zones = [zone for chunk in got for zone in chunk]
    assert sorted(zones) == list(range(1, 161))
    assert len(allocs[0].items()) == 160


# -- stores -----------------------------------------------------------------


def test_both_stores_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(MemoryZoneStore(), ZoneStore)
    assert isinstance(FileZoneStore(tmp_path / "z.json"), ZoneStore)


def test_memory_store_is_the_default() -> None:
    alloc = ZoneAllocator((1, 3))
    assert isinstance(alloc.store, MemoryZoneStore)
    assert alloc.store.load() is None


def _file_alloc(tmp_path: Path, **kwargs: object) -> ZoneAllocator:
    store = FileZoneStore(tmp_path / "zones.json", lock_path=str(tmp_path / "locks"))
    return ZoneAllocator(store=store, **kwargs)  # type: ignore[arg-type]


def test_file_store_round_trip_keeps_mapping_free_order_and_held(tmp_path: Path) -> None:
    first = _file_alloc(tmp_path, zone_range=(1, 5))
    for key in "abcde":
        first.allocate(key)
    first.release("d")
    first.release("b")
    first.hold([4])
    second = _file_alloc(tmp_path, zone_range=(1, 5))
    assert second.items() == {"a": 1, "c": 3, "e": 5}
    assert second.held() == frozenset({4})
    assert second.allocate("x") == 2
    with pytest.raises(exceptions.ZoneExhaustedError):
        second.allocate("y")
    assert second.unhold(4)
    assert second.allocate("y") == 4


def test_file_store_document_is_plain_json(tmp_path: Path) -> None:
    alloc = _file_alloc(tmp_path, zone_range=(3, 9))
    alloc.allocate("a")
    alloc.allocate("b")
    alloc.release("a")
    doc = json.loads((tmp_path / "zones.json").read_text())
    assert doc["zones"] == {"b": 4}
    assert doc["released"] == [3]
    assert doc["range"] == [3, 9]
    assert doc["next_fresh"] == 5


def test_missing_file_is_an_empty_space(tmp_path: Path) -> None:
    alloc = _file_alloc(tmp_path, zone_range=(1, 5))
    assert alloc.items() == {}
    assert not (tmp_path / "zones.json").exists()
    assert alloc.allocate("a") == 1
    assert (tmp_path / "zones.json").exists()


def test_reads_see_another_allocators_writes(tmp_path: Path) -> None:
    one = _file_alloc(tmp_path, zone_range=(1, 5))
    two = _file_alloc(tmp_path, zone_range=(1, 5))
    one.allocate("a")
    assert two.get("a") == 1
    assert two.allocate("b") == 2
    assert "b" in one
    assert len(one) == 2


def _write_valid(tmp_path: Path) -> Path:
    alloc = _file_alloc(tmp_path, zone_range=(1, 10))
    for key in "abc":
        alloc.allocate(key)
    return tmp_path / "zones.json"


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],
        lambda text: "",
        lambda text: "\x00\x01garbage",
        lambda text: "[1, 2, 3]",
        lambda text: text.replace('"version":1', '"version":99'),
        lambda text: text.replace('"format":"conntrack_lib.zones"', '"format":"other"'),
        lambda text: text.replace('"zones":{', '"zones":{"z":"seven",'),
        lambda text: text.replace('"zones":{', '"zones":{"z":2,'),
        lambda text: text.replace('"zones":{', '"zones":{"a":9,'),
        lambda text: text.replace('"zones":{', '"zones":{"z":99,'),
        lambda text: text.replace('"zones":{', '"zones":{"":4,'),
        lambda text: text.replace('"held":[]', '"held":[1]'),
        lambda text: text.replace('"held":[]', '"held":[7,7]'),
        lambda text: text.replace('"released":[]', '"released":[2]'),
        lambda text: text.replace('"released":[]', '"released":{}'),
        lambda text: text.replace('"range":[1,10]', '"range":[1,20]'),
        lambda text: text.replace('"range":[1,10]', '"range":[1]'),
        lambda text: text.replace('"next_fresh":4', '"next_fresh":12'),
        lambda text: text.replace('"next_fresh":4', '"next_fresh":true'),
    ],
)
def test_damaged_files_are_refused_not_reset(tmp_path: Path, damage: object) -> None:
    path = _write_valid(tmp_path)
    broken = damage(path.read_text())  # type: ignore[operator]
    assert broken != path.read_text()
    path.write_text(broken)
    with pytest.raises(exceptions.ZoneStoreError) as info:
        _file_alloc(tmp_path, zone_range=(1, 10))
    assert info.value.path == str(path)
    # The broken file is left for an operator to inspect.
    assert path.read_text() == broken


def test_damage_after_start_is_refused_by_every_operation(tmp_path: Path) -> None:
    path = _write_valid(tmp_path)
    alloc = _file_alloc(tmp_path, zone_range=(1, 10))
    path.write_text("{")
    for call in (lambda: alloc.allocate("d"), lambda: alloc.get("a"), alloc.items):
        with pytest.raises(exceptions.ZoneStoreError):
            call()
    assert path.read_text() == "{"


def test_reserved_zone_owned_in_file_is_refused(tmp_path: Path) -> None:
    _write_valid(tmp_path)
    with pytest.raises(exceptions.ZoneStoreError, match="reserved"):
        _file_alloc(tmp_path, zone_range=(1, 10), reserved=[2])


def test_write_failure_leaves_file_and_memory_intact(tmp_path: Path) -> None:
    path = _write_valid(tmp_path)
    before = path.read_bytes()
    alloc = _file_alloc(tmp_path, zone_range=(1, 10))
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with mock.patch("conntrack_lib.zones.file_store.os.replace", side_effect=full):
        with pytest.raises(exceptions.ZoneStoreError, match="No space"):
            alloc.allocate("d")
        with pytest.raises(exceptions.ZoneStoreError):
            alloc.release("a")
    assert path.read_bytes() == before
    assert alloc.items() == {"a": 1, "b": 2, "c": 3}
    assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []
    # Once the disk recovers, the next allocation gets the zone the failed one would have.
    assert alloc.allocate("d") == 4


def test_write_failure_keeps_memory_state_of_the_allocator(tmp_path: Path) -> None:
    alloc = _file_alloc(tmp_path, zone_range=(1, 10))
    alloc.allocate("a")
    table_before = alloc._space._table
    broken = mock.patch("conntrack_lib.zones.file_store.os.fsync",
                        side_effect=OSError(errno.EIO, "EIO"))
    with broken, pytest.raises(exceptions.ZoneStoreError):
        alloc.allocate("b")
    assert alloc._space._table is table_before
    assert "b" not in table_before.by_key


def test_unwritable_directory_raises_store_error(tmp_path: Path) -> None:
    store = FileZoneStore(tmp_path / "missing-dir" / "zones.json", lock_path=str(tmp_path))
    alloc = ZoneAllocator((1, 10), store=store)
    with pytest.raises(exceptions.ZoneStoreError) as info:
        alloc.allocate("a")
    assert "cannot write" in info.value.reason
    assert alloc.items() == {}


def test_unreadable_path_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "zones.json").mkdir()
    with pytest.raises(exceptions.ZoneStoreError, match="cannot read"):
        _file_alloc(tmp_path, zone_range=(1, 10))


def test_stale_temporary_files_are_swept(tmp_path: Path) -> None:
    debris = tmp_path / ".zones.json.abc123.tmp"
    debris.write_text("half a document")
    alloc = _file_alloc(tmp_path, zone_range=(1, 10))
    alloc.allocate("a")
    assert not debris.exists()
    assert sorted(os.listdir(tmp_path)) == ["locks", "zones.json"]


def test_unchanged_operations_do_not_rewrite(tmp_path: Path) -> None:
    path = _write_valid(tmp_path)
    alloc = _file_alloc(tmp_path, zone_range=(1, 10))
    inode = path.stat().st_ino
    alloc.allocate("a")
    alloc.release("nobody")
    alloc.unhold(9)
    assert path.stat().st_ino == inode


def test_snapshot_document_round_trip() -> None:
    snap = ZoneSnapshot((1, 9), {"a": 2}, (5, 3), (7,), 6, (8,))
    assert ZoneSnapshot.from_document(json.loads(json.dumps(snap.to_document()))) == snap


def test_reserved_zone_in_released_list_is_dropped(tmp_path: Path) -> None:
    alloc = _file_alloc(tmp_path, zone_range=(1, 3))
    for key in "abc":
        alloc.allocate(key)
    alloc.release("b")
    again = _file_alloc(tmp_path, zone_range=(1, 3), reserved=[2])
    with pytest.raises(exceptions.ZoneExhaustedError):
        again.allocate("d")


def test_zone_no_longer_reserved_joins_the_back_of_the_free_order(tmp_path: Path) -> None:
    before = _file_alloc(tmp_path, zone_range=(1, 5), reserved=[2])
    assert [before.allocate(k) for k in "abc"] == [1, 3, 4]
    before.release("a")
    after = _file_alloc(tmp_path, zone_range=(1, 5))
    # Never-used 5 first, then released 1, then the formerly reserved 2.
    assert [after.allocate(k) for k in "xyz"] == [5, 1, 2]
