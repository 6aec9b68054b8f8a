"""SQLiteZoneStore in one process: same answers as memory, safe files, refused garbage."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conntrack_lib import exceptions
from conntrack_lib.zones import (
    FileZoneStore,
    SQLiteZoneStore,
    ZoneAllocator,
    fs,
    read_store,
    sqlite_space,
)
from conntrack_lib.zones import sqlite_schema as schema

RANGE = (100, 140)


def store_at(tmp_path: Path, name: str = "zones.db", **kw: Any) -> SQLiteZoneStore:
    """Return a store in ``tmp_path`` (made private, as the store requires)."""
    tmp_path.chmod(0o700)
    return SQLiteZoneStore(tmp_path / name, **kw)


def allocator(tmp_path: Path, zone_range: tuple[int, int] = RANGE,
              **kw: Any) -> ZoneAllocator:
    return ZoneAllocator(zone_range, store=store_at(tmp_path), **kw)


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


# -- the same answers as the in-memory store ---------------------------------


def _random_operation(rng: random.Random, step: int) -> tuple[str, Any]:
    keys = [f"k{n}" for n in range(60)]
    kind = rng.choice(["allocate", "allocate", "allocate", "release", "release", "many",
                       "hold", "unhold", "restore", "get"])
    if kind == "many":
        return kind, [rng.choice(keys) for _ in range(rng.randint(0, 6))]
    if kind in ("hold", "unhold"):
        return kind, sorted(rng.sample(range(95, 146), 3))
    if kind == "restore":
        return kind, {f"r{step}": rng.randint(RANGE[0], RANGE[1])}
    return kind, rng.choice(keys)


def _apply(alloc: ZoneAllocator, kind: str, arg: Any) -> Any:
    calls: dict[str, Callable[[Any], Any]] = {
        "allocate": alloc.allocate, "release": alloc.release, "many": alloc.allocate_many,
        "hold": alloc.hold, "unhold": lambda zones: [alloc.unhold(z) for z in zones],
        "restore": alloc.restore, "get": alloc.get,
    }
    try:
        return calls[kind](arg)
    except exceptions.ZoneError as error:
        return type(error).__name__


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_operation_answers_as_the_memory_store(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    memory = ZoneAllocator(RANGE, reserved=[101, 120])
    database = allocator(tmp_path, reserved=[101, 120])
    for step in range(400):
        kind, arg = _random_operation(rng, step)
        assert _apply(database, kind, arg) == _apply(memory, kind, arg), (step, kind, arg)
        assert database.items() == memory.items()
        assert database.held() == memory.held()
    assert len(database) == len(memory)
    # A second process's view (a new connection) agrees with the first.
    again = ZoneAllocator(RANGE, reserved=[101, 120], store=SQLiteZoneStore(tmp_path / "zones.db"))
    assert again.items() == memory.items()
    assert _apply(again, "allocate", "late") == _apply(memory, "allocate", "late")


def test_freed_zones_are_reused_oldest_first_after_the_fresh_ones(tmp_path: Path) -> None:
    alloc = allocator(tmp_path, zone_range=(1, 4))
    assert [alloc.allocate(k) for k in "abc"] == [1, 2, 3]
    alloc.release("b")
    alloc.release("a")
    assert alloc.allocate("d") == 4
    assert alloc.allocate("e") == 2
    assert alloc.allocate("f") == 1
    with pytest.raises(exceptions.ZoneExhaustedError):
        alloc.allocate("g")


def test_allocate_many_is_all_or_nothing(tmp_path: Path) -> None:
    alloc = allocator(tmp_path, zone_range=(1, 5))
    assert alloc.allocate_many(["a", "b", "a"]) == {"a": 1, "b": 2}
    with pytest.raises(exceptions.ZoneExhaustedError):
        alloc.allocate_many(["c", "d", "e", "f"])
    assert alloc.items() == {"a": 1, "b": 2}
    assert alloc.allocate_many(["c", "b", "d"]) == {"c": 3, "b": 2, "d": 4}
    with pytest.raises(exceptions.InvalidArgumentError):
        alloc.allocate_many(["x", "bad\nkey"])
    assert "x" not in alloc
    assert alloc.allocate_many([]) == {}


def test_allocate_many_mixes_fresh_runs_and_freed_zones(tmp_path: Path) -> None:
    alloc = allocator(tmp_path, zone_range=(1, 10), reserved=[4])
    alloc.restore({"r": 6})
    alloc.hold([8])
    zones = alloc.allocate_many([f"k{n}" for n in range(6)])
    assert list(zones.values()) == [1, 2, 3, 5, 7, 9]
    alloc.release("k1")
    alloc.release("k0")
    assert alloc.allocate_many(["x", "y", "z"]) == {"x": 10, "y": 2, "z": 1}


def test_restore_refuses_conflicts_and_changes_nothing(tmp_path: Path) -> None:
    alloc = allocator(tmp_path)
    alloc.restore({"a": 110, "b": 111})
    for bad in ({"c": 110}, {"a": 112}, {"c": 99}, {"c": 120, "d": 120}):
        with pytest.raises(exceptions.InvalidZoneError):
            alloc.restore(bad)
    with pytest.raises(exceptions.InvalidZoneError):
        alloc.restore({"e": 113, "a": 114})
    assert alloc.items() == {"a": 110, "b": 111}


def test_a_store_of_another_range_is_refused(tmp_path: Path) -> None:
    allocator(tmp_path).allocate("a")
    with pytest.raises(exceptions.ZoneStoreError, match="differs"):
        ZoneAllocator((100, 141), store=SQLiteZoneStore(tmp_path / "zones.db"))


def test_reserved_zones_follow_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "zones.db"
    first = allocator(tmp_path, zone_range=(1, 6), reserved=[2, 5])
    assert first.allocate_many(["a", "b"]) == {"a": 1, "b": 3}
    # 2 is no longer reserved and was passed over: back of the free order.
    # 5 is no longer reserved and never passed: fresh again.  4 is newly reserved.
    second = ZoneAllocator((1, 6), reserved=[4], store=SQLiteZoneStore(path))
    assert second.allocate_many(["c", "d", "e"]) == {"c": 5, "d": 6, "e": 2}
    with pytest.raises(exceptions.ZoneStoreError, match="owned"):
        ZoneAllocator((1, 6), reserved=[1], store=SQLiteZoneStore(path))


def test_recovered_zones_are_held_not_reused(tmp_path: Path) -> None:
    alloc = allocator(tmp_path, zone_range=(1, 5))
    assert alloc.hold([1, 2, 9]) == frozenset({1, 2})
    assert alloc.allocate_many(["a", "b", "c"]) == {"a": 3, "b": 4, "c": 5}
    with pytest.raises(exceptions.ZoneExhaustedError):
        alloc.allocate("d")
    assert alloc.unhold(2)
    assert not alloc.unhold(2)
    assert alloc.allocate("d") == 2


# -- files: mode, directory, links --------------------------------------------


def test_files_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        alloc = allocator(tmp_path)
        alloc.allocate("a")
    finally:
        os.umask(old)
    names = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert names["zones.db"] == 0o600
    assert names["zones.db-wal"] == 0o600
    assert names["zones.db-shm"] == 0o600
    assert not [n for n in names if n.endswith(".tmp")]


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777, 0o720])
def test_a_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    tmp_path.chmod(mode)
    with pytest.raises(exceptions.ZoneStoreError, match="writable"):
        ZoneAllocator(RANGE, store=SQLiteZoneStore(tmp_path / "zones.db"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    os.chown(tmp_path, 65534, 65534)
    with pytest.raises(exceptions.ZoneStoreError, match="owned by uid 65534"):
        ZoneAllocator(RANGE, store=SQLiteZoneStore(tmp_path / "zones.db"))


def test_an_ancestor_others_can_write_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    inner = tmp_path / "inner"
    inner.mkdir(mode=0o700)
    with pytest.raises(exceptions.ZoneStoreError, match="ancestor"):
        ZoneAllocator(RANGE, store=SQLiteZoneStore(inner / "zones.db"))


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(exceptions.ZoneStoreError, match="does not exist"):
        ZoneAllocator(RANGE, store=SQLiteZoneStore(tmp_path / "nope" / "zones.db"))


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(exceptions.ZoneStoreError, match="symbolic link"):
        ZoneAllocator(RANGE, store=SQLiteZoneStore(tmp_path / "link" / "zones.db"))


@pytest.mark.parametrize("name", ["zones.db", "zones.db-wal", "zones.db-shm"])
def test_symlinks_are_never_followed(tmp_path: Path, name: str) -> None:
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "passwd"
    tmp_path.chmod(0o700)
    store_dir = tmp_path / "store"
    store_dir.mkdir(mode=0o700)
    if name != "zones.db":
        first = SQLiteZoneStore(store_dir / "zones.db")
        ZoneAllocator(RANGE, store=first).allocate("a")
        first.close()
        for leftover in store_dir.glob("zones.db-*"):
            leftover.unlink()
    (store_dir / name).symlink_to(victim)
    with pytest.raises(exceptions.ZoneStoreError, match="symbolic link"):
        ZoneAllocator(RANGE, store=SQLiteZoneStore(store_dir / "zones.db"))
    assert not victim.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_store_file_others_can_open_is_refused(tmp_path: Path, mode: int) -> None:
    allocator(tmp_path).allocate("a")
    (tmp_path / "zones.db").chmod(mode)
    with pytest.raises(exceptions.ZoneStoreError, match="0600"):
        ZoneAllocator(RANGE, store=SQLiteZoneStore(tmp_path / "zones.db"))


def test_a_hard_linked_store_is_refused(tmp_path: Path) -> None:
    allocator(tmp_path).allocate("a")
    os.link(tmp_path / "zones.db", tmp_path / "other")
    with pytest.raises(exceptions.ZoneStoreError, match="hard links"):
        ZoneAllocator(RANGE, store=SQLiteZoneStore(tmp_path / "zones.db"))


# -- corruption: refused, never reset, never touched ---------------------------


def _closed_store(tmp_path: Path, count: int = 30) -> Path:
    store = store_at(tmp_path)
    alloc = ZoneAllocator((1, 65535), store=store)
    alloc.allocate_many([f"k{n}" for n in range(count)])
    store.close()  # the last connection checkpoints and removes the WAL
    return tmp_path / "zones.db"


def _assert_refused_untouched(path: Path, match: str, ours: bool = False) -> None:
    """Assert the file is refused and left as it was.

    A file that is not ours gets nothing beside it; a damaged store of ours
    may get SQLite's empty ``-wal`` and its ``-shm`` index.
    """
    before = listing(path.parent)
    with pytest.raises(exceptions.ZoneStoreError, match=match) as caught:
        ZoneAllocator((1, 65535), store=SQLiteZoneStore(path))
    assert caught.value.path == str(path)
    after = listing(path.parent)
    if ours:
        assert after.pop("zones.db-wal", b"") == b""
        after.pop("zones.db-shm", None)
    assert after == before


def test_a_garbage_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "zones.db"
    tmp_path.chmod(0o700)
    path.write_bytes(os.urandom(8192))
    path.chmod(0o600)
    _assert_refused_untouched(path, "not a database")


def test_an_empty_file_is_refused_as_truncated(tmp_path: Path) -> None:
    path = tmp_path / "zones.db"
    tmp_path.chmod(0o700)
    path.touch(mode=0o600)
    _assert_refused_untouched(path, "truncated")


@pytest.mark.parametrize("keep", [0.5, 0.9, 50 / 4096])
def test_a_truncated_store_is_refused_and_untouched(tmp_path: Path, keep: float) -> None:
    path = _closed_store(tmp_path, count=3000)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    _assert_refused_untouched(path, "damaged|malformed|not a database|truncated", ours=True)


def test_another_applications_database_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "zones.db"
    tmp_path.chmod(0o700)
    path.touch(mode=0o600)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE zone (zone INTEGER, owner TEXT)")
    conn.commit()
    conn.close()
    _assert_refused_untouched(path, "another application")


def test_a_foreign_schema_with_our_id_is_refused_and_untouched(tmp_path: Path) -> None:
    path = _closed_store(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TRIGGER spy AFTER INSERT ON zone BEGIN SELECT 1; END")
    conn.commit()
    conn.close()
    _assert_refused_untouched(path, "foreign schema", ours=True)


def test_a_newer_schema_version_is_refused_and_untouched(tmp_path: Path) -> None:
    path = _closed_store(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    _assert_refused_untouched(path, "newer")


# -- migration from the JSON file ---------------------------------------------


def _json_store(tmp_path: Path) -> Path:
    path = tmp_path / "zones.json"
    with pytest.warns(DeprecationWarning):
        old = ZoneAllocator(RANGE, store=FileZoneStore(path))
    for key in ("a", "b", "c", "d"):
        old.allocate(key)
    old.release("c")
    old.release("a")
    old.hold([130])
    return path


def test_the_json_file_is_imported_once_and_kept(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    document = _json_store(tmp_path)
    original = document.read_bytes()
    memory = ZoneAllocator(RANGE)
    memory.allocate_many(["a", "b", "c", "d"])
    memory.release("c")
    memory.release("a")
    memory.hold([130])
    new = ZoneAllocator(RANGE, store=SQLiteZoneStore(tmp_path / "zones.db",
                                                     migrate_from=document))
    assert new.items() == {"b": 101, "d": 103}
    assert new.held() == frozenset({130})
    assert document.read_bytes() == original
    # The free order carried over: fresh zones, then 102, then 100.
    keys = [f"n{i}" for i in range(38)]
    assert new.allocate_many(keys) == memory.allocate_many(keys)
    # Imported once: a later change of the JSON file is ignored.
    document.write_text("garbage")
    again = ZoneAllocator(RANGE, store=SQLiteZoneStore(tmp_path / "zones.db",
                                                       migrate_from=document))
    assert again.items() == new.items()
    conn = sqlite3.connect(tmp_path / "zones.db")
    meta = dict(conn.execute("SELECT name, value FROM meta"))
    conn.close()
    assert meta["migrated_from"] == str(document)


def test_a_json_file_of_another_range_is_not_imported(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    document = _json_store(tmp_path)
    with pytest.raises(exceptions.ZoneStoreError) as caught:
        ZoneAllocator((1, 200), store=SQLiteZoneStore(tmp_path / "zones.db",
                                                      migrate_from=document))
    assert caught.value.path == str(document)
    assert not (tmp_path / "zones.db").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_missing_json_file_means_nothing_to_import(tmp_path: Path) -> None:
    alloc = ZoneAllocator(RANGE, store=store_at(tmp_path, migrate_from=tmp_path / "no.json"))
    assert alloc.items() == {}


def test_the_file_store_warns_that_it_is_deprecated(tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning, match="SQLiteZoneStore"):
        FileZoneStore(tmp_path / "zones.json")


# -- reading without changing ---------------------------------------------------


def test_read_store_reads_both_formats_and_changes_nothing(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    document = _json_store(tmp_path)
    legacy = read_store(document)
    assert legacy is not None and dict(legacy.zones) == {"b": 101, "d": 103}
    alloc = ZoneAllocator(RANGE, reserved=[139], store=SQLiteZoneStore(tmp_path / "zones.db"))
    alloc.allocate_many(["x", "y", "z"])
    alloc.release("y")
    alloc.hold([120])
    snap = read_store(tmp_path / "zones.db")
    assert snap is not None
    assert dict(snap.zones) == {"x": 100, "z": 102}
    assert snap.released == (101,) and snap.held == (120,) and snap.reserved == (139,)
    assert snap.next_fresh == 103
    assert read_store(tmp_path / "absent.db") is None


def test_read_store_refuses_garbage(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    path = tmp_path / "zones.db"
    path.write_bytes(b"{not json, not sqlite")
    path.chmod(0o600)
    with pytest.raises(exceptions.ZoneStoreError, match="not a database"):
        read_store(path)


# -- busy database, fork, options ---------------------------------------------


def test_lock_holders_are_read_from_proc_locks(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    target = tmp_path / "zones.db"
    target.write_bytes(b"x")
    st = target.stat()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    locks = tmp_path / "locks"
    locks.write_text(
        f"1: POSIX  ADVISORY  WRITE 4242 {dev} 120 120\n"
        f"1: -> POSIX  ADVISORY  WRITE 4343 {dev} 120 120\n"
        f"2: POSIX  ADVISORY  READ {os.getpid()} {dev} 0 EOF\n"
        "3: FLOCK  ADVISORY  WRITE 77 00:01:1 0 EOF\n"
        "garbage\n")
    assert fs.lock_holders([str(target)], proc_locks=str(locks)) == ["pid 4242 (?)"]
    assert fs.lock_holders([str(target)], proc_locks=str(tmp_path / "none")) == []


def test_a_forked_child_uses_its_own_connection(tmp_path: Path) -> None:
    alloc = allocator(tmp_path)
    assert alloc.allocate("parent") == 100
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        try:
            code = 0 if alloc.allocate("child") == 101 else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert alloc.allocate("parent-2") == 102
    assert alloc.items() == {"parent": 100, "child": 101, "parent-2": 102}


def test_bad_timeouts_are_refused(tmp_path: Path) -> None:
    for bad in (0, -1, True, "5"):
        with pytest.raises(exceptions.InvalidArgumentError):
            SQLiteZoneStore(tmp_path / "z.db", timeout=bad)  # type: ignore[arg-type]



def test_threads_sharing_one_allocator_never_share_a_zone(tmp_path: Path) -> None:
    alloc = allocator(tmp_path, zone_range=(1, 1000))
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for n in range(50):
                alloc.allocate(f"{name}-{n}")
                if n % 5 == 4:
                    alloc.release(f"{name}-{n - 1}")
            alloc.allocate_many([f"{name}-bulk-{n}" for n in range(10)])
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    owned = alloc.items()
    assert len(owned) == 8 * (50 - 10 + 10)
    assert len(set(owned.values())) == len(owned)


# -- pages, WAL size and the claim's cursor ------------------------------------


def _wal_pages(alloc: ZoneAllocator) -> int:
    conn = alloc._space._connection()  # type: ignore[attr-defined]
    return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def test_new_stores_have_512_byte_pages_and_a_4_mib_wal(tmp_path: Path) -> None:
    alloc = allocator(tmp_path)
    assert alloc.allocate("a") == 100
    probe = sqlite3.connect(tmp_path / "zones.db")
    try:
        assert probe.execute("PRAGMA page_size").fetchone()[0] == 512
    finally:
        probe.close()
    assert _wal_pages(alloc) == 4 * 1024 * 1024 // 512


def test_a_store_created_with_1024_byte_pages_keeps_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "PAGE_SIZE", 1024)
    first = allocator(tmp_path)
    assert first.allocate("a") == 100
    monkeypatch.undo()
    again = ZoneAllocator(RANGE, store=SQLiteZoneStore(tmp_path / "zones.db"))
    # The same WAL bytes before a checkpoint, counted in the store's own pages.
    assert _wal_pages(again) == 4 * 1024 * 1024 // 1024
    assert again.allocate("b") == 101
    assert first.allocate("c") == 102
    assert again.items() == {"a": 100, "b": 101, "c": 102}


def test_allocating_after_close_opens_a_new_connection(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    alloc = ZoneAllocator(RANGE, store=store)
    assert alloc.allocate("a") == 100
    store.close()
    # The claim's kept cursor belonged to the closed connection.
    assert alloc.allocate("b") == 101
    store.close()
    assert alloc.allocate_many(["c", "d"]) == {"c": 102, "d": 103}
    assert alloc.allocate("e") == 104


@pytest.mark.parametrize("with_json", [True, False])
def test_a_run_of_keys_gets_zones_in_the_order_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_json: bool) -> None:
    # The rows go in in owner order; each key must still get its place's zone.
    if not with_json:
        monkeypatch.setattr(sqlite_space, "_has_json", lambda conn: False)
    alloc = allocator(tmp_path)
    assert alloc.allocate("m") == 100
    keys = ["zz", "port-10", "a", "port-2", "port-1", "b"]
    assert alloc.allocate_many(keys) == {key: 101 + n for n, key in enumerate(keys)}
    assert alloc.items() == {"m": 100, **{key: 101 + n for n, key in enumerate(keys)}}
