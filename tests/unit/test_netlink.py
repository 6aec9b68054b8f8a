"""Unit tests of the ctnetlink delete encoding, ack decoding and exchange logic.

The byte strings under tests/unit/data/netlink_*.hex were captured from the
real kernel in a throwaway namespace: ``request`` is what this library sent
and the kernel acknowledged with errno 0 (the flow was gone afterwards),
``ack``/``ack_enoent`` are the kernel's replies, and ``cli_request`` is what
``conntrack -D`` itself sent for the same flow (recorded with strace).
"""

from __future__ import annotations

import errno
import json
import pathlib
import socket
import struct
from typing import Any

import netaddr
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple, nfct_msg

from conntrack_lib import exceptions, models, netlink, netlink_socket

DATA = pathlib.Path(__file__).parent / "data"
SAMPLES = sorted(DATA.glob("netlink_*.hex"))


def load_sample(path: pathlib.Path) -> dict[str, Any]:
    """Return the flow and the byte strings of one captured sample."""
    sample: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.split(" ", 1)
        # The flow (delete samples) or command (create samples) is JSON.
        sample[key] = json.loads(value) if key in ("flow", "command") else bytes.fromhex(value)
    return sample


#: Attributes that hold attributes, per depth: CTA_TUPLE_ORIG, then
#: CTA_TUPLE_IP and CTA_TUPLE_PROTO (pyroute2 does not set NLA_F_NESTED).
NESTED_BY_DEPTH = ({netlink.CTA_TUPLE_ORIG}, {netlink.CTA_TUPLE_IP, netlink.CTA_TUPLE_PROTO})


def attr_tree(data: bytes, depth: int = 0) -> dict[int, Any]:
    """Parse netlink attributes into {type: payload or subtree}, nested flag cleared."""
    tree: dict[int, Any] = {}
    offset = 0
    while offset < len(data):
        length, raw_type = struct.unpack_from("=HH", data, offset)
        payload = data[offset + 4:offset + length]
        attr_type = raw_type & ~netlink.NLA_F_NESTED
        nested = depth < len(NESTED_BY_DEPTH) and attr_type in NESTED_BY_DEPTH[depth]
        tree[attr_type] = attr_tree(payload, depth + 1) if nested else payload
        offset += (length + 3) & ~3
    return tree


def request_attrs(message: bytes) -> dict[int, Any]:
    """Return the top-level attributes of a ctnetlink request."""
    return attr_tree(message[netlink.NLMSG_HDR_LEN + 4:])


def flow(**changes: Any) -> dict[str, Any]:
    """Return a valid udp flow in primitive form with ``changes`` applied."""
    base: dict[str, Any] = {
        "family": "ipv4", "protonum": 17, "src": "10.0.0.1", "dst": "10.0.0.2",
        "sport": 1000, "dport": 53, "icmp_type": None, "icmp_code": None,
        "icmp_id": None, "zone": 7,
    }
    base.update(changes)
    return base


def test_samples_present() -> None:
    assert len(SAMPLES) >= 5


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_encoding_matches_kernel_capture(path: pathlib.Path) -> None:
    sample = load_sample(path)
    assert netlink.encode_delete(netlink.validate_flow(sample["flow"]), 1) == sample["request"]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_tuple_matches_what_the_cli_sends(path: pathlib.Path) -> None:
    sample = load_sample(path)
    ours = request_attrs(sample["request"])
    cli = request_attrs(sample["cli_request"])
    assert ours[netlink.CTA_TUPLE_ORIG] == cli[netlink.CTA_TUPLE_ORIG]
    # The CLI sends the zone only when it is not 0; we always do.
    zone = sample["flow"]["zone"]
    assert ours[netlink.CTA_ZONE] == struct.pack("!H", zone)
    assert cli.get(netlink.CTA_ZONE, b"\0\0") == ours[netlink.CTA_ZONE]
    # Same header fields as the CLI's request, apart from the sequence number.
    ours_hdr = netlink.NLMSG_HDR.unpack_from(sample["request"])
    cli_hdr = netlink.NLMSG_HDR.unpack_from(sample["cli_request"])
    assert ours_hdr[1:3] == cli_hdr[1:3] == (netlink.MSG_CT_DELETE, netlink.REQUEST_FLAGS)
    assert sample["request"][16:20] == sample["cli_request"][16:20]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_decodes_kernel_acks(path: pathlib.Path) -> None:
    sample = load_sample(path)
    assert netlink.decode_acks(sample["ack"]) == [netlink.Ack(1, 0)]
    assert netlink.decode_acks(sample["ack_enoent"]) == [netlink.Ack(2, errno.ENOENT)]


def pyroute2_decode(message: bytes) -> nfct_msg:
    msg = nfct_msg(message)
    msg.decode()
    return msg


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_pyroute2_reads_our_request(path: pathlib.Path) -> None:
    sample = load_sample(path)
    f = sample["flow"]
    msg = pyroute2_decode(sample["request"])
    v6 = f["family"] == "ipv6"
    assert msg["nfgen_family"] == (socket.AF_INET6 if v6 else socket.AF_INET)
    ip = ("CTA_TUPLE_ORIG", "CTA_TUPLE_IP")
    assert msg.get_nested(*ip, "CTA_IP_V6_SRC" if v6 else "CTA_IP_V4_SRC") == f["src"]
    assert msg.get_nested(*ip, "CTA_IP_V6_DST" if v6 else "CTA_IP_V4_DST") == f["dst"]
    proto = ("CTA_TUPLE_ORIG", "CTA_TUPLE_PROTO")
    assert msg.get_nested(*proto, "CTA_PROTO_NUM") == f["protonum"]
    assert msg.get_nested(*proto, "CTA_PROTO_SRC_PORT") == f["sport"]
    assert msg.get_nested(*proto, "CTA_PROTO_DST_PORT") == f["dport"]
    icmp = "CTA_PROTO_ICMPV6_" if v6 else "CTA_PROTO_ICMP_"
    assert msg.get_nested(*proto, icmp + "TYPE") == f["icmp_type"]
    assert msg.get_nested(*proto, icmp + "CODE") == f["icmp_code"]
    assert msg.get_nested(*proto, icmp + "ID") == f["icmp_id"]
    assert msg.get_attr("CTA_ZONE") == f["zone"]


def pyroute2_encode(f: dict[str, Any], seq: int) -> bytes:
    """Return pyroute2's encoding of the same delete request."""
    family = socket.AF_INET6 if f["family"] == "ipv6" else socket.AF_INET
    tup = NFCTAttrTuple(family=family, saddr=f["src"], daddr=f["dst"], proto=f["protonum"],
                        sport=f["sport"], dport=f["dport"], icmp_type=f["icmp_type"],
                        icmp_code=f["icmp_code"], icmp_id=f["icmp_id"])
    msg = nfct_msg.create_from(tuple_orig=tup, zone=f["zone"])
    msg["nfgen_family"] = family
    msg["header"]["type"] = netlink.MSG_CT_DELETE
    msg["header"]["flags"] = netlink.REQUEST_FLAGS
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


ports = st.integers(0, 65535)
bytes8 = st.integers(0, 255)
zones = st.integers(0, 65535)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)


@st.composite
def valid_flows(draw: st.DrawFn) -> dict[str, Any]:
    family = draw(st.sampled_from(["ipv4", "ipv6"]))
    addr = v4 if family == "ipv4" else v6
    kind = draw(st.sampled_from(["ports", "icmp", "none"]))
    f = flow(family=family, src=draw(addr), dst=draw(addr), zone=draw(zones),
             sport=None, dport=None)
    if kind == "ports":
        f.update(protonum=draw(st.sampled_from([6, 17, 132, 136])),
                 sport=draw(ports), dport=draw(ports))
    elif kind == "icmp":
        f.update(protonum=1 if family == "ipv4" else 58, icmp_type=draw(bytes8),
                 icmp_code=draw(bytes8), icmp_id=draw(ports))
    else:
        f.update(protonum=draw(st.sampled_from([0, 2, 4, 41, 50, 51, 255])))
    return f


@given(valid_flows(), st.integers(1, 2**32 - 1))
def test_same_fields_as_pyroute2(f: dict[str, Any], seq: int) -> None:
    ours = netlink.encode_delete(netlink.validate_flow(f), seq)
    theirs = pyroute2_encode(f, seq)
    # pyroute2 omits NLA_F_NESTED and orders ICMP attributes differently:
    # compare header, nfgenmsg and the attribute trees, not raw bytes.
    assert ours[:20] == theirs[:20]
    assert request_attrs(ours) == request_attrs(theirs)
    assert len(ours) == struct.unpack_from("=I", ours)[0]


@given(valid_flows())
def test_ported_fast_path_equals_attribute_by_attribute_encoding(f: dict[str, Any]) -> None:
    parsed = netlink.validate_flow(f)
    if parsed.sport is None:
        assert netlink.encode_body(parsed) == netlink._encode_generic(parsed)
    else:
        assert netlink.encode_body(parsed) == _generic_with_ports(parsed)


def _generic_with_ports(parsed: netlink.Flow) -> bytes:
    proto = netlink.nest(
        netlink.CTA_TUPLE_PROTO,
        netlink.nla(netlink.CTA_PROTO_NUM, bytes([parsed.protonum])),
        netlink.nla(netlink.CTA_PROTO_SRC_PORT, struct.pack("!H", parsed.sport or 0)),
        netlink.nla(netlink.CTA_PROTO_DST_PORT, struct.pack("!H", parsed.dport or 0)))
    src_attr, dst_attr = netlink._IP_ATTRS[parsed.family]
    ip = netlink.nest(netlink.CTA_TUPLE_IP, netlink.nla(src_attr, parsed.src),
                       netlink.nla(dst_attr, parsed.dst))
    return (struct.pack("=BBH", parsed.family, 0, 0)
            + netlink.nest(netlink.CTA_TUPLE_ORIG, ip, proto)
            + netlink.nla(netlink.CTA_ZONE, struct.pack("!H", parsed.zone)))


def test_batch_numbers_requests_consecutively() -> None:
    bodies = [netlink.encode_body(netlink.validate_flow(flow(sport=p))) for p in (1, 2, 3)]
    data = netlink.encode_batch(bodies, 41)
    offset, seqs = 0, []
    while offset < len(data):
        length, msg_type, flags, seq, pid = netlink.NLMSG_HDR.unpack_from(data, offset)
        assert (msg_type, flags, pid) == (netlink.MSG_CT_DELETE, netlink.REQUEST_FLAGS, 0)
        assert data[offset + 16:offset + length] == bodies[len(seqs)]
        seqs.append(seq)
        offset += length
    assert seqs == [41, 42, 43]


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize(("changes", "field"), [
    ({"family": "inet"}, "family"),
    ({"family": 2}, "family"),
    ({"protonum": True}, "protonum"),
    ({"protonum": 256}, "protonum"),
    ({"protonum": -1}, "protonum"),
    ({"protonum": 58}, "protonum"),                      # icmpv6 in an ipv4 flow
    ({"src": "10.0.0.256"}, "src"),
    ({"src": "1.2.3"}, "src"),                           # inet_aton shorthand
    ({"src": "0x0a000001"}, "src"),
    ({"src": " 10.0.0.1"}, "src"),
    ({"dst": "fd00::1"}, "dst"),                         # other family
    ({"dst": b"10.0.0.2"}, "dst"),
    ({"dst": ""}, "dst"),
    ({"sport": None}, "sport"),                          # udp needs both ports
    ({"dport": 65536}, "dport"),
    ({"sport": 1.0}, "sport"),
    ({"icmp_type": 8}, "icmp_type"),                     # not icmp
    ({"zone": 65536}, "zone"),
    ({"zone": -1}, "zone"),
    ({"zone": None}, "zone"),
    ({"zone": False}, "zone"),
])
def test_rejects_bad_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(exceptions.InvalidArgumentError) as info:
        netlink.validate_flow(flow(**changes))
    assert info.value.field == field


@pytest.mark.parametrize("changes", [
    {"family": "ipv6", "src": "10.0.0.1", "dst": "10.0.0.2"},
    {"family": "ipv6", "src": "fe80::1%eth0", "dst": "fd00::2"},
    {"family": "ipv4", "protonum": 1, "sport": None, "dport": None,
     "icmp_type": 8, "icmp_code": 0, "icmp_id": None},
    {"family": "ipv6", "src": "fd00::1", "dst": "fd00::2", "protonum": 1, "sport": None,
     "dport": None, "icmp_type": 8, "icmp_code": 0, "icmp_id": 1},
    {"protonum": 50},                                    # esp has no ports
])
def test_rejects_inconsistent_flow(changes: dict[str, Any]) -> None:
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink.validate_flow(flow(**changes))


def test_rejects_missing_and_extra_keys() -> None:
    missing = flow()
    del missing["zone"]
    with pytest.raises(exceptions.InvalidArgumentError, match="zone"):
        netlink.validate_flow(missing)
    with pytest.raises(exceptions.InvalidArgumentError, match="mark"):
        netlink.validate_flow({**flow(), "mark": 1})
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink.validate_flow(["not", "a", "dict"])  # type: ignore[arg-type]


def test_accepts_mapped_ipv6_and_packs_addresses() -> None:
    parsed = netlink.validate_flow(flow(family="ipv6", src="::ffff:10.0.0.1", dst="fd00::2"))
    assert parsed.family == socket.AF_INET6
    assert parsed.src == netaddr.IPAddress("::ffff:10.0.0.1").packed
    assert parsed.dst == socket.inet_pton(socket.AF_INET6, "fd00::2")
    assert (parsed.sport, parsed.dport, parsed.zone) == (1000, 53, 7)


# ------------------------------------------------------------ primitive form

def entry(proto: str, protonum: int, orig: models.FlowTuple, **extra: Any) -> models.Entry:
    family = "ipv6" if orig.src.version == 6 else "ipv4"
    return models.Entry(family=family, proto=proto, protonum=protonum, original=orig,
                        reply=orig.inverted(), **extra)


def addr(text: str) -> netaddr.IPAddress:
    return netaddr.IPAddress(text)


def test_primitive_of_tcp_entry_round_trips() -> None:
    e = entry("tcp", 6, models.FlowTuple(addr("fd00::1"), addr("fd00::2"), 40000, 443),
              zone=9, state="ESTABLISHED")
    prim = netlink.flow_to_primitive(e)
    assert prim == {"family": "ipv6", "protonum": 6, "src": "fd00::1", "dst": "fd00::2",
                    "sport": 40000, "dport": 443, "icmp_type": None, "icmp_code": None,
                    "icmp_id": None, "zone": 9}
    assert set(prim) == netlink.FLOW_KEYS


def test_primitive_of_icmp_entry() -> None:
    e = entry("icmp", 1, models.FlowTuple(addr("10.0.0.1"), addr("10.0.0.2"),
                                          icmp_type=8, icmp_code=0, icmp_id=77))
    prim = netlink.flow_to_primitive(e)
    assert (prim["icmp_type"], prim["icmp_code"], prim["icmp_id"]) == (8, 0, 77)
    assert prim["sport"] is None and prim["zone"] == 0


def test_primitive_uses_gre_keys_and_drops_generic_ports() -> None:
    gre = entry("gre", 47, models.FlowTuple(addr("10.0.0.1"), addr("10.0.0.2"),
                                            srckey=0x10, dstkey=0x20))
    assert (netlink.flow_to_primitive(gre)["sport"],
            netlink.flow_to_primitive(gre)["dport"]) == (0x10, 0x20)
    # A tracker-less protocol reported with zero ports is looked up without them.
    generic = entry("unknown", 50, models.FlowTuple(addr("10.0.0.1"), addr("10.0.0.2"), 0, 0))
    prim = netlink.flow_to_primitive(generic)
    assert prim["sport"] is None and prim["dport"] is None


def test_primitive_follows_directional_zones() -> None:
    tup = models.FlowTuple(addr("10.0.0.1"), addr("10.0.0.2"), 1, 2)
    assert netlink.flow_to_primitive(entry("udp", 17, tup, orig_zone=5))["zone"] == 5
    assert netlink.flow_to_primitive(entry("udp", 17, tup, reply_zone=5))["zone"] == 0


# ---------------------------------------------------------------- decoding

def ack(seq: int, err: int) -> bytes:
    inner = netlink.NLMSG_HDR.pack(80, netlink.MSG_CT_DELETE, netlink.REQUEST_FLAGS, seq, 0)
    return netlink.NLMSG_HDR.pack(36, netlink.NLMSG_ERROR, 0x100, seq, 4242) + struct.pack(
        "=i", -err) + inner


def test_decodes_several_acks_and_skips_other_messages() -> None:
    other = netlink.NLMSG_HDR.pack(22, 0x100, 0, 9, 0) + b"\x02\x00\x00\x00ab"
    data = ack(1, 0) + other + b"\0\0" + ack(2, errno.ENOENT) + ack(3, errno.EINVAL)
    assert netlink.decode_acks(data) == [(1, 0), (2, 2), (3, errno.EINVAL)]


@pytest.mark.parametrize("data", [
    ack(1, 0)[:10],                                      # truncated header
    ack(1, 0)[:30],                                      # header says 36
    netlink.NLMSG_HDR.pack(8, netlink.NLMSG_ERROR, 0, 1, 0),   # length below header
    netlink.NLMSG_HDR.pack(18, netlink.NLMSG_ERROR, 0, 1, 0) + b"\0\0",  # no errno
])
def test_rejects_malformed_acks(data: bytes) -> None:
    with pytest.raises(exceptions.ParseError):
        netlink.decode_acks(data)


# ------------------------------------------------- privileged side, no root

@pytest.mark.parametrize("name", ["", ".", "..", "a..b", "a/b", "../x", "x" * 65, "a b", "ns\n",
                                  "ns\0", 7])
def test_rejects_bad_namespace_names(name: Any) -> None:
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink_socket.delete_flows(name, [flow()])


def test_missing_namespace_is_not_created(tmp_path: pathlib.Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netlink_socket.constants, "NETNS_RUN_DIR", str(tmp_path))
    with pytest.raises(exceptions.NamespaceNotFoundError) as info:
        netlink_socket.delete_flows("absent", [flow()])
    assert info.value.cmd == ("setns", str(tmp_path / "absent"))
    assert list(tmp_path.iterdir()) == []


def test_validates_every_flow_before_any_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(_namespace: str | None) -> None:
        raise AssertionError("socket opened before validation")
    monkeypatch.setattr(netlink_socket, "open_socket", no_socket)
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink_socket.delete_flows(None, [flow(), flow(zone=70000)])
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink_socket.delete_flows(None, [flow()], batch_size=0)
    with pytest.raises(exceptions.InvalidArgumentError):
        netlink_socket.delete_flows(None, {"a": flow()})  # type: ignore[arg-type]
    assert netlink_socket.delete_flows(None, []) == []


class FakeKernel:
    """A NETLINK_NETFILTER socket stand-in with a bounded receive queue."""

    def __init__(self, table: set[bytes], capacity: int, rcvbuf: int = 1 << 20) -> None:
        self.table = table
        self.capacity = capacity
        self.rcvbuf = rcvbuf
        self.queue: list[bytes] = []
        self.overrun = False
        self.sends: list[int] = []

    def getsockopt(self, level: int, option: int) -> int:
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_RCVBUF)
        return self.rcvbuf

    def answer(self, msg_type: int, flags: int, body: bytes) -> int:
        """Apply one request to the table and return its errno (a delete here)."""
        err = 0 if body in self.table else errno.ENOENT
        self.table.discard(body)
        return err

    def send(self, data: bytes) -> int:
        offset, count = 0, 0
        while offset < len(data):
            length, msg_type, flags, seq, _pid = netlink.NLMSG_HDR.unpack_from(data, offset)
            err = self.answer(msg_type, flags, data[offset + 16:offset + length])
            if len(self.queue) < self.capacity:
                self.queue.append(ack(seq, err))
            else:
                self.overrun = True
            offset += length
            count += 1
        self.sends.append(count)
        return len(data)

    def recv_into(self, buf: bytearray) -> int:
        if self.overrun:
            self.overrun = False
            raise OSError(errno.ENOBUFS, "No buffer space available")
        if not self.queue:
            raise BlockingIOError
        data = self.queue.pop(0)
        buf[:len(data)] = data
        return len(data)


def bodies_for(count: int) -> list[bytes]:
    return [netlink.encode_body(netlink.validate_flow(flow(sport=i))) for i in range(count)]


def test_exchange_reports_errno_per_flow_in_order() -> None:
    bodies = bodies_for(10)
    kernel = FakeKernel(set(bodies[::2]), capacity=100)
    results = netlink_socket._exchange(kernel, bodies, 4)  # type: ignore[arg-type]
    assert results == [0, errno.ENOENT] * 5
    assert kernel.sends == [4, 4, 2]
    assert kernel.table == set()


def test_exchange_recovers_from_overrun_by_shrinking_the_window() -> None:
    bodies = bodies_for(50)
    kernel = FakeKernel(set(bodies[:40]), capacity=8)
    results = netlink_socket._exchange(kernel, bodies, 20)  # type: ignore[arg-type]
    assert kernel.table == set()
    assert all(r in (0, errno.ENOENT) for r in results)
    # Flows acknowledged before any overrun are reported exactly.
    assert results[:8] == [0] * 8
    assert results[40:] == [errno.ENOENT] * 10
    # 20 -> 12 lost per full window; re-sent in windows of 10 (2 lost each),
    # then of 5, which fit the 8-ack queue.
    assert kernel.sends == [20, 20, 10, 10, 10, 6, 4]


def test_window_follows_receive_buffer() -> None:
    small = FakeKernel(set(), 1, rcvbuf=212992)
    assert netlink_socket.ack_window(small, 500) == 212992 // netlink_socket.ACK_TRUESIZE  # type: ignore[arg-type]
    assert netlink_socket.ack_window(FakeKernel(set(), 1, rcvbuf=1 << 23), 500) == 500  # type: ignore[arg-type]
    assert netlink_socket.ack_window(FakeKernel(set(), 1, rcvbuf=10), 500) == 1  # type: ignore[arg-type]


def test_permission_error_is_typed() -> None:
    bodies = bodies_for(2)

    class Denying(FakeKernel):
        def send(self, data: bytes) -> int:
            self.queue = [ack(1, errno.EPERM), ack(2, errno.EPERM)]
            return len(data)

    with pytest.raises(exceptions.PermissionDeniedError):
        netlink_socket._exchange(Denying(set(), 10), bodies, 10)  # type: ignore[arg-type]


junk = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                 st.text(max_size=50), st.binary(max_size=20), st.lists(st.integers(), max_size=3))


@given(st.fixed_dictionaries({key: st.one_of(junk, st.sampled_from(
    ["ipv4", "ipv6", "10.0.0.1", "fd00::1", 0, 6, 17, 58, 65535])) for key in netlink.FLOW_KEYS}))
def test_anything_else_is_rejected_with_a_typed_error(prim: dict[str, Any]) -> None:
    try:
        parsed = netlink.validate_flow(prim)
    except exceptions.InvalidArgumentError as err:
        assert err.field in netlink.FLOW_KEYS
    else:
        # Whatever passes encodes to a request the kernel can parse.
        body = netlink.encode_body(parsed)
        assert attr_tree(body[4:])[netlink.CTA_ZONE] == struct.pack("!H", prim["zone"])
