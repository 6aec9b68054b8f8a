"""SQLiteZoneStore shared by real processes, held busy, and killed mid-transaction."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conntrack_lib import exceptions
from conntrack_lib.zones import SQLiteZoneStore, ZoneAllocator

REPO = Path(__file__).resolve().parents[2]

# Waits for the start file so that every worker contends at once, then
# allocates its keys one call each and prints key -> zone.
WORKER = """
import json, os, sys, time
from conntrack_lib.zones import SQLiteZoneStore, ZoneAllocator
path, name, count, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
alloc = ZoneAllocator((1, 65535), store=SQLiteZoneStore(path, timeout=30))
while not os.path.exists(start):
    time.sleep(0.001)
print(json.dumps({f"{name}-{i}": alloc.allocate(f"{name}-{i}") for i in range(count)}))
"""

# Allocates batches of 500 keys b<n>-<i>, each batch in one transaction,
# releasing the batch before the previous one, for ever.
BATCHER = """
import sys
from conntrack_lib.zones import SQLiteZoneStore, ZoneAllocator
alloc = ZoneAllocator((1, 4000), store=SQLiteZoneStore(sys.argv[1]))
owned = alloc.items()
batches = sorted({int(key[1:].split("-")[0]) for key in owned})
n = batches[-1] + 1 if batches else 0
for key in owned:  # finish releasing what a killed run left behind
    if int(key[1:].split("-")[0]) < n - 2:
        alloc.release(key)
first = True
while True:
    alloc.allocate_many([f"b{n}-{i}" for i in range(500)])
    for i in range(500):
        alloc.release(f"b{n - 2}-{i}")
    n += 1
    if first:
        print("ready", flush=True)
        first = False
"""

# Holds the write lock of the database until killed.
HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO zone (zone, state, owner) VALUES (?, 'owned', 'uncommitted')",
             (int(sys.argv[2]),))
print("holding", flush=True)
time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 600)
conn.execute("ROLLBACK")
"""


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def private(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


def test_four_processes_allocate_2000_distinct_zones(private: Path) -> None:
    path = private / "zones.db"
    ZoneAllocator((1, 65535), store=SQLiteZoneStore(path))  # created once, up front
    start = private / "go"
    workers = [_python(WORKER, str(path), f"p{n}", "500", str(start)) for n in range(4)]
    time.sleep(0.5)
    start.touch()
    owned: dict[str, int] = {}
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        owned.update(json.loads(out))
    assert len(owned) == 2000
    assert sorted(owned.values()) == list(range(1, 2001))
    assert ZoneAllocator((1, 65535), store=SQLiteZoneStore(path)).items() == owned


def test_processes_racing_to_create_the_store_share_one(private: Path) -> None:
    path = private / "zones.db"
    start = private / "go"
    workers = [_python(WORKER, str(path), f"p{n}", "20", str(start)) for n in range(4)]
    start.touch()
    owned: dict[str, int] = {}
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        owned.update(json.loads(out))
    assert sorted(owned.values()) == list(range(1, 81))
    assert not [p for p in private.iterdir() if p.name.endswith(".tmp")]


def test_a_busy_database_fails_in_bounded_time_naming_the_holder(private: Path) -> None:
    path = private / "zones.db"
    alloc = ZoneAllocator((1, 100), store=SQLiteZoneStore(path, timeout=0.5))
    alloc.allocate("a")
    holder = _python(HOLDER, str(path), "50")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        for change in (lambda: alloc.allocate("b"), lambda: alloc.allocate_many(["c"]),
                       lambda: alloc.release("a"), lambda: alloc.hold([7])):
            began = time.monotonic()
            with pytest.raises(exceptions.ZoneStoreError) as caught:
                change()
            assert time.monotonic() - began < 3
            assert f"pid {holder.pid} (python" in caught.value.reason
            assert "busy for more than 0.5 s" in caught.value.reason
        # Readers never wait for the writer.
        assert alloc.get("a") == 1
        assert alloc.items() == {"a": 1}
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    assert alloc.allocate("b") == 2


def test_a_short_busy_spell_is_waited_out(private: Path) -> None:
    path = private / "zones.db"
    alloc = ZoneAllocator((1, 100), store=SQLiteZoneStore(path, timeout=5.0))
    alloc.allocate("a")
    holder = _python(HOLDER, str(path), "50", "0.3")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        began = time.monotonic()
        assert alloc.allocate("b") == 2
        assert time.monotonic() - began < 4.0  # waited for the holder, not the timeout
    finally:
        holder.communicate(timeout=10)
    assert holder.returncode == 0


def test_kill_9_inside_a_transaction_leaves_the_last_committed_state(private: Path) -> None:
    path = private / "zones.db"
    alloc = ZoneAllocator((1, 100), store=SQLiteZoneStore(path))
    alloc.allocate_many(["a", "b"])
    holder = _python(HOLDER, str(path), "60")
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding"
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=10)
    fresh = ZoneAllocator((1, 100), store=SQLiteZoneStore(path))
    assert fresh.items() == {"a": 1, "b": 2}
    assert fresh.allocate("c") == 3  # the lock died with its holder


def _check_batches(owned: dict[str, int]) -> int:
    """Assert every batch is whole and no zone is owned twice; return the newest batch."""
    batches: dict[int, int] = {}
    for key in owned:
        batch = int(key[1:].split("-")[0])
        batches[batch] = batches.get(batch, 0) + 1
    # Batches are allocated in one transaction each: whole or absent.  Only
    # older ones may be partly released (their keys go one transaction each).
    newest_first = sorted(batches, reverse=True)
    assert all(batches[b] == 500 for b in newest_first[:2]), batches
    assert len(set(owned.values())) == len(owned)
    return max(batches, default=-1)


@pytest.mark.slow
def test_kill_9_at_random_moments_never_leaves_half_a_batch(private: Path) -> None:
    path = private / "zones.db"
    rng = random.Random(20261201)
    newest = -1
    for _ in range(12):
        writer = _python(BATCHER, str(path))
        assert writer.stdout is not None
        if writer.stdout.readline().strip() != "ready":
            pytest.fail(f"the writer died: {writer.communicate(timeout=10)[1]}")
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(writer.pid, signal.SIGKILL)
        writer.communicate(timeout=10)
        assert writer.returncode == -signal.SIGKILL
        store = SQLiteZoneStore(path)
        latest = _check_batches(ZoneAllocator((1, 4000), store=store).items())
        assert latest > newest
        newest = latest
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
