"""The typed interface of an executor: what runs commands for the helper.

:class:`Executor` is every operation the library asks of an executor:
running a command, streaming a listing or an event capture, naming the
release of the binary, and exact ctnetlink deletes and creates.  Both
executors of :mod:`conntrack_lib.executor` and the fake of
:mod:`conntrack_lib.testing` implement all of it.

An executor a caller writes (a recorder, a proxy) may implement only
:class:`CommandRunner`, the two methods every executor has.  Each other
part is a runtime-checkable protocol of its own, so
:class:`~conntrack_lib.helper.ConntrackHelper` asks ``isinstance(executor,
ExactDeleter)`` and gets a typed object, or falls back to the CLI.  An
attribute set to None (``create_flows = None``) reads as missing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from conntrack_lib.capabilities import Release
    from conntrack_lib.commands import Command, CreateCommand, EventsCommand, ListCommand
    from conntrack_lib.models import Entry
    from conntrack_lib.results import Result


class CommandRunner(Protocol):
    """Runs command objects: the least an executor must do."""

    def execute(
        self, command: Command, *, namespace: str | None = None, timeout: float | None = None
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
        self, command: ListCommand, *, namespace: str | None = None,
        timeout: float | None = None
    ) -> Iterator[str]:
        """Run a list command and yield its stdout lines.

        :param command: a :class:`~conntrack_lib.commands.ListCommand`.
        :param namespace: network namespace to run in, or None for this
            process's own.
        :param timeout: seconds the command may take; None for the
            ``[conntrack_lib] command_timeout`` option.
        :returns: an iterator of the lines.
        :raises InvalidArgumentError: for another command or a bad namespace.
        :raises CommandError: (also from the iteration) when conntrack fails.
        """


@runtime_checkable
class ReleaseReporter(Protocol):
    """Names the release of the conntrack binary it runs."""

    def release(self) -> Release:
        """Return the release of the conntrack binary this executor runs.

        :returns: the release as ``(major, minor, patch)``.
        :raises UnsupportedReleaseError: the binary names no release, or one
            older than 1.4.5.
        :raises CommandError: when ``conntrack --version`` fails.
        """


@runtime_checkable
class EventStreamer(Protocol):
    """Streams the lines of an event capture as they arrive."""

    def iter_events(
        self, command: EventsCommand, *, namespace: str | None = None,
        timeout: float | None = None
    ) -> Iterator[str]:
        """Run an events command and yield its lines as conntrack prints them.

        :param command: a :class:`~conntrack_lib.commands.EventsCommand`.
        :param namespace: network namespace to run in, or None for this
            process's own.
        :param timeout: seconds the command may take; None for the
            command's duration plus a grace period.
        :returns: an iterator of the event lines; closing it stops the capture.
        :raises InvalidArgumentError: for another command or a bad namespace.
        :raises CommandError: (from the iteration) when conntrack fails.
        """


@runtime_checkable
class ExactDeleter(Protocol):
    """Deletes exact flows over ctnetlink, one kernel request a flow."""

    def delete_flows(self, entries: Sequence[Entry], *,
                     namespace: str | None = None) -> list[int]:
        """Delete exact flows; return one errno per flow.

        0 means deleted, 2 (ENOENT) already gone, anything else an error.

        :param entries: the :class:`~conntrack_lib.models.Entry` flows.
        :param namespace: network namespace of the table, or None for this
            process's own.
        :returns: one errno per flow, in order.
        :raises InvalidArgumentError: for a bad namespace name.
        :raises ConntrackUnavailableError: when the kernel refuses the socket.
        """


@runtime_checkable
class FlowCreator(Protocol):
    """Creates flows over ctnetlink (IPCTNL_MSG_CT_NEW), without a process."""

    def create_flows(self, creates: Sequence[CreateCommand], *,
                     namespace: str | None = None) -> list[int]:
        """Create flows; return one errno per flow.

        0 means created, 17 (EEXIST) exists already, anything else an error
        (:func:`conntrack_lib.netlink_create.create_error` types it).

        :param creates: :class:`~conntrack_lib.commands.CreateCommand`
            objects without NAT or labels.
        :param namespace: network namespace of the table, or None for this
            process's own.
        :returns: one errno per command, in order.
        :raises InvalidArgumentError: a command netlink create cannot encode,
            or a bad namespace name.
        :raises ConntrackUnavailableError: when the kernel refuses the socket.
        """


@runtime_checkable
class Executor(CommandRunner, ReleaseReporter, EventStreamer, ExactDeleter, FlowCreator,
               Protocol):
    """Runs commands, streams, names its release, deletes and creates exactly.

    :class:`~conntrack_lib.executor.PrivsepExecutor`,
    :class:`~conntrack_lib.executor.ProcessExecutor` and
    :class:`~conntrack_lib.testing.FakeConntrack` implement it; mypy checks
    that they do.
    """


__all__ = ["CommandRunner", "EventStreamer", "ExactDeleter", "Executor", "FlowCreator",
           "ReleaseReporter"]
