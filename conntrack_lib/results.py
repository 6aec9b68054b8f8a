"""Give a finished conntrack command one meaning, and retry what is safe to retry.

:func:`interpret` is the single place where conntrack's exit codes and
stderr texts become a :class:`Result` or a typed exception; every executor
calls it through :func:`finish`.  Nothing here runs a process.

Retry rule: a command that failed with a transient kernel error
(``Interrupted system call``, ``Device or resource busy``,
``No buffer space available``) is run again up to ``retries`` times, but
only if running it twice cannot apply it twice: list, get, count, stats,
delete and flush.  Creates, updates (the mark is XORed), batches and event
captures are never retried.
"""

from __future__ import annotations

import dataclasses
import itertools
import signal
import time
from collections.abc import Callable, Sequence

from oslo_log import log as logging

from conntrack_lib import commands, constants, netns
from conntrack_lib import exceptions as exc
from conntrack_lib.parser.summary import summary_count

LOG = logging.getLogger(__name__)

#: Kinds that are safe to run again after a transient failure (their
#: classes say so in ``retryable``).
RETRYABLE_KINDS = frozenset(c.kind for c in commands.COMMAND_CLASSES if c.retryable)
#: stderr texts of transient kernel errors (EINTR, EBUSY, ENOBUFS).
TRANSIENT_MESSAGES = (
    "Interrupted system call",
    "Device or resource busy",
    "No buffer space available",
)
PERMISSION_MESSAGES = (
    "you must be root or get CAP_NET_ADMIN",
    "Operation not permitted",
)
UNAVAILABLE_MESSAGES = ("Protocol not supported", "Can't open handler")
#: What nsenter and ``ip netns exec`` print for a namespace that vanished.
NAMESPACE_MESSAGES = (
    f"cannot open {constants.NETNS_RUN_DIR}/",
    "Cannot open network namespace",
)
EXISTS_MESSAGE = "Such conntrack exists"
NOT_FOUND_MESSAGE = "such conntrack doesn't exist"
EXIT_SEGFAULT = 139


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one successful command.

    ``count`` is the number from the ``N flow entries have been ...``
    summary (0 when nothing matched), 1 for a create, the number printed by
    ``-C``, or ``None`` when the command reports no number (``-R``, ``-F``,
    ``-S``).
    """

    exit_code: int
    stdout: str
    stderr: str
    count: int | None
    cmd: tuple[str, ...]


def interpret(
    cmd: Sequence[str], exit_code: int, stdout: str, stderr: str, command: commands.Command
) -> Result:
    """Turn a finished command into a :class:`Result` or raise its typed error.

    Exit 1 counts as "0 entries affected" only when stderr carries the
    matching ``0 flow entries have been <word>.`` line.

    :raises EntryExistsError: create of a flow that exists.
    :raises EntryNotFoundError: get of a flow that does not exist.
    :raises PermissionDeniedError: no CAP_NET_ADMIN (even if data was printed).
    :raises NamespaceNotFoundError: the namespace vanished.
    :raises ConntrackUnavailableError: binary or kernel support missing.
    :raises CommandError: any other non-zero exit.
    """
    argv = tuple(cmd)
    exit_code, stderr = signal_exit(exit_code, stderr)
    if exit_code == constants.EXIT_OK:
        return Result(exit_code, stdout, stderr, command.reported_count(stdout, stderr), argv)
    error = _error_class(exit_code, stderr, command)
    if error is None:
        return Result(exit_code, stdout, stderr, 0, argv)
    raise error(argv, exit_code, stdout, stderr)


def signal_exit(exit_code: int, stderr: str) -> tuple[int, str]:
    """Map a death by signal N (``Popen`` reports -N) to exit ``128 + N``.

    A shell reports a killed child that way, and nsenter execs conntrack
    in place, so both paths then give one exit code the same meaning (139,
    SIGSEGV, is a crash).  stderr gains a line naming the signal.

    :returns: the exit code and stderr to interpret.
    """
    if exit_code >= 0:
        return exit_code, stderr
    number = -exit_code
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    note = f"conntrack was killed by {name} ({number})\n"
    sep = "" if not stderr or stderr.endswith("\n") else "\n"
    return 128 + number, f"{stderr}{sep}{note}"


def _error_class(exit_code: int, stderr: str, command: commands.Command
                 ) -> type[exc.CommandError] | None:
    """Return the exception class for a failed command, ``None`` for a zero count."""
    if exit_code in (netns.EXIT_NOT_FOUND, netns.EXIT_CANNOT_EXECUTE, EXIT_SEGFAULT):
        return exc.ConntrackUnavailableError
    # Order matters: -C/-S print data and -F prints "emptied" even when the
    # kernel refused them, so permission is checked before any count.
    for needles, error in (
        (UNAVAILABLE_MESSAGES, exc.ConntrackUnavailableError),
        (NAMESPACE_MESSAGES, exc.NamespaceNotFoundError),
        (PERMISSION_MESSAGES, exc.PermissionDeniedError),
        ((EXISTS_MESSAGE,), exc.EntryExistsError),
    ):
        if _mentions(stderr, needles):
            return error
    if command.lookup:
        missing = NOT_FOUND_MESSAGE in stderr or summary_count(stderr, "shown") == 0
        return exc.EntryNotFoundError if missing else exc.CommandError
    word = command.affected_word
    zero = word is not None and summary_count(stderr, word) == 0
    if exit_code == constants.EXIT_FAILURE and zero:
        return None
    return exc.CommandError


def _mentions(text: str, needles: Sequence[str]) -> bool:
    return any(needle in text for needle in needles)


def is_transient(error: exc.CommandError) -> bool:
    """Return whether ``error`` is a plain failure from a transient kernel error."""
    return type(error) is exc.CommandError and _mentions(error.stderr, TRANSIENT_MESSAGES)


def run_with_retries(command: commands.Command, retries: int,
                     attempt: Callable[[], Result]) -> Result:
    """Call ``attempt`` and retry transient failures of retryable kinds.

    Each retry is logged at WARNING.  See the module docstring for the rule.
    """
    for tries in itertools.count():
        try:
            return attempt()
        except exc.CommandError as err:
            if tries >= retries or not command.retryable or not is_transient(err):
                raise
            LOG.warning("conntrack %s failed transiently (%s); retry %d of %d",
                        command.kind, err.stderr.strip(), tries + 1, retries)
            _backoff(tries)
    raise AssertionError("unreachable")  # pragma: no cover


def _backoff(tries: int) -> None:
    """Sleep a little longer after each failed try (50 ms, 100 ms, ...)."""
    time.sleep(0.05 * 2**tries)


def finish(
    cmd: Sequence[str], exit_code: int, stdout: str, stderr: str, *, command: commands.Command,
    started: float,
) -> Result:
    """Log a finished command at DEBUG, then :func:`interpret` it."""
    elapsed = time.monotonic() - started
    LOG.debug("conntrack %s: exit %d in %.3f s", " ".join(cmd), exit_code, elapsed)
    try:
        return interpret(cmd, exit_code, stdout, stderr, command)
    except exc.CommandError as err:
        log_failure(err)
        raise


def log_failure(err: exc.CommandError) -> None:
    """Log a failed command at DEBUG, with its argv, exit code and stderr.

    The caller gets ``err`` itself and decides how loud it is: an agent that
    handles a vanished namespace must not leave an ERROR line behind.
    """
    LOG.debug("conntrack %s failed (%s, exit %s): %s", " ".join(map(str, err.cmd)),
              type(err).__name__, err.exit_code, err.stderr.strip())
