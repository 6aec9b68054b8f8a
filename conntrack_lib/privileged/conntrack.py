"""Privileged entrypoints: the only functions the privsep daemon runs.

Each entrypoint serves one kind of task and takes a command in primitive
form (the dict of :meth:`Command.to_primitive`), a namespace name or
``None``, a timeout and a chunk size.  It rebuilds the command with
:func:`conntrack_lib.commands.from_primitive`, which validates every value
again; checks that the command's kind is one it serves; renders the argv
itself from the binary path in its own configuration; and runs the process
without a shell.  No entrypoint accepts an argv, a path or a shell string.

Replies are primitives only::

    (exit_code, stdout_head, stderr, argv, handle, chunks)

``stdout_head`` holds at most ``chunk_size`` characters.  When the output is
longer, the rest stays in the daemon under the random ``handle`` and is read
with :func:`read_chunk` (chunk 0 is ``stdout_head``) and freed with
:func:`release`.  A privsep reply over 100 MiB would hang the channel; a
chunked reply never comes close.

Limits on held output: at most :data:`MAX_SPOOLS` outputs and
:data:`MAX_SPOOL_CHARS` characters in all.  A new output past either limit
is refused with :class:`~conntrack_lib.exceptions.OutputUnavailableError`;
an output being read is never evicted for a newcomer.  An output left
unread for :data:`SPOOL_TTL` seconds is dropped (each read restarts that
clock), and so is one whose client released it or was collected.
"""

from __future__ import annotations

import collections
import re
import secrets
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from conntrack_lib import commands, netns, opts, privileged, wire_errors
from conntrack_lib import exceptions as exc
from conntrack_lib.privileged import bounding

QUERY_KINDS = frozenset({"list", "get", "count", "stats", "version"})
CHANGE_KINDS = frozenset({"create", "update", "delete", "flush"})
BATCH_KINDS = frozenset({"batch"})
EVENT_KINDS = frozenset({"events"})

#: Seconds an output may sit unread in the daemon before it is dropped.
SPOOL_TTL = 300.0
#: Most outputs held at once; one more is refused, none is evicted.
MAX_SPOOLS = 32
#: Most characters all held outputs may total (ASCII: bytes of daemon memory).
MAX_SPOOL_CHARS = 512 * 1024 * 1024
#: Longest timeout an entrypoint accepts, in seconds.
MAX_TIMEOUT = 24 * 3600.0
#: Most characters of stdout a whole ``-E`` capture (run_events) may print.
MAX_CAPTURE = 64 * 1024 * 1024
#: stderr beyond this many characters is cut from the front (the end says why).
MAX_STDERR = 1024 * 1024

Reply = tuple[int, str, str, tuple[str, ...], str | None, int]

# Defence in depth: the first argument must be the conntrack command that
# the command's kind stands for, whatever the command object renders.
_COMMAND_WORDS: Mapping[str, frozenset[str]] = {
    "list": frozenset({"-L", "--dump"}),
    "get": frozenset({"-G", "--get"}),
    "create": frozenset({"-I", "--create", "-A", "--add"}),
    "update": frozenset({"-U", "--update"}),
    "delete": frozenset({"-D", "--delete"}),
    "flush": frozenset({"-F", "--flush"}),
    "count": frozenset({"-C", "--counter", "--count"}),
    "stats": frozenset({"-S", "--stats"}),
    "events": frozenset({"-E", "--event"}),
    "batch": frozenset({"-R", "--load-file"}),
    "version": frozenset({"--version"}),
}
# -U is deliberately absent: 1.4.7 takes some -U values from the file's last line.
_BATCH_WORDS = frozenset({"-I", "--create", "-A", "--add", "-D", "--delete", "-F", "--flush"})
_HANDLE_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(slots=True)
class _Spool:
    text: str
    chunk_size: int
    expires: float

    @property
    def chunks(self) -> int:
        return max(1, -(-len(self.text) // self.chunk_size))

    def chunk(self, index: int) -> str:
        start = index * self.chunk_size
        return self.text[start:start + self.chunk_size]


_spools: collections.OrderedDict[str, _Spool] = collections.OrderedDict()
_spools_lock = threading.Lock()
_opts_registered = False
_checked = threading.local()
# This module runs in the daemon, whose root logger hands every record to
# oslo.privsep: the agent re-emits it through the context's logger
# (``conntrack_lib.privileged``) with the record's own name kept, so an
# oslo.log logger here reaches the agent like a plain one would.
LOG = logging.getLogger(__name__)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def run_query(command: Any, namespace: Any, timeout: Any, chunk_size: Any) -> Reply:
    """Run a list, get, count or stats command and return its output."""
    return _serve(QUERY_KINDS, command, namespace, timeout, chunk_size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def run_change(command: Any, namespace: Any, timeout: Any, chunk_size: Any) -> Reply:
    """Run a create, update, delete or flush command and return its output."""
    return _serve(CHANGE_KINDS, command, namespace, timeout, chunk_size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def run_batch(command: Any, namespace: Any, timeout: Any, chunk_size: Any) -> Reply:
    """Run a batch (``-R -``) whose lines are rendered from validated commands."""
    return _serve(BATCH_KINDS, command, namespace, timeout, chunk_size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def run_events(command: Any, namespace: Any, timeout: Any, chunk_size: Any) -> Reply:
    """Capture events (``-E``) for the command's bounded duration."""
    return _serve(EVENT_KINDS, command, namespace, timeout, chunk_size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def read_chunk(handle: Any, index: Any) -> str:
    """Return piece ``index`` of the output kept under ``handle``.

    Each read keeps the output for another :data:`SPOOL_TTL` seconds.

    :raises InvalidArgumentError: malformed handle, bad index.
    :raises OutputUnavailableError: the output is not held (any more).
    """
    spool = _find_spool(handle)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < spool.chunks:
        raise exc.InvalidArgumentError("index", index, f"must be in 0..{spool.chunks - 1}")
    spool.expires = time.monotonic() + SPOOL_TTL
    return spool.chunk(index)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def release(handle: Any) -> bool:
    """Drop the output kept under ``handle``; return whether it was there."""
    key = _check_handle(handle)
    with _spools_lock:
        return _spools.pop(key, None) is not None


def _serve(
    kinds: Collection[str], data: Any, namespace: Any, timeout: Any, chunk_size: Any
) -> Reply:
    command = _rebuild(data, kinds)
    _check_bounding_set()
    ns = None if namespace is None else netns.validate_name(namespace)
    limit = _check_timeout(timeout)
    size = _check_chunk_size(chunk_size)
    stdin = _batch_text(command) if command.kind == "batch" else None
    duration = _duration(command) if command.kind == "events" else None
    argv = netns.build_argv(command, _configured_binary(), ns)
    # A capture in one reply is capped; ConntrackHelper.events() streams
    # without a cap through privileged/events.py.
    cap = {"max_stdout": MAX_CAPTURE} if duration is not None else {}
    output = netns.run(argv, timeout=limit, stdin=stdin, duration=duration, **cap)
    return _reply(output, argv, size)


def _rebuild(data: Any, kinds: Collection[str]) -> Any:
    """Rebuild and re-validate a command; refuse kinds this entrypoint does not serve."""
    if not isinstance(data, Mapping) or not all(isinstance(key, str) for key in data):
        raise exc.InvalidArgumentError("command", type(data).__name__, "must be a mapping")
    command = commands.from_primitive(data)
    if command.kind not in kinds:
        raise exc.InvalidArgumentError(
            "kind", command.kind, f"this entrypoint serves {sorted(kinds)}"
        )
    argv = command.argv()
    if not argv or argv[0] not in _COMMAND_WORDS[command.kind]:
        raise exc.InvalidArgumentError("argv", argv[:1], f"does not start a {command.kind}")
    return command


def _batch_text(command: Any) -> str:
    text = command.stdin()
    if not isinstance(text, str) or "\x00" in text:
        raise exc.InvalidArgumentError("batch", None, "load-file text must be a string")
    for line in text.splitlines():
        words = line.split()
        if words and not words[0].startswith("#") and words[0] not in _BATCH_WORDS:
            raise exc.InvalidArgumentError("batch", words[0], "command not allowed in -R")
    return text


def _duration(command: Any) -> float:
    duration = command.duration
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise exc.InvalidArgumentError("duration", duration, "must be a number")
    if not 0 < duration <= MAX_TIMEOUT:
        raise exc.InvalidArgumentError("duration", duration, "out of range")
    return float(duration)


def _check_timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise exc.InvalidArgumentError("timeout", timeout, "must be a number of seconds")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise exc.InvalidArgumentError("timeout", timeout, f"must be in (0, {MAX_TIMEOUT:g}]")
    return float(timeout)


def _check_chunk_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise exc.InvalidArgumentError("chunk_size", size, "must be an integer")
    if not 1 <= size <= opts.MAX_CHUNK_SIZE:
        raise exc.InvalidArgumentError("chunk_size", size, f"must be in 1..{opts.MAX_CHUNK_SIZE}")
    return size


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


def _reply(output: netns.ProcessOutput, argv: tuple[str, ...], chunk_size: int) -> Reply:
    stderr = output.stderr[-MAX_STDERR:]
    if len(output.stdout) <= chunk_size:
        return (output.exit_code, output.stdout, stderr, argv, None, 1)
    spool = _Spool(output.stdout, chunk_size, time.monotonic() + SPOOL_TTL)
    handle = _store(spool, argv)
    return (output.exit_code, spool.chunk(0), stderr, argv, handle, spool.chunks)


def _store(spool: _Spool, argv: tuple[str, ...] = ()) -> str:
    """Hold ``spool`` under a new handle, or refuse: nothing held is evicted.

    :raises OutputUnavailableError: :data:`MAX_SPOOLS` outputs or
        :data:`MAX_SPOOL_CHARS` characters are already held.
    """
    handle = secrets.token_hex(16)
    with _spools_lock:
        _expire_locked()
        held = sum(len(kept.text) for kept in _spools.values())
        if len(_spools) >= MAX_SPOOLS or held + len(spool.text) > MAX_SPOOL_CHARS:
            raise exc.OutputUnavailableError(
                argv, None, "",
                f"the privsep daemon already holds {len(_spools)} long outputs "
                f"({held} characters; limits: {MAX_SPOOLS} outputs, {MAX_SPOOL_CHARS} "
                f"characters); this output of {len(spool.text)} characters was dropped: "
                "finish or close other listings and retry\n")
        _spools[handle] = spool
    return handle


def _find_spool(handle: Any) -> _Spool:
    key = _check_handle(handle)
    with _spools_lock:
        _expire_locked()
        spool = _spools.get(key)
    if spool is None:
        raise exc.OutputUnavailableError(
            ("read_chunk",), None, "",
            f"output {key} is not held by the privsep daemon: released, unread for "
            f"more than {SPOOL_TTL:g} s, or lost when the daemon restarted\n")
    return spool


def _check_handle(handle: Any) -> str:
    if not isinstance(handle, str) or not _HANDLE_RE.fullmatch(handle):
        raise exc.InvalidArgumentError("handle", handle, "not an output handle")
    return handle


def _expire_locked() -> None:
    now = time.monotonic()
    for key in [key for key, spool in _spools.items() if spool.expires <= now]:
        del _spools[key]
