"""Fuzz the command builders with arbitrary keywords and values.

Whatever a caller passes, a builder either raises
:class:`~conntrack_lib.exceptions.InvalidArgumentError` (or ``TypeError``
for a missing required keyword, which the signatures document) or returns a
command whose argv, load-file line and primitive form obey the contract
checked by :func:`tests.fuzz.assert_sound_command`.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from conntrack_lib import commands as c
from tests import fuzz
from tests.fuzz.strategies import keys, nested_primitives, nudged, wild

#: One valid keyword set per builder, to be mutated.
TEMPLATES: dict[type[c.Command], dict[str, Any]] = {
    c.ListCommand: {"family": "ipv4", "proto": "tcp", "src": "10.0.0.0/8", "dst": "10.0.0.2",
                    "sport": 1, "dport": 2, "zone": 5, "mark": (1, 255), "status": "ASSURED",
                    "labels": ["a"], "src_nat": True, "output": ["extended"]},
    c.GetCommand: {"proto": "tcp", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1,
                   "dport": 2, "output": ["id"]},
    c.CreateCommand: {"proto": "tcp", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1,
                      "dport": 2, "state": "ESTABLISHED", "timeout": 60, "mark": 7,
                      "zone": 3, "status": ["ASSURED"], "dst_nat": ("10.0.0.9", 80)},
    c.UpdateCommand: {"match": {"src": "10.0.0.1", "proto": "tcp", "dport": 22},
                      "timeout": 5, "mark": (1, 2)},
    c.DeleteCommand: {"proto": "udp", "src": "fe80::1", "dst": "fe80::2", "sport": 53,
                      "zone": 9, "mark": 4, "labels": "x,y"},
    c.FlushCommand: {},
    c.CountCommand: {},
    c.StatsCommand: {},
    c.EventsCommand: {"event_mask": ["NEW"], "output": ["xml", "timestamp"], "duration": 1,
                      "proto": "icmp", "icmp_type": 8, "zone": 3},
}
BUILDERS = tuple(TEMPLATES)


def _note(label: str) -> None:
    """Count an outcome in hypothesis' statistics (a no-op outside a given test)."""
    if currently_in_test_context():
        event(label)


def build_or_reject(builder: type[c.Command], kwargs: dict[str, Any]) -> c.Command | None:
    """Build a command from ``kwargs``; check it, or check why it was refused."""
    command = fuzz.build_checked(builder, **kwargs)
    if command is None:
        _note("refused")
    else:
        assert type(command) is builder
        _note(f"built: {builder.kind}")
    return command


@st.composite
def mutated_kwargs(draw: st.DrawFn) -> tuple[type[c.Command], dict[str, Any]]:
    """Return a builder and its valid keywords with a few keys changed, added or dropped."""
    builder = draw(st.sampled_from(BUILDERS))
    kwargs = dict(TEMPLATES[builder])
    for _ in range(draw(st.integers(1, 2))):
        action = draw(st.sampled_from(["wild", "drop", "borrow", "nudge", "nudge"]))
        if action == "nudge" and kwargs:
            name = draw(st.sampled_from(sorted(kwargs)))
            kwargs[name] = draw(nudged(kwargs[name]))
        elif action == "drop" and kwargs:
            del kwargs[draw(st.sampled_from(sorted(kwargs)))]
        elif action == "borrow":
            donor = TEMPLATES[draw(st.sampled_from(BUILDERS))]
            if donor:
                name = draw(st.sampled_from(sorted(donor)))
                kwargs[name] = donor[name]
        else:
            kwargs[draw(keys)] = draw(wild)
    return builder, kwargs


@given(st.sampled_from(BUILDERS), st.dictionaries(keys, wild, max_size=6))
@example(c.ListCommand, {"src": "10.0.0.1 -F"})
@example(c.ListCommand, {"src": "::ffff:1.2.3.4", "dst_nat": ("::1.2.3.4", 80)})
@example(c.CreateCommand, {"proto": "tcp"})
@example(c.UpdateCommand, {"timeout": 1})
@example(c.UpdateCommand, {"match": [("src", "10.0.0.1")], "timeout": 1})
def test_fuzz_builders_random_keywords(builder: type[c.Command], kwargs: dict[str, Any]) -> None:
    build_or_reject(builder, kwargs)


@given(mutated_kwargs())
def test_fuzz_builders_mutated_valid_keywords(
        case: tuple[type[c.Command], dict[str, Any]]) -> None:
    build_or_reject(*case)


def test_fuzz_templates_build() -> None:
    # The mutation strategy is only worth its name if the templates are valid.
    for builder, kwargs in TEMPLATES.items():
        assert build_or_reject(builder, dict(kwargs)) is not None, builder.__name__


def test_fuzz_option_allow_list_covers_the_builders() -> None:
    # Every option a builder can render must be judged by the fuzz checks.
    rendered = {option for option in c._OPTIONS.values() if option}
    composite = {f"--{proto}-{word}" for proto in ("icmp", "icmpv6")
                 for word in ("type", "code", "id")}
    rendered = (rendered - {"type", "code", "id"}) | composite
    assert rendered == fuzz.OPTION_TOKENS


members = st.one_of(
    wild,
    st.sampled_from([c.FlushCommand(), c.DeleteCommand(zone=4), c.ListCommand(),
                     c.CreateCommand(**TEMPLATES[c.CreateCommand]), c.CountCommand()]),
)


@given(st.one_of(st.lists(members, max_size=4), st.lists(members, max_size=4).map(tuple),
                 wild))
def test_fuzz_batch_builder(items: Any) -> None:
    batch = fuzz.build_checked(c.BatchCommand, items)
    if batch is not None:
        assert all(isinstance(item, c.Command) and item.loadable for item in batch)


@given(nested_primitives())
@example({"kind": "batch", "commands": [[["kind", "batch"], ["commands", []]]]})
@example({"kind": "events", "duration_ms": 2**64})
@example({"kind": "update", "match": [["src", "10.0.0.1"], ["src", "10.0.0.2"]],
          "timeout": 1})
def test_fuzz_from_primitive_nested(data: dict[Any, Any]) -> None:
    command = fuzz.build_checked(c.from_primitive, data)
    assert command is None or isinstance(command, c.Command)


@pytest.mark.parametrize("argv", [
    (),
    ("-X",),
    ("-L", "--flush"),
    ("-L", "-s", "10.0.0.1 -F"),
    ("-L", "-s", "1.2.3"),
    ("-L", "-s", "10.0.0.01"),
    ("-L", "-s", "10.0.0.0/33"),
    ("-L", "-w", "-1"),
    ("-L", "-w", "65536"),
    ("-L", "-w", "007"),
    ("-L", "-w", "1", "-w", "2"),
    ("-L", "-w"),
    ("-L", "-p", "tcp", "extra"),
    ("-L", "-m", "1/"),
    ("-L", "-l", "a\nb"),
    ("-D", "-u", "ASSURED;reboot"),
    ("-I", "-n", "[10.0.0.1]:80"),
    ("-I", "-g", "10.0.0.1:65536"),
    ("-L", "--mask-src", "255.0.255.0"),
    ("-R", "-", "-F"),
    ("-L", "-s", "FE80::1"),
    ("-E", "-o", "XML"),
])
def test_fuzz_oracle_flags_broken_argv(argv: tuple[str, ...]) -> None:
    # The fuzz checks are only as good as this judge: it must refuse each of these.
    assert fuzz.argv_problems(argv)


@pytest.mark.parametrize("argv", [
    ("-L",),
    ("-R", "-"),
    ("-L", "-s", "::ffff:1.2.3.4", "-d", "::ffff:102:304"),
    ("-L", "-s", "10.0.0.0/8", "-w", "0", "-m", "1/4294967295", "-n", "-o", "id,extended"),
    ("-I", "-p", "tcp", "-s", "fe80::1", "-d", "fe80::2", "--sport", "1", "--dport", "2",
     "--state", "SYN_SENT2", "-t", "60", "-g", "[fe80::3]:80", "--label-add", "a,b"),
    ("-D", "-p", "icmpv6", "--icmpv6-type", "128", "-u", "ASSURED", "-j", "10.0.0.1:5"),
    ("-U", "-f", "ipv4", "-s", "10.0.0.1", "--mask-src", "255.255.0.0", "--label-del"),
    ("-E", "-e", "NEW,DESTROY", "-o", "xml,timestamp", "-c", "4294967295"),
])
def test_fuzz_oracle_accepts_sound_argv(argv: tuple[str, ...]) -> None:
    assert fuzz.argv_problems(argv) == []
