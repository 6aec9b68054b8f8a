"""Run conntrack as a child of this process: :class:`ProcessExecutor`.

For a process that already holds CAP_NET_ADMIN.  Every child starts
through :func:`conntrack_lib.netns.launch`, and every finished command goes
to :func:`~conntrack_lib.results.finish`, as in the privsep executor.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from oslo_config import cfg

from conntrack_lib import commands, netns
from conntrack_lib import exceptions as exc
from conntrack_lib.commands import Command, CreateCommand
from conntrack_lib.executor_base import (
    Configured,
    delete_in_chunks,
    netlink_in_chunks,
    require_events,
    require_list,
)
from conntrack_lib.models import Entry
from conntrack_lib.results import Result, finish, log_failure


class ProcessExecutor(Configured):
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

    def _execute_once(self, command: Command, namespace: str | None, limit: float) -> Result:
        argv = netns.build_argv(command, self.binary, namespace)
        stdin = command.stdin() if isinstance(command, commands.BatchCommand) else None
        duration = (float(command.duration) if isinstance(command, commands.EventsCommand)
                    else None)
        started = time.monotonic()
        try:
            out = netns.run(argv, timeout=limit, stdin=stdin, duration=duration)
        except exc.CommandError as err:
            log_failure(err)
            raise
        return finish(argv, out.exit_code, out.stdout, out.stderr, command=command,
                      started=started)

    def iter_lines(
        self, command: Command, *, namespace: str | None = None, timeout: float | None = None
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
        require_list(command)
        argv = netns.build_argv(command, self.binary, namespace)
        return self._stream(command, argv, self.timeout_for(command, timeout))

    def iter_events(
        self, command: Command, *, namespace: str | None = None, timeout: float | None = None
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
        events = require_events(command)
        argv = netns.build_argv(events, self.binary, namespace)
        limit = self.timeout_for(events, timeout)
        return self._stream(events, argv, limit, float(events.duration))

    def delete_flows(self, entries: Sequence[Entry], *, namespace: str | None = None) -> list[int]:
        """Delete exact flows over ctnetlink; return one errno per flow.

        0 means deleted, 2 (ENOENT) already gone, anything else an error.

        :param entries: the :class:`~conntrack_lib.models.Entry` flows.
        :param namespace: network namespace of the table, or None for this
            process's own.
        :returns: one errno per flow, in order.
        :raises ConntrackUnavailableError: when the kernel refuses the socket.
        """
        from conntrack_lib import netlink_socket  # noqa: PLC0415 - lazy

        return delete_in_chunks(
            entries, lambda flows: netlink_socket.delete_flows(namespace, flows))

    def create_flows(self, creates: Sequence[CreateCommand], *,
                     namespace: str | None = None) -> list[int]:
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
        return netlink_in_chunks(
            creates, list, lambda chunk: netlink_socket.create_commands(namespace, chunk),
            "create")

    def _stream(self, command: Command, argv: tuple[str, ...], limit: float,
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
