"""Bounded stress: threads and processes mixing every operation on one namespace.

Eight actor threads in this process share one deletion queue and two helpers
(one running conntrack as a child process, one through the privsep daemon);
four child processes (``stress_worker.py``) each run one actor with their own
helper and queue.  All of them share one zone space through a
:class:`~conntrack_lib.zones.SQLiteZoneStore`, with fewer zones than they may
hold at once.  Each actor owns its keys and an address block and models the
flows it expects; afterwards the real table must equal the union of the
models, no zone may ever have had two owners, and every queue must have
drained without failures.

``CONNTRACK_LIB_STRESS_SECONDS`` sets how long the actors run (default 60).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from conntrack_lib import daemon, privileged
from conntrack_lib.executor import PrivsepExecutor, ProcessExecutor
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.worker import DeletionQueue
from conntrack_lib.zones import SQLiteZoneStore
from tests.functional import netns, stress_worker
from tests.functional.stress_worker import Actor, ErrorLog, FlowKey, address

THREADS = 8
PROCESSES = 4
#: Seconds between starting the children and the first operation: they
#: import the library and recover the (still empty) table meanwhile.
START_DELAY = 5.0
#: Seconds allowed after the run for the actors to finish and queues to drain.
GRACE = 30.0
#: Seconds this process's queue may take to drain once the actors stopped.
DRAIN_TIMEOUT = 10.0
WORKER = Path(stress_worker.__file__).resolve()
REPO = WORKER.parents[2]


def _duration() -> float:
    return float(os.environ.get("CONNTRACK_LIB_STRESS_SECONDS", "60"))


def _spawn(ns: str, store: Path, index: int, *, seed: int, start_at: float, duration: float,
           tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"child-{index}.json"
    out = open(tmp_path / f"child-{index}.out", "wb")  # noqa: SIM115 - closed by the child's exit
    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = [sys.executable, str(WORKER), ns, str(store), str(index), str(seed),
            repr(start_at), repr(duration), str(log)]
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    out.close()
    return proc, log


def _child_report(proc: subprocess.Popen[bytes], log: Path, tmp_path: Path,
                  index: int) -> tuple[dict[str, Any] | None, list[str]]:
    """Return a child's report and the problems it reported (with tracebacks)."""
    output = (tmp_path / f"child-{index}.out").read_text(errors="replace")[-4000:]
    if not log.exists():
        return None, [f"child {index} exited {proc.returncode} without a report:\n{output}"]
    report: dict[str, Any] = json.loads(log.read_text())
    problems = [f"child {index} queue error:\n{e}" for e in report["queue_errors"]]
    if report["error"] is not None:
        problems.append(f"child {index} failed:\n{report['error']}\n{output}")
    if proc.returncode != 0 and not problems:
        problems.append(f"child {index} exited {proc.returncode}:\n{output}")
    return report, problems


def _sample_store(store: Path, until: float, threads: list[threading.Thread],
                  children: list[subprocess.Popen[bytes]]) -> int:
    """Check the stored zone space for duplicates until every actor ends; return samples."""
    reader = SQLiteZoneStore(store)
    samples = 0
    while time.monotonic() < until and (any(t.is_alive() for t in threads)
                                        or any(p.poll() is None for p in children)):
        snapshot = reader.read()
        if snapshot is not None:
            _assert_store_consistent(snapshot.zones, snapshot.released, snapshot.held)
            samples += 1
        time.sleep(0.05)
    return samples


def _assert_store_consistent(zones: Mapping[str, int], released: Iterable[int],
                             held: Iterable[int]) -> None:
    owned = list(zones.values())
    assert len(owned) == len(set(owned)), f"a zone has two owners in the store: {dict(zones)}"
    free = list(released) + list(held)
    assert not set(owned) & set(free), f"owned zones also free or held: {set(owned) & set(free)}"


def _overlaps(intervals: list[list[Any]]) -> Iterator[str]:
    """Yield a description of every two holdings of one zone that overlap in time."""
    by_zone: dict[int, list[list[Any]]] = collections.defaultdict(list)
    for item in intervals:
        by_zone[item[1]].append(item)
    end_of_time = float("inf")
    for zone, items in by_zone.items():
        items.sort(key=lambda it: it[2])
        for first, second in itertools.pairwise(items):
            first_end = end_of_time if first[3] is None else first[3]
            if second[2] < first_end:
                yield f"zone {zone}: {first[0]} and {second[0]} overlap"


def _table(ns: str) -> list[FlowKey]:
    """Return the model keys of every flow a plain ``conntrack -L`` shows."""
    flows = []
    for line in netns.table(ns):
        words = line.split()
        fields: dict[str, str] = {}
        for word in words:
            name, sep, value = word.partition("=")
            if sep and name not in fields:  # the first of each is the original tuple
                fields[name] = value
        flows.append((int(fields.get("zone", "0")), address(fields["src"]),
                      address(fields["dst"]), int(fields["sport"]), int(fields["dport"]),
                      words[0]))
    return flows


def _expected(reports: list[dict[str, Any]]) -> set[FlowKey]:
    flows: set[FlowKey] = set()
    for report in reports:
        for held in report["live"].values():
            flows.update((f[0], f[1], f[2], f[3], f[4], f[5]) for f in held["flows"])
    return flows


def _start_threads(actors: list[Actor], start_at: float) -> list[threading.Thread]:
    threads = [threading.Thread(target=a.run, name=f"stress-{a.index}") for a in actors]
    time.sleep(max(0.0, start_at - time.monotonic()))
    for thread in threads:
        thread.start()
    return threads


def _summary(reports: list[dict[str, Any]]) -> collections.Counter[str]:
    ops: collections.Counter[str] = collections.Counter()
    for report in reports:
        ops.update(report["ops"])
    return ops


def test_threads_and_processes_mixing_every_operation(ns: str, tmp_path: Path) -> None:
    duration = _duration()
    began = time.monotonic()
    seed = int(os.environ.get("CONNTRACK_LIB_STRESS_SEED", str(random.randrange(2**32))))
    print(f"stress seed {seed} (CONNTRACK_LIB_STRESS_SEED), {duration}s")
    store = tmp_path / "zones.db"
    # Two helpers over one store: half the threads run conntrack as
    # children, half through the privsep daemon (started here, before any
    # actor thread exists, since it is forked from this process).
    helpers = [ConntrackHelper(namespace=ns, executor=runner,
                               zone_range=stress_worker.ZONE_RANGE,
                               zone_store=SQLiteZoneStore(store))
               for runner in (ProcessExecutor(), PrivsepExecutor())]
    for helper in helpers:
        helper.recover()
    errors = ErrorLog()
    queue = DeletionQueue(helpers[0], on_error=errors)
    queue.start()
    start_at = time.monotonic() + START_DELAY
    children = [_spawn(ns, store, THREADS + i, seed=seed + THREADS + i, start_at=start_at,
                       duration=duration, tmp_path=tmp_path) for i in range(PROCESSES)]
    actors = [Actor(i, helpers[i % 2], queue, seed + i, start_at + duration)
              for i in range(THREADS)]
    until = start_at + duration + GRACE
    threads = _start_threads(actors, start_at)
    try:
        samples = _sample_store(store, until, threads, [p for p, _ in children])
    finally:
        # Even after a failed sample: the actors end by their deadline.
        for thread in threads:
            thread.join(max(0.0, until - time.monotonic()))
        for proc, _ in children:
            with contextlib.suppress(subprocess.TimeoutExpired):  # reported below
                proc.wait(timeout=max(1.0, until - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        drained = stress_worker.drain(queue, DRAIN_TIMEOUT)
        daemon.stop(privileged.default)

    problems = [f"actor thread {t.name} still running after the grace time"
                for t in threads if t.is_alive()]
    problems += [f"actor {a.index}:\n{a.error}" for a in actors if a.error]
    problems += [f"queue error in this process:\n{e}" for e in errors.errors]
    children_reports = []
    for i, (proc, log) in enumerate(children):
        report, found = _child_report(proc, log, tmp_path, THREADS + i)
        problems += found
        if report is not None:
            children_reports.append(report)
    assert not problems, "\n\n".join(problems)
    reports = [a.report() for a in actors] + children_reports

    # The deletion queues drained: nothing pending, nothing failed.
    for name, outcome in [("threads", drained)] + [
            (f"child {r['index']}", r["queue"]) for r in children_reports]:
        assert outcome["flushed"] is True, f"{name}: queue did not drain"
        assert outcome["stats"]["pending"] == 0, f"{name}: {outcome['stats']}"
        assert outcome["stats"]["failed"] == 0, f"{name}: {outcome['stats']}"
        assert outcome["stats"]["dropped"] == 0, f"{name}: {outcome['stats']}"

    # No zone ever had two owners, within a process or across processes.  Each
    # holding runs from allocate's return to the release call, inside the time
    # the allocator really held it, so any overlap is a real double owner.
    intervals = [it for r in reports for it in r["intervals"]]
    overlaps = list(_overlaps(intervals))
    assert not overlaps, "\n".join(overlaps[:20])

    # The stored zone space is consistent and names exactly the live keys.
    snapshot = SQLiteZoneStore(store).read()
    assert snapshot is not None
    _assert_store_consistent(snapshot.zones, snapshot.released, snapshot.held)
    live = {key: held["zone"] for r in reports for key, held in r["live"].items()}
    assert dict(snapshot.zones) == live
    assert len(set(live.values())) == len(live)

    # The real table is exactly what the actors asked for.
    table = _table(ns)
    assert len(table) == len(set(table)), "conntrack -L shows a flow twice"
    expected = _expected(reports)
    assert set(table) == expected, (
        f"unexpected {sorted(set(table) - expected)[:5]}, "
        f"missing {sorted(expected - set(table))[:5]}")

    ops = _summary(reports)
    stats = [drained["stats"]] + [r["queue"]["stats"] for r in children_reports]
    print(f"operations: {dict(sorted(ops.items()))}")
    print(f"queue: enqueued {sum(s['enqueued'] for s in stats)}, "
          f"deleted {sum(s['deleted'] for s in stats)}, "
          f"batches {sum(s['batches'] for s in stats)}")
    late = sum(1 for r in children_reports if r["late"])
    print(f"store samples {samples}, zone holdings {len(intervals)}, late children {late}, "
          f"final flows {len(table)}, wall {time.monotonic() - began:.1f}s")
    # The run did meaningful work: every kind of operation ran, in every process.
    assert all(ops[name] > 0 for name in stress_worker.WEIGHTS), dict(ops)
    assert all(sum(r["ops"].values()) > 0 for r in reports)
    assert time.monotonic() - began < duration + 45


def test_overlap_check_names_a_zone_held_twice_at_once() -> None:
    intervals = [["a0-k0", 200, 1.0, 5.0], ["a9-k3", 200, 4.0, None],
                 ["a1-k0", 201, 1.0, 2.0], ["a2-k0", 201, 2.0, None]]
    assert list(_overlaps(intervals)) == ["zone 200: a0-k0 and a9-k3 overlap"]


def test_overlap_check_treats_a_live_holding_as_unending() -> None:
    intervals = [["a0-k0", 205, 1.0, None], ["a1-k0", 205, 100.0, 101.0]]
    assert list(_overlaps(intervals)) == ["zone 205: a0-k0 and a1-k0 overlap"]
