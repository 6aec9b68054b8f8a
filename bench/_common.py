"""Shared pieces of the benchmarks: namespaces, table fill, counting executor.

Every benchmark works in its own throwaway network namespace and removes it
when done, also on error or Ctrl-C.  Figures are printed side by side from
one run, because this machine is shared and absolute times drift.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from conntrack_lib import constants
from conntrack_lib.testing import namespaces

CONNTRACK = constants.CONNTRACK_BINARY
IP = namespaces.ip_binary() or "ip"


def require_root() -> None:
    """Exit with a clear message unless running as root."""
    if os.geteuid() != 0:
        sys.exit("this benchmark needs root: it creates a network namespace")


def namespace(tag: str) -> contextlib.AbstractContextManager[str]:
    """Return a context manager yielding a fresh namespace, deleted afterwards.

    :param tag: the benchmark's name, part of the namespace's
        (``ctbench-<tag>-<pid>-<n>``).
    :returns: :func:`conntrack_lib.testing.namespaces.throwaway_namespace`'s
        context manager.
    """
    return namespaces.throwaway_namespace(f"ctbench-{tag}")


def conntrack(ns: str, args: Sequence[str], stdin: str | None = None,
              ) -> subprocess.CompletedProcess[str]:
    """Run the real conntrack in ``ns``; return the completed process."""
    return subprocess.run([IP, "netns", "exec", ns, CONNTRACK, *args], input=stdin,
                          capture_output=True, text=True, check=False)


def fill(ns: str, lines: Sequence[str], chunk: int = 20000) -> None:
    """Load ``-I`` lines into the table of ``ns`` with ``conntrack -R -``."""
    for start in range(0, len(lines), chunk):
        out = conntrack(ns, ["-R", "-"], stdin="\n".join(lines[start:start + chunk]) + "\n")
        if out.returncode != 0:
            raise RuntimeError(f"fill failed: {out.stderr.strip()}")


def table(ns: str) -> set[str]:
    """Return the table of ``ns`` as a set of lines without timeouts."""
    out = conntrack(ns, ["-L"])
    return {_strip_timeout(line) for line in out.stdout.splitlines() if line.strip()}


def _strip_timeout(line: str) -> str:
    words = line.split()
    # "tcp 6 431999 ESTABLISHED ..." -> drop the remaining timeout (3rd word).
    return " ".join(words[:2] + words[3:])


def flush(ns: str) -> None:
    """Empty the table of ``ns``."""
    conntrack(ns, ["-F"])


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    """Return the wall time of ``func()`` and its result."""
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def median_time(func: Callable[[], Any], runs: int) -> float:
    """Return the median wall time of ``runs`` calls of ``func``."""
    return statistics.median(timed(func)[0] for _ in range(runs))


class CountingExecutor:
    """Wrap an executor and count the conntrack processes it starts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.processes = 0
        self.netlink_calls = 0

    def execute(self, command: Any, **kw: Any) -> Any:
        """Count one process, then run ``command``."""
        self.processes += 1
        return self.inner.execute(command, **kw)

    def iter_lines(self, command: Any, **kw: Any) -> Any:
        """Count one process, then stream ``command``'s output."""
        self.processes += 1
        return self.inner.iter_lines(command, **kw)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name == "delete_flows":
            def counted(*a: Any, **kw: Any) -> Any:
                self.netlink_calls += 1
                return attr(*a, **kw)
            return counted
        return attr


def ratio(slow: float, fast: float) -> str:
    """Format ``slow / fast`` as a ratio."""
    return f"{slow / fast:.1f}x" if fast > 0 else "inf"
