"""Unit tests of the ctnetlink create encoding, its privileged entrypoint and its routing.

The byte strings under tests/unit/data/ctnew_*.hex were captured from the
real kernel in a throwaway namespace (tools/capture_netlink_create.py):
``request`` is what this library sent and the kernel answered with errno 0
(the flow existed afterwards) and EEXIST when re-sent; ``cli_request`` is what
``conntrack -I`` itself sent for the same command (recorded with strace; the
C library leaves its padding bytes uninitialised).
"""

from __future__ import annotations

import errno
import logging
import pathlib
import pickle
import socket
import struct
from typing import Any

import pytest

from conntrack_lib import (
    ConntrackHelper,
    capabilities,
    commands,
    exceptions,
    executor,
    executor_base,
    netlink,
    netlink_socket,
)
from conntrack_lib import netlink_create as nc
from conntrack_lib.privileged import netlink as priv
from conntrack_lib.testing import FakeConntrack
from tests.unit.test_netlink import FakeKernel, load_sample

DATA = pathlib.Path(__file__).parent / "data"
SAMPLES = sorted(DATA.glob("ctnew_*.hex"))
NESTED = netlink.NLA_F_NESTED


def attrs(data: bytes) -> list[tuple[int, Any]]:
    """Parse attributes into [(type, payload or sub-list)], following NLA_F_NESTED."""
    out: list[tuple[int, Any]] = []
    offset = 0
    while offset < len(data):
        length, raw_type = struct.unpack_from("=HH", data, offset)
        assert length >= 4 and offset + length <= len(data)
        payload = data[offset + 4:offset + length]
        if raw_type & NESTED:
            out.append((raw_type & ~NESTED, attrs(payload)))
        else:
            out.append((raw_type, payload))
        offset += (length + 3) & ~3
    return out


def body_attrs(command: commands.CreateCommand) -> dict[int, Any]:
    body = nc.encode_body(command)
    return dict(attrs(body[4:]))


def create(**fields: Any) -> commands.CreateCommand:
    return commands.CreateCommand(**fields)


UDP = {"proto": "udp", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1000, "dport": 53,
       "timeout": 60}


# --------------------------------------------------------------------------
# Against what conntrack -I sends
# --------------------------------------------------------------------------

def test_samples_were_captured() -> None:
    assert len(SAMPLES) >= 10


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_request_equals_conntrack_cli_attribute_for_attribute(path: pathlib.Path) -> None:
    sample = load_sample(path)
    command = commands.from_primitive(sample["command"])
    assert isinstance(command, commands.CreateCommand)
    ours = nc.encode_message(command, 1)
    assert ours == sample["request"]
    cli = sample["cli_request"]
    # Same type and flags (NEW, REQUEST|ACK|CREATE|EXCL), same nfgenmsg and,
    # padding aside, the same attributes in the same order.
    assert netlink.NLMSG_HDR.unpack_from(cli)[1:3] == (nc.MSG_CT_NEW, nc.CREATE_FLAGS)
    assert netlink.NLMSG_HDR.unpack_from(ours)[1:3] == (nc.MSG_CT_NEW, 0x605)
    assert ours[16:20] == cli[16:20]
    assert attrs(ours[20:]) == attrs(cli[20:])
    assert len(ours) == len(cli)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_kernel_created_then_refused_the_duplicate(path: pathlib.Path) -> None:
    sample = load_sample(path)
    assert netlink.decode_acks(sample["ack"]) == [netlink.Ack(1, 0)]
    assert netlink.decode_acks(sample["ack_exists"]) == [netlink.Ack(2, errno.EEXIST)]


# --------------------------------------------------------------------------
# Encoding, field by field
# --------------------------------------------------------------------------

def test_ipv4_udp_tuples_mirror_and_ports_are_network_order() -> None:
    tree = body_attrs(create(**UDP))
    orig = dict(tree[netlink.CTA_TUPLE_ORIG])
    reply = dict(tree[nc.CTA_TUPLE_REPLY])
    assert dict(orig[netlink.CTA_TUPLE_IP]) == {
        netlink.CTA_IP_V4_SRC: socket.inet_aton("10.0.0.1"),
        netlink.CTA_IP_V4_DST: socket.inet_aton("10.0.0.2")}
    assert dict(reply[netlink.CTA_TUPLE_IP]) == {
        netlink.CTA_IP_V4_SRC: socket.inet_aton("10.0.0.2"),
        netlink.CTA_IP_V4_DST: socket.inet_aton("10.0.0.1")}
    assert dict(orig[netlink.CTA_TUPLE_PROTO]) == {
        netlink.CTA_PROTO_NUM: b"\x11", netlink.CTA_PROTO_SRC_PORT: b"\x03\xe8",
        netlink.CTA_PROTO_DST_PORT: b"\x00\x35"}
    assert dict(reply[netlink.CTA_TUPLE_PROTO])[netlink.CTA_PROTO_SRC_PORT] == b"\x00\x35"
    assert tree[nc.CTA_TIMEOUT] == struct.pack("!I", 60)
    # Nothing the command did not ask for.
    assert set(tree) == {netlink.CTA_TUPLE_ORIG, nc.CTA_TUPLE_REPLY, nc.CTA_TIMEOUT}
    assert nc.encode_body(create(**UDP))[:4] == bytes([socket.AF_INET, 0, 0, 0])


def test_ipv6_family_and_addresses() -> None:
    body = nc.encode_body(create(**{**UDP, "src": "fd00::1", "dst": "fd00::2"}))
    assert body[0] == socket.AF_INET6
    orig = dict(dict(attrs(body[4:]))[netlink.CTA_TUPLE_ORIG])
    assert dict(orig[netlink.CTA_TUPLE_IP]) == {
        netlink.CTA_IP_V6_SRC: socket.inet_pton(socket.AF_INET6, "fd00::1"),
        netlink.CTA_IP_V6_DST: socket.inet_pton(socket.AF_INET6, "fd00::2")}


@pytest.mark.parametrize(("state", "number", "flags"), [
    ("SYN_SENT", 1, 0x0a), ("ESTABLISHED", 3, 0x0a), ("TIME_WAIT", 7, 0x0e),
    ("CLOSE", 8, 0x0e), ("SYN_SENT2", 9, 0x0e)])
def test_tcp_state_and_window_flags(state: str, number: int, flags: int) -> None:
    tree = body_attrs(create(**{**UDP, "proto": "tcp", "state": state}))
    tcp = dict(dict(tree[nc.CTA_PROTOINFO])[nc.CTA_PROTOINFO_TCP])
    assert tcp == {nc.CTA_PROTOINFO_TCP_STATE: bytes([number]),
                   nc.CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: bytes([flags, flags]),
                   nc.CTA_PROTOINFO_TCP_FLAGS_REPLY: bytes([flags, flags])}


@pytest.mark.parametrize(("proto", "kind", "answer", "attr_base"), [
    ("icmp", 8, 0, netlink.CTA_PROTO_ICMP_ID), ("icmp", 13, 14, netlink.CTA_PROTO_ICMP_ID),
    ("icmp", 3, 255, netlink.CTA_PROTO_ICMP_ID),
    ("icmpv6", 128, 129, netlink.CTA_PROTO_ICMPV6_ID),
    ("icmpv6", 1, 255, netlink.CTA_PROTO_ICMPV6_ID)])
def test_icmp_reply_type_code_and_id(proto: str, kind: int, answer: int,
                                     attr_base: int) -> None:
    src, dst = ("10.0.0.1", "10.0.0.2") if proto == "icmp" else ("fd00::1", "fd00::2")
    tree = body_attrs(create(proto=proto, src=src, dst=dst, icmp_type=kind, icmp_code=4,
                             icmp_id=513, timeout=30))
    id_attr, type_attr, code_attr = attr_base, attr_base + 1, attr_base + 2
    for direction, expected_type in ((netlink.CTA_TUPLE_ORIG, kind),
                                     (nc.CTA_TUPLE_REPLY, answer)):
        proto_attrs = attrs_of(tree[direction], netlink.CTA_TUPLE_PROTO)
        assert proto_attrs == [(netlink.CTA_PROTO_NUM, bytes([1 if proto == "icmp" else 58])),
                               (code_attr, b"\x04"), (type_attr, bytes([expected_type])),
                               (id_attr, b"\x02\x01")]


def attrs_of(tree: list[tuple[int, Any]], attr: int) -> Any:
    return dict(tree)[attr]


@pytest.mark.parametrize(("zone_field", "where"), [
    ("zone", "top"), ("orig_zone", netlink.CTA_TUPLE_ORIG),
    ("reply_zone", nc.CTA_TUPLE_REPLY)])
def test_zones_go_where_the_cli_puts_them(zone_field: str, where: Any) -> None:
    tree = body_attrs(create(**UDP, **{zone_field: 4097}))
    zoned = {direction for direction in (netlink.CTA_TUPLE_ORIG, nc.CTA_TUPLE_REPLY)
             if nc.CTA_TUPLE_ZONE in dict(tree[direction])}
    if where == "top":
        assert tree[netlink.CTA_ZONE] == b"\x10\x01"
        assert zoned == set()
    else:
        assert netlink.CTA_ZONE not in tree
        assert zoned == {where}
        assert dict(tree[where])[nc.CTA_TUPLE_ZONE] == b"\x10\x01"


def test_mark_status_and_timeout_are_be32() -> None:
    tree = body_attrs(create(**{**UDP, "timeout": 0x01020304}, mark=0xDEADBEEF,
                             status=["ASSURED", "SEEN_REPLY"]))
    assert tree[nc.CTA_MARK] == b"\xde\xad\xbe\xef"
    assert tree[nc.CTA_TIMEOUT] == b"\x01\x02\x03\x04"
    # ASSURED | SEEN_REPLY | CONFIRMED (which libnetfilter_conntrack always adds).
    assert tree[nc.CTA_STATUS] == struct.pack("!I", 0x4 | 0x2 | 0x8)


def test_reply_only_command_mirrors_into_the_original() -> None:
    reply_only = create(proto="udp", reply_src="10.0.0.2", reply_dst="10.0.0.1",
                        reply_sport=53, reply_dport=1000, timeout=60)
    assert nc.encode_body(reply_only) == nc.encode_body(create(**UDP))


def test_explicit_reply_tuple_is_kept() -> None:
    natted = create(**UDP, reply_src="192.0.2.9", reply_dst="10.0.0.1", reply_sport=53,
                    reply_dport=1000)
    reply = dict(body_attrs(natted)[nc.CTA_TUPLE_REPLY])
    assert dict(reply[netlink.CTA_TUPLE_IP])[netlink.CTA_IP_V4_SRC] == socket.inet_aton(
        "192.0.2.9")


def test_encoding_does_not_depend_on_the_sequence() -> None:
    command = create(**UDP)
    assert nc.encode_message(command, 1)[16:] == nc.encode_message(command, 99)[16:]
    assert netlink.NLMSG_HDR.unpack_from(nc.encode_message(command, 99))[3] == 99


# --------------------------------------------------------------------------
# Primitive form and refusals
# --------------------------------------------------------------------------

def test_primitive_round_trip() -> None:
    command = create(**UDP, zone=3, mark=7, status="ASSURED")
    prim = nc.to_primitive(command)
    assert prim["kind"] == "create"
    assert nc.from_primitive(prim) == command


@pytest.mark.parametrize("extra", [{"src_nat": "192.0.2.1"}, {"dst_nat": "192.0.2.1"},
                                   {"label_add": ["blue"]}])
def test_nat_and_labels_are_refused_with_a_typed_error(extra: dict[str, Any]) -> None:
    command = create(**UDP, **extra)
    assert not nc.encodable(command)
    for call in (nc.to_primitive, nc.encode_body):
        with pytest.raises(exceptions.InvalidArgumentError) as info:
            call(command)
        assert info.value.field == next(iter(extra))
    with pytest.raises(exceptions.InvalidArgumentError):
        nc.from_primitive(command.to_primitive())


@pytest.mark.parametrize("prim", [
    {**UDP, "kind": "create", "src": "10.0.0.300"},
    {**UDP, "kind": "create", "sport": 70000},
    {**UDP, "kind": "create", "sport": True},
    {**UDP, "kind": "create", "timeout": -1},
    {**UDP, "kind": "create", "zone": 65536},
    {**UDP, "kind": "create", "dst": "fd00::1"},
    {**UDP, "kind": "create", "bogus": 1},
    {**UDP, "kind": "delete"},
    {**UDP},
    {key: value for key, value in {**UDP, "kind": "create"}.items() if key != "timeout"},
    {"kind": "create", "proto": "tcp", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1,
     "dport": 2, "timeout": 5},
    ["kind", "create"],
])
def test_privileged_side_refuses_bad_primitives_before_any_socket(
        prim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(_namespace: str | None) -> None:
        raise AssertionError("socket opened before validation")
    monkeypatch.setattr(netlink_socket, "open_socket", no_socket)
    good = nc.to_primitive(create(**UDP))
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink_socket.create_flows(None, [good, prim])


def test_privileged_side_refuses_bad_containers_and_batches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(_namespace: str | None) -> None:
        raise AssertionError("socket opened before validation")
    monkeypatch.setattr(netlink_socket, "open_socket", no_socket)
    good = nc.to_primitive(create(**UDP))
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink_socket.create_flows(None, {"a": good})  # type: ignore[arg-type]
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink_socket.create_flows(None, [good], batch_size=0)
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink_socket.create_flows("../etc", [good])
    assert netlink_socket.create_flows(None, []) == []


# --------------------------------------------------------------------------
# The exchange for creates
# --------------------------------------------------------------------------

class KernelTable(FakeKernel):
    """The delete tests' socket stand-in, answering creates: EEXIST for a known body."""

    def __init__(self, capacity: int) -> None:
        super().__init__(set(), capacity)
        self.headers: list[tuple[int, int]] = []

    def answer(self, msg_type: int, flags: int, body: bytes) -> int:
        self.headers.append((msg_type, flags))
        err = errno.EEXIST if body in self.table else 0
        self.table.add(body)
        return err


def bodies(count: int) -> list[bytes]:
    return [nc.encode_body(create(**{**UDP, "sport": i})) for i in range(count)]


def test_exchange_sends_new_with_create_flags_and_reports_eexist() -> None:
    sent = bodies(6)
    kernel = KernelTable(capacity=100)
    kernel.table.add(sent[2])
    results = netlink_socket._exchange(kernel, sent, 4, netlink_socket._CREATE)  # type: ignore[arg-type]
    assert results == [0, 0, errno.EEXIST, 0, 0, 0]
    assert set(kernel.headers) == {(nc.MSG_CT_NEW, nc.CREATE_FLAGS)}


def test_lost_create_acks_are_reported_never_resent() -> None:
    sent = bodies(20)
    kernel = KernelTable(capacity=8)
    results = netlink_socket._exchange(kernel, sent, 20, netlink_socket._CREATE)  # type: ignore[arg-type]
    # Re-sending would answer EEXIST for flows the first send created.
    assert len(kernel.headers) == 20
    assert results[:8] == [0] * 8
    assert results[8:] == [errno.ENOBUFS] * 12


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "cls"), [
    (errno.EEXIST, exceptions.EntryExistsError),
    (errno.EPERM, exceptions.PermissionDeniedError),
    (errno.EINVAL, exceptions.CommandError),
    (errno.ENOBUFS, exceptions.CommandError)])
def test_create_error_types_and_survives_the_wire(code: int, cls: type) -> None:
    command = create(**UDP, zone=9)
    err = nc.create_error(code, command)
    assert type(err) is cls
    assert err.cmd == ("netlink", "create", *command.argv())
    assert err.exit_code == 1  # as conntrack -I exits when the kernel refuses
    assert f"errno {code}:" in err.stderr
    assert "10.0.0.1" in str(err)
    rebuilt = type(err)(*err.args)
    assert rebuilt.args == err.args
    assert pickle.loads(pickle.dumps(err)).args == err.args


@pytest.mark.parametrize(("code", "words"), [
    (errno.EEXIST, "Operation failed: Such conntrack exists, try -U to update"),
    (errno.ENOMEM, "Operation failed: not enough memory"),
    (errno.EINVAL, "Operation failed: Invalid argument"),
])
def test_create_error_reads_as_conntrack_i_words_it(code: int, words: str) -> None:
    assert nc.create_error(code, create(**UDP)).stderr.startswith(words + " (")


def test_helper_has_no_private_error_mapping_left() -> None:
    from conntrack_lib import helper

    assert not hasattr(helper, "_netlink_create_error")


# --------------------------------------------------------------------------
# Routing in the helper
# --------------------------------------------------------------------------

class Release146(FakeConntrack):
    """The fake as conntrack 1.4.6: no -R, so creates must not be batched."""

    def release(self) -> capabilities.Release:
        return (1, 4, 6)


class NoNetlink146(Release146):
    """A 1.4.6 executor without netlink create."""

    create_flows = None  # type: ignore[assignment]


FLOWS = [{**UDP, "src": f"10.0.0.{i}"} for i in range(1, 6)]


def test_helper_on_1_4_6_creates_through_create_flows() -> None:
    fake = Release146()
    helper = ConntrackHelper(executor=fake)
    assert helper.create_entries(FLOWS) == 5
    assert fake.processes == 0
    assert fake.netlink_requests == 5
    assert {str(e.original.src) for e in fake.entries()} == {f["src"] for f in FLOWS}


def test_helper_on_1_4_6_duplicate_raises_entry_exists() -> None:
    fake = Release146()
    helper = ConntrackHelper(executor=fake)
    helper.create_entries(FLOWS[:2])
    with pytest.raises(exceptions.EntryExistsError) as info:
        helper.create_entries(FLOWS[1:3])
    assert info.value.cmd[:2] == ("netlink", "create")
    assert "10.0.0.2" in info.value.cmd
    # The same flow in another zone is no duplicate.
    assert helper.create_entries([{**FLOWS[1], "zone": 5}]) == 1


def test_helper_on_1_4_6_sends_nat_flows_through_the_cli() -> None:
    fake = Release146()
    helper = ConntrackHelper(executor=fake)
    assert helper.create_entries([FLOWS[0], {**FLOWS[1], "src_nat": "192.0.2.1"}]) == 2
    assert fake.netlink_requests == 1
    assert fake.processes == 1
    assert len(fake.entries()) == 2


def test_helper_without_create_flows_warns_and_runs_one_process_each(
        caplog: pytest.LogCaptureFixture) -> None:
    fake = NoNetlink146()
    helper = ConntrackHelper(executor=fake)
    with caplog.at_level(logging.WARNING):
        assert helper.create_entries(FLOWS) == 5
    assert fake.processes == 5
    assert "one process each" in caplog.text


def test_fake_create_flows_matches_kernel_semantics() -> None:
    fake = FakeConntrack(namespaces=["ns1"])
    creates = [create(**UDP), create(**UDP), create(**UDP, zone=2),
               create(proto="icmp", src="10.0.0.1", dst="10.0.0.2", icmp_type=3, icmp_code=0,
                      timeout=5)]
    assert fake.create_flows(creates, namespace="ns1") == [0, errno.EEXIST, 0, errno.EINVAL]
    assert fake.entries() == []
    assert len(fake.entries("ns1")) == 2
    with pytest.raises(exceptions.NamespaceNotFoundError):
        fake.create_flows(creates, namespace="absent")
    with pytest.raises(exceptions.InvalidArgumentError):
        fake.create_flows([create(**UDP, label_add="x")], namespace="ns1")


# --------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------

def test_process_executor_refuses_before_any_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(_namespace: str | None) -> None:
        raise AssertionError("socket opened before validation")
    monkeypatch.setattr(netlink_socket, "open_socket", no_socket)
    runner = executor.ProcessExecutor(binary="/bin/true")
    with pytest.raises(exceptions.InvalidArgumentError):
        runner.create_flows([create(**UDP), create(**UDP, src_nat="192.0.2.1")])
    with pytest.raises(exceptions.InvalidArgumentError):
        runner.create_flows([create(**UDP), commands.DeleteCommand(proto="udp")])
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink_socket.create_commands(None, iter([create(**UDP)]))  # type: ignore[arg-type]
    assert runner.create_flows([]) == []


def test_process_executor_sends_the_encoded_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str | None, list[bytes], netlink_socket._Request]] = []

    def fake_send(namespace: str | None, bodies: list[bytes], batch: int,
                  request: netlink_socket._Request) -> list[int]:
        seen.append((namespace, bodies, request))
        return [0] * len(bodies)
    monkeypatch.setattr(netlink_socket, "_send_requests", fake_send)
    built = [create(**UDP), create(**UDP, zone=3)]
    runner = executor.ProcessExecutor(binary="/bin/true")
    assert runner.create_flows(built, namespace="ctns") == [0, 0]
    assert seen == [("ctns", [nc.encode_body(c) for c in built], netlink_socket._CREATE)]


def test_privsep_executor_sends_primitives_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, tuple[Any, ...], bool]] = []

    def fake_call(self: Any, entry: Any, *args: Any, idempotent: bool,
                  limit: float | None = None) -> list[int]:
        calls.append((entry, args, idempotent))
        return [0] * len(args[1])
    monkeypatch.setattr(executor.PrivsepExecutor, "_call", fake_call)
    monkeypatch.setattr(executor_base, "EXACT_DELETE_CHUNK", 2)
    built = [create(**{**UDP, "sport": n}) for n in range(5)]
    runner = executor.PrivsepExecutor()
    assert runner.create_flows(built, namespace="ctns") == [0] * 5
    assert [len(args[1]) for _entry, args, _idem in calls] == [2, 2, 1]
    assert all(entry is priv.create_flows and args[0] == "ctns" and not idem
               for entry, args, idem in calls)
    assert calls[0][1][1][0] == nc.to_primitive(built[0])
    with pytest.raises(exceptions.InvalidArgumentError):
        runner.create_flows(built, namespace="../bad")
    with pytest.raises(exceptions.InvalidArgumentError):
        runner.create_flows([create(**UDP, label_add="blue")])
