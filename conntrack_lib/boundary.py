"""Check what crosses the root boundary: the pure half of every entrypoint.

The privileged entrypoints (``conntrack_lib.privileged``) receive only
primitives and trust none of them.  They call the functions here, in the
daemon, to rebuild a command with :func:`conntrack_lib.commands.from_primitive`
(which validates every value again), to check that its kind is one the
entrypoint serves and that its argv starts with the matching conntrack
command, and to check every other argument.  Nothing here starts a process
or needs root, so the same checks are tested without either.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Final

from conntrack_lib import commands, netns, opts
from conntrack_lib import exceptions as exc

QUERY_KINDS: Final = frozenset({"list", "get", "count", "stats", "version"})
CHANGE_KINDS: Final = frozenset({"create", "update", "delete", "flush"})
BATCH_KINDS: Final = frozenset({"batch"})
EVENT_KINDS: Final = frozenset({"events"})

#: Longest timeout (and ``-E`` duration) an entrypoint accepts, in seconds.
MAX_TIMEOUT: Final = 24 * 3600.0

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


def rebuild(data: object, kinds: Collection[str]) -> commands.Command:
    """Rebuild and re-validate a command; refuse kinds the caller does not serve.

    :param data: the command in primitive form (``Command.to_primitive()``).
    :param kinds: the command kinds the calling entrypoint serves.
    :returns: the rebuilt command.
    :raises InvalidArgumentError: not a command, another kind, or an argv
        that does not start with the kind's conntrack command.
    """
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


def batch_text(command: commands.Command) -> str:
    """Return a batch's load-file text after checking every line's command.

    :raises InvalidArgumentError: not a batch, or a line ``-R`` must not load.
    """
    text = command.stdin() if isinstance(command, commands.BatchCommand) else None
    if not isinstance(text, str) or "\x00" in text:
        raise exc.InvalidArgumentError("batch", None, "load-file text must be a string")
    for line in text.splitlines():
        words = line.split()
        if words and not words[0].startswith("#") and words[0] not in _BATCH_WORDS:
            raise exc.InvalidArgumentError("batch", words[0], "command not allowed in -R")
    return text


def duration(command: commands.Command) -> float:
    """Return an events command's duration in seconds, checked.

    :raises InvalidArgumentError: not an events command, or out of range.
    """
    value = command.duration if isinstance(command, commands.EventsCommand) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise exc.InvalidArgumentError("duration", value, "must be a number")
    if not 0 < value <= MAX_TIMEOUT:
        raise exc.InvalidArgumentError("duration", value, "out of range")
    return float(value)


def check_timeout(timeout: object) -> float:
    """Return ``timeout`` in seconds if it is a number in (0, MAX_TIMEOUT].

    :raises InvalidArgumentError: otherwise.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise exc.InvalidArgumentError("timeout", timeout, "must be a number of seconds")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise exc.InvalidArgumentError("timeout", timeout, f"must be in (0, {MAX_TIMEOUT:g}]")
    return float(timeout)


def check_size(name: str, size: object, limit: int) -> int:
    """Return ``size`` if it is an int in 1..``limit``.

    :raises InvalidArgumentError: otherwise, naming the argument ``name``.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= limit:
        raise exc.InvalidArgumentError(name, size, f"must be in 1..{limit}")
    return size


def check_chunk_size(size: object) -> int:
    """Return ``size`` if it is an int in 1..MAX_CHUNK_SIZE.

    :raises InvalidArgumentError: otherwise.
    """
    return check_size("chunk_size", size, opts.MAX_CHUNK_SIZE)


def check_namespace(namespace: object) -> str | None:
    """Return a valid namespace name, or ``None`` for the daemon's own.

    :raises InvalidArgumentError: a malformed name.
    """
    return None if namespace is None else netns.validate_name(namespace)


def check_handle(handle: object) -> str:
    """Return ``handle`` if it has the shape of an output or stream handle.

    :raises InvalidArgumentError: otherwise.
    """
    if not isinstance(handle, str) or not _HANDLE_RE.fullmatch(handle):
        raise exc.InvalidArgumentError("handle", handle, "not an output handle")
    return handle
