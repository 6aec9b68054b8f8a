"""Value semantics of the model types."""

from __future__ import annotations

import dataclasses

import netaddr
import pytest

from conntrack_lib.models import Counters, CpuStats, Entry, Event, FlowTuple

A = netaddr.IPAddress("10.0.0.1")
B = netaddr.IPAddress("10.0.0.2")
V6A = netaddr.IPAddress("2001:db8::1")
V6B = netaddr.IPAddress("2001:db8::2")


def _entry(**kw: object) -> Entry:
    orig = FlowTuple(A, B, 1000, 80)
    base: dict[str, object] = dict(family="ipv4", proto="tcp", protonum=6, original=orig,
                                   reply=orig.inverted(), state="ESTABLISHED", timeout=300,
                                   status=frozenset({"ASSURED"}), mark=0, zone=5)
    base.update(kw)
    return Entry(**base)  # type: ignore[arg-type]


def test_equal_entries_hash_equal() -> None:
    assert _entry() == _entry()
    assert hash(_entry()) == hash(_entry())
    assert len({_entry(), _entry(), _entry(zone=6)}) == 2


def test_entries_differ_by_any_field() -> None:
    assert _entry(mark=1) != _entry(mark=0)
    assert _entry(extra=(("foo", "1"),)) != _entry()


def test_entry_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _entry().zone = 7  # type: ignore[misc]


def test_entry_str_is_readable() -> None:
    text = str(_entry())
    assert text == ("ipv4 tcp ESTABLISHED 10.0.0.1:1000 -> 10.0.0.2:80 zone=5 mark=0 "
                    "timeout=300 [ASSURED]")


def test_nat_entry_str_shows_reply() -> None:
    orig = FlowTuple(A, B, 1000, 80)
    nat = _entry(reply=FlowTuple(netaddr.IPAddress("10.9.9.9"), A, 8080, 1000))
    assert nat.is_nat
    assert "(reply 10.9.9.9:8080 -> 10.0.0.1:1000)" in str(nat)
    assert not _entry(reply=orig.inverted()).is_nat


def test_ipv6_endpoint_is_bracketed() -> None:
    assert str(FlowTuple(V6A, V6B, 1, 2)) == "[2001:db8::1]:1 -> [2001:db8::2]:2"
    assert str(FlowTuple(V6A, V6B)) == "2001:db8::1 -> 2001:db8::2"


def test_icmp_and_gre_tuples_print_their_fields() -> None:
    icmp = FlowTuple(A, B, icmp_type=8, icmp_code=0, icmp_id=77)
    assert str(icmp) == "10.0.0.1 -> 10.0.0.2 type=8 code=0 id=77"
    gre = FlowTuple(A, B, srckey=16, dstkey=32)
    assert str(gre) == "10.0.0.1 -> 10.0.0.2 srckey=0x10 dstkey=0x20"
    assert gre.inverted().srckey == 32


def test_repr_round_trips_through_eval() -> None:
    entry = _entry(counters=Counters(1, 2, 3, 4), labels=frozenset({"a"}))
    namespace = {"Entry": Entry, "FlowTuple": FlowTuple, "Counters": Counters,
                 "IPAddress": netaddr.IPAddress, "frozenset": frozenset}
    assert eval(repr(entry), namespace) == entry  # noqa: S307 - our own repr


def test_extra_is_the_only_name_for_unknown_pairs() -> None:
    entry = _entry(extra=(("k", "v"),))
    assert dict(entry.extra) == {"k": "v"}
    assert not hasattr(entry, "extras")


def test_event_str() -> None:
    event = Event("NEW", _entry(), portid=42, progname="conntrack")
    assert str(event).startswith("[NEW] ipv4 tcp")
    assert str(event).endswith("by conntrack")
    assert Event("NEW", _entry()) == Event("NEW", _entry())


def test_cpu_stats_mapping_access() -> None:
    stats = CpuStats(0, (("found", 3), ("insert", 7)))
    assert stats["insert"] == 7
    assert stats.get("missing") is None
    assert stats.get("found") == 3
    assert list(stats) == ["found", "insert"]
    assert stats.as_dict() == {"found": 3, "insert": 7}
    assert str(stats) == "cpu=0 found=3 insert=7"
    with pytest.raises(KeyError):
        stats["nope"]
    assert hash(stats) == hash(CpuStats(0, (("found", 3), ("insert", 7))))


def test_counters_str() -> None:
    assert str(Counters(1, 2, 3, 4)) == "orig 1p/2B reply 3p/4B"
