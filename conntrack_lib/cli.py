"""The ``conntrack-lib`` operator command line, built on cliff.

Every command goes through :class:`~conntrack_lib.helper.ConntrackHelper`,
so the CLI validates values exactly as the library does and runs the same
commands an agent would.  Listings are Lister commands on cliff's
formatters, with this CLI's own table, value, csv and json, and rows are
produced lazily from one ``conntrack -L`` so a large table is not held
twice.  ``list`` shows a short set of columns unless ``--long`` or a
structured format (json, yaml) asks for every field.

Exit codes: 0 success, 1 conntrack or runtime failure, 2 invalid
arguments, 3 permission denied, 4 network namespace not found, 5 the
operator declined a confirmation.

This module holds the cliff application and its command classes; the
columns, the row builder, the formatters and the confirmation and
progress mixin are in :mod:`conntrack_lib.cli_format`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

from cliff import app as cliff_app
from cliff import command as cliff_command
from cliff import commandmanager, lister, show
from oslo_config import cfg

from conntrack_lib import constants, netns
from conntrack_lib import exceptions as exc

# Some of these names are imported only so that they stay importable from
# cli.py, where they were before the formatting helpers moved.
from conntrack_lib.cli_format import (  # noqa: F401
    ENTRY_COLUMNS,
    PROGRESS_AFTER,
    PROGRESS_EVERY,
    SHORT_COLUMNS,
    Aborted,
    ArgvColumn,
    Cell,
    ConfirmMixin,
    CountersColumn,
    FlowTupleColumn,
    PairsColumn,
    PlainFormattersMixin,
    StreamingJSONFormatter,
    WordsColumn,
    entry_row,
    field_names,
    list_columns,
)
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import CpuStats, Entry
from conntrack_lib.values import FilterValue
from conntrack_lib.zones import MemoryZoneStore

if TYPE_CHECKING:
    from conntrack_lib.commands import Command
    from conntrack_lib.executing import Executor

PROG = "conntrack-lib"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PERMISSION = 3
EXIT_NO_NAMESPACE = 4
EXIT_ABORTED = 5


#: Builds the executor from the ``--executor`` choice, the configuration
#: and the ``--namespace`` value.
ExecutorFactory = Callable[[str, cfg.ConfigOpts, "str | None"], "Executor"]

#: Bit of CAP_NET_ADMIN in the capability sets of /proc/self/status.
_CAP_NET_ADMIN_BIT = 12


# -- filter options ----------------------------------------------------------


def _int_or_text(text: str) -> int | str:
    """Return ``text`` as an int when it is one; the library refuses the rest.

    Leaving a bad value as text lets the library's validator name the field
    in its one-line error instead of argparse printing its usage.
    """
    for base in (10, 0):  # decimal first, so "010" is ten; then 0x.., 0o..
        try:
            return int(text, base)
        except ValueError:
            continue
    return text


def _proto(text: str) -> int | str:
    return int(text) if text.isdigit() else text


#: What a filter option's text becomes before the library validates it.
_Converted = int | str | tuple[int | str, int | str]


def _mark(text: str) -> _Converted:
    if "/" in text:
        value, mask = text.split("/", 1)
        return (_int_or_text(value), _int_or_text(mask))
    return _int_or_text(text)


@dataclasses.dataclass(frozen=True)
class _FilterOption:
    """One filter keyword of the library and how the CLI spells it."""

    keyword: str
    metavar: str
    help: str
    convert: Callable[[str], _Converted] | None = None
    repeat: bool = False
    optional_value: bool = False
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        """Return the option as typed on the command line."""
        return "--" + ("label" if self.keyword == "labels" else self.keyword).replace("_", "-")


FILTER_OPTIONS: tuple[_FilterOption, ...] = (
    _FilterOption("family", "FAMILY", "address family: ipv4 or ipv6", choices=constants.FAMILIES),
    _FilterOption("proto", "PROTO", "protocol name or number", _proto),
    _FilterOption("src", "IP[/PREFIX]", "original source address or network"),
    _FilterOption("dst", "IP[/PREFIX]", "original destination address or network"),
    _FilterOption("reply_src", "IP", "reply source address"),
    _FilterOption("reply_dst", "IP", "reply destination address"),
    _FilterOption("sport", "PORT", "original source port (needs --proto)", _int_or_text),
    _FilterOption("dport", "PORT", "original destination port (needs --proto)",
                  _int_or_text),
    _FilterOption("reply_sport", "PORT", "reply source port (needs --proto)", _int_or_text),
    _FilterOption("reply_dport", "PORT", "reply destination port (needs --proto)",
                  _int_or_text),
    _FilterOption("zone", "ZONE", "conntrack zone of both directions", _int_or_text),
    _FilterOption("orig_zone", "ZONE", "zone of the original direction", _int_or_text),
    _FilterOption("reply_zone", "ZONE", "zone of the reply direction", _int_or_text),
    _FilterOption("mark", "VALUE[/MASK]", "connection mark, optionally masked", _mark),
    _FilterOption("status", "FLAG", "status flag such as ASSURED or UNREPLIED; repeatable",
                  repeat=True),
    _FilterOption("state", "STATE", "protocol state such as ESTABLISHED (needs --proto)"),
    _FilterOption("labels", "LABEL", "connection label name; repeatable", repeat=True),
    _FilterOption("src_nat", "IP", "source-NATed flows, optionally to IP",
                  optional_value=True),
    _FilterOption("dst_nat", "IP", "destination-NATed flows, optionally to IP",
                  optional_value=True),
    _FilterOption("any_nat", "IP", "NATed flows of either kind, optionally with IP",
                  optional_value=True),
    _FilterOption("icmp_type", "TYPE", "ICMP type (needs --proto icmp/icmpv6)",
                  _int_or_text),
    _FilterOption("icmp_code", "CODE", "ICMP code (needs --proto icmp/icmpv6)",
                  _int_or_text),
    _FilterOption("icmp_id", "ID", "ICMP identifier (needs --proto icmp/icmpv6)",
                  _int_or_text),
)


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per filter keyword of the library to ``parser``."""
    group = parser.add_argument_group("filters", "select flows; all given filters must match")
    for opt in FILTER_OPTIONS:
        # None is argparse's own default of each of these settings.
        group.add_argument(opt.flag, dest="filter_" + opt.keyword, help=opt.help,
                           metavar=opt.metavar, choices=opt.choices or None,
                           type=opt.convert or str, action="append" if opt.repeat else "store",
                           nargs="?" if opt.optional_value else None,
                           const=True if opt.optional_value else None)


def filters_from(parsed_args: argparse.Namespace) -> dict[str, FilterValue]:
    """Return the library filter keywords the operator set."""
    filters: dict[str, FilterValue] = {}
    for opt in FILTER_OPTIONS:
        value = getattr(parsed_args, "filter_" + opt.keyword, None)
        if value is not None:
            filters[opt.keyword] = tuple(value) if opt.repeat else value
    return filters


def describe_filters(filters: Mapping[str, FilterValue]) -> str:
    """Return the filters as ``key=value`` words for a prompt."""
    if not filters:
        return "every flow"
    return " ".join(f"{k}={v}" for k, v in filters.items())


# -- errors ------------------------------------------------------------------


def exit_code_for(error: BaseException) -> int:
    """Return the exit code the CLI reports for ``error``."""
    if isinstance(error, Aborted):
        return EXIT_ABORTED
    if isinstance(error, exc.PermissionDeniedError):
        return EXIT_PERMISSION
    if isinstance(error, exc.NamespaceNotFoundError):
        return EXIT_NO_NAMESPACE
    if isinstance(error, ValueError | cfg.Error):
        return EXIT_USAGE
    return EXIT_FAILURE


def describe_error(error: BaseException) -> str:
    """Return ``error`` as one line for the operator."""
    if isinstance(error, exc.CommandError):
        lines = [line.strip() for line in error.stderr.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit code {error.exit_code}"
        text = f"{type(error).__name__}: {detail}"
    elif isinstance(error, Aborted):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())


# -- privileges --------------------------------------------------------------


def has_net_admin(status_path: str = "/proc/self/status") -> bool:
    """Tell whether this process holds CAP_NET_ADMIN in its effective set."""
    try:
        with open(status_path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_NET_ADMIN_BIT & 1)
    except (OSError, ValueError, IndexError):
        return os.geteuid() == 0
    return os.geteuid() == 0


def default_executor_factory(kind: str, conf: cfg.ConfigOpts,
                             namespace: str | None = None) -> Executor:
    """Build the executor named by ``--executor``.

    The checks here fail fast with a clear message, before a privsep
    daemon starts or a process runs.

    :raises NamespaceNotFoundError: ``namespace`` does not exist.
    :raises PermissionDeniedError: ``process`` without CAP_NET_ADMIN, or
        ``privsep`` as a non-root user with no ``helper_command``.
    """
    from conntrack_lib import executor  # noqa: PLC0415 - keeps --help fast

    if namespace is not None:
        netns.ensure_exists(namespace, (PROG, "--namespace", namespace))
    if kind == "process":
        if not has_net_admin():
            raise exc.PermissionDeniedError(
                (PROG,), None, "", "--executor process needs root or CAP_NET_ADMIN")
        return executor.ProcessExecutor(conf=conf)
    if os.geteuid() != 0 and not _helper_command(conf):
        raise exc.PermissionDeniedError(
            (PROG,), None, "", "--executor privsep needs root, or helper_command in the "
            "[conntrack_lib_privileged] section of a --config-file")
    return executor.PrivsepExecutor(conf=conf)


def _helper_command(conf: cfg.ConfigOpts) -> str | None:
    try:
        value = conf.conntrack_lib_privileged.helper_command
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return None
    return str(value) if value else None


# -- the application ----------------------------------------------------------


class ConntrackApp(cliff_app.App):  # type: ignore[misc]
    """The ``conntrack-lib`` application.

    :param executor_factory: builds the executor from the ``--executor``
        choice, the configuration and the namespace; tests pass one returning a
        :class:`~conntrack_lib.testing.FakeConntrack`.
    :param conf: the configuration object to parse ``--config-file`` into;
        the global ``cfg.CONF`` by default, which the privsep context reads.
    """

    NAME = PROG

    def __init__(
        self,
        executor_factory: ExecutorFactory | None = None,
        conf: cfg.ConfigOpts | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        manager = commandmanager.CommandManager("conntrack_lib.cli")
        for name, command_class in COMMANDS.items():
            manager.add_command(name, command_class)
        super().__init__(
            description="Inspect and clean the Linux conntrack table of a network "
            "namespace through conntrack_lib.", version=_version(),
            command_manager=manager, stdin=stdin, stdout=stdout, stderr=stderr,
            deferred_help=True,
        )
        self._executor_factory = executor_factory or default_executor_factory
        self._conf = conf if conf is not None else cfg.CONF
        self._helper: ConntrackHelper | None = None
        self._conf_loaded = False
        self._log_handlers: list[logging.Handler] = []
        self._root_level: int | None = None

    def build_option_parser(self, description: str | None, version: str | None,
                            argparse_kwargs: dict[str, object] | None = None
                            ) -> argparse.ArgumentParser:
        """Return cliff's parser plus the namespace, executor and config options."""
        kwargs = {"prog": PROG, **(argparse_kwargs or {})}
        parser: argparse.ArgumentParser = super().build_option_parser(
            description, version, kwargs)
        parser.add_argument("--namespace", metavar="NS", default=None,
                            help="network namespace to work in (default: this one)")
        parser.add_argument("--executor", choices=("privsep", "process"), default="privsep",
                            help="run conntrack through the privsep daemon (default) or "
                            "directly, for a process that already holds CAP_NET_ADMIN")
        parser.add_argument("--config-file", dest="config_files", action="append",
                            metavar="PATH", default=None,
                            help="oslo.config file with [conntrack_lib] and "
                            "[conntrack_lib_privileged] options; repeatable")
        return parser

    def run(self, argv: list[str]) -> int:
        """Run one command line; return its exit code."""
        if not argv:
            argv = ["help"]
        try:
            code = int(super().run(argv))
        finally:
            self._detach_logging()
        # Global options without a command: the help was shown instead.
        return EXIT_USAGE if self.interactive_mode else code

    def run_subcommand(self, argv: list[str]) -> int:
        """Run one command; an unknown command exits 2, with --debug too."""
        try:
            return int(super().run_subcommand(argv))
        except ValueError as error:
            # cliff raises only with --debug, and only for an unknown command;
            # without --debug it logs the same error and returns 2.
            return report_error(self, error)

    def configure_logging(self) -> None:
        """Add cliff's console handler, remembering it to remove it after the run."""
        root = logging.getLogger("")
        before = list(root.handlers)
        self._root_level = root.level
        super().configure_logging()
        self._log_handlers = [h for h in root.handlers if h not in before]
        # The library and privsep log their routine steps at INFO; an
        # operator sees them with -v, and warnings always.
        level = {0: logging.WARNING, 1: logging.WARNING, 2: logging.INFO}.get(
            self.options.verbose_level, logging.DEBUG)
        for handler in self._log_handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.setLevel(level)
        # cliff opens the root logger to DEBUG; a privsep daemon then ships
        # every debug record to us, even while this process exits.
        root.setLevel(min(h.level for h in self._log_handlers) if self._log_handlers
                      else level)

    def _detach_logging(self) -> None:
        root = logging.getLogger("")
        for handler in self._log_handlers:
            root.removeHandler(handler)
            handler.close()
        self._log_handlers = []
        if self._root_level is not None:
            root.setLevel(self._root_level)
            self._root_level = None

    def interact(self) -> None:
        """Print the help: this tool has no interactive shell."""
        self.run_subcommand(["help"])

    def load_config(self) -> cfg.ConfigOpts:
        """Register the library's options and parse the config files, once."""
        from conntrack_lib import opts  # noqa: PLC0415

        if not self._conf_loaded:
            opts.register_opts(self._conf)
            files = self.options.config_files
            self._conf(args=[], project="conntrack_lib",
                       default_config_files=list(files) if files else [])
            self._conf_loaded = True
        return self._conf

    def helper(self) -> ConntrackHelper:
        """Return the helper of this run, building it on first use."""
        if self._helper is None:
            namespace = self.options.namespace
            if namespace is not None:
                netns.validate_name(namespace)
            conf = self.load_config()
            executor = self._executor_factory(self.options.executor, conf, namespace)
            self._helper = ConntrackHelper(
                namespace=namespace, executor=executor,
                batch_size=conf.conntrack_lib.batch_size,
                exact_delete_backend=conf.conntrack_lib.exact_delete_backend,
                # The CLI allocates no zone; only `zones` reads the store.
                zone_store=MemoryZoneStore(),
            )
        return self._helper

    def rendered_argv(self, command: Command) -> tuple[str, ...]:
        """Return the argv the executor would run for ``command``."""
        conf = self.load_config()
        return netns.build_argv(command, conf.conntrack_lib.conntrack_binary,
                                self.options.namespace)


def _version() -> str:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version("conntrack_lib")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- commands ----------------------------------------------------------------


class _ErrorsMixin:
    """Turn library errors into one stderr line and an exit code."""

    app: ConntrackApp

    def run(self, parsed_args: argparse.Namespace) -> int:
        """Run the command; report a failure as one line and its exit code.

        ``--debug`` prints the traceback before that line and changes
        nothing else: the exit code stays the one of the error.
        """
        try:
            return int(super().run(parsed_args))  # type: ignore[misc]
        except (exc.ConntrackError, Aborted, cfg.Error) as error:
            return report_error(self.app, error)


def report_error(app: ConntrackApp, error: BaseException) -> int:
    """Write ``error`` as one stderr line (after its traceback with --debug).

    Call it from an ``except`` block: the traceback is the one being handled.
    Return the exit code of ``error``.
    """
    if app.options.debug:
        app.stderr.write(traceback.format_exc())
    app.stderr.write(f"{PROG}: error: {describe_error(error)}\n")
    app.stderr.flush()
    return exit_code_for(error)


class ListFlows(_ErrorsMixin, PlainFormattersMixin, lister.Lister):  # type: ignore[misc]
    """List the flows matching the filters, one row per flow."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        """Return the parser with --long and every filter option."""
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("--long", action="store_true",
                            help="show every field of a flow in the table, csv and value "
                            "formats (json and yaml always do)")
        add_filter_options(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], Iterator[tuple[Cell, ...]]]:
        """Return the columns and a lazy stream of rows from one dump."""
        columns = list_columns(parsed_args.long, parsed_args.formatter, parsed_args.columns)
        entries = self.app.helper().iter_entries(**filters_from(parsed_args))
        # Pull the first entry now, so that a failure to start the dump is
        # reported before the formatter prints anything.
        first = next(entries, None)
        return columns, _rows(first, entries, columns)


def _rows(first: Entry | None, rest: Iterator[Entry],
          columns: Sequence[str]) -> Iterator[tuple[Cell, ...]]:
    if first is None:
        return
    yield entry_row(first, columns)
    for entry in rest:
        yield entry_row(entry, columns)


class CountFlows(_ErrorsMixin, PlainFormattersMixin, show.ShowOne):  # type: ignore[misc]
    """Count the flows matching the filters (all flows without filters)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        """Return the parser with every filter option."""
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        add_filter_options(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Cell, ...]]:
        """Return the count."""
        return ("count",), (self.app.helper().count(**filters_from(parsed_args)),)


class DeleteFlows(ConfirmMixin, _ErrorsMixin, PlainFormattersMixin,
                  show.ShowOne):  # type: ignore[misc]
    """Delete the flows matching the filters (every flow without filters)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        """Return the parser with every filter option, --yes and --dry-run."""
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        add_filter_options(parser)
        self.add_confirm_options(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Cell, ...]]:
        """Return how many flows went, or the argv of a dry run."""
        from conntrack_lib import (  # noqa: PLC0415
            commands,
            matching,
            planner,
        )

        filters = filters_from(parsed_args)
        request = planner.Request.build(filters)  # validates before anything runs
        # Request.build sets the DeleteCommand it validated just above.
        command: Command = request.command or commands.DeleteCommand(**filters)
        if parsed_args.dry_run and not request.cli_ok:
            # conntrack's own filter would get this wrong: the library dumps
            # and matches with its filter engine, then deletes exactly.
            cli, engine = request.split()
            command = commands.ListCommand(**cli, output=("id", *matching.needs(engine)))
            names, values = self.dry_run(command)
            return (*names, "then"), (*values, f"delete exactly the listed flows matching "
                                      f"{describe_filters(engine)}")
        if parsed_args.dry_run:
            return self.dry_run(command)
        helper = self.app.helper()
        if not parsed_args.yes:
            matched = helper.count(**filters)
            self.confirm(f"delete {matched} flows matching {describe_filters(filters)}"
                         f"{_where(self.app)}?")
        deleted = self.with_progress("deleting flows",
                                     lambda: helper.delete_entries(**filters))
        return ("deleted",), (deleted,)


class FlushFlows(ConfirmMixin, _ErrorsMixin, PlainFormattersMixin,
                  show.ShowOne):  # type: ignore[misc]
    """Delete every flow of one zone, or of the whole table with --all."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        """Return the parser with --zone or --all, --yes and --dry-run."""
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--zone", type=_int_or_text, metavar="ZONE",
                           help="flush this conntrack zone only")
        which.add_argument("--all", action="store_true",
                           help="flush the whole table (asks for confirmation)")
        self.add_confirm_options(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Cell, ...]]:
        """Return how many flows went, or the argv of a dry run."""
        from conntrack_lib import commands  # noqa: PLC0415

        if parsed_args.all:
            command: Command = commands.FlushCommand()
        else:
            command = commands.DeleteCommand(zone=parsed_args.zone)
        if parsed_args.dry_run:
            return self.dry_run(command)
        helper = self.app.helper()
        # Every command that removes flows asks first, a zone (zone 0 is
        # every unzoned flow) as much as the whole table.
        if parsed_args.all:
            if not parsed_args.yes:
                self.confirm(f"flush all {helper.count()} flows{_where(self.app)}?")
            flushed = self.with_progress("flushing", helper.flush_table)
        else:
            zone = command.get_int("zone")
            if not parsed_args.yes:
                self.confirm(f"flush the {helper.count(zone=zone)} flows of zone "
                             f"{zone}{_where(self.app)}?")
            flushed = self.with_progress("flushing zone",
                                         lambda: helper.flush_table(zone=zone))
        return ("deleted",), (flushed,)


def _where(app: ConntrackApp) -> str:
    namespace = app.options.namespace
    return f" in namespace {namespace}" if namespace else ""


class ShowStats(_ErrorsMixin, PlainFormattersMixin, lister.Lister):  # type: ignore[misc]
    """Show the per-CPU conntrack statistics."""

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], list[tuple[Cell, ...]]]:
        """Return one row per CPU; a column per counter the kernel reports."""
        return stats_table(self.app.helper().stats())


def stats_table(stats: Sequence[CpuStats]) -> tuple[tuple[str, ...], list[tuple[Cell, ...]]]:
    """Return columns and rows for per-CPU statistics."""
    names = list(dict.fromkeys(name for cpu in stats for name in cpu))
    rows: list[tuple[Cell, ...]] = [(cpu.cpu, *(cpu.get(name) for name in names))
                                    for cpu in stats]
    return ("cpu", *names), rows


class ListZones(_ErrorsMixin, PlainFormattersMixin, lister.Lister):  # type: ignore[misc]
    """Show the zones of a zone store and the live flows of each zone."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        """Return the parser with --store."""
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("--store", metavar="PATH",
                            help="the zone store: an SQLiteZoneStore database, or the JSON "
                            "file of the deprecated FileZoneStore; defaults to the "
                            "[conntrack_lib] zone_store_path option")
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], list[tuple[Cell, ...]]]:
        """Return key, zone, state and live flows, counted from one dump."""
        from conntrack_lib.zones import read_store  # noqa: PLC0415

        path = parsed_args.store or self.app.load_config().conntrack_lib.zone_store_path
        if not path:
            raise exc.InvalidArgumentError(
                "--store", path, "give --store or set [conntrack_lib] zone_store_path")
        snapshot = read_store(path)
        if snapshot is None:
            raise exc.ZoneStoreError(path, "no such file")
        flows = flows_per_zone(self.app.helper().iter_entries())
        rows: list[tuple[Cell, ...]] = [
            (key, zone, "allocated", flows.get(zone, 0))
            for key, zone in sorted(snapshot.zones.items(), key=lambda kv: (kv[1], kv[0]))
        ]
        rows += [(None, zone, "held", flows.get(zone, 0)) for zone in sorted(snapshot.held)]
        return ("key", "zone", "state", "flows"), rows


def flows_per_zone(entries: Iterable[Entry]) -> dict[int, int]:
    """Return how many flows each non-zero zone holds.

    A flow counts once for every distinct zone it names (``zone``,
    ``orig_zone``, ``reply_zone``).
    """
    counts: dict[int, int] = {}
    for entry in entries:
        for zone in {entry.zone, entry.orig_zone, entry.reply_zone}:
            if zone:
                counts[zone] = counts.get(zone, 0) + 1
    return counts


class RunDemo(_ErrorsMixin, cliff_command.Command):  # type: ignore[misc]
    """Run the demo in a throwaway network namespace (needs root)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        """Return the parser with --ports."""
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("--ports", type=int, default=36,
                            help="simulated ports (default 36)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        """Run :func:`conntrack_lib.demo.main`; return its exit code."""
        from conntrack_lib import demo  # noqa: PLC0415

        argv = ["--ports", str(parsed_args.ports), "--executor", self.app.options.executor]
        return int(demo.main(argv, out=self.app.stdout))


COMMANDS: Mapping[str, type[cliff_command.Command]] = {
    "list": ListFlows,
    "count": CountFlows,
    "delete": DeleteFlows,
    "flush": FlushFlows,
    "stats": ShowStats,
    "zones": ListZones,
    "demo": RunDemo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``conntrack-lib``; return the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    # oslo.privsep imports eventlet, which warns on import; an operator
    # cannot act on that line, so keep stderr for real errors.
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    with contextlib.suppress(BrokenPipeError):
        return ConntrackApp().run(args)
    return 141


if __name__ == "__main__":
    sys.exit(main())
