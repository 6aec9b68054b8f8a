"""Launch conntrack: namespace names, the final argv and the child process.

Both sides of the root boundary import this module: the privileged
entrypoints (which run as root inside the privsep daemon) and
:class:`conntrack_lib.executor.ProcessExecutor` (which runs in a process that
already holds CAP_NET_ADMIN).  Keeping one copy of the argv rendering, the
namespace checks and the kill-on-timeout runner means both paths build and
run exactly the same process.

Nothing here creates a namespace: a missing one is an error, never an
invitation to make it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import re
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, overload

from conntrack_lib import constants
from conntrack_lib import exceptions as exc

#: Fixed path of util-linux ``nsenter`` (see :mod:`conntrack_lib.constants`).
NSENTER = constants.NSENTER_BINARY
#: Exit codes a shell-less exec failure is reported with (as ``nsenter`` does).
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
#: Seconds a bounded ``-E`` gets after SIGTERM to print its summary.
EVENTS_GRACE = 2.0
#: Bytes a listing's stdout pipe holds: conntrack prints this far ahead of
#: the parse reading it.
LISTING_PIPE = 1024 * 1024

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: prctl option: the signal a child gets when its parent thread ends.
_PR_SET_PDEATHSIG = 1
# The child sees a fixed, minimal environment: no caller-controlled
# LD_PRELOAD or PATH can reach a process that runs with root's capabilities.
_CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
_FORBIDDEN_CHARS = ("\x00", "\n", "\r")


class Renderable(Protocol):
    """What this module needs from a command object."""

    @property
    def kind(self) -> str:
        """Return the command's kind, e.g. ``'list'``."""

    def argv(self) -> tuple[str, ...]:
        """Return the arguments after the binary."""


@dataclass(frozen=True, slots=True)
class ProcessOutput:
    """What a finished child left behind."""

    exit_code: int
    stdout: str
    stderr: str


def validate_name(name: object) -> str:
    """Return ``name`` if it is a safe network namespace name.

    :raises InvalidArgumentError: not 1-64 of ``[A-Za-z0-9_.-]``, or it
        contains ``..`` or is ``.`` (either would leave /run/netns).
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise exc.InvalidArgumentError(
            "namespace", name, "must be 1-64 characters of [A-Za-z0-9_.-]"
        )
    if name == "." or ".." in name:
        raise exc.InvalidArgumentError("namespace", name, "must not contain '..' or be '.'")
    return name


def namespace_path(name: str) -> str:
    """Return the bind-mount path of the validated namespace ``name``."""
    return os.path.join(constants.NETNS_RUN_DIR, validate_name(name))


def exists(name: str) -> bool:
    """Return whether ``name`` (validated) names a network namespace now.

    The check is :func:`open_namespace`'s: a symlink, a FIFO, a plain file
    or a namespace of another type under /run/netns does not count.
    """
    try:
        fd = open_namespace(name)
    except exc.NamespaceNotFoundError:
        return False
    os.close(fd)
    return True


def ensure_exists(name: str, cmd: Sequence[str] = ()) -> str:
    """Return the namespace's path, or raise if it is not a network namespace.

    :raises NamespaceNotFoundError: nothing usable is mounted at /run/netns/NAME.
    """
    if not exists(name):
        raise _not_a_namespace(name, cmd, "missing, or not a network namespace")
    return namespace_path(name)


def open_namespace(name: str, cmd: Sequence[str] = ()) -> int:
    """Open /run/netns/NAME and return the descriptor of a network namespace.

    The single namespace check of both the CLI path and the netlink path.
    The open never blocks (``O_NONBLOCK``: a FIFO planted there would
    otherwise wait for a writer for ever) and never follows a symlink
    (``O_NOFOLLOW``); the opened file must then answer ``NS_GET_NSTYPE``
    with ``CLONE_NEWNET``, which only an nsfs file of a network namespace
    does.

    :param cmd: the command to name in the error, if any.
    :returns: a close-on-exec descriptor the caller must close.
    :raises InvalidArgumentError: an unsafe name.
    :raises NamespaceNotFoundError: missing, or not a network namespace.
    """
    path = namespace_path(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        reason = "not found" if err.errno == errno.ENOENT else (err.strerror or str(err))
        raise _not_a_namespace(name, cmd, reason) from None
    try:
        _check_network_namespace(fd)
    except OSError as err:
        os.close(fd)
        raise _not_a_namespace(name, cmd, err.strerror or str(err)) from None
    return fd


#: ``_IO(0xb7, 0x3)`` of <linux/nsfs.h>: ask an nsfs file for its namespace type.
NS_GET_NSTYPE = 0xB703
CLONE_NEWNET = 0x40000000


def _check_network_namespace(fd: int) -> None:
    """Raise OSError unless ``fd`` is a network namespace file."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise OSError(errno.EINVAL, "not a namespace file")
    # Any other file answers ENOTTY; a namespace of another kind, its type.
    if fcntl.ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET:
        raise OSError(errno.EINVAL, "not a network namespace")


def _not_a_namespace(name: str, cmd: Sequence[str], reason: str) -> exc.NamespaceNotFoundError:
    return exc.NamespaceNotFoundError(
        tuple(cmd), None, "", f"network namespace {name!r} not found in "
        f"{constants.NETNS_RUN_DIR}: {reason}"
    )


def check_binary(binary: object) -> str:
    """Return ``binary`` if it is a normalised absolute path.

    :raises InvalidArgumentError: relative, not normalised, or odd characters.
    """
    if (
        not isinstance(binary, str)
        or not os.path.isabs(binary)
        or os.path.normpath(binary) != binary
        or any(ch.isspace() or not ch.isprintable() for ch in binary)
    ):
        raise exc.InvalidArgumentError(
            "conntrack_binary", binary, "must be a normalised absolute path"
        )
    return binary


def check_argv(argv: Sequence[object]) -> tuple[str, ...]:
    """Return ``argv`` as a tuple after refusing non-strings and line breaks."""
    for arg in argv:
        if not isinstance(arg, str) or any(ch in arg for ch in _FORBIDDEN_CHARS):
            raise exc.InvalidArgumentError("argv", arg, "not a single-line string")
    return tuple(str(arg) for arg in argv)


def build_argv(command: Renderable, binary: str, namespace: str | None) -> tuple[str, ...]:
    """Build the complete argv that runs ``command`` (already validated).

    :param binary: absolute path of conntrack.
    :param namespace: a network namespace name, or ``None`` for the caller's.
    :raises InvalidArgumentError: bad binary path, namespace name or argv.
    :raises NamespaceNotFoundError: the namespace does not exist.
    """
    argv = (check_binary(binary), *check_argv(command.argv()))
    if namespace is None:
        return argv
    # nsenter execs conntrack in place, so the pid we time out and kill is
    # conntrack itself, not a wrapper that could leave it running.
    return (NSENTER, f"--net={ensure_exists(namespace, argv)}", "--", *argv)


@functools.cache
def _libc() -> ctypes.CDLL:
    """Return the C library, loaded once in the parent (never after a fork)."""
    return ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this (forked, not yet exec'd) child when its parent dies.

    Runs between fork and exec: only the prctl call happens here, the C
    library was loaded before the fork (a dlopen in the child could wait
    for a lock another thread of the parent held).
    """
    if _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


@overload
def launch(argv: Sequence[str], *, stdin: bool = False, die_with_parent: bool = False,
           binary: Literal[False] = False,
           pipe_size: int | None = None) -> subprocess.Popen[str] | ProcessOutput: ...


@overload
def launch(argv: Sequence[str], *, stdin: bool = False, die_with_parent: bool = False,
           binary: Literal[True],
           pipe_size: int | None = None) -> subprocess.Popen[bytes] | ProcessOutput: ...


def launch(argv: Sequence[str], *, stdin: bool = False, die_with_parent: bool = False,
           binary: bool = False, pipe_size: int | None = None
           ) -> subprocess.Popen[str] | subprocess.Popen[bytes] | ProcessOutput:
    """Start ``argv``: the one place a child process of this library begins.

    No shell, no inherited descriptors, a fixed minimal environment, text
    pipes (UTF-8, undecodable bytes kept as surrogates).  A failed exec is
    not raised but returned as the :class:`ProcessOutput` a shell would
    report: exit 127 for a missing executable, 126 for one that cannot be
    executed (permissions, wrong format), so one exit-code interpreter
    handles every path, streaming or not.

    :param stdin: give the child a pipe to write to (else ``/dev/null``).
    :param die_with_parent: the child is killed when the thread that started
        it ends (its process died): for ``conntrack -E``, which never ends by
        itself and would outlive a crashed privsep daemon for ever.  Only for
        such children, as it costs the fast spawn path.
    :param binary: unbuffered byte pipes (for a reader that decodes chunks
        itself) instead of UTF-8 text pipes.
    :param pipe_size: bytes the stdout pipe should hold (``F_SETPIPE_SZ``),
        so the child can print ahead of its reader; None keeps the kernel's
        64 KiB.
    :returns: the running child, or the outcome of a failed exec.
    """
    if die_with_parent:
        _libc()  # loaded now, in the parent
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            env=_CHILD_ENV,
            bufsize=0 if binary else -1,
            preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509
            encoding=None if binary else "utf-8",
            errors=None if binary else "surrogateescape",
        )
    except FileNotFoundError as err:
        return ProcessOutput(EXIT_NOT_FOUND, "", f"{argv[0]}: {err.strerror}")
    except OSError as err:  # EACCES, ENOEXEC, ...: found but not runnable
        return ProcessOutput(EXIT_CANNOT_EXECUTE, "", f"{argv[0]}: {err.strerror}")
    if pipe_size is not None and proc.stdout is not None:
        _grow_pipe(proc.stdout.fileno(), pipe_size)
    return proc


def _grow_pipe(fd: int, size: int) -> None:
    """Ask for a pipe of ``size`` bytes; keep the default when refused.

    Above /proc/sys/fs/pipe-max-size only a privileged process may, and a
    small pipe only costs speed.
    """
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    stdin: str | None = None,
    duration: float | None = None,
    max_stdout: int | None = None,
) -> ProcessOutput:
    """Run ``argv`` (through :func:`launch`) and return its exit code and output.

    With ``duration`` the child (a bounded ``-E``) gets SIGTERM after that
    many seconds.

    :param max_stdout: most characters of stdout to collect; past it the
        child is killed (``None``: no limit).
    :raises CommandTimeoutError: still running after ``timeout`` seconds;
        the child has been killed.
    :raises OutputUnavailableError: stdout grew past ``max_stdout``.
    """
    proc = launch(argv, stdin=stdin is not None, die_with_parent=duration is not None)
    if isinstance(proc, ProcessOutput):
        return proc
    with proc:
        return _communicate(proc, argv, stdin, timeout, duration, max_stdout=max_stdout)


def _communicate(
    proc: subprocess.Popen[str],
    argv: Sequence[str],
    stdin: str | None,
    timeout: float,
    duration: float | None,
    *,
    max_stdout: int | None = None,
) -> ProcessOutput:
    # Timers rather than communicate(timeout=...): with a timeout, Popen.wait
    # polls with sleeps, which adds about a millisecond to every command.
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timers = [threading.Timer(timeout, expire)]
    if duration is not None and duration < timeout:
        timers.append(threading.Timer(duration, proc.send_signal, (signal.SIGTERM,)))
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        if max_stdout is None:
            out, err = proc.communicate(stdin)
        else:
            out, err = _collect_bounded(proc, argv, max_stdout)
    finally:
        for timer in timers:
            timer.cancel()
    if expired.is_set():
        raise exc.CommandTimeoutError(
            tuple(argv), proc.returncode, out or "",
            f"{err or ''}killed after the {timeout:g} s timeout\n",
        )
    return ProcessOutput(proc.returncode, out, err)


def _collect_bounded(proc: subprocess.Popen[str], argv: Sequence[str],
                     limit: int) -> tuple[str, str]:
    """Read a child's stdout to its end, killing it past ``limit`` characters."""
    assert proc.stdout is not None  # noqa: S101 - stdout=PIPE
    errors: list[str] = []
    drain = threading.Thread(target=lambda: errors.append(_read_all(proc)), daemon=True)
    drain.start()
    pieces: list[str] = []
    total = 0
    while piece := proc.stdout.read(65536):
        total += len(piece)
        if total > limit:
            proc.kill()
            proc.wait()
            drain.join()
            raise exc.OutputUnavailableError(
                tuple(argv), None, "", f"more than {limit} characters of output: the "
                "command was stopped (stream events with ConntrackHelper.events())\n")
        pieces.append(piece)
    proc.wait()
    drain.join()
    return "".join(pieces), "".join(errors)


class LineStream:
    """Run ``argv`` and yield its stdout lines as they arrive.

    After the iteration ends, ``exit_code`` and ``stderr`` are set.
    A timer kills the child at ``timeout``; the iteration then raises
    :class:`~conntrack_lib.exceptions.CommandTimeoutError`.  Leaving the loop early kills
    the child.
    """

    def __init__(self, argv: Sequence[str], *, timeout: float,
                 duration: float | None = None) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout
        self.duration = duration
        self.exit_code: int | None = None
        self.stderr = ""

    def __iter__(self) -> Iterator[str]:
        # A listing (no duration) prints ahead of the parse into a large pipe;
        # with the default 64 KiB one the two run in lockstep.
        listing = self.duration is None
        proc = launch(self.argv, die_with_parent=not listing,
                      pipe_size=LISTING_PIPE if listing else None)
        if isinstance(proc, ProcessOutput):
            self.exit_code, self.stderr = proc.exit_code, proc.stderr
            return
        yield from self._follow(proc)

    def _follow(self, proc: subprocess.Popen[str]) -> Iterator[str]:
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(self.timeout, expire)
        # A bounded -E gets SIGTERM after its duration, to print its summary.
        stop = threading.Timer(self.duration if self.duration is not None else 0.0,
                               proc.send_signal, (signal.SIGTERM,))
        errors: list[str] = []
        # stderr is drained in a thread so a chatty child cannot block on a
        # full pipe while we read stdout.
        drain = threading.Thread(target=lambda: errors.append(_read_all(proc)), daemon=True)
        timer.start()
        if self.duration is not None and self.duration < self.timeout:
            stop.daemon = True
            stop.start()
        drain.start()
        try:
            assert proc.stdout is not None  # noqa: S101 - set by stdout=PIPE
            for line in proc.stdout:
                yield line.rstrip("\n")
            proc.wait()
        finally:
            timer.cancel()
            stop.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            drain.join()
            proc.__exit__(None, None, None)
        self.exit_code, self.stderr = proc.returncode, "".join(errors)
        if expired.is_set():
            raise exc.CommandTimeoutError(
                self.argv, proc.returncode, "",
                f"{self.stderr}killed after the {self.timeout:g} s timeout\n",
            )


def _read_all(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None  # noqa: S101 - set by stderr=PIPE
    return proc.stderr.read()
