"""Output formatting and confirmation helpers of the ``conntrack-lib`` command line.

The cliff command classes of :mod:`conntrack_lib.cli` build on this module:
the cliff columns that show an :class:`~conntrack_lib.models.Entry` field as
text for a human and as structured data for json and yaml, the formatters
(a table that prints nothing for no rows, value and csv that print plain
tokens, JSON written as rows arrive), the columns and row builder of
``list``, and the mixin that asks the operator before flows are destroyed
and shows the elapsed time of a long delete on a terminal.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import shlex
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, TextIO, TypeAlias, Union

from cliff import columns as cliff_columns
from cliff.formatters import base as cliff_base
from cliff.formatters import json_format, shell, table, value
from stevedore import ExtensionManager
from stevedore.extension import Extension

from conntrack_lib.exceptions import InvalidArgumentError
from conntrack_lib.models import Counters, Entry, FlowTuple

if TYPE_CHECKING:
    import argparse

    from conntrack_lib.cli import ConntrackApp
    from conntrack_lib.commands import Command

#: Seconds a delete runs before a progress line appears on a terminal.
PROGRESS_AFTER = 1.0
#: Seconds between two refreshes of the progress line.
PROGRESS_EVERY = 0.5


class Aborted(Exception):  # noqa: N818 - an outcome, not an error of the library
    """The operator declined, or could not be asked for, a confirmation."""


# -- columns -----------------------------------------------------------------

#: One cell of a row: a plain value, or a column that cliff shows per format.
Cell: TypeAlias = str | int | float | cliff_columns.FormattableColumn | None
#: A value json and yaml show: what :func:`json.dumps` writes.
Json: TypeAlias = Union[str, int, float, list["Json"], dict[str, "Json"], None]  # noqa: UP007


def field_names(model: type[FlowTuple | Counters | Entry]) -> tuple[str, ...]:
    """Return the field names of a model class, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(model))


_TUPLE_FIELDS = field_names(FlowTuple)
_COUNTER_FIELDS = field_names(Counters)


class FlowTupleColumn(cliff_columns.FormattableColumn):  # type: ignore[misc]
    """Show a :class:`~conntrack_lib.models.FlowTuple` as text, or as a dict for json and yaml."""

    def human_readable(self) -> str:
        """Return the tuple as ``src:port -> dst:port``."""
        return str(self._value)

    def machine_readable(self) -> dict[str, Json]:
        """Return every field of the tuple; addresses as strings."""
        flow: FlowTuple = self._value
        data: dict[str, Json] = {name: getattr(flow, name) for name in _TUPLE_FIELDS}
        data["src"] = str(flow.src)
        data["dst"] = str(flow.dst)
        return data


class WordsColumn(cliff_columns.FormattableColumn):  # type: ignore[misc]
    """Show a set of words (status flags, labels) sorted."""

    def human_readable(self) -> str:
        """Return the words joined by commas."""
        return ",".join(self.machine_readable())

    def machine_readable(self) -> list[str]:
        """Return the words as a sorted list."""
        return sorted(self._value)


class CountersColumn(cliff_columns.FormattableColumn):  # type: ignore[misc]
    """Show the packet and byte counters, absent when accounting is off."""

    def human_readable(self) -> str:
        """Return the counters as one short phrase, or nothing."""
        return "" if self._value is None else str(self._value)

    def machine_readable(self) -> dict[str, int] | None:
        """Return the four counters as a dict, or None."""
        counters: Counters | None = self._value
        if counters is None:
            return None
        return {name: int(getattr(counters, name)) for name in _COUNTER_FIELDS}


class PairsColumn(cliff_columns.FormattableColumn):  # type: ignore[misc]
    """Show ``key=value`` pairs the parser kept aside."""

    def human_readable(self) -> str:
        """Return the pairs as ``key=value`` words."""
        return " ".join(f"{k}={v}" for k, v in self._value)

    def machine_readable(self) -> dict[str, str]:
        """Return the pairs as a dict."""
        return dict(self._value)


class ArgvColumn(cliff_columns.FormattableColumn):  # type: ignore[misc]
    """Show an argv as a command line a shell would read back the same."""

    def human_readable(self) -> str:
        """Return the argv quoted for a POSIX shell."""
        return shlex.join(self._value)

    def machine_readable(self) -> list[str]:
        """Return the argv as a list of strings."""
        return list(self._value)


class StreamingJSONFormatter(json_format.JSONFormatter):  # type: ignore[misc]
    """Write a JSON list row by row instead of building it first.

    cliff's own JSON formatter keeps a dict per row and writes the document
    token by token; for a 200,000-flow table that is hundreds of megabytes
    and minutes.  This one prints the same document as the rows arrive.
    """

    def emit_list(self, column_names: Sequence[str], data: Iterable[Sequence[Cell]],
                  stdout: TextIO, parsed_args: argparse.Namespace) -> None:
        """Write ``data`` as a JSON list of objects, one row at a time."""
        indent = None if parsed_args.noindent else 2
        rows = 0
        for row in data:
            item = {name: machine_value(cell)
                    for name, cell in zip(column_names, row, strict=True)}
            text = json.dumps(item, indent=indent)
            if indent is None:
                stdout.write(("[" if rows == 0 else ", ") + text)
            else:
                stdout.write(("[\n" if rows == 0 else ",\n") + textwrap.indent(text, "  "))
            rows += 1
        if rows == 0:
            stdout.write("[]\n")
        else:
            stdout.write("]\n" if indent is None else "\n]\n")


def machine_value(cell: Cell) -> Json:
    """Return ``cell`` as json and yaml show it (a column's structured value)."""
    if isinstance(cell, cliff_columns.FormattableColumn):
        data: Json = cell.machine_readable()
        return data
    return cell


def plain_value(cell: Cell | Json) -> str:
    """Return ``cell`` as one plain token of the value and csv formats.

    Nothing (None, an empty list or dict) is the empty string, a list is
    its items joined by spaces and a dict its ``key=value`` pairs joined by
    spaces, leaving out the keys without a value: never a Python repr.
    """
    data = machine_value(cell) if not isinstance(cell, list | dict) else cell
    if data is None:
        return ""
    if isinstance(data, Mapping):
        return " ".join(f"{key}={plain_value(item)}" for key, item in data.items()
                        if item is not None)
    if isinstance(data, list | tuple | set | frozenset):
        return " ".join(plain_value(item) for item in data)
    return str(data)


def _table_cell(cell: Cell) -> Cell:
    return "" if cell is None else cell


class PlainValueFormatter(value.ValueFormatter):  # type: ignore[misc]
    """Print cells as plain tokens separated by spaces, one row per line."""

    def emit_list(self, column_names: Sequence[str], data: Iterable[Sequence[Cell]],
                  stdout: TextIO, parsed_args: argparse.Namespace) -> None:
        """Write each row as its plain tokens joined by spaces."""
        for row in data:
            stdout.write(" ".join(plain_value(cell) for cell in row) + "\n")

    def emit_one(self, column_names: Sequence[str], data: Sequence[Cell],
                 stdout: TextIO, parsed_args: argparse.Namespace) -> None:
        """Write each value as a plain token on its own line."""
        for cell in data:
            stdout.write(plain_value(cell) + "\n")


class PlainCSVFormatter(cliff_base.ListFormatter, cliff_base.SingleFormatter):  # type: ignore[misc]
    """Print a header line, then rows of plain tokens, as CSV."""

    def add_argument_group(self, parser: argparse.ArgumentParser) -> None:
        """Add cliff's --quote option."""
        group = parser.add_argument_group("CSV Formatter")
        group.add_argument("--quote", choices=sorted(_QUOTE_MODES), dest="quote_mode",
                           default="nonnumeric",
                           help="when to include quotes, defaults to nonnumeric")

    def emit_list(self, column_names: Sequence[str], data: Iterable[Sequence[Cell]],
                  stdout: TextIO, parsed_args: argparse.Namespace) -> None:
        """Write the column names, then one line per row."""
        writer = csv.writer(stdout, quoting=_QUOTE_MODES[parsed_args.quote_mode],
                            lineterminator=os.linesep, escapechar="\\")
        writer.writerow(column_names)
        for row in data:
            writer.writerow([_csv_cell(cell) for cell in row])

    def emit_one(self, column_names: Sequence[str], data: Sequence[Cell],
                 stdout: TextIO, parsed_args: argparse.Namespace) -> None:
        """Write the column names, then the one row of values."""
        self.emit_list(column_names, [data], stdout, parsed_args)


#: csv's quoting modes (the four every supported Python has), by --quote name.
_QUOTE_MODES: Mapping[str, Literal[0, 1, 2, 3]] = {
    "all": csv.QUOTE_ALL, "minimal": csv.QUOTE_MINIMAL, "nonnumeric": csv.QUOTE_NONNUMERIC,
    "none": csv.QUOTE_NONE}


def _csv_cell(cell: Cell) -> str | int | float:
    # Numbers stay numbers, so that --quote nonnumeric leaves them bare.
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        return cell
    return plain_value(cell)


class QuietTableFormatter(table.TableFormatter):  # type: ignore[misc]
    """cliff's table, printing nothing for no rows and blanks for no value."""

    def emit_list(self, column_names: Sequence[str], data: Iterable[Sequence[Cell]],
                  stdout: TextIO, parsed_args: argparse.Namespace) -> None:
        """Write the table; write nothing at all when there is no row."""
        rows = iter(data)
        first = next(rows, None)
        if first is None and not parsed_args.print_empty:
            return
        cells = (tuple(_table_cell(cell) for cell in row)
                 for row in itertools.chain([first] if first is not None else [], rows))
        super().emit_list(column_names, cells, stdout, parsed_args)

    def emit_one(self, column_names: Sequence[str], data: Sequence[Cell],
                 stdout: TextIO, parsed_args: argparse.Namespace) -> None:
        """Write the Field/Value table, with blanks for no value."""
        super().emit_one(column_names, [_table_cell(cell) for cell in data], stdout,
                         parsed_args)


class PlainShellFormatter(shell.ShellFormatter):  # type: ignore[misc]
    """cliff's ``name="value"`` lines, with plain tokens as values."""

    def emit_one(self, column_names: Sequence[str], data: Sequence[Cell],
                 stdout: TextIO, parsed_args: argparse.Namespace) -> None:
        """Write one ``name="value"`` line per column."""
        cells = [cell if isinstance(cell, int | float) else plain_value(cell) for cell in data]
        super().emit_one(column_names, cells, stdout, parsed_args)


#: The formatters a listing takes from this module instead of cliff, by name.
LIST_FORMATTERS: Mapping[str, type[cliff_base.Formatter]] = {
    "table": QuietTableFormatter, "value": PlainValueFormatter, "csv": PlainCSVFormatter,
    "json": StreamingJSONFormatter,
}
#: The formatters a single-record command takes from this module, by name.
ONE_FORMATTERS: Mapping[str, type[cliff_base.Formatter]] = {
    "table": QuietTableFormatter, "value": PlainValueFormatter, "csv": PlainCSVFormatter,
    "shell": PlainShellFormatter,
}


class PlainFormattersMixin:
    """Give a cliff display command this CLI's table, value, csv and json formatters.

    cliff's yaml stays as it is.  A single-record command gains ``csv``,
    which cliff only offers to listings.  An unknown ``-c`` column is an
    invalid argument (exit code 2), not a failure.
    """

    formatter_namespace: str

    def _generate_columns_and_selector(self, parsed_args: argparse.Namespace,
                                       column_names: Sequence[str]
                                       ) -> tuple[list[str], list[bool] | None]:
        """Return cliff's columns and selector; refuse an unknown column."""
        try:
            chosen: tuple[list[str], list[bool] | None] = (
                super()._generate_columns_and_selector(  # type: ignore[misc]
                    parsed_args, column_names))
        except ValueError as error:
            raise InvalidArgumentError(
                "--column", " ".join(parsed_args.columns),
                f"no such column; choose among {' '.join(column_names)}") from error
        return chosen

    def _load_formatter_plugins(self) -> ExtensionManager[cliff_base.Formatter]:
        """Return cliff's formatters with ours in place of theirs."""
        loaded = super()._load_formatter_plugins()  # type: ignore[misc]
        ours = LIST_FORMATTERS if self.formatter_namespace.endswith(".list") else (
            ONE_FORMATTERS)
        extensions = [ext for ext in loaded if ext.name not in ours]
        # An extension made here has no entry point, as in stevedore's own
        # make_test_instance examples.
        extensions += [Extension(name, None, kind, kind())  # type: ignore[arg-type]
                       for name, kind in ours.items()]
        extensions.sort(key=lambda ext: ext.name)
        manager: ExtensionManager[cliff_base.Formatter] = ExtensionManager.make_test_instance(
            extensions, namespace=self.formatter_namespace)
        return manager


#: Every field of Entry, in declaration order: the columns of ``list --long``.
ENTRY_COLUMNS: tuple[str, ...] = field_names(Entry)

_COLUMN_TYPES: Mapping[str, type[cliff_columns.FormattableColumn]] = {
    "original": FlowTupleColumn,
    "reply": FlowTupleColumn,
    "status": WordsColumn,
    "labels": WordsColumn,
    "counters": CountersColumn,
    "extra": PairsColumn,
}


def flow_ports(flow: FlowTuple) -> str:
    """Return the ports of ``flow`` as ``SPORT->DPORT``, or nothing without ports."""
    if flow.sport is None and flow.dport is None:
        return ""
    return f"{_blank(flow.sport)}->{_blank(flow.dport)}"


def _blank(value: object) -> str:
    return "" if value is None else str(value)


#: The columns ``list`` adds to the Entry fields, each read from the original
#: direction: its source and destination addresses and its ports.
_DERIVED_COLUMNS: Mapping[str, Callable[[Entry], str]] = {
    "source": lambda entry: str(entry.original.src),
    "destination": lambda entry: str(entry.original.dst),
    "ports": lambda entry: flow_ports(entry.original),
}

#: The columns of ``list`` without ``--long``, in the table, csv and value formats.
SHORT_COLUMNS: tuple[str, ...] = (
    "proto", "source", "destination", "ports", "state", "zone", "mark", "timeout")

#: Every column ``-c`` can pick: the short ones first, then the other Entry fields.
ALL_COLUMNS: tuple[str, ...] = SHORT_COLUMNS + tuple(
    name for name in ENTRY_COLUMNS if name not in SHORT_COLUMNS)

#: The formats that show every Entry field by default, with its structure.
STRUCTURED_FORMATS = frozenset({"json", "yaml"})


def list_columns(long: bool, formatter: str, selected: Sequence[str]) -> tuple[str, ...]:
    """Return the columns ``list`` produces for its options.

    ``-c`` picks among :data:`ALL_COLUMNS`; ``--long`` and the json and yaml
    formats show every Entry field; the others show :data:`SHORT_COLUMNS`.
    """
    if selected:
        return ALL_COLUMNS
    if long or formatter in STRUCTURED_FORMATS:
        return ENTRY_COLUMNS
    return SHORT_COLUMNS


def entry_cell(entry: Entry, name: str) -> Cell:
    """Return the cell of column ``name`` for ``entry``."""
    derive = _DERIVED_COLUMNS.get(name)
    if derive is not None:
        return derive(entry)
    value: Cell = getattr(entry, name)
    wrap = _COLUMN_TYPES.get(name)
    return wrap(value) if wrap is not None else value


def entry_row(entry: Entry, columns: Sequence[str] = ENTRY_COLUMNS) -> tuple[Cell, ...]:
    """Return the ``list`` row of ``entry``: one cell per column, every Entry field by default."""
    return tuple(entry_cell(entry, name) for name in columns)


# -- confirmation and progress ----------------------------------------------


class ConfirmMixin:
    """Ask the operator before destroying flows."""

    app: ConntrackApp

    @staticmethod
    def add_confirm_options(parser: argparse.ArgumentParser) -> None:
        """Add --yes and --dry-run."""
        parser.add_argument("--yes", "-y", action="store_true",
                            help="do not ask for confirmation")
        parser.add_argument("--dry-run", action="store_true",
                            help="print the conntrack command that would run; delete nothing")

    def confirm(self, question: str) -> None:
        """Return when the operator answers yes on the terminal.

        :raises Aborted: the answer is not yes, or stdin is not a terminal.
        """
        if not self.app.stdin.isatty():
            raise Aborted(f"{question}: stdin is not a terminal, pass --yes to confirm")
        self.app.stderr.write(f"{question} [y/N] ")
        self.app.stderr.flush()
        answer = self.app.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise Aborted("aborted: nothing was deleted")

    def dry_run(self, command: Command) -> tuple[tuple[str, ...], tuple[Cell, ...]]:
        """Return the row of a dry run: the command that would have run.

        ``command`` is the line a shell would read back the same and
        ``argv`` the exact list of arguments (a list in json and yaml).
        """
        argv = self.app.rendered_argv(command)
        return ("dry_run", "command", "argv"), (True, shlex.join(argv), ArgvColumn(argv))

    def with_progress(self, what: str, action: Callable[[], int]) -> int:
        """Run ``action``; on a terminal, show elapsed time while it is long."""
        if not self.app.stderr.isatty():
            return action()
        with Progress(self.app.stderr, what):
            return action()


class Progress:
    """Refresh one stderr line with the elapsed time, after a grace period."""

    def __init__(self, stream: TextIO, what: str) -> None:
        self._stream = stream
        self._what = what
        self._done = threading.Event()
        self._shown = False
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="conntrack-lib-progress")

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()

    def _loop(self) -> None:
        if self._done.wait(PROGRESS_AFTER):
            return
        while not self._done.is_set():
            elapsed = time.monotonic() - self._start
            self._stream.write(f"\r{self._what}... {elapsed:.1f} s")
            self._stream.flush()
            self._shown = True
            self._done.wait(PROGRESS_EVERY)
