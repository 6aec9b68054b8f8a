"""Time the zone stores side by side: memory, SQLite, and the deprecated JSON file.

Figures, each the best of ``--repeat`` runs measured in this one process:

* 5,000 ``ConntrackHelper.allocate_zone`` calls with each store (the file
  store on ``--file-count`` calls only: it rewrites its whole document on
  every call, so its cost per call grows with the zones it holds);
* the same 5,000 keys through ``ConntrackHelper.allocate_zones``;
* 65,535 zones through ``allocate_zones`` on a fresh database, then one
  more allocation, which must raise ``ZoneExhaustedError``;
* a new process opening that full database and answering its first
  ``get_zone``;
* 4 processes x 500 ``allocate_zone`` calls on one database at once.

It also keeps the allocator's old comparison with a first-gap scan.  Targets
from the store's design are checked and printed as ``ok``/``MISSED``; the
exit code is 1 when one is missed.

Run from the repository root: ``python -m bench.zones [--count N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from conntrack_lib import exceptions
from conntrack_lib.constants import MAX_CONNTRACK_ZONE_ID
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.testing import FakeConntrack
from conntrack_lib.zones import AnyZoneStore, FileZoneStore, SQLiteZoneStore, ZoneAllocator

ROOT = Path(__file__).resolve().parents[1]

# A new process: open the full store, answer one get_zone, print the seconds.
OPEN_AND_GET = """
import sys, time
start = time.perf_counter()
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.testing import FakeConntrack
from conntrack_lib.zones import SQLiteZoneStore
imported = time.perf_counter()
helper = ConntrackHelper(executor=FakeConntrack(), zone_store=SQLiteZoneStore(sys.argv[1]))
zone = helper.get_zone("port-31337")
done = time.perf_counter()
assert zone == 31338, zone
print(done - imported, imported - start)
"""

# One of the 4 processes: wait for the start file, allocate, print its zones.
RACER = """
import json, os, sys, time
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.testing import FakeConntrack
from conntrack_lib.zones import SQLiteZoneStore
path, name, count, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
helper = ConntrackHelper(executor=FakeConntrack(),
                         zone_store=SQLiteZoneStore(path, timeout=30))
helper.recover()
while not os.path.exists(start):
    time.sleep(0.0005)
print(json.dumps({f"{name}-{i}": helper.allocate_zone(f"{name}-{i}") for i in range(count)}))
"""


class FirstGapAllocator:
    """Allocate by scanning a sorted list of used zones for the first gap."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high
        self.by_key: dict[str, int] = {}
        self.used: list[int] = []

    def _find_open_zone(self) -> int:
        if not self.used:
            return self.low
        if self.used[-1] < self.high:
            return self.used[-1] + 1
        for index, zone in enumerate(self.used):
            if zone != self.low + index:
                return self.low + index
        raise RuntimeError("zones exhausted")

    def allocate(self, key: str) -> int:
        """Return the zone of ``key``, giving it the first open zone."""
        if key in self.by_key:
            return self.by_key[key]
        zone = self._find_open_zone()
        bisect.insort(self.used, zone)
        self.by_key[key] = zone
        return zone

    def release(self, key: str) -> int | None:
        """Free the zone of ``key``."""
        zone = self.by_key.pop(key, None)
        if zone is not None:
            del self.used[bisect.bisect_left(self.used, zone)]
        return zone


def run_workload(alloc: ZoneAllocator | FirstGapAllocator, count: int, churn: int) -> float:
    """Return the seconds the fill-then-churn workload takes on ``alloc``."""
    victims = random.Random(42).sample(range(count), churn)
    start = time.perf_counter()
    for i in range(count):
        alloc.allocate(f"key-{i}")
    for i in victims:
        alloc.release(f"key-{i}")
    for i in victims:
        alloc.allocate(f"new-{i}")
    return time.perf_counter() - start


# -- the stores ----------------------------------------------------------------


def private_dir() -> Path:
    """Return a new directory only this user can write, as the SQLite store requires."""
    return Path(tempfile.mkdtemp(prefix="zones-bench-"))


def new_store(kind: str) -> AnyZoneStore | None:
    """Return a fresh store of ``kind``: memory (None), sqlite or file."""
    if kind == "memory":
        return None
    if kind == "sqlite":
        return SQLiteZoneStore(private_dir() / "zones.db")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return FileZoneStore(private_dir() / "zones.json")


def new_helper(kind: str) -> ConntrackHelper:
    """Return a recovered helper on a fresh store, so that only allocation is timed."""
    helper = ConntrackHelper(executor=FakeConntrack(), zone_store=new_store(kind))
    helper.recover()
    return helper


def one_by_one(kind: str, count: int) -> float:
    """Return the seconds of ``count`` allocate_zone calls on a fresh ``kind`` store."""
    helper = new_helper(kind)
    keys = [f"port-{i}" for i in range(count)]
    start = time.perf_counter()
    for key in keys:
        helper.allocate_zone(key)
    return time.perf_counter() - start


def all_at_once(kind: str, count: int) -> float:
    """Return the seconds of one allocate_zones call for ``count`` keys."""
    helper = new_helper(kind)
    keys = [f"port-{i}" for i in range(count)]
    start = time.perf_counter()
    zones = helper.allocate_zones(keys)
    seconds = time.perf_counter() - start
    assert len(set(zones.values())) == count
    return seconds


def best(repeat: int, run: Callable[[], float]) -> float:
    """Return the shortest of ``repeat`` runs (the least disturbed by other load)."""
    return min(run() for _ in range(repeat))


# -- the figures ---------------------------------------------------------------


class Report:
    """Print figures and targets; remember whether a target was missed."""

    def __init__(self) -> None:
        self.missed: list[str] = []

    def line(self, label: str, seconds: float, note: str = "") -> None:
        """Print one figure."""
        print(f"  {label:<58} {seconds:9.4f} s  {note}")

    def target(self, label: str, ok: bool) -> None:
        """Print a target and whether this run met it."""
        print(f"  target {label:<51} {'ok' if ok else 'MISSED'}")
        if not ok:
            self.missed.append(label)


def single_and_bulk(report: Report, count: int, file_count: int, repeat: int) -> None:
    """Time allocate_zone and allocate_zones on every store, side by side."""
    print(f"{count} allocations through ConntrackHelper (best of {repeat}):")
    memory = best(repeat, lambda: one_by_one("memory", count))
    sqlite = best(repeat, lambda: one_by_one("sqlite", count))
    file_part = best(1, lambda: one_by_one("file", file_count))
    memory_many = best(repeat, lambda: all_at_once("memory", count))
    sqlite_many = best(repeat, lambda: all_at_once("sqlite", count))
    report.line("allocate_zone x N, MemoryZoneStore", memory)
    report.line("allocate_zone x N, SQLiteZoneStore", sqlite, f"{sqlite / memory:5.1f}x memory")
    report.line(f"allocate_zone x {file_count}, FileZoneStore (measured)", file_part,
                f"{file_part / file_count * 1e3:.2f} ms per call")
    scaled = file_part * (count / file_count) ** 2
    report.line("  ... scaled to N (cost per call grows with N: x(N/n)^2)", scaled,
                f"{scaled / memory:5.0f}x memory")
    report.line("allocate_zones(N keys), MemoryZoneStore", memory_many)
    report.line("allocate_zones(N keys), SQLiteZoneStore", sqlite_many,
                f"{sqlite_many / memory:4.2f}x memory allocate_zone, "
                f"{sqlite_many / memory_many:4.2f}x memory allocate_zones")
    report.target(f"SQLite allocate_zone x {count} <= 1.0 s", sqlite <= 1.0)
    report.target("SQLite allocate_zone within 10x memory", sqlite <= 10 * memory)
    report.target("SQLite allocate_zones within 2x memory", sqlite_many <= 2 * memory)


def whole_range(report: Report, repeat: int) -> Path:
    """Fill 65,535 zones in one call, check exhaustion; return the full store."""
    keys = [f"port-{i}" for i in range(MAX_CONNTRACK_ZONE_ID)]
    seconds = []
    path = Path()
    for _ in range(repeat):
        path = private_dir() / "zones.db"
        helper = ConntrackHelper(executor=FakeConntrack(), zone_store=SQLiteZoneStore(path))
        helper.recover()
        start = time.perf_counter()
        helper.allocate_zones(keys)
        seconds.append(time.perf_counter() - start)
        try:
            helper.allocate_zone("one-too-many")
            exhausted = False
        except exceptions.ZoneExhaustedError:
            exhausted = True
    print(f"the whole zone space (best of {repeat}):")
    report.line(f"allocate_zones({MAX_CONNTRACK_ZONE_ID} keys), fresh SQLiteZoneStore",
                min(seconds))
    report.target("65,535 zones <= 2 s", min(seconds) <= 2.0)
    report.target("the next allocation raises ZoneExhaustedError", exhausted)
    return path


def open_full(report: Report, path: Path, repeat: int) -> None:
    """Time a new process opening the full store and answering one get_zone."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", OPEN_AND_GET, str(path)], env=env,
                             capture_output=True, text=True, check=True)
        runs.append(tuple(float(x) for x in out.stdout.split()))
    opened, imported = min(runs)
    report.line("new process: open 65,535-zone store + first get_zone", opened,
                f"(importing the library took {imported:.3f} s more)")
    report.target("open + first get_zone <= 0.5 s", opened <= 0.5)


def four_processes(report: Report) -> None:
    """Run 4 processes x 500 allocate_zone on one store at once; check the result."""
    directory = private_dir()
    path = directory / "zones.db"
    ZoneAllocator(store=SQLiteZoneStore(path))  # create it before the race
    start_file = directory / "go"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(path), f"p{n}", "500",
                                str(start_file)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
              for n in range(4)]
    time.sleep(1.0)  # every racer imported and opened
    began = time.perf_counter()
    start_file.touch()
    owned: dict[str, int] = {}
    for racer in racers:
        out, err = racer.communicate(timeout=300)
        if racer.returncode != 0:
            raise RuntimeError(f"a racer failed: {err}")
        owned.update(json.loads(out))
    seconds = time.perf_counter() - began
    final = ZoneAllocator(store=SQLiteZoneStore(path)).items()
    print("4 processes x 500 allocate_zone on one SQLiteZoneStore:")
    report.line("wall time of the race", seconds,
                f"{len(set(owned.values()))} distinct zones for {len(owned)} keys")
    report.target("2,000 distinct zones, none owned twice",
                  len(owned) == 2000 and len(set(owned.values())) == 2000 and final == owned)


def allocator_versus_first_gap(count: int, churn: int) -> None:
    """Keep the allocator's comparison with a first-gap scan (memory only)."""
    print(f"ZoneAllocator versus a first-gap scan, {count} zones + {churn} churn:")
    fast = run_workload(ZoneAllocator((1, count)), count, churn)
    slow = run_workload(FirstGapAllocator(1, count), count, churn)
    print(f"  ZoneAllocator {fast:.3f} s, first-gap scan {slow:.3f} s: {slow / fast:.1f}x")


def main() -> int:
    """Run the benchmarks, print the figures; return 1 when a target was missed."""
    parser = argparse.ArgumentParser(description="Time the zone stores side by side.")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--file-count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gap-count", type=int, default=MAX_CONNTRACK_ZONE_ID)
    parser.add_argument("--churn", type=int, default=10_000)
    args = parser.parse_args()
    report = Report()
    single_and_bulk(report, args.count, args.file_count, args.repeat)
    full = whole_range(report, max(1, args.repeat // 2))
    open_full(report, full, args.repeat)
    four_processes(report)
    allocator_versus_first_gap(args.gap_count, args.churn)
    if report.missed:
        print("missed: " + "; ".join(report.missed))
    return 1 if report.missed else 0


if __name__ == "__main__":
    sys.exit(main())
