"""Run commands through the privileged entrypoints: :class:`PrivsepExecutor`.

The default executor.  It calls the narrow entrypoints of
``conntrack_lib.privileged`` in an oslo.privsep daemon, starting or
restarting the daemon as needed (:mod:`conntrack_lib.daemon`), reads long
outputs chunk by chunk (:class:`SpooledLines`) and streams listings and
events (:class:`StreamedLines`).  Importing this module starts nothing: the privsep
context is built on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import threading
import time
import weakref
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

from oslo_log import log as logging

from conntrack_lib import exceptions as exc
from conntrack_lib import netns
from conntrack_lib.commands import Command, CreateCommand
from conntrack_lib.executor_base import (
    Configured,
    create_in_chunks,
    delete_in_chunks,
    require_events,
    require_list,
)
from conntrack_lib.models import Entry
from conntrack_lib.results import RETRYABLE_KINDS, Result, finish, log_failure

LOG = logging.getLogger(__name__)

#: Extra seconds the client waits for the daemon beyond the command timeout.
PRIVSEP_MARGIN = 30.0

# What a run_* entrypoint answers (conntrack_lib.privileged.conntrack.Reply;
# importing that module would build the privsep context).
_Reply = tuple[int, str, str, tuple[str, ...], str | None, int]


class PrivsepExecutor(Configured):
    """Run commands through the privileged entrypoints (the default executor).

    The daemon starts on the first call: by fork when this process is root
    and ``[conntrack_lib_privileged] helper_command`` is unset, otherwise
    through that helper command (sudo/rootwrap).  A daemon that died is
    started again on the next call.  Output longer than ``chunk_size`` is
    fetched in pieces, so no privsep reply approaches its 100 MiB limit.

    :param conf: an oslo.config object for the ``[conntrack_lib]`` options;
        defaults to ``cfg.CONF``.  The daemon itself (and so the binary path
        it runs) reads the global ``cfg.CONF``, as oslo.privsep requires.
    """

    _lock = threading.Lock()

    def __repr__(self) -> str:
        return "PrivsepExecutor()"

    def _execute_once(self, command: Command, namespace: str | None, limit: float) -> Result:
        started = time.monotonic()
        code, head, stderr, argv, handle, chunks = self._run(command, namespace, limit)
        stdout = head + "".join(self._drain(handle, chunks))
        return finish(argv, code, stdout, stderr, command=command, started=started)

    def iter_lines(
        self, command: Command, *, namespace: str | None = None, timeout: float | None = None
    ) -> Iterator[str]:
        """Run a list command once and yield its lines while conntrack still prints.

        The daemon streams the listing (its ``start_listing`` entrypoint):
        the agent parses one piece while conntrack prints the next.  When
        every stream slot of the daemon is taken, the listing runs to its
        end there and is fetched chunk by chunk instead.  A failure of a
        streamed listing is raised from the iteration, after the lines
        conntrack printed.

        :param command: a :class:`~conntrack_lib.commands.ListCommand`.
        :param namespace: network namespace to run in, or None for this
            process's own.
        :param timeout: seconds the command may take; None for the
            ``[conntrack_lib] command_timeout`` option (longer for events).
        :returns: an iterator of the lines; close it to free the daemon's copy.
        :raises InvalidArgumentError: for another command or a bad namespace.
        :raises CommandError: (also from the iteration) when conntrack fails.
        """
        require_list(command)
        limit = self.timeout_for(command, timeout)
        if namespace is not None:
            netns.validate_name(namespace)
        try:
            return StreamedLines(self, command, namespace, limit, listing=True)
        except exc.OutputUnavailableError:
            LOG.debug("every stream of the privsep daemon is taken; listing spooled")
        return self._spooled_lines(command, namespace, limit)

    def _spooled_lines(self, command: Command, namespace: str | None,
                       limit: float) -> SpooledLines:
        """Run a listing to its end in the daemon, then fetch its output chunk by chunk."""
        started = time.monotonic()
        code, head, stderr, argv, handle, chunks = self._run(command, namespace, limit)
        try:
            finish(argv, code, head, stderr, command=command, started=started)
        except exc.CommandError:
            self._release(handle)
            raise
        return SpooledLines(self, head, handle, chunks)

    def iter_events(
        self, command: Command, *, namespace: str | None = None, timeout: float | None = None
    ) -> Iterator[str]:
        """Stream an events command's lines from the daemon as they arrive.

        The daemon reads conntrack's output only as fast as this iterator
        is consumed, in pieces of at most ``EVENTS_READ`` bytes, so its
        memory stays bounded however long the capture runs (see
        :mod:`conntrack_lib.privileged.streams`).  Closing the iterator, or
        dropping it, stops the capture.

        :param command: a :class:`~conntrack_lib.commands.EventsCommand`.
        :param namespace: network namespace to run in, or None for this
            process's own.
        :param timeout: seconds the command may take; None for the
            ``[conntrack_lib] command_timeout`` option (longer for events).
        :returns: an iterator of the event lines.
        :raises InvalidArgumentError: for another command or a bad namespace.
        :raises OutputUnavailableError: the daemon runs too many streams.
        :raises CommandError: (from the iteration) conntrack failed.
        """
        require_events(command)
        if namespace is not None:
            netns.validate_name(namespace)
        return StreamedLines(self, command, namespace, self.timeout_for(command, timeout))

    def delete_flows(self, entries: Sequence[Entry], *, namespace: str | None = None) -> list[int]:
        """Delete exact flows over ctnetlink in the daemon; one errno per flow.

        0 means deleted, 2 (ENOENT) already gone, anything else an error.
        Large lists go in several calls so no privsep message grows large.

        :param entries: the :class:`~conntrack_lib.models.Entry` flows.
        :param namespace: network namespace of the table, or None for this
            process's own.
        :returns: one errno per flow, in order.
        :raises InvalidArgumentError: for a bad namespace name.
        :raises ConntrackUnavailableError: when the kernel refuses the socket.
        """
        from conntrack_lib.privileged import netlink as priv_netlink  # noqa: PLC0415 - lazy

        if namespace is not None:
            netns.validate_name(namespace)
        # Deleting a flow twice only answers ENOENT: safe to resend.
        return delete_in_chunks(entries, lambda flows: self._call(
            priv_netlink.delete_flows, namespace, flows, idempotent=True))

    def create_flows(self, creates: Sequence[CreateCommand], *,
                     namespace: str | None = None) -> list[int]:
        """Create flows over ctnetlink in the daemon; one errno per flow.

        0 means created, 17 (EEXIST) exists already, anything else an error.
        Large lists go in several calls so no privsep message grows large.

        :param creates: :class:`~conntrack_lib.commands.CreateCommand` objects
            without NAT or labels.
        :param namespace: network namespace of the table, or None for this
            process's own.
        :returns: one errno per command, in order.
        :raises InvalidArgumentError: a command netlink create cannot encode,
            or a bad namespace name.
        :raises ConntrackUnavailableError: when the kernel refuses the socket.
        """
        from conntrack_lib.privileged import netlink as priv_netlink  # noqa: PLC0415 - lazy

        if namespace is not None:
            netns.validate_name(namespace)
        # Not idempotent: a create re-sent after the daemon died mid-call
        # would answer EEXIST for flows the first attempt created.
        return create_in_chunks(creates, lambda flows: self._call(
            priv_netlink.create_flows, namespace, flows, idempotent=False))

    def _lines(self, head: str, handle: str | None, chunks: int) -> Generator[str, None, None]:
        pending = ""
        for piece in itertools.chain((head,), self._chunks(handle, chunks)):
            lines = (pending + piece).split("\n")
            pending = lines.pop()
            yield from lines
        if pending:
            yield pending

    def _chunks(self, handle: str | None, chunks: int) -> Iterator[str]:
        """Yield chunks 1.. of a spooled output (the caller releases it)."""
        if handle is None:
            return
        from conntrack_lib.privileged import conntrack as priv  # noqa: PLC0415 - lazy

        for index in range(1, chunks):
            yield self._call(priv.read_chunk, handle, index, idempotent=True)

    def _drain(self, handle: str | None, chunks: int) -> Iterator[str]:
        """Yield chunks 1.. of a spooled output, then release it."""
        try:
            yield from self._chunks(handle, chunks)
        finally:
            self._release(handle)

    def _release(self, handle: str | None) -> None:
        if handle is None:
            return
        from conntrack_lib.privileged import conntrack as priv  # noqa: PLC0415 - lazy

        try:
            self._call(priv.release, handle, idempotent=True)
        except (OSError, exc.ConntrackError) as err:
            # Unreleased output expires in the daemon anyway.
            LOG.debug("could not release output %s: %s", handle, err)

    def _run(self, command: Command, namespace: str | None, limit: float) -> _Reply:
        # Importing the privileged package builds the privsep context, so
        # it happens on first use, not when this module is imported.
        from conntrack_lib import boundary  # noqa: PLC0415 - lazy
        from conntrack_lib.privileged import conntrack as priv  # noqa: PLC0415 - lazy

        kind = command.kind
        entry = (
            priv.run_query if kind in boundary.QUERY_KINDS
            else priv.run_change if kind in boundary.CHANGE_KINDS
            else priv.run_batch if kind in boundary.BATCH_KINDS
            else priv.run_events
        )
        if namespace is not None:
            netns.validate_name(namespace)
        try:
            reply: _Reply = self._call(
                entry, _plain(command.to_primitive()), namespace, limit,
                int(self.group.chunk_size), idempotent=kind in RETRYABLE_KINDS, limit=limit,
            )
        except exc.CommandError as err:
            # Raised in the daemon (timeout, missing namespace) or by a lost
            # daemon: no exit code reached finish(), so log it here.
            log_failure(err)
            raise
        return reply

    def _call(
        self, entry: Any, *args: Any, idempotent: bool, limit: float | None = None
    ) -> Any:
        """Call ``entry`` in the daemon, starting or restarting it as needed."""
        from oslo_privsep import comm, daemon  # noqa: PLC0415 - lazy with the context

        wait = (limit if limit is not None else float(self.group.command_timeout)) + PRIVSEP_MARGIN
        for attempt in (1, 2):
            self._ensure_daemon()
            try:
                return entry(*args, _wrap_timeout=wait)
            except comm.PrivsepTimeout as err:
                raise exc.CommandTimeoutError(
                    (_name(entry),), None, "", f"privsep daemon gave no answer in {wait:g} s"
                ) from err
            except daemon.FailedToDropPrivileges as err:
                # oslo.privsep restarted a dead daemon on its own, with the
                # helper command; start it our way on the next round.
                self._restart(err)
                if attempt == 2:
                    raise exc.PermissionDeniedError(
                        (_name(entry),), None, "", f"privsep daemon failed to start: {err}"
                    ) from err
            except (BrokenPipeError, ConnectionError) as err:
                # The request never reached a live daemon: safe to resend.
                self._restart(err)
            except OSError as err:
                # The daemon died while the request was in flight.
                self._restart(err)
                if not idempotent or attempt == 2:
                    raise exc.CommandError(
                        (_name(entry),), None, "",
                        f"privsep daemon died during the call: {err}",
                    ) from err
        raise exc.CommandError((_name(entry),), None, "", "privsep daemon unavailable")

    def _ensure_daemon(self) -> None:
        from oslo_privsep import daemon as privsep_daemon  # noqa: PLC0415 - lazy with the context

        from conntrack_lib import daemon, privileged  # noqa: PLC0415 - lazy

        context = privileged.default
        if not context.client_mode:
            return  # we are the daemon (or a test runs entrypoints in-process)
        with self._lock:
            channel = context.channel
            if daemon.alive(channel):
                return
            if channel is not None:
                LOG.warning("privsep daemon is gone; starting a new one")
                daemon.stop(context)
            method = context.default_method()
            LOG.debug("starting the conntrack privsep daemon (%s)", method.name.lower())
            try:
                context.start(method)
            except privsep_daemon.FailedToDropPrivileges as err:
                raise exc.PermissionDeniedError(
                    ("privsep-helper",), None, "", f"privsep daemon failed to start: {err}"
                ) from err

    def _restart(self, err: BaseException) -> None:
        from conntrack_lib import daemon, privileged  # noqa: PLC0415 - lazy

        LOG.warning("privsep daemon connection lost (%s); restarting it", err)
        with self._lock:
            daemon.stop(privileged.default)


class _DaemonLines(Iterator[str]):
    """Lines the daemon holds for this iterator: any error while reading closes it."""

    _lines: Generator[str, None, None]

    def __iter__(self) -> _DaemonLines:
        return self

    def __next__(self) -> str:
        try:
            return next(self._lines)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop reading and free what the daemon holds for this iterator."""
        raise NotImplementedError


class SpooledLines(_DaemonLines):
    """The lines of one listing whose output the daemon holds.

    The daemon's copy is released as soon as the last line was read, the
    iterator is closed, or it is garbage-collected unread (then from a short
    background thread, so a collection that happens inside a privsep call
    cannot deadlock on the executor's lock).
    """

    def __init__(self, owner: PrivsepExecutor, head: str, handle: str | None,
                 chunks: int) -> None:
        self._owner = owner
        self._handle = handle
        self._lines = owner._lines(head, handle, chunks)
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if handle is not None:
            self._finalizer = weakref.finalize(self, _release_in_background, owner, handle)
            self._finalizer.atexit = False  # a dying agent needs no round trip

    def close(self) -> None:
        """Stop reading and release the daemon's copy of the output now."""
        self._lines.close()
        if self._finalizer is not None and self._finalizer.detach() is not None:
            self._owner._release(self._handle)


#: Bytes of event output one round trip fetches at most.
EVENTS_READ = 256 * 1024
#: Seconds to pause after a read that found no new event, so a quiet
#: stream does not keep a daemon worker thread busy.
EVENTS_IDLE_PAUSE = 0.05


#: Bytes of a listing one round trip fetches at most (the daemon's limit).
LISTING_READ = 1024 * 1024


@dataclasses.dataclass
class _StreamRun:
    """What the reading loop of one stream needs (no link to the iterator)."""

    owner: PrivsepExecutor
    command: Command
    handle: str
    argv: tuple[str, ...]
    limit: float
    started: float
    read_size: int
    finalizer: Any = None
    result: Result | None = None


class StreamedLines(_DaemonLines):
    """The lines of one stream (a ``-E`` capture or a ``-L`` listing) read through the daemon.

    The stream is stopped in the daemon when the iterator is closed or
    collected; after the last line the exit status is interpreted like any
    other command's (:attr:`result` is then set, or the error raised).

    :param listing: stream a listing (``start_listing``) instead of a capture.
    """

    def __init__(self, owner: PrivsepExecutor, command: Command, namespace: str | None,
                 limit: float, *, listing: bool = False) -> None:
        started = time.monotonic()
        handle, argv = _start_stream(owner, command, namespace, limit, listing)
        size = LISTING_READ if listing else EVENTS_READ
        self._run = _StreamRun(owner, command, handle, tuple(argv), limit, started, size)
        # The reading loop must not reference this iterator, or dropping it
        # would wait for the cycle collector instead of stopping at once.
        self._run.finalizer = weakref.finalize(self, _stop_in_background, owner, handle)
        self._run.finalizer.atexit = False
        self._lines = _follow_stream(self._run)

    @property
    def result(self) -> Result | None:
        """Return the interpreted outcome once the last line was read."""
        return self._run.result

    def close(self) -> None:
        """Stop the stream in the daemon now (idempotent)."""
        self._lines.close()
        if self._run.finalizer.detach() is not None:
            _stop_stream(self._run.owner, self._run.handle)


#: The older name, from when only event captures were streamed.
EventLines = StreamedLines


def _start_stream(owner: PrivsepExecutor, command: Command, namespace: str | None,
                  limit: float, listing: bool) -> tuple[str, tuple[str, ...]]:
    from conntrack_lib.privileged import streams  # noqa: PLC0415 - lazy

    start = streams.start_listing if listing else streams.start_events
    try:
        handle, argv = owner._call(start, _plain(command.to_primitive()), namespace, limit,
                                   idempotent=False)
    except exc.CommandError as err:
        # A listing that finds every stream slot taken runs spooled instead
        # (iter_lines): no failure to report then.
        if not (listing and isinstance(err, exc.OutputUnavailableError)):
            log_failure(err)
        raise
    return handle, tuple(argv)


def _follow_stream(run: _StreamRun) -> Generator[str, None, None]:
    from conntrack_lib import event_streams  # noqa: PLC0415 - lazy
    from conntrack_lib.privileged import streams  # noqa: PLC0415 - lazy

    pending = ""
    while True:
        text, finished, code, stderr, timed_out = run.owner._call(
            streams.read_stream, run.handle, run.read_size, idempotent=False,
            limit=event_streams.READ_WAIT)
        lines = (pending + text).split("\n")
        pending = lines.pop()
        yield from lines
        if finished:
            break
        if not text:
            time.sleep(EVENTS_IDLE_PAUSE)
    run.finalizer.detach()  # the daemon already forgot the stream
    if pending:
        yield pending
    if timed_out:
        err = exc.CommandTimeoutError(
            run.argv, code, "", f"{stderr}killed after the {run.limit:g} s timeout\n")
        log_failure(err)
        raise err
    run.result = finish(run.argv, code if code is not None else -1, "", stderr,
                        command=run.command, started=run.started)


def _stop_stream(owner: PrivsepExecutor, handle: str) -> None:
    from conntrack_lib.privileged import streams  # noqa: PLC0415 - lazy

    try:
        owner._call(streams.stop_stream, handle, idempotent=True)
    except (OSError, exc.ConntrackError) as err:
        # An unread stream is stopped by the daemon after STREAM_IDLE anyway.
        LOG.debug("could not stop stream %s: %s", handle, err)


def _stop_in_background(owner: PrivsepExecutor, handle: str) -> None:
    threading.Thread(target=_stop_stream, args=(owner, handle),
                     name="conntrack-events-stop", daemon=True).start()


def _release_in_background(owner: PrivsepExecutor, handle: str) -> None:
    thread = threading.Thread(target=owner._release, args=(handle,),
                              name="conntrack-release", daemon=True)
    thread.start()


def _name(entry: object) -> str:
    """Return the entrypoint's function name (privsep wraps it in a partial)."""
    func = entry.args[0] if isinstance(entry, functools.partial) and entry.args else entry
    return str(getattr(func, "__name__", repr(func)))


def _plain(value: object) -> object:
    """Return ``value`` with mappings as dicts and sequences as lists (msgpack-safe)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [_plain(item) for item in value]
    return value
