"""``conntrack-lib events``: watch conntrack events as they happen.

A command of the ``conntrack-lib`` application, registered through the
``conntrack_lib.cli`` entry point namespace.  It prints each event the
moment it arrives, either as one JSON object per line (``-f json``, easy to
pipe into ``jq``, with the fields of ``list -f json``) or as a fixed-width
table row (``-f table``, with the columns of ``list``).  It stops
after ``--duration`` seconds, after ``--count`` events, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import TextIO

from cliff import command as cliff_command

from conntrack_lib import cli, cli_format
from conntrack_lib.models import Event

EVENT_TYPES = ("NEW", "UPDATE", "DESTROY")
#: The table shows the event type, then the columns of ``list`` without --long.
_TABLE_HEADER = ("TYPE", *(name.upper() for name in cli_format.SHORT_COLUMNS))
_TABLE_LINE = "{:<8} {:<6} {:<39} {:<39} {:<12} {:<12} {:>5} {:>10} {:>7}"


def event_record(event: Event) -> dict[str, cli_format.Json]:
    """Return ``event`` as a JSON-ready dict: its type, origin and entry fields."""
    cells = cli_format.entry_row(event.entry)
    entry = {name: cli_format.machine_value(cell)
             for name, cell in zip(cli_format.ENTRY_COLUMNS, cells, strict=True)}
    return {"type": event.type, "timestamp": event.timestamp, "portid": event.portid,
            "progname": event.progname, "entry": entry}


def table_row(event: Event) -> str:
    """Return ``event`` as one fixed-width line of the table format.

    The cells are those of ``list -f value``: ports as ``SPORT->DPORT``,
    nothing where a flow has no value.
    """
    cells = (cli_format.plain_value(cli_format.entry_cell(event.entry, name))
             for name in cli_format.SHORT_COLUMNS)
    return _TABLE_LINE.format(event.type, *cells).rstrip()


def write_events(events: Iterable[Event], out: TextIO, fmt: str) -> int:
    """Write each event to ``out`` as it arrives and flush; return how many."""
    written = 0
    if fmt == "table":
        out.write(_TABLE_LINE.format(*_TABLE_HEADER).rstrip() + "\n")
        out.flush()
    for event in events:
        line = table_row(event) if fmt == "table" else json.dumps(
            event_record(event), separators=(",", ":"))
        out.write(line + "\n")
        out.flush()
        written += 1
    return written


class WatchEvents(cli._ErrorsMixin, cliff_command.Command):  # type: ignore[misc]
    """Watch conntrack events matching the filters and print them as they arrive."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        """Return the parser: filters, event types, duration, count and format."""
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("-e", "--event", dest="event_types", action="append",
                            choices=EVENT_TYPES, metavar="TYPE",
                            help="event type to watch: NEW, UPDATE or DESTROY "
                                 "(repeatable; default: all)")
        parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                            help="stop after SECONDS (default 10, or 3600 with --count)")
        parser.add_argument("--count", type=int, default=None, metavar="N",
                            help="stop after N events")
        parser.add_argument("-f", "--format", dest="fmt", choices=("json", "table"),
                            default="table",
                            help="one JSON object per line, or a table row per event")
        cli.add_filter_options(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        """Stream the events to stdout; Ctrl-C ends the watch cleanly."""
        events = self.app.helper().events(
            duration=parsed_args.duration, count=parsed_args.count,
            event_mask=tuple(parsed_args.event_types or ("ALL",)),
            **cli.filters_from(parsed_args))
        try:
            write_events(events, self.app.stdout, parsed_args.fmt)
        except KeyboardInterrupt:
            pass
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        return cli.EXIT_OK
