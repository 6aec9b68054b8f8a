"""Read path: ``list_entries()`` through the privsep daemon against a raw dump.

Run as root from the repository root::

    .venv/bin/python -m bench.read_path [--entries 100000] [--repeat 5]

Fills a throwaway namespace with ``--entries`` UDP flows of distinct
sources (``conntrack -R``), starts the privsep daemon by fork, then times in
alternating rounds, so load from other processes drifts every side alike:

* ``conntrack -L`` run directly (the nsenter argv the executors build,
  stdout kept as bytes, nothing decoded): the floor;
* ``ConntrackHelper.list_entries()`` through the daemon: the listing
  streamed (``start_listing``/``read_stream``) and parsed while conntrack
  prints; the same through ``ProcessExecutor`` (a pipe, parsed while
  conntrack prints); the same through the daemon
  with the caller holding the garbage collector (the library never does:
  that is process-wide state), to show what the collector costs;
* the transfer alone (``PrivsepExecutor`` output read and dropped), the
  parse alone (``parse_entries`` of text already in memory), the same with
  the collector held, and within it the fast line pattern alone and the
  address conversion alone (each distinct address text to a netaddr
  object), to show where the time goes; then the share of one
  ``list_entries`` spent in the cyclic garbage collector (watched through
  ``gc.callbacks``, never paused).

Then the peak memory of streaming the table through
``ConntrackHelper.iter_entries()`` (tracemalloc, this process only, above
the baseline).  Targets: list_entries / dump <= 2.0, peak < 50 MB.
"""

from __future__ import annotations

import argparse
import codecs
import fcntl
import gc
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator

from bench import _common
from conntrack_lib import commands, daemon, executor, helper, netns, parser, privileged
from conntrack_lib.parser import base
from conntrack_lib.parser.fast import FAST_LINE_RE

RATIO_TARGET = 2.0
PEAK_TARGET_MB = 50.0
#: Bytes of the piped side's pipe, and the most one read takes.
PIECE_BYTES = 1 << 20


def _seed_lines(count: int) -> list[str]:
    """Return ``-I`` lines for ``count`` UDP flows with distinct sources."""
    return [f"-I -p udp -s 10.{n >> 16 & 0xFF}.{n >> 8 & 0xFF}.{n & 0xFF} -d 10.250.0.1 "
            f"--sport 1000 --dport 53 -t 3600" for n in range(count)]


def _raw_dump(argv: tuple[str, ...]) -> bytes:
    done = subprocess.run(argv, capture_output=True, check=True)
    return done.stdout


def _rounds(calls: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Return the median seconds of each call, timed round-robin ``repeat`` times."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            gc.collect()
            samples[name].append(_common.timed(call)[0])
    return {name: statistics.median(times) for name, times in samples.items()}


def _peak_mb(call: Callable[[], int]) -> tuple[float, int]:
    """Return the peak MiB this process allocated during ``call()`` and its result."""
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    try:
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - baseline) / 2**20, result


class _CollectorClock:
    """Add up the time the cyclic garbage collector runs (observed, not changed)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.full += info["generation"] == 2


def _collector_share(call: Callable[[], object]) -> tuple[float, float, int]:
    """Return the wall time of ``call()``, the collector's part of it and its full runs."""
    clock = _CollectorClock()
    gc.collect()
    gc.callbacks.append(clock)
    try:
        seconds = _common.timed(call)[0]
    finally:
        gc.callbacks.remove(clock)
    return seconds, clock.seconds, clock.full


def _collector_held(call: Callable[[], object]) -> object:
    """Run ``call()`` with the collector paused, as an agent could choose to."""
    gc.disable()
    try:
        return call()
    finally:
        gc.enable()


def _regex_only(text: str) -> int:
    return sum(1 for match in FAST_LINE_RE.finditer(text) if match.groups())


def _address_texts(text: str) -> list[str]:
    """Return the four address texts of every line the fast pattern reads."""
    return [match[group] for match in FAST_LINE_RE.finditer(text) for group in (6, 7, 13, 14)]


def _addresses_only(texts: list[str]) -> int:
    """Look every address text up as the parser does: one cache per call."""
    cache = base.Addresses()
    return len([cache[address] for address in texts])


def _piped_parse(argv: tuple[str, ...]) -> int:
    """Parse conntrack's output while it prints, fed in pieces of whole lines."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        # A 64 KiB pipe holds conntrack in lockstep with the parse; a
        # larger one lets it print ahead, as a daemon reading into a buffer
        # would.
        fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIECE_BYTES)
        return len(parser.parse_entries(_pieces(proc.stdout.fileno())))


def _pieces(fd: int) -> Iterator[str]:
    """Yield what a pipe delivers, decoded and cut after its last newline."""
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    pending = ""
    while data := os.read(fd, PIECE_BYTES):
        text = pending + decoder.decode(data)
        cut = text.rfind("\n") + 1
        pending = text[cut:]
        if cut:
            yield text[:cut]
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def _drain(privsep: executor.PrivsepExecutor, ns: str) -> int:
    return sum(len(line) for line in privsep.iter_lines(commands.ListCommand(), namespace=ns))


def main() -> int:
    """Measure, print the figures side by side; return 0 when the targets are met."""
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--entries", type=int, default=100_000)
    args.add_argument("--repeat", type=int, default=5)
    opts = args.parse_args()
    _common.require_root()
    with _common.namespace("readpath") as ns:
        _common.fill(ns, _seed_lines(opts.entries))
        privsep = executor.PrivsepExecutor()
        reader = helper.ConntrackHelper(namespace=ns, executor=privsep)
        direct = helper.ConntrackHelper(
            namespace=ns, executor=executor.ProcessExecutor(binary=_common.CONNTRACK))
        argv = netns.build_argv(commands.ListCommand(), _common.CONNTRACK, ns)
        text = _raw_dump(argv).decode()
        addresses = _address_texts(text)
        try:
            listed = len(reader.list_entries())  # starts the daemon outside the timing
            figures = _rounds({
                "conntrack -L (raw)": lambda: _raw_dump(argv),
                "list_entries (privsep)": reader.list_entries,
                "list_entries (process)": direct.list_entries,
                "list_entries, caller holds gc": lambda: _collector_held(reader.list_entries),
                "dump piped into parse_entries": lambda: _piped_parse(argv),
                "transfer only (privsep)": lambda: _drain(privsep, ns),
                "parse only (in memory)": lambda: parser.parse_entries(text),
                "  same, caller holds gc": lambda: _collector_held(
                    lambda: parser.parse_entries(text)),
                "  of which the line regex": lambda: _regex_only(text),
                "  of which the addresses": lambda: _addresses_only(addresses),
            }, opts.repeat)
            heap = len(gc.get_objects())  # what each full collection walks before the parse
            collector = _collector_share(reader.list_entries)
            peak, streamed = _peak_mb(lambda: sum(1 for _ in reader.iter_entries()))
        finally:
            daemon.stop(privileged.default)
    return _report(figures, (*collector, heap), (listed, streamed, peak, len(text)))


def _report(figures: dict[str, float], collector: tuple[float, float, int, int],
            sizes: tuple[int, int, float, int]) -> int:
    listed, streamed, peak, size = sizes
    floor = figures["conntrack -L (raw)"]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"{listed} entries, {size / 1e6:.1f} MB of text")
    for name, seconds in figures.items():
        print(f"  {name:<30} {seconds:7.3f} s   x{seconds / floor:5.2f}   "
              f"{seconds / max(listed, 1) * 1e6:5.2f} us/line")
    wall, collected, full, heap = collector
    print(f"garbage collector during one list_entries: {collected:.3f} s of {wall:.3f} s "
          f"({collected / wall:.0%}, {full} full collections; {heap} objects tracked "
          "before it)")
    _breakdown(figures)
    ratio = figures["list_entries (privsep)"] / floor
    print(f"ratio list_entries / dump   {ratio:.2f}  (target <= {RATIO_TARGET})")
    print(f"iter_entries peak           {peak:.1f} MiB over {streamed} entries "
          f"(target < {PEAK_TARGET_MB:.0f})")
    ok = ratio <= RATIO_TARGET and peak < PEAK_TARGET_MB and listed == streamed
    print("result                      " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def _breakdown(figures: dict[str, float]) -> None:
    """Print list_entries through the daemon split into the measured parts (x dump).

    The daemon streams the listing, so the dump and the transfer run while
    the agent parses: the parse in memory is the floor of the streamed side,
    and what the stream adds is the rest.
    """
    floor = figures["conntrack -L (raw)"]
    parse, held = figures["parse only (in memory)"], figures["  same, caller holds gc"]
    regex, addresses = figures["  of which the line regex"], figures["  of which the addresses"]
    parts = {
        "line regex": regex,
        "address objects": addresses,
        "other construction": held - regex - addresses,
        "garbage collector": parse - held,
        "what streaming adds (dump and transfer not hidden, joins)":
            figures["list_entries (privsep)"] - parse,
    }
    print("list_entries (privsep), measured parts: " + ", ".join(
        f"{name} {seconds / floor:.2f}" for name, seconds in parts.items()))
    print(f"(alone, the dump is 1.00 and the transfer, decode and split "
          f"{figures['transfer only (privsep)'] / floor:.2f}: both overlap the parse)")


if __name__ == "__main__":
    sys.exit(main())
