"""Privileged entrypoints that stream conntrack's output in bounded memory.

Two kinds of stream: a ``conntrack -E`` capture (:func:`start_events`) and
a listing (:func:`start_listing`), which the agent parses while conntrack
still prints instead of after it exited.  Both start like every entrypoint:
the command is rebuilt and re-validated, the argv rendered here.
:func:`read_stream` hands over at most
:data:`~conntrack_lib.event_streams.MAX_READ` bytes per call, so a slow
client makes the child block on its pipe instead of the daemon buffering
its output.  The bookkeeping and its limits live in
:mod:`conntrack_lib.event_streams`.
"""

from __future__ import annotations

from conntrack_lib import boundary, commands, event_streams, netns, privileged, wire_errors
from conntrack_lib.privileged import conntrack

_streams = event_streams.Streams()
_LIST_KINDS = frozenset({"list"})


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
    return _start(cmd, namespace, timeout, boundary.duration(cmd))


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def start_listing(command: object, namespace: object,
                  timeout: object) -> tuple[str, tuple[str, ...]]:
    """Start a ``conntrack -L`` whose output is read with :func:`read_stream`.

    Its pipe holds :data:`~conntrack_lib.event_streams.LISTING_PIPE` bytes,
    so conntrack prints ahead while the agent parses the previous piece; it
    may go unread for :data:`~conntrack_lib.event_streams.LISTING_IDLE`
    seconds, as long as a spooled output is kept.

    :raises InvalidArgumentError: the command, namespace or timeout is invalid.
    :raises NamespaceNotFoundError: the namespace does not exist.
    :raises OutputUnavailableError: too many streams already run.
    """
    cmd = boundary.rebuild(command, _LIST_KINDS)
    return _start(cmd, namespace, timeout, None, pipe_size=event_streams.LISTING_PIPE,
                  idle=event_streams.LISTING_IDLE)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def read_stream(handle: object, max_bytes: object) -> event_streams.ReadReply:
    """Return the next piece of a stream's output (see :meth:`Streams.read`).

    :raises InvalidArgumentError: malformed handle or size.
    :raises OutputUnavailableError: no such stream (stopped, idle, restarted).
    """
    size = boundary.check_size("max_bytes", max_bytes, event_streams.MAX_READ)
    return _streams.read(boundary.check_handle(handle), size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def stop_stream(handle: object) -> bool:
    """Stop a stream and forget it; return whether it was running."""
    return _streams.stop(boundary.check_handle(handle))


def _start(cmd: commands.Command, namespace: object, timeout: object, duration: float | None,
           *, pipe_size: int | None = None,
           idle: float | None = None) -> tuple[str, tuple[str, ...]]:
    ns = boundary.check_namespace(namespace)
    limit = boundary.check_timeout(timeout)
    conntrack._check_bounding_set()
    argv = netns.build_argv(cmd, conntrack._configured_binary(), ns)
    return _streams.start(argv, limit, duration, pipe_size=pipe_size, idle=idle), argv
