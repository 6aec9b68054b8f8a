"""``conntrack-lib events`` against an in-memory FakeConntrack."""

from __future__ import annotations

import io
import json
from typing import Any

from oslo_config import cfg

from conntrack_lib import ConntrackHelper, cli, cli_events
from conntrack_lib.testing import FakeClock, FakeConntrack


def _run(argv: list[str], executor: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    app = cli.ConntrackApp(executor_factory=lambda kind, conf, ns: executor,
                           conf=cfg.ConfigOpts(), stdin=io.StringIO(), stdout=out, stderr=err)
    return app.run(argv), out.getvalue(), err.getvalue()


def _fake_with_new_flows() -> FakeConntrack:
    ct = FakeConntrack(clock=FakeClock(1000.0))
    helper = ConntrackHelper(executor=ct)
    for port in (1000, 1001):
        helper.create_entry(proto="tcp", src="10.0.0.1", dst="10.0.0.2", sport=port,
                            dport=80, state="ESTABLISHED", timeout=60)
    return ct


def test_events_json_lines_are_typed_records() -> None:
    code, out, err = _run(["events", "-f", "json", "--duration", "1", "-e", "NEW"],
                          _fake_with_new_flows())
    assert (code, err) == (0, "")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["type"] for r in records] == ["NEW", "NEW"]
    assert [r["entry"]["original"]["sport"] for r in records] == [1000, 1001]
    assert records[0]["entry"]["proto"] == "tcp"


def test_events_table_has_a_header_and_one_row_per_event() -> None:
    code, out, _err = _run(["events", "--duration", "1", "--count", "1"],
                           _fake_with_new_flows())
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["TYPE", "PROTO", "SOURCE", "DESTINATION", "PORTS", "STATE",
                                "ZONE", "MARK", "TIMEOUT"]
    assert len(lines) == 2
    # The NEW event of the fake carries no mark: its cell is blank.
    assert lines[1].split() == ["NEW", "tcp", "10.0.0.1", "10.0.0.2", "1000->80",
                                "ESTABLISHED", "0", "60"]


def test_events_table_cells_are_those_of_list_value() -> None:
    ct = _fake_with_new_flows()
    _code, listed, _err = _run(["list", "-f", "value", "--sport", "1000", "--proto", "tcp"], ct)
    _code, out, _err = _run(["events", "--duration", "1", "--count", "1"], ct)
    # proto, source, destination, ports, state and zone, as list prints them
    assert out.splitlines()[1].split()[1:7] == listed.split()[:6]
    assert max(len(line) for line in out.splitlines()) <= 150


def test_events_bad_filter_is_a_usage_error() -> None:
    code, out, err = _run(["events", "--duration", "0"], _fake_with_new_flows())
    assert code == cli.EXIT_USAGE and out == "" and "duration" in err


def test_events_command_is_registered_as_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="conntrack_lib.cli")}
    assert names.get("events") == "conntrack_lib.cli_events:WatchEvents"
    assert cli_events.WatchEvents.__doc__
