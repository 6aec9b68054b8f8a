"""Property tests of conntrack_lib.commands: safe tokens, strict rejection, round trips."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from conntrack_lib import commands as c
from conntrack_lib import constants
from conntrack_lib.exceptions import InvalidArgumentError

#: Every option token a command may render (``-`` is the stdin of ``-R -``).
OPTION_TOKENS = frozenset({
    "-L", "-G", "-I", "-U", "-D", "-F", "-C", "-S", "-E", "-R", "-",
    "-f", "-p", "-s", "-d", "-r", "-q", "--mask-src", "--mask-dst", "--sport", "--dport",
    "--reply-port-src", "--reply-port-dst", "--state", "--icmp-type", "--icmp-code",
    "--icmp-id", "--icmpv6-type", "--icmpv6-code", "--icmpv6-id", "--srckey", "--dstkey",
    "--reply-key-src", "--reply-key-dst", "--orig-vtag", "--reply-vtag", "--role", "-t",
    "-u", "-m", "-w", "--orig-zone", "--reply-zone", "-c", "-l", "--label-add",
    "--label-del", "-n", "-g", "-j", "-i", "-o", "-e",
})
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:/,!\[\]]+")
FORBIDDEN = [" ", "\n", "\x00", '"', "\\", "#", "\t", "\r"]

u16 = st.integers(0, 65535)
u32 = st.integers(0, 2**32 - 1)
label = st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True)


def addresses(version: int) -> st.SearchStrategy[str]:
    """Return a strategy of address texts of one IP version, sometimes uppercase."""
    base = st.ip_addresses(v=version).map(str)
    return st.one_of(base, base.map(str.upper))


def networks(version: int) -> st.SearchStrategy[str]:
    """Return a strategy of ``address/prefix`` texts of one IP version."""
    limit = 32 if version == 4 else 128
    return st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=version), st.integers(0, limit))


def _draw_addresses(draw: st.DrawFn, version: int, fields: dict[str, Any]) -> None:
    if draw(st.booleans()):
        fields["family"] = "ipv4" if version == 4 else "ipv6"
    for name in ("src", "dst"):
        if draw(st.booleans()):
            fields[name] = draw(st.one_of(addresses(version), networks(version)))
    for name in ("reply_src", "reply_dst"):
        if draw(st.booleans()):
            fields[name] = draw(addresses(version))
    if draw(st.booleans()):
        fields["src"] = draw(addresses(version))
        fields["mask_src"] = "255.255.0.0" if version == 4 else "ffff:ffff::"


def _draw_layer4(draw: st.DrawFn, version: int, fields: dict[str, Any]) -> None:
    proto = draw(st.sampled_from([None, "tcp", "udp", "sctp", "dccp", "gre", "udplite", 89,
                                  "icmp" if version == 4 else "icmpv6"]))
    if proto is None:
        return
    fields["proto"] = proto
    if proto in constants.PORT_PROTOCOLS:
        names = ("sport", "dport", "reply_sport", "reply_dport")
        fields.update({name: draw(u16) for name in names if draw(st.booleans())})
    if proto in constants.STATES_BY_PROTOCOL and draw(st.booleans()):
        fields["state"] = draw(st.sampled_from(constants.STATES_BY_PROTOCOL[proto]))
    if proto in constants.ICMP_PROTOCOLS:
        fields.update(icmp_type=draw(st.integers(0, 255)), icmp_id=draw(u16))
    if proto == "gre":
        fields.update(srckey=draw(u16), reply_dstkey=draw(u16))


def _draw_metadata(draw: st.DrawFn, version: int, kind: str, fields: dict[str, Any]) -> None:
    if draw(st.booleans()):
        fields["mark"] = draw(st.one_of(u32, st.tuples(u32, u32)))
    if draw(st.booleans()):
        fields[draw(st.sampled_from(["zone", "orig_zone", "reply_zone"]))] = draw(u16)
    if draw(st.booleans()):
        fields["labels"] = draw(st.lists(label, min_size=1, max_size=3))
    nat = st.one_of(st.just(True), addresses(version), st.tuples(addresses(version), u16))
    if draw(st.booleans()):
        fields["src_nat"] = draw(nat)
    elif kind != "delete" and draw(st.booleans()):
        fields["any_nat"] = draw(nat)
    if kind == "list" and draw(st.booleans()):
        fields["status"] = draw(st.sampled_from(
            ["ASSURED", "SEEN_REPLY,ASSURED", "!ASSURED", "UNREPLIED,!EXPECTED", "OFFLOAD"]))
    if kind != "delete" and draw(st.booleans()):
        fields["secmark"] = draw(u32)


@st.composite
def filters(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """Draw a mostly valid filter set for list, delete or events."""
    version = draw(st.sampled_from([4, 6]))
    fields: dict[str, Any] = {}
    _draw_addresses(draw, version, fields)
    _draw_layer4(draw, version, fields)
    _draw_metadata(draw, version, kind, fields)
    return fields


@st.composite
def creates(draw: st.DrawFn) -> c.Command:
    """Draw a valid create command."""
    version = draw(st.sampled_from([4, 6]))
    proto = draw(st.sampled_from(["tcp", "udp", "sctp", "dccp", "gre", "udplite", 89,
                                  "icmp" if version == 4 else "icmpv6"]))
    fields: dict[str, Any] = {"proto": proto, "src": draw(addresses(version)),
                              "dst": draw(addresses(version)),
                              "timeout": draw(st.integers(0, 2**31 - 1))}
    if proto in constants.PORT_PROTOCOLS:
        fields.update(sport=draw(u16), dport=draw(u16))
    if proto == "gre":
        fields.update(srckey=draw(u16), dstkey=draw(u16))
    if proto in constants.STATES_BY_PROTOCOL:
        fields["state"] = draw(st.sampled_from(constants.STATES_BY_PROTOCOL[proto]))
    if proto == "sctp":
        fields.update(orig_vtag=draw(u32), reply_vtag=draw(u32))
    if proto == "dccp":
        fields["role"] = draw(st.sampled_from(constants.DCCP_ROLES))
    if proto in constants.ICMP_PROTOCOLS:
        fields.update(icmp_type=draw(st.integers(0, 255)), icmp_code=draw(st.integers(0, 255)))
    if draw(st.booleans()):
        fields["mark"] = draw(u32)
    if draw(st.booleans()):
        fields[draw(st.sampled_from(["zone", "orig_zone", "reply_zone"]))] = draw(u16)
    if draw(st.booleans()):
        fields["status"] = draw(st.lists(st.sampled_from(constants.STATUS_FLAGS), min_size=1))
    if draw(st.booleans()):
        fields["dst_nat"] = draw(st.one_of(addresses(version),
                                           st.tuples(addresses(version), u16)))
    if draw(st.booleans()):
        fields["label_add"] = draw(st.lists(label, min_size=1, max_size=3))
    return c.CreateCommand(**fields)


@st.composite
def updates(draw: st.DrawFn) -> c.Command:
    """Draw a valid update command."""
    version = draw(st.sampled_from([4, 6]))
    match: dict[str, Any] = {"src": draw(addresses(version))}
    changes: dict[str, Any] = {}
    if draw(st.booleans()):
        match["proto"] = "tcp"
        match["dport"] = draw(u16)
        if draw(st.booleans()):
            changes["state"] = draw(st.sampled_from(constants.TCP_STATES))
    changes["timeout"] = draw(st.integers(0, 2**31 - 1))
    if draw(st.booleans()):
        changes["mark"] = draw(st.one_of(u32, st.tuples(u32, u32)))
    if draw(st.booleans()):
        changes["label_del"] = draw(st.one_of(st.just(True), st.lists(label, min_size=1)))
    return c.UpdateCommand(match=match, **changes)


def _build(kind: str, fields: dict[str, Any]) -> c.Command:
    builders = {"list": c.ListCommand, "delete": c.DeleteCommand, "events": c.EventsCommand}
    try:
        return builders[kind](**fields)
    except InvalidArgumentError:
        assume(False)
        raise


@st.composite
def any_command(draw: st.DrawFn) -> c.Command:
    """Draw a valid command of any kind."""
    choice = draw(st.sampled_from(["list", "delete", "events", "create", "update", "flush",
                                   "count", "stats", "batch"]))
    if choice in ("list", "delete", "events"):
        return _build(choice, draw(filters(choice)))
    if choice == "create":
        return draw(creates())
    if choice == "update":
        return draw(updates())
    if choice == "flush":
        return c.FlushCommand()
    if choice == "batch":
        members = st.one_of(creates(), st.just(c.FlushCommand()),
                            filters("delete").map(lambda f: _build("delete", f)))
        drawn = draw(st.lists(members, min_size=1, max_size=4))
        # A command naming labels ends its batch: keep the first batch -R can run.
        return c.BatchCommand(next(c.load_chunks(drawn, len(drawn))))
    return c.CountCommand() if choice == "count" else c.StatsCommand()


def _assert_safe(argv: tuple[str, ...]) -> None:
    assert argv[0] in OPTION_TOKENS
    for token in argv:
        if token.startswith("-"):
            assert token in OPTION_TOKENS, token
        else:
            assert SAFE_VALUE.fullmatch(token), token
        assert not any(ch in token for ch in FORBIDDEN)


@given(any_command())
def test_property_rendered_tokens_are_safe(command: c.Command) -> None:
    _assert_safe(command.argv())
    if isinstance(command, c.BatchCommand):
        lines = command.stdin().split("\n")
        assert lines[-1] == ""
        assert len(lines) == len(command) + 1
        for line, member in zip(lines, command, strict=False):
            assert tuple(line.split(" ")) == member.argv()
            _assert_safe(member.argv())
    elif command.loadable:
        assert tuple(command.load_line().split(" ")) == command.argv()


@given(any_command())
def test_property_primitive_round_trip(command: c.Command) -> None:
    rebuilt = c.from_primitive(command.to_primitive())
    assert rebuilt == command
    assert hash(rebuilt) == hash(command)
    assert rebuilt.argv() == command.argv()


STRING_FIELDS = ["family", "proto", "src", "dst", "reply_src", "reply_dst", "status",
                 "labels", "src_nat", "dst_nat", "any_nat", "output", "mask_src"]
INT_FIELDS = {"zone": 65535, "orig_zone": 65535, "reply_zone": 65535, "mark": 2**32 - 1,
              "secmark": 2**32 - 1}


@st.composite
def hostile_text(draw: st.DrawFn) -> str:
    """Draw a string holding at least one character no value may contain."""
    head = draw(st.text(max_size=10))
    bad = draw(st.sampled_from([*FORBIDDEN, "-"]))
    tail = draw(st.text(max_size=10))
    return f"{bad}{tail}" if bad == "-" else f"{head}{bad}{tail}"


@given(st.sampled_from(STRING_FIELDS), hostile_text())
def test_property_hostile_strings_rejected(field: str, value: str) -> None:
    try:
        c.ListCommand(**{field: value})
    except InvalidArgumentError as err:
        assert err.field == field
        assert isinstance(err, ValueError)
    else:
        raise AssertionError(f"{field}={value!r} was accepted")


@given(st.sampled_from(sorted(INT_FIELDS)), st.data())
def test_property_bad_integers_rejected(field: str, data: st.DataObject) -> None:
    high = INT_FIELDS[field]
    value = data.draw(st.one_of(
        st.integers(max_value=-1), st.integers(min_value=high + 1), st.booleans(),
        st.floats(), st.text(max_size=5), st.lists(st.integers(), max_size=1)))
    try:
        c.ListCommand(**{field: value})
    except InvalidArgumentError as err:
        assert err.field == field
    else:
        raise AssertionError(f"{field}={value!r} was accepted")


FIELD_NAMES = ["kind", "family", "proto", "src", "dst", "sport", "dport", "zone", "mark",
               "status", "labels", "timeout", "match", "commands", "output", "event_mask",
               "duration_ms", "label_del", "src_nat", "state", "icmp_type", "id", "self"]
KINDS = ["list", "get", "create", "update", "delete", "flush", "count", "stats", "events",
         "batch"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**33), st.floats(),
                    st.text(max_size=12), st.sampled_from(["10.0.0.1", "::1", "tcp", "ALL"]))
primitive_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4),
                                max_leaves=12)


@given(st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=6)),
                       primitive_values, max_size=6),
       st.sampled_from([*KINDS, None]))
def test_property_random_primitives_only_raise_invalid_argument(
        data: dict[str, Any], kind: str | None) -> None:
    if kind is not None:
        data["kind"] = kind
    try:
        command = c.from_primitive(data)
    except InvalidArgumentError as err:
        assert isinstance(err, ValueError)
    else:
        assert isinstance(command, c.Command)
        _assert_safe(command.argv())
