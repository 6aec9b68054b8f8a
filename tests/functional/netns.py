"""Throwaway network namespaces for functional tests.

Every namespace is named ``ctlt-<pid>-<n>`` and removed after use, also when
the test fails.  Nothing here touches the host's own conntrack table.
"""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from conntrack_lib import capabilities, commands, executor, netlink_create

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


@functools.lru_cache(maxsize=1)
def release() -> capabilities.Release:
    """Return the release of the conntrack binary under test."""
    out = subprocess.run([CONNTRACK, "--version"], capture_output=True, text=True, check=True)
    return capabilities.parse_version(out.stdout + out.stderr)


def has_load_file() -> bool:
    """Tell whether the conntrack under test has ``-R`` (1.4.7 and newer)."""
    return capabilities.for_release(release()).load_file


def seed(ns: str, creates: Sequence[commands.CreateCommand], *, chunk: int = 50_000) -> None:
    """Create ``creates`` in ``ns`` as fast as the release allows, whatever it is.

    ``-R`` where it exists; else the library's netlink create, and one
    conntrack process per flow for what it does not encode (NAT, labels).
    """
    if has_load_file():
        for start in range(0, len(creates), chunk):
            batch = commands.BatchCommand(creates[start:start + chunk])
            done = run(ns, batch.argv(), stdin=batch.stdin())
            assert done.returncode == 0, done.stderr
        return
    by_netlink = [command for command in creates if netlink_create.encodable(command)]
    by_process = [command for command in creates if not netlink_create.encodable(command)]
    outcomes = executor.ProcessExecutor().create_flows(by_netlink, namespace=ns)
    assert not any(outcomes), f"netlink create failed: {sorted(set(outcomes))}"
    for command in by_process:
        done = run(ns, command.argv())
        assert done.returncode == 0, done.stderr


def load(ns: str, text: str, *, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run load-file ``text`` in ``ns``: ``-R -`` where it exists, else line by line.

    Like ``-R``, the line-by-line run stops at the first line that fails.
    """
    if has_load_file():
        return run(ns, ["-R", "-"], stdin=text, check=check)
    outs: list[str] = []
    errs: list[str] = []
    code = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        done = run(ns, line.split(), check=check)
        outs.append(done.stdout)
        errs.append(done.stderr)
        # "0 flow entries have been deleted." is no failure of the load.
        code = 0 if "0 flow entries have been" in done.stderr else done.returncode
        if code != 0:
            break
    return subprocess.CompletedProcess(["load"], code, "".join(outs), "".join(errs))
