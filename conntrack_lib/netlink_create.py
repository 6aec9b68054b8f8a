"""Encode ctnetlink create requests (IPCTNL_MSG_CT_NEW) from create commands.

This module is pure: it turns a validated
:class:`~conntrack_lib.commands.CreateCommand` into primitives and into the
body of one IPCTNL_MSG_CT_NEW request (``NLM_F_CREATE | NLM_F_EXCL``, so an
existing flow answers EEXIST).  The socket work is shared with exact deletes
in :mod:`conntrack_lib.netlink_socket`.

The body is the one ``conntrack -I`` sends (libnetfilter_conntrack's
attribute order): the original and reply tuples, each with its
per-direction zone, then status, timeout, mark, protocol state and zone.
A missing direction is completed as the CLI completes it: addresses and
ports swapped; for ICMP the reply type is the answer to the original type
(255, which the kernel refuses with EINVAL, when the type has no answer),
with the same code and id.

Not encoded (refused with :class:`~conntrack_lib.exceptions.InvalidArgumentError`,
see :func:`encodable`): NAT (``src_nat``/``dst_nat``) and labels
(``label_add``), whose CLI meaning depends on the NAT module and on the
host's connlabel.conf.  Such commands go through the CLI.
"""

from __future__ import annotations

import errno as errno_codes
import functools
import os
import socket
import struct
from collections.abc import Mapping
from typing import Final, TypedDict, cast

from conntrack_lib import commands, constants, exceptions, netlink
from conntrack_lib.values import PrimitiveDict

IPCTNL_MSG_CT_NEW: Final = 0
MSG_CT_NEW: Final = (netlink.NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
NLM_F_EXCL: Final = 0x200
NLM_F_CREATE: Final = 0x400
CREATE_FLAGS: Final = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL

CTA_TUPLE_REPLY: Final = 2
CTA_STATUS: Final = 3
CTA_PROTOINFO: Final = 4
CTA_TIMEOUT: Final = 7
CTA_MARK: Final = 8
CTA_TUPLE_ZONE: Final = 3
CTA_PROTOINFO_TCP: Final = 1
CTA_PROTOINFO_DCCP: Final = 2
CTA_PROTOINFO_SCTP: Final = 3
CTA_PROTOINFO_TCP_STATE: Final = 1
CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: Final = 4
CTA_PROTOINFO_TCP_FLAGS_REPLY: Final = 5
CTA_PROTOINFO_DCCP_STATE: Final = 1
CTA_PROTOINFO_DCCP_ROLE: Final = 2
CTA_PROTOINFO_SCTP_STATE: Final = 1
CTA_PROTOINFO_SCTP_VTAG_ORIGINAL: Final = 2
CTA_PROTOINFO_SCTP_VTAG_REPLY: Final = 3

#: Status bits (linux/netfilter/nf_conntrack_common.h) of the ``-u`` words.
STATUS_BITS: Final[Mapping[str, int]] = {
    "EXPECTED": 1 << 0, "SEEN_REPLY": 1 << 1, "ASSURED": 1 << 2, "UNSET": 0,
    "FIXED_TIMEOUT": 1 << 10, "OFFLOAD": 1 << 14, "HW_OFFLOAD": 1 << 15,
}
#: libnetfilter_conntrack always adds CONFIRMED to a status it sends.
IPS_CONFIRMED: Final = 1 << 3
#: TCP window-tracking flags every release's ``-I`` sets (flags and mask alike):
#: be liberal and SACK permitted, so a hand-made flow is not killed by the
#: window checks; CLOSE_INIT from TIME_WAIT on, so a new SYN may reopen it.
IP_CT_TCP_FLAG_SACK_PERM: Final = 0x02
IP_CT_TCP_FLAG_CLOSE_INIT: Final = 0x04
IP_CT_TCP_FLAG_BE_LIBERAL: Final = 0x08
_TCP_TIME_WAIT: Final = constants.TCP_STATES.index("TIME_WAIT")
#: Fields of a create command this encoder refuses (see the module docstring).
UNENCODABLE: Final = frozenset({"src_nat", "dst_nat", "label_add"})
#: What the CLI sends for a type without a reply; the kernel answers EINVAL.
NO_REPLY_TYPE: Final = 255

_BE16: Final = struct.Struct("!H")
_BE32: Final = struct.Struct("!I")
# Every release's -I converts a vtag to network order twice, so the kernel
# receives it in host order; sent the same way, a flow made here equals one
# made by -I (and by the -R path of the releases that have it).
_VTAG: Final = struct.Struct("=I")
_U8: Final = struct.Struct("B")
_NFGEN: Final = struct.Struct("=BBH")
_STATE_ATTRS: Final[Mapping[str, tuple[int, tuple[str, ...]]]] = {
    "tcp": (CTA_PROTOINFO_TCP, constants.TCP_STATES),
    "sctp": (CTA_PROTOINFO_SCTP, constants.SCTP_STATES),
    "dccp": (CTA_PROTOINFO_DCCP, constants.DCCP_STATES),
}


# --------------------------------------------------------------------------
# Primitive form
# --------------------------------------------------------------------------

def encodable(command: commands.CreateCommand) -> bool:
    """Tell whether :func:`encode_body` can encode ``command`` (no NAT, no labels)."""
    return UNENCODABLE.isdisjoint(command.fields)


def _require_encodable(command: object) -> commands.CreateCommand:
    _encodable_fields(command)
    return cast(commands.CreateCommand, command)  # _encodable_fields checked the type


class _CreateFields(TypedDict, total=False):
    """The fields of an encodable create, typed as CreateCommand's normalisers made them."""

    family: str
    proto: str | int
    src: str
    dst: str
    reply_src: str
    reply_dst: str
    sport: int
    dport: int
    reply_sport: int
    reply_dport: int
    srckey: int
    dstkey: int
    reply_srckey: int
    reply_dstkey: int
    icmp_type: int
    icmp_code: int
    icmp_id: int
    orig_vtag: int
    reply_vtag: int
    state: str
    role: str
    timeout: int
    status: tuple[str, ...]
    mark: int
    zone: int
    orig_zone: int
    reply_zone: int


def _encodable_fields(command: object) -> _CreateFields:
    """Return the fields of ``command`` if it is a create command this module encodes."""
    if not isinstance(command, commands.CreateCommand):
        raise exceptions.InvalidArgumentError(
            "command", type(command).__name__, "expected a CreateCommand")
    fields = command.fields
    if UNENCODABLE.isdisjoint(fields):
        # The create's normalisers gave each field the type _CreateFields
        # names (a -I mark takes no mask); checking again would cost every flow.
        return cast(_CreateFields, fields)
    first = min(UNENCODABLE.intersection(fields))
    raise exceptions.InvalidArgumentError(
        first, fields[first], "netlink create does not encode NAT or labels")


def to_primitive(command: commands.CreateCommand) -> PrimitiveDict:
    """Return the primitive form of ``command`` (its validated fields).

    :raises InvalidArgumentError: not a create command, or one with NAT or labels.
    """
    return _require_encodable(command).to_primitive()


def from_primitive(prim: object) -> commands.CreateCommand:
    """Rebuild and re-validate a create command from its primitive form.

    :raises InvalidArgumentError: anything invalid, another kind, NAT or labels.
    """
    return _require_encodable(rebuild(prim))


def rebuild(prim: object) -> commands.CreateCommand:
    """Rebuild and re-validate a create command, NAT and labels included.

    :raises InvalidArgumentError: anything invalid, or another kind of command.
    """
    if type(prim) is not dict or prim.get("kind") != commands.CreateCommand.kind:
        raise exceptions.InvalidArgumentError(
            "flow", type(prim).__name__, "expected a create command in primitive form")
    # The kind was checked above, so the builder is CreateCommand's.
    return cast(commands.CreateCommand, commands.from_primitive(prim))


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------

def encode_body(command: commands.CreateCommand) -> bytes:
    """Return the IPCTNL_MSG_CT_NEW body (everything after the nlmsghdr) of ``command``.

    :raises InvalidArgumentError: NAT or labels (see :func:`encodable`).
    """
    fields = _encodable_fields(command)
    proto = fields["proto"]
    protonum = constants.PROTOCOL_NUMBERS[proto] if isinstance(proto, str) else proto
    af = _family_number(fields)
    original, reply, l4_orig, l4_reply = _directions(fields, af)
    parts = [
        _NFGEN_BY_AF[af],
        _tuple(netlink.CTA_TUPLE_ORIG, af, protonum, original, l4_orig,
               zone=fields.get("orig_zone")),
        _tuple(CTA_TUPLE_REPLY, af, protonum, reply, l4_reply,
               zone=fields.get("reply_zone")),
    ]
    if "status" in fields:
        parts.append(_status_attr(fields["status"]))
    parts.append(_U32_ATTR.pack(8, CTA_TIMEOUT, socket.htonl(fields["timeout"])))
    if "mark" in fields:
        parts.append(_U32_ATTR.pack(8, CTA_MARK, socket.htonl(fields["mark"])))
    if proto in _STATE_ATTRS:
        parts.append(_protoinfo(proto, fields["state"], fields.get("role"),
                                fields.get("orig_vtag"), fields.get("reply_vtag")))
    if "zone" in fields:
        parts.append(_U16_ATTR.pack(6, netlink.CTA_ZONE, socket.htons(fields["zone"])))
    return b"".join(parts)


def encode_message(command: commands.CreateCommand, seq: int) -> bytes:
    """Return the complete IPCTNL_MSG_CT_NEW request for ``command`` with sequence ``seq``."""
    return netlink.encode_message(encode_body(command), seq, MSG_CT_NEW, CREATE_FLAGS)


def _family_number(fields: _CreateFields) -> int:
    family = fields.get("family")
    if family is None:
        address = fields.get("src", fields.get("reply_src"))
        family = constants.IPV6 if ":" in str(address) else constants.IPV4
    return int(constants.FAMILY_NUMBERS[family])


_Pair = tuple[bytes, bytes]


def _directions(fields: _CreateFields,
                af: int) -> tuple[_Pair, _Pair, tuple[int, ...], tuple[int, ...]]:
    """Return both directions' packed addresses and layer-4 fields.

    A missing direction mirrors the other, as the CLI completes it.
    """
    proto = fields["proto"]
    if isinstance(proto, str) and proto in constants.ICMP_PROTOCOLS:
        kind = fields["icmp_type"]
        answer = constants.ICMP_REPLY_TYPES[proto].get(kind, NO_REPLY_TYPE)
        code, ident = fields["icmp_code"], fields.get("icmp_id", 0)
        l4_orig: tuple[int, ...] = (kind, code, ident)
        l4_reply: tuple[int, ...] = (answer, code, ident)
    elif isinstance(proto, str) and proto in _PORTED:
        first, second = _PORTED[proto]
        l4_orig = _pair(fields, first, second)
        l4_reply = _pair(fields, "reply_" + first, "reply_" + second)
        l4_orig, l4_reply = l4_orig or l4_reply[::-1], l4_reply or l4_orig[::-1]
    else:
        l4_orig = l4_reply = ()
    original = _addresses(fields, "", af)
    reply = _addresses(fields, "reply_", af)
    if original is None:
        if reply is None:
            raise exceptions.InvalidArgumentError("src", None, "needs one direction's addresses")
        original = (reply[1], reply[0])
    if reply is None:
        reply = (original[1], original[0])
    return original, reply, l4_orig, l4_reply


def _pair(fields: Mapping[str, object], first: str, second: str) -> tuple[int, ...]:
    one, other = fields.get(first), fields.get(second)
    return (one, other) if isinstance(one, int) and isinstance(other, int) else ()


def _addresses(fields: Mapping[str, object], prefix: str, af: int) -> _Pair | None:
    src, dst = fields.get(prefix + "src"), fields.get(prefix + "dst")
    if not isinstance(src, str) or not isinstance(dst, str):
        return None
    # CreateCommand validated and canonicalised both addresses (netaddr), so
    # one C-level conversion suffices; netlink.pack_address would parse each
    # unique address twice more, which dominates a batch of distinct flows.
    return socket.inet_pton(af, src), socket.inet_pton(af, dst)


# One struct per attribute layout, so a tuple costs a few pack calls rather
# than one call per attribute: this runs once per flow of large batches.
_NESTED = netlink.NLA_F_NESTED
# Netlink headers are in host order, values in network order (socket.htonl).
_U32_ATTR: Final = struct.Struct("=HHI")
_U16_ATTR: Final = struct.Struct("=HHH2x")
_NFGEN_BY_AF: Final = {af: _NFGEN.pack(af, netlink.NFNETLINK_V0, 0)
                       for af in (netlink.AF_INET, netlink.AF_INET6)}
_PORTED: Final[Mapping[str, tuple[str, str]]] = {
    **dict.fromkeys(constants.PORT_PROTOCOLS, ("sport", "dport")), "gre": ("srckey", "dstkey")}
_IP_ATTRS: Final = {
    netlink.AF_INET: (netlink.CTA_IP_V4_SRC, netlink.CTA_IP_V4_DST),
    netlink.AF_INET6: (netlink.CTA_IP_V6_SRC, netlink.CTA_IP_V6_DST),
}
_ICMP_ATTRS: Final = {
    # libnetfilter_conntrack's order: code, type, id.
    netlink.AF_INET: (netlink.CTA_PROTO_ICMP_CODE, netlink.CTA_PROTO_ICMP_TYPE,
                      netlink.CTA_PROTO_ICMP_ID),
    netlink.AF_INET6: (netlink.CTA_PROTO_ICMPV6_CODE, netlink.CTA_PROTO_ICMPV6_TYPE,
                       netlink.CTA_PROTO_ICMPV6_ID),
}
_HEADS: Final = {af: struct.Struct(f"=HHHHHH{alen}sHH{alen}s")
                 for af, alen in ((netlink.AF_INET, 4), (netlink.AF_INET6, 16))}
_PORTS: Final = struct.Struct("=HHHHB3xHH2sxxHH2sxx")
_ICMP: Final = struct.Struct("=HHHHB3xHHB3xHHB3xHH2sxx")
_GENERIC: Final = struct.Struct("=HHHHB3x")
_ZONE: Final = struct.Struct("=HH2sxx")


def _tuple(attr: int, af: int, protonum: int, ends: _Pair, l4: tuple[int, ...], *,
           zone: int | None) -> bytes:
    """Return one CTA_TUPLE_* nest: addresses, protocol, optional per-direction zone."""
    proto = _proto_nest(af, protonum, l4)
    zone_attr = b"" if zone is None else _ZONE.pack(6, CTA_TUPLE_ZONE, _BE16.pack(zone))
    alen = len(ends[0])
    ip_len = 4 + 2 * (4 + alen)
    src_attr, dst_attr = _IP_ATTRS[af]
    head = _HEADS[af].pack(4 + ip_len + len(proto) + len(zone_attr), attr | _NESTED,
                           ip_len, netlink.CTA_TUPLE_IP | _NESTED,
                           4 + alen, src_attr, ends[0], 4 + alen, dst_attr, ends[1])
    return head + proto + zone_attr


def _proto_nest(af: int, protonum: int, l4: tuple[int, ...]) -> bytes:
    nested = netlink.CTA_TUPLE_PROTO | _NESTED
    if len(l4) == 2:
        return _PORTS.pack(_PORTS.size, nested, 5, netlink.CTA_PROTO_NUM, protonum,
                           6, netlink.CTA_PROTO_SRC_PORT, _BE16.pack(l4[0]),
                           6, netlink.CTA_PROTO_DST_PORT, _BE16.pack(l4[1]))
    if len(l4) == 3:
        code_attr, type_attr, id_attr = _ICMP_ATTRS[af]
        return _ICMP.pack(_ICMP.size, nested, 5, netlink.CTA_PROTO_NUM, protonum,
                          5, code_attr, l4[1], 5, type_attr, l4[0],
                          6, id_attr, _BE16.pack(l4[2]))
    return _GENERIC.pack(_GENERIC.size, nested, 5, netlink.CTA_PROTO_NUM, protonum)


@functools.lru_cache(maxsize=256)
def _status_attr(words: tuple[str, ...]) -> bytes:
    value = IPS_CONFIRMED
    for word in words:
        value |= STATUS_BITS[word]
    return netlink.nla(CTA_STATUS, _BE32.pack(value))


@functools.lru_cache(maxsize=1024)
def _protoinfo(proto: str, state_name: str, role: str | None, orig_vtag: int | None,
               reply_vtag: int | None) -> bytes:
    """Return CTA_PROTOINFO for tcp/sctp/dccp (state; tcp flags, vtags, role)."""
    attr, states = _STATE_ATTRS[proto]
    state = states.index(state_name)
    # The state attribute is number 1 in all three nests.
    inner = [netlink.nla(CTA_PROTOINFO_TCP_STATE, _U8.pack(state))]
    if proto == "tcp":
        flags = IP_CT_TCP_FLAG_BE_LIBERAL | IP_CT_TCP_FLAG_SACK_PERM
        if state >= _TCP_TIME_WAIT:
            flags |= IP_CT_TCP_FLAG_CLOSE_INIT
        pair = bytes((flags, flags))
        inner += [netlink.nla(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, pair),
                  netlink.nla(CTA_PROTOINFO_TCP_FLAGS_REPLY, pair)]
    elif proto == "sctp":
        inner += [netlink.nla(CTA_PROTOINFO_SCTP_VTAG_ORIGINAL, _VTAG.pack(orig_vtag or 0)),
                  netlink.nla(CTA_PROTOINFO_SCTP_VTAG_REPLY, _VTAG.pack(reply_vtag or 0))]
    else:
        role_number = constants.DCCP_ROLES.index(str(role))
        inner.append(netlink.nla(CTA_PROTOINFO_DCCP_ROLE, _U8.pack(role_number)))
    return netlink.nest(CTA_PROTOINFO, netlink.nest(attr, *inner))


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

def create_error(errno: int, command: commands.CreateCommand) -> exceptions.CommandError:
    """Return the typed error of a netlink create of ``command`` that failed with ``errno``.

    EEXIST becomes :class:`~conntrack_lib.exceptions.EntryExistsError`, EPERM
    :class:`~conntrack_lib.exceptions.PermissionDeniedError`, anything else
    :class:`~conntrack_lib.exceptions.CommandError`; the argv names the
    request as ``("netlink", "create", *command.argv())``, the exit code is
    1 and the text is conntrack's, as when ``conntrack -I`` is refused.
    """
    argv = ("netlink", "create", *command.argv())
    error: type[exceptions.CommandError] = _ERROR_CLASSES.get(errno, exceptions.CommandError)
    # Worded as conntrack -I words it, so one failure reads the same
    # whichever road the create took.
    # The exit code is conntrack's for a refused kernel operation (1); the
    # errno goes in the text.
    text = _CLI_WORDING.get(errno) or os.strerror(errno)
    return error(argv, 1, "", f"Operation failed: {text} (errno {errno}: {command})")


#: What conntrack -I prints after "Operation failed: " for these errnos.
_CLI_WORDING: Final[Mapping[int, str]] = {
    errno_codes.EEXIST: "Such conntrack exists, try -U to update",
    errno_codes.ENOMEM: "not enough memory",
    errno_codes.ETIME: "conntrack has expired",
    errno_codes.EPERM: "sorry, you must be root or get CAP_NET_ADMIN capability to do this",
}

_ERROR_CLASSES: Final[Mapping[int, type[exceptions.CommandError]]] = {
    errno_codes.EEXIST: exceptions.EntryExistsError,
    errno_codes.EPERM: exceptions.PermissionDeniedError,
}


__all__ = [
    "CREATE_FLAGS", "MSG_CT_NEW", "create_error", "encodable", "encode_body",
    "encode_message", "from_primitive", "to_primitive",
]
