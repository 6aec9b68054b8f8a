"""The installed ``conntrack-lib`` script against the real conntrack, in a namespace.

Each test seeds a throwaway namespace with the real binary, runs the console
script as a separate process (falling back to ``python -m conntrack_lib.cli``
when the script is not installed) and checks what it prints and what is
left in the kernel table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from conntrack_lib.models import Entry, FlowTuple
from tests.functional import netns

ENTRY_FIELDS = [f.name for f in dataclasses.fields(Entry)]
TUPLE_FIELDS = [f.name for f in dataclasses.fields(FlowTuple)]
ZONE = 7


def script() -> list[str]:
    """Return the command that starts the CLI."""
    path = os.path.join(os.path.dirname(sys.executable), "conntrack-lib")
    if os.access(path, os.X_OK):
        return [path]
    return [sys.executable, "-m", "conntrack_lib.cli"]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([*script(), *args], input=stdin, capture_output=True, text=True,
                          timeout=120, env=env, check=False)


def seed(ns: str) -> None:
    """Create 4 tcp flows in zone 7, 3 udp flows in zone 0 and one ICMP echo."""
    for i in range(4):
        netns.run(ns, ["-I", "-p", "tcp", "-s", "10.1.0.1", "-d", "10.1.0.2",
                       "--sport", str(40000 + i), "--dport", "443", "--state", "ESTABLISHED",
                       "-t", "600", "-w", str(ZONE), "-m", "42"], check=True)
    for i in range(3):
        netns.run(ns, ["-I", "-p", "udp", "-s", "10.2.0.1", "-d", "10.2.0.2",
                       "--sport", str(5000 + i), "--dport", "53", "-t", "120"], check=True)
    netns.run(ns, ["-I", "-p", "icmp", "-s", "10.3.0.1", "-d", "10.3.0.2",
                   "--icmp-type", "8", "--icmp-code", "0", "--icmp-id", "9", "-t", "30"],
              check=True)


@pytest.fixture
def seeded(ns: str) -> str:
    seed(ns)
    assert len(netns.table(ns)) == 8
    return ns


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_list_json_has_every_entry_field(seeded: str) -> None:
    done = cli("--executor", "process", "--namespace", seeded, "list", "-f", "json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(rows) == 8
    for row in rows:
        assert list(row) == ENTRY_FIELDS
        assert list(row["original"]) == TUPLE_FIELDS
        assert isinstance(row["timeout"], int) and isinstance(row["status"], list)
    tcp = sorted((r for r in rows if r["proto"] == "tcp"), key=lambda r: r["original"]["sport"])
    assert [r["original"]["sport"] for r in tcp] == [40000, 40001, 40002, 40003]
    assert {(r["zone"], r["mark"], r["state"]) for r in tcp} == {(ZONE, 42, "ESTABLISHED")}
    assert tcp[0]["original"]["src"] == "10.1.0.1"
    assert tcp[0]["reply"]["dport"] == 40000
    icmp = next(r for r in rows if r["proto"] == "icmp")
    assert (icmp["original"]["icmp_type"], icmp["original"]["icmp_id"]) == (8, 9)
    assert "UNREPLIED" in icmp["status"]


def test_list_filters_and_count(seeded: str) -> None:
    done = cli("--executor", "process", "--namespace", seeded, "list", "-f", "value",
               "-c", "proto", "--proto", "udp", "--dport", "53")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["udp"] * 3
    done = cli("--executor", "process", "--namespace", seeded, "count", "-f", "json")
    assert json.loads(done.stdout) == {"count": 8}
    done = cli("--executor", "process", "--namespace", seeded, "count", "-f", "json",
               "--zone", str(ZONE))
    assert json.loads(done.stdout) == {"count": 4}


def test_list_table_shows_the_short_columns(seeded: str) -> None:
    done = cli("--executor", "process", "--namespace", seeded, "list", "--zone", str(ZONE),
               "--sort-column", "ports")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [c.strip() for c in lines[1].strip("|").split("|")] == [
        "proto", "source", "destination", "ports", "state", "zone", "mark", "timeout"]
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[:7] == ["tcp", "10.1.0.1", "10.1.0.2", "40000->443", "ESTABLISHED",
                         str(ZONE), "42"]
    assert 0 < int(cells[7]) <= 600
    assert max(len(line) for line in lines) < 100


def test_list_value_and_csv_print_plain_tokens(seeded: str) -> None:
    value = cli("--executor", "process", "--namespace", seeded, "list", "-f", "value",
                "--long", "--proto", "icmp")
    assert value.returncode == 0, value.stderr
    assert "src=10.3.0.1 dst=10.3.0.2 icmp_type=8 icmp_code=0 icmp_id=9" in value.stdout
    assert " UNREPLIED " in value.stdout
    csv_out = cli("--executor", "process", "--namespace", seeded, "list", "-f", "csv",
                  "--long")
    assert csv_out.returncode == 0, csv_out.stderr
    for text in ("{", "[", "None", "'"):
        assert text not in value.stdout + csv_out.stdout
    count = cli("--executor", "process", "--namespace", seeded, "count", "-f", "csv")
    assert (count.returncode, count.stdout.split()) == (0, ['"count"', "8"])


def test_list_of_nothing_prints_nothing(seeded: str) -> None:
    done = cli("--executor", "process", "--namespace", seeded, "list", "--zone", "99")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_privsep_executor_lists_the_same_flows(seeded: str) -> None:
    done = cli("--namespace", seeded, "list", "-f", "json", "--mark", "42")
    assert done.returncode == 0, done.stderr
    assert sorted(r["original"]["sport"] for r in json.loads(done.stdout)) == [
        40000, 40001, 40002, 40003]


def test_delete_yes_removes_only_the_matching_flows(seeded: str) -> None:
    done = cli("--executor", "process", "--namespace", seeded, "delete", "--zone", str(ZONE),
               "--yes", "-f", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"deleted": 4}
    left = netns.table(seeded)
    assert len(left) == 4 and not any("zone=" in line for line in left)


def test_delete_without_yes_and_without_a_terminal_deletes_nothing(seeded: str) -> None:
    done = cli("--executor", "process", "--namespace", seeded, "delete", "--proto", "udp",
               stdin="y\n")
    assert done.returncode == 5
    assert "--yes" in one_error_line(done)
    assert len(netns.table(seeded)) == 8


def test_delete_dry_run_prints_the_argv(seeded: str) -> None:
    done = cli("--executor", "process", "--namespace", seeded, "delete", "--proto", "tcp",
               "--dport", "443", "--dry-run", "-f", "json")
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout)["argv"]
    assert argv == ["/usr/bin/nsenter", f"--net=/run/netns/{seeded}", "--",
                    "/usr/sbin/conntrack", "-D", "-p", "tcp", "--dport", "443"]
    assert len(netns.table(seeded)) == 8
    # The printed command really does what it says.
    ran = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    assert len(netns.table(seeded)) == 4


def test_flush_zone_then_all(seeded: str) -> None:
    done = cli("--executor", "process", "--namespace", seeded, "flush", "--zone", str(ZONE),
               "--yes", "-f", "value")
    assert (done.returncode, done.stdout.strip()) == (0, "4"), done.stderr
    assert len(netns.table(seeded)) == 4
    done = cli("--executor", "process", "--namespace", seeded, "flush", "--all", "--yes",
               "-f", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"deleted": 4}
    assert netns.table(seeded) == []


def test_zones_counts_live_flows(seeded: str, tmp_path: Any) -> None:
    from conntrack_lib.zones import SQLiteZoneStore, ZoneAllocator

    store = tmp_path / "zones.db"
    allocator = ZoneAllocator(zone_range=(ZONE, ZONE + 1), store=SQLiteZoneStore(store))
    allocator.allocate("router-1")
    allocator.allocate("router-2")
    done = cli("--executor", "process", "--namespace", seeded, "zones", "--store", str(store),
               "-f", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"key": "router-1", "zone": ZONE, "state": "allocated", "flows": 4},
        {"key": "router-2", "zone": ZONE + 1, "state": "allocated", "flows": 0},
    ]


def test_errors_are_one_line_with_an_exit_code(ns: str) -> None:
    missing = cli("--executor", "process", "--namespace", ns + "-absent", "list")
    assert missing.returncode == 4
    assert "not found" in one_error_line(missing)
    bad = cli("--executor", "process", "--namespace", ns, "list", "--proto", "tcp",
              "--dport", "70000")
    assert bad.returncode == 2
    assert "dport" in one_error_line(bad)
    assert bad.stdout == ""


def test_debug_keeps_the_exit_codes(ns: str) -> None:
    missing = cli("--debug", "--executor", "process", "--namespace", ns + "-absent", "list")
    assert missing.returncode == 4
    assert "Traceback" in missing.stderr and "not found" in missing.stderr.splitlines()[-1]
    bad = cli("--debug", "--executor", "process", "--namespace", ns, "list", "--proto", "tcp",
              "--dport", "70000")
    assert bad.returncode == 2
    assert "Traceback" in bad.stderr and "dport" in bad.stderr.splitlines()[-1]
    assert bad.stdout == ""
