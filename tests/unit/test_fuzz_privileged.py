"""Fuzz the root boundary: the privileged entrypoints and the netlink flow check.

Each test calls the undecorated function the privsep daemon runs, with the
process runner (or the netlink socket) replaced by a mock.  Whatever
arrives, the daemon either refuses it before starting anything, with
:class:`InvalidArgumentError` or (for a valid name of an absent namespace)
:class:`NamespaceNotFoundError`, or starts exactly the process that the
rebuilt command renders, from the configured absolute binary.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from conntrack_lib import boundary, commands, constants, netlink, netlink_socket, netns
from conntrack_lib import exceptions as exc
from conntrack_lib.privileged import conntrack as priv
from conntrack_lib.privileged import netlink as priv_netlink
from tests import fuzz
from tests.fuzz.strategies import (
    HOSTILE_STRINGS,
    keys,
    nested_primitives,
    nudged,
    wire_scalars,
    wire_values,
)

BINARY = constants.CONNTRACK_BINARY
PRESENT = "fuzz-present"
ABSENT = "fuzz-absent"
#: The undecorated implementation behind each privsep entrypoint.
ENTRYPOINTS = {
    "run_query": (priv.run_query.args[0], boundary.QUERY_KINDS),
    "run_change": (priv.run_change.args[0], boundary.CHANGE_KINDS),
    "run_batch": (priv.run_batch.args[0], boundary.BATCH_KINDS),
    "run_events": (priv.run_events.args[0], boundary.EVENT_KINDS),
}
VALID_PRIMITIVES = [
    commands.ListCommand(proto="tcp", dst="10.0.0.0/8", zone=4, output=["id"]).to_primitive(),
    commands.GetCommand(proto="udp", src="::1", dst="::2", sport=1, dport=2).to_primitive(),
    commands.CountCommand().to_primitive(),
    commands.StatsCommand().to_primitive(),
    commands.CreateCommand(proto="tcp", src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2,
                           state="ESTABLISHED", timeout=60, zone=3).to_primitive(),
    commands.UpdateCommand(match={"src": "10.0.0.1"}, timeout=5, mark=(1, 3)).to_primitive(),
    commands.DeleteCommand(zone=4, mark=7).to_primitive(),
    commands.FlushCommand().to_primitive(),
    commands.EventsCommand(duration=0.5, event_mask=["NEW"], zone=2).to_primitive(),
    commands.BatchCommand([commands.FlushCommand(), commands.DeleteCommand(zone=9)])
    .to_primitive(),
]


def _as_wire(value: Any) -> Any:
    """Return ``value`` as the daemon receives it: lists arrive as tuples."""
    if isinstance(value, list | tuple):
        return tuple(_as_wire(item) for item in value)
    if isinstance(value, dict):
        return {key: _as_wire(item) for key, item in value.items()}
    return value


@st.composite
def mutated_primitives(draw: st.DrawFn) -> dict[Any, Any]:
    """Return a valid primitive with one or two keys changed, added or dropped."""
    data = dict(draw(st.sampled_from(VALID_PRIMITIVES)))
    if draw(st.booleans()):
        data = _as_wire(data)
    for _ in range(draw(st.integers(1, 2))):
        action = draw(st.sampled_from(["set", "drop", "add", "borrow", "nudge", "nudge"]))
        if action == "nudge" and data:
            name = draw(st.sampled_from(sorted(data)))
            data[name] = draw(nudged(data[name]))
        elif action == "borrow":
            # A valid value of another command: right type, maybe the wrong place.
            donor = draw(st.sampled_from(VALID_PRIMITIVES))
            name = draw(st.sampled_from(sorted(donor)))
            data[name] = donor[name]
        elif action == "drop" and data:
            data.pop(draw(st.sampled_from(sorted(data))), None)
        elif action == "set" and data:
            data[draw(st.sampled_from(sorted(data)))] = draw(wire_values)
        else:
            data[draw(keys)] = draw(wire_values)
    return data


commands_in = st.one_of(
    st.sampled_from(VALID_PRIMITIVES),
    mutated_primitives(),
    nested_primitives(wire_values),
    wire_values,
)
namespaces = st.one_of(
    st.none(), st.just(PRESENT), st.just(ABSENT),
    st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    st.sampled_from(HOSTILE_STRINGS), st.sampled_from(["..", ".", "a/../b", "x" * 65]),
    wire_scalars,
)
timeouts = st.one_of(st.sampled_from([5, 0.5, boundary.MAX_TIMEOUT]), wire_scalars)
chunk_sizes = st.one_of(st.sampled_from([1, 4096]), wire_scalars)


@contextlib.contextmanager
def _daemon_mocks() -> Iterator[mock.Mock]:
    """Replace the process runner; pretend only ``PRESENT`` exists under /run/netns."""
    runner = mock.Mock(return_value=netns.ProcessOutput(0, "", ""))
    with mock.patch.object(netns, "run", runner), \
            mock.patch.object(netns, "exists", lambda name: netns.validate_name(name) == PRESENT):
        yield runner


def _check_started(runner: mock.Mock, data: Any, namespace: Any, reply: Any) -> None:
    """Check the one process the daemon started against the rebuilt command."""
    assert runner.call_count == 1
    argv = runner.call_args.args[0]
    expected = commands.from_primitive(data)
    if namespace is None:
        assert argv[0] == BINARY
        rendered = argv[1:]
    else:
        assert namespace == PRESENT
        assert argv[:4] == (netns.NSENTER, f"--net=/run/netns/{PRESENT}", "--", BINARY)
        rendered = argv[4:]
    assert rendered == expected.argv()
    fuzz.assert_sound_argv(rendered)
    kwargs = runner.call_args.kwargs
    assert 0 < kwargs["timeout"] <= boundary.MAX_TIMEOUT
    if expected.kind == "batch":
        lines = kwargs["stdin"].splitlines()
        assert len(lines) == len(expected)
        for line in lines:
            fuzz.assert_sound_argv(line.split())
            assert line.split()[0] in ("-I", "-D", "-F")
    else:
        assert kwargs["stdin"] is None
    if expected.kind == "events":
        assert 0.001 <= kwargs["duration"] <= 3600
    else:
        assert kwargs["duration"] is None
    assert reply == (0, "", "", argv, None, 1)


def _label(field: str) -> str:
    """Return ``field`` for the statistics when it is a plain name, else 'other'."""
    return field if field.isidentifier() and field.isascii() else "other"


def _call_entrypoint(name: str, data: Any, namespace: Any, timeout: Any, size: Any) -> None:
    func, kinds = ENTRYPOINTS[name]
    with _daemon_mocks() as runner:
        try:
            reply = func(data, namespace, timeout, size)
        except exc.NamespaceNotFoundError:
            assert namespace != PRESENT and netns.validate_name(namespace) == namespace
            runner.assert_not_called()
            event("refused: absent namespace")
            return
        except exc.InvalidArgumentError as err:
            assert isinstance(err.field, str)
            runner.assert_not_called()
            event(f"refused: {_label(err.field)}")
            return
    assert commands.from_primitive(data).kind in kinds
    event(f"started: {name}")
    _check_started(runner, data, namespace, reply)


@given(st.sampled_from(sorted(ENTRYPOINTS)), commands_in, namespaces, timeouts, chunk_sizes)
@example("run_batch", {"kind": "batch", "commands": (("kind", "update"),)}, None, 5, 1)
@example("run_query", {"kind": "list", "src": "10.0.0.1"}, "../netns", 5, 1)
@example("run_change", {"kind": "flush"}, ABSENT, 5, 1)
def test_fuzz_entrypoints_refuse_before_any_process(
        name: str, data: Any, namespace: Any, timeout: Any, size: Any) -> None:
    _call_entrypoint(name, data, namespace, timeout, size)


def _serving(kind: object) -> str | None:
    """Return the entrypoint that serves ``kind``, if one does."""
    if not isinstance(kind, str):
        return None
    return next((name for name, (_, kinds) in ENTRYPOINTS.items() if kind in kinds), None)


@given(mutated_primitives(), st.sampled_from([None, PRESENT]), st.data())
def test_fuzz_entrypoints_mutated_commands(data: Any, namespace: Any,
                                          choice: st.DataObject) -> None:
    # Valid namespace, timeout and size, and the entrypoint of the command's
    # kind when it has one: only the command itself is hostile.
    name = _serving(data.get("kind")) or choice.draw(st.sampled_from(sorted(ENTRYPOINTS)))
    _call_entrypoint(name, data, namespace, 5, 4096)


@pytest.mark.parametrize("data", VALID_PRIMITIVES, ids=lambda d: d["kind"])
def test_fuzz_valid_primitives_reach_their_entrypoint(data: dict[str, Any]) -> None:
    # The mutation base must itself be accepted by exactly one entrypoint.
    served = [name for name, (_, kinds) in ENTRYPOINTS.items() if data["kind"] in kinds]
    assert len(served) == 1
    with _daemon_mocks() as runner:
        reply = ENTRYPOINTS[served[0]][0](_as_wire(data), PRESENT, 5, 4096)
    _check_started(runner, data, PRESENT, reply)


# ---------------------------------------------------------------------------
# netlink: validate_flow and delete_flows

VALID_FLOWS = [
    {"family": "ipv4", "protonum": 6, "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1,
     "dport": 2, "icmp_type": None, "icmp_code": None, "icmp_id": None, "zone": 0},
    {"family": "ipv6", "protonum": 58, "src": "fe80::1", "dst": "::ffff:10.0.0.1",
     "sport": None, "dport": None, "icmp_type": 128, "icmp_code": 0, "icmp_id": 7,
     "zone": 65535},
    {"family": "ipv4", "protonum": 47, "src": "192.0.2.1", "dst": "192.0.2.2", "sport": 16,
     "dport": 32, "icmp_type": None, "icmp_code": None, "icmp_id": None, "zone": 7},
    {"family": "ipv6", "protonum": 89, "src": "2001:db8::1", "dst": "2001:db8::2",
     "sport": None, "dport": None, "icmp_type": None, "icmp_code": None, "icmp_id": None,
     "zone": 1},
]
FLOW_VALUES = st.one_of(
    wire_scalars, st.integers(-2, 70000), st.sampled_from(["ipv4", "ipv6", "IPV4"]),
    st.ip_addresses().map(str), st.sampled_from(["1.2.3", "::1%lo", "10.0.0.1 ", "0x0a000001",
                                                 "010.0.0.1", "::ffff:1.2.3.4", "1::2::3"]),
)


@st.composite
def flows(draw: st.DrawFn) -> Any:
    """Return a valid flow with a few keys changed, dropped or added, or anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(wire_values)
    flow: dict[Any, Any] = dict(draw(st.sampled_from(VALID_FLOWS)))
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["set", "set", "set", "drop", "add"]))
        if action == "drop":
            flow.pop(draw(st.sampled_from(sorted(flow, key=repr))), None)
        elif action == "add":
            flow[draw(st.one_of(keys, st.integers()))] = draw(FLOW_VALUES)
        else:
            flow[draw(st.sampled_from(sorted(netlink.FLOW_KEYS)))] = draw(FLOW_VALUES)
    return flow


def _check_flow(prim: dict[str, Any], flow: netlink.Flow) -> None:
    """Check a validated flow against its primitive with the standard library."""
    af = socket.AF_INET if prim["family"] == "ipv4" else socket.AF_INET6
    assert flow.family == af
    for key, packed in (("src", flow.src), ("dst", flow.dst)):
        assert type(prim[key]) is str
        assert packed == ipaddress.ip_address(prim[key]).packed
    assert 0 <= flow.protonum <= 255 and type(prim["protonum"]) is int
    assert 0 <= flow.zone <= 65535
    for key in ("sport", "dport", "icmp_type", "icmp_code", "icmp_id"):
        value = getattr(flow, key)
        assert value == prim[key]
        assert value is None or (type(value) is int and 0 <= value <= 65535)
    assert (flow.sport is None) == (flow.dport is None)
    assert flow.icmp_type is None or flow.sport is None
    body = netlink.encode_body(flow)
    assert len(body) % 4 == 0


@given(flows())
@example({**VALID_FLOWS[0], "sport": True})
@example({**VALID_FLOWS[0], "zone": 2**64 - 1})
@example({**VALID_FLOWS[1], "family": "ipv4"})
@example({**VALID_FLOWS[0], "protonum": 58})
def test_fuzz_validate_flow(prim: Any) -> None:
    try:
        flow = netlink.validate_flow(prim)
    except exc.InvalidArgumentError as err:
        assert isinstance(err.field, str)
        event("refused")
        return
    event("accepted")
    _check_flow(prim, flow)


@pytest.fixture(scope="module")
def netns_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Return a scratch /run/netns holding only ``PRESENT`` (setns is never reached)."""
    path = tmp_path_factory.mktemp("netns")
    (path / PRESENT).touch()
    return str(path)


@contextlib.contextmanager
def _socket_mocks(netns_dir: str) -> Iterator[tuple[mock.Mock, mock.Mock]]:
    """Replace socket creation and the exchange; namespaces live in a scratch dir."""
    new_socket = mock.Mock(return_value=mock.MagicMock())
    exchange = mock.Mock(side_effect=lambda sock, bodies, batch, *_request: [0] * len(bodies))
    with mock.patch.object(netlink_socket, "_new_socket", new_socket), \
            mock.patch.object(netlink_socket, "_exchange", exchange), \
            mock.patch.object(netlink_socket, "_run_in_namespace",
                              lambda fd, name, func: func()), \
            mock.patch.object(constants, "NETNS_RUN_DIR", netns_dir), \
            mock.patch.object(netns, "_check_network_namespace", lambda fd: None):
        # The scratch "namespace" is a plain file: accept it as an nsfs file.
        yield new_socket, exchange


def _half(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Draw from ``usual`` half of the time (``one_of`` would weigh by branch count)."""
    return st.booleans().flatmap(lambda pick: usual if pick else odd)


flow_items = st.one_of(st.sampled_from(VALID_FLOWS), st.sampled_from(VALID_FLOWS), flows())


@given(_half(st.sampled_from([None, PRESENT]), namespaces),
       _half(st.lists(flow_items, max_size=4).map(lambda items: tuple(items)
                                                   if len(items) % 2 else items),
             wire_values),
       _half(st.sampled_from([1, netlink_socket.DEFAULT_BATCH, netlink_socket.MAX_BATCH]),
             wire_scalars))
@example(None, [VALID_FLOWS[0]], 1)
@example(PRESENT, VALID_FLOWS, 256)
@example(ABSENT, VALID_FLOWS, 256)
def test_fuzz_delete_flows_refuses_before_any_socket(
        netns_dir: str, namespace: Any, items: Any, batch: Any) -> None:
    impl = priv_netlink.delete_flows.args[0]
    with _socket_mocks(netns_dir) as (new_socket, exchange):
        try:
            result = impl(namespace, items, batch)
        except exc.NamespaceNotFoundError:
            assert namespace != PRESENT and netns.validate_name(namespace) == namespace
            new_socket.assert_not_called()
            event("refused: absent namespace")
            return
        except exc.InvalidArgumentError:
            new_socket.assert_not_called()
            event("refused")
            return
    # With no flow there is no socket, so only the name is checked.
    assert namespace in (None, PRESENT) or (not items and netns.validate_name(namespace))
    assert result == [0] * len(items)
    bodies = [netlink.encode_body(netlink.validate_flow(flow)) for flow in items]
    if bodies:
        event("accepted")
        assert new_socket.call_count == 1
        assert exchange.call_args.args[1:3] == (bodies, batch)
        assert exchange.call_args.args[3].name == "delete"
    else:
        new_socket.assert_not_called()
