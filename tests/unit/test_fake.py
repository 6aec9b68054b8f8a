"""Unit tests of FakeConntrack: one behaviour of conntrack 1.4.7 per test."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import netaddr
import pytest

from conntrack_lib import commands, parser
from conntrack_lib import exceptions as exc
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Entry, FlowTuple
from conntrack_lib.testing import FakeClock, FakeConntrack, FakeConntrackFixture
from conntrack_lib.testing.fake import PREFIX

UDP = {"proto": "udp", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1, "dport": 2}
TCP = {"proto": "tcp", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 3, "dport": 4,
       "state": "ESTABLISHED"}
ICMP = {"proto": "icmp", "src": "10.0.0.1", "dst": "10.0.0.2", "icmp_type": 8,
        "icmp_code": 0, "icmp_id": 9}
UDP6 = {"proto": "udp", "src": "2001:db8::1", "dst": "2001:db8::2", "sport": 1, "dport": 2}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def fake(clock: FakeClock) -> FakeConntrack:
    return FakeConntrack(clock=clock, namespaces=["blue"])


def create(fake: FakeConntrack, fields: dict[str, Any], timeout: int = 300,
           namespace: str | None = None, **extra: Any) -> None:
    fake.execute(commands.CreateCommand(timeout=timeout, **fields, **extra),
                 namespace=namespace)


def listed(fake: FakeConntrack, **filters: Any) -> list[Entry]:
    result = fake.execute(commands.ListCommand(**filters))
    return parser.parse_entries(result.stdout, strict=True)


def without_ids(fake: FakeConntrack) -> list[Entry]:
    """Return the fake's entries as a plain text line shows them (no id)."""
    return [dataclasses.replace(e, id=None) for e in fake.entries()]


def ports(entries: list[Entry]) -> set[int | None]:
    return {e.original.sport for e in entries}


# ---------------------------------------------------------------------------
# Output grammar


def test_list_line_is_conntracks_default_grammar(fake: FakeConntrack) -> None:
    create(fake, TCP, timeout=1233, zone=10)
    assert fake.execute(commands.ListCommand()).stdout == (
        "tcp      6 1233 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=3 dport=4 [UNREPLIED] "
        "src=10.0.0.2 dst=10.0.0.1 sport=4 dport=3 mark=0 zone=10 use=1\n"
    )


def test_extended_and_id_output(fake: FakeConntrack) -> None:
    create(fake, UDP6)
    line = fake.execute(commands.ListCommand(output=["extended", "id"])).stdout
    assert line.startswith("ipv6     10 udp      17 300 src=2001:db8::1 ")
    assert line.rstrip().endswith(f"use=1 id={fake.entries()[0].id}")


def test_directional_zone_is_printed_inside_the_tuple(fake: FakeConntrack) -> None:
    create(fake, UDP, orig_zone=5)
    assert " dport=2 zone-orig=5 [UNREPLIED] " in fake.execute(commands.ListCommand()).stdout


@pytest.mark.parametrize("fields", [UDP, TCP, ICMP, UDP6,
                                    {"proto": "gre", "src": "10.0.0.1", "dst": "10.0.0.2",
                                     "srckey": 16, "dstkey": 32}])
def test_parsed_output_equals_entries(fake: FakeConntrack, fields: dict[str, Any]) -> None:
    create(fake, fields, zone=7, status=["ASSURED"], mark=3)
    result = fake.execute(commands.ListCommand(output=["id"]))
    assert parser.parse_entries(result.stdout, strict=True) == fake.entries()


def test_list_summary_on_stderr(fake: FakeConntrack) -> None:
    create(fake, UDP)
    result = fake.execute(commands.ListCommand())
    assert (result.stderr, result.count) == (f"{PREFIX}1 flow entries have been shown.\n", 1)


def test_empty_list_succeeds_with_zero(fake: FakeConntrack) -> None:
    result = fake.execute(commands.ListCommand())
    assert (result.exit_code, result.count, result.stdout) == (0, 0, "")


# ---------------------------------------------------------------------------
# Create


def test_create_defaults_unreplied_mark_zero_use_one(fake: FakeConntrack) -> None:
    create(fake, UDP)
    entry = fake.entries()[0]
    assert (entry.status, entry.mark, entry.use) == (frozenset({"UNREPLIED"}), 0, 1)


def test_create_reply_is_inverted_original(fake: FakeConntrack) -> None:
    create(fake, UDP)
    entry = fake.entries()[0]
    assert entry.reply == entry.original.inverted()


def test_create_explicit_reply_tuple(fake: FakeConntrack) -> None:
    create(fake, UDP, reply_src="10.9.9.9", reply_dst="10.0.0.1", reply_sport=7,
           reply_dport=1)
    assert fake.entries()[0].reply == FlowTuple(netaddr.IPAddress("10.9.9.9"),
                                                netaddr.IPAddress("10.0.0.1"), 7, 1)


def test_create_icmp_echo_gets_echo_reply(fake: FakeConntrack) -> None:
    create(fake, ICMP)
    assert fake.entries()[0].reply.icmp_type == 0


def test_create_untrackable_icmp_type_is_invalid(fake: FakeConntrack) -> None:
    with pytest.raises(exc.CommandError, match="invalid parameters"):
        create(fake, {**ICMP, "icmp_type": 3})


def test_create_status_seen_reply_drops_unreplied(fake: FakeConntrack) -> None:
    create(fake, TCP, status=["SEEN_REPLY", "ASSURED"])
    assert fake.entries()[0].status == frozenset({"ASSURED"})


def test_create_counts_one(fake: FakeConntrack) -> None:
    result = fake.execute(commands.CreateCommand(timeout=30, **UDP))
    assert (result.count, result.stderr) == (1, f"{PREFIX}1 flow entries have been created.\n")


def test_create_duplicate_raises_entry_exists(fake: FakeConntrack) -> None:
    create(fake, UDP)
    with pytest.raises(exc.EntryExistsError):
        create(fake, UDP)


def test_create_same_tuple_in_another_zone_is_allowed(fake: FakeConntrack) -> None:
    create(fake, UDP)
    create(fake, UDP, zone=4)
    assert sorted(e.zone for e in fake.entries()) == [0, 4]


def test_create_of_the_reply_tuple_clashes(fake: FakeConntrack) -> None:
    create(fake, UDP)
    mirrored = {**UDP, "src": UDP["dst"], "dst": UDP["src"], "sport": 2, "dport": 1}
    with pytest.raises(exc.EntryExistsError):
        create(fake, mirrored)


def test_orig_zone_entry_clashes_with_zone_zero_create(fake: FakeConntrack) -> None:
    # Its reply tuple lives in zone 0, so a zone-0 create of the tuple meets it.
    create(fake, UDP, orig_zone=6)
    with pytest.raises(exc.EntryExistsError):
        create(fake, {**UDP, "src": UDP["dst"], "dst": UDP["src"], "sport": 2, "dport": 1})


def test_tuples_are_filed_under_their_own_direction_zone(fake: FakeConntrack) -> None:
    # The reply tuple of the new flow equals the existing original tuple,
    # but the new flow files it under reply zone 4, the old one under 0.
    create(fake, UDP)
    mirrored = {**UDP, "src": UDP["dst"], "dst": UDP["src"], "sport": 2, "dport": 1}
    create(fake, mirrored, reply_zone=4)
    assert sorted(e.reply_zone or 0 for e in fake.entries()) == [0, 4]


def test_seeded_ids_may_repeat(fake: FakeConntrack) -> None:
    create(fake, UDP)
    twin = dataclasses.replace(fake.entries()[0], zone=5)
    fake.add_entry(twin)
    assert sorted(e.zone for e in fake.entries()) == [0, 5]


def test_create_with_source_nat_rewrites_reply_destination(fake: FakeConntrack) -> None:
    create(fake, UDP, src_nat=("10.9.9.9", 99))
    reply = fake.entries()[0].reply
    assert (str(reply.dst), reply.dport) == ("10.9.9.9", 99)


def test_create_timeout_zero_expires_at_once(fake: FakeConntrack) -> None:
    create(fake, UDP, timeout=0)
    assert fake.entries() == []


def test_create_clamps_huge_timeouts(fake: FakeConntrack) -> None:
    create(fake, UDP, timeout=2**31 - 1)
    assert fake.entries()[0].timeout == 8589934


# ---------------------------------------------------------------------------
# List filters


def test_zone_zero_means_zone_zero_in_both_directions(fake: FakeConntrack) -> None:
    create(fake, UDP)
    create(fake, {**UDP, "sport": 5}, zone=3)
    create(fake, {**UDP, "sport": 6}, orig_zone=3)
    assert ports(listed(fake, zone=0)) == {1}


def test_zone_filter_ignores_directional_zones(fake: FakeConntrack) -> None:
    create(fake, UDP, zone=3)
    create(fake, {**UDP, "sport": 6}, orig_zone=3)
    assert ports(listed(fake, zone=3)) == {1}


def test_orig_zone_filter(fake: FakeConntrack) -> None:
    create(fake, UDP, zone=3)
    create(fake, {**UDP, "sport": 6}, orig_zone=3)
    assert ports(listed(fake, orig_zone=3)) == {1, 6}


def test_reply_zone_is_the_flows_zone_in_the_reply_direction(fake: FakeConntrack) -> None:
    create(fake, UDP, zone=3)
    create(fake, {**UDP, "sport": 6}, reply_zone=4)
    create(fake, {**UDP, "sport": 7}, orig_zone=4)
    assert ports(listed(fake, reply_zone=0)) == {7}
    assert ports(listed(fake, reply_zone=3)) == {1}


def test_cidr_source_filter(fake: FakeConntrack) -> None:
    create(fake, UDP)
    create(fake, {**UDP, "src": "10.0.1.1"})
    assert {str(e.original.src) for e in listed(fake, src="10.0.0.0/24")} == {"10.0.0.1"}


def test_address_filter_implies_family(fake: FakeConntrack) -> None:
    create(fake, UDP)
    create(fake, UDP6)
    assert {e.family for e in listed(fake, dst="10.0.0.0/8")} == {"ipv4"}


def test_family_filter(fake: FakeConntrack) -> None:
    create(fake, UDP)
    create(fake, UDP6)
    assert [e.family for e in listed(fake, family="ipv6")] == ["ipv6"]


def test_port_filter_needs_matching_proto(fake: FakeConntrack) -> None:
    create(fake, UDP)
    create(fake, {**TCP, "sport": 1})
    assert [e.proto for e in listed(fake, proto="tcp", sport=1)] == ["tcp"]


def test_mark_with_mask(fake: FakeConntrack) -> None:
    create(fake, UDP, mark=0x105)
    create(fake, {**UDP, "sport": 5}, mark=0x205)
    assert ports(listed(fake, mark=(0x105, 0xFFF))) == {1}


def test_status_unreplied(fake: FakeConntrack) -> None:
    create(fake, TCP, status=["SEEN_REPLY"])
    create(fake, {**TCP, "sport": 9})
    assert ports(listed(fake, status=["UNREPLIED"])) == {9}


def test_status_negation(fake: FakeConntrack) -> None:
    create(fake, TCP, status=["ASSURED"])
    create(fake, {**TCP, "sport": 9})
    assert ports(listed(fake, status=["!ASSURED"])) == {9}


def test_state_filter(fake: FakeConntrack) -> None:
    create(fake, TCP)
    create(fake, {**TCP, "sport": 9, "state": "SYN_SENT"})
    assert ports(listed(fake, proto="tcp", state="SYN_SENT")) == {9}


# ---------------------------------------------------------------------------
# Delete


def test_delete_nothing_is_a_zero_count(fake: FakeConntrack) -> None:
    result = fake.execute(commands.DeleteCommand(zone=9))
    assert (result.exit_code, result.count) == (1, 0)


def test_delete_nothing_prints_zero_summary(fake: FakeConntrack) -> None:
    result = fake.execute(commands.DeleteCommand(zone=9))
    assert result.stderr == f"{PREFIX}0 flow entries have been deleted.\n"


def test_delete_by_zone_counts_and_keeps_others(fake: FakeConntrack) -> None:
    create(fake, UDP, zone=3)
    create(fake, {**UDP, "sport": 5}, zone=3)
    create(fake, UDP)
    result = fake.execute(commands.DeleteCommand(zone=3))
    assert (result.count, [e.zone for e in fake.entries()]) == (2, [0])


def test_delete_prints_deleted_entries(fake: FakeConntrack) -> None:
    create(fake, UDP)
    before = without_ids(fake)
    result = fake.execute(commands.DeleteCommand(src="10.0.0.1"))
    assert parser.parse_entries(result.stdout) == before


def test_delete_status_needs_positive_bits(fake: FakeConntrack) -> None:
    create(fake, TCP, status=["ASSURED"])
    create(fake, {**TCP, "sport": 9})
    fake.execute(commands.DeleteCommand(status=["ASSURED"]))
    assert ports(fake.entries()) == {9}


def test_delete_a_looped_flow(fake: FakeConntrack) -> None:
    create(fake, {**UDP, "dst": UDP["src"], "dport": UDP["sport"]})
    assert fake.execute(commands.DeleteCommand(proto="udp", dport=1)).count == 1


def test_delete_without_filters_deletes_everything(fake: FakeConntrack) -> None:
    create(fake, UDP, zone=3)
    create(fake, UDP6)
    assert fake.execute(commands.DeleteCommand()).count == 2


# ---------------------------------------------------------------------------
# Get


def test_get_finds_zone_zero_flow(fake: FakeConntrack) -> None:
    create(fake, UDP)
    result = fake.execute(commands.GetCommand(**UDP))
    assert (result.count, parser.parse_entries(result.stdout)) == (1, without_ids(fake))


def test_get_missing_raises_not_found(fake: FakeConntrack) -> None:
    with pytest.raises(exc.EntryNotFoundError, match="such conntrack doesn't exist"):
        fake.execute(commands.GetCommand(**UDP))


def test_get_cannot_see_zoned_flows(fake: FakeConntrack) -> None:
    create(fake, UDP, zone=3)
    with pytest.raises(exc.EntryNotFoundError):
        fake.execute(commands.GetCommand(**UDP))


def test_get_shows_a_flow_whose_reply_equals_its_original(fake: FakeConntrack) -> None:
    # Found through the zone-0 reply direction, but the original matches too.
    loop = {**UDP, "dst": UDP["src"], "dport": UDP["sport"]}
    create(fake, loop, orig_zone=3)
    assert fake.execute(commands.GetCommand(**loop)).count == 1


def test_lookups_find_the_newest_flow_first(fake: FakeConntrack) -> None:
    # Both flows file the looped tuple under zone 0 (one in each direction);
    # the kernel's hash chains put the newer one first.
    loop = {**UDP, "dst": UDP["src"], "dport": UDP["sport"]}
    create(fake, loop, reply_zone=4)
    create(fake, loop, orig_zone=3)
    shown = parser.parse_entries(fake.execute(commands.GetCommand(**loop)).stdout)
    assert [e.orig_zone for e in shown] == [3]


def test_get_by_reply_tuple_shows_nothing(fake: FakeConntrack) -> None:
    create(fake, UDP)
    mirrored = {**UDP, "src": UDP["dst"], "dst": UDP["src"], "sport": 2, "dport": 1}
    with pytest.raises(exc.EntryNotFoundError, match="0 flow entries have been shown"):
        fake.execute(commands.GetCommand(**mirrored))


# ---------------------------------------------------------------------------
# Update


def test_update_sets_mark_and_counts(fake: FakeConntrack) -> None:
    create(fake, UDP)
    result = fake.execute(commands.UpdateCommand(match={"src": "10.0.0.1"}, mark=9))
    assert (result.count, fake.entries()[0].mark) == (1, 9)


def test_update_that_changes_nothing_counts_zero(fake: FakeConntrack) -> None:
    create(fake, UDP, mark=9)
    result = fake.execute(commands.UpdateCommand(match={"src": "10.0.0.1"}, mark=9))
    assert (result.exit_code, result.count) == (1, 0)


def test_update_cannot_reach_zoned_flows(fake: FakeConntrack) -> None:
    create(fake, UDP, zone=3)
    result = fake.execute(commands.UpdateCommand(match={"src": "10.0.0.1"}, mark=9))
    assert (result.count, fake.entries()[0].mark) == (0, 0)


def test_update_of_zoned_flow_reports_enoent(fake: FakeConntrack) -> None:
    create(fake, UDP, zone=3)
    result = fake.execute(commands.UpdateCommand(match={"src": "10.0.0.1"}, mark=9))
    assert result.stderr.startswith("Operation failed: No such file or directory\n")


def test_update_landing_on_a_twin_cannot_clear_assured(fake: FakeConntrack) -> None:
    # The zone-3 flow's request reaches the zone-0 twin; dropping ASSURED
    # there is refused (EBUSY), yet 1.4.7 counts it.
    create(fake, TCP, status=["ASSURED"])
    create(fake, TCP, zone=3)
    result = fake.execute(commands.UpdateCommand(match={"src": "10.0.0.1"},
                                                 status=["SEEN_REPLY"]))
    statuses = sorted(sorted(e.status) for e in fake.entries())
    assert (result.count, statuses) == (2, [["ASSURED"], ["UNREPLIED"]])


def test_update_mark_mask_is_xor(fake: FakeConntrack) -> None:
    create(fake, UDP, mark=0xFF)
    fake.execute(commands.UpdateCommand(match={"src": "10.0.0.1"}, mark=(0x100, 0)))
    assert fake.entries()[0].mark == 0x1FF


def test_update_status_only_adds_bits(fake: FakeConntrack) -> None:
    create(fake, TCP, status=["ASSURED"])
    fake.execute(commands.UpdateCommand(match={"src": "10.0.0.1"}, status=["SEEN_REPLY"]))
    assert fake.entries()[0].status == frozenset({"ASSURED"})


def test_update_timeout(fake: FakeConntrack) -> None:
    create(fake, UDP)
    fake.execute(commands.UpdateCommand(match={"src": "10.0.0.1"}, timeout=50))
    assert fake.entries()[0].timeout == 50


def test_update_beyond_256_requests_overflows(fake: FakeConntrack) -> None:
    fake.execute(commands.BatchCommand([
        commands.CreateCommand(timeout=300, **{**UDP, "sport": port}) for port in range(300)
    ]))
    with pytest.raises(exc.CommandError, match="No buffer space available"):
        fake.execute(commands.UpdateCommand(match={"family": "ipv4"}, mark=1))


# ---------------------------------------------------------------------------
# Flush, count, stats


def test_flush_empties_every_family_and_zone(fake: FakeConntrack) -> None:
    create(fake, UDP, zone=3)
    create(fake, UDP6)
    fake.execute(commands.FlushCommand())
    assert fake.entries() == []


def test_flush_reports_no_count(fake: FakeConntrack) -> None:
    result = fake.execute(commands.FlushCommand())
    assert (result.count, result.stderr) == (
        None, f"{PREFIX}connection tracking table has been emptied.\n")


def test_count_includes_all_zones_and_families(fake: FakeConntrack) -> None:
    create(fake, UDP, zone=3)
    create(fake, UDP6)
    create(fake, TCP)
    assert fake.execute(commands.CountCommand()).count == 3


def test_stats_count_inserts(fake: FakeConntrack) -> None:
    create(fake, UDP)
    create(fake, TCP)
    stats = parser.parse_stats(fake.execute(commands.StatsCommand()).stdout)
    assert stats[0]["insert"] == 2


# ---------------------------------------------------------------------------
# Batches (-R)


def _batch(*items: commands.Command) -> commands.BatchCommand:
    return commands.BatchCommand(list(items))


def test_batch_runs_in_order_without_summary(fake: FakeConntrack) -> None:
    result = fake.execute(_batch(commands.CreateCommand(timeout=30, **UDP),
                                 commands.DeleteCommand(src="10.0.0.1"),
                                 commands.CreateCommand(timeout=30, **TCP)))
    assert (result.count, result.stderr, [e.proto for e in fake.entries()]) == (
        None, "", ["tcp"])


def test_batch_delete_matching_nothing_is_not_an_error(fake: FakeConntrack) -> None:
    result = fake.execute(_batch(commands.DeleteCommand(zone=5)))
    assert result.exit_code == 0


def test_batch_stops_at_first_kernel_error(fake: FakeConntrack) -> None:
    batch = _batch(commands.CreateCommand(timeout=30, **UDP),
                   commands.CreateCommand(timeout=30, **UDP),
                   commands.CreateCommand(timeout=30, **TCP))
    with pytest.raises(exc.EntryExistsError):
        fake.execute(batch)
    assert [e.proto for e in fake.entries()] == ["udp"]


def test_batch_is_one_process(fake: FakeConntrack) -> None:
    fake.execute(_batch(*(commands.CreateCommand(timeout=30, **{**UDP, "sport": p})
                          for p in range(5))))
    assert (fake.processes, len(fake.entries())) == (1, 5)


# ---------------------------------------------------------------------------
# Time


def test_timeout_counts_down_with_the_clock(fake: FakeConntrack, clock: FakeClock) -> None:
    create(fake, UDP, timeout=30)
    clock.advance(12)
    assert fake.entries()[0].timeout == 18


def test_entry_expires_when_timeout_reaches_zero(fake: FakeConntrack,
                                                 clock: FakeClock) -> None:
    create(fake, UDP, timeout=30)
    clock.advance(30)
    assert fake.execute(commands.CountCommand()).count == 0


def test_clock_does_not_run_back(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        clock.advance(-1)


# ---------------------------------------------------------------------------
# Namespaces


def test_missing_namespace_raises_namespace_not_found(fake: FakeConntrack) -> None:
    with pytest.raises(exc.NamespaceNotFoundError):
        fake.execute(commands.ListCommand(), namespace="green")


def test_bad_namespace_name_is_invalid(fake: FakeConntrack) -> None:
    with pytest.raises(exc.InvalidArgumentError):
        fake.execute(commands.ListCommand(), namespace="../etc")


def test_namespaces_have_separate_tables(fake: FakeConntrack) -> None:
    create(fake, UDP, namespace="blue")
    assert (len(fake.entries("blue")), len(fake.entries())) == (1, 0)


def test_namespaced_argv_enters_the_namespace(fake: FakeConntrack) -> None:
    result = fake.execute(commands.CountCommand(), namespace="blue")
    assert result.cmd[:2] == ("/usr/bin/nsenter", "--net=/run/netns/blue")


def test_removed_namespace_is_gone(fake: FakeConntrack) -> None:
    fake.remove_namespace("blue")
    with pytest.raises(exc.NamespaceNotFoundError):
        fake.execute(commands.CountCommand(), namespace="blue")


# ---------------------------------------------------------------------------
# Test helpers: calls, processes, seeding, fault injection


def test_calls_record_commands_in_order(fake: FakeConntrack) -> None:
    commands_run = [commands.CountCommand(), commands.ListCommand(zone=1)]
    for command in commands_run:
        fake.execute(command)
    assert fake.calls == commands_run


def test_failed_commands_are_calls_too(fake: FakeConntrack) -> None:
    with pytest.raises(exc.EntryNotFoundError):
        fake.execute(commands.GetCommand(**UDP))
    assert fake.processes == 1


def test_fail_next_raises_once(fake: FakeConntrack) -> None:
    fake.fail_next(exc.CommandTimeoutError(("conntrack",), None, "", "timed out"))
    with pytest.raises(exc.CommandTimeoutError):
        fake.execute(commands.CountCommand())
    assert fake.execute(commands.CountCommand()).count == 0


def test_add_entry_seeds_what_it_shows(fake: FakeConntrack) -> None:
    entry = Entry("ipv4", "tcp", 6, FlowTuple(netaddr.IPAddress("10.1.1.1"),
                                              netaddr.IPAddress("10.1.1.2"), 5, 6),
                  FlowTuple(netaddr.IPAddress("10.1.1.2"), netaddr.IPAddress("10.1.1.1"), 6, 5),
                  state="ESTABLISHED", timeout=40, status=frozenset({"ASSURED"}), mark=7,
                  zone=2, use=1)
    fake.add_entry(entry)
    assert fake.entries() == [entry.__class__(**{**_fields(entry), "id": fake.entries()[0].id})]


def _fields(entry: Entry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__dataclass_fields__}


def test_add_entry_refuses_a_duplicate(fake: FakeConntrack) -> None:
    create(fake, UDP)
    with pytest.raises(exc.EntryExistsError):
        fake.add_entry(fake.entries()[0])


def test_add_entry_runs_no_process(fake: FakeConntrack) -> None:
    create(fake, UDP)
    entry = fake.entries()[0]
    fake.clear()
    fake.add_entry(entry)
    assert fake.processes == 1


def test_iter_lines_yields_list_output(fake: FakeConntrack) -> None:
    create(fake, UDP)
    create(fake, TCP)
    assert len(list(fake.iter_lines(commands.ListCommand()))) == 2


def test_iter_lines_refuses_other_kinds(fake: FakeConntrack) -> None:
    with pytest.raises(exc.InvalidArgumentError):
        fake.iter_lines(commands.CountCommand())


def test_events_report_user_space_changes(fake: FakeConntrack) -> None:
    create(fake, UDP)
    fake.execute(commands.DeleteCommand(src="10.0.0.1"))
    result = fake.execute(commands.EventsCommand(duration=1))
    assert [e.type for e in parser.parse_events(result.stdout)] == ["NEW", "DESTROY"]


def test_event_mask_selects_types(fake: FakeConntrack) -> None:
    create(fake, UDP)
    fake.execute(commands.DeleteCommand(src="10.0.0.1"))
    result = fake.execute(commands.EventsCommand(duration=1, event_mask=["DESTROY"]))
    assert result.count == 1


def test_event_filters_apply(fake: FakeConntrack) -> None:
    create(fake, UDP)
    create(fake, UDP, zone=3)
    result = fake.execute(commands.EventsCommand(duration=1, zone=3))
    assert [e.entry.zone for e in parser.parse_events(result.stdout)] == [3]


def test_expiry_is_a_destroy_event(fake: FakeConntrack, clock: FakeClock) -> None:
    create(fake, UDP, timeout=5)
    clock.advance(5)
    result = fake.execute(commands.EventsCommand(duration=1, event_mask=["DESTROY"]))
    assert [e.portid for e in parser.parse_events(result.stdout)] == [None]


def test_delete_flows_by_tuple_and_zone(fake: FakeConntrack) -> None:
    create(fake, UDP, zone=3)
    create(fake, UDP)
    zoned = [e for e in fake.entries() if e.zone == 3]
    assert (fake.delete_flows(zoned), [e.zone for e in fake.entries()]) == ([0], [0])


def test_delete_flows_reports_enoent_for_gone_flows(fake: FakeConntrack) -> None:
    create(fake, UDP)
    entry = fake.entries()[0]
    fake.clear()
    assert fake.delete_flows([entry]) == [2]


# ---------------------------------------------------------------------------
# Fixtures and integration


def test_fixture_gives_fake_and_clock() -> None:
    fixture = FakeConntrackFixture(namespaces=["red"], start=50.0)
    fixture.setUp()
    try:
        create(fixture.fake, UDP, timeout=10, namespace="red")
        fixture.clock.advance(4)
        assert fixture.fake.entries("red")[0].timeout == 6
    finally:
        fixture.cleanUp()


def test_pytest_fixture_is_fresh(fake_conntrack: FakeConntrack) -> None:
    assert (fake_conntrack.entries(), fake_conntrack.calls) == ([], [])


def test_pytest_fixture_clock_is_controllable(fake_conntrack: FakeConntrack) -> None:
    create(fake_conntrack, UDP, timeout=10)
    fake_conntrack.clock.advance(10)  # type: ignore[attr-defined]
    assert fake_conntrack.entries() == []


def test_plugin_import_is_cheap() -> None:
    code = ("import sys, conntrack_lib.testing.pytest_plugin; "
            "print('conntrack_lib.testing.fake' in sys.modules, 'oslo_privsep' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


def test_helper_runs_on_the_fake(fake: FakeConntrack) -> None:
    helper = ConntrackHelper(executor=fake, exact_delete_backend="cli")
    helper.create_entry(timeout=60, **UDP)
    assert helper.delete_entries(src="10.0.0.1") == 1


def test_helper_exact_deletes_use_the_fakes_netlink_path(fake: FakeConntrack) -> None:
    helper = ConntrackHelper(executor=fake)
    helper.create_entry(timeout=60, zone=3, **UDP)
    assert (helper.delete_flows(fake.entries()), fake.netlink_requests) == (1, 1)


def test_labels_are_kept_only_while_a_ruleset_uses_them() -> None:
    # The kernel drops a create's labels silently without label storage
    # (measured: conntrack -I --label-add exits 0, the flow lists no labels).
    fake = FakeConntrack(namespaces=["lab"])
    before = ConntrackHelper(namespace="lab", executor=fake)
    flow = {"proto": "udp", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1, "dport": 2,
            "timeout": 30}
    before.create_entry(**flow, label_add=("red", "green"))
    assert [e.labels for e in before.list_entries(output=("labels",))] == [frozenset()]
    before.update_entries({"src": "10.0.0.1"}, label_add="red")  # ENOSPC per flow
    assert [e.labels for e in before.list_entries(output=("labels",))] == [frozenset()]
    fake.use_labels("lab")
    before.create_entry(**dict(flow, src="10.0.0.3"), label_add="red,green")
    assert before.count(labels=("green", "red")) == 1
    assert before.update_entries({"src": "10.0.0.3"}, label_del="red") == 1
    assert [e.labels for e in before.list_entries(src="10.0.0.3", output=("labels",))] == [
        frozenset({"green"})]
    with pytest.raises(KeyError):
        fake.use_labels("elsewhere")
