"""Stream ``conntrack -E`` through the daemon in bounded memory.

An event capture may run for up to an hour and print megabytes a second.
Instead of collecting all of it, the daemon starts the child with
:func:`start_events` and reads its stdout only when the client asks, with
:func:`read_events`: at most :data:`MAX_READ` bytes per call.  Between
calls nobody reads the pipe, so a slow client makes the child block on a
full pipe (backpressure); the kernel then drops events for it and conntrack
reports that on stderr, instead of the daemon buffering them.

Memory bound, per stream: the kernel's pipe buffer (64 KiB by default), at
most :data:`MAX_READ` bytes being handed over, and the last
:data:`MAX_STDERR` characters of stderr.  At most :data:`MAX_STREAMS`
streams run at once: the daemon never holds more than
``MAX_STREAMS * (MAX_READ + MAX_STDERR)`` characters for events, plus the
pipes.

A stream ends when the child exits (its ``duration`` elapsed: SIGTERM; its
timeout: SIGKILL), when the client calls :func:`stop_events`, or when it
went unread for :data:`STREAM_IDLE` seconds (a client that vanished).
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import dataclasses
import os
import secrets
import select
import signal
import subprocess
import threading
import time
from typing import Any, Final

from conntrack_lib import exceptions as exc
from conntrack_lib import netns, privileged, wire_errors
from conntrack_lib.privileged import conntrack

#: Most event streams running at once; one more is refused.
MAX_STREAMS: Final = 16
#: Most bytes of stdout one :func:`read_events` returns.
MAX_READ: Final = 1024 * 1024
#: Characters of stderr kept per stream (the end, which says why it stopped).
MAX_STDERR: Final = 64 * 1024
#: Longest a read waits for output before it returns empty-handed, seconds.
#: A read holds one of the daemon's worker threads that long at most.
READ_WAIT: Final = 0.25
#: Seconds a stream may go unread before the daemon stops it.
STREAM_IDLE: Final = 120.0

#: (text, finished, exit_code, stderr, timed_out)
ReadReply = tuple[str, bool, int | None, str, bool]


@dataclasses.dataclass
class _Stream:
    proc: subprocess.Popen[bytes]
    argv: tuple[str, ...]
    timers: list[threading.Timer]
    drain: threading.Thread
    stderr: collections.deque[str]
    expired: threading.Event
    last_read: float
    decoder: Any = dataclasses.field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("surrogateescape"))
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


_streams: dict[str, _Stream] = {}
_streams_lock = threading.Lock()


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def start_events(command: Any, namespace: Any, timeout: Any) -> tuple[str, tuple[str, ...]]:
    """Start a bounded ``conntrack -E`` and return its handle and argv.

    :raises InvalidArgumentError: the command, namespace or timeout is invalid.
    :raises NamespaceNotFoundError: the namespace does not exist.
    :raises OutputUnavailableError: :data:`MAX_STREAMS` streams already run.
    """
    cmd = conntrack._rebuild(command, conntrack.EVENT_KINDS)
    ns = None if namespace is None else netns.validate_name(namespace)
    limit = conntrack._check_timeout(timeout)
    duration = conntrack._duration(cmd)
    conntrack._check_bounding_set()
    argv = netns.build_argv(cmd, conntrack._configured_binary(), ns)
    with _streams_lock:
        _reap_idle_locked()
        if len(_streams) >= MAX_STREAMS:
            raise exc.OutputUnavailableError(
                argv, None, "", f"the privsep daemon already runs {len(_streams)} event "
                f"streams (limit {MAX_STREAMS}); close one and retry\n")
        handle = secrets.token_hex(16)
        _streams[handle] = _spawn(argv, limit, duration)
    return handle, argv


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def read_events(handle: Any, max_bytes: Any) -> ReadReply:
    """Return the next piece of a stream's output, waiting up to READ_WAIT seconds.

    :returns: ``(text, finished, exit_code, stderr, timed_out)``; once
        ``finished`` is true the stream is gone and the other fields are final.
    :raises InvalidArgumentError: malformed handle or size.
    :raises OutputUnavailableError: no such stream (stopped, idle, restarted).
    """
    size = _check_size(max_bytes)
    stream = _find(handle)
    with stream.lock:
        stream.last_read = time.monotonic()
        return _read(handle, stream, size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def stop_events(handle: Any) -> bool:
    """Stop a stream and forget it; return whether it was running."""
    key = conntrack._check_handle(handle)
    with _streams_lock:
        stream = _streams.pop(key, None)
    if stream is None:
        return False
    _finish(stream, kill=True)
    return True


def _spawn(argv: tuple[str, ...], timeout: float, duration: float) -> _Stream:
    # The one launcher of the library; -E never ends by itself, so it must
    # not outlive a crashed daemon.
    proc = netns.launch(argv, die_with_parent=True, binary=True)
    if isinstance(proc, netns.ProcessOutput):
        raise exc.ConntrackUnavailableError(argv, proc.exit_code, "", proc.stderr)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _signal(proc, signal.SIGKILL)

    timers = [threading.Timer(timeout, expire)]
    if duration < timeout:
        timers.append(threading.Timer(duration, _signal, (proc, signal.SIGTERM)))
    tail: collections.deque[str] = collections.deque()
    drain = threading.Thread(target=_drain_stderr, args=(proc, tail), daemon=True)
    for thread in (*timers, drain):
        thread.daemon = True
        thread.start()
    return _Stream(proc, argv, timers, drain, tail, expired, time.monotonic())


def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)


def _drain_stderr(proc: subprocess.Popen[bytes], tail: collections.deque[str]) -> None:
    """Keep the last MAX_STDERR characters of stderr (one thread per stream)."""
    assert proc.stderr is not None  # noqa: S101 - stderr=PIPE
    kept = 0
    while data := proc.stderr.read(65536):
        text = data.decode("utf-8", "surrogateescape")
        tail.append(text)
        kept += len(text)
        while kept - len(tail[0]) >= MAX_STDERR:
            kept -= len(tail.popleft())


def _read(handle: str, stream: _Stream, size: int) -> ReadReply:
    assert stream.proc.stdout is not None  # noqa: S101 - stdout=PIPE
    fd = stream.proc.stdout.fileno()
    ready, _, _ = select.select([fd], [], [], READ_WAIT)
    if not ready:
        return "", False, None, "", False
    data = os.read(fd, size)
    if data:
        return stream.decoder.decode(data), False, None, "", False
    with _streams_lock:
        _streams.pop(handle, None)
    _finish(stream, kill=False)
    stderr = "".join(stream.stderr)[-MAX_STDERR:]
    text = stream.decoder.decode(b"", final=True)
    return text, True, stream.proc.returncode, stderr, stream.expired.is_set()


def _finish(stream: _Stream, *, kill: bool) -> None:
    """Reap the child and its helper threads."""
    for timer in stream.timers:
        timer.cancel()
    if kill:
        _signal(stream.proc, signal.SIGKILL)
    stream.proc.wait()
    stream.drain.join()
    for pipe in (stream.proc.stdout, stream.proc.stderr):
        if pipe is not None:
            pipe.close()


def _find(handle: Any) -> _Stream:
    key = conntrack._check_handle(handle)
    with _streams_lock:
        _reap_idle_locked()
        stream = _streams.get(key)
    if stream is None:
        raise exc.OutputUnavailableError(
            ("read_events",), None, "",
            f"event stream {key} is not running in the privsep daemon: stopped, unread "
            f"for more than {STREAM_IDLE:g} s, or lost when the daemon restarted\n")
    return stream


def _reap_idle_locked() -> None:
    now = time.monotonic()
    for key in [key for key, stream in _streams.items()
                if now - stream.last_read > STREAM_IDLE and not stream.lock.locked()]:
        _finish(_streams.pop(key), kill=True)


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_READ:
        raise exc.InvalidArgumentError("max_bytes", size, f"must be in 1..{MAX_READ}")
    return size
