"""ConntrackHelper against the real conntrack and kernel, in a namespace."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from conntrack_lib import exceptions as exc
from conntrack_lib.executor import ProcessExecutor
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Entry
from conntrack_lib.zones import SQLiteZoneStore
from tests.functional import netns


@pytest.fixture
def helper(ns: str) -> ConntrackHelper:
    return ConntrackHelper(namespace=ns, executor=ProcessExecutor(), zone_range=(4097, 4200))


def _tcp(i: int, zone: int, **kw: Any) -> dict[str, Any]:
    flow = dict(proto="tcp", src=f"10.1.{i // 250}.{i % 250 + 1}", dst="10.9.0.1",
                sport=10000 + i, dport=22, state="ESTABLISHED", timeout=600, zone=zone)
    flow.update(kw)
    return flow


def test_create_list_count_and_delete_in_a_zone(helper: ConntrackHelper, ns: str) -> None:
    zone = helper.allocate_zone("port-a")
    helper.create_entry(**_tcp(1, zone))
    entries = helper.list_entries(zone=zone)
    assert len(entries) == 1
    assert entries[0].zone == zone
    assert str(entries[0].original.src) == "10.1.0.2"
    assert helper.count() == 1
    assert helper.count(zone=zone) == 1
    assert helper.delete_entries(zone=zone) == 1
    assert netns.table(ns) == []


def test_create_existing_flow_raises_entry_exists(helper: ConntrackHelper) -> None:
    zone = helper.allocate_zone("port-a")
    helper.create_entry(**_tcp(1, zone))
    with pytest.raises(exc.EntryExistsError):
        helper.create_entry(**_tcp(1, zone))


def test_delete_matching_nothing_is_zero_not_an_error(helper: ConntrackHelper) -> None:
    assert helper.delete_entries(zone=4100) == 0


def test_create_entries_batches_into_few_processes(helper: ConntrackHelper, ns: str) -> None:
    helper.batch_size = 400
    zone = helper.allocate_zone("port-a")
    created = helper.create_entries(_tcp(i, zone) for i in range(1000))
    assert created == 1000
    assert len(netns.table(ns)) == 1000


def test_exact_delete_removes_only_the_given_flows(helper: ConntrackHelper, ns: str) -> None:
    zone = helper.allocate_zone("port-a")
    helper.create_entries(_tcp(i, zone) for i in range(50))
    doomed = helper.list_entries(zone=zone)[:20]
    assert helper.delete_flows(doomed) == 20
    left = helper.list_entries()
    assert len(left) == 30
    assert not {_flow_key(e) for e in doomed} & {_flow_key(e) for e in left}
    # Flows already gone are skipped, not an error.
    assert helper.delete_flows(doomed) == 0


def test_release_zone_with_flush_deletes_its_flows_only(helper: ConntrackHelper) -> None:
    a, b = helper.allocate_zone("port-a"), helper.allocate_zone("port-b")
    helper.create_entries([_tcp(i, a) for i in range(10)] + [_tcp(i, b) for i in range(5)])
    assert helper.release_zone("port-a", flush=True) == a
    assert helper.get_zone("port-a") is None
    assert helper.count(zone=a) == 0
    assert helper.count(zone=b) == 5


def test_recovery_holds_zones_with_live_flows(ns: str) -> None:
    netns.run(ns, ["-I", "-p", "udp", "-s", "10.0.0.1", "-d", "10.0.0.2", "--sport", "1",
                   "--dport", "2", "-t", "300", "-w", "4097"], check=True)
    helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor(), zone_range=(4097, 4099))
    assert helper.recover() == frozenset({4097})
    zones = {helper.allocate_zone("a"), helper.allocate_zone("b")}
    assert zones == {4098, 4099}
    with pytest.raises(exc.ZoneExhaustedError):
        helper.allocate_zone("c")
    assert helper.flush_zone(4097) == 1
    assert helper.allocate_zone("c") == 4097


def test_update_entries_changes_the_mark_in_zone_zero(helper: ConntrackHelper, ns: str) -> None:
    helper.create_entries([_tcp(i, 0) for i in range(3)])
    changed = helper.update_entries({"family": "ipv4", "src": "10.1.0.2"}, mark=7)
    assert changed == 1
    marks = {str(e.original.src): e.mark for e in helper.list_entries()}
    assert marks["10.1.0.2"] == 7
    assert marks["10.1.0.3"] == 0


def test_update_entries_refuses_zoned_flows(helper: ConntrackHelper) -> None:
    zone = helper.allocate_zone("port-a")
    helper.create_entry(**_tcp(1, zone))
    with pytest.raises(exc.InvalidArgumentError, match="non-zero zones"):
        helper.update_entries({"family": "ipv4", "src": "10.1.0.2"}, mark=7)


def test_update_entries_beyond_the_bulk_limit_updates_every_flow(helper: ConntrackHelper) -> None:
    helper.create_entries([_tcp(i, 0, mark=1) for i in range(300)])
    assert helper.update_entries({"family": "ipv4", "dst": "10.9.0.1"}, mark=9) == 300
    assert {e.mark for e in helper.list_entries()} == {9}


def test_flush_empties_the_table_and_counts(helper: ConntrackHelper, ns: str) -> None:
    zone = helper.allocate_zone("port-a")
    helper.create_entries([_tcp(i, zone) for i in range(7)])
    assert helper.flush_table() == 7
    assert netns.table(ns) == []


def test_flush_one_zone(helper: ConntrackHelper) -> None:
    a, b = helper.allocate_zone("a"), helper.allocate_zone("b")
    helper.create_entries([_tcp(i, a) for i in range(4)] + [_tcp(i, b) for i in range(2)])
    assert helper.flush_table(zone=a) == 4
    assert helper.count() == 2


def test_stats_has_one_row_per_cpu(helper: ConntrackHelper) -> None:
    stats = helper.stats()
    assert len(stats) == os.cpu_count()
    assert all(s.get("found") is not None for s in stats)


def test_delete_by_rule_keeps_other_ports_and_families(helper: ConntrackHelper) -> None:
    zone = helper.allocate_zone("port-a")
    helper.create_entries([
        _tcp(1, zone, dst="10.9.0.1", dport=22),
        _tcp(2, zone, dst="10.9.0.1", dport=80),
        _tcp(3, zone, dst="10.9.0.2", dport=22),
        dict(proto="tcp", src="2001:db8::1", dst="2001:db8::9", sport=1, dport=22,
             state="ESTABLISHED", timeout=600, zone=zone),
    ])
    deleted = helper.delete_by_rule(zone, "ingress", "IPv4", "tcp", 22, 22, None,
                                    ["10.9.0.1", "2001:db8::9"])
    assert deleted == 1
    left = {(str(e.original.dst), e.original.dport) for e in helper.list_entries()}
    assert left == {("10.9.0.1", 80), ("10.9.0.2", 22), ("2001:db8::9", 22)}


def test_delete_by_remote_ips_both_directions(helper: ConntrackHelper) -> None:
    zone = helper.allocate_zone("port-a")
    helper.create_entries([
        _tcp(1, zone, src="198.51.100.7", dst="10.9.0.1"),
        _tcp(2, zone, src="10.9.0.1", dst="198.51.100.7"),
        _tcp(3, zone, src="198.51.100.8", dst="10.9.0.1"),
    ])
    assert helper.delete_by_remote_ips(zone, ["198.51.100.7"]) == 2
    assert helper.count() == 1


def test_plan_merges_and_counts_dumps(helper: ConntrackHelper) -> None:
    zone = helper.allocate_zone("a")
    helper.create_entries([_tcp(i, zone) for i in range(20)])
    reqs = [{"zone": zone, "src": "10.1.0.2"}] * 3 + [{"zone": zone}]
    report = helper.delete_many(reqs)
    assert report.plan.merged == 2
    assert report.plan.zone_wide == (zone,)
    assert report.deleted == 20
    assert helper.count() == 0


def test_threads_hammering_the_helper_never_share_a_zone(helper: ConntrackHelper) -> None:
    errors: list[BaseException] = []
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        try:
            for i in range(12):
                key = f"t{t}-{i}"
                zone = helper.allocate_zone(key)
                with lock:
                    seen.append((key, zone))
                helper.create_entry(**_tcp(i, zone, src=f"10.7.{t}.{i + 1}"))
                helper.list_entries(zone=zone)
                if i % 3 == 0:
                    helper.release_zone(key, flush=True)
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    live = helper.zones()
    assert len(set(live.values())) == len(live)
    assert len(live) == 8 * 8
    assert helper.count() == len(live)


def test_database_store_survives_a_restart(ns: str, tmp_path: Any) -> None:
    path = str(tmp_path / "zones.db")
    first = ConntrackHelper(namespace=ns, executor=ProcessExecutor(), zone_range=(10, 20),
                            zone_store=SQLiteZoneStore(path))
    zone = first.allocate_zone("router-1")
    second = ConntrackHelper(namespace=ns, executor=ProcessExecutor(), zone_range=(10, 20),
                             zone_store=SQLiteZoneStore(path))
    assert second.get_zone("router-1") == zone
    assert second.allocate_zone("router-2") != zone


def test_demo_runs_and_cleans_up() -> None:
    out = subprocess.run([sys.executable, "-m", "conntrack_lib.demo", "--ports", "6",
                          "--executor", "process"], capture_output=True, text=True,
                         check=False, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "security-group rule removed" in out.stdout
    assert "deleted" in out.stdout
    assert not [n for n in os.listdir("/run/netns") if n.startswith("ctlib-demo-")]


def _flow_key(entry: Entry) -> tuple[str, int, object, int]:
    """Return what names a flow in the kernel: family, protocol, original tuple, zone."""
    return (entry.family, entry.protonum, entry.original, entry.zone)
