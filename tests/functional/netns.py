"""Throwaway network namespaces for functional tests.

Every namespace is named ``ctlt-<pid>-<n>`` and removed after use, also when
the test fails.  Nothing here touches the host's own conntrack table.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

CONNTRACK = "/usr/sbin/conntrack"
IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
_counter = itertools.count()


def unique_name(prefix: str = "ctlt") -> str:
    """Return a namespace name no other test process will use."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def add(name: str) -> None:
    """Create the namespace ``name``."""
    subprocess.run([IP, "netns", "add", name], check=True, capture_output=True)


def delete(name: str) -> None:
    """Remove the namespace ``name`` if it still exists."""
    if os.path.exists(f"/run/netns/{name}"):
        subprocess.run([IP, "netns", "delete", name], check=False, capture_output=True)


@contextmanager
def namespace(prefix: str = "ctlt") -> Iterator[str]:
    """Yield the name of a fresh namespace and remove it afterwards."""
    name = unique_name(prefix)
    add(name)
    try:
        yield name
    finally:
        delete(name)


def run(ns: str, args: Sequence[str], *, stdin: str | None = None,
        check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real conntrack binary inside ``ns`` with ``args``."""
    return subprocess.run(
        [IP, "netns", "exec", ns, CONNTRACK, *args],
        input=stdin, capture_output=True, text=True, check=check, timeout=600,
    )


def sysctl(ns: str, *assignments: str) -> None:
    """Set namespace-local sysctls, e.g. ``net.netfilter.nf_conntrack_acct=1``."""
    subprocess.run([IP, "netns", "exec", ns, "sysctl", "-qw", *assignments],
                   check=True, capture_output=True)


def table(ns: str) -> list[str]:
    """Return the lines of a plain ``conntrack -L`` in ``ns``."""
    out = run(ns, ["-L"], check=True).stdout
    return [line for line in out.splitlines() if line.strip()]
