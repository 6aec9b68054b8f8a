"""Exception hierarchy of conntrack_lib.

Every class passes all of its fields positionally to ``__init__`` of its
base, so ``type(e)(*e.args)`` rebuilds it.  That is how oslo.privsep and
pickle carry exceptions across the root boundary.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Longest rendering of a rejected value in a message.
MAX_SHOWN = 200
#: Characters of output a timeout error keeps from the start and from the end.
CLIP_HEAD = 32 * 1024
CLIP_TAIL = 32 * 1024
# Room for the marker line, so clipping clipped text changes nothing.
_CLIP_SLACK = 200


def shown(value: object) -> str:
    """Return a short repr of ``value`` that never fails (huge ints refuse repr)."""
    try:
        text = repr(value)
    except ValueError:
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


class ConntrackError(Exception):
    """Base class of every error raised by conntrack_lib."""


class InvalidArgumentError(ConntrackError, ValueError):
    """A filter or field value is invalid, or a combination is illegal."""

    def __init__(self, field: str, value: object = None, reason: str = "invalid value") -> None:
        super().__init__(field, value, reason)
        self.field = field
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.field}={shown(self.value)}: {self.reason}"


class ZoneError(ConntrackError):
    """Base class of zone allocation errors."""


class InvalidZoneError(ZoneError, ValueError):
    """A zone lies outside 1..MAX_CONNTRACK_ZONE_ID or the configured range."""

    def __init__(self, zone: object, reason: str = "zone out of range") -> None:
        super().__init__(zone, reason)
        self.zone = zone
        self.reason = reason

    def __str__(self) -> str:
        return f"zone {shown(self.zone)}: {self.reason}"


class ZoneExhaustedError(ZoneError):
    """No free zone is left in the range."""

    def __init__(self, low: int, high: int, key: str = "") -> None:
        super().__init__(low, high, key)
        self.low = low
        self.high = high
        self.key = key

    def __str__(self) -> str:
        return f"no free conntrack zone in {self.low}..{self.high} for {self.key!r}"


class ZoneStoreError(ZoneError):
    """The persistent zone store cannot be read or written safely."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"zone store {self.path}: {self.reason}"


class UnsupportedReleaseError(ConntrackError):
    """The conntrack binary is a release the library cannot drive (or names none)."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(version, reason)
        self.version = version
        self.reason = reason

    def __str__(self) -> str:
        return f"conntrack release {self.version!r}: {self.reason}"


class CommandError(ConntrackError):
    """A conntrack command failed; carries everything needed to diagnose it."""

    def __init__(
        self,
        cmd: Sequence[str] | str = (),
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        cmd_t = (cmd,) if isinstance(cmd, str) else tuple(cmd)
        super().__init__(cmd_t, exit_code, stdout, stderr)
        self.cmd = cmd_t
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    def __str__(self) -> str:
        detail = self.stderr.strip().splitlines()[-1] if self.stderr.strip() else ""
        return (
            f"{type(self).__name__}: {' '.join(self.cmd)!s} "
            f"exited {self.exit_code}: {detail}"
        ).rstrip(": ")


class EntryExistsError(CommandError):
    """A create targeted a flow that already exists."""


class EntryNotFoundError(CommandError):
    """A get or update targeted a flow that does not exist."""


class PermissionDeniedError(CommandError):
    """The caller lacks CAP_NET_ADMIN (or is not root)."""


class NamespaceNotFoundError(CommandError):
    """The named network namespace does not exist."""


class ConntrackUnavailableError(CommandError):
    """The conntrack binary or the kernel's conntrack support is missing."""


def clip(text: str, head: int = CLIP_HEAD, tail: int = CLIP_TAIL) -> str:
    """Return ``text`` cut to its first ``head`` and last ``tail`` characters.

    A marker line between the two says how many characters were left out
    of how many.  Text short enough is returned unchanged, and so is text
    clipped before: clipping is idempotent.
    """
    if len(text) <= head + tail + _CLIP_SLACK:
        return text
    omitted = len(text) - head - tail
    return (f"{text[:head]}\n[... {omitted} of {len(text)} characters omitted ...]\n"
            f"{text[len(text) - tail:]}")


class CommandTimeoutError(CommandError):
    """The command ran past its timeout and was killed.

    It keeps only the head and the tail of stdout and stderr (see
    :func:`~conntrack_lib.exceptions.clip`), with the total size: the output
    of a killed listing can be far larger than a privsep reply may grow.
    """

    def __init__(
        self,
        cmd: Sequence[str] | str = (),
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(cmd, exit_code, clip(stdout), clip(stderr))


class OutputUnavailableError(CommandError):
    """The daemon cannot hold, or no longer holds, a command's output.

    Raised when the daemon's limits on long outputs or event streams are
    reached (nothing held is ever evicted for a newcomer), and when an
    output was released, left unread too long, or lost with a restarted
    daemon.  The message says which.
    """


class ParseError(ConntrackError):
    """Output that the parser cannot read (strict mode)."""

    def __init__(self, line: str, lineno: int = 0, reason: str = "unreadable line") -> None:
        super().__init__(line, lineno, reason)
        self.line = line
        self.lineno = lineno
        self.reason = reason

    def __str__(self) -> str:
        return f"line {self.lineno}: {self.reason}: {self.line[:200]!r}"


__all__ = [
    "CommandError",
    "CommandTimeoutError",
    "ConntrackError",
    "ConntrackUnavailableError",
    "EntryExistsError",
    "EntryNotFoundError",
    "InvalidArgumentError",
    "InvalidZoneError",
    "NamespaceNotFoundError",
    "OutputUnavailableError",
    "ParseError",
    "PermissionDeniedError",
    "UnsupportedReleaseError",
    "ZoneError",
    "ZoneExhaustedError",
    "ZoneStoreError",
]
