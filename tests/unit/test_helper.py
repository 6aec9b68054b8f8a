"""ConntrackHelper logic with a recording executor: planning, batching, fallbacks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import netaddr
import pytest

from conntrack_lib import exceptions as exc
from conntrack_lib.executor import Result
from conntrack_lib.helper import ConntrackHelper, SecurityGroupRule, remote_ip_requests
from conntrack_lib.models import Entry, FlowTuple

LINE = ("tcp      6 300 ESTABLISHED src=10.0.0.{n} dst=10.0.9.9 sport=1 dport=22 [UNREPLIED] "
        "src=10.0.9.9 dst=10.0.0.{n} sport=22 dport=1 mark=0 zone={zone} use=1")


class Recorder:
    """An executor that records commands and answers from canned output."""

    def __init__(self, lines: list[str] | None = None, count: int = 0) -> None:
        self.calls: list[Any] = []
        self.lines = lines or []
        self.count = count

    def execute(self, command: Any, *, namespace: str | None = None,
                timeout: float | None = None) -> Result:
        self.calls.append(command)
        stdout = ""
        if command.kind == "batch":
            stdout = "".join(f"deleted {i}\n" for i, c in enumerate(command)
                             if c.kind == "delete")
        return Result(0, stdout, "", self.count, command.argv())

    def iter_lines(self, command: Any, *, namespace: str | None = None,
                   timeout: float | None = None) -> Iterator[str]:
        self.calls.append(command)
        return iter(self.lines)


class NetlinkRecorder(Recorder):
    """A recorder that also offers exact netlink deletes."""

    def __init__(self, *args: Any, outcomes: list[int] | None = None,
                 refuse: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.deleted: list[Entry] = []
        self.outcomes = outcomes
        self.refuse = refuse

    def delete_flows(self, entries: list[Entry], *, namespace: str | None = None) -> list[int]:
        if self.refuse:
            raise exc.ConntrackUnavailableError(("netlink",), None, "", "refused")
        self.deleted.extend(entries)
        return self.outcomes if self.outcomes is not None else [0] * len(entries)


def _entry(n: int, zone: int = 5) -> Entry:
    orig = FlowTuple(netaddr.IPAddress(f"10.0.0.{n}"), netaddr.IPAddress("10.0.9.9"), 1, 22)
    return Entry("ipv4", "tcp", 6, orig, orig.inverted(), state="ESTABLISHED", zone=zone)


def test_plan_merges_identical_requests() -> None:
    helper = ConntrackHelper(executor=Recorder())
    plan = helper.plan_deletes([{"zone": 5, "src": "10.0.0.1"}] * 4)
    assert plan.received == 4
    assert plan.merged == 3
    assert [r.filters for r in plan.requests] == [{"src": "10.0.0.1", "zone": 5}]
    assert plan.dumps == 1


def test_plan_turns_a_zone_request_into_one_zone_delete_and_drops_what_it_covers() -> None:
    helper = ConntrackHelper(executor=Recorder())
    plan = helper.plan_deletes([{"zone": 5, "src": "10.0.0.1"}, {"zone": 5},
                                {"zone": 6, "src": "10.0.0.1"}])
    assert plan.zone_wide == (5,)
    assert [r.filters for r in plan.requests] == [{"src": "10.0.0.1", "zone": 6}]
    assert plan.dropped == 1
    assert plan.dumps == 2


def test_plan_joins_both_families_of_a_zone() -> None:
    helper = ConntrackHelper(executor=Recorder())
    plan = helper.plan_deletes([{"zone": 7, "family": "ipv4"}, {"zone": 7, "family": "ipv6"}])
    assert plan.zone_wide == (7,)
    assert plan.requests == ()


def test_plan_keeps_one_family_of_a_zone_apart() -> None:
    helper = ConntrackHelper(executor=Recorder())
    plan = helper.plan_deletes([{"zone": 7, "family": "ipv4"}])
    assert plan.zone_wide == ()
    assert [r.filters for r in plan.requests] == [{"family": "ipv4", "zone": 7}]


def test_plan_drops_a_request_inside_a_broader_prefix() -> None:
    helper = ConntrackHelper(executor=Recorder())
    plan = helper.plan_deletes([{"zone": 5, "src": "10.0.0.7"}, {"zone": 5, "src": "10.0.0.0/24"}])
    assert [r.filters for r in plan.requests] == [{"src": "10.0.0.0/24", "zone": 5}]


def test_plan_rejects_an_invalid_request_before_running_anything() -> None:
    recorder = Recorder()
    helper = ConntrackHelper(executor=recorder)
    with pytest.raises(exc.InvalidArgumentError):
        helper.plan_deletes([{"zone": 5}, {"zone": 70000}])
    assert recorder.calls == []


def test_cli_plan_runs_one_batch_and_counts_deleted_lines() -> None:
    recorder = Recorder()
    helper = ConntrackHelper(executor=recorder)
    report = helper.delete_many([{"zone": 5}, {"zone": 6, "src": "10.0.0.1"},
                                 {"zone": 6, "dst": "10.0.0.2"}])
    assert report.plan.strategy == "cli"
    assert report.plan.processes == 1
    (batch,) = recorder.calls
    assert batch.kind == "batch"
    assert [c.argv() for c in batch] == [("-D", "-w", "5"),
                                       ("-D", "-s", "10.0.0.1", "-w", "6"),
                                       ("-D", "-d", "10.0.0.2", "-w", "6")]
    assert report.deleted == 3


def test_cli_plan_splits_into_batches_of_batch_size() -> None:
    recorder = Recorder()
    helper = ConntrackHelper(executor=recorder, batch_size=2, exact_delete_backend="cli")
    plan = helper.plan_deletes([{"zone": z} for z in range(1, 6)])
    assert plan.processes == 3
    helper.execute_plan(plan)
    assert [len(c) if c.kind == "batch" else 1 for c in recorder.calls] == [2, 2, 1]


def test_dump_plan_lists_once_and_deletes_matches_over_netlink() -> None:
    lines = [LINE.format(n=n, zone=z) for n, z in ((1, 5), (2, 5), (3, 6), (4, 7))]
    recorder = NetlinkRecorder(lines)
    helper = ConntrackHelper(executor=recorder)
    misses = [{"zone": 8, "src": f"10.0.0.{n}"} for n in range(10, 20)]
    report = helper.delete_many([{"zone": 5, "src": "10.0.0.1"}, {"zone": 6}, *misses])
    assert report.plan.strategy == "dump"
    assert report.plan.dumps == 1
    (listing,) = recorder.calls
    assert listing.kind == "list" and listing.output == ("id",)
    assert sorted(str(e.original.src) for e in recorder.deleted) == ["10.0.0.1", "10.0.0.3"]
    assert report.deleted == 2


def test_cost_model_keeps_few_requests_on_the_cli_and_many_on_one_dump() -> None:
    helper = ConntrackHelper(executor=NetlinkRecorder())
    crossover = helper.cost_model.crossover(10_000, netlink=True, prefiltered=True)
    assert 2 <= crossover <= 20
    assert helper.cost_model.crossover(10_000, netlink=False) > 1000
    few = [{"zone": 8, "src": f"10.0.0.{n}"} for n in range(crossover - 1)]
    many = [{"zone": 8, "src": f"10.0.0.{n}"} for n in range(crossover)]
    assert helper.plan_deletes(few).strategy == "cli"
    assert helper.plan_deletes(many).strategy == "dump"


def test_requests_the_cli_gets_wrong_always_go_through_the_engine() -> None:
    helper = ConntrackHelper(executor=NetlinkRecorder())
    for request in ({"orig_zone": 0}, {"reply_zone": 3}, {"zone": 0},
                    {"dst_nat": "fd00:10:244::5", "proto": "udp"}):
        plan = helper.plan_deletes([request])
        assert plan.strategy == "dump", request
        assert plan.cli_lines == ()


def test_hidden_status_goes_to_conntrack_or_a_status_filtered_dump() -> None:
    lines = [LINE.format(n=1, zone=0).replace(" zone=0", " id=7"),
             LINE.format(n=2, zone=0).replace(" zone=0", " zone-orig=3 id=8")]
    recorder = NetlinkRecorder(lines)
    helper = ConntrackHelper(executor=recorder)
    plan = helper.plan_deletes([{"status": "FIXED_TIMEOUT", "zone": 4}])
    assert [c.argv() for c in plan.cli_lines] == [("-D", "-u", "FIXED_TIMEOUT", "-w", "4")]
    report = helper.delete_many([{"status": "FIXED_TIMEOUT", "orig_zone": 3}])
    assert report.plan.filtered and not report.plan.cli_lines
    (listing,) = recorder.calls
    assert listing.argv() == ("-L", "-u", "FIXED_TIMEOUT", "-o", "id")
    assert [e.id for e in recorder.deleted] == [8]


def test_exact_delete_counts_only_flows_really_deleted() -> None:
    recorder = NetlinkRecorder(outcomes=[0, 2, 0])
    helper = ConntrackHelper(executor=recorder)
    assert helper.delete_flows([_entry(1), _entry(2), _entry(3)]) == 2


def test_exact_delete_raises_on_a_real_kernel_error() -> None:
    helper = ConntrackHelper(executor=NetlinkRecorder(outcomes=[0, 1]))
    with pytest.raises(exc.CommandError, match="errno 1"):
        helper.delete_flows([_entry(1), _entry(2)])


def test_exact_delete_falls_back_to_cli_when_netlink_is_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    recorder = NetlinkRecorder(refuse=True)
    helper = ConntrackHelper(executor=recorder)
    assert helper.delete_flows([_entry(1), _entry(2)]) == 2
    (batch,) = recorder.calls
    assert [c.argv()[:3] for c in batch] == [("-D", "-f", "ipv4")] * 2
    assert "falling back" in caplog.text


def test_exact_delete_backend_netlink_never_falls_back() -> None:
    helper = ConntrackHelper(executor=NetlinkRecorder(refuse=True), exact_delete_backend="netlink")
    with pytest.raises(exc.ConntrackUnavailableError):
        helper.delete_flows([_entry(1)])
    with pytest.raises(exc.ConntrackUnavailableError):
        ConntrackHelper(executor=Recorder(),
                        exact_delete_backend="netlink").delete_flows([_entry(1)])


def test_exact_delete_backend_cli_ignores_netlink() -> None:
    recorder = NetlinkRecorder()
    helper = ConntrackHelper(executor=recorder, exact_delete_backend="cli")
    helper.delete_flows([_entry(1), _entry(2)])
    assert recorder.deleted == []


def test_exact_delete_merges_duplicates_and_skips_empty() -> None:
    recorder = NetlinkRecorder()
    helper = ConntrackHelper(executor=recorder)
    assert helper.delete_flows([]) == 0
    helper.delete_flows([_entry(1), _entry(1)])
    assert recorder.deleted == [_entry(1)]


def test_create_entries_validates_all_before_the_first_process() -> None:
    recorder = Recorder()
    helper = ConntrackHelper(executor=recorder)
    good = dict(proto="udp", src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2, timeout=30)
    with pytest.raises(exc.InvalidArgumentError):
        helper.create_entries([good, {**good, "sport": -1}])
    assert recorder.calls == []


def test_create_entries_chunks_by_batch_size() -> None:
    recorder = Recorder()
    helper = ConntrackHelper(executor=recorder, batch_size=3)
    flows = [dict(proto="udp", src=f"10.0.0.{i}", dst="10.0.0.250", sport=1, dport=2, timeout=30)
             for i in range(1, 8)]
    assert helper.create_entries(flows) == 7
    assert [len(c) for c in recorder.calls] == [3, 3, 1]


def test_update_refuses_flows_in_zones() -> None:
    recorder = Recorder([LINE.format(n=1, zone=5)])
    helper = ConntrackHelper(executor=recorder)
    with pytest.raises(exc.InvalidArgumentError, match="non-zero zones"):
        helper.update_entries({"family": "ipv4", "src": "10.0.0.1"}, mark=3)
    assert [c.kind for c in recorder.calls] == ["list"]


def test_update_with_no_match_runs_no_update() -> None:
    recorder = Recorder([])
    helper = ConntrackHelper(executor=recorder)
    assert helper.update_entries({"family": "ipv4", "src": "10.0.0.1"}, mark=3) == 0
    assert [c.kind for c in recorder.calls] == ["list"]


def test_update_beyond_the_bulk_limit_goes_flow_by_flow() -> None:
    zone0 = [LINE.format(n=n % 250, zone=0).replace(" zone=0", "").replace(
        "sport=1 ", f"sport={n} ", 1) for n in range(201)]
    recorder = Recorder(zone0, count=1)
    helper = ConntrackHelper(executor=recorder)
    assert helper.update_entries({"family": "ipv4", "dst": "10.0.9.9"}, mark=3) == 201
    updates = [c for c in recorder.calls if c.kind == "update"]
    assert len(updates) == 201
    assert all(tuple(c.argv()[1:3]) == ("-f", "ipv4") for c in updates)


def test_recovery_holds_only_zones_in_range_without_owner() -> None:
    lines = [LINE.format(n=1, zone=5), LINE.format(n=2, zone=9), LINE.format(n=3, zone=500)]
    helper = ConntrackHelper(executor=Recorder(lines), zone_range=(5, 10))
    assert helper.recover() == frozenset({5, 9})
    assert helper.allocate_zone("a") == 6


def test_recovery_runs_one_dump_only() -> None:
    recorder = Recorder([LINE.format(n=1, zone=5)])
    helper = ConntrackHelper(executor=recorder, zone_range=(5, 10))
    helper.allocate_zone("a")
    helper.allocate_zone("b")
    helper.recover()
    assert [c.kind for c in recorder.calls] == ["list"]


def test_release_zone_flushes_before_freeing() -> None:
    recorder = Recorder()
    helper = ConntrackHelper(executor=recorder, zone_range=(5, 6))
    recorder.lines = []
    zone = helper.allocate_zone("a")
    assert helper.release_zone("a", flush=True) == zone
    assert recorder.calls[-1].argv() == ("-D", "-w", str(zone))
    assert helper.get_zone("a") is None
    assert helper.release_zone("a") is None


def test_constructor_validates_its_options() -> None:
    with pytest.raises(exc.InvalidArgumentError):
        ConntrackHelper(executor=Recorder(), batch_size=0)
    with pytest.raises(exc.InvalidArgumentError):
        ConntrackHelper(executor=Recorder(), exact_delete_backend="fast")
    with pytest.raises(exc.InvalidZoneError):
        ConntrackHelper(executor=Recorder(), zone_range=(0, 10))


def _rule_requests(zone: int | None, *args: Any) -> list[dict[str, Any]]:
    *fields, ips = args
    return [r.filters for r in SecurityGroupRule(*fields).requests(zone, ips)]


def test_rule_requests_ingress_single_port() -> None:
    reqs = _rule_requests(5, "ingress", "IPv4", "tcp", 22, 22, "198.51.100.0/24",
                          ["10.0.0.1", "2001:db8::1", "10.0.0.1"])
    assert reqs == [{"family": "ipv4", "proto": "tcp", "src": "198.51.100.0/24",
                     "dst": "10.0.0.1", "dport": 22, "zone": 5}]


def test_rule_requests_egress_any_protocol() -> None:
    reqs = _rule_requests(None, "egress", "IPv6", 0, None, None, None, ["2001:db8::1"])
    assert reqs == [{"family": "ipv6", "src": "2001:db8::1"}]


def test_rule_requests_port_range_expands_or_widens() -> None:
    small = _rule_requests(5, "ingress", "IPv4", "udp", 1000, 1003, None, ["10.0.0.1"])
    assert [r["dport"] for r in small] == [1000, 1001, 1002, 1003]
    wide = _rule_requests(5, "ingress", "IPv4", "udp", 1000, 2000, None, ["10.0.0.1"])
    assert wide == [{"family": "ipv4", "proto": "udp", "dst": "10.0.0.1", "zone": 5}]


def test_rule_requests_icmp_follows_the_family_and_keeps_type_and_code() -> None:
    reqs = _rule_requests(5, "ingress", "IPv6", "icmp", 128, 0, None, ["2001:db8::1"])
    assert reqs == [{"family": "ipv6", "proto": "icmpv6", "dst": "2001:db8::1",
                     "icmp_type": 128, "icmp_code": 0, "zone": 5}]


@pytest.mark.parametrize(("args", "field"), [
    ((5, "sideways", "IPv4", None, None, None, None, []), "direction"),
    ((5, "ingress", "IPX", None, None, None, None, []), "ethertype"),
    ((5, "ingress", "IPv4", None, None, None, "2001:db8::/64", []), "remote_ip_prefix"),
    ((5, "ingress", "IPv4", None, None, None, None, ["not-an-ip"]), "local_ips"),
    ((5, "ingress", "IPv4", "esp", 22, 22, None, ["10.0.0.1"]), "port_range_min"),
    ((5, "ingress", "IPv4", None, 22, 22, None, ["10.0.0.1"]), "port_range_min"),
    ((5, "ingress", "IPv4", "tcp", 30, 20, None, ["10.0.0.1"]), "port_range_max"),
    ((5, "ingress", "IPv4", "tcp", 70000, None, None, ["10.0.0.1"]), "port_range_min"),
    ((5, "ingress", "IPv4", "icmpv6", None, None, None, ["10.0.0.1"]), "protocol"),
    ((5, "ingress", "IPv4", "icmp", None, 3, None, ["10.0.0.1"]), "port_range_max"),
    ((5, "ingress", "IPv4", "bogus", None, None, None, ["10.0.0.1"]), "protocol"),
    ((70000, "ingress", "IPv4", None, None, None, None, ["10.0.0.1"]), "zone"),
])
def test_rule_requests_reject_bad_input(args: tuple[Any, ...], field: str) -> None:
    with pytest.raises(exc.InvalidArgumentError) as err:
        _rule_requests(*args)
    assert err.value.field == field


def test_remote_ip_requests_cover_both_directions_with_mark() -> None:
    reqs = [r.filters for r in remote_ip_requests(5, ["198.51.100.7", "2001:db8::7"], mark=3)]
    assert reqs == [
        {"family": "ipv4", "src": "198.51.100.7", "mark": 3, "zone": 5},
        {"family": "ipv4", "dst": "198.51.100.7", "mark": 3, "zone": 5},
        {"family": "ipv6", "src": "2001:db8::7", "mark": 3, "zone": 5},
        {"family": "ipv6", "dst": "2001:db8::7", "mark": 3, "zone": 5},
    ]


def test_remote_ip_requests_limited_to_the_ports_own_addresses() -> None:
    reqs = [r.filters for r in remote_ip_requests(
        5, ["198.51.100.7"], local_ips=["10.0.0.1", "2001:db8::1"])]
    assert [(r["src"], r["dst"]) for r in reqs] == [("198.51.100.7", "10.0.0.1"),
                                                    ("10.0.0.1", "198.51.100.7")]


def test_remote_ip_requests_empty_remotes_mean_every_flow_of_the_local_addresses() -> None:
    reqs = [r.filters for r in remote_ip_requests(5, [], local_ips=["10.0.0.1"])]
    assert reqs == [{"family": "ipv4", "src": "10.0.0.1", "zone": 5},
                    {"family": "ipv4", "dst": "10.0.0.1", "zone": 5}]


@pytest.mark.parametrize(("remotes", "locals_", "field"), [
    ([], [], "remote_ips"),
    (["2001:db8::7"], ["10.0.0.1"], "remote_ips"),
    (["bogus"], ["10.0.0.1"], "remote_ips"),
    (["10.0.0.9"], ["10.0.0.0/24"], "local_ips"),
])
def test_remote_ip_requests_refuse(remotes: list[str], locals_: list[str], field: str) -> None:
    with pytest.raises(exc.InvalidArgumentError) as err:
        remote_ip_requests(5, remotes, local_ips=locals_)
    assert err.value.field == field


def test_delete_by_remote_ips_with_no_address_at_all_runs_nothing() -> None:
    recorder = Recorder()
    with pytest.raises(exc.InvalidArgumentError):
        ConntrackHelper(executor=recorder).delete_by_remote_ips(5, [])
    assert recorder.calls == []


def test_delete_by_rule_with_no_matching_family_runs_nothing() -> None:
    recorder = Recorder()
    helper = ConntrackHelper(executor=recorder)
    assert helper.delete_by_rule(5, "ingress", "IPv6", None, None, None, None, ["10.0.0.1"]) == 0
    assert recorder.calls == []


def test_count_without_filters_uses_the_counter() -> None:
    recorder = Recorder(count=42)
    helper = ConntrackHelper(executor=recorder)
    assert helper.count() == 42
    assert [c.kind for c in recorder.calls] == ["count"]


def test_count_with_filters_parses_a_listing() -> None:
    recorder = Recorder([LINE.format(n=1, zone=5), LINE.format(n=2, zone=5)])
    helper = ConntrackHelper(executor=recorder)
    assert helper.count(zone=5) == 2


def test_flush_reports_what_was_there() -> None:
    recorder = Recorder(count=9)
    helper = ConntrackHelper(executor=recorder)
    assert helper.flush_table() == 9
    assert [c.kind for c in recorder.calls] == ["count", "flush"]


class VanishingRecorder(Recorder):
    """Fails the first delete as conntrack does when a flow vanished mid-way."""

    def __init__(self, failures: int) -> None:
        super().__init__(count=4)
        self.failures = failures

    def execute(self, command: Any, **kw: Any) -> Result:
        if command.kind == "delete" and self.failures:
            self.failures -= 1
            self.calls.append(command)
            raise exc.EntryNotFoundError(command.argv(), 1, "flow a\nflow b\n",
                                         "Operation failed: such conntrack doesn't exist\n")
        return super().execute(command, **kw)


def test_delete_entries_runs_again_when_a_flow_vanished_mid_delete() -> None:
    recorder = VanishingRecorder(failures=1)
    helper = ConntrackHelper(executor=recorder)
    assert helper.delete_entries(zone=5) == 2 + 4
    assert [c.kind for c in recorder.calls] == ["delete", "delete"]


def test_delete_entries_gives_up_after_repeated_vanishing() -> None:
    helper = ConntrackHelper(executor=VanishingRecorder(failures=5))
    with pytest.raises(exc.EntryNotFoundError):
        helper.delete_entries(zone=5)


def test_delete_entries_does_not_retry_other_failures() -> None:
    class Failing(Recorder):
        def execute(self, command: Any, **kw: Any) -> Result:
            self.calls.append(command)
            raise exc.CommandError(command.argv(), 1, "", "Operation failed: invalid parameters")

    recorder = Failing()
    with pytest.raises(exc.CommandError):
        ConntrackHelper(executor=recorder).delete_entries(zone=5)
    assert len(recorder.calls) == 1


def test_batch_size_and_backend_default_to_the_options() -> None:
    from oslo_config import cfg

    conf = cfg.ConfigOpts()
    conf([], project="conntrack_lib_test")
    helper = ConntrackHelper(executor=Recorder(), conf=conf)
    assert (helper.batch_size, helper.exact_delete_backend) == (1000, "auto")
    conf.set_override("batch_size", 7, group="conntrack_lib")
    conf.set_override("exact_delete_backend", "cli", group="conntrack_lib")
    helper = ConntrackHelper(executor=NetlinkRecorder(), conf=conf)
    assert (helper.batch_size, helper.exact_delete_backend) == (7, "cli")
    assert helper.plan_deletes([{"zone": 1}, {"zone": 2, "src": "10.0.0.1"}]).strategy == "cli"
    explicit = ConntrackHelper(executor=Recorder(), conf=conf, batch_size=3,
                               exact_delete_backend="netlink")
    assert (explicit.batch_size, explicit.exact_delete_backend) == (3, "netlink")


class VanishingBatchRecorder(Recorder):
    """Fails the first -R batch as conntrack does when a flow vanished mid-way."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def execute(self, command: Any, **kw: Any) -> Result:
        if command.kind == "batch" and not self.failed:
            self.failed = True
            self.calls.append(command)
            raise exc.CommandError(command.argv(), 1, "gone 1\n",
                                   "Operation failed: such conntrack doesn't exist\n")
        return super().execute(command, **kw)


def test_planned_batch_runs_again_when_a_flow_vanished_mid_batch() -> None:
    recorder = VanishingBatchRecorder()
    helper = ConntrackHelper(executor=recorder, exact_delete_backend="cli")
    report = helper.delete_many([{"zone": 5}, {"zone": 6}])
    assert [c.kind for c in recorder.calls] == ["batch", "batch"]
    # One flow printed by the aborted run, two lines by the full rerun.
    assert report.deleted == 1 + 2


def test_requests_are_validated_once_at_the_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    from conntrack_lib import command_fields, commands, planner

    requests = [planner.Request.build({"zone": 7, "proto": "udp", "dport": 53 + n})
                for n in range(20)]
    calls: list[object] = []
    validate = command_fields._validate

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return validate(*args, **kwargs)

    monkeypatch.setattr(command_fields, "_validate", counting)
    monkeypatch.setattr(commands, "_validate", counting)
    plan = planner.plan_deletes(requests, table_size=100, netlink=False)
    lines = plan.cli_lines
    assert plan.strategy == "cli" and len(lines) == 20
    # The -D lines are the commands built (and validated) by Request.build.
    assert [line is r.command for line, r in zip(lines, requests, strict=True)] == [True] * 20
    assert calls == []
