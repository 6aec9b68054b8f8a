"""FileZoneStore shared by real processes, and killed in the middle of writes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conntrack_lib import exceptions
from conntrack_lib.zones import FileZoneStore, ZoneAllocator

# FileZoneStore is deprecated; these tests keep covering it until it goes.
pytestmark = pytest.mark.filterwarnings("ignore:FileZoneStore is deprecated:DeprecationWarning")

REPO = Path(__file__).resolve().parents[2]

# Each worker waits for the start file, so all of them contend at once, then
# allocates its keys, releases every third one and prints what it holds and
# every zone it was ever given.
WORKER = """
import json, os, sys, time
from conntrack_lib.zones import FileZoneStore, ZoneAllocator
path, name, count, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
alloc = ZoneAllocator((1, 1000), store=FileZoneStore(path))
while not os.path.exists(start):
    time.sleep(0.001)
mine, given = {}, []
for i in range(count):
    key = f"{name}-{i}"
    mine[key] = alloc.allocate(key)
    given.append(mine[key])
    if i % 3 == 2:
        victim = f"{name}-{i - 1}"
        assert alloc.release(victim) == mine.pop(victim)
print(json.dumps({"held": mine, "given": given}))
"""

# Keeps a window of live keys k<n>: allocate the next, release the oldest.
WRITER = """
import sys
from conntrack_lib.zones import FileZoneStore, ZoneAllocator

alloc = ZoneAllocator((1, 40), store=FileZoneStore(sys.argv[1]))
owned = alloc.items()
n = max((int(key[1:]) for key in owned), default=-1) + 1
for index in sorted(int(key[1:]) for key in owned):
    if index < n - 4:
        alloc.release(f"k{index}")
first = True
while True:
    alloc.allocate(f"k{n}")
    alloc.release(f"k{n - 5}")
    if n % 7 == 0:
        alloc.hold([zone for zone in range(1, 41) if zone % 11 == 0])
    elif n % 7 == 3:
        for zone in alloc.held():
            alloc.unhold(zone)
    n += 1
    if first:
        print("ready", flush=True)
        first = False
"""


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_four_processes_share_one_zone_space(tmp_path: Path) -> None:
    path = tmp_path / "zones.json"
    start = tmp_path / "go"
    count = 60
    workers = [_python(WORKER, str(path), f"p{n}", str(count), str(start)) for n in range(4)]
    time.sleep(0.3)
    start.touch()
    held: dict[str, int] = {}
    given: list[int] = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        report = json.loads(out)
        held.update(report["held"])
        given.extend(report["given"])
    # 240 allocations in 1..1000 never reuse a zone: each one got a zone no
    # other allocation in any process got, and none was skipped.
    assert sorted(given) == list(range(1, 4 * count + 1))
    # Every process kept what it believes it holds: nothing lost, nothing shared.
    assert len(held) == 4 * count * 2 // 3
    assert len(set(held.values())) == len(held)
    final = ZoneAllocator((1, 1000), store=FileZoneStore(path))
    assert final.items() == held


def _check_window(owned: dict[str, int]) -> int:
    """Assert ``owned`` is a run of consecutive keys; return the newest index."""
    indexes = sorted(int(key[1:]) for key in owned)
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
    # 5 live keys; 6 when killed between an allocate and its release; 4 to 6
    # when killed while a restarted writer trims back to its window.
    assert 4 <= len(indexes) <= 6 or indexes[0] == 0
    return indexes[-1]


@pytest.mark.slow
def test_writer_killed_at_random_moments_leaves_a_consistent_file(tmp_path: Path) -> None:
    path = tmp_path / "zones.json"
    rng = random.Random(20261126)
    newest = -1
    deadline = time.monotonic() + 50
    iterations = 0
    while iterations < 30 and time.monotonic() < deadline:
        writer = _python(WRITER, str(path))
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(writer.pid, signal.SIGKILL)
        writer.communicate(timeout=10)
        assert writer.returncode == -signal.SIGKILL
        # The file must load (consistency is checked on load) and keep
        # every allocation that completed before the kill.
        alloc = ZoneAllocator((1, 40), store=FileZoneStore(path))
        owned = alloc.items()
        assert len(set(owned.values())) == len(owned)
        assert alloc.held().isdisjoint(owned.values())
        latest = _check_window(owned)
        assert latest > newest
        newest = latest
        iterations += 1
    assert iterations >= 15
    # A later write sweeps any temporary file a killed writer left behind.
    survivor = ZoneAllocator((1, 40), store=FileZoneStore(path))
    survivor.allocate("after-crashes")
    assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []


def test_a_file_truncated_by_hand_is_refused_by_a_new_process(tmp_path: Path) -> None:
    path = tmp_path / "zones.json"
    alloc = ZoneAllocator((1, 40), store=FileZoneStore(path))
    for i in range(10):
        alloc.allocate(f"k{i}")
    path.write_bytes(path.read_bytes()[:-7])
    worker = _python(WORKER, str(path), "late", "1", str(tmp_path))
    _, err = worker.communicate(timeout=30)
    assert worker.returncode != 0
    assert "ZoneStoreError" in err
    with pytest.raises(exceptions.ZoneStoreError):
        ZoneAllocator((1, 40), store=FileZoneStore(path))
