"""Time ZoneAllocator against a first-gap-scan allocator, and with a file store.

Workload: allocate every zone of the range one key at a time, then release
a random sample of keys and allocate as many new keys.  The baseline keeps
a sorted list of used zones and, once the highest zone is taken, scans it
from the low end for the first gap, the way a "find open zone" helper over
a sorted list does.  It is given the benefit of keeping that list sorted
incrementally instead of rebuilding it for each allocation.

Run from the repository root:
``python -m bench.zones [--count N] [--churn N] [--file-count N]``.
"""

from __future__ import annotations

import argparse
import bisect
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from conntrack_lib.constants import MAX_CONNTRACK_ZONE_ID
from conntrack_lib.zones import FileZoneStore, ZoneAllocator


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


def timed(label: str, run: Callable[[], float]) -> float:
    """Print and return the duration of ``run``."""
    seconds = run()
    print(f"{label:<48} {seconds:10.3f} s")
    return seconds


def main() -> None:
    """Run the benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description="Time zone allocation strategies.")
    parser.add_argument("--count", type=int, default=MAX_CONNTRACK_ZONE_ID)
    parser.add_argument("--churn", type=int, default=10_000)
    parser.add_argument("--file-count", type=int, default=1_000)
    args = parser.parse_args()

    fast = timed(
        f"ZoneAllocator: {args.count} + {args.churn} churn",
        lambda: run_workload(ZoneAllocator((1, args.count)), args.count, args.churn),
    )
    slow = timed(
        f"first-gap scan: {args.count} + {args.churn} churn",
        lambda: run_workload(FirstGapAllocator(1, args.count), args.count, args.churn),
    )
    print(f"{'speed-up':<48} {slow / fast:10.1f} x")

    churn = args.file_count // 10
    with tempfile.TemporaryDirectory(prefix="zones-bench-") as tmp:
        store = FileZoneStore(Path(tmp) / "zones.json")
        file_seconds = timed(
            f"ZoneAllocator + FileZoneStore: {args.file_count} + {churn} churn",
            lambda: run_workload(
                ZoneAllocator((1, args.file_count), store=store), args.file_count, churn
            ),
        )
    operations = args.file_count + 2 * churn
    print(f"{'FileZoneStore per operation':<48} {file_seconds / operations * 1e3:10.3f} ms")


if __name__ == "__main__":
    main()
