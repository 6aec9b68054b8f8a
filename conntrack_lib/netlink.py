"""Encode ctnetlink delete requests and decode the kernel's acknowledgements.

This module is pure: it builds and reads bytes and opens no socket.  The
socket work lives in :mod:`conntrack_lib.netlink_socket`.

One request per flow: an ``nlmsghdr`` of type
``(NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE`` with
``NLM_F_REQUEST | NLM_F_ACK``, an ``nfgenmsg`` naming the family, the
original tuple (``CTA_TUPLE_ORIG``) and the zone (``CTA_ZONE``, also for
zone 0, which the kernel treats exactly like an absent zone).

Flows cross the privsep boundary in *primitive form*, a dict with exactly
the keys of :data:`FLOW_KEYS`; :func:`validate_flow` checks one strictly and
returns a :class:`Flow` whose addresses are already packed, so encoding a
request is a handful of ``struct`` calls.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Final, NamedTuple

import netaddr

from conntrack_lib import constants, exceptions, models
from conntrack_lib.values import PrimitiveDict

# Netlink and nfnetlink numbers (linux/netlink.h, linux/netfilter/nfnetlink*.h).
NETLINK_NETFILTER: Final = 12
NFNL_SUBSYS_CTNETLINK: Final = 1
IPCTNL_MSG_CT_GET: Final = 1
IPCTNL_MSG_CT_DELETE: Final = 2
MSG_CT_DELETE: Final = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
MSG_CT_GET: Final = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
NLM_F_REQUEST: Final = 0x1
NLM_F_ACK: Final = 0x4
REQUEST_FLAGS: Final = NLM_F_REQUEST | NLM_F_ACK
NLMSG_ERROR: Final = 2
NLA_F_NESTED: Final = 0x8000
NFNETLINK_V0: Final = 0

CTA_TUPLE_ORIG: Final = 1
CTA_ZONE: Final = 18
CTA_TUPLE_IP: Final = 1
CTA_TUPLE_PROTO: Final = 2
CTA_IP_V4_SRC: Final = 1
CTA_IP_V4_DST: Final = 2
CTA_IP_V6_SRC: Final = 3
CTA_IP_V6_DST: Final = 4
CTA_PROTO_NUM: Final = 1
CTA_PROTO_SRC_PORT: Final = 2
CTA_PROTO_DST_PORT: Final = 3
CTA_PROTO_ICMP_ID: Final = 4
CTA_PROTO_ICMP_TYPE: Final = 5
CTA_PROTO_ICMP_CODE: Final = 6
CTA_PROTO_ICMPV6_ID: Final = 7
CTA_PROTO_ICMPV6_TYPE: Final = 8
CTA_PROTO_ICMPV6_CODE: Final = 9

NLMSG_HDR: Final = struct.Struct("=IHHII")
NLMSG_ERRNO: Final = struct.Struct("=i")
NLMSG_HDR_LEN: Final = NLMSG_HDR.size

#: The keys of a flow in primitive form, all required.
FLOW_KEYS: Final = frozenset({
    "family", "protonum", "src", "dst", "sport", "dport",
    "icmp_type", "icmp_code", "icmp_id", "zone",
})
_ICMP_KEYS: Final = ("icmp_type", "icmp_code", "icmp_id")
_PORT_KEYS: Final = ("sport", "dport")
#: Protocols whose kernel tuple is filled from the two port attributes
#: (GRE keeps its 16-bit keys there as well).
_PORT_PROTONUMS: Final = frozenset({6, 17, 33, 47, 132, 136})
_ICMP_PROTONUM: Final = {constants.IPV4: 1, constants.IPV6: 58}
# Plain ints, not socket.AddressFamily members: they are dict keys and
# travel in Flow.
AF_INET: Final[int] = int(socket.AF_INET)
AF_INET6: Final[int] = int(socket.AF_INET6)
_AF: Final[dict[str, int]] = {constants.IPV4: AF_INET, constants.IPV6: AF_INET6}
_ADDR_LEN: Final[dict[int, int]] = {AF_INET: 4, AF_INET6: 16}
_MAX_ADDRESS_TEXT: Final = 45


class Flow(NamedTuple):
    """One validated flow, ready to encode.

    ``family`` is the socket family number, ``src`` and ``dst`` are packed
    addresses; ports and ICMP fields are ``None`` where the protocol has none.
    """

    family: int
    protonum: int
    src: bytes
    dst: bytes
    sport: int | None
    dport: int | None
    icmp_type: int | None
    icmp_code: int | None
    icmp_id: int | None
    zone: int


class Ack(NamedTuple):
    """One acknowledgement: the request's sequence number and its errno (0 = success)."""

    seq: int
    errno: int


# --------------------------------------------------------------------------
# Primitive form and validation
# --------------------------------------------------------------------------

def flow_to_primitive(entry: models.Entry) -> PrimitiveDict:
    """Return the primitive form of ``entry``'s original tuple and zone.

    A directional zone is honoured the way the kernel looks flows up: the
    original-direction zone if there is one, 0 when only the reply
    direction carries a zone, else ``entry.zone``.

    :raises InvalidArgumentError: the entry cannot name one kernel flow.
    """
    orig = entry.original
    ports = (orig.srckey, orig.dstkey) if entry.protonum == 47 else (orig.sport, orig.dport)
    prim: PrimitiveDict = {
        "family": entry.family,
        "protonum": entry.protonum,
        "src": str(orig.src),
        "dst": str(orig.dst),
        "sport": ports[0],
        "dport": ports[1],
        "icmp_type": orig.icmp_type,
        "icmp_code": orig.icmp_code,
        "icmp_id": orig.icmp_id,
        "zone": _lookup_zone(entry),
    }
    _strip_fields_of_other_kinds(prim, _kind(entry.family, entry.protonum))
    validate_flow(prim)
    return prim


def _lookup_zone(entry: models.Entry) -> int:
    if entry.orig_zone is not None:
        return entry.orig_zone
    if entry.reply_zone is not None:
        return 0
    return entry.zone


def _strip_fields_of_other_kinds(prim: PrimitiveDict, kind: str) -> None:
    # The parser may report zero ports for protocols the kernel tracks
    # generically (dccp without its tracker); such flows are looked up by
    # protocol number alone, so keep only the fields of the flow's kind.
    if kind != "ports":
        for key in _PORT_KEYS:
            prim[key] = None
    if kind != "icmp":
        for key in _ICMP_KEYS:
            prim[key] = None


def _kind(family: str, protonum: int) -> str:
    if protonum == _ICMP_PROTONUM.get(family):
        return "icmp"
    if protonum in _PORT_PROTONUMS:
        return "ports"
    return "none"


def validate_flow(prim: object) -> Flow:
    """Check a flow in primitive form strictly and return it as a :class:`Flow`.

    Exact keys, exact types (``bool`` is not an ``int``), ranges, addresses
    of the flow's family, and exactly the layer-4 fields its protocol needs.

    :raises InvalidArgumentError: anything is missing, extra or wrong.
    """
    # type() and dict_keys comparisons, not isinstance(Mapping) and set():
    # this runs once per flow and the ABC check alone costs microseconds.
    if type(prim) is not dict:
        raise exceptions.InvalidArgumentError("flow", prim, "a flow must be a dict")
    if prim.keys() != FLOW_KEYS:
        raise exceptions.InvalidArgumentError(
            "flow", sorted(map(str, prim.keys() ^ FLOW_KEYS)), "flow keys must be exactly "
            + ", ".join(sorted(FLOW_KEYS)))
    family = prim["family"]
    if type(family) is not str or family not in _AF:
        raise exceptions.InvalidArgumentError("family", family, "expected 'ipv4' or 'ipv6'")
    protonum = _int_field(prim, "protonum", 0, 255)
    if protonum == _ICMP_PROTONUM[_other_family(family)]:
        raise exceptions.InvalidArgumentError(
            "protonum", protonum, f"not an {family} protocol")
    sport, dport, icmp_type, icmp_code, icmp_id = _layer4_fields(
        prim, _kind(family, protonum))
    af = _AF[family]
    return Flow(af, protonum, _packed_address(prim, "src", af),
                _packed_address(prim, "dst", af), sport, dport, icmp_type, icmp_code,
                icmp_id, _int_field(prim, "zone", 0, constants.MAX_CONNTRACK_ZONE_ID))


def _other_family(family: str) -> str:
    return constants.IPV6 if family == constants.IPV4 else constants.IPV4


def _int_field(prim: Mapping[str, object], key: str, low: int, high: int) -> int:
    value = prim[key]
    if type(value) is not int or not low <= value <= high:
        raise exceptions.InvalidArgumentError(key, value, f"expected an int in {low}..{high}")
    return value


_L4 = tuple[int | None, int | None, int | None, int | None, int | None]


def _layer4_fields(prim: Mapping[str, object], kind: str) -> _L4:
    # One branch per kind, no per-call containers: this runs once per flow.
    if kind == "ports":
        _require_none(prim, _ICMP_KEYS)
        return (_int_field(prim, "sport", 0, constants.MAX_PORT),
                _int_field(prim, "dport", 0, constants.MAX_PORT), None, None, None)
    if kind == "icmp":
        _require_none(prim, _PORT_KEYS)
        return (None, None, _int_field(prim, "icmp_type", 0, constants.MAX_ICMP_FIELD),
                _int_field(prim, "icmp_code", 0, constants.MAX_ICMP_FIELD),
                _int_field(prim, "icmp_id", 0, constants.MAX_ICMP_ID))
    _require_none(prim, _PORT_KEYS + _ICMP_KEYS)
    return (None, None, None, None, None)


def _require_none(prim: Mapping[str, object], keys: tuple[str, ...]) -> None:
    for key in keys:
        if prim[key] is not None:
            raise exceptions.InvalidArgumentError(
                key, prim[key], f"must be None for protocol {prim['protonum']}")


def _packed_address(prim: Mapping[str, object], key: str, af: int) -> bytes:
    text = prim[key]
    if type(text) is not str or not 0 < len(text) <= _MAX_ADDRESS_TEXT:
        raise exceptions.InvalidArgumentError(key, text, "expected an IP address string")
    try:
        return pack_address(af, text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        family = constants.FAMILY_BY_NUMBER[af]
        raise exceptions.InvalidArgumentError(key, text, f"not an {family} address") from None


@functools.lru_cache(maxsize=65536)
def pack_address(af: int, text: str) -> bytes:
    """Return the packed bytes of address ``text`` of socket family ``af``, parsed twice."""
    # Flows of one table share most addresses; netaddr costs microseconds
    # per parse, so the cache keeps validation of large batches cheap.
    packed: bytes = netaddr.IPAddress(text, 4 if af == AF_INET else 6).packed
    # A second, independent parser: both must agree on the exact bytes.
    if socket.inet_pton(af, text) != packed:
        raise ValueError(text)
    return packed


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------

def nla(attr_type: int, payload: bytes) -> bytes:
    """Return one netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type) + payload + b"\0" * (-length % 4)


def nest(attr_type: int, *children: bytes) -> bytes:
    """Return one nested attribute holding ``children`` (already encoded)."""
    return nla(attr_type | NLA_F_NESTED, b"".join(children))


_BE16: Final = struct.Struct("!H")
_U8: Final = struct.Struct("B")
_NFGEN: Final = struct.Struct("=BBH")
#: Attribute numbers of the ICMP fields, per family.
_ICMP_ATTRS: Final[dict[int, tuple[int, int, int]]] = {
    AF_INET: (CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMP_ID),
    AF_INET6: (CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_ICMPV6_CODE, CTA_PROTO_ICMPV6_ID),
}
_IP_ATTRS: Final[dict[int, tuple[int, int]]] = {
    AF_INET: (CTA_IP_V4_SRC, CTA_IP_V4_DST),
    AF_INET6: (CTA_IP_V6_SRC, CTA_IP_V6_DST),
}


class _PortTemplate(NamedTuple):
    struct: struct.Struct
    prefix: tuple[int, ...]


def _port_template(af: int) -> _PortTemplate:
    """Build one struct that packs a whole ported body in a single call.

    Byte order is native for netlink headers; ports and zone are passed
    already converted with ``socket.htons`` so one format serves both.
    """
    alen = _ADDR_LEN[af]
    ip_len = 4 + 2 * (4 + alen)
    proto_len = 4 + 3 * 8
    tuple_len = 4 + ip_len + proto_len
    fmt = (f"=BBH HH HH HH{alen}s HH{alen}s HH HHB3x HHH2x HHH2x HHH2x")
    src_attr = _IP_ATTRS[af][0]
    prefix = (af, NFNETLINK_V0, 0,
              tuple_len, CTA_TUPLE_ORIG | NLA_F_NESTED,
              ip_len, CTA_TUPLE_IP | NLA_F_NESTED, 4 + alen, src_attr)
    return _PortTemplate(struct.Struct(fmt), prefix)


_PORT_TEMPLATES: Final = {af: _port_template(af) for af in _ADDR_LEN}


def encode_body(flow: Flow) -> bytes:
    """Return the request body (everything after the nlmsghdr) for ``flow``.

    The body does not depend on the sequence number, so a caller encodes
    it once and reuses it (for instance when a request is re-sent).
    """
    if flow.sport is not None and flow.dport is not None:
        return _encode_ported(flow)
    return _encode_generic(flow)


def _encode_ported(flow: Flow) -> bytes:
    # The common case (tcp/udp/sctp): one pack call, no intermediate bytes.
    tpl = _PORT_TEMPLATES[flow.family]
    alen = len(flow.src)
    htons = socket.htons
    return tpl.struct.pack(
        *tpl.prefix, flow.src, 4 + alen, tpl.prefix[-1] + 1, flow.dst,
        4 + 3 * 8, CTA_TUPLE_PROTO | NLA_F_NESTED, 5, CTA_PROTO_NUM, flow.protonum,
        6, CTA_PROTO_SRC_PORT, htons(flow.sport or 0),
        6, CTA_PROTO_DST_PORT, htons(flow.dport or 0),
        6, CTA_ZONE, htons(flow.zone))


def _encode_generic(flow: Flow) -> bytes:
    src_attr, dst_attr = _IP_ATTRS[flow.family]
    proto = [nla(CTA_PROTO_NUM, _U8.pack(flow.protonum))]
    if flow.icmp_type is not None:
        type_attr, code_attr, id_attr = _ICMP_ATTRS[flow.family]
        proto += [nla(type_attr, _U8.pack(flow.icmp_type)),
                  nla(code_attr, _U8.pack(flow.icmp_code or 0)),
                  nla(id_attr, _BE16.pack(flow.icmp_id or 0))]
    return b"".join((
        _NFGEN.pack(flow.family, NFNETLINK_V0, 0),
        nest(CTA_TUPLE_ORIG,
             nest(CTA_TUPLE_IP, nla(src_attr, flow.src), nla(dst_attr, flow.dst)),
             nest(CTA_TUPLE_PROTO, *proto)),
        nla(CTA_ZONE, _BE16.pack(flow.zone)),
    ))


def encode_message(body: bytes, seq: int, msg_type: int = MSG_CT_DELETE,
                   flags: int = REQUEST_FLAGS) -> bytes:
    """Return one complete request: nlmsghdr (port id 0, the kernel's) plus ``body``."""
    return NLMSG_HDR.pack(NLMSG_HDR_LEN + len(body), msg_type, flags, seq, 0) + body


def encode_delete(flow: Flow, seq: int) -> bytes:
    """Return the IPCTNL_MSG_CT_DELETE request for ``flow`` with sequence ``seq``."""
    return encode_message(encode_body(flow), seq)


def encode_batch(bodies: Iterable[bytes], first_seq: int,
                 msg_type: int = MSG_CT_DELETE, flags: int = REQUEST_FLAGS) -> bytes:
    """Return consecutive requests for ``bodies``, numbered from ``first_seq``.

    The kernel processes every message of one ``send`` in order and
    acknowledges each separately.
    """
    pack = NLMSG_HDR.pack
    return b"".join(
        pack(NLMSG_HDR_LEN + len(body), msg_type, flags, seq, 0) + body
        for seq, body in enumerate(bodies, first_seq))


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------

def iter_acks(data: bytes | bytearray | memoryview) -> Iterator[Ack]:
    """Yield every NLMSG_ERROR acknowledgement found in ``data``.

    Other message types (replies to a GET, for instance) are skipped.

    :raises ParseError: a header is truncated or lies about its length.
    """
    view = memoryview(data)
    offset, end = 0, len(view)
    while offset < end:
        if end - offset < NLMSG_HDR_LEN:
            raise exceptions.ParseError(bytes(view[offset:]).hex(), offset,
                                        "truncated netlink header")
        length, msg_type, _flags, seq, _pid = NLMSG_HDR.unpack_from(view, offset)
        if length < NLMSG_HDR_LEN or offset + length > end:
            raise exceptions.ParseError(bytes(view[offset:offset + 64]).hex(), offset,
                                        f"bad netlink message length {length}")
        if msg_type == NLMSG_ERROR:
            if length < NLMSG_HDR_LEN + NLMSG_ERRNO.size:
                raise exceptions.ParseError(bytes(view[offset:offset + length]).hex(),
                                            offset, "truncated netlink error")
            (err,) = NLMSG_ERRNO.unpack_from(view, offset + NLMSG_HDR_LEN)
            yield Ack(seq, -err)
        offset += (length + 3) & ~3


def decode_acks(data: bytes | bytearray | memoryview) -> list[Ack]:
    """Return every acknowledgement in ``data`` (see :func:`iter_acks`)."""
    return list(iter_acks(data))


__all__ = [
    "FLOW_KEYS", "Ack", "Flow", "decode_acks", "encode_batch", "encode_body",
    "encode_delete", "encode_message", "flow_to_primitive", "iter_acks", "nest", "nla",
    "pack_address",
    "validate_flow",
]
