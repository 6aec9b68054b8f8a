"""Tests of the ``conntrack-lib`` command line, run through the cliff App.

Every test drives :class:`ConntrackApp` with an in-memory FakeConntrack, so
nothing here needs root or touches a kernel table.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from typing import Any
from unittest import mock

import netaddr
import pytest
import yaml
from cliff.formatters.json_format import JSONFormatter
from oslo_config import cfg

from conntrack_lib import cli, cli_format, constants
from conntrack_lib import exceptions as exc
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Counters, Entry, FlowTuple
from conntrack_lib.testing import FakeClock, FakeConntrack
from conntrack_lib.zones import SQLiteZoneStore, ZoneAllocator

ENTRY_FIELDS = [f.name for f in dataclasses.fields(Entry)]
#: The columns of ``list`` without --long, as the issue asks for them.
SHORT_COLUMNS = ("proto", "source", "destination", "ports", "state", "zone", "mark", "timeout")
TUPLE_FIELDS = [f.name for f in dataclasses.fields(FlowTuple)]

#: The filter keywords of the library's public contract.
FILTER_KEYWORDS = (
    "family", "proto", "src", "dst", "reply_src", "reply_dst", "sport", "dport",
    "reply_sport", "reply_dport", "zone", "orig_zone", "reply_zone", "mark", "status",
    "state", "labels", "src_nat", "dst_nat", "any_nat", "icmp_type", "icmp_code", "icmp_id",
)


class TTY(io.StringIO):
    """A text stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


@dataclasses.dataclass
class Outcome:
    code: int
    out: str
    err: str
    app: cli.ConntrackApp

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def json(self) -> Any:
        return json.loads(self.out)


def tcp(sport: int, zone: int = 0, dst: str = "10.0.0.2") -> dict[str, Any]:
    return {"proto": "tcp", "src": "10.0.0.1", "dst": dst, "sport": sport, "dport": 80,
            "state": "ESTABLISHED", "timeout": 600, "zone": zone}


@pytest.fixture
def fake() -> FakeConntrack:
    """Return a fake table: 3 tcp flows in zone 0, 2 in zone 5, 1 ICMP, 1 IPv6."""
    ct = FakeConntrack(clock=FakeClock(1000.0), namespaces=["blue"])
    helper = ConntrackHelper(executor=ct)
    helper.create_entries([tcp(1000 + i) for i in range(3)]
                          + [tcp(2000 + i, zone=5) for i in range(2)])
    helper.create_entries([
        {"proto": "icmp", "src": "10.0.0.1", "dst": "10.0.0.3", "icmp_type": 8,
         "icmp_code": 0, "icmp_id": 7, "timeout": 30},
        {"proto": "udp", "src": "2001:db8::1", "dst": "2001:db8::2", "sport": 53,
         "dport": 5353, "timeout": 120},
    ])
    return ct


def run(argv: list[str], executor: Any = None, *, stdin: io.StringIO | None = None,
        stderr: io.StringIO | None = None, conf: cfg.ConfigOpts | None = None,
        factory: Any = None) -> Outcome:
    out = io.StringIO()
    err = stderr if stderr is not None else io.StringIO()
    if factory is None:
        def factory(kind: str, conf: cfg.ConfigOpts, namespace: str | None) -> Any:
            return executor
    app = cli.ConntrackApp(executor_factory=factory, conf=conf or cfg.ConfigOpts(),
                           stdin=stdin or io.StringIO(), stdout=out, stderr=err)
    code = app.run(argv)
    return Outcome(code, out.getvalue(), err.getvalue(), app)


# -- list ----------------------------------------------------------------------


def test_list_json_has_every_entry_field_with_proper_types(fake: FakeConntrack) -> None:
    result = run(["list", "-f", "json"], fake)
    assert result.code == 0, result.err
    rows = result.json()
    assert len(rows) == len(fake.entries()) == 7
    for row in rows:
        assert list(row) == ENTRY_FIELDS
        assert list(row["original"]) == TUPLE_FIELDS
        assert isinstance(row["protonum"], int)
        assert isinstance(row["zone"], int)
        assert isinstance(row["status"], list)
        assert isinstance(row["labels"], list)
        assert isinstance(row["original"]["src"], str)
        netaddr.IPAddress(row["reply"]["dst"])  # a real address, as text


def test_list_json_values_match_the_table(fake: FakeConntrack) -> None:
    rows = run(["list", "-f", "json"], fake).json()
    by_sport = {r["original"]["sport"]: r for r in rows if r["proto"] == "tcp"}
    assert by_sport[2001]["zone"] == 5
    assert by_sport[1000]["zone"] == 0
    assert by_sport[1000]["reply"] == {**by_sport[1000]["original"],
                                       "src": "10.0.0.2", "dst": "10.0.0.1",
                                       "sport": 80, "dport": 1000}
    assert by_sport[1000]["state"] == "ESTABLISHED"
    icmp = next(r for r in rows if r["proto"] == "icmp")
    assert (icmp["original"]["icmp_type"], icmp["original"]["icmp_id"]) == (8, 7)
    assert icmp["original"]["sport"] is None
    v6 = next(r for r in rows if r["family"] == "ipv6")
    assert v6["original"]["src"] == "2001:db8::1"


def test_list_filters_reach_the_library(fake: FakeConntrack) -> None:
    rows = run(["list", "-f", "json", "--zone", "5"], fake).json()
    assert sorted(r["original"]["sport"] for r in rows) == [2000, 2001]
    rows = run(["list", "-f", "json", "--family", "ipv6"], fake).json()
    assert [r["proto"] for r in rows] == ["udp"]
    rows = run(["list", "-f", "json", "--proto", "tcp", "--sport", "1001"], fake).json()
    assert [r["original"]["sport"] for r in rows] == [1001]
    rows = run(["list", "-f", "json", "--proto", "icmp", "--icmp-id", "7"], fake).json()
    assert [r["proto"] for r in rows] == ["icmp"]
    rows = run(["list", "-f", "json", "--src", "2001:db8::/64"], fake).json()
    assert [r["family"] for r in rows] == ["ipv6"]


def test_list_counters_labels_and_extra_columns() -> None:
    entry = Entry(
        family="ipv4", proto="udp", protonum=17,
        original=FlowTuple(netaddr.IPAddress("192.0.2.1"), netaddr.IPAddress("192.0.2.2"),
                           sport=1, dport=2),
        reply=FlowTuple(netaddr.IPAddress("192.0.2.2"), netaddr.IPAddress("192.0.2.1"),
                        sport=2, dport=1),
        timeout=50, labels=frozenset({"b", "a"}), status=frozenset({"ASSURED"}),
        counters=Counters(3, 300, 2, 200), extra=(("foo", "bar"),),
    )
    row = dict(zip(cli.ENTRY_COLUMNS, cli.entry_row(entry), strict=True))
    assert row["counters"].machine_readable() == {"orig_packets": 3, "orig_bytes": 300,
                                                  "reply_packets": 2, "reply_bytes": 200}
    assert row["labels"].machine_readable() == ["a", "b"]
    assert row["labels"].human_readable() == "a,b"
    assert row["extra"].machine_readable() == {"foo": "bar"}
    assert row["original"].human_readable() == "192.0.2.1:1 -> 192.0.2.2:2"
    assert row["timeout"] == 50


def test_list_status_filter(fake: FakeConntrack) -> None:
    unreplied = run(["list", "-f", "json", "--status", "UNREPLIED"], fake).json()
    assert len(unreplied) == 7 and all("UNREPLIED" in r["status"] for r in unreplied)
    assured = run(["list", "-f", "json", "--status", "ASSURED"], fake).json()
    assert assured == []


def test_list_csv_value_yaml_and_table(fake: FakeConntrack) -> None:
    table = run(["list", "-f", "table"], fake)
    assert table.code == 0
    assert "| proto" in table.out and "| 2000->80 " in table.out
    long = run(["list", "-f", "table", "--long"], fake)
    assert "| family" in long.out and "10.0.0.1:2000 -> 10.0.0.2:80" in long.out

    rows = list(csv.reader(io.StringIO(run(["list", "-f", "csv"], fake).out)))
    assert rows[0] == list(SHORT_COLUMNS)
    assert len(rows) == 1 + 7

    value = run(["list", "-f", "value", "-c", "proto", "-c", "zone"], fake).out
    assert sorted(value.split("\n")[:-1]) == sorted(
        ["tcp 0"] * 3 + ["tcp 5"] * 2 + ["icmp 0", "udp 0"])

    loaded = yaml.safe_load(run(["list", "-f", "yaml"], fake).out)
    assert len(loaded) == 7
    assert set(loaded[0]) == set(ENTRY_FIELDS)


def test_list_table_shows_the_short_columns_by_default(fake: FakeConntrack) -> None:
    result = run(["list"], fake)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert [c.strip() for c in lines[1].strip("|").split("|")] == list(SHORT_COLUMNS)
    assert max(len(line) for line in lines) < 100
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[3:-1]]
    assert ["tcp", "10.0.0.1", "10.0.0.2", "2001->80", "ESTABLISHED", "5", "0",
            "600"] in cells
    assert ["icmp", "10.0.0.1", "10.0.0.3", "", "", "0", "0", "30"] in cells
    assert ["udp", "2001:db8::1", "2001:db8::2", "53->5353", "", "0", "0", "120"] in cells


def test_list_long_shows_every_field_with_blanks_for_no_value(fake: FakeConntrack) -> None:
    result = run(["list", "--long"], fake)
    lines = result.out.splitlines()
    assert [c.strip() for c in lines[1].strip("|").split("|")] == ENTRY_FIELDS
    assert "None" not in result.out


@pytest.mark.parametrize("fmt", ["json", "yaml"])
@pytest.mark.parametrize("long", [False, True])
def test_list_json_and_yaml_always_show_every_field(fake: FakeConntrack, fmt: str,
                                                     long: bool) -> None:
    result = run(["list", "-f", fmt, *(["--long"] if long else [])], fake)
    rows = yaml.safe_load(result.out)  # JSON is YAML too
    assert len(rows) == 7
    assert all(sorted(row) == sorted(ENTRY_FIELDS) for row in rows)  # yaml sorts keys
    assert all(isinstance(row["original"], dict) and isinstance(row["status"], list)
               for row in rows)


def test_list_column_option_picks_any_column(fake: FakeConntrack) -> None:
    result = run(["list", "-f", "value", "-c", "family", "-c", "ports", "--zone", "5"], fake)
    assert result.out.splitlines() == ["2000->80 ipv4", "2001->80 ipv4"]
    picked = run(["list", "-f", "json", "-c", "source", "-c", "reply", "--zone", "5"],
                 fake).json()
    assert picked[0]["source"] == "10.0.0.1" and picked[0]["reply"]["dport"] == 2000


def _rich_entry() -> Entry:
    return Entry(
        family="ipv4", proto="udp", protonum=17,
        original=FlowTuple(netaddr.IPAddress("192.0.2.1"), netaddr.IPAddress("192.0.2.2"),
                           sport=1, dport=2),
        reply=FlowTuple(netaddr.IPAddress("192.0.2.2"), netaddr.IPAddress("192.0.2.1"),
                        sport=2, dport=1),
        timeout=50, labels=frozenset({"b", "a"}), status=frozenset({"UNREPLIED", "ASSURED"}),
        counters=Counters(3, 300, 2, 200), extra=(("foo", "bar"),), mark=7,
    )


#: The --long row of _rich_entry as plain tokens, and of an entry with no extras.
RICH_TOKENS = [
    "ipv4", "udp", "17", "src=192.0.2.1 dst=192.0.2.2 sport=1 dport=2",
    "src=192.0.2.2 dst=192.0.2.1 sport=2 dport=1", "", "50", "ASSURED UNREPLIED", "7", "0",
    "", "", "", "", "a b", "orig_packets=3 orig_bytes=300 reply_packets=2 reply_bytes=200",
    "", "", "", "", "foo=bar",
]


def test_list_csv_prints_plain_tokens_never_python_reprs() -> None:
    bare = dataclasses.replace(_rich_entry(), labels=frozenset(), status=frozenset(),
                               counters=None, extra=())
    with mock.patch.object(ConntrackHelper, "iter_entries",
                           side_effect=lambda **_: iter([_rich_entry(), bare])):
        result = run(["list", "-f", "csv", "--long"], FakeConntrack())
    assert result.code == 0, result.err
    header, rich, empty = csv.reader(io.StringIO(result.out))
    assert header == ENTRY_FIELDS
    assert rich == RICH_TOKENS
    assert empty[7] == empty[14] == empty[15] == empty[20] == ""
    for text in ("{", "[", "None", "'"):
        assert text not in result.out


def test_list_value_prints_plain_tokens_never_python_reprs() -> None:
    with mock.patch.object(ConntrackHelper, "iter_entries",
                           side_effect=lambda **_: iter([_rich_entry()])):
        long = run(["list", "-f", "value", "--long"], FakeConntrack())
        short = run(["list", "-f", "value"], FakeConntrack())
    assert long.out == " ".join(RICH_TOKENS) + "\n"
    assert short.out == "udp 192.0.2.1 192.0.2.2 1->2  0 7 50\n"


@pytest.mark.parametrize(("fmt", "expected"), [
    ("table", ""), ("value", ""), ("csv", ",".join(f'"{c}"' for c in SHORT_COLUMNS) + "\n"),
    ("json", "[]\n"), ("yaml", "[]\n"),
])
def test_list_of_nothing_prints_nothing_and_exits_0(fmt: str, expected: str) -> None:
    result = run(["list", "-f", fmt], FakeConntrack())
    assert (result.code, result.out, result.err) == (0, expected, "")


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("command", ["list", "count"])
def test_unknown_column_is_an_invalid_argument(fake: FakeConntrack, command: str,
                                               debug: bool) -> None:
    argv = [command, "-c", "bogus"]
    result = run(["--debug", *argv] if debug else argv, fake)
    assert (result.code, result.out) == (cli.EXIT_USAGE, "")
    assert result.err_lines[-1].startswith("conntrack-lib: error: InvalidArgumentError: "
                                           "--column='bogus': no such column")
    assert ("Traceback" in result.err) is debug


def test_list_of_nothing_in_a_table_with_print_empty(fake: FakeConntrack) -> None:
    result = run(["list", "--zone", "9", "--print-empty"], fake)
    assert result.code == 0 and "| proto" in result.out


def test_list_streams_rows_lazily(fake: FakeConntrack) -> None:
    pulled = []
    helper = ConntrackHelper(executor=fake)
    real = helper.iter_entries

    def counting(**filters: Any) -> Any:
        for entry in real(**filters):
            pulled.append(entry)
            yield entry

    app = cli.ConntrackApp(executor_factory=lambda *_: fake, conf=cfg.ConfigOpts(),
                           stdout=io.StringIO(), stderr=io.StringIO())
    app.options = app.parser.parse_args([])
    app._helper = helper
    helper.iter_entries = counting  # type: ignore[method-assign]
    command = cli.ListFlows(app, app.options)
    columns, rows = command.take_action(command.get_parser("list").parse_args([]))
    assert columns == SHORT_COLUMNS
    assert len(pulled) == 1  # only the first entry, to surface errors early
    assert len(list(rows)) == 7
    assert len(pulled) == 7


def test_list_empty_table_prints_empty_json() -> None:
    result = run(["list", "-f", "json"], FakeConntrack())
    assert (result.code, result.json()) == (0, [])


@pytest.mark.parametrize("noindent", [False, True])
@pytest.mark.parametrize("count", [0, 1, 3])
def test_streaming_json_prints_what_cliff_prints(noindent: bool, count: int) -> None:
    rows = [(i, cli.WordsColumn(frozenset({"B", "A"})), None, {"k": "v"})
            for i in range(count)]
    args = argparse.Namespace(noindent=noindent)
    ours, theirs = io.StringIO(), io.StringIO()
    cli.StreamingJSONFormatter().emit_list(("n", "w", "x", "d"), iter(rows), ours, args)
    JSONFormatter().emit_list(("n", "w", "x", "d"), rows, theirs, args)
    assert ours.getvalue() == theirs.getvalue()
    assert len(json.loads(ours.getvalue())) == count


def test_streaming_json_writes_each_row_as_it_arrives() -> None:
    out = io.StringIO()
    written_before = []

    def rows() -> Any:
        for i in range(3):
            written_before.append(len(out.getvalue()))
            yield (i,)

    cli.StreamingJSONFormatter().emit_list(("n",), rows(), out,
                                           argparse.Namespace(noindent=True))
    assert written_before[0] == 0
    assert 0 < written_before[1] < written_before[2]
    assert json.loads(out.getvalue()) == [{"n": 0}, {"n": 1}, {"n": 2}]


# -- filter options ----------------------------------------------------------------


def test_every_filter_keyword_has_an_option() -> None:
    assert {opt.keyword for opt in cli.FILTER_OPTIONS} == set(FILTER_KEYWORDS)
    parser = cli.ListFlows(mock.Mock(), mock.Mock()).get_parser("list")
    flags = {a for action in parser._actions for a in action.option_strings}
    for keyword in FILTER_KEYWORDS:
        flag = "--label" if keyword == "labels" else "--" + keyword.replace("_", "-")
        assert flag in flags, flag


@pytest.mark.parametrize(("argv", "expected"), [
    (["--mark", "0x10/0xff"], {"mark": (16, 255)}),
    (["--mark", "7"], {"mark": 7}),
    (["--status", "ASSURED", "--status", "SEEN_REPLY"], {"status": ("ASSURED", "SEEN_REPLY")}),
    (["--label", "a", "--label", "b"], {"labels": ("a", "b")}),
    (["--src-nat"], {"src_nat": True}),
    (["--dst-nat", "192.0.2.9"], {"dst_nat": "192.0.2.9"}),
    (["--any-nat"], {"any_nat": True}),
    (["--proto", "6"], {"proto": 6}),
    (["--proto", "tcp", "--reply-dport", "443"], {"proto": "tcp", "reply_dport": 443}),
    (["--orig-zone", "3", "--reply-zone", "4"], {"orig_zone": 3, "reply_zone": 4}),
    (["--sport", "abc"], {"sport": "abc"}),  # left for the library to refuse
    (["--zone", "010"], {"zone": 10}),
    (["--mark", "0o17"], {"mark": 15}),
    (["--icmp-type", "-1"], {"icmp_type": -1}),
    ([], {}),
])
def test_filters_from_options(argv: list[str], expected: dict[str, Any]) -> None:
    parser = cli.ListFlows(mock.Mock(), mock.Mock()).get_parser("list")
    assert cli.filters_from(parser.parse_args(argv)) == expected


# -- count ---------------------------------------------------------------------------


def test_count_all_and_filtered(fake: FakeConntrack) -> None:
    assert run(["count", "-f", "json"], fake).json() == {"count": 7}
    assert run(["count", "-f", "json", "--zone", "5"], fake).json() == {"count": 2}
    assert run(["count", "-f", "value", "--family", "ipv6"], fake).out.strip() == "1"


@pytest.mark.parametrize(("fmt", "expected"), [
    ("table", "+-------+-------+\n| Field | Value |\n+-------+-------+\n"
              "| count | 2     |\n+-------+-------+\n"),
    ("value", "2\n"),
    ("csv", '"count"\n2\n'),
    ("json", '{\n  "count": 2\n}\n'),
    ("yaml", "count: 2\n"),
    ("shell", 'count="2"\n'),
])
def test_count_with_every_formatter(fake: FakeConntrack, fmt: str, expected: str) -> None:
    result = run(["count", "--zone", "5", "-f", fmt], fake)
    assert (result.code, result.out, result.err) == (0, expected, "")


def test_count_of_nothing_is_zero(fake: FakeConntrack) -> None:
    result = run(["count", "--zone", "9", "-f", "csv"], fake)
    assert (result.code, result.out) == (0, '"count"\n0\n')


# -- delete --------------------------------------------------------------------------


def test_delete_with_yes_deletes_the_matching_flows(fake: FakeConntrack) -> None:
    result = run(["delete", "--zone", "5", "--yes", "-f", "json"], fake)
    assert (result.code, result.json()) == (0, {"deleted": 2})
    assert sorted(e.zone for e in fake.entries()) == [0] * 5


def test_delete_dry_run_prints_argv_and_deletes_nothing(fake: FakeConntrack) -> None:
    result = run(["delete", "--zone", "5", "--proto", "tcp", "--dry-run", "-f", "json"], fake)
    assert result.code == 0, result.err
    argv = [constants.CONNTRACK_BINARY, "-D", "-p", "tcp", "-w", "5"]
    assert result.json() == {"dry_run": True, "command": " ".join(argv), "argv": argv}
    assert len(fake.entries()) == 7
    value = run(["delete", "--src", "10.0.0.0/8", "--dry-run", "-f", "value", "-c", "command"],
                fake)
    assert value.out.strip() == f"{constants.CONNTRACK_BINARY} -D -s 10.0.0.0/8"
    plain = run(["delete", "--zone", "5", "--dry-run", "-f", "value"], fake)
    binary = constants.CONNTRACK_BINARY
    assert plain.out == f"True\n{binary} -D -w 5\n{binary} -D -w 5\n"
    shell = run(["delete", "--zone", "5", "--dry-run", "-f", "shell"], fake)
    assert shell.out.splitlines()[-1] == f'argv="{binary} -D -w 5"'
    rows = list(csv.reader(io.StringIO(run(["delete", "--zone", "5", "--dry-run", "-f", "csv"],
                                           fake).out)))
    assert rows == [["dry_run", "command", "argv"],
                    ["True", f"{binary} -D -w 5", f"{binary} -D -w 5"]]


def test_delete_dry_run_refuses_invalid_filters(fake: FakeConntrack) -> None:
    result = run(["delete", "--dport", "99999", "--proto", "tcp", "--dry-run"], fake)
    assert result.code == cli.EXIT_USAGE
    assert result.out == ""
    assert len(result.err_lines) == 1 and "dport" in result.err


def test_delete_asks_on_a_terminal_and_stops_on_no(fake: FakeConntrack) -> None:
    result = run(["delete", "--zone", "5"], fake, stdin=TTY("n\n"))
    assert result.code == cli.EXIT_ABORTED
    assert "delete 2 flows matching zone=5? [y/N]" in result.err
    assert "aborted" in result.err_lines[-1]
    assert len(fake.entries()) == 7


def test_delete_asks_on_a_terminal_and_deletes_on_yes(fake: FakeConntrack) -> None:
    result = run(["delete", "--zone", "5", "-f", "value"], fake, stdin=TTY("y\n"))
    assert result.code == 0, result.err
    assert result.out.strip() == "2"
    assert len(fake.entries()) == 5


def test_delete_without_a_terminal_needs_yes(fake: FakeConntrack) -> None:
    result = run(["delete", "--proto", "tcp"], fake, stdin=io.StringIO("y\n"))
    assert result.code == cli.EXIT_ABORTED
    assert len(result.err_lines) == 1 and "--yes" in result.err
    assert len(fake.entries()) == 7


class SlowDeletes(FakeConntrack):
    """A fake whose deletes take a while, like a large table would."""

    def execute(self, command: Any, **kwargs: Any) -> Any:
        if command.kind == "delete":
            time.sleep(0.3)
        return super().execute(command, **kwargs)


def test_delete_shows_progress_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_format, "PROGRESS_AFTER", 0.05)
    monkeypatch.setattr(cli_format, "PROGRESS_EVERY", 0.05)
    slow = SlowDeletes()
    ConntrackHelper(executor=slow).create_entries([tcp(1), tcp(2)])
    tty = TTY()
    result = run(["delete", "--yes", "-f", "value"], slow, stderr=tty)
    assert result.code == 0
    assert "deleting flows... " in result.err
    assert result.err.endswith("\r\033[K")  # the progress line is wiped at the end
    ConntrackHelper(executor=slow).create_entries([tcp(1)])
    quiet = run(["delete", "--yes", "-f", "value"], slow)
    assert quiet.code == 0 and quiet.err == ""


def test_quick_delete_on_a_terminal_shows_no_progress(fake: FakeConntrack) -> None:
    result = run(["delete", "--zone", "5", "--yes"], fake, stderr=TTY())
    assert result.code == 0 and result.err == ""


# -- flush ----------------------------------------------------------------------------


def test_flush_zone(fake: FakeConntrack) -> None:
    result = run(["flush", "--zone", "5", "--yes", "-f", "json"], fake)
    assert (result.code, result.json()) == (0, {"deleted": 2})
    assert all(e.zone == 0 for e in fake.entries())


@pytest.mark.parametrize("zone", ["0", "5"])
def test_flush_zone_needs_confirmation(fake: FakeConntrack, zone: str) -> None:
    # Zone 0 is every unzoned flow: it must ask as delete --zone 0 does.
    before = len(fake.entries())
    refused = run(["flush", "--zone", zone], fake)
    assert refused.code == cli.EXIT_ABORTED and "pass --yes" in refused.err
    said_no = run(["flush", "--zone", zone], fake, stdin=TTY("n\n"))
    assert said_no.code == cli.EXIT_ABORTED and f"flows of zone {zone}?" in said_no.err
    assert len(fake.entries()) == before
    said_yes = run(["flush", "--zone", zone, "-f", "value"], fake, stdin=TTY("y\n"))
    assert said_yes.code == 0 and int(said_yes.out) > 0
    assert len(fake.entries()) == before - int(said_yes.out)


def test_flush_all_needs_confirmation(fake: FakeConntrack) -> None:
    refused = run(["flush", "--all"], fake)
    assert refused.code == cli.EXIT_ABORTED and len(fake.entries()) == 7
    said_no = run(["flush", "--all"], fake, stdin=TTY("no\n"))
    assert said_no.code == cli.EXIT_ABORTED and "flush all 7 flows?" in said_no.err
    assert len(fake.entries()) == 7
    done = run(["flush", "--all", "--yes", "-f", "json"], fake)
    assert (done.code, done.json()) == (0, {"deleted": 7})
    assert fake.entries() == []


def test_flush_dry_run_and_usage(fake: FakeConntrack) -> None:
    dry = run(["flush", "--all", "--dry-run", "-f", "json"], fake)
    assert dry.json()["argv"] == [constants.CONNTRACK_BINARY, "-F"]
    assert len(fake.entries()) == 7
    with pytest.raises(SystemExit) as raised:
        run(["flush"], fake)
    assert raised.value.code == 2


# -- stats and zones ----------------------------------------------------------------


def test_stats_json(fake: FakeConntrack) -> None:
    result = run(["stats", "-f", "json"], fake)
    assert result.code == 0
    rows = result.json()
    assert [r["cpu"] for r in rows] == list(range(len(rows)))
    assert all(isinstance(v, int) for r in rows for v in r.values())
    assert sum(r["insert"] for r in rows) == 7


def test_stats_table_merges_counter_names() -> None:
    from conntrack_lib.models import CpuStats

    columns, rows = cli.stats_table([CpuStats(0, (("found", 1), ("drop", 2))),
                                     CpuStats(1, (("found", 3), ("new", 4)))])
    assert columns == ("cpu", "found", "drop", "new")
    assert rows == [(0, 1, 2, None), (1, 3, None, 4)]


def test_zones_shows_keys_zones_and_live_flows(fake: FakeConntrack, tmp_path: Any) -> None:
    path = tmp_path / "zones.db"
    allocator = ZoneAllocator(zone_range=(5, 9), store=SQLiteZoneStore(path))
    assert allocator.allocate("port-a") == 5
    assert allocator.allocate("port-b") == 6
    allocator.hold([9])
    ConntrackHelper(executor=fake).create_entries([tcp(3000, zone=9)])
    calls = []
    real = fake.iter_lines

    def spy(command: Any, **kwargs: Any) -> Any:
        calls.append(command.kind)
        return real(command, **kwargs)

    fake.iter_lines = spy  # type: ignore[method-assign]
    result = run(["zones", "--store", str(path), "-f", "json"], fake)
    assert result.code == 0, result.err
    assert result.json() == [
        {"key": "port-a", "zone": 5, "state": "allocated", "flows": 2},
        {"key": "port-b", "zone": 6, "state": "allocated", "flows": 0},
        {"key": None, "zone": 9, "state": "held", "flows": 1},
    ]
    assert calls == ["list"]  # one table dump for every zone


def test_zones_missing_store_is_one_line(fake: FakeConntrack, tmp_path: Any) -> None:
    result = run(["zones", "--store", str(tmp_path / "nope.json")], fake)
    assert result.code == cli.EXIT_FAILURE
    assert len(result.err_lines) == 1 and "no such file" in result.err


def test_flows_per_zone_counts_each_zone_once_per_flow() -> None:
    src, dst = netaddr.IPAddress("192.0.2.1"), netaddr.IPAddress("192.0.2.2")
    base: dict[str, Any] = {"family": "ipv4", "proto": "udp", "protonum": 17,
                            "original": FlowTuple(src, dst), "reply": FlowTuple(dst, src)}
    entries = [Entry(**base, zone=3), Entry(**base, orig_zone=3, reply_zone=4),
               Entry(**base)]
    assert cli.flows_per_zone(entries) == {3: 2, 4: 1}


# -- demo -------------------------------------------------------------------------------


def test_demo_runs_the_demo_with_the_chosen_executor(fake: FakeConntrack) -> None:
    with mock.patch("conntrack_lib.demo.main", return_value=3) as demo_main:
        result = run(["--executor", "process", "demo", "--ports", "4"], fake)
    assert result.code == 3
    argv = demo_main.call_args.args[0]
    assert argv == ["--ports", "4", "--executor", "process"]
    assert demo_main.call_args.kwargs["out"] is result.app.stdout


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["list", "--proto", "tcp", "--sport", "abc"],
    ["list", "--zone", "70000"],
    ["list", "--src", "not-an-ip"],
    ["count", "--mark", "1/zz"],
    ["delete", "--status", "BOGUS", "--yes"],
    ["list", "--proto", "tcp", "--state", "NOPE"],
    ["list", "--sport", "80"],  # a port needs a protocol
])
def test_bad_filter_value_is_one_line_and_exit_2(fake: FakeConntrack, argv: list[str]) -> None:
    result = run(argv, fake)
    assert result.code == cli.EXIT_USAGE
    assert result.out == ""
    assert len(result.err_lines) == 1
    assert result.err_lines[0].startswith("conntrack-lib: error: InvalidArgumentError")
    assert len(fake.entries()) == 7


def test_missing_namespace_is_one_line_and_exit_4(fake: FakeConntrack) -> None:
    result = run(["--namespace", "red", "list"], fake)
    assert result.code == cli.EXIT_NO_NAMESPACE
    assert len(result.err_lines) == 1 and "'red'" in result.err


def test_existing_namespace_is_used(fake: FakeConntrack) -> None:
    ConntrackHelper(namespace="blue", executor=fake).create_entries([tcp(4242)])
    rows = run(["--namespace", "blue", "list", "-f", "json"], fake).json()
    assert [r["original"]["sport"] for r in rows] == [4242]


def test_bad_namespace_name_is_refused(fake: FakeConntrack) -> None:
    result = run(["--namespace", "../etc", "list"], fake)
    assert result.code == cli.EXIT_USAGE and len(result.err_lines) == 1


def test_real_namespace_checked_before_any_executor() -> None:
    with mock.patch("conntrack_lib.executor.ProcessExecutor") as made:
        result = run(["--executor", "process", "--namespace", "ctlt-missing-ns", "count"],
                     factory=cli.default_executor_factory)
    assert result.code == cli.EXIT_NO_NAMESPACE and len(result.err_lines) == 1
    made.assert_not_called()


def test_not_root_with_process_executor() -> None:
    with mock.patch.object(cli, "has_net_admin", return_value=False), \
            mock.patch("conntrack_lib.executor.ProcessExecutor") as made:
        result = run(["--executor", "process", "list"], factory=cli.default_executor_factory)
    assert result.code == cli.EXIT_PERMISSION
    assert len(result.err_lines) == 1 and "CAP_NET_ADMIN" in result.err
    made.assert_not_called()


def test_not_root_with_privsep_executor() -> None:
    with mock.patch("os.geteuid", return_value=1000), \
            mock.patch("conntrack_lib.executor.PrivsepExecutor") as made:
        result = run(["count"], factory=cli.default_executor_factory)
    assert result.code == cli.EXIT_PERMISSION
    assert len(result.err_lines) == 1 and "helper_command" in result.err
    made.assert_not_called()


def test_permission_error_from_conntrack(fake: FakeConntrack) -> None:
    fake.fail_next(exc.PermissionDeniedError(
        ("conntrack", "-L"), 1, "",
        "conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted\n"))
    result = run(["list"], fake)
    assert result.code == cli.EXIT_PERMISSION
    assert result.err_lines == [
        "conntrack-lib: error: PermissionDeniedError: conntrack v1.4.7 (conntrack-tools): "
        "Operation failed: Operation not permitted"]


def test_runtime_error_is_exit_1_and_debug_shows_traceback(fake: FakeConntrack) -> None:
    fake.fail_next(exc.CommandTimeoutError(("conntrack", "-L"), -9, "", "killed\nafter 60 s"))
    result = run(["list"], fake)
    assert result.code == cli.EXIT_FAILURE
    assert result.err_lines == ["conntrack-lib: error: CommandTimeoutError: after 60 s"]
    fake.fail_next(exc.CommandTimeoutError(("conntrack", "-L"), -9, "", "killed"))
    debug = run(["--debug", "list"], fake)
    assert debug.code == cli.EXIT_FAILURE
    assert "Traceback" in debug.err


def _exit_case(case: str, fake: FakeConntrack) -> tuple[list[str], io.StringIO | None]:
    """Return the argv and stdin that end a run with ``case``."""
    stdin = None
    if case == "ok":
        argv = ["count"]
    elif case == "failure":
        fake.fail_next(exc.CommandTimeoutError(("conntrack", "-L"), -9, "", "killed"))
        argv = ["list"]
    elif case == "usage":
        argv = ["list", "--zone", "70000"]
    elif case == "permission":
        fake.fail_next(exc.PermissionDeniedError(("conntrack", "-L"), 1, "", "not permitted"))
        argv = ["list"]
    elif case == "namespace":
        argv = ["--namespace", "red", "list"]
    else:
        argv, stdin = ["delete", "--zone", "5"], TTY("n\n")
    return argv, stdin


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(("case", "code"), [
    ("ok", cli.EXIT_OK), ("failure", cli.EXIT_FAILURE), ("usage", cli.EXIT_USAGE),
    ("permission", cli.EXIT_PERMISSION), ("namespace", cli.EXIT_NO_NAMESPACE),
    ("aborted", cli.EXIT_ABORTED),
])
def test_debug_keeps_every_exit_code_and_adds_the_traceback(
        fake: FakeConntrack, case: str, code: int, debug: bool) -> None:
    argv, stdin = _exit_case(case, fake)
    result = run(["--debug", *argv] if debug else argv, fake, stdin=stdin)
    assert result.code == code, result.err
    if code == cli.EXIT_OK:
        assert result.err == ""
        return
    last = result.err_lines[-1]
    assert last.startswith("conntrack-lib: error: ") or "aborted" in last
    if debug:
        assert "Traceback (most recent call last)" in result.err
    else:
        assert len(result.err_lines) == 1 and "Traceback" not in result.err


@pytest.mark.parametrize("debug", [False, True])
def test_unknown_command_exits_2_with_and_without_debug(fake: FakeConntrack,
                                                        debug: bool) -> None:
    with mock.patch.object(cli.ConntrackApp, "get_fuzzy_matches", return_value=[]):
        result = run(["--debug", "nosuch"] if debug else ["nosuch"], fake)
    assert result.code == cli.EXIT_USAGE
    assert "nosuch" in result.err
    assert ("Traceback" in result.err) is debug


def test_describe_error_is_always_one_line() -> None:
    err = exc.CommandError(("x",), 1, "", "first\n\n  second   part  \n")
    assert cli.describe_error(err) == "CommandError: second part"
    assert cli.describe_error(exc.CommandError(("x",), 1)) == "CommandError: exit code 1"
    assert "\n" not in cli.describe_error(ValueError("a\nb"))


@pytest.mark.parametrize(("error", "code"), [
    (exc.InvalidArgumentError("x"), 2),
    (exc.InvalidZoneError(0), 2),
    (exc.PermissionDeniedError(), 3),
    (exc.NamespaceNotFoundError(), 4),
    (cli.Aborted("no"), 5),
    (exc.ZoneStoreError("/p", "bad"), 1),
    (exc.EntryExistsError(), 1),
])
def test_exit_codes(error: BaseException, code: int) -> None:
    assert cli.exit_code_for(error) == code


# -- configuration, help and entry points ---------------------------------------------------------


def test_config_file_sets_helper_options(fake: FakeConntrack, tmp_path: Any) -> None:
    conf_file = tmp_path / "ct.conf"
    conf_file.write_text("[conntrack_lib]\nbatch_size = 7\nexact_delete_backend = cli\n")
    result = run(["--config-file", str(conf_file), "count"], fake)
    assert result.code == 0
    helper = result.app.helper()
    assert (helper.batch_size, helper.exact_delete_backend) == (7, "cli")


def test_config_binary_shows_in_dry_run(fake: FakeConntrack, tmp_path: Any) -> None:
    conf_file = tmp_path / "ct.conf"
    conf_file.write_text("[conntrack_lib]\nconntrack_binary = /opt/ct/conntrack\n")
    result = run(["--config-file", str(conf_file), "flush", "--zone", "3", "--dry-run",
                  "-f", "json"], fake)
    assert result.json()["argv"] == ["/opt/ct/conntrack", "-D", "-w", "3"]


def test_missing_config_file_is_one_line(fake: FakeConntrack, tmp_path: Any) -> None:
    result = run(["--config-file", str(tmp_path / "absent.conf"), "count"], fake)
    assert result.code == cli.EXIT_USAGE
    assert len(result.err_lines) == 1 and "absent.conf" in result.err


def test_invalid_config_value_is_one_line(fake: FakeConntrack, tmp_path: Any) -> None:
    conf_file = tmp_path / "ct.conf"
    conf_file.write_text("[conntrack_lib]\nbatch_size = 0\n")
    result = run(["--config-file", str(conf_file), "count"], fake)
    assert result.code == cli.EXIT_USAGE
    assert len(result.err_lines) == 1 and "batch_size" in result.err


def test_no_arguments_prints_the_command_list(fake: FakeConntrack) -> None:
    result = run([], fake)
    assert result.code == 0
    for name in cli.COMMANDS:
        assert f"  {name} " in result.out


def test_options_without_a_command_print_help_and_exit_2(fake: FakeConntrack) -> None:
    result = run(["--executor", "process"], fake)
    assert result.code == cli.EXIT_USAGE
    assert "  list " in result.out


def test_logging_handlers_do_not_pile_up(fake: FakeConntrack) -> None:
    import logging

    root = logging.getLogger("")
    saved = root.level
    root.setLevel(logging.ERROR)
    try:
        before = (list(root.handlers), root.level)
        for _ in range(3):
            run(["count"], fake)
        assert (root.handlers, root.level) == before
    finally:
        root.setLevel(saved)


def test_console_logging_is_quiet_by_default(fake: FakeConntrack) -> None:
    import logging

    levels = []
    real = cli.ConntrackApp.configure_logging

    def spy(app: cli.ConntrackApp) -> None:
        real(app)
        levels.append((logging.getLogger("").level, [h.level for h in app._log_handlers]))

    with mock.patch.object(cli.ConntrackApp, "configure_logging", spy):
        run(["count"], fake)
        run(["-v", "count"], fake)
    assert levels == [(logging.WARNING, [logging.WARNING]), (logging.INFO, [logging.INFO])]


def test_has_net_admin_reads_the_effective_set(tmp_path: Any) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000001000\n")
    assert cli.has_net_admin(str(status)) is True
    status.write_text("Name:\tx\nCapEff:\t0000000000000400\n")
    assert cli.has_net_admin(str(status)) is False


def test_python_dash_m_runs_the_cli() -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-m", "conntrack_lib.cli", "list", "--help"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "--reply-dport" in done.stdout and "conntrack-lib list" in done.stdout


def test_main_returns_the_exit_code(fake: FakeConntrack) -> None:
    with mock.patch.object(cli, "ConntrackApp") as app_class:
        app_class.return_value.run.return_value = 4
        assert cli.main(["count"]) == 4
    app_class.return_value.run.assert_called_once_with(["count"])
