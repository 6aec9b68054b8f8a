"""Privileged entrypoints that run conntrack: one per kind of task.

Each entrypoint takes a command in primitive form (the dict of
:meth:`Command.to_primitive`), a namespace name or ``None``, a timeout and
a chunk size.  It rebuilds and re-validates the command and every other
argument with :mod:`conntrack_lib.boundary`, renders the argv itself from
the binary path in its own configuration, and runs the process without a
shell.  No entrypoint accepts an argv, a path or a shell string.

Replies are primitives only::

    (exit_code, stdout_head, stderr, argv, handle, chunks)

``stdout_head`` holds at most ``chunk_size`` characters.  When the output is
longer, the rest stays in the daemon (:mod:`conntrack_lib.spool`) under the
random ``handle``; it is read with :func:`read_chunk` (chunk 0 is
``stdout_head``) and freed with :func:`release`.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

from oslo_config import cfg
from oslo_log import log as logging

from conntrack_lib import boundary, netns, opts, privileged, spool, wire_errors
from conntrack_lib.privileged import bounding

#: Most characters of stdout a whole ``-E`` capture (run_events) may print.
MAX_CAPTURE = 64 * 1024 * 1024
#: stderr beyond this many characters is cut from the front (the end says why).
MAX_STDERR = 1024 * 1024

Reply = tuple[int, str, str, tuple[str, ...], str | None, int]

_spools = spool.Spools()
_opts_registered = False
_checked = threading.local()
# This module runs in the daemon, whose root logger hands every record to
# oslo.privsep: the agent re-emits it through the context's logger
# (``conntrack_lib.privileged``) with the record's own name kept, so an
# oslo.log logger here reaches the agent like a plain one would.
LOG = logging.getLogger(__name__)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def run_query(command: object, namespace: object, timeout: object, chunk_size: object) -> Reply:
    """Run a list, get, count or stats command and return its output."""
    return _serve(boundary.QUERY_KINDS, command, namespace, timeout, chunk_size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def run_change(command: object, namespace: object, timeout: object, chunk_size: object) -> Reply:
    """Run a create, update, delete or flush command and return its output."""
    return _serve(boundary.CHANGE_KINDS, command, namespace, timeout, chunk_size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def run_batch(command: object, namespace: object, timeout: object, chunk_size: object) -> Reply:
    """Run a batch (``-R -``) whose lines are rendered from validated commands."""
    return _serve(boundary.BATCH_KINDS, command, namespace, timeout, chunk_size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def run_events(command: object, namespace: object, timeout: object, chunk_size: object) -> Reply:
    """Capture events (``-E``) for the command's bounded duration."""
    return _serve(boundary.EVENT_KINDS, command, namespace, timeout, chunk_size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def read_chunk(handle: object, index: object) -> str:
    """Return piece ``index`` of the output kept under ``handle``.

    :raises InvalidArgumentError: malformed handle, bad index.
    :raises OutputUnavailableError: the output is not held (any more).
    """
    return _spools.read(handle, index)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def release(handle: object) -> bool:
    """Drop the output kept under ``handle``; return whether it was there."""
    return _spools.release(handle)


def _serve(kinds: Collection[str], data: object, namespace: object, timeout: object,
           chunk_size: object) -> Reply:
    command = boundary.rebuild(data, kinds)
    _check_bounding_set()
    ns = boundary.check_namespace(namespace)
    limit = boundary.check_timeout(timeout)
    size = boundary.check_chunk_size(chunk_size)
    stdin = boundary.batch_text(command) if command.kind == "batch" else None
    duration = boundary.duration(command) if command.kind == "events" else None
    argv = netns.build_argv(command, _configured_binary(), ns)
    # A capture in one reply is capped; ConntrackHelper.events() streams
    # without a cap through privileged/streams.py.
    cap = {"max_stdout": MAX_CAPTURE} if duration is not None else {}
    output = netns.run(argv, timeout=limit, stdin=stdin, duration=duration, **cap)
    stderr = output.stderr[-MAX_STDERR:]
    if len(output.stdout) <= size:
        return (output.exit_code, output.stdout, stderr, argv, None, 1)
    handle, chunks = _spools.store(output.stdout, size, argv)
    return (output.exit_code, output.stdout[:size], stderr, argv, handle, chunks)


def _check_bounding_set() -> None:
    """Warn once per thread when children would get more than the two capabilities.

    That happens when the daemon was started by plain ``privsep-helper``
    instead of ``conntrack-lib-privsep-helper`` (see docs/deployment.rst).
    """
    if getattr(_checked, "done", False):
        return
    _checked.done = True
    extra = bounding.bounding_set() - bounding.KEEP
    if extra:
        LOG.warning("conntrack children may gain %d capabilities beyond CAP_NET_ADMIN and "
                    "CAP_SYS_ADMIN: start the daemon with conntrack-lib-privsep-helper",
                    len(extra))


def _configured_binary() -> str:
    """Return the binary path from the daemon's own configuration."""
    global _opts_registered  # noqa: PLW0603 - register once, lazily, in the daemon
    if not _opts_registered:
        opts.register_opts(cfg.CONF)
        _opts_registered = True
    return netns.check_binary(cfg.CONF[opts.GROUP].conntrack_binary)
