#!/usr/bin/env python3
"""Benchmark conntrack_lib.parser against the dump that feeds it.

Run as root from the repository root::

    .venv/bin/python -m bench.parse [--entries 100000] [--repeat 3]

It creates its own network namespace (removed in ``finally``), fills it with
``conntrack -R -`` and compares, in the same run, the wall time of the
``conntrack -L`` process (median of N) with the time to parse its output
(median of N), then measures the peak memory of streaming the output
through ``iter_entries`` (tracemalloc, above the baseline).
Targets: parse/dump ratio <= 1.0, peak < 50 MB.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conntrack_lib import constants, parser
from conntrack_lib.testing import namespaces

CONNTRACK = constants.CONNTRACK_BINARY
IP = namespaces.ip_binary() or "ip"
RATIO_TARGET = 1.0
PEAK_TARGET_MB = 50.0


def _load_lines(count: int) -> Iterator[str]:
    """Yield -R lines for ``count`` UDP flows with distinct sources (zone 0)."""
    for n in range(count):
        a, b, c = (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF
        yield (f"-I -p udp -s 10.{a}.{b}.{c} -d 10.250.0.1 --sport 1000 --dport 53 "
               f"-t 3600\n")


def _conntrack(ns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IP, "netns", "exec", ns, CONNTRACK, *args], input=stdin,
                          capture_output=True, text=True, check=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time_dump(ns: str, repeat: int) -> tuple[float, float, str]:
    """Return the median wall and CPU time of ``conntrack -L`` and one output.

    The CPU time (user + system of the child processes, including the small
    ``ip netns exec`` start-up) is printed too because wall times on a busy
    machine measure the scheduler as much as the work.
    """
    walls, cpus, out = [], [], ""
    for _ in range(repeat):
        cpu = _children_cpu()
        start = time.perf_counter()
        out = _conntrack(ns, "-L").stdout
        walls.append(time.perf_counter() - start)
        cpus.append(_children_cpu() - cpu)
    return statistics.median(walls), statistics.median(cpus), out


def _time_parse(text: str, repeat: int) -> tuple[float, float, int]:
    """Return the median wall and CPU time of parse_entries(text) and the entry count."""
    walls, cpus, count = [], [], 0
    for _ in range(repeat):
        gc.collect()
        cpu = time.process_time()
        start = time.perf_counter()
        count = len(parser.parse_entries(text, strict=True))
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), count


def _peak_stream(text: str) -> tuple[float, int]:
    """Return the peak MiB allocated while streaming ``text`` through iter_entries."""
    lines = text.splitlines()  # the input itself is not part of the measurement
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    baseline = tracemalloc.get_traced_memory()[0]
    count = sum(1 for _ in parser.iter_entries(iter(lines)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - baseline) / 2**20, count


def main() -> int:
    """Run the benchmark and print a short report."""
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--entries", type=int, default=100_000)
    args.add_argument("--repeat", type=int, default=3)
    opts = args.parse_args()
    if os.geteuid() != 0:
        print("bench/parse.py needs root (ip netns, conntrack)", file=sys.stderr)
        return 2
    with namespaces.throwaway_namespace("ctbench-parse") as ns:
        _conntrack(ns, "-R", "-", stdin="".join(_load_lines(opts.entries)))
        dump_s, dump_cpu, text = _time_dump(ns, opts.repeat)
        # Parse in the same run, while the namespace (and its table) still exist.
        parse_s, parse_cpu, parsed = _time_parse(text, opts.repeat)
    peak_mb, streamed = _peak_stream(text)
    ratio = parse_s / dump_s
    lines = text.count("\n")
    print(f"load average           {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"entries in table       {lines}")
    print(f"conntrack -L (median)  wall {dump_s:.3f} s, cpu {dump_cpu:.3f} s, "
          f"{len(text)} bytes")
    print(f"parse_entries (median) wall {parse_s:.3f} s, cpu {parse_cpu:.3f} s, "
          f"{parsed} entries, {parse_s / max(parsed, 1) * 1e6:.2f} us/entry")
    print(f"ratio parse/dump       wall {ratio:.2f}, cpu {parse_cpu / dump_cpu:.2f}  "
          f"(target <= {RATIO_TARGET})")
    print(f"iter_entries peak      {peak_mb:.1f} MiB above baseline over {streamed} entries "
          f"(target < {PEAK_TARGET_MB:.0f})")
    ok = ratio <= RATIO_TARGET and peak_mb < PEAK_TARGET_MB and parsed == lines
    print("result                 " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
