"""Stream conntrack's output in bounded memory: the daemon's streams.

A stream is a ``conntrack -E`` capture or a ``conntrack -L`` listing read
while it prints.  An event capture may run for up to an hour and print
megabytes a second.
Instead of collecting all of it, the daemon starts the child with
:meth:`Streams.start` and reads its stdout only when the client asks, with
:meth:`Streams.read`: at most :data:`MAX_READ` bytes per call.  Between
calls nobody reads the pipe, so a slow client makes the child block on a
full pipe (backpressure); the kernel then drops events for it and conntrack
reports that on stderr, instead of the daemon buffering them.

A listing's pipe holds :data:`LISTING_PIPE` bytes: conntrack prints that
far ahead of the agent, which parses the previous piece meanwhile (with the
64 KiB default, the two ran in lockstep).

Memory bound, per stream: the kernel's pipe buffer (64 KiB by default,
:data:`LISTING_PIPE` for a listing), at
most :data:`MAX_READ` bytes being handed over, and the last
:data:`MAX_STDERR` characters of stderr.  At most :data:`MAX_STREAMS`
streams run at once: the daemon never holds more than
``MAX_STREAMS * (MAX_READ + MAX_STDERR)`` characters for events, plus the
pipes.

A stream ends when the child exits (its ``duration`` elapsed: SIGTERM; its
timeout: SIGKILL), when the client stops it, or when it went unread for
:data:`STREAM_IDLE` seconds (a client that vanished).

The entrypoints of :mod:`conntrack_lib.privileged.streams` own one
:class:`Streams`; they validate the command and build the argv, this module
only runs it through the library's one launcher, :func:`conntrack_lib.netns.launch`.
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
from collections.abc import Iterator
from typing import Final

from conntrack_lib import exceptions as exc
from conntrack_lib import netns

#: Most streams (captures and listings) running at once; one more is refused.
MAX_STREAMS: Final = 16
#: Most bytes of stdout one read returns.
MAX_READ: Final = 1024 * 1024
#: Pipe size of a listing stream: conntrack prints ahead by this much.
LISTING_PIPE: Final = netns.LISTING_PIPE
#: Characters of stderr kept per stream (the end, which says why it stopped).
MAX_STDERR: Final = 64 * 1024
#: Longest a read waits for output before it returns empty-handed, seconds.
#: A read holds one of the daemon's worker threads that long at most.
READ_WAIT: Final = 0.25
#: Seconds a stream may go unread before the daemon stops it.
STREAM_IDLE: Final = 120.0
#: The same for a listing: as long as a spooled listing is kept unread
#: (spool.SPOOL_TTL), so a consumer that works between pieces loses nothing
#: by the listing being streamed.
LISTING_IDLE: Final = 300.0

#: (text, finished, exit_code, stderr, timed_out)
ReadReply = tuple[str, bool, int | None, str, bool]


def _new_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")("surrogateescape")


@dataclasses.dataclass
class Stream:
    """One running ``conntrack -E`` or ``-L`` and the threads that bound it."""

    proc: subprocess.Popen[bytes]
    argv: tuple[str, ...]
    timers: list[threading.Timer]
    drain: threading.Thread
    stderr: collections.deque[str]
    expired: threading.Event
    last_read: float
    #: Seconds it may go unread before it is stopped; None for the owner's default.
    idle: float | None = None
    decoder: codecs.IncrementalDecoder = dataclasses.field(default_factory=_new_decoder)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def spawn(argv: tuple[str, ...], timeout: float, duration: float | None,
          pipe_size: int | None = None) -> Stream:
    """Start ``argv`` with a SIGTERM after ``duration`` and a SIGKILL after ``timeout``.

    :param duration: seconds before SIGTERM; None for a command that ends
        by itself (a listing).
    :param pipe_size: bytes the stdout pipe holds; None for the kernel's default.
    :raises ConntrackUnavailableError: the binary is missing or cannot run.
    """
    # The one launcher of the library; -E never ends by itself, so it must
    # not outlive a crashed daemon.
    proc = netns.launch(argv, die_with_parent=True, binary=True, pipe_size=pipe_size)
    if isinstance(proc, netns.ProcessOutput):
        raise exc.ConntrackUnavailableError(argv, proc.exit_code, "", proc.stderr)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _signal(proc, signal.SIGKILL)

    timers = [threading.Timer(timeout, expire)]
    if duration is not None and duration < timeout:
        timers.append(threading.Timer(duration, _signal, (proc, signal.SIGTERM)))
    tail: collections.deque[str] = collections.deque()
    drain = threading.Thread(target=_drain_stderr, args=(proc, tail), daemon=True)
    for thread in (*timers, drain):
        thread.daemon = True
        thread.start()
    return Stream(proc, argv, timers, drain, tail, expired, time.monotonic())


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


def finish(stream: Stream, *, kill: bool) -> None:
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


class Streams:
    """The running streams under random handles, at most ``max_streams``."""

    def __init__(self, max_streams: int = MAX_STREAMS, idle: float = STREAM_IDLE) -> None:
        self.max_streams = max_streams
        self.idle = idle
        self._running: dict[str, Stream] = {}
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._running))

    def __getitem__(self, handle: str) -> Stream:
        return self._running[handle]

    def __len__(self) -> int:
        return len(self._running)

    def start(self, argv: tuple[str, ...], timeout: float, duration: float | None, *,
              pipe_size: int | None = None, idle: float | None = None) -> str:
        """Spawn ``argv`` as a new stream and return its handle (see :func:`spawn`).

        :param idle: seconds this stream may go unread; None for ``self.idle``.

        :raises OutputUnavailableError: ``max_streams`` streams already run.
        :raises ConntrackUnavailableError: the binary is missing or cannot run.
        """
        with self._lock:
            self._reap_idle_locked()
            if len(self._running) >= self.max_streams:
                raise exc.OutputUnavailableError(
                    argv, None, "", f"the privsep daemon already runs {len(self._running)} "
                    f"streams (limit {self.max_streams}); close one and retry\n")
            handle = secrets.token_hex(16)
            stream = spawn(argv, timeout, duration, pipe_size)
            stream.idle = idle
            self._running[handle] = stream
        return handle

    def read(self, handle: str, size: int) -> ReadReply:
        """Return the next piece of a stream's output, waiting up to READ_WAIT seconds.

        :returns: ``(text, finished, exit_code, stderr, timed_out)``; once
            ``finished`` is true the stream is gone and the other fields are final.
        :raises OutputUnavailableError: no such stream (stopped, idle, restarted).
        """
        stream = self._find(handle)
        with stream.lock:
            stream.last_read = time.monotonic()
            return self._read(handle, stream, size)

    def stop(self, handle: str) -> bool:
        """Stop a stream and forget it; return whether it was running."""
        with self._lock:
            stream = self._running.pop(handle, None)
        if stream is None:
            return False
        finish(stream, kill=True)
        return True

    def _read(self, handle: str, stream: Stream, size: int) -> ReadReply:
        assert stream.proc.stdout is not None  # noqa: S101 - stdout=PIPE
        fd = stream.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], READ_WAIT)
        if not ready:
            return "", False, None, "", False
        data = os.read(fd, size)
        if data:
            return stream.decoder.decode(data), False, None, "", False
        with self._lock:
            self._running.pop(handle, None)
        finish(stream, kill=False)
        stderr = "".join(stream.stderr)[-MAX_STDERR:]
        text = stream.decoder.decode(b"", final=True)
        return text, True, stream.proc.returncode, stderr, stream.expired.is_set()

    def _find(self, handle: str) -> Stream:
        with self._lock:
            self._reap_idle_locked()
            stream = self._running.get(handle)
        if stream is None:
            raise exc.OutputUnavailableError(
                ("read_stream",), None, "",
                f"stream {handle} is not running in the privsep daemon: stopped, "
                f"unread for more than {self.idle:g} s ({LISTING_IDLE:g} s for a listing), "
                "or lost when the daemon restarted\n")
        return stream

    def _idle_of(self, stream: Stream) -> float:
        return self.idle if stream.idle is None else stream.idle

    def _reap_idle_locked(self) -> None:
        now = time.monotonic()
        for key in [key for key, stream in self._running.items()
                    if now - stream.last_read > self._idle_of(stream)
                    and not stream.lock.locked()]:
            finish(self._running.pop(key), kill=True)
