"""What each executor adds to one ``conntrack -C`` (root, own namespace).

Prints the median of RUNS calls for: the binary run directly with
``subprocess.run`` (the same nsenter argv the executors build), a
``ProcessExecutor`` and a ``PrivsepExecutor`` whose daemon is started by fork.
The three run in turn within each round, so load from other processes on a
shared machine drifts all of them alike.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from bench import _common
from conntrack_lib import commands, daemon, executor, netns, privileged

RUNS = int(os.environ.get("BENCH_RUNS", "200"))


def _direct(argv: tuple[str, ...]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)


def _interleaved(calls: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Return the median seconds of each call, timed round-robin RUNS times."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(RUNS):
        for name, call in calls.items():
            samples[name].append(_common.timed(call)[0])
    return {name: statistics.median(times) for name, times in samples.items()}


def main() -> int:
    """Measure and print the three medians side by side; return 0."""
    _common.require_root()
    count = commands.CountCommand()
    with _common.namespace("overhead") as ns:
        _common.fill(ns, [f"-I -p udp -s 10.9.{i // 250}.{i % 250 + 1} -d 10.250.0.1 "
                          f"--sport 1000 --dport 53 -t 600" for i in range(1000)])
        argv = netns.build_argv(count, _common.CONNTRACK, ns)
        process = executor.ProcessExecutor(binary=_common.CONNTRACK)
        privsep = executor.PrivsepExecutor()
        started = time.perf_counter()
        privsep.execute(count, namespace=ns)  # start the daemon outside the timing
        startup = time.perf_counter() - started
        try:
            figures = _interleaved({
                "subprocess (direct)": lambda: _direct(argv),
                "ProcessExecutor": lambda: process.execute(count, namespace=ns),
                "PrivsepExecutor (fork)": lambda: privsep.execute(count, namespace=ns),
            })
        finally:
            daemon.stop(privileged.default)
    base = figures["subprocess (direct)"]
    print(f"median of {RUNS} runs of `conntrack -C` (1,000 flows, own namespace)")
    for name, seconds in figures.items():
        print(f"  {name:<24} {seconds * 1000:8.3f} ms   x{seconds / base:5.2f}")
    print(f"  privsep daemon start (first call, fork): {startup * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
