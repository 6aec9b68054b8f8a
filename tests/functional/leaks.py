"""Count what a test could leak: child processes, namespaces, descriptors.

A :class:`Snapshot` records the child processes of this process (with their
state, so zombies show), the entries of /run/netns that start with a given
prefix and this process's open file descriptors.  :func:`leaks` compares
two snapshots and describes every difference; :func:`settle` polls until
the differences are gone or a deadline passes, because a killed child
needs a moment to disappear.

Everything is read from /proc: no psutil, no subprocess.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from collections.abc import Collection, Mapping

NETNS_DIR = pathlib.Path("/run/netns")
ZOMBIE = "Z"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What this process held at one moment.

    :ivar children: pid of each child process to its state letter
        (``R``, ``S``, ``Z``, ...).
    :ivar namespaces: names under /run/netns with the watched prefix.
    :ivar fds: open descriptor number to what it points at.
    """

    children: Mapping[int, str]
    namespaces: frozenset[str]
    fds: Mapping[int, str]

    def zombies(self) -> frozenset[int]:
        """Return the children that exited and were never reaped."""
        return frozenset(pid for pid, state in self.children.items() if state == ZOMBIE)


def process_state(pid: int) -> str | None:
    """Return the state letter of ``pid``, or ``None`` when it is gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def child_processes(pid: int | None = None) -> dict[int, str]:
    """Return the children of ``pid`` (this process by default) and their states.

    Each thread keeps its own list of children, so every task is read.
    """
    base = pathlib.Path(f"/proc/{os.getpid() if pid is None else pid}/task")
    found: dict[int, str] = {}
    for task in base.iterdir():
        try:
            words = (task / "children").read_text().split()
        except FileNotFoundError:
            continue  # the thread ended while we listed them
        for word in words:
            state = process_state(int(word))
            if state is not None:
                found[int(word)] = state
    return found


def namespaces(prefix: str) -> frozenset[str]:
    """Return the network namespace names under /run/netns starting with ``prefix``."""
    if not NETNS_DIR.is_dir():
        return frozenset()
    return frozenset(entry.name for entry in NETNS_DIR.iterdir()
                     if entry.name.startswith(prefix))


def open_fds() -> dict[int, str]:
    """Return this process's open descriptors and their targets.

    The descriptor that ``os.listdir`` itself opened on /proc/self/fd is
    already closed when the targets are read, so it drops out.
    """
    found: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue
    return found


def snapshot(prefix: str) -> Snapshot:
    """Return what this process holds now, watching namespaces named ``prefix*``."""
    return Snapshot(child_processes(), namespaces(prefix), open_fds())


def leaks(
    before: Snapshot,
    after: Snapshot,
    *,
    allowed_pids: Collection[int] = (),
    allowed_fds: Collection[int] = (),
) -> list[str]:
    """Describe everything ``after`` holds that ``before`` did not.

    :param allowed_pids: children that may be new (a long-lived daemon).
    :param allowed_fds: descriptors that may be new (that daemon's socket).
    :returns: one line per leak; empty when nothing leaked.
    """
    found = [f"child process {pid} (state {state}) appeared"
             for pid, state in sorted(after.children.items())
             if pid not in before.children and pid not in allowed_pids]
    found += [f"child process {pid} became a zombie"
              for pid in sorted(after.zombies() - before.zombies())
              if pid in before.children]
    found += [f"namespace {name} was left behind"
              for name in sorted(after.namespaces - before.namespaces)]
    found += [f"namespace {name} disappeared"
              for name in sorted(before.namespaces - after.namespaces)]
    found += [f"fd {fd} -> {target} stayed open"
              for fd, target in sorted(after.fds.items())
              if before.fds.get(fd) != target and fd not in allowed_fds]
    return found


def settle(
    before: Snapshot,
    prefix: str,
    *,
    allowed_pids: Collection[int] = (),
    allowed_fds: Collection[int] = (),
    timeout: float = 5.0,
) -> list[str]:
    """Poll until nothing leaked since ``before``; return what still leaks.

    A child that was just killed, or a descriptor a finishing thread still
    closes, may need a moment: polling keeps the check exact without a
    fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = leaks(before, snapshot(prefix), allowed_pids=allowed_pids,
                      allowed_fds=allowed_fds)
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.02)
