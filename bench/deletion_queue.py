"""Deletion queue: 100,000 duplicated requests from 8 threads versus one process each.

A table of 10,000 flows in 20 zones.  Eight threads enqueue 100,000
deletion requests the way agents produce them: the same few departing
remote addresses in the same zones, over and over, plus two ports going
away (whole zones).  The queue drains them in the background.

The synchronous side (one ``conntrack -D`` per request, as a caller without
the queue would issue them) is measured on a sample of 300 requests and
scaled to 100,000; the output says so.  The same sample also goes through a
queue on an equal table, and the two tables must end equal.  The main run's
table is checked against the flows the requests match.

Run as root: ``python -m bench.deletion_queue``.  Exit status 1 when the
target (processes <= requests / 500) is missed or a table differs.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from bench import _common as c
from conntrack_lib import matching
from conntrack_lib.executor import ProcessExecutor
from conntrack_lib.helper import ConntrackHelper, remote_ip_requests
from conntrack_lib.worker import DeletionQueue

ZONES = list(range(4101, 4121))
REMOTES = [f"198.51.100.{i}" for i in range(1, 51)]
DEPARTING = REMOTES[:5]          # remote group members that went away
REMOVED_ZONES = ZONES[-2:]       # ports that went away
TOTAL_REQUESTS = 100_000
THREADS = 8
SAMPLE = 300
TARGET_DIVISOR = 500


def flow_lines() -> list[str]:
    """Return 10,000 ``-I`` lines: 500 per zone, remotes in both directions."""
    lines = []
    for n in range(10_000):
        zone = ZONES[n % len(ZONES)]
        local = f"10.40.{n % len(ZONES)}.{n % 100 + 1}"
        remote = REMOTES[(n // len(ZONES)) % len(REMOTES)]
        src, dst = (remote, local) if n % 2 else (local, remote)
        lines.append(f"-I -p tcp -s {src} -d {dst} --sport {10000 + n} --dport 443 "
                     f"--state ESTABLISHED -t 3600 -w {zone}")
    return lines


Call = tuple[str, int, str]  # ("ips", zone, ip) or ("zone", zone, "")


def calls(seed: int = 11) -> list[Call]:
    """Return enqueue calls adding up to TOTAL_REQUESTS requests, mostly repeats."""
    rnd = random.Random(seed)
    out: list[Call] = []
    count = 0
    while count < TOTAL_REQUESTS:
        if rnd.random() < 0.02 or TOTAL_REQUESTS - count == 1:
            out.append(("zone", rnd.choice(REMOVED_ZONES), ""))
            count += 1
        else:
            out.append(("ips", rnd.choice(ZONES), rnd.choice(DEPARTING)))
            count += 2
    return out


def expand(call: Call) -> list[dict[str, Any]]:
    """Return the filter requests one call stands for."""
    kind, zone, ip = call
    if kind == "zone":
        return [{"zone": zone}]
    return [r.filters for r in remote_ip_requests(zone, [ip])]


def enqueue(queue: DeletionQueue, call: Call) -> None:
    """Issue one call on the queue."""
    kind, zone, ip = call
    if kind == "zone":
        queue.delete_entries(zone=zone)
    else:
        queue.delete_by_remote_ips(zone, [ip])


def identities(helper: ConntrackHelper) -> set[tuple[Any, ...]]:
    """Return the table as a set of (proto, src, dst, sport, dport, zone)."""
    return {(e.proto, str(e.original.src), str(e.original.dst), e.original.sport,
             e.original.dport, e.zone) for e in helper.list_entries()}


def expected_after(helper: ConntrackHelper, requests: list[dict[str, Any]],
                   ) -> set[tuple[Any, ...]]:
    """Return the identities of the flows no request matches."""
    distinct = {tuple(sorted(r.items())): r for r in requests}.values()
    predicates = [matching.compile_filters(r) for r in distinct]
    return {(e.proto, str(e.original.src), str(e.original.dst), e.original.sport,
             e.original.dport, e.zone)
            for e in helper.list_entries() if not any(p(e) for p in predicates)}


def run_queue(ns: str, work: list[Call]) -> dict[str, Any]:
    """Enqueue ``work`` from THREADS threads, drain, and return the figures."""
    counting = c.CountingExecutor(ProcessExecutor())
    helper = ConntrackHelper(namespace=ns, executor=counting)
    expected = expected_after(helper, [r for call in work for r in expand(call)])
    counting.processes = 0  # the expectation's dump is not the queue's work
    queue = DeletionQueue(helper)
    queue.start()
    slices = [work[i::THREADS] for i in range(THREADS)]

    def produce(mine: list[Call]) -> None:
        for call in mine:
            enqueue(queue, call)

    threads = [threading.Thread(target=produce, args=(s,)) for s in slices]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    enqueued_in = time.perf_counter() - start
    if not queue.wait(timeout=1800):
        raise RuntimeError("the queue did not drain within 30 minutes")
    drained_in = time.perf_counter() - start
    queue.stop()
    return {"stats": queue.stats(), "enqueued_in": enqueued_in, "drained_in": drained_in,
            "processes": counting.processes, "netlink_calls": counting.netlink_calls,
            "table_ok": identities(helper) == expected}


def run_sync(ns: str, requests: list[dict[str, Any]]) -> tuple[float, int]:
    """Delete each request with its own conntrack process; return (seconds, processes)."""
    counting = c.CountingExecutor(ProcessExecutor())
    helper = ConntrackHelper(namespace=ns, executor=counting)
    start = time.perf_counter()
    for request in requests:
        helper.delete_entries(**request)
    return time.perf_counter() - start, counting.processes


def sample_calls(work: list[Call]) -> list[Call]:
    """Return the first calls of ``work`` adding up to SAMPLE requests."""
    out: list[Call] = []
    total = 0
    for call in work:
        if total >= SAMPLE:
            break
        out.append(call)
        total += len(expand(call))
    return out


def main() -> int:
    """Run the comparison; return 0 when the target is met and tables agree."""
    c.require_root()
    lines = flow_lines()
    work = calls()
    total = sum(len(expand(call)) for call in work)
    sample = sample_calls(work)
    sample_requests = [r for call in sample for r in expand(call)]

    with c.namespace("dq-sync") as ns_sync, c.namespace("dq-qsample") as ns_qsample:
        c.fill(ns_sync, lines)
        c.fill(ns_qsample, lines)
        sync_seconds, sync_processes = run_sync(ns_sync, sample_requests)
        sampled = run_queue(ns_qsample, sample)
        same_sample = c.table(ns_sync) == c.table(ns_qsample)

    with c.namespace("dq-main") as ns:
        c.fill(ns, lines)
        flows = len(c.table(ns))
        main = run_queue(ns, work)

    stats = main["stats"]
    per_request = sync_seconds / len(sample_requests)
    sync_estimate = per_request * total
    target = total // TARGET_DIVISOR
    print(f"table: {flows} flows in {len(ZONES)} zones; {total} requests from {THREADS} "
          f"threads ({len(work)} calls; distinct requests: "
          f"{len({tuple(sorted(r.items())) for call in work for r in expand(call)})})")
    print(f"queue: enqueued in {main['enqueued_in']:.2f} s "
          f"({total / main['enqueued_in']:,.0f} requests/s), drained in "
          f"{main['drained_in']:.2f} s ({total / main['drained_in']:,.0f} requests/s end to end)")
    print(f"queue: batches={stats['batches']} coalesced={stats['coalesced']} "
          f"deleted={stats['deleted']} failed={stats['failed']} "
          f"processes spawned={main['processes']} netlink calls={main['netlink_calls']} "
          f"(stats processes={stats['processes']})")
    print(f"synchronous, MEASURED on a sample of {len(sample_requests)} requests: "
          f"{sync_seconds:.2f} s, {sync_processes} processes "
          f"({per_request * 1000:.1f} ms per request)")
    print(f"synchronous, SCALED to {total} requests: ~{sync_estimate:,.0f} s, "
          f"{sync_processes * total // len(sample_requests)} processes "
          f"(an estimate, not a run)")
    scaled_processes = sync_processes * total / len(sample_requests)
    print(f"ratio (synchronous estimate / queue): "
          f"time {c.ratio(sync_estimate, main['drained_in'])}, "
          f"processes {c.ratio(scaled_processes, max(main['processes'], 1))}")
    print(f"same table after the {len(sample_requests)}-request sample, synchronous vs queue "
          f"(queue processes {sampled['processes']}): {same_sample}")
    print(f"main run table equals the flows no request matches: {main['table_ok']}")
    met = main["processes"] <= target
    print(f"target processes <= requests / {TARGET_DIVISOR} = {target}: "
          f"{'MET' if met else 'MISSED'} ({main['processes']})")
    return 0 if met and same_sample and main["table_ok"] and sampled["table_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
