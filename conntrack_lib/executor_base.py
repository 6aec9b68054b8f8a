"""What both executors share: the options, netlink chunking.

:class:`~conntrack_lib.executing.Executor` is the protocol
:class:`~conntrack_lib.helper.ConntrackHelper` depends on; :class:`Configured`
reads the options both executors use and runs a command with retries; the
chunk helpers keep every exact delete or netlink create far below
oslo.privsep's message limit.  The executors live
in :mod:`conntrack_lib.process_executor` and
:mod:`conntrack_lib.privsep_executor`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from oslo_config import cfg
from oslo_log import log as logging

from conntrack_lib import capabilities, commands, netns, opts
from conntrack_lib import exceptions as exc
from conntrack_lib.commands import Command, CreateCommand
from conntrack_lib.executing import Executor as Executor  # noqa: PLC0414 - its old home
from conntrack_lib.models import Entry
from conntrack_lib.results import Result, run_with_retries
from conntrack_lib.values import PrimitiveDict

LOG = logging.getLogger(__name__)

_LIST_KINDS = frozenset({"list"})


class Configured:
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
        self, command: Command, *, namespace: str | None = None, timeout: float | None = None
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

    def _execute_once(self, command: Command, namespace: str | None, limit: float) -> Result:
        raise NotImplementedError

    def timeout_for(self, command: Command, timeout: float | None) -> float:
        """Return the timeout: explicit, or the option (long enough for events).

        :param command: the command to run.
        :param timeout: the caller's timeout in seconds, or None.
        :returns: ``timeout``, else the ``command_timeout`` option, raised
            for an events command to its duration plus a grace period.
        """
        if timeout is not None:
            return float(timeout)
        limit = float(self.group.command_timeout)
        if isinstance(command, commands.EventsCommand):
            limit = max(limit, float(command.duration) + netns.EVENTS_GRACE)
        return limit


def require_events(command: Command) -> commands.EventsCommand:
    """Return ``command`` if it is an events command.

    :raises InvalidArgumentError: for any other command.
    """
    if not isinstance(command, commands.EventsCommand):
        raise exc.InvalidArgumentError("command", command.kind,
                                       "iter_events needs an events command")
    return command


def require_list(command: Command) -> None:
    """Refuse any command but a list.

    :raises InvalidArgumentError: for any other command.
    """
    if command.kind not in _LIST_KINDS:
        raise exc.InvalidArgumentError("command", command.kind, "iter_lines needs a list command")


#: Flows per privsep call of an exact delete: keeps each message far below
#: oslo.privsep's 100 MiB reply limit (a flow is ~150 bytes on the wire).
EXACT_DELETE_CHUNK = 100_000

#: One flow or create command in the primitive form that crosses the wire.
Primitive = PrimitiveDict
_Item = TypeVar("_Item")
_Sent = TypeVar("_Sent")


def _flow_primitives(entries: Sequence[Entry]) -> list[Primitive]:
    from conntrack_lib import netlink  # noqa: PLC0415 - only exact deletes need it

    return [netlink.flow_to_primitive(entry) for entry in entries]


def _create_primitives(creates: Sequence[CreateCommand]) -> list[Primitive]:
    from conntrack_lib import netlink_create  # noqa: PLC0415 - only netlink creates need it

    return [netlink_create.to_primitive(command) for command in creates]


def _netlink_refused(err: OSError, name: str = "delete") -> exc.ConntrackUnavailableError:
    return exc.ConntrackUnavailableError(("netlink", name), None, "",
                                         f"ctnetlink socket refused: {err}")


def delete_in_chunks(entries: Iterable[Entry],
                     send: Callable[[list[Primitive]], Sequence[int]]) -> list[int]:
    """Send exact flows in chunks of EXACT_DELETE_CHUNK; return one errno per flow.

    :raises ConntrackUnavailableError: when the kernel refuses the socket.
    """
    return netlink_in_chunks(entries, _flow_primitives, send, "delete")


def create_in_chunks(creates: Iterable[CreateCommand],
                     send: Callable[[list[Primitive]], Sequence[int]]) -> list[int]:
    """Send create commands in chunks of EXACT_DELETE_CHUNK; return one errno per flow.

    Every command is turned into primitives (and so checked) before the first
    chunk is sent.

    :raises ConntrackUnavailableError: when the kernel refuses the socket.
    """
    return netlink_in_chunks(_create_primitives(list(creates)), list, send, "create")


def netlink_in_chunks(items: Iterable[_Item],
                      to_primitives: Callable[[Sequence[_Item]], list[_Sent]],
                      send: Callable[[list[_Sent]], Sequence[int]],
                      name: str) -> list[int]:
    """Send ``items`` in chunks of EXACT_DELETE_CHUNK; return one errno per item.

    :param to_primitives: turns one chunk into what ``send`` takes.
    :param send: sends one chunk, returns one errno per item.
    :param name: the operation, for errors and the log.
    :raises ConntrackUnavailableError: when the kernel refuses the socket.
    """
    pending = list(items)
    outcomes: list[int] = []
    for start in range(0, len(pending), EXACT_DELETE_CHUNK):
        try:
            outcomes.extend(send(to_primitives(pending[start:start + EXACT_DELETE_CHUNK])))
        except OSError as err:
            raise _netlink_refused(err, name) from err
    LOG.debug("netlink %s of %d flows: %d answered a nonzero errno", name, len(pending),
              sum(1 for errno_ in outcomes if errno_))
    return outcomes


