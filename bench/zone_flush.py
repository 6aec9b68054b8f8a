"""Release of a port's zone with flush: one -D -w ZONE versus per-flow deletes.

10,000 flows in one zone.  Side A: ``ConntrackHelper.release_zone(key,
flush=True)`` (one ``conntrack -D -w ZONE``).  Side B: one ``conntrack -D``
per flow, timed on a sample and scaled (each costs a full table dump).

Run as root: ``python -m bench.zone_flush``.
"""

from __future__ import annotations

from bench import _common as c
from conntrack_lib.executor import ProcessExecutor
from conntrack_lib.helper import ConntrackHelper

FLOWS = 10_000
SAMPLE = 100


def flow_lines(zone: int) -> list[str]:
    """Return the ``-I`` lines of one zone's flows."""
    return [f"-I -p udp -s 10.40.{n // 250}.{n % 250 + 1} -d 10.41.0.1 --sport {1024 + n % 60000} "
            f"--dport 53 -t 3600 -w {zone}" for n in range(FLOWS)]


def main() -> None:
    """Run both sides on equal tables and print the comparison."""
    c.require_root()
    with c.namespace("zf") as ns:
        helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor(), zone_range=(100, 200))
        zone = helper.allocate_zone("port-a")
        lines = flow_lines(zone)
        c.fill(ns, lines)
        flush_s, _ = c.timed(lambda: helper.release_zone("port-a", flush=True))
        left = len(c.table(ns))

        c.fill(ns, lines)
        sample = [line.replace("-I ", "-D ", 1).replace(" -t 3600", "").split()
                  for line in lines[:SAMPLE]]
        per_flow_s, _ = c.timed(lambda: [c.conntrack(ns, argv) for argv in sample])
        scaled = per_flow_s / SAMPLE * FLOWS

    print(f"release a zone of {FLOWS} flows with flush")
    print(f"  release_zone(flush=True), one -D -w: {flush_s:8.3f} s  (flows left: {left})")
    print(f"  one -D per flow: {per_flow_s:.2f} s for {SAMPLE}, scaled to {FLOWS}: "
          f"{scaled:8.1f} s")
    print(f"  ratio: {c.ratio(scaled, flush_s)}")


if __name__ == "__main__":
    main()
