"""Python-side filter matching follows conntrack's own filter semantics."""

from __future__ import annotations

from typing import Any

import netaddr
import pytest

from conntrack_lib import matching
from conntrack_lib.models import Entry, FlowTuple


def _entry(**kw: Any) -> Entry:
    orig = FlowTuple(netaddr.IPAddress(kw.pop("src", "10.0.0.1")),
                     netaddr.IPAddress(kw.pop("dst", "10.0.0.2")),
                     kw.pop("sport", 1000), kw.pop("dport", 80))
    base: dict[str, Any] = dict(family="ipv4", proto="tcp", protonum=6, original=orig,
                                reply=kw.pop("reply", orig.inverted()), state="ESTABLISHED",
                                timeout=300, status=frozenset({"ASSURED"}), mark=0, zone=5)
    base.update(kw)
    return Entry(**base)


@pytest.mark.parametrize(("filters", "expected"), [
    ({}, True),
    ({"family": "ipv4"}, True),
    ({"family": "ipv6"}, False),
    ({"proto": "tcp"}, True),
    ({"proto": 6}, True),
    ({"proto": "udp"}, False),
    ({"src": "10.0.0.1"}, True),
    ({"src": "10.0.0.0/24"}, True),
    ({"src": "10.0.1.0/24"}, False),
    ({"dst": "10.0.0.2"}, True),
    ({"reply_src": "10.0.0.2"}, True),
    ({"reply_dst": "10.0.0.9"}, False),
    ({"sport": 1000, "dport": 80}, True),
    ({"dport": 81}, False),
    ({"reply_sport": 80}, True),
    ({"zone": 5}, True),
    ({"zone": 0}, False),
    ({"orig_zone": 5}, True),
    ({"reply_zone": 5}, True),
    ({"orig_zone": 0}, False),
    ({"mark": 0}, True),
    ({"mark": 1}, False),
    ({"mark": (0, 0xF0)}, True),
    ({"status": "ASSURED"}, True),
    ({"status": ["!ASSURED"]}, False),
    ({"status": "UNREPLIED"}, False),
    ({"state": "ESTABLISHED"}, True),
    ({"state": "SYN_SENT"}, False),
    ({"labels": ["a"]}, False),
    ({"secmark": 3}, False),
    ({"secmark": 0}, True),
    ({"any_nat": True}, False),
    ({"src": "10.0.0.1", "zone": 6}, False),
])
def test_matches(filters: dict[str, Any], expected: bool) -> None:
    assert matching.matches(_entry(), filters) is expected


def test_mark_mask_compares_masked_bits() -> None:
    assert matching.matches(_entry(mark=0x1F), {"mark": (0x10, 0xF0)})
    assert not matching.matches(_entry(mark=0x2F), {"mark": (0x10, 0xF0)})


def test_unreplied_entry_matches_unreplied_status() -> None:
    entry = _entry(status=frozenset({"UNREPLIED"}))
    assert matching.matches(entry, {"status": "UNREPLIED"})
    assert not matching.matches(entry, {"status": "SEEN_REPLY"})


def test_nat_is_a_reply_that_is_not_the_inverted_original() -> None:
    orig = FlowTuple(netaddr.IPAddress("10.0.0.1"), netaddr.IPAddress("10.0.0.2"), 1000, 80)
    dnat = _entry(reply=FlowTuple(netaddr.IPAddress("10.9.9.9"), orig.src, 8080, 1000))
    assert matching.matches(dnat, {"dst_nat": True})
    assert not matching.matches(dnat, {"src_nat": True})
    assert matching.matches(dnat, {"any_nat": True})


def test_nat_with_an_address_compares_the_translated_address_in_both_families() -> None:
    orig = FlowTuple(netaddr.IPAddress("fd00:10:96::a"), netaddr.IPAddress("fd00::1"), 5, 53)
    dnat = _entry(family="ipv6", proto="udp", protonum=17, original=orig, state=None,
                  reply=FlowTuple(netaddr.IPAddress("fd00:10:244::6"), orig.src, 53, 5))
    assert matching.matches(dnat, {"dst_nat": "fd00:10:244::6"})
    assert not matching.matches(dnat, {"dst_nat": "fd00:10:244::5"})
    assert matching.matches(dnat, {"dst_nat": ("fd00:10:244::6", 53)})
    assert not matching.matches(dnat, {"dst_nat": ("fd00:10:244::6", 54)})
    assert matching.matches(dnat, {"any_nat": "fd00:10:244::6"})
    assert not matching.matches(dnat, {"src_nat": "fd00:10:244::6"})


def test_zones_are_per_direction() -> None:
    orig_only = _entry(zone=0, orig_zone=3)
    assert matching.direction_zones(orig_only) == (3, 0)
    assert not matching.matches(orig_only, {"zone": 0})
    assert not matching.matches(orig_only, {"zone": 3})
    assert matching.matches(orig_only, {"orig_zone": 3})
    assert matching.matches(orig_only, {"reply_zone": 0})
    both = _entry(zone=7)
    assert not matching.matches(both, {"orig_zone": 0})
    assert not matching.matches(both, {"reply_zone": 0})


def test_hidden_status_bits_are_left_to_the_kernel() -> None:
    with pytest.raises(matching.UnmatchableError):
        matching.compile_filters({"status": ["FIXED_TIMEOUT"]})
    kernel, engine = matching.split_status({"status": ("ASSURED", "EXPECTED"), "zone": 0})
    assert kernel == {"status": ("EXPECTED",)}
    assert engine == {"status": ("ASSURED",), "zone": 0}
    seen = _entry(status=frozenset({"ASSURED", "FIXED_TIMEOUT"}))
    assert matching.compile_filters({"status": ["FIXED_TIMEOUT"]}, full_status=True)(seen)


def test_needs_names_the_output_a_dump_must_show() -> None:
    assert matching.needs({"id": 4, "labels": ["a"], "zone": 1}) == ("id", "labels")
    assert matching.needs({"zone": 1}) == ()


def test_labels_must_all_be_present() -> None:
    entry = _entry(labels=frozenset({"a", "b"}))
    assert matching.matches(entry, {"labels": ["a", "b"]})
    assert not matching.matches(entry, {"labels": ["a", "c"]})


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(KeyError):
        matching.compile_filters({"colour": "red"})


@pytest.mark.parametrize(("broad", "narrow", "expected"), [
    ({"zone": 5}, {"zone": 5, "src": "10.0.0.1"}, True),
    ({"zone": 5, "src": "10.0.0.1"}, {"zone": 5}, False),
    ({"zone": 5, "src": "10.0.0.0/24"}, {"zone": 5, "src": "10.0.0.7"}, True),
    ({"zone": 5, "src": "10.0.0.0/24"}, {"zone": 5, "src": "10.0.1.7"}, False),
    ({"zone": 5, "proto": "tcp"}, {"zone": 5, "proto": 6, "dport": 22}, True),
    ({"zone": 5}, {"zone": 6}, False),
    ({"mark": 5}, {"mark": (5, 0xFFFFFFFF)}, True),
    ({"status": ["ASSURED"]}, {"status": "ASSURED"}, True),
    ({"status": ["ASSURED"]}, {"status": ["ASSURED", "SEEN_REPLY"]}, False),
])
def test_subsumes(broad: dict[str, Any], narrow: dict[str, Any], expected: bool) -> None:
    assert matching.subsumes(broad, narrow) is expected
