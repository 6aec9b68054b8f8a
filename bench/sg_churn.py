"""Security-group churn: the delete planner versus one conntrack -D per request.

A table of 10,000 flows in 20 zones; 1,000 deletion requests of the kinds an
L2 agent issues when rules and remote group members change (zone + remote
IP, zone + protocol/port), half of them duplicates, a few covering whole
zones.  Both sides start from equal tables and must leave equal tables.

Run as root: ``python -m bench.sg_churn``.
"""

from __future__ import annotations

import random
from typing import Any

from bench import _common as c
from conntrack_lib.executor import ProcessExecutor
from conntrack_lib.helper import ConntrackHelper

ZONES = list(range(4101, 4121))
REMOTES = [f"198.51.100.{i}" for i in range(1, 51)]
PORTS = (22, 80, 443, 8080, 5432)


def flow_lines() -> list[str]:
    """Return 10,000 ``-I`` lines spread over the zones."""
    lines = []
    for n in range(10_000):
        zone = ZONES[n % len(ZONES)]
        local = f"10.30.{zone % 250}.{n % 200 + 1}"
        remote = REMOTES[n % len(REMOTES)]
        port = PORTS[n % len(PORTS)]
        lines.append(f"-I -p tcp -s {remote} -d {local} --sport {20000 + n} --dport {port} "
                     f"--state ESTABLISHED -t 3600 -w {zone}")
    return lines


def requests(seed: int = 7) -> list[dict[str, Any]]:
    """Return 1,000 deletion requests, half duplicates, some whole zones."""
    rnd = random.Random(seed)
    distinct: list[dict[str, Any]] = []
    while len(distinct) < 500:
        kind = rnd.random()
        zone = rnd.choice(ZONES)
        if kind < 0.006:
            distinct.append({"zone": zone})
        elif kind < 0.6:
            distinct.append({"zone": zone, "family": "ipv4", "src": rnd.choice(REMOTES)})
        else:
            distinct.append({"zone": zone, "family": "ipv4", "proto": "tcp",
                             "dport": rnd.choice(PORTS)})
    everything = distinct + [rnd.choice(distinct) for _ in range(500)]
    rnd.shuffle(everything)
    return everything


def neutron_way(ns: str, reqs: list[dict[str, Any]]) -> tuple[float, int]:
    """Delete with one conntrack -D process per request; return (seconds, processes)."""
    from conntrack_lib.commands import DeleteCommand

    argvs = [DeleteCommand(**r).argv() for r in reqs]
    seconds, _ = c.timed(lambda: [c.conntrack(ns, argv) for argv in argvs])
    return seconds, len(argvs)


def main() -> None:
    """Run both sides on equal tables and print the comparison."""
    c.require_root()
    lines, reqs = flow_lines(), requests()
    with c.namespace("sg") as ns:
        c.fill(ns, lines)
        base_s, base_procs = neutron_way(ns, reqs)
        base_table = c.table(ns)

        rows = []
        for backend in ("auto", "cli"):
            c.flush(ns)
            c.fill(ns, lines)
            counting = c.CountingExecutor(ProcessExecutor())
            helper = ConntrackHelper(namespace=ns, executor=counting,
                                     exact_delete_backend=backend)
            seconds, report = c.timed(lambda h=helper: h.delete_many(reqs))
            same = c.table(ns) == base_table
            rows.append((backend, seconds, counting.processes, counting.netlink_calls,
                         report.plan, report.deleted, same))

    print(f"security-group churn: {len(lines)} flows in {len(ZONES)} zones, "
          f"{len(reqs)} deletion requests")
    print(f"  one conntrack -D per request: {base_s:8.2f} s  processes {base_procs:5d}  "
          f"table dumps {base_procs:5d}")
    for backend, seconds, procs, nl, plan, deleted, same in rows:
        print(f"  planner (backend {backend:4s}):     {seconds:8.2f} s  processes {procs:5d}  "
              f"table dumps {plan.dumps:5d}  netlink calls {nl}  deleted {deleted}  "
              f"same table: {same}")
        print(f"    plan: {plan.received} requests, {plan.merged} merged, {plan.dropped} "
              f"subsumed, {len(plan.zone_wide)} whole zones, strategy {plan.strategy}; "
              f"speed-up {c.ratio(base_s, seconds)}, dumps "
              f"{c.ratio(base_procs, max(plan.dumps, 1))} fewer")


if __name__ == "__main__":
    main()
