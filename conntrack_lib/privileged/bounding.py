"""Shrink the capability bounding set before the privsep daemon serves.

The daemon keeps CAP_NET_ADMIN and CAP_SYS_ADMIN in its effective set, but
it runs as uid 0, and a program that uid 0 executes gets every capability
of the bounding set, whatever its parent held.  Dropping every other
capability from the bounding set makes conntrack and nsenter inherit the
two the daemon needs and nothing more.

The bounding set can only shrink, only with CAP_SETPCAP, and only for the
calling thread and the threads and processes it creates later.  So it is
dropped once, in the daemon's first thread, before the daemon drops its own
privileges and before it starts any thread: by ``conntrack_lib.daemon._serve`` for a forked
daemon and by :func:`helper_main` (the ``conntrack-lib-privsep-helper``
command) for a daemon started through sudo or rootwrap.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Collection
from typing import Final

from oslo_privsep import capabilities as caps

#: What the daemon's children may hold (and what the daemon itself keeps).
KEEP: Final = frozenset({caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN})
PR_CAPBSET_READ: Final = 23
PR_CAPBSET_DROP: Final = 24
_CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"
# prctl reads unsigned longs: pass full-width zeros, not C ints.
_ZEROS = (ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def last_cap() -> int:
    """Return the highest capability number the running kernel knows."""
    with open(_CAP_LAST_CAP, encoding="ascii") as handle:
        return int(handle.read())


def bounding_set() -> frozenset[int]:
    """Return the calling thread's capability bounding set."""
    prctl = _libc().prctl
    return frozenset(cap for cap in range(last_cap() + 1)
                     if prctl(PR_CAPBSET_READ, ctypes.c_ulong(cap), *_ZEROS) == 1)


def drop_bounding_set(keep: Collection[int] = KEEP) -> frozenset[int]:
    """Drop every capability but ``keep`` from the calling thread's bounding set.

    :returns: the bounding set afterwards.
    :raises OSError: the kernel refused (no CAP_SETPCAP).
    """
    prctl = _libc().prctl
    for cap in range(last_cap() + 1):
        if cap in keep:
            continue
        if prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), *_ZEROS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot drop capability {cap} from the bounding set: "
                               f"{os.strerror(err)}")
    return bounding_set()


def helper_main() -> None:
    """Run oslo.privsep's helper with a bounding set of CAP_NET_ADMIN + CAP_SYS_ADMIN.

    The entry point of ``conntrack-lib-privsep-helper``: it takes the same
    arguments as ``privsep-helper``.  It refuses to start (exit status 1)
    when the bounding set cannot be dropped, rather than start a daemon
    whose children would hold every capability.
    """
    from oslo_privsep import daemon  # noqa: PLC0415 - only the helper needs it

    try:
        drop_bounding_set()
    except OSError as err:
        raise SystemExit(f"conntrack-lib-privsep-helper: {err}") from err
    daemon.helper_main()
