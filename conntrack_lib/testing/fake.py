"""An in-memory conntrack that behaves like the 1.4.7 command line.

:class:`FakeConntrack` is an executor: it takes the same command objects as
the real executors, works on an in-memory table per network namespace, and
produces the ``(exit_code, stdout, stderr)`` that ``/usr/sbin/conntrack``
would print.  That triple then goes through the one exit-code interpreter of
:mod:`conntrack_lib.executor`, so callers see the same results and the same
exception types as against the kernel.

The semantics are the measured ones of conntrack-tools 1.4.7 on Linux 6.x,
including the quirks a caller can trip over: ``-D`` ignores negated status
words, ``-U`` cannot reach flows in non-zero zones, ``-F -f FAMILY`` empties
the whole table, ``-G`` cannot see a flow through its reply tuple.

This module holds the executor and its command dispatch; the table and flow
model it works on is :mod:`conntrack_lib.testing.fake_table`.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from conntrack_lib import capabilities, commands, constants, executor, netlink_create
from conntrack_lib import exceptions as exc
from conntrack_lib import netns as netns_names
from conntrack_lib.models import Entry, FlowTuple
from conntrack_lib.testing.fake_table import (
    Flow,
    KernelError,
    Table,
    apply_update,
    compile_filters,
    direction_tuple,
    flow_from_entry,
    flow_from_fields,
    label_set,
    protocol_number,
    render,
    to_entry,
    unchanged,
    update_values,
)
from conntrack_lib.values import FieldMap

if TYPE_CHECKING:
    from conntrack_lib.executing import Executor

#: Every message conntrack itself prints starts with this.
PREFIX = "conntrack v1.4.7 (conntrack-tools): "
#: 1.4.7 leaves one netlink ACK unread per ``-U`` request; the socket
#: overflows after this many.
UPDATE_ACK_LIMIT = 256

ENOENT = 2
EEXIST = 17
EINVAL = 22

#: A clock: a callable returning seconds, like :func:`time.monotonic`.
Clock = Callable[[], float]


# ---------------------------------------------------------------------------
# Commands: each returns (exit_code, stdout, stderr) as conntrack prints them


@dataclasses.dataclass(slots=True)
class Output:
    """What one conntrack process printed, and its exit status."""

    exit_code: int = constants.EXIT_OK
    stdout: list[str] = dataclasses.field(default_factory=list)
    stderr: list[str] = dataclasses.field(default_factory=list)

    def line(self, text: str) -> None:
        """Print one data line on stdout."""
        self.stdout.append(text + "\n")

    def message(self, text: str, *, raw: bool = False) -> None:
        """Print one message on stderr, prefixed unless ``raw``."""
        self.stderr.append(("" if raw else PREFIX) + text + "\n")

    def summary(self, count: int, word: str, *, zero_fails: bool) -> None:
        """Print the "N flow entries have been <word>." line and set the exit code."""
        self.message(f"{count} flow entries have been {word}.")
        if count == 0 and zero_fails:
            self.exit_code = constants.EXIT_FAILURE

    def fail(self, error: KernelError) -> None:
        """Print a kernel error and exit 1."""
        self.message(f"Operation failed: {error}")
        self.exit_code = constants.EXIT_FAILURE


class Kernel:
    """The fake kernel side: tables per namespace and the commands on them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tables: dict[str | None, Table] = {None: Table()}
        self._ids = itertools.count(0x10000000)
        self._keys = itertools.count()
        self._portids = itertools.count(4000)

    def table(self, namespace: str | None) -> Table:
        """Return the namespace's table after dropping expired entries."""
        table = self.tables[namespace]
        table.expire(self.clock())
        return table

    def next_id(self) -> int:
        """Return a fresh entry id."""
        return next(self._ids)

    def event(self, table: Table, kind: str, flow: Flow) -> None:
        """Record the event a user-space request triggers."""
        body = render(flow, self.clock(), use=None, event=True)
        tag = f" [USERSPACE] portid={next(self._portids)} progname=conntrack"
        table.events.append((kind, flow.copy(), f"{'[' + kind + ']':>9} {body}{tag}"))

    # -- single commands ------------------------------------------------------

    def run(self, command: commands.Command, namespace: str | None) -> Output:
        """Run one command against the namespace's table."""
        table = self.table(namespace)
        out = Output()
        # The fake's behaviour per class: what conntrack 1.4.7 does with it.
        match command:
            case commands.ListCommand():
                self._run_list(table, command, out)
            case commands.GetCommand():
                self._run_get(table, command, out)
            case commands.CountCommand():
                out.line(str(len(table.flows)))
            case commands.StatsCommand():
                self._run_stats(table, out)
            case commands.EventsCommand():
                self._run_events(table, command, out)
            case commands.BatchCommand():
                self._run_batch(table, command, out)
            case _:
                try:
                    self._change(table, command, out, alone=True)
                except KernelError as error:
                    out.fail(error)
        return out

    def _run_list(self, table: Table, command: commands.ListCommand, out: Output) -> None:
        fields = command.fields
        fields.pop("output", None)
        output = command.output
        if "xml" in output:
            raise NotImplementedError("FakeConntrack renders text output only")
        now = self.clock()
        match = compile_filters(fields, kind="list", now=now)
        shown = [f for f in table.live() if match(f)]
        for flow in shown:
            out.line(render(flow, now, output=output))
        out.summary(len(shown), "shown", zero_fails=False)

    def _run_get(self, table: Table, command: commands.GetCommand, out: Output) -> None:
        fields = command.fields
        fields.pop("output", None)
        output = command.output
        now = self.clock()
        try:
            flow, wanted = self._lookup(table, fields)
        except KernelError as error:
            out.fail(error)
            return
        checks: FieldMap = {k: fields[k] for k in ("state", "labels", "id") if k in fields}
        # The lookup finds either direction, but conntrack then compares the
        # original tuple in user space: a reply-tuple hit shows nothing.
        if flow.original != wanted or not compile_filters(checks, kind="list")(flow):
            out.summary(0, "shown", zero_fails=True)
            return
        out.line(render(flow, now, output=output))
        out.summary(1, "shown", zero_fails=True)

    def _lookup(self, table: Table, fields: FieldMap) -> tuple[Flow, FlowTuple]:
        protonum = protocol_number(fields["proto"])
        proto = constants.PROTOCOL_NAMES.get(protonum, "unknown")
        wanted = direction_tuple(fields, "", proto)
        if wanted is None or (wanted.icmp_type is not None
                              and wanted.icmp_type not in constants.ICMP_REPLY_TYPES[proto]):
            # The kernel parses only trackable ICMP types (EINVAL otherwise).
            raise KernelError("invalid parameters")
        family = constants.IPV6 if wanted.src.version == 6 else constants.IPV4
        found = table.find(family, protonum, wanted, lambda _d: 0)
        if found is None:
            raise KernelError("such conntrack doesn't exist")
        return found[0], wanted

    def _change(self, table: Table, command: commands.Command, out: Output, *,
                alone: bool) -> None:
        """Run a command that changes the table, alone or as a ``-R`` line.

        Alone, it prints its summary; a load-file line prints none.

        :raises KernelError: the kernel refused it (a create or an update).
        """
        match command:
            case commands.CreateCommand():
                self.create(table, command.fields)
                if alone:
                    out.summary(1, "created", zero_fails=False)
            case commands.DeleteCommand():
                deleted = self.delete(table, command.fields, out)
                if alone:
                    out.summary(deleted, "deleted", zero_fails=True)
            case commands.UpdateCommand():
                updated = self.update(table, command.match, command.changes, out)
                if alone:
                    out.summary(updated, "updated", zero_fails=True)
            case commands.FlushCommand():
                # 1.4.7 on Linux 6.x: "-F -f FAMILY" empties both families too.
                self.flush(table)
                out.message("connection tracking table has been emptied.")
            case _ if alone:
                raise NotImplementedError(f"FakeConntrack cannot run {command.kind!r} commands")
            case _:
                raise NotImplementedError(f"{command.kind!r} is not a load-file command")

    def _run_stats(self, table: Table, out: Output) -> None:
        counters = {"found": 0, "invalid": 0, "insert": table.inserted, "insert_failed": 0,
                    "drop": 0, "early_drop": 0, "error": 0, "search_restart": 0,
                    "clash_resolve": 0, "chaintoolong": 0}
        out.line(f"cpu={0:<4}\t" + "".join(f"{k}={v} " for k, v in counters.items()))

    def _run_events(self, table: Table, command: commands.EventsCommand, out: Output) -> None:
        # The fake cannot wait for traffic: -E reports what user space did
        # (and what expired) since the previous -E of the namespace.
        fields = command.fields
        for name in ("event_mask", "output", "duration"):
            fields.pop(name, None)
        masks = set(command.event_mask)
        kinds = {"NEW", "UPDATE", "DESTROY"} if "ALL" in masks else {
            {"UPDATES": "UPDATE"}.get(mask, mask) for mask in masks}
        match = compile_filters(fields, kind="list")
        shown = [line for kind, flow, line in table.events if kind in kinds and match(flow)]
        table.events.clear()
        for line in shown:
            out.line(line)
        out.message(f"{len(shown)} flow events have been shown.")

    def _run_batch(self, table: Table, command: commands.BatchCommand, out: Output) -> None:
        # Everything was validated (parsed) before; lines run in order and
        # the first kernel error stops the rest.  No summary is printed.
        for sub in command:
            try:
                self._change(table, sub, out, alone=False)
            except KernelError as error:
                out.fail(error)
                return

    # -- table operations -----------------------------------------------------

    def create(self, table: Table, fields: FieldMap) -> Flow:
        """Insert the flow ``fields`` describe.

        :raises KernelError: it exists (either tuple, same zone) or is invalid.
        """
        now = self.clock()
        flow = flow_from_fields(fields, now, self.next_id())
        if table.labels_used:
            # Without label storage the kernel drops --label-add silently.
            flow.label_storage = True
            flow.labels = label_set(fields.get("label_add", ()))
        self.insert(table, flow)
        return flow

    def insert(self, table: Table, flow: Flow) -> None:
        """Insert a built flow unless one of its tuples is taken."""
        if table.clashes(flow):
            raise KernelError("Such conntrack exists, try -U to update")
        flow.key = next(self._keys)
        table.add(flow)
        table.inserted += 1
        self.event(table, "NEW", flow)
        table.expire(self.clock())

    def delete(self, table: Table, fields: FieldMap, out: Output) -> int:
        """Delete the matching flows, printing each; return how many."""
        now = self.clock()
        match = compile_filters(fields, kind="delete", now=now)
        victims = [f for f in table.live() if match(f)]
        for flow in victims:
            out.line(render(flow, now))
            table.remove(flow)
            self.event(table, "DESTROY", flow)
        return len(victims)

    def update(self, table: Table, match: FieldMap, changes: FieldMap,
               out: Output) -> int:
        """Apply ``changes`` as 1.4.7's ``-U`` does; return how many were counted.

        Each request names the original tuple without a zone, so it reaches
        the zone-0 entry holding that tuple (ENOENT for zoned flows).

        :raises KernelError: the netlink socket overflowed (over 256 requests).
        """
        now = self.clock()
        selected = compile_filters(match, kind="update", now=now)
        dump = [flow.copy() for flow in table.live() if selected(flow)]
        counted = sent = 0
        for snapshot in dump:
            values = update_values(snapshot, changes)
            if unchanged(snapshot, values, now):
                continue
            sent += 1
            if sent > UPDATE_ACK_LIMIT:
                raise KernelError("No buffer space available")
            found = table.find(snapshot.family, snapshot.protonum, snapshot.original,
                               lambda _d: 0)
            if found is None:
                out.message("Operation failed: No such file or directory", raw=True)
                continue
            error = apply_update(found[0], values, now)
            table.schedule(found[0].deadline)
            if error:
                out.message(error, raw=True)
            counted += 1
            self.event(table, "UPDATE", found[0])
            out.line(render(found[0], now, use=2))
        return counted

    def delete_exact(self, table: Table, entry: Entry) -> int:
        """Delete the flow a ctnetlink request for ``entry`` reaches; return the errno."""
        if entry.orig_zone is not None:
            zone = entry.orig_zone
        elif entry.reply_zone is not None:
            zone = 0
        else:
            zone = entry.zone
        found = table.find(entry.family, entry.protonum, entry.original, lambda _d: zone)
        if found is None:
            return ENOENT
        table.remove(found[0])
        self.event(table, "DESTROY", found[0])
        return 0

    def flush(self, table: Table) -> None:
        """Empty the table."""
        for flow in table.live():
            self.event(table, "DESTROY", flow)
        table.clear()


# ---------------------------------------------------------------------------
# The executor


class FakeClock:
    """A clock that moves only when a test advances it.

    :param start: the first reading, in seconds.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __repr__(self) -> str:
        return f"FakeClock({self.now!r})"

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``.

        :param seconds: how far to move, 0 or more.
        :raises ValueError: for a negative step (time does not run back).
        """
        if seconds < 0:
            raise ValueError(f"cannot move a clock back by {seconds!r} s")
        self.now += seconds


class FakeConntrack:
    """An executor that runs command objects against in-memory tables.

    Each network namespace has its own table; ``None`` is the caller's own
    namespace and always exists.  Results and errors come from the same
    :func:`conntrack_lib.results.interpret` the real executors use.

    Differences a test may notice: entries are listed in insertion order
    (the kernel uses hash order; rely on neither), ``-o xml`` is not
    rendered, labels are kept only on entries seeded with labels or created
    after :meth:`use_labels` (as the kernel keeps them only while a ruleset
    uses them), and ``-E`` returns at once
    with the events that user space (and expiry) caused since the previous
    ``-E`` instead of waiting for traffic.

    :param clock: returns the time in seconds; entry timeouts count down
        with it (defaults to :func:`time.monotonic`).
    :param namespaces: names of the network namespaces that exist.
    """

    def __init__(self, clock: Clock | None = None,
                 namespaces: Iterable[str] | None = None) -> None:
        self._kernel = Kernel(clock or time.monotonic)
        #: Every command run (or attempted), in order.
        self.calls: list[commands.Command] = []
        #: How many conntrack processes a real executor would have started.
        self.processes = 0
        #: How many flows were named in :meth:`delete_flows` and
        #: :meth:`create_flows` calls.
        self.netlink_requests = 0
        self._failures: list[BaseException] = []
        for name in namespaces or ():
            self.add_namespace(name)

    def __repr__(self) -> str:
        names = sorted(n for n in self._kernel.tables if n is not None)
        return f"FakeConntrack(namespaces={names!r})"

    @property
    def clock(self) -> Clock:
        """Return the clock entry timeouts count down with."""
        return self._kernel.clock

    # -- namespaces -----------------------------------------------------------

    def add_namespace(self, name: str) -> None:
        """Create the (empty) network namespace ``name``; existing ones stay.

        :param name: the namespace name.
        :raises InvalidArgumentError: for a bad namespace name.
        """
        self._kernel.tables.setdefault(netns_names.validate_name(name), Table())

    def remove_namespace(self, name: str) -> None:
        """Delete the namespace ``name`` and its table; a missing one is no error.

        :param name: the namespace name.
        :raises InvalidArgumentError: for a bad namespace name.
        """
        self._kernel.tables.pop(netns_names.validate_name(name), None)

    def use_labels(self, namespace: str | None = None) -> None:
        """Act as if a ruleset that sets labels were loaded in ``namespace``.

        The kernel keeps labels only on flows created while such a rule
        exists (any ``ct label set`` rule in nftables, or iptables'
        ``connlabel --set``); before, a create's ``label_add`` is dropped
        without an error and ``-U`` of labels fails.  Flows created from now
        on keep their labels.

        :param namespace: the namespace; ``None`` for the caller's own.
        :raises KeyError: the namespace does not exist.
        """
        self._kernel.tables[namespace].labels_used = True

    @property
    def namespaces(self) -> list[str]:
        """Return the names of the namespaces that exist (without ``None``)."""
        return sorted(n for n in self._kernel.tables if n is not None)

    # -- the Executor protocol ------------------------------------------------

    def release(self) -> capabilities.Release:
        """Return the release the fake behaves as: the newest measured one.

        :returns: the release as ``(major, minor, patch)``.
        """
        return capabilities.LATEST.release

    def execute(self, command: commands.Command, *, namespace: str | None = None,
                timeout: float | None = None) -> executor.Result:
        """Run ``command`` and return its :class:`~conntrack_lib.results.Result`.

        :param command: a command object of :mod:`conntrack_lib.commands`.
        :param namespace: the namespace whose table it runs on, or None for
            the caller's own.
        :param timeout: accepted for the protocol's sake; the fake never
            waits.
        :returns: the result a real executor would return.
        :raises CommandError: (and subclasses) as the real executors do,
            or the error given to :meth:`fail_next`.
        :raises InvalidArgumentError: a bad namespace name.
        :raises NotImplementedError: an output format or filter the fake lacks.
        """
        cmd = self._start(command, namespace)
        out = self._kernel.run(command, namespace)
        return executor.interpret(cmd, out.exit_code, "".join(out.stdout),
                                  "".join(out.stderr), command)

    def iter_lines(self, command: commands.ListCommand, *, namespace: str | None = None,
                   timeout: float | None = None) -> Iterator[str]:
        """Run a list command and return an iterator over its stdout lines.

        :param command: a :class:`~conntrack_lib.commands.ListCommand`.
        :param namespace: the namespace whose table it lists, or None for
            the caller's own.
        :param timeout: accepted for the protocol's sake; the fake never
            waits.
        :returns: an iterator of the lines.
        :raises InvalidArgumentError: not a list command, or a bad namespace
            name.
        :raises CommandError: (and subclasses) as :meth:`execute`.
        """
        if not isinstance(command, commands.ListCommand):
            raise exc.InvalidArgumentError("command", command.kind,
                                           "iter_lines needs a list command")
        result = self.execute(command, namespace=namespace, timeout=timeout)
        return iter(result.stdout.splitlines())

    def iter_events(self, command: commands.EventsCommand, *, namespace: str | None = None,
                    timeout: float | None = None) -> Iterator[str]:
        """Run an events command and return an iterator over its lines.

        The fake does not wait: the lines are the events user space (and
        expiry) caused since the previous capture of the namespace.

        :param command: an :class:`~conntrack_lib.commands.EventsCommand`.
        :param namespace: the namespace whose events it reports, or None
            for the caller's own.
        :param timeout: accepted for the protocol's sake; the fake never
            waits.
        :returns: an iterator of the event lines.
        :raises InvalidArgumentError: not an events command, or a bad
            namespace name.
        :raises CommandError: (and subclasses) as :meth:`execute`.
        """
        if not isinstance(command, commands.EventsCommand):
            raise exc.InvalidArgumentError("command", command.kind,
                                           "iter_events needs an events command")
        result = self.execute(command, namespace=namespace, timeout=timeout)
        return iter(result.stdout.splitlines())

    def _start(self, command: commands.Command, namespace: str | None) -> tuple[str, ...]:
        """Account for one conntrack process; return its argv or raise."""
        argv = (constants.CONNTRACK_BINARY, *command.argv())
        if namespace is not None:
            path = netns_names.namespace_path(namespace)
            if namespace not in self._kernel.tables:
                raise exc.NamespaceNotFoundError(
                    argv, None, "", f"network namespace {namespace!r} not found in "
                    f"{constants.NETNS_RUN_DIR}")
            argv = (netns_names.NSENTER, f"--net={path}", "--", *argv)
        self.calls.append(command)
        self.processes += 1
        if self._failures:
            raise self._failures.pop(0)
        return argv

    def delete_flows(self, entries: Sequence[Entry], *,
                     namespace: str | None = None) -> list[int]:
        """Delete exact flows as ctnetlink requests would; return one errno per flow.

        Each request names the original tuple and one zone (the orig-zone,
        0 for a reply-zone flow, else the zone), like
        :mod:`conntrack_lib.netlink`.  No conntrack process is involved.

        :param entries: the flows to delete.
        :param namespace: the namespace of the table, or None for the
            caller's own.
        :returns: 0 for a deleted flow, 2 (ENOENT) for one already gone.
        :raises NamespaceNotFoundError: when ``namespace`` does not exist.
        """
        table = self._table(namespace)
        self.netlink_requests += len(entries)
        if self._failures:
            raise self._failures.pop(0)
        return [self._kernel.delete_exact(table, entry) for entry in entries]

    def create_flows(self, creates: Sequence[commands.CreateCommand], *,
                     namespace: str | None = None) -> list[int]:
        """Create flows as IPCTNL_MSG_CT_NEW requests would; return one errno per flow.

        Every command is checked first (NAT and labels are refused, as the
        real executors refuse them); then each flow is created unless one of
        its tuples exists in its zone.  No conntrack process is involved.

        :param creates: :class:`~conntrack_lib.commands.CreateCommand`
            objects.
        :param namespace: the namespace of the table, or None for the
            caller's own.
        :returns: 0 for a created flow, 17 (EEXIST) for one that exists, 22
            (EINVAL) for one the kernel would refuse.
        :raises InvalidArgumentError: a command netlink create cannot encode.
        :raises NamespaceNotFoundError: when ``namespace`` does not exist.
        """
        table = self._table(namespace)
        for command in creates:
            netlink_create.to_primitive(command)
        self.netlink_requests += len(creates)
        if self._failures:
            raise self._failures.pop(0)
        return [self._create_errno(table, command) for command in creates]

    def _create_errno(self, table: Table, command: commands.CreateCommand) -> int:
        try:
            self._kernel.create(table, command.fields)
        except KernelError as error:
            return EEXIST if "exists" in str(error) else EINVAL
        return 0

    # -- inspection and seeding for tests -------------------------------------

    def fail_next(self, error: BaseException) -> None:
        """Make the next command raise ``error`` (after it is counted as a call).

        The netlink calls (:meth:`delete_flows`, :meth:`create_flows`) raise
        it too.  Several calls queue several errors, raised in order.

        :param error: the exception to raise.
        """
        self._failures.append(error)

    def entries(self, namespace: str | None = None) -> list[Entry]:
        """Return the live entries of a namespace, as a parser would read them.

        :param namespace: the namespace, or None for the caller's own.
        :returns: the entries, in insertion order.
        :raises NamespaceNotFoundError: when ``namespace`` does not exist.
        """
        now = self._kernel.clock()
        return [to_entry(flow, now) for flow in self._table(namespace).live()]

    def add_entry(self, entry: Entry, namespace: str | None = None) -> None:
        """Insert ``entry`` directly (no call, no process), e.g. to seed a test.

        Its status, mark, zones, counters and labels are kept; a missing
        timeout becomes
        :data:`~conntrack_lib.testing.fake_table.DEFAULT_SEED_TIMEOUT`.

        :param entry: the flow to insert.
        :param namespace: the namespace, or None for the caller's own.
        :raises EntryExistsError: a flow with one of its tuples exists.
        :raises NamespaceNotFoundError: when ``namespace`` does not exist.
        """
        table = self._table(namespace)
        flow = flow_from_entry(entry, self._kernel.clock(), self._kernel.next_id())
        try:
            self._kernel.insert(table, flow)
        except KernelError as error:
            raise exc.EntryExistsError((), constants.EXIT_FAILURE, "",
                                       f"Operation failed: {error}") from None

    def clear(self, namespace: str | None = None) -> None:
        """Empty one namespace's table (no call, no process).

        :param namespace: the namespace, or None for the caller's own.
        :raises NamespaceNotFoundError: when ``namespace`` does not exist.
        """
        self._table(namespace).clear()

    def _table(self, namespace: str | None) -> Table:
        try:
            return self._kernel.table(namespace)
        except KeyError:
            raise exc.NamespaceNotFoundError(
                (), None, "", f"network namespace {namespace!r} not found") from None


if TYPE_CHECKING:
    def _implements_executor(fake: FakeConntrack) -> Executor:
        """Return ``fake`` as an Executor: mypy checks that it is one."""
        return fake


__all__ = ["PREFIX", "FakeClock", "FakeConntrack", "KernelError", "render", "to_entry"]
