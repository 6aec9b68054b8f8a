"""Measure the planner's cost model on this machine and print its crossovers.

The planner (:mod:`conntrack_lib.planner`) chooses between ``-D`` lines
(each one a table scan inside conntrack) and one dump parsed in Python
followed by exact deletes.  This benchmark measures each term of
:class:`~conntrack_lib.planner.CostModel` on a real table in a throwaway
namespace, prints the measured model next to the built-in one, and the
request counts from which one dump wins.

Run as root: ``python -m bench.cost_model``.
"""

from __future__ import annotations

import statistics

from bench import _common as c
from conntrack_lib import commands, matching, planner
from conntrack_lib.executor import ProcessExecutor
from conntrack_lib.helper import ConntrackHelper

ZONES = list(range(4101, 4121))
SIZES = (2_000, 10_000)
RUNS = 5


def flow_lines(count: int) -> list[str]:
    """Return ``count`` ``-I`` lines spread over 20 zones."""
    return [f"-I -p udp -s 10.40.{n // 250 % 250}.{n % 250 + 1} -d 10.41.0.{n % 200 + 1} "
            f"--sport {1024 + n % 60000} --dport 53 -t 3600 -w {ZONES[n % len(ZONES)]}"
            for n in range(count)]


def measure(ns: str, size: int) -> dict[str, float]:
    """Return the per-term seconds measured on a table of ``size`` flows."""
    c.flush(ns)
    c.fill(ns, flow_lines(size))
    helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    process = c.median_time(helper.count, RUNS * 2)
    miss = {"zone": ZONES[0], "src": "192.0.2.1"}
    one_line = c.median_time(lambda: helper.delete_entries(**miss), RUNS)
    dump = c.median_time(lambda: helper.list_entries(output=("id",)), RUNS)
    keep = matching.line_prefilter([miss])
    assert keep is not None
    listing = commands.ListCommand(output=("id",))
    scan = c.median_time(lambda: sum(1 for line in helper.executor.iter_lines(
        listing, namespace=ns) if keep(line)), RUNS)
    entries = helper.list_entries(output=("id",))
    predicates = [matching.compile_filters({"zone": z, "src": "192.0.2.1"}) for z in ZONES]
    match = c.median_time(lambda: [p(e) for e in entries for p in predicates], RUNS)
    victims = entries[:1000]
    netlink, _ = c.timed(lambda: helper.delete_flows(victims))
    return {
        "process": process,
        "cli_scan": max(one_line - process, 0.0) / size,
        "dump_scan": max(scan - process, 0.0) / size,
        "dump_parse": max(dump - scan, 0.0) / size,
        "match": match / (size * len(predicates)),
        "netlink_delete": netlink / len(victims),
    }


def main() -> None:
    """Measure at each size, print the model and the crossovers."""
    c.require_root()
    rows = {}
    with c.namespace("cost") as ns:
        for size in SIZES:
            rows[size] = measure(ns, size)
    print("cost model terms measured (seconds):")
    for size, row in rows.items():
        print(f"  {size:6d} flows: " + "  ".join(f"{k} {v:.3g}" for k, v in row.items()))
    terms = {k: statistics.median(r[k] for r in rows.values()) for k in rows[SIZES[0]]}
    measured = planner.CostModel(cli_delete=terms["cli_scan"], **terms)
    print(f"measured model: {measured}")
    print(f"built-in model: {planner.DEFAULT_COST_MODEL}")
    for name, model in (("measured", measured), ("built-in", planner.DEFAULT_COST_MODEL)):
        for size in (1_000, 10_000, 100_000):
            print(f"  {name} crossover at {size:6d} flows: one dump wins from "
                  f"{model.crossover(size, netlink=True)} requests (netlink), "
                  f"{model.crossover(size, netlink=False)} (cli only), "
                  f"{model.crossover(size, netlink=True, prefiltered=True)} "
                  "(netlink, requests on exact addresses or zones)")


if __name__ == "__main__":
    main()
