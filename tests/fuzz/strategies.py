"""Hypothesis strategies shared by the fuzz tests: hostile values and keys."""

from __future__ import annotations

from typing import Any

import netaddr
from hypothesis import strategies as st

from tests.fuzz import HOSTILE_STRINGS, KNOWN_KEYS, VALID_STRINGS

#: Ints past Python 3.11's 4300-digit str() limit; built lazily so that
#: hypothesis never has to print one unless a test fails.
huge_ints = st.integers(4301, 4400).map(lambda digits: -(10**digits) if digits % 2 else 10**digits)

ints = st.one_of(
    st.integers(),
    st.integers(-(2**80), 2**80),
    st.sampled_from([0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
                     2**64, -(2**63)]),
    huge_ints,
)
scalars = st.one_of(
    st.none(), st.booleans(), ints, st.floats(), st.text(max_size=16),
    st.text(st.characters(max_codepoint=0x7F), max_size=16),
    st.sampled_from(HOSTILE_STRINGS), st.sampled_from(VALID_STRINGS), st.binary(max_size=8),
    st.ip_addresses().map(str).map(netaddr.IPAddress),
)
wild = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
        st.frozensets(st.sampled_from(VALID_STRINGS), max_size=3),
    ),
    max_leaves=8,
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8))

primitive_scalars = st.one_of(
    st.none(), st.booleans(), ints, st.floats(), st.text(max_size=12),
    st.sampled_from(HOSTILE_STRINGS), st.sampled_from(VALID_STRINGS),
)
primitive_values = st.recursive(
    primitive_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=12,
)

#: What oslo.privsep can carry: msgpack ints, and lists arrive as tuples.
wire_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
    st.text(max_size=12), st.binary(max_size=6), st.sampled_from(HOSTILE_STRINGS),
    st.sampled_from(VALID_STRINGS),
)
wire_values = st.recursive(
    wire_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=12,
)

KINDS = ("list", "get", "create", "update", "delete", "flush", "count", "stats", "events",
         "batch", "shell", "", "LIST")


@st.composite
def nested_primitives(draw: st.DrawFn,
                      values: st.SearchStrategy[Any] = primitive_values) -> dict[Any, Any]:
    """Return a primitive dict, sometimes a batch whose members are random pairs."""
    data: dict[Any, Any] = draw(st.dictionaries(
        st.one_of(keys, st.integers(), st.none()), values, max_size=5))
    data["kind"] = draw(st.sampled_from(KINDS))
    if data["kind"] == "batch" and draw(st.booleans()):
        pairs = st.lists(st.tuples(st.one_of(keys, st.just("kind")), values)
                         .map(list), max_size=4)
        data["commands"] = draw(st.lists(pairs, max_size=3))
    return data


def _too_long_for_str(value: object) -> bool:
    """Tell whether ``value`` holds an int that str() refuses (over 4300 digits)."""
    if isinstance(value, int):
        return value.bit_length() > 10_000
    if isinstance(value, list | tuple | set | frozenset):
        return any(_too_long_for_str(item) for item in value)
    if isinstance(value, dict):
        return any(_too_long_for_str(item) for item in value.values())
    return False


def nudged(value: Any) -> st.SearchStrategy[Any]:
    """Return a strategy of values close to ``value``: edges, case, type changes."""
    if _too_long_for_str(value):
        return st.just(value)  # str(value) below would raise (the int digit limit)
    if isinstance(value, bool):
        return st.sampled_from([not value, 1, 0, "true"])
    if isinstance(value, int):
        return st.sampled_from([value - 1, value + 1, -value, 0, 255, 256, 65535, 65536,
                                2**31 - 1, 2**31, 2**32 - 1, 2**32, float(value), str(value),
                                True])
    if isinstance(value, str):
        return st.sampled_from([value.upper(), value.lower(), value.title(), f" {value}",
                                f"{value},", value[:-1], [value], (value,), f"{value}\n",
                                f"-{value}", f"!{value}"])
    if isinstance(value, list | tuple):
        return st.sampled_from([list(value), tuple(value), list(value) * 2, [], value[:1],
                                ",".join(map(str, value))])
    return st.just(value)
