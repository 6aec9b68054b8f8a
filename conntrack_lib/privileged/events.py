"""Privileged entrypoints that stream ``conntrack -E`` in bounded memory.

:func:`start_events` validates the command like every entrypoint does and
starts the child; :func:`read_events` hands over at most
:data:`~conntrack_lib.event_streams.MAX_READ` bytes per call, so a slow
client makes the child block on its pipe instead of the daemon buffering
events.  The bookkeeping and its limits live in
:mod:`conntrack_lib.event_streams`.
"""

from __future__ import annotations

from conntrack_lib import boundary, event_streams, netns, privileged, wire_errors
from conntrack_lib.privileged import conntrack

_streams = event_streams.Streams()


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def start_events(command: object, namespace: object,
                 timeout: object) -> tuple[str, tuple[str, ...]]:
    """Start a bounded ``conntrack -E`` and return its handle and argv.

    :raises InvalidArgumentError: the command, namespace or timeout is invalid.
    :raises NamespaceNotFoundError: the namespace does not exist.
    :raises OutputUnavailableError: too many streams already run.
    """
    cmd = boundary.rebuild(command, boundary.EVENT_KINDS)
    ns = boundary.check_namespace(namespace)
    limit = boundary.check_timeout(timeout)
    duration = boundary.duration(cmd)
    conntrack._check_bounding_set()
    argv = netns.build_argv(cmd, conntrack._configured_binary(), ns)
    return _streams.start(argv, limit, duration), argv


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def read_events(handle: object, max_bytes: object) -> event_streams.ReadReply:
    """Return the next piece of a stream's output (see :meth:`Streams.read`).

    :raises InvalidArgumentError: malformed handle or size.
    :raises OutputUnavailableError: no such stream (stopped, idle, restarted).
    """
    size = boundary.check_size("max_bytes", max_bytes, event_streams.MAX_READ)
    return _streams.read(boundary.check_handle(handle), size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def stop_events(handle: object) -> bool:
    """Stop a stream and forget it; return whether it was running."""
    return _streams.stop(boundary.check_handle(handle))
