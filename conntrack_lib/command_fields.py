"""The field tables, checks and rendering that command objects are built on.

Holds the option table (``_OPTIONS``, which is also the rendering order),
the profile of each command kind (which fields it accepts and how it reads
them), the normalisation of every field to its canonical value, the
cross-field checks (protocol, family, combinations, what ``-G`` and ``-I``
require) and the rendering of canonical fields into argv tokens.  The
command classes of :mod:`conntrack_lib.commands` are built on these, and
that module re-exports the few names other modules read from it.  Nothing
here runs a process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from conntrack_lib import constants
from conntrack_lib import validators as val
from conntrack_lib.exceptions import InvalidArgumentError
from conntrack_lib.values import FieldMap, Fields, FieldValue, Primitive

_TUPLE = ("src", "dst", "reply_src", "reply_dst")
_PORTS = ("sport", "dport", "reply_sport", "reply_dport")
_ICMP = ("icmp_type", "icmp_code", "icmp_id")
_KEYS = ("srckey", "dstkey", "reply_srckey", "reply_dstkey")
_VTAGS = ("orig_vtag", "reply_vtag")
_ZONES = ("zone", "orig_zone", "reply_zone")
_MASKS = ("mask_src", "mask_dst")
_NATS = ("src_nat", "dst_nat")
_BASE = ("family", "proto", *_TUPLE, *_PORTS, *_ICMP, *_KEYS)

#: Rendering order; it is also the order fields are stored and printed in.
_OPTIONS: dict[str, str] = {
    "family": "-f", "proto": "-p", "src": "-s", "dst": "-d", "reply_src": "-r",
    "reply_dst": "-q", "mask_src": "--mask-src", "mask_dst": "--mask-dst",
    "sport": "--sport", "dport": "--dport", "reply_sport": "--reply-port-src",
    "reply_dport": "--reply-port-dst", "state": "--state", "icmp_type": "type",
    "icmp_code": "code", "icmp_id": "id", "srckey": "--srckey", "dstkey": "--dstkey",
    "reply_srckey": "--reply-key-src", "reply_dstkey": "--reply-key-dst",
    "orig_vtag": "--orig-vtag", "reply_vtag": "--reply-vtag", "role": "--role",
    "timeout": "-t", "status": "-u", "mark": "-m", "zone": "-w",
    "orig_zone": "--orig-zone", "reply_zone": "--reply-zone", "secmark": "-c",
    "labels": "-l", "label_add": "--label-add", "label_del": "--label-del",
    "src_nat": "-n", "dst_nat": "-g", "any_nat": "-j", "id": "-i", "output": "-o",
    "event_mask": "-e", "duration": "",
}
_ORDER = tuple(_OPTIONS)
_RANK = {name: rank for rank, name in enumerate(_ORDER)}

#: Which fields need which protocol (checked after ``proto`` is known).
_PROTO_GROUPS: tuple[tuple[tuple[str, ...], frozenset[str]], ...] = (
    (_PORTS, constants.PORT_PROTOCOLS),
    (("state",), constants.STATEFUL_PROTOCOLS),
    (_ICMP, constants.ICMP_PROTOCOLS),
    (_KEYS, frozenset({"gre"})),
    (_VTAGS, frozenset({"sctp"})),
    (("role",), frozenset({"dccp"})),
)
_FAMILY_OF_VERSION = {4: constants.IPV4, 6: constants.IPV6}
_ICMP_FAMILY = {"icmp": constants.IPV4, "icmpv6": constants.IPV6}
_NAT_FIELDS = (*_NATS, "any_nat")
#: Every state word of every protocol; the per-protocol list is checked later.
_ALL_STATES = tuple(dict.fromkeys(
    constants.TCP_STATES + constants.SCTP_STATES + constants.DCCP_STATES))
_ADDRESS_FIELDS = (*_TUPLE, *_MASKS, *_NAT_FIELDS)


@dataclasses.dataclass(frozen=True)
class _Profile:
    """What one command kind accepts and how its values are read."""

    option: str
    accepts: frozenset[str]
    setter: bool = False  # status/mark/NAT are values to set, not filters
    cidr: bool = True
    hidden: frozenset[str] = frozenset()  # validated but never rendered


def _make_profile(option: str, names: Sequence[str], *, setter: bool = False, cidr: bool = True,
                  hidden: frozenset[str] = frozenset()) -> _Profile:
    return _Profile(option, frozenset(names), setter, cidr, hidden)


_LIST = _make_profile("-L", (*_BASE, *_MASKS, *_ZONES, *_NATS, "state", "status", "mark",
                        "secmark", "labels", "any_nat", "output"))
_GET = _make_profile("-G", (*_BASE, *_VTAGS, "state", "labels", "id", "output"),
                cidr=False, hidden=frozenset({"family"}))
# -D -t is left out on purpose: 1.4.7 then deletes every other match too.
_DELETE = _make_profile("-D", (*_BASE, *_MASKS, *_ZONES, *_NATS, "state", "status", "mark",
                               "labels", "id"))
_CREATE = _make_profile("-I", (*_BASE, *_VTAGS, *_ZONES, *_NATS, "state", "role", "timeout",
                          "status", "mark", "label_add"),
                   setter=True, cidr=False, hidden=frozenset({"family"}))
# 1.4.7 -U sends the vtags back and the kernel refuses them, so they are no filter.
_UPDATE_MATCH = frozenset((*_BASE, *_MASKS, *_NATS, "labels", "id"))
_UPDATE_CHANGES = frozenset(("timeout", "mark", "status", "state", "label_add", "label_del"))
_UPDATE = _Profile("-U", _UPDATE_MATCH | _UPDATE_CHANGES, setter=True)
_EVENTS = _make_profile("-E", (*_BASE, *_MASKS, *_ZONES, *_NATS, "state", "mark", "secmark",
                          "labels", "any_nat", "output", "event_mask", "duration"),
                   hidden=frozenset({"duration"}))
_FLUSH = _make_profile("-F", ("family",))


# --- per-field normalisation -------------------------------------------------

def _port(name: str, value: object, _p: _Profile) -> int:
    return val.integer(name, value, 0, constants.MAX_PORT)


def _zone(name: str, value: object, _p: _Profile) -> int:
    return val.integer(name, value, 0, constants.MAX_CONNTRACK_ZONE_ID)


def _u32(name: str, value: object, _p: _Profile) -> int:
    return val.integer(name, value, 0, 0xFFFFFFFF)


def _u16(name: str, value: object, _p: _Profile) -> int:
    return val.integer(name, value, 0, 0xFFFF)


def _icmp_field(name: str, value: object, _p: _Profile) -> int:
    return val.integer(name, value, 0, constants.MAX_ICMP_FIELD)


def _address(name: str, value: object, p: _Profile) -> str:
    return val.ip_or_cidr(name, value) if p.cidr else val.ip_address(name, value)


def _status(name: str, value: object, p: _Profile) -> tuple[str, ...]:
    if p.setter:
        return val.words(name, value, constants.STATUS_FLAGS)
    # UNSET is a value to set; as a filter the kernel answers EINVAL.
    flags = tuple(flag for flag in constants.STATUS_FLAGS if flag != "UNSET")
    if p.option == "-D":
        # 1.4.7 -D ignores '!FLAG' and UNREPLIED and then deletes every other match.
        return val.words(name, value, flags)
    negated = tuple("!" + flag for flag in flags)
    result = val.words(name, value, (*flags, "UNREPLIED", *negated))
    positive = [w for w in result if w != "UNREPLIED" and not w.startswith("!")]
    if positive and len(positive) != len(result):
        # (status & mask) == value never holds for such a mix in 1.4.7.
        raise InvalidArgumentError(name, value, "cannot mix set and clear status words")
    return result


def _mark(name: str, value: object, p: _Profile) -> val.Mark:
    # -I ignores the mask part, so refuse it rather than drop it silently.
    return val.mark(name, value, mask_ok=p.option != "-I")


def _nat(name: str, value: object, p: _Profile) -> val.Nat:
    # Only -I reads -n/-g as "create with NAT"; elsewhere a bare flag filters.
    result = val.nat(name, value, flag_ok=p.option != "-I")
    if p.option == "-U" and result is not True:
        # 1.4.7 -U sends the address back, the kernel refuses, and it still counts.
        raise InvalidArgumentError(name, value, "update matches NAT only as a bare flag")
    return result


def _output(name: str, value: object, p: _Profile) -> tuple[str, ...]:
    allowed = [fmt for fmt in constants.OUTPUT_FORMATS
               if fmt != "timestamp" or p.option == "-E"]
    return val.words(name, value, allowed, upper=False, nonempty=False)


def _label_del(name: str, value: object, _p: _Profile) -> bool | tuple[str, ...]:
    return True if value is True else val.label_names(name, value)


_NORMALIZERS: dict[str, Callable[[str, object, _Profile], FieldValue]] = {
    "family": lambda n, v, _p: val.family(n, v),
    "proto": lambda n, v, _p: val.protocol(n, v),
    "src": _address, "dst": _address,
    "reply_src": lambda n, v, _p: val.ip_address(n, v),
    "reply_dst": lambda n, v, _p: val.ip_address(n, v),
    "mask_src": lambda n, v, _p: val.netmask(n, v),
    "mask_dst": lambda n, v, _p: val.netmask(n, v),
    "sport": _port, "dport": _port, "reply_sport": _port, "reply_dport": _port,
    "state": lambda n, v, _p: val.word(n, v, _ALL_STATES),
    "icmp_type": _icmp_field, "icmp_code": _icmp_field, "icmp_id": _u16,
    "srckey": _u16, "dstkey": _u16, "reply_srckey": _u16, "reply_dstkey": _u16,
    "orig_vtag": _u32, "reply_vtag": _u32,
    "role": lambda n, v, _p: val.word(n, v, constants.DCCP_ROLES, upper=False),
    "timeout": lambda n, v, _p: val.integer(n, v, 0, constants.MAX_TIMEOUT),
    "status": _status, "mark": _mark,
    "zone": _zone, "orig_zone": _zone, "reply_zone": _zone,
    "secmark": _u32,
    "labels": lambda n, v, _p: val.label_names(n, v),
    "label_add": lambda n, v, _p: val.label_names(n, v),
    "label_del": _label_del,
    "src_nat": _nat, "dst_nat": _nat,
    "any_nat": lambda n, v, _p: val.nat(n, v, flag_ok=True),
    "id": _u32, "output": _output,
    "event_mask": lambda n, v, _p: val.words(n, v, constants.EVENT_MASKS),
    "duration": lambda n, v, _p: val.duration(n, v),
}


def _normalize(raw: Mapping[str, object], profile: _Profile, kind: str) -> Fields:
    """Return the canonical value of every set field; ``None`` means unset."""
    fields: Fields = {}
    for name, value in raw.items():
        if name not in profile.accepts:
            raise InvalidArgumentError(name, value, f"not accepted by a {kind} command")
        if value is None:
            continue
        canonical = _NORMALIZERS[name](name, value, profile)
        if canonical != ():  # an empty output list means the default format
            fields[name] = canonical
    return fields


# --- cross-field checks -------------------------------------------------------

def _check_protocol(fields: FieldMap) -> None:
    """Reject protocol options that the chosen ``proto`` does not have."""
    proto = fields.get("proto")
    for names, protocols in _PROTO_GROUPS:
        for name in names:
            if name in fields and proto not in protocols:
                raise InvalidArgumentError(
                    name, fields[name], f"needs proto {'/'.join(sorted(protocols))}")
    state = fields.get("state")
    if state is not None and state not in constants.STATES_BY_PROTOCOL[str(proto)]:
        raise InvalidArgumentError("state", state, f"not a {proto} state")


def _address_of(value: FieldValue) -> str | None:
    if isinstance(value, tuple):
        return str(value[0])
    return value if isinstance(value, str) else None


def _check_family(fields: FieldMap) -> str | None:
    """Return the family all addresses agree on, or raise."""
    given = fields.get("family")
    family = given if isinstance(given, str) else None
    for name in _ADDRESS_FIELDS:
        if name not in fields:
            continue
        address = _address_of(fields[name])
        if address is None:
            continue
        found = _FAMILY_OF_VERSION[val.address_version(address)]
        if family is not None and found != family:
            raise InvalidArgumentError(name, fields[name], f"not an {family} address")
        family = found
    wanted = _ICMP_FAMILY.get(str(fields.get("proto")))
    if wanted is not None and family is not None and wanted != family:
        raise InvalidArgumentError("proto", fields["proto"], f"not usable with {family}")
    return family


def _check_combinations(fields: FieldMap) -> None:
    """Reject option combinations that conntrack refuses or misreads."""
    for mask, address in (("mask_src", "src"), ("mask_dst", "dst")):
        if mask in fields and "/" in str(fields.get(address, "/")):
            raise InvalidArgumentError(mask, fields[mask], f"needs a plain {address} address")
    if "any_nat" in fields and ("src_nat" in fields or "dst_nat" in fields):
        raise InvalidArgumentError("any_nat", fields["any_nat"],
                                   "cannot be combined with src_nat or dst_nat")
    if "label_add" in fields and "label_del" in fields:
        raise InvalidArgumentError("label_del", fields["label_del"],
                                   "cannot be combined with label_add")


def _require(fields: FieldMap, *names: str) -> None:
    for name in names:
        if name not in fields:
            raise InvalidArgumentError(name, None, "required for this command")


def _require_pairs(fields: FieldMap, pairs: Sequence[tuple[str, str]]) -> None:
    for first, second in pairs:
        if (first in fields) != (second in fields):
            missing = second if first in fields else first
            raise InvalidArgumentError(missing, None, f"{first} and {second} go together")


def _l4_pairs(proto: object) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """Return the original and reply layer-4 pairs of ``proto``, if any."""
    if proto in constants.PORT_PROTOCOLS:
        return (("sport", "dport"), ("reply_sport", "reply_dport"))
    if proto == "gre":
        return (("srckey", "dstkey"), ("reply_srckey", "reply_dstkey"))
    return None


def _check_get(fields: FieldMap) -> None:
    """Require what an exact kernel lookup needs: proto and the original tuple."""
    _require(fields, "proto", "src", "dst")
    _require_pairs(fields, (("reply_src", "reply_dst"),))
    pairs = _l4_pairs(fields["proto"])
    if pairs is not None:
        _require(fields, *pairs[0])
        _require_pairs(fields, (pairs[1],))
    if fields["proto"] in constants.ICMP_PROTOCOLS:
        _require(fields, "icmp_type", "icmp_code")


#: What ``-I`` requires besides the tuple, per protocol.
_CREATE_EXTRA: dict[str, tuple[str, ...]] = {
    "sctp": _VTAGS, "dccp": ("role",), "icmp": _ICMP[:2], "icmpv6": _ICMP[:2]}
_ZONE_SET = frozenset(_ZONES)


def _check_create(fields: FieldMap) -> None:
    """Require what ``-I`` requires, direction by direction."""
    _require(fields, "proto", "timeout")
    _require_pairs(fields, (("src", "dst"), ("reply_src", "reply_dst")))
    if "src" not in fields and "reply_src" not in fields:
        raise InvalidArgumentError("src", None, "needs src and dst or reply_src and reply_dst")
    proto = fields["proto"]
    pairs = _l4_pairs(proto)
    if pairs is not None:
        for (first, second), address in zip(pairs, ("src", "reply_src"), strict=True):
            if (address in fields) != (first in fields and second in fields):
                raise InvalidArgumentError(first, fields.get(first),
                                           f"{first} and {second} must match the {address}"
                                           " direction")
    if proto in constants.STATEFUL_PROTOCOLS:
        _require(fields, "state")
    _require(fields, *_CREATE_EXTRA.get(str(proto), ()))
    if len(_ZONE_SET.intersection(fields)) > 1:
        raise InvalidArgumentError("zone", fields.get("zone"),
                                   "zone, orig_zone and reply_zone: at most one")


def _validate(raw: Mapping[str, object], profile: _Profile, kind: str) -> Fields:
    fields = _normalize(raw, profile, kind)
    _check_protocol(fields)
    _check_family(fields)
    _check_combinations(fields)
    return fields


# --- rendering ----------------------------------------------------------------

_LABEL_FIELDS = frozenset(("labels", "label_add", "label_del"))


def _nat_text(value: tuple[object, ...]) -> str:
    address, port = str(value[0]), value[1]
    host = f"[{address}]" if val.address_version(address) == 6 else address
    return f"{host}:{port}"


def _value_text(name: str, value: FieldValue) -> str:
    if not isinstance(value, tuple):
        return str(value)
    if name == "mark":
        return f"{value[0]}/{value[1]}"
    if name in _NAT_FIELDS:
        return _nat_text(value)
    return ",".join(map(str, value))


def _render_field(name: str, value: FieldValue, fields: FieldMap) -> tuple[str, ...]:
    option = _OPTIONS[name]
    if name in _ICMP:
        option = f"--{fields['proto']}-{option}"
    if value is True:
        return (option,)
    if name in _LABEL_FIELDS and isinstance(value, tuple):
        # One option per name: 1.4.9 reads only the first name of a comma
        # list (it parses the list in place twice); every release merges
        # repeated label options into one set.
        return tuple(word for label in value
                     for word in (option, val.check_token(name, str(label))))
    return (option, val.check_token(name, _value_text(name, value)))


def _render(option: str, fields: FieldMap, hidden: frozenset[str]) -> tuple[str, ...]:
    argv = [option]
    for name in _ORDER:
        if name in fields and name not in hidden:
            argv.extend(_render_field(name, fields[name], fields))
    return tuple(argv)


def _primitive(value: FieldValue) -> Primitive:
    if isinstance(value, tuple):
        return list(value)
    return value


def _field_rank(item: tuple[str, FieldValue]) -> int:
    return _RANK[item[0]]
