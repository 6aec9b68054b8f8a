"""Table-driven tests of conntrack_lib.commands: argv, load lines, validation."""

from __future__ import annotations

import pickle
from typing import Any

import netaddr
import pytest

from conntrack_lib import commands as c
from conntrack_lib import models
from conntrack_lib import validators as val
from conntrack_lib.exceptions import InvalidArgumentError

TCP = {"proto": "tcp", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1, "dport": 2}

# (command, expected argv)
ARGV_CASES: list[tuple[c.Command, tuple[str, ...]]] = [
    (c.ListCommand(), ("-L",)),
    (c.ListCommand(family="IPv6"), ("-L", "-f", "ipv6")),
    (c.ListCommand(proto=6), ("-L", "-p", "tcp")),
    (c.ListCommand(proto=89), ("-L", "-p", "89")),
    (c.ListCommand(proto=0), ("-L", "-p", "0")),
    (c.ListCommand(src="10.0.0.0/8"), ("-L", "-s", "10.0.0.0/8")),
    (c.ListCommand(dst="2001:DB8::/32"), ("-L", "-d", "2001:db8::/32")),
    (c.ListCommand(src=netaddr.IPNetwork("10.1.0.0/16")), ("-L", "-s", "10.1.0.0/16")),
    (c.ListCommand(reply_src="10.0.0.1", reply_dst="10.0.0.2"),
     ("-L", "-r", "10.0.0.1", "-q", "10.0.0.2")),
    (c.ListCommand(src="10.0.0.0", mask_src="255.0.0.0", dst="10.0.0.1",
                   mask_dst="255.255.0.0"),
     ("-L", "-s", "10.0.0.0", "-d", "10.0.0.1", "--mask-src", "255.0.0.0",
      "--mask-dst", "255.255.0.0")),
    (c.ListCommand(dport=22, proto="tcp"), ("-L", "-p", "tcp", "--dport", "22")),
    (c.ListCommand(proto="udp", sport=1, reply_sport=3, reply_dport=4),
     ("-L", "-p", "udp", "--sport", "1", "--reply-port-src", "3", "--reply-port-dst", "4")),
    (c.ListCommand(proto="tcp", state="established"),
     ("-L", "-p", "tcp", "--state", "ESTABLISHED")),
    (c.ListCommand(proto="sctp", state="COOKIE_WAIT"),
     ("-L", "-p", "sctp", "--state", "COOKIE_WAIT")),
    (c.ListCommand(proto="dccp", state="OPEN"), ("-L", "-p", "dccp", "--state", "OPEN")),
    (c.ListCommand(proto="icmp", icmp_type=8, icmp_code=0, icmp_id=7),
     ("-L", "-p", "icmp", "--icmp-type", "8", "--icmp-code", "0", "--icmp-id", "7")),
    (c.ListCommand(proto="icmpv6", icmp_type=128),
     ("-L", "-p", "icmpv6", "--icmpv6-type", "128")),
    (c.ListCommand(proto="gre", srckey=16, dstkey=32, reply_srckey=32, reply_dstkey=16),
     ("-L", "-p", "gre", "--srckey", "16", "--dstkey", "32", "--reply-key-src", "32",
      "--reply-key-dst", "16")),
    (c.ListCommand(status="ASSURED,seen_reply"), ("-L", "-u", "ASSURED,SEEN_REPLY")),
    (c.ListCommand(status=["!ASSURED", "UNREPLIED"]), ("-L", "-u", "!ASSURED,UNREPLIED")),
    (c.ListCommand(status=("ASSURED", "ASSURED")), ("-L", "-u", "ASSURED")),
    (c.ListCommand(mark=5), ("-L", "-m", "5")),
    (c.ListCommand(mark=(1, 0xFF)), ("-L", "-m", "1/255")),
    (c.ListCommand(mark=[0, 0]), ("-L", "-m", "0/0")),
    (c.ListCommand(status="ASSURED", mark=3), ("-L", "-u", "ASSURED", "-m", "3")),
    (c.ListCommand(zone=0), ("-L", "-w", "0")),
    (c.ListCommand(zone=65535, orig_zone=1, reply_zone=2),
     ("-L", "-w", "65535", "--orig-zone", "1", "--reply-zone", "2")),
    (c.ListCommand(secmark=5), ("-L", "-c", "5")),
    (c.ListCommand(labels="a,b_1"), ("-L", "-l", "a", "-l", "b_1")),
    (c.ListCommand(labels=["x"]), ("-L", "-l", "x")),
    (c.ListCommand(src_nat=True), ("-L", "-n")),
    (c.ListCommand(dst_nat="10.0.0.9"), ("-L", "-g", "10.0.0.9")),
    (c.ListCommand(src_nat=("10.0.0.9", 80)), ("-L", "-n", "10.0.0.9:80")),
    (c.ListCommand(dst_nat=["2001:db8::1", 443]), ("-L", "-g", "[2001:db8::1]:443")),
    (c.ListCommand(src_nat=True, dst_nat=True), ("-L", "-n", "-g")),
    (c.ListCommand(any_nat=True), ("-L", "-j")),
    (c.ListCommand(any_nat="::1"), ("-L", "-j", "::1")),
    (c.ListCommand(output=["extended", "id"]), ("-L", "-o", "extended,id")),
    (c.ListCommand(output="XML,labels,ktimestamp"), ("-L", "-o", "xml,labels,ktimestamp")),
    (c.ListCommand(output=()), ("-L",)),
    (c.ListCommand(family=None, src=None), ("-L",)),
    (c.GetCommand(**TCP), ("-G", "-p", "tcp", "-s", "10.0.0.1", "-d", "10.0.0.2",
                           "--sport", "1", "--dport", "2")),
    (c.GetCommand(**TCP, family="ipv4", output=["id"], id=9, labels="a",
                  reply_src="10.0.0.2", reply_dst="10.0.0.1", state="ESTABLISHED",
                  reply_sport=2, reply_dport=1),
     ("-G", "-p", "tcp", "-s", "10.0.0.1", "-d", "10.0.0.2", "-r", "10.0.0.2", "-q",
      "10.0.0.1", "--sport", "1", "--dport", "2", "--reply-port-src", "2",
      "--reply-port-dst", "1", "--state", "ESTABLISHED", "-l", "a", "-i", "9", "-o", "id")),
    (c.GetCommand(proto="icmp", src="10.0.0.1", dst="10.0.0.2", icmp_type=8, icmp_code=0),
     ("-G", "-p", "icmp", "-s", "10.0.0.1", "-d", "10.0.0.2", "--icmp-type", "8",
      "--icmp-code", "0")),
    (c.GetCommand(proto="gre", src="10.0.0.1", dst="10.0.0.2", srckey=1, dstkey=2),
     ("-G", "-p", "gre", "-s", "10.0.0.1", "-d", "10.0.0.2", "--srckey", "1", "--dstkey", "2")),
    (c.GetCommand(proto="sctp", src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2,
                  orig_vtag=1, reply_vtag=2),
     ("-G", "-p", "sctp", "-s", "10.0.0.1", "-d", "10.0.0.2", "--sport", "1", "--dport", "2",
      "--orig-vtag", "1", "--reply-vtag", "2")),
    (c.GetCommand(proto=89, src="::1", dst="::2"), ("-G", "-p", "89", "-s", "::1", "-d", "::2")),
    (c.CreateCommand(**TCP, state="ESTABLISHED", timeout=300, zone=5),
     ("-I", "-p", "tcp", "-s", "10.0.0.1", "-d", "10.0.0.2", "--sport", "1", "--dport", "2",
      "--state", "ESTABLISHED", "-t", "300", "-w", "5")),
    (c.CreateCommand(**TCP, state="CLOSE", timeout=0, mark=42, status="ASSURED",
                     label_add="a,b", orig_zone=3, family="ipv4"),
     ("-I", "-p", "tcp", "-s", "10.0.0.1", "-d", "10.0.0.2", "--sport", "1", "--dport", "2",
      "--state", "CLOSE", "-t", "0", "-u", "ASSURED", "-m", "42", "--orig-zone", "3",
      "--label-add", "a", "--label-add", "b")),
    (c.CreateCommand(proto="udp", reply_src="10.0.0.2", reply_dst="10.0.0.1", reply_sport=2,
                     reply_dport=1, timeout=5, reply_zone=4, status="UNSET"),
     ("-I", "-p", "udp", "-r", "10.0.0.2", "-q", "10.0.0.1", "--reply-port-src", "2",
      "--reply-port-dst", "1", "-t", "5", "-u", "UNSET", "--reply-zone", "4")),
    (c.CreateCommand(proto="udp", src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2,
                     timeout=5, src_nat=("10.0.0.9", 4000), dst_nat="10.0.0.8"),
     ("-I", "-p", "udp", "-s", "10.0.0.1", "-d", "10.0.0.2", "--sport", "1", "--dport", "2",
      "-t", "5", "-n", "10.0.0.9:4000", "-g", "10.0.0.8")),
    (c.CreateCommand(proto="sctp", src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2,
                     state="ESTABLISHED", orig_vtag=1, reply_vtag=0xFFFFFFFF, timeout=9),
     ("-I", "-p", "sctp", "-s", "10.0.0.1", "-d", "10.0.0.2", "--sport", "1", "--dport", "2",
      "--state", "ESTABLISHED", "--orig-vtag", "1", "--reply-vtag", "4294967295", "-t", "9")),
    (c.CreateCommand(proto="dccp", src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2,
                     state="OPEN", role="Client", timeout=9),
     ("-I", "-p", "dccp", "-s", "10.0.0.1", "-d", "10.0.0.2", "--sport", "1", "--dport", "2",
      "--state", "OPEN", "--role", "client", "-t", "9")),
    (c.CreateCommand(proto="icmpv6", src="::1", dst="::2", icmp_type=128, icmp_code=0,
                     timeout=9),
     ("-I", "-p", "icmpv6", "-s", "::1", "-d", "::2", "--icmpv6-type", "128",
      "--icmpv6-code", "0", "-t", "9")),
    (c.CreateCommand(proto="gre", src="10.0.0.1", dst="10.0.0.2", srckey=1, dstkey=2,
                     timeout=9),
     ("-I", "-p", "gre", "-s", "10.0.0.1", "-d", "10.0.0.2", "--srckey", "1", "--dstkey", "2",
      "-t", "9")),
    (c.CreateCommand(proto=89, src="10.0.0.1", dst="10.0.0.2", timeout=2**31 - 1),
     ("-I", "-p", "89", "-s", "10.0.0.1", "-d", "10.0.0.2", "-t", "2147483647")),
    (c.UpdateCommand(match={"src": "10.0.0.1"}, mark=7),
     ("-U", "-f", "ipv4", "-s", "10.0.0.1", "-m", "7")),
    (c.UpdateCommand(match={"family": "ipv6"}, timeout=5, status="ASSURED", mark=(1, 3)),
     ("-U", "-f", "ipv6", "-t", "5", "-u", "ASSURED", "-m", "1/3")),
    (c.UpdateCommand(match={"proto": "tcp", "src": "::1", "dport": 22}, state="CLOSE"),
     ("-U", "-f", "ipv6", "-p", "tcp", "-s", "::1", "--dport", "22", "--state", "CLOSE")),
    (c.UpdateCommand(match={"family": "ipv4", "labels": "a"}, label_add=["b"]),
     ("-U", "-f", "ipv4", "-l", "a", "--label-add", "b")),
    (c.UpdateCommand(match={"family": "ipv4"}, label_del=True),
     ("-U", "-f", "ipv4", "--label-del")),
    (c.UpdateCommand(match={"family": "ipv4", "id": 3, "src_nat": True}, label_del="a"),
     ("-U", "-f", "ipv4", "--label-del", "a", "-n", "-i", "3")),
    (c.UpdateCommand(match={"src": "10.0.0.0/8", "mask_dst": "255.0.0.0", "dst": "10.0.0.0"},
                     timeout=1),
     ("-U", "-f", "ipv4", "-s", "10.0.0.0/8", "-d", "10.0.0.0", "--mask-dst", "255.0.0.0",
      "-t", "1")),
    (c.DeleteCommand(), ("-D",)),
    (c.DeleteCommand(zone=7), ("-D", "-w", "7")),
    (c.DeleteCommand(proto="tcp", src="10.0.0.1", zone=5),
     ("-D", "-p", "tcp", "-s", "10.0.0.1", "-w", "5")),
    (c.DeleteCommand(family="ipv4", mark=(5, 0xF), status="ASSURED", id=1, labels="a",
                     dst_nat=True, orig_zone=1, reply_zone=2),
     ("-D", "-f", "ipv4", "-u", "ASSURED", "-m", "5/15", "--orig-zone", "1",
      "--reply-zone", "2", "-l", "a", "-g", "-i", "1")),
    (c.FlushCommand(), ("-F",)),
    (c.CountCommand(), ("-C",)),
    (c.StatsCommand(), ("-S",)),
    (c.EventsCommand(), ("-E", "-e", "ALL")),
    (c.EventsCommand(event_mask="new,destroy", output=["xml", "timestamp"], duration=1,
                     proto="udp", dport=53, secmark=1, zone=0, mark=(1, 1), any_nat=True),
     ("-E", "-p", "udp", "--dport", "53", "-m", "1/1", "-w", "0", "-c", "1", "-j", "-o",
      "xml,timestamp", "-e", "NEW,DESTROY")),
    (c.BatchCommand([c.FlushCommand()]), ("-R", "-")),
]


@pytest.mark.parametrize(("command", "expected"), ARGV_CASES, ids=lambda x: str(x)[:60])
def test_argv(command: c.Command, expected: tuple[str, ...]) -> None:
    assert command.argv() == expected


LOADABLE = [cmd for cmd, _ in ARGV_CASES if cmd.kind in ("create", "delete", "flush")]


@pytest.mark.parametrize("command", LOADABLE, ids=str)
def test_load_line_is_argv_joined(command: c.Command) -> None:
    assert command.loadable
    assert command.load_line() == " ".join(command.argv())
    assert "\n" not in command.load_line()


def test_load_line_example() -> None:
    cmd = c.CreateCommand(**TCP, state="ESTABLISHED", timeout=300, zone=5)
    assert cmd.load_line() == (
        "-I -p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1 --dport 2 --state ESTABLISHED -t 300 -w 5"
    )


NOT_LOADABLE = [cmd for cmd, _ in ARGV_CASES
                if cmd.kind not in ("create", "delete", "flush")]


@pytest.mark.parametrize("command", NOT_LOADABLE, ids=str)
def test_load_line_refused(command: c.Command) -> None:
    assert not command.loadable
    with pytest.raises(InvalidArgumentError) as err:
        command.load_line()
    assert err.value.field == "kind"


@pytest.mark.parametrize(("cls", "kind", "word"), [
    (c.ListCommand, "list", "shown"), (c.GetCommand, "get", "shown"),
    (c.CreateCommand, "create", "created"), (c.UpdateCommand, "update", "updated"),
    (c.DeleteCommand, "delete", "deleted"), (c.FlushCommand, "flush", None),
    (c.CountCommand, "count", None), (c.StatsCommand, "stats", None),
    (c.EventsCommand, "events", None), (c.BatchCommand, "batch", None),
])
def test_kind_and_affected_word(cls: type[c.Command], kind: str, word: str | None) -> None:
    assert cls.kind == kind
    assert cls.affected_word == word


# (builder, field the error must name)
INVALID_CASES: list[tuple[Any, str]] = [
    (lambda: c.ListCommand(bogus=1), "bogus"),
    (lambda: c.ListCommand(family="ipv5"), "family"),
    (lambda: c.ListCommand(family=4), "family"),
    (lambda: c.ListCommand(proto="bogus"), "proto"),
    (lambda: c.ListCommand(proto="6 "), "proto"),
    (lambda: c.ListCommand(proto=256), "proto"),
    (lambda: c.ListCommand(proto=-1), "proto"),
    (lambda: c.ListCommand(proto=True), "proto"),
    (lambda: c.ListCommand(proto=["tcp"]), "proto"),
    (lambda: c.ListCommand(src="1.2.3"), "src"),
    (lambda: c.ListCommand(src="0x01020304"), "src"),
    (lambda: c.ListCommand(src="01.2.3.4"), "src"),
    (lambda: c.ListCommand(src="-s"), "src"),
    (lambda: c.ListCommand(src="10.0.0.1 "), "src"),
    (lambda: c.ListCommand(src="10.0.0.1\n-F"), "src"),
    (lambda: c.ListCommand(src="10.0.0.1\x00"), "src"),
    (lambda: c.ListCommand(src="host.example"), "src"),
    (lambda: c.ListCommand(src=167772161), "src"),
    (lambda: c.ListCommand(src="10.0.0.0/33"), "src"),
    (lambda: c.ListCommand(src="10.0.0.0/08"), "src"),
    (lambda: c.ListCommand(src="10.0.0.0/x"), "src"),
    (lambda: c.ListCommand(dst="::/129"), "dst"),
    (lambda: c.ListCommand(reply_src="10.0.0.0/8"), "reply_src"),
    (lambda: c.ListCommand(reply_dst="10.0.0.0/8"), "reply_dst"),
    (lambda: c.ListCommand(src="10.0.0.1", dst="::1"), "dst"),
    (lambda: c.ListCommand(family="ipv6", src="10.0.0.1"), "src"),
    (lambda: c.ListCommand(family="ipv4", src_nat=("::1", 1)), "src_nat"),
    (lambda: c.ListCommand(mask_src="255.0.0.0"), "mask_src"),
    (lambda: c.ListCommand(src="10.0.0.0/8", mask_src="255.0.0.0"), "mask_src"),
    (lambda: c.ListCommand(dst="10.0.0.0", mask_dst="255.0.255.0"), "mask_dst"),
    (lambda: c.ListCommand(dst="10.0.0.0", mask_dst="ffff::"), "mask_dst"),
    (lambda: c.ListCommand(sport=1), "sport"),
    (lambda: c.ListCommand(proto="icmp", dport=1), "dport"),
    (lambda: c.ListCommand(proto="tcp", sport=65536), "sport"),
    (lambda: c.ListCommand(proto="tcp", sport=-1), "sport"),
    (lambda: c.ListCommand(proto="tcp", sport=True), "sport"),
    (lambda: c.ListCommand(proto="tcp", sport="22"), "sport"),
    (lambda: c.ListCommand(proto="tcp", sport=2.0), "sport"),
    (lambda: c.ListCommand(proto="tcp", reply_sport=[1]), "reply_sport"),
    (lambda: c.ListCommand(proto="udp", state="ESTABLISHED"), "state"),
    (lambda: c.ListCommand(state="ESTABLISHED"), "state"),
    (lambda: c.ListCommand(proto="tcp", state="OPEN"), "state"),
    (lambda: c.ListCommand(proto="sctp", state="SYN_SENT"), "state"),
    (lambda: c.ListCommand(proto="tcp", state="LISTENING"), "state"),
    (lambda: c.ListCommand(proto="tcp", icmp_type=1), "icmp_type"),
    (lambda: c.ListCommand(proto="icmp", icmp_type=256), "icmp_type"),
    (lambda: c.ListCommand(proto="icmp", icmp_id=65536), "icmp_id"),
    (lambda: c.ListCommand(proto="icmp", src="::1"), "proto"),
    (lambda: c.ListCommand(proto="icmpv6", family="ipv4"), "proto"),
    (lambda: c.ListCommand(proto="udp", srckey=1), "srckey"),
    (lambda: c.ListCommand(proto="gre", dstkey=65536), "dstkey"),
    (lambda: c.ListCommand(status="ASSURED,!SEEN_REPLY"), "status"),
    (lambda: c.ListCommand(status="ASSURED,UNREPLIED"), "status"),
    (lambda: c.ListCommand(status="UNSET"), "status"),
    (lambda: c.ListCommand(status="A"), "status"),
    (lambda: c.ListCommand(status="!UNREPLIED"), "status"),
    (lambda: c.ListCommand(status=""), "status"),
    (lambda: c.ListCommand(status=[]), "status"),
    (lambda: c.ListCommand(status=5), "status"),
    (lambda: c.ListCommand(status=["ASSURED", 1]), "status"),
    (lambda: c.ListCommand(mark=-1), "mark"),
    (lambda: c.ListCommand(mark=2**32), "mark"),
    (lambda: c.ListCommand(mark=(1, 2, 3)), "mark"),
    (lambda: c.ListCommand(mark=(1, True)), "mark"),
    (lambda: c.ListCommand(mark="5"), "mark"),
    (lambda: c.ListCommand(zone=65536), "zone"),
    (lambda: c.ListCommand(orig_zone=-1), "orig_zone"),
    (lambda: c.ListCommand(reply_zone=False), "reply_zone"),
    (lambda: c.ListCommand(secmark=2**32), "secmark"),
    (lambda: c.ListCommand(labels="a b"), "labels"),
    (lambda: c.ListCommand(labels="a-b"), "labels"),
    (lambda: c.ListCommand(labels=""), "labels"),
    (lambda: c.ListCommand(labels=[]), "labels"),
    (lambda: c.ListCommand(labels=5), "labels"),
    (lambda: c.ListCommand(src_nat=False), "src_nat"),
    (lambda: c.ListCommand(src_nat=("10.0.0.1",)), "src_nat"),
    (lambda: c.ListCommand(src_nat=("10.0.0.1", 65536)), "src_nat"),
    (lambda: c.ListCommand(dst_nat="10.0.0.0/8"), "dst_nat"),
    (lambda: c.ListCommand(any_nat=True, src_nat=True), "any_nat"),
    (lambda: c.ListCommand(any_nat=True, dst_nat="10.0.0.1"), "any_nat"),
    (lambda: c.ListCommand(output=["json"]), "output"),
    (lambda: c.ListCommand(output=["save"]), "output"),
    (lambda: c.ListCommand(output=["timestamp"]), "output"),
    (lambda: c.ListCommand(output=5), "output"),
    (lambda: c.ListCommand(output=0), "output"),
    (lambda: c.ListCommand(timeout=5), "timeout"),
    (lambda: c.ListCommand(id=5), "id"),
    (lambda: c.ListCommand(orig_vtag=5), "orig_vtag"),
    (lambda: c.ListCommand(label_add="a"), "label_add"),
    (lambda: c.ListCommand(role="client"), "role"),
    (lambda: c.ListCommand(event_mask=["NEW"]), "event_mask"),
    (lambda: c.ListCommand(zero=True), "zero"),
    (lambda: c.GetCommand(proto="tcp", src="10.0.0.1", dst="10.0.0.2", sport=1), "dport"),
    (lambda: c.GetCommand(src="10.0.0.1", dst="10.0.0.2"), "proto"),
    (lambda: c.GetCommand(proto="udp", src="10.0.0.1", sport=1, dport=2), "dst"),
    (lambda: c.GetCommand(proto="udp", reply_src="10.0.0.1", reply_dst="10.0.0.2",
                          reply_sport=1, reply_dport=2), "src"),
    (lambda: c.GetCommand(**TCP, reply_src="10.0.0.2"), "reply_dst"),
    (lambda: c.GetCommand(**TCP, reply_sport=2), "reply_dport"),
    (lambda: c.GetCommand(**TCP, zone=0), "zone"),
    (lambda: c.GetCommand(**TCP, mark=1), "mark"),
    (lambda: c.GetCommand(**TCP, status="ASSURED"), "status"),
    (lambda: c.GetCommand(proto="tcp", src="10.0.0.0/8", dst="10.0.0.2", sport=1, dport=2),
     "src"),
    (lambda: c.GetCommand(proto="icmp", src="10.0.0.1", dst="10.0.0.2", icmp_type=8),
     "icmp_code"),
    (lambda: c.GetCommand(proto="gre", src="10.0.0.1", dst="10.0.0.2", srckey=1), "dstkey"),
    (lambda: c.CreateCommand(timeout=5, src="10.0.0.1", dst="10.0.0.2"), "proto"),
    (lambda: c.CreateCommand(timeout=None, proto="udp", src="10.0.0.1", dst="10.0.0.2",
                             sport=1, dport=2), "timeout"),
    (lambda: c.CreateCommand(timeout=-1, **TCP, state="NONE"), "timeout"),
    (lambda: c.CreateCommand(timeout=2**31, **TCP, state="NONE"), "timeout"),
    (lambda: c.CreateCommand(timeout=True, **TCP, state="NONE"), "timeout"),
    (lambda: c.CreateCommand(timeout=5, **TCP), "state"),
    (lambda: c.CreateCommand(timeout=5, proto="udp", src="10.0.0.1", sport=1, dport=2), "dst"),
    (lambda: c.CreateCommand(timeout=5, proto="udp", sport=1, dport=2), "src"),
    (lambda: c.CreateCommand(timeout=5, proto="udp", src="10.0.0.1", dst="10.0.0.2"), "sport"),
    (lambda: c.CreateCommand(timeout=5, proto="udp", src="10.0.0.1", dst="10.0.0.2",
                             sport=1), "sport"),
    (lambda: c.CreateCommand(timeout=5, proto="udp", src="10.0.0.1", dst="10.0.0.2",
                             sport=1, dport=2, reply_sport=1, reply_dport=2), "reply_sport"),
    (lambda: c.CreateCommand(timeout=5, proto="gre", src="10.0.0.1", dst="10.0.0.2"),
     "srckey"),
    (lambda: c.CreateCommand(timeout=5, proto="sctp", src="10.0.0.1", dst="10.0.0.2",
                             sport=1, dport=2, state="ESTABLISHED", orig_vtag=1),
     "reply_vtag"),
    (lambda: c.CreateCommand(timeout=5, proto="dccp", src="10.0.0.1", dst="10.0.0.2",
                             sport=1, dport=2, state="OPEN"), "role"),
    (lambda: c.CreateCommand(timeout=5, proto="dccp", src="10.0.0.1", dst="10.0.0.2",
                             sport=1, dport=2, state="OPEN", role="peer"), "role"),
    (lambda: c.CreateCommand(timeout=5, proto="tcp", role="client"), "role"),
    (lambda: c.CreateCommand(timeout=5, proto="icmp", src="10.0.0.1", dst="10.0.0.2",
                             icmp_type=8), "icmp_code"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", zone=1, orig_zone=2), "zone"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", orig_zone=1, reply_zone=2),
     "zone"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", mark=(1, 1)), "mark"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", status="!ASSURED"), "status"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", status="UNREPLIED"), "status"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", src_nat=True), "src_nat"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", any_nat="10.0.0.1"), "any_nat"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", label_del="a"), "label_del"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", labels="a"), "labels"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", output=["id"]), "output"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", secmark=1), "secmark"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", id=1), "id"),
    (lambda: c.CreateCommand(timeout=5, proto="tcp", src="10.0.0.0/8", dst="10.0.0.2",
                             sport=1, dport=2, state="NONE"), "src"),
    (lambda: c.CreateCommand(timeout=5, **TCP, state="NONE", family="ipv6"), "src"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1", "zone": 0}, mark=1), "zone"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1", "orig_zone": 1}, mark=1), "orig_zone"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1", "reply_zone": 1}, mark=1),
     "reply_zone"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1", "mark": 1}, timeout=1), "mark"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1", "status": "ASSURED"}, timeout=1),
     "status"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1", "any_nat": True}, timeout=1),
     "any_nat"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1", "secmark": 1}, timeout=1), "secmark"),
    (lambda: c.UpdateCommand(match={"proto": "sctp", "src": "10.0.0.1", "orig_vtag": 1},
                             timeout=1), "orig_vtag"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1"}, src="10.0.0.2"), "src"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1"}, zone=1), "zone"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1"}), "changes"),
    (lambda: c.UpdateCommand(match={"proto": "tcp"}, timeout=1), "family"),
    (lambda: c.UpdateCommand(match={}, timeout=1), "family"),
    (lambda: c.UpdateCommand(match=[("src", "10.0.0.1")], timeout=1), "match"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1"}, label_add="a", label_del=True),
     "label_del"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1"}, label_del=False), "label_del"),
    (lambda: c.UpdateCommand(match={"proto": "udp", "src": "10.0.0.1"}, state="CLOSE"),
     "state"),
    (lambda: c.UpdateCommand(match={"src": "10.0.0.1"}, status="!ASSURED"), "status"),
    (lambda: c.DeleteCommand(timeout=5), "timeout"),
    (lambda: c.DeleteCommand(any_nat=True), "any_nat"),
    (lambda: c.DeleteCommand(secmark=1), "secmark"),
    (lambda: c.DeleteCommand(output=["id"]), "output"),
    (lambda: c.DeleteCommand(status="UNSET"), "status"),
    (lambda: c.DeleteCommand(status="!ASSURED"), "status"),
    (lambda: c.DeleteCommand(status="UNREPLIED"), "status"),
    (lambda: c.FlushCommand(family="ipv4"), "family"),
    (lambda: c.UpdateCommand(match={"src_nat": "10.0.0.1"}, mark=1), "src_nat"),
    (lambda: c.UpdateCommand(match={"dst_nat": ("10.0.0.1", 80)}, mark=1), "dst_nat"),
    (lambda: c.FlushCommand(family="ipv7"), "family"),
    (lambda: c.FlushCommand(zone=1), "zone"),
    (lambda: c.CountCommand(family="ipv4"), "family"),
    (lambda: c.StatsCommand(zone=1), "zone"),
    (lambda: c.EventsCommand(duration=0), "duration"),
    (lambda: c.EventsCommand(duration=3600.5), "duration"),
    (lambda: c.EventsCommand(duration=float("nan")), "duration"),
    (lambda: c.EventsCommand(duration=float("inf")), "duration"),
    (lambda: c.EventsCommand(duration=True), "duration"),
    (lambda: c.EventsCommand(duration="5"), "duration"),
    (lambda: c.EventsCommand(event_mask="D"), "event_mask"),
    (lambda: c.EventsCommand(event_mask=[]), "event_mask"),
    (lambda: c.EventsCommand(status="ASSURED"), "status"),
    (lambda: c.EventsCommand(timeout=1), "timeout"),
    (lambda: c.EventsCommand(any_nat=True, src_nat=True), "any_nat"),
    (lambda: c.BatchCommand([]), "commands"),
    (lambda: c.BatchCommand(c.FlushCommand()), "commands"),  # type: ignore[arg-type]
    (lambda: c.BatchCommand([c.ListCommand()]), "commands"),
    (lambda: c.BatchCommand([c.UpdateCommand(match={"family": "ipv4"}, timeout=1)]),
     "commands"),
    (lambda: c.BatchCommand([c.BatchCommand([c.FlushCommand()])]), "commands"),
    (lambda: c.BatchCommand(["-F"]), "commands"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("build", "field"), INVALID_CASES,
                         ids=[f"{i}-{f}" for i, (_, f) in enumerate(INVALID_CASES)])
def test_invalid_raises_naming_field(build: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        build()
    assert err.value.field == field
    assert isinstance(err.value, ValueError)


def test_base_command_is_abstract() -> None:
    with pytest.raises(TypeError):
        c.Command()


def test_commands_are_frozen() -> None:
    cmd = c.ListCommand(zone=1)
    with pytest.raises(AttributeError):
        cmd.kind = "delete"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del cmd._fields
    assert cmd.argv() == ("-L", "-w", "1")


def test_equality_and_hash_by_value() -> None:
    first = c.ListCommand(proto=6, src="10.0.0.1", status="assured")
    second = c.ListCommand(status=["ASSURED"], src="10.0.0.1", proto="tcp")
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1
    assert first != c.ListCommand(proto="tcp")
    assert c.ListCommand() != c.DeleteCommand()
    assert c.CountCommand() == c.CountCommand()
    assert c.ListCommand() != "ListCommand()"


def test_str_and_repr() -> None:
    cmd = c.ListCommand(src="10.0.0.1", mark=(1, 2), output=["id"])
    assert str(cmd) == "ListCommand(src='10.0.0.1', mark=(1, 2), output=('id',))"
    assert repr(cmd) == str(cmd)
    assert str(c.CountCommand()) == "CountCommand()"
    update = c.UpdateCommand(match={"src": "10.0.0.1"}, timeout=5)
    assert str(update) == "UpdateCommand(match={'src': '10.0.0.1'}, timeout=5)"
    batch = c.BatchCommand([c.FlushCommand()])
    assert str(batch) == "BatchCommand(commands=(FlushCommand(),))"


@pytest.mark.parametrize("command", [cmd for cmd, _ in ARGV_CASES], ids=str)
def test_repr_is_pasteable(command: c.Command) -> None:
    namespace = {name: getattr(c, name) for name in c.__all__}
    assert eval(repr(command), namespace) == command  # noqa: S307


@pytest.mark.parametrize("command", [cmd for cmd, _ in ARGV_CASES], ids=str)
def test_primitive_round_trip(command: c.Command) -> None:
    data = command.to_primitive()
    assert data["kind"] == command.kind
    _assert_primitive(data)
    rebuilt = c.from_primitive(data)
    assert rebuilt == command
    assert rebuilt.argv() == command.argv()
    assert pickle.loads(pickle.dumps(command)) == command


def _assert_primitive(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            _assert_primitive(item)
    elif isinstance(value, list):
        for item in value:
            _assert_primitive(item)
    else:
        assert value is None or isinstance(value, str | int)


def test_to_primitive_shapes() -> None:
    assert c.ListCommand(mark=(1, 2), status="ASSURED").to_primitive() == {
        "kind": "list", "status": ["ASSURED"], "mark": [1, 2]}
    assert c.UpdateCommand(match={"src": "::1"}, mark=1).to_primitive() == {
        "kind": "update", "match": [["src", "::1"]], "mark": 1}
    assert c.EventsCommand(duration=1.5).to_primitive() == {
        "kind": "events", "event_mask": ["ALL"], "duration_ms": 1500}
    assert c.BatchCommand([c.FlushCommand(), c.DeleteCommand(zone=1)]).to_primitive() == {
        "kind": "batch", "commands": [[["kind", "flush"]], [["kind", "delete"], ["zone", 1]]]}


HOSTILE_PRIMITIVES: list[tuple[Any, str]] = [
    ({"kind": "list", "extra": 1}, "extra"),
    ({"kind": "list", "src": "-s"}, "src"),
    ({"kind": "list", "src": "10.0.0.1\n-F"}, "src"),
    ({"kind": "list", "src": "10.0.0.1\x00"}, "src"),
    ({"kind": "list", "src": "10.0.0.1 -F"}, "src"),
    ({"kind": "list", "labels": "a\nb"}, "labels"),
    ({"kind": "list", "labels": "a\"b"}, "labels"),
    ({"kind": "list", "labels": "#a"}, "labels"),
    ({"kind": "list", "labels": "a\\b"}, "labels"),
    ({"kind": "list", "zone": [1]}, "zone"),
    ({"kind": "list", "zone": True}, "zone"),
    ({"kind": "list", "zone": "1"}, "zone"),
    ({"kind": "list", "zone": {"a": 1}}, "zone"),
    ({"kind": "list", "output": [["id"]]}, "output"),
    ({"kind": "list", "proto": {"tcp": 1}}, "proto"),
    ({"kind": "list", "mark": [1, [2]]}, "mark"),
    ({"kind": "list", "src_nat": ["10.0.0.1", "80"]}, "src_nat"),
    ({"kind": "nuke"}, "kind"),
    ({"kind": 1}, "kind"),
    ({"kind": ["list"]}, "kind"),
    ({}, "kind"),
    (["kind", "list"], "kind"),
    ("list", "kind"),
    ({"kind": "list", 1: 2}, "key"),
    ({"kind": "list", "self": 1}, "self"),
    ({"kind": "create", "proto": "udp"}, "timeout"),
    ({"kind": "count", "family": "ipv4"}, "family"),
    ({"kind": "events", "duration": 1.0}, "duration"),
    ({"kind": "events", "duration_ms": 0}, "duration_ms"),
    ({"kind": "events", "duration_ms": True}, "duration_ms"),
    ({"kind": "events", "duration_ms": 3_600_001}, "duration_ms"),
    ({"kind": "update", "timeout": 1}, "match"),
    ({"kind": "update", "match": {"src": "10.0.0.1"}, "timeout": 1}, "match"),
    ({"kind": "update", "match": [["src"]], "timeout": 1}, "match"),
    ({"kind": "update", "match": [[1, "10.0.0.1"]], "timeout": 1}, "match"),
    ({"kind": "update", "match": [["src", "10.0.0.1"], ["src", "10.0.0.2"]], "timeout": 1},
     "match"),
    ({"kind": "update", "match": ["src"], "timeout": 1}, "match"),
    ({"kind": "batch"}, "commands"),
    ({"kind": "batch", "commands": "-F"}, "commands"),
    ({"kind": "batch", "commands": [], "x": 1}, "x"),
    ({"kind": "batch", "commands": []}, "commands"),
    ({"kind": "batch", "commands": [[["kind", "list"]]]}, "commands"),
    ({"kind": "batch", "commands": [{"kind": "flush"}]}, "commands"),
    ({"kind": "batch", "commands": [[["kind", "flush"], ["family", "-x"]]]}, "family"),
]


@pytest.mark.parametrize(("data", "field"), HOSTILE_PRIMITIVES,
                         ids=[f"{i}-{f}" for i, (_, f) in enumerate(HOSTILE_PRIMITIVES)])
def test_from_primitive_rejects_hostile_input(data: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        c.from_primitive(data)
    assert err.value.field == field


def test_from_primitive_events_default_duration() -> None:
    cmd = c.from_primitive({"kind": "events"})
    assert isinstance(cmd, c.EventsCommand)
    assert cmd.duration == c.EventsCommand.DEFAULT_DURATION


def test_accessors() -> None:
    listing = c.ListCommand(output="id", zone=3)
    assert listing.output == ("id",)
    assert listing.fields == {"zone": 3, "output": ("id",)}
    assert listing.get("zone") == 3
    assert listing.get("src", "none") == "none"
    assert c.ListCommand().output == ()
    get = c.GetCommand(**TCP, output=["xml"])
    assert get.output == ("xml",)
    create = c.CreateCommand(**TCP, state="NONE", timeout=7)
    assert create.timeout == 7
    update = c.UpdateCommand(match={"proto": "tcp", "src": "::1"}, state="close", mark=1)
    assert update.match == {"proto": "tcp", "src": "::1"}
    assert update.changes == {"state": "CLOSE", "mark": 1}
    assert c.FlushCommand(family=None).fields == {}
    events = c.EventsCommand(event_mask="new", output="id", duration=0.0015)
    assert events.event_mask == ("NEW",)
    assert events.output == ("id",)
    assert events.duration == 0.002


def test_a_command_naming_labels_must_end_its_batch() -> None:
    labelled = c.DeleteCommand(labels="web")
    plain = c.DeleteCommand(zone=7)
    assert c.BatchCommand([plain, labelled]).commands[-1] is labelled
    for name, value in (("labels", "web"), ("label_add", "a,b")):
        first = (labelled if name == "labels" else
                 c.CreateCommand(**TCP, state="ESTABLISHED", timeout=3, label_add=value))
        with pytest.raises(InvalidArgumentError, match="must end its batch"):
            c.BatchCommand([first, plain])


@pytest.mark.parametrize(("pattern", "size", "expected"), [
    ("ppppp", 2, ["pp", "pp", "p"]),
    ("plppl", 10, ["pl", "ppl"]),
    ("llp", 10, ["l", "l", "p"]),
    ("pplpp", 2, ["pp", "l", "pp"]),
    ("", 3, []),
])
def test_load_chunks_end_each_batch_at_labels(pattern: str, size: int,
                                              expected: list[str]) -> None:
    made = [c.DeleteCommand(zone=n, labels="web") if kind == "l" else c.DeleteCommand(zone=n)
            for n, kind in enumerate(pattern)]
    chunks = list(c.load_chunks(made, size))
    assert ["".join("l" if c.names_labels(cmd) else "p" for cmd in chunk)
            for chunk in chunks] == expected
    assert [cmd for chunk in chunks for cmd in chunk] == made
    for chunk in chunks:
        c.BatchCommand(chunk)  # every chunk is a batch -R can run


def test_batch_sequence_and_stdin() -> None:
    create = c.CreateCommand(**TCP, state="ESTABLISHED", timeout=300)
    delete = c.DeleteCommand(zone=7)
    batch = c.BatchCommand((create, delete, c.FlushCommand()))
    assert len(batch) == 3
    assert list(batch) == [create, delete, c.FlushCommand()]
    assert batch.commands[0] is create
    assert batch.stdin() == (
        "-I -p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1 --dport 2 --state ESTABLISHED -t 300\n"
        "-D -w 7\n"
        "-F\n"
    )
    assert batch.argv() == ("-R", "-")
    assert hash(batch) == hash(c.BatchCommand([create, delete, c.FlushCommand()]))


def _entry(proto: str, protonum: int, **kwargs: Any) -> models.Entry:
    original = kwargs.pop("original")
    reply = kwargs.pop("reply", original.inverted())
    return models.Entry(family=kwargs.pop("family", "ipv4"), proto=proto, protonum=protonum,
                        original=original, reply=reply, **kwargs)


A, B = netaddr.IPAddress("10.0.0.1"), netaddr.IPAddress("10.0.0.2")


def test_delete_for_entry_tcp_zone_0() -> None:
    entry = _entry("tcp", 6, original=models.FlowTuple(A, B, 1000, 80), state="ESTABLISHED")
    cmd = c.DeleteCommand.for_entry(entry)
    assert cmd.argv() == ("-D", "-f", "ipv4", "-p", "tcp", "-s", "10.0.0.1", "-d", "10.0.0.2",
                          "--sport", "1000", "--dport", "80", "-w", "0")


def test_delete_for_entry_icmp_gre_generic_and_directional_zone() -> None:
    icmp = _entry("icmp", 1, original=models.FlowTuple(A, B, icmp_type=8, icmp_code=0,
                                                       icmp_id=9), zone=4)
    assert c.DeleteCommand.for_entry(icmp).argv()[-8:] == (
        "--icmp-type", "8", "--icmp-code", "0", "--icmp-id", "9", "-w", "4")
    gre = _entry("gre", 47, original=models.FlowTuple(A, B, srckey=1, dstkey=2), orig_zone=3)
    assert c.DeleteCommand.for_entry(gre).argv()[-6:] == (
        "--srckey", "1", "--dstkey", "2", "--orig-zone", "3")
    other = _entry("unknown", 89, original=models.FlowTuple(A, B), reply_zone=2)
    assert c.DeleteCommand.for_entry(other).argv() == (
        "-D", "-f", "ipv4", "-p", "89", "-s", "10.0.0.1", "-d", "10.0.0.2",
        "--reply-zone", "2")


def test_create_from_entry_copies_both_tuples() -> None:
    reply = models.FlowTuple(netaddr.IPAddress("10.0.0.9"), A, 80, 1000)
    entry = _entry("tcp", 6, original=models.FlowTuple(A, B, 1000, 80), reply=reply,
                   state="ESTABLISHED", timeout=100, mark=3, zone=0,
                   status=frozenset({"ASSURED"}), labels=frozenset({"b", "a"}))
    cmd = c.CreateCommand.from_entry(entry)
    assert cmd.argv() == (
        "-I", "-p", "tcp", "-s", "10.0.0.1", "-d", "10.0.0.2", "-r", "10.0.0.9", "-q",
        "10.0.0.1", "--sport", "1000", "--dport", "80", "--reply-port-src", "80",
        "--reply-port-dst", "1000", "--state", "ESTABLISHED", "-t", "100",
        "-u", "SEEN_REPLY,ASSURED", "-m", "3", "--label-add", "a", "--label-add", "b")
    assert c.CreateCommand.from_entry(entry, timeout=5).timeout == 5


def test_create_from_entry_gre_zone_and_unreplied() -> None:
    entry = _entry("gre", 47, original=models.FlowTuple(A, B, srckey=1, dstkey=2),
                   timeout=9, zone=6, status=frozenset({"UNREPLIED"}))
    assert c.CreateCommand.from_entry(entry).argv() == (
        "-I", "-p", "gre", "-s", "10.0.0.1", "-d", "10.0.0.2", "-r", "10.0.0.2", "-q",
        "10.0.0.1", "--srckey", "1", "--dstkey", "2", "--reply-key-src", "2",
        "--reply-key-dst", "1", "-t", "9", "-w", "6")


def test_create_from_entry_needs_timeout() -> None:
    entry = _entry("udp", 17, original=models.FlowTuple(A, B, 1, 2))
    with pytest.raises(InvalidArgumentError) as err:
        c.CreateCommand.from_entry(entry)
    assert err.value.field == "timeout"


@pytest.mark.parametrize("token", ["", "-x", "a b", "a\nb", "a\x00", 'a"', "a\\b", "#a",
                                   "a'b", "a\tb"])
def test_check_token_rejects_unsafe(token: str) -> None:
    with pytest.raises(InvalidArgumentError):
        val.check_token("field", token)


def test_check_token_accepts_rendered_alphabet() -> None:
    assert val.check_token("f", "[2001:db8::1]:80") == "[2001:db8::1]:80"
    assert val.check_token("f", "!ASSURED,UNREPLIED") == "!ASSURED,UNREPLIED"


def test_create_from_entry_icmp_has_no_reply_layer4() -> None:
    entry = _entry("icmp", 1, original=models.FlowTuple(A, B, icmp_type=8, icmp_code=0,
                                                        icmp_id=3), timeout=9)
    assert c.CreateCommand.from_entry(entry).argv() == (
        "-I", "-p", "icmp", "-s", "10.0.0.1", "-d", "10.0.0.2", "-r", "10.0.0.2", "-q",
        "10.0.0.1", "--icmp-type", "8", "--icmp-code", "0", "--icmp-id", "3", "-t", "9")


def test_duplicate_labels_collapse() -> None:
    assert c.ListCommand(labels="a,a,b") == c.ListCommand(labels=["a", "b"])


@pytest.mark.parametrize("field", ["event_mask", "duration"])
def test_events_refuses_none_for_its_defaults(field: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        c.EventsCommand(**{field: None})
    assert err.value.field == field
