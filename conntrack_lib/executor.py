"""Run commands: the executors and the entry points callers import.

Two executors ship here:

* :class:`PrivsepExecutor` (the default) calls the narrow entrypoints of
  :mod:`conntrack_lib.privileged.conntrack` in an oslo.privsep daemon;
* :class:`ProcessExecutor` runs conntrack directly, for a process that
  already holds CAP_NET_ADMIN.

Both render the final argv with :func:`conntrack_lib.netns.build_argv` and
give every finished command to :func:`~conntrack_lib.results.finish`, so
:mod:`conntrack_lib.results` alone gives conntrack's exit codes their
meaning and decides which failures are retried.  Its names
(:class:`~conntrack_lib.results.Result`,
:func:`~conntrack_lib.results.interpret`, the retry helpers) stay
importable from here.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from oslo_config import cfg
from oslo_log import log as logging

from conntrack_lib import capabilities, commands, netns, opts
from conntrack_lib import exceptions as exc
from conntrack_lib.results import (
    EXISTS_MESSAGE,
    EXIT_SEGFAULT,
    NAMESPACE_MESSAGES,
    NOT_FOUND_MESSAGE,
    PERMISSION_MESSAGES,
    RETRYABLE_KINDS,
    TRANSIENT_MESSAGES,
    UNAVAILABLE_MESSAGES,
    Result,
    finish,
    interpret,
    is_transient,
    log_failure,
    run_with_retries,
    signal_exit,
)

LOG = logging.getLogger(__name__)

#: Extra seconds the client waits for the daemon beyond the command timeout.
PRIVSEP_MARGIN = 30.0

_LIST_KINDS = frozenset({"list"})


class Executor(Protocol):
    """Runs command objects.

    :class:`~conntrack_lib.helper.ConntrackHelper` depends only on this.
    """

    def execute(
        self, command: Any, *, namespace: str | None = None, timeout: float | None = None
    ) -> Result:
        """Run ``command`` and return its :class:`~conntrack_lib.results.Result`, or raise.

        :param command: a command object of :mod:`conntrack_lib.commands`.
        :param namespace: network namespace to run in, or None for this
            process's own.
        :param timeout: seconds the command may take; None for the
            ``[conntrack_lib] command_timeout`` option (longer for events).
        :returns: the exit status, output and count of the run.
        :raises InvalidArgumentError: for a bad namespace name.
        :raises CommandError: (or a subclass) when conntrack fails.
        """

    def iter_lines(
        self, command: Any, *, namespace: str | None = None, timeout: float | None = None
    ) -> Iterator[str]:
        """Run a list command and yield its stdout lines.

        :param command: a :class:`~conntrack_lib.commands.ListCommand`.
        :param namespace: network namespace to run in, or None for this
            process's own.
        :param timeout: seconds the command may take; None for the
            ``[conntrack_lib] command_timeout`` option (longer for events).
        :returns: an iterator of the lines.
        :raises InvalidArgumentError: for another command or a bad namespace.
        :raises CommandError: (also from the iteration) when conntrack fails.
        """

    def release(self) -> capabilities.Release:
        """Return the release of the conntrack binary this executor runs.

        :returns: the release as ``(major, minor, patch)``.
        :raises UnsupportedReleaseError: the binary names no release, or one
            older than 1.4.5.
        :raises CommandError: when ``conntrack --version`` fails.
        """

    # Optional, and so not part of the protocol: executors that can create
    # flows over ctnetlink also have
    #     create_flows(creates, *, namespace=None) -> list[int]
    # (one errno per CreateCommand); ConntrackHelper looks it up with getattr.


class _Configured:
    """Options shared by both executors, read from an oslo.config object."""

    def __init__(self, conf: cfg.ConfigOpts | None = None) -> None:
        self.conf = cfg.CONF if conf is None else conf
        opts.register_opts(self.conf)
        self._binary_release: capabilities.Release | None = None
        self._release_lock = threading.Lock()

    def release(self) -> capabilities.Release:
        """Return the release of the conntrack binary, asked once (``--version``).

        :returns: the release as ``(major, minor, patch)``.
        :raises UnsupportedReleaseError: the binary names no release, or one
            older than 1.4.5.
        :raises CommandError: when ``conntrack --version`` fails.
        """
        with self._release_lock:
            if self._binary_release is None:
                result = self.execute(commands.VersionCommand())
                release = capabilities.parse_version(result.stdout + result.stderr)
                capabilities.for_release(release)  # refuses a release too old
                self._binary_release = release
            return self._binary_release

    @property
    def group(self) -> Any:
        """Return the ``[conntrack_lib]`` option group of the executor's configuration."""
        return self.conf[opts.GROUP]

    def execute(
        self, command: Any, *, namespace: str | None = None, timeout: float | None = None
    ) -> Result:
        """Run ``command`` and return its :class:`~conntrack_lib.results.Result`, or raise.

        Transient failures are retried under the rule of
        :func:`~conntrack_lib.results.run_with_retries`.

        :param command: a command object of :mod:`conntrack_lib.commands`.
        :param namespace: network namespace to run in, or None for this
            process's own.
        :param timeout: seconds the command may take; None for the
            ``[conntrack_lib] command_timeout`` option (longer for events).
        :returns: the exit status, output and count of the run.
        :raises InvalidArgumentError: for a bad namespace name.
        :raises CommandError: (or a subclass such as
            :class:`~conntrack_lib.exceptions.EntryExistsError` or
            :class:`~conntrack_lib.exceptions.CommandTimeoutError`) when
            conntrack fails.
        """
        limit = self.timeout_for(command, timeout)
        return run_with_retries(
            command, self.group.retries, lambda: self._execute_once(command, namespace, limit)
        )

    def _execute_once(self, command: Any, namespace: str | None, limit: float) -> Result:
        raise NotImplementedError

    def timeout_for(self, command: Any, timeout: float | None) -> float:
        """Return the timeout: explicit, or the option (long enough for events).

        :param command: the command to run.
        :param timeout: the caller's timeout in seconds, or None.
        :returns: ``timeout``, else the ``command_timeout`` option, raised
            for an events command to its duration plus a grace period.
        """
        if timeout is not None:
            return float(timeout)
        limit = float(self.group.command_timeout)
        if command.kind == "events":
            limit = max(limit, float(command.duration) + netns.EVENTS_GRACE)
        return limit


def _require_events(command: Any) -> None:
    if command.kind != "events":
        raise exc.InvalidArgumentError("command", command.kind,
                                       "iter_events needs an events command")


def _require_list(command: Any) -> None:
    if command.kind not in _LIST_KINDS:
        raise exc.InvalidArgumentError("command", command.kind, "iter_lines needs a list command")


class ProcessExecutor(_Configured):
    """Run conntrack as a child of this process (which needs CAP_NET_ADMIN).

    :param binary: absolute path of conntrack; defaults to the
        ``[conntrack_lib] conntrack_binary`` option.
    :param conf: an oslo.config object; defaults to ``cfg.CONF``.
    """

    def __init__(self, binary: str | None = None, conf: cfg.ConfigOpts | None = None) -> None:
        super().__init__(conf)
        self.binary = netns.check_binary(
            self.group.conntrack_binary if binary is None else binary
        )

    def __repr__(self) -> str:
        return f"ProcessExecutor(binary={self.binary!r})"

    def _execute_once(self, command: Any, namespace: str | None, limit: float) -> Result:
        argv = netns.build_argv(command, self.binary, namespace)
        stdin = command.stdin() if command.kind == "batch" else None
        duration = float(command.duration) if command.kind == "events" else None
        started = time.monotonic()
        try:
            out = netns.run(argv, timeout=limit, stdin=stdin, duration=duration)
        except exc.CommandError as err:
            log_failure(err)
            raise
        return finish(argv, out.exit_code, out.stdout, out.stderr, command=command,
                      started=started)

    def iter_lines(
        self, command: Any, *, namespace: str | None = None, timeout: float | None = None
    ) -> Iterator[str]:
        """Run a list command and yield stdout lines as conntrack prints them.

        The exit status is checked after the last line: a failure raises
        from the iteration.

        :param command: a :class:`~conntrack_lib.commands.ListCommand`.
        :param namespace: network namespace to run in, or None for this
            process's own.
        :param timeout: seconds the command may take; None for the
            ``[conntrack_lib] command_timeout`` option (longer for events).
        :returns: an iterator of the lines.
        :raises InvalidArgumentError: for another command or a bad namespace.
        :raises CommandError: (from the iteration) when conntrack fails.
        """
        _require_list(command)
        argv = netns.build_argv(command, self.binary, namespace)
        return self._stream(command, argv, self.timeout_for(command, timeout))

    def iter_events(
        self, command: Any, *, namespace: str | None = None, timeout: float | None = None
    ) -> Iterator[str]:
        """Run an events command and yield its lines as conntrack prints them.

        The child gets SIGTERM after the command's duration; its exit status
        is checked after the last line.  Closing the iterator kills it.

        :param command: a :class:`~conntrack_lib.commands.EventsCommand`.
        :param namespace: network namespace to run in, or None for this
            process's own.
        :param timeout: seconds the command may take; None for the
            ``[conntrack_lib] command_timeout`` option (longer for events).
        :returns: an iterator of the event lines.
        :raises InvalidArgumentError: for another command or a bad namespace.
        :raises CommandError: (from the iteration) when conntrack fails.
        """
        _require_events(command)
        argv = netns.build_argv(command, self.binary, namespace)
        limit = self.timeout_for(command, timeout)
        return self._stream(command, argv, limit, float(command.duration))

    def delete_flows(self, entries: Sequence[Any], *, namespace: str | None = None) -> list[int]:
        """Delete exact flows over ctnetlink; return one errno per flow.

        0 means deleted, 2 (ENOENT) already gone, anything else an error.

        :param entries: the :class:`~conntrack_lib.models.Entry` flows.
        :param namespace: network namespace of the table, or None for this
            process's own.
        :returns: one errno per flow, in order.
        :raises ConntrackUnavailableError: when the kernel refuses the socket.
        """
        from conntrack_lib import netlink_socket  # noqa: PLC0415 - lazy

        return _delete_in_chunks(
            entries, lambda flows: netlink_socket.delete_flows(namespace, flows))

    def create_flows(self, creates: Sequence[Any], *, namespace: str | None = None) -> list[int]:
        """Create flows over ctnetlink (IPCTNL_MSG_CT_NEW); return one errno per flow.

        0 means created, 17 (EEXIST) exists already, anything else an error
        (:func:`conntrack_lib.netlink_create.create_error` types it).

        :param creates: :class:`~conntrack_lib.commands.CreateCommand` objects
            without NAT or labels.
        :param namespace: network namespace of the table, or None for this
            process's own.
        :returns: one errno per command, in order.
        :raises InvalidArgumentError: a command netlink create cannot encode.
        :raises ConntrackUnavailableError: when the kernel refuses the socket.
        """
        from conntrack_lib import netlink_socket  # noqa: PLC0415 - lazy

        # This process holds the privilege itself and the commands are
        # validated, immutable objects: no primitive round trip is needed.
        return _netlink_in_chunks(
            creates, list, lambda chunk: netlink_socket.create_commands(namespace, chunk),
            "create")

    def _stream(self, command: Any, argv: tuple[str, ...], limit: float,
                duration: float | None = None) -> Iterator[str]:
        started = time.monotonic()
        stream = netns.LineStream(argv, timeout=limit, duration=duration)
        try:
            yield from stream
        except exc.CommandError as err:
            log_failure(err)
            raise
        code = stream.exit_code if stream.exit_code is not None else -1
        finish(argv, code, "", stream.stderr, command=command, started=started)


#: Flows per privsep call of an exact delete: keeps each message far below
#: oslo.privsep's 100 MiB reply limit (a flow is ~150 bytes on the wire).
EXACT_DELETE_CHUNK = 100_000


def _flow_primitives(entries: Sequence[Any]) -> list[dict[str, Any]]:
    from conntrack_lib import netlink  # noqa: PLC0415 - only exact deletes need it

    return [netlink.flow_to_primitive(entry) for entry in entries]


def _create_primitives(creates: Sequence[Any]) -> list[dict[str, Any]]:
    from conntrack_lib import netlink_create  # noqa: PLC0415 - only netlink creates need it

    return [netlink_create.to_primitive(command) for command in creates]


def _netlink_refused(err: OSError, name: str = "delete") -> exc.ConntrackUnavailableError:
    return exc.ConntrackUnavailableError(("netlink", name), None, "",
                                         f"ctnetlink socket refused: {err}")


def _delete_in_chunks(entries: Iterable[Any],
                      send: Callable[[list[dict[str, Any]]], Sequence[int]]) -> list[int]:
    """Send exact flows in chunks of EXACT_DELETE_CHUNK; return one errno per flow.

    :raises ConntrackUnavailableError: when the kernel refuses the socket.
    """
    return _netlink_in_chunks(entries, _flow_primitives, send, "delete")


def _create_in_chunks(creates: Iterable[Any],
                      send: Callable[[list[dict[str, Any]]], Sequence[int]]) -> list[int]:
    """Send create commands in chunks of EXACT_DELETE_CHUNK; return one errno per flow.

    Every command is turned into primitives (and so checked) before the first
    chunk is sent.

    :raises ConntrackUnavailableError: when the kernel refuses the socket.
    """
    return _netlink_in_chunks(_create_primitives(list(creates)), list, send, "create")


def _netlink_in_chunks(items: Iterable[Any],
                       to_primitives: Callable[[Sequence[Any]], list[Any]],
                       send: Callable[[list[Any]], Sequence[int]],
                       name: str) -> list[int]:
    """Send ``items`` in chunks of EXACT_DELETE_CHUNK; return one errno per item."""
    items = list(items)
    outcomes: list[int] = []
    for start in range(0, len(items), EXACT_DELETE_CHUNK):
        try:
            outcomes.extend(send(to_primitives(items[start:start + EXACT_DELETE_CHUNK])))
        except OSError as err:
            raise _netlink_refused(err, name) from err
    LOG.debug("netlink %s of %d flows: %d answered a nonzero errno", name, len(items),
              sum(1 for errno_ in outcomes if errno_))
    return outcomes


class PrivsepExecutor(_Configured):
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

    def _execute_once(self, command: Any, namespace: str | None, limit: float) -> Result:
        started = time.monotonic()
        code, head, stderr, argv, handle, chunks = self._run(command, namespace, limit)
        stdout = head + "".join(self._drain(handle, chunks))
        return finish(argv, code, stdout, stderr, command=command, started=started)

    def iter_lines(
        self, command: Any, *, namespace: str | None = None, timeout: float | None = None
    ) -> Iterator[str]:
        """Run a list command once and yield its lines, fetched chunk by chunk.

        :param command: a :class:`~conntrack_lib.commands.ListCommand`.
        :param namespace: network namespace to run in, or None for this
            process's own.
        :param timeout: seconds the command may take; None for the
            ``[conntrack_lib] command_timeout`` option (longer for events).
        :returns: an iterator of the lines; close it to free the daemon's copy.
        :raises InvalidArgumentError: for another command or a bad namespace.
        :raises CommandError: when conntrack fails.
        """
        _require_list(command)
        limit = self.timeout_for(command, timeout)
        started = time.monotonic()
        code, head, stderr, argv, handle, chunks = self._run(command, namespace, limit)
        try:
            finish(argv, code, head, stderr, command=command, started=started)
        except exc.CommandError:
            self._release(handle)
            raise
        return SpooledLines(self, head, handle, chunks)

    def iter_events(
        self, command: Any, *, namespace: str | None = None, timeout: float | None = None
    ) -> Iterator[str]:
        """Stream an events command's lines from the daemon as they arrive.

        The daemon reads conntrack's output only as fast as this iterator
        is consumed, in pieces of at most ``EVENTS_READ`` bytes, so its
        memory stays bounded however long the capture runs (see
        :mod:`conntrack_lib.privileged.events`).  Closing the iterator, or
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
        _require_events(command)
        if namespace is not None:
            netns.validate_name(namespace)
        return EventLines(self, command, namespace, self.timeout_for(command, timeout))

    def delete_flows(self, entries: Sequence[Any], *, namespace: str | None = None) -> list[int]:
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
        return _delete_in_chunks(entries, lambda flows: self._call(
            priv_netlink.delete_flows, namespace, flows, idempotent=True))

    def create_flows(self, creates: Sequence[Any], *, namespace: str | None = None) -> list[int]:
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
        return _create_in_chunks(creates, lambda flows: self._call(
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

    def _run(self, command: Any, namespace: str | None, limit: float) -> Any:
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
            return self._call(
                entry, _plain(command.to_primitive()), namespace, limit,
                int(self.group.chunk_size), idempotent=kind in RETRYABLE_KINDS, limit=limit,
            )
        except exc.CommandError as err:
            # Raised in the daemon (timeout, missing namespace) or by a lost
            # daemon: no exit code reached finish(), so log it here.
            log_failure(err)
            raise

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


class SpooledLines(Iterator[str]):
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

    def __iter__(self) -> SpooledLines:
        return self

    def __next__(self) -> str:
        try:
            return next(self._lines)
        except BaseException:
            self.close()
            raise

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


@dataclasses.dataclass
class _EventRun:
    """What the reading loop of one event stream needs (no link to the iterator)."""

    owner: PrivsepExecutor
    command: Any
    handle: str
    argv: tuple[str, ...]
    limit: float
    started: float
    finalizer: Any = None
    result: Result | None = None


class EventLines(Iterator[str]):
    """The lines of one ``conntrack -E`` streamed through the daemon.

    The capture is stopped in the daemon when the iterator is closed or
    collected; after the last line the exit status is interpreted like any
    other command's (:attr:`result` is then set).
    """

    def __init__(self, owner: PrivsepExecutor, command: Any, namespace: str | None,
                 limit: float) -> None:
        from conntrack_lib.privileged import events  # noqa: PLC0415 - lazy

        started = time.monotonic()
        try:
            handle, argv = owner._call(events.start_events, _plain(command.to_primitive()),
                                       namespace, limit, idempotent=False)
        except exc.CommandError as err:
            log_failure(err)
            raise
        self._run = _EventRun(owner, command, handle, tuple(argv), limit, started)
        # The reading loop must not reference this iterator, or dropping it
        # would wait for the cycle collector instead of stopping at once.
        self._run.finalizer = weakref.finalize(self, _stop_in_background, owner, handle)
        self._run.finalizer.atexit = False
        self._lines = _follow_events(self._run)

    @property
    def result(self) -> Result | None:
        """Return the interpreted outcome once the last line was read."""
        return self._run.result

    def __iter__(self) -> EventLines:
        return self

    def __next__(self) -> str:
        try:
            return next(self._lines)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the capture in the daemon now (idempotent)."""
        self._lines.close()
        if self._run.finalizer.detach() is not None:
            _stop_stream(self._run.owner, self._run.handle)


def _follow_events(run: _EventRun) -> Generator[str, None, None]:
    from conntrack_lib import event_streams  # noqa: PLC0415 - lazy
    from conntrack_lib.privileged import events  # noqa: PLC0415 - lazy

    pending = ""
    while True:
        text, finished, code, stderr, timed_out = run.owner._call(
            events.read_events, run.handle, EVENTS_READ, idempotent=False,
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
    from conntrack_lib.privileged import events  # noqa: PLC0415 - lazy

    try:
        owner._call(events.stop_events, handle, idempotent=True)
    except (OSError, exc.ConntrackError) as err:
        # An unread stream is stopped by the daemon after STREAM_IDLE anyway.
        LOG.debug("could not stop event stream %s: %s", handle, err)


def _stop_in_background(owner: PrivsepExecutor, handle: str) -> None:
    threading.Thread(target=_stop_stream, args=(owner, handle),
                     name="conntrack-events-stop", daemon=True).start()


def _release_in_background(owner: PrivsepExecutor, handle: str) -> None:
    thread = threading.Thread(target=owner._release, args=(handle,),
                              name="conntrack-release", daemon=True)
    thread.start()


def _name(entry: Any) -> str:
    """Return the entrypoint's function name (privsep wraps it in a partial)."""
    func = entry.args[0] if isinstance(entry, functools.partial) and entry.args else entry
    return str(getattr(func, "__name__", repr(func)))


def _plain(value: Any) -> Any:
    """Return ``value`` with mappings as dicts and sequences as lists (msgpack-safe)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [_plain(item) for item in value]
    return value


__all__ = [
    "EVENTS_IDLE_PAUSE",
    "EVENTS_READ",
    "EXACT_DELETE_CHUNK",
    "EXISTS_MESSAGE",
    "EXIT_SEGFAULT",
    "NAMESPACE_MESSAGES",
    "NOT_FOUND_MESSAGE",
    "PERMISSION_MESSAGES",
    "PRIVSEP_MARGIN",
    "RETRYABLE_KINDS",
    "TRANSIENT_MESSAGES",
    "UNAVAILABLE_MESSAGES",
    "EventLines",
    "Executor",
    "PrivsepExecutor",
    "ProcessExecutor",
    "Result",
    "SpooledLines",
    "finish",
    "interpret",
    "is_transient",
    "log_failure",
    "run_with_retries",
    "signal_exit",
]
