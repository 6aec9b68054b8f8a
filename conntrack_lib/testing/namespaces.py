"""Throwaway network namespaces for functional tests, benchmarks and demos.

:func:`throwaway_namespace` creates a network namespace with iproute2's
``ip netns add``, yields its name and removes it when the block ends: also
when the body raises, and when a signal handler raises into it (the demo
turns SIGINT and SIGTERM into an exception for that reason).  A test that
runs the real conntrack against its own namespace never touches the host's
table:

.. code-block:: python

    from conntrack_lib.helper import ConntrackHelper
    from conntrack_lib.testing import throwaway_namespace

    def test_agent_flushes_the_zone():
        with throwaway_namespace("myagent") as ns:
            helper = ConntrackHelper(namespace=ns)
            ...

Creating a namespace needs root.  Nothing here runs at import: ``ip`` is
looked up when a namespace is made.  The library itself never creates a
namespace (see :mod:`conntrack_lib.netns`); this module is for the code
around it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator

from conntrack_lib import constants, netns

#: Seconds an ``ip netns`` call may take before it counts as hung.
IP_TIMEOUT = 60.0

_counter = itertools.count()
# A second signal must not cut the removal of a namespace short.
_CLEANUP_BLOCKED = frozenset({signal.SIGINT, signal.SIGTERM})


class NamespaceError(RuntimeError):
    """``ip netns`` refused to create a namespace (it exists, or no permission)."""


def ip_binary() -> str | None:
    """Find iproute2's ``ip``.

    :returns: the first executable of
        :data:`~conntrack_lib.constants.IP_BINARY_CANDIDATES`, else the ``ip``
        found on ``PATH``, else ``None``.
    """
    for path in constants.IP_BINARY_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("ip")


def unique_name(prefix: str = "ctlt") -> str:
    """Make a namespace name that no other process and no earlier call uses.

    :param prefix: the start of the name; the result is ``<prefix>-<pid>-<n>``
        with ``n`` counting up within this process.
    :returns: the name.
    :raises InvalidArgumentError: the name would not be a valid namespace
        name (see :func:`conntrack_lib.netns.validate_name`): the prefix holds
        characters other than ``[A-Za-z0-9_.-]`` or is too long.
    """
    return netns.validate_name(f"{prefix}-{os.getpid()}-{next(_counter)}")


def add_namespace(name: str) -> None:
    """Create the network namespace ``name`` with ``ip netns add``.

    The caller owns it and removes it with :func:`delete_namespace`;
    :func:`throwaway_namespace` does both.

    :param name: the namespace to create; it must not exist.
    :raises InvalidArgumentError: ``name`` is not a valid namespace name.
    :raises PermissionError: not running as root.
    :raises FileNotFoundError: iproute2's ``ip`` is not installed.
    :raises NamespaceError: ``ip`` refused, e.g. because ``name`` exists.
    """
    ip = _ip_for(netns.validate_name(name))
    done = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True,
                          check=False, timeout=IP_TIMEOUT)
    if done.returncode != 0:
        raise NamespaceError(f"ip netns add {name} failed (exit {done.returncode}): "
                             f"{done.stderr.strip() or 'no message'}")


def delete_namespace(name: str) -> None:
    """Remove the network namespace ``name`` if it still exists.

    SIGINT and SIGTERM are held back until ``ip netns delete`` is done, so a
    second Ctrl-C cannot leave the namespace behind; they are delivered
    afterwards.  A failure (``ip`` missing, failing or hung) is ignored: this
    runs on the way out of an error.

    :param name: the namespace to remove.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _CLEANUP_BLOCKED)
    try:
        if os.path.exists(os.path.join(constants.NETNS_RUN_DIR, name)):
            subprocess.run([ip_binary() or "ip", "netns", "delete", name], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=IP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        pass  # the error that brought us here matters more
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@contextlib.contextmanager
def throwaway_namespace(prefix: str = "ctlt", *, name: str | None = None) -> Iterator[str]:
    """Create a fresh network namespace for the block and remove it afterwards.

    The namespace is removed whatever ends the block: its normal end, an
    exception, or an exception a signal handler raises (a signal during
    ``ip netns add`` included).  A namespace ``ip`` refused to create is
    not ours and is left alone.

    :param prefix: the start of the generated name (see :func:`unique_name`).
    :param name: a name to use instead of a generated one; it must not exist.
    :returns: a context manager yielding the namespace's name.
    :raises InvalidArgumentError: the name is not a valid namespace name.
    :raises PermissionError: not running as root.
    :raises FileNotFoundError: iproute2's ``ip`` is not installed.
    :raises NamespaceError: ``ip netns add`` failed.
    """
    ns = unique_name(prefix) if name is None else netns.validate_name(name)
    _ip_for(ns)  # refuse before anything exists: nothing to clean up yet
    refused = False
    try:
        try:
            add_namespace(ns)
        except NamespaceError:
            refused = True
            raise
        yield ns
    finally:
        if not refused:
            delete_namespace(ns)


def _ip_for(name: str) -> str:
    """Return the ``ip`` binary to create ``name`` with, after checking for root."""
    if os.geteuid() != 0:
        raise PermissionError(f"creating the network namespace {name} needs root: "
                              "run the tests, benchmark or demo as root (e.g. with sudo)")
    ip = ip_binary()
    if ip is None:
        raise FileNotFoundError(f"creating the network namespace {name} needs iproute2's "
                                "`ip` (apt-get install iproute2)")
    return ip


__all__ = ["NamespaceError", "add_namespace", "delete_namespace", "ip_binary",
           "throwaway_namespace", "unique_name"]
