"""Run every benchmark in turn (root); each prints its own comparison."""

from __future__ import annotations

import os
import subprocess
import sys

BENCHMARKS = [
    "bench.zones",
    "bench.parse",
    "bench.read_path",
    "bench.executor_overhead",
    "bench.sg_churn",
    "bench.zone_flush",
    "bench.deletion_queue",
    "bench.exact_delete",
    "bench.create_netlink",
]


def main() -> int:
    """Run the benchmarks named on the command line, or all; return failures."""
    wanted = sys.argv[1:] or BENCHMARKS
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    failures = 0
    for module in wanted:
        print(f"== {module}", flush=True)
        failures += subprocess.run([sys.executable, "-m", module], cwd=root,
                                   check=False).returncode != 0
    return failures


if __name__ == "__main__":
    sys.exit(main())
