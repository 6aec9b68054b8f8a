"""Neutron's inputs as Neutron sends them: protocols, rules, remote addresses."""

from __future__ import annotations

from typing import Any

import pytest

from conntrack_lib import commands, constants, matching
from conntrack_lib import exceptions as exc
from conntrack_lib.helper import ConntrackHelper, SecurityGroupRule
from conntrack_lib.testing import FakeConntrack

#: neutron-lib's IP_PROTOCOL_MAP (plus the legacy 'icmpv6'), name -> number.
NEUTRON_NAMES = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1,
    "igmp": 2, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58,
    "icmpv6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89,
    "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}


def _expected(number: int) -> str | int:
    return constants.PROTOCOL_NAMES.get(number, number)


ACCEPTED: list[tuple[Any, str | int]] = (
    [(name, _expected(num)) for name, num in NEUTRON_NAMES.items()]
    + [(name.upper(), _expected(num)) for name, num in NEUTRON_NAMES.items()]
    + [(name.title(), _expected(num)) for name, num in NEUTRON_NAMES.items()]
    + [(n, _expected(n)) for n in range(256)]
    + [(str(n), _expected(n)) for n in range(256)]
)


@pytest.mark.parametrize(("value", "canonical"), ACCEPTED)
def test_every_protocol_neutron_sends_is_accepted_and_mapped(value: Any,
                                                             canonical: str | int) -> None:
    assert commands.ListCommand(proto=value).get("proto") == canonical
    assert commands.DeleteCommand(proto=value).get("proto") == canonical


def test_the_names_of_icmpv6_and_58_are_one_protocol() -> None:
    forms = ["icmpv6", "ipv6-icmp", "IPV6-ICMP", 58, "58"]
    assert {commands.ListCommand(proto=p).get("proto") for p in forms} == {"icmpv6"}


def test_the_table_covers_neutron_libs_whole_list() -> None:
    assert constants.NEUTRON_PROTOCOL_NUMBERS == NEUTRON_NAMES


@pytest.mark.parametrize("value", [
    256, -1, "256", "-1", "+6", " 6", "6 ", "6\n", "0x6", "6.0", 6.0, True, False, "",
    "ip", "ipv6", "icmp6", "tcp6", "any", "ANY", "bogus", "t\x00cp", "٦", ["tcp"], None,
])
def test_anything_else_is_refused_naming_the_value(value: Any) -> None:
    if value is None:
        # None means "no protocol filter" for filters, never a protocol.
        assert commands.ListCommand(proto=value).get("proto") is None
        return
    with pytest.raises(exc.InvalidArgumentError) as err:
        commands.ListCommand(proto=value)
    assert err.value.field == "proto"
    assert err.value.value == value


@pytest.mark.parametrize("value", [None, "any", "ANY", 0, "0"])
def test_a_rule_says_any_protocol_these_ways(value: Any) -> None:
    assert SecurityGroupRule("ingress", "IPv4", value).protocol is None


@pytest.mark.parametrize(("value", "ethertype", "canonical"), [
    (6, "IPv4", "tcp"), ("6", "IPv4", "tcp"), ("TCP", "IPv4", "tcp"), ("Udp", "IPv6", "udp"),
    ("icmp", "IPv6", "icmpv6"), (1, "IPv6", "icmpv6"), ("ipv6-icmp", "IPv6", "icmpv6"),
    ("58", "IPv6", "icmpv6"), ("vrrp", "IPv4", 112), ("112", "IPv4", 112),
    ("esp", "IPv6", 50), ("AH", "IPv4", 51), ("gre", "IPv4", "gre"),
])
def test_rule_protocols_as_neutron_sends_them(value: Any, ethertype: str,
                                              canonical: str | int) -> None:
    assert SecurityGroupRule("ingress", ethertype, value).protocol == canonical


@pytest.mark.parametrize("protocol", [6, "6", "TCP", "tcp", "Tcp"])
def test_a_port_rule_keeps_its_port_filter_whatever_the_protocol_spelling(
        protocol: Any) -> None:
    fake = FakeConntrack()
    helper = ConntrackHelper(executor=fake)
    for dport in (22, 80):
        helper.create_entry(proto="tcp", src="198.51.100.1", dst="10.0.0.1", sport=40000,
                            dport=dport, state="ESTABLISHED", timeout=300, zone=5)
    deleted = helper.delete_by_rule(5, "ingress", "IPv4", protocol, 22, 22, None, ["10.0.0.1"])
    assert deleted == 1
    assert [e.original.dport for e in fake.entries()] == [80]


def test_an_icmp_rule_deletes_only_its_type_and_code() -> None:
    fake = FakeConntrack()
    helper = ConntrackHelper(executor=fake)
    for icmp_type in (8, 13):
        helper.create_entry(proto="icmp", src="198.51.100.1", dst="10.0.0.1",
                            icmp_type=icmp_type, icmp_code=0, icmp_id=7, timeout=30, zone=5)
    assert helper.delete_by_rule(5, "ingress", "IPv4", "icmp", 8, 0, None, ["10.0.0.1"]) == 1
    assert [e.original.icmp_type for e in fake.entries()] == [13]


def test_remote_ip_deletes_limited_to_the_ports_addresses_and_empty_means_all() -> None:
    fake = FakeConntrack()
    helper = ConntrackHelper(executor=fake)
    for local, remote in (("10.0.0.1", "198.51.100.1"), ("10.0.0.2", "198.51.100.1"),
                          ("10.0.0.1", "198.51.100.2")):
        helper.create_entry(proto="udp", src=remote, dst=local, sport=5000, dport=53,
                            timeout=30, zone=5)
    assert helper.delete_by_remote_ips(5, ["198.51.100.1"], local_ips=["10.0.0.1"]) == 1
    assert helper.delete_by_remote_ips(5, [], local_ips=["10.0.0.1"]) == 1
    assert [str(e.original.dst) for e in fake.entries()] == ["10.0.0.2"]
    with pytest.raises(exc.InvalidArgumentError, match="no local address"):
        helper.delete_by_remote_ips(5, ["2001:db8::1"], local_ips=["10.0.0.1"])


def test_rule_from_a_neutron_dict_ignores_unrelated_keys() -> None:
    rule = SecurityGroupRule.from_neutron({
        "direction": "egress", "ethertype": "ipv6", "protocol": "58", "id": "x",
        "port_range_min": 128, "port_range_max": 0, "security_group_id": "y"})
    assert rule == SecurityGroupRule("egress", "IPv6", "icmpv6", 128, 0)
    with pytest.raises(exc.InvalidArgumentError):
        SecurityGroupRule.from_neutron({"direction": "egress"})


def test_prefilter_tokens_are_necessary_for_a_match() -> None:
    keep = matching.line_prefilter([{"dport": 22}, {"dst": "10.0.0.1"}], [7])
    assert keep is not None
    assert keep("tcp 6 9 src=1.1.1.1 dst=2.2.2.2 sport=5 dport=22 src=2.2.2.2 use=1")
    assert keep("udp 17 9 src=1.1.1.1 dst=10.0.0.1 sport=5 dport=9 use=1")
    assert keep("udp 17 9 src=1.1.1.1 dst=3.3.3.3 sport=5 dport=9 mark=0 zone=7 use=1")
    assert not keep("udp 17 9 src=1.1.1.1 dst=10.0.0.11 sport=5 dport=220 zone=70 use=1")
    assert matching.line_prefilter([{"src": "10.0.0.0/24"}]) is None
