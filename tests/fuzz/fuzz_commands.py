"""atheris target: arbitrary keywords into every command builder and the privsep rebuild.

Run from the repository root (the fuzz tox environment does this)::

    python -m tests.fuzz.fuzz_commands -max_total_time=60

Invariants, the same as tests/unit/test_fuzz_commands.py: a builder raises
only InvalidArgumentError (or the TypeError its signature documents), and a
built command renders a sound argv, a matching load-file line and a primitive
that rebuilds it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports():
    from conntrack_lib import commands
    from tests import fuzz

BUILDERS = (
    commands.ListCommand, commands.GetCommand, commands.CreateCommand,
    commands.UpdateCommand, commands.DeleteCommand, commands.FlushCommand,
    commands.CountCommand, commands.StatsCommand, commands.EventsCommand,
)
KINDS = ("list", "get", "create", "update", "delete", "flush", "count", "stats", "events",
         "batch")
LOADABLE = (commands.FlushCommand(), commands.DeleteCommand(zone=4),
            commands.CreateCommand(proto="udp", src="10.0.0.1", dst="10.0.0.2", sport=1,
                                   dport=2, timeout=30))
_INT_EDGES = (0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**64)


def _int(fdp: Any) -> int:
    choice = fdp.ConsumeIntInRange(0, 2)
    if choice == 0:
        return int(fdp.PickValueInList(list(_INT_EDGES)))
    if choice == 1:
        return int(fdp.ConsumeIntInRange(-1, 70000))
    return int(fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 40)))


_SCALARS: tuple[Callable[[Any], Any], ...] = (
    lambda fdp: None,
    lambda fdp: fdp.ConsumeBool(),
    _int,
    lambda fdp: fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat(),
    lambda fdp: fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8)),
    lambda fdp: fdp.PickValueInList(list(fuzz.HOSTILE_STRINGS)),
    lambda fdp: fdp.PickValueInList(list(fuzz.VALID_STRINGS)),
    lambda fdp: fdp.PickValueInList(list(fuzz.VALID_STRINGS)),
    lambda fdp: fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24)),
)


def _scalar(fdp: Any) -> Any:
    """Return one scalar: None, bool, int, float, bytes or a string of some kind."""
    return _SCALARS[fdp.ConsumeIntInRange(0, len(_SCALARS) - 1)](fdp)


def _value(fdp: Any, depth: int = 0) -> Any:
    """Return a scalar or a (nested) list, tuple or dict of them."""
    shape = fdp.ConsumeIntInRange(0, 6) if depth < 3 else 0
    if shape <= 3:
        return _scalar(fdp)
    items = [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if shape == 4:
        return items
    if shape == 5:
        return tuple(items)
    return {fdp.PickValueInList(list(fuzz.KNOWN_KEYS)): item for item in items}


def _key(fdp: Any) -> str:
    if fdp.ConsumeIntInRange(0, 4):
        return str(fdp.PickValueInList(list(fuzz.KNOWN_KEYS)))
    return str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 10)))


def _kwargs(fdp: Any) -> dict[str, Any]:
    return {_key(fdp): _value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 7))}


def _batch_items(fdp: Any) -> list[Any]:
    return [fdp.PickValueInList(list(LOADABLE)) if fdp.ConsumeBool() else _value(fdp)
            for _ in range(fdp.ConsumeIntInRange(0, 4))]


def test_one_input(data: bytes) -> None:
    """Check one input: a builder, a batch, or a primitive rebuilt as the daemon does."""
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        fuzz.build_checked(fdp.PickValueInList(list(BUILDERS)), **_kwargs(fdp))
    elif mode == 1:
        fuzz.build_checked(commands.BatchCommand, _batch_items(fdp))
    else:
        primitive: dict[Any, Any] = _kwargs(fdp)
        primitive["kind"] = fdp.PickValueInList(list(KINDS))
        if primitive["kind"] == "batch" and fdp.ConsumeBool():
            primitive["commands"] = [[[_key(fdp), _value(fdp)] for _ in range(3)]]
        fuzz.build_checked(commands.from_primitive, primitive)


def main() -> None:
    """Run libFuzzer over :func:`test_one_input` with the command-line options."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
