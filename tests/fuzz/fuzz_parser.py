"""atheris target: arbitrary text into every parser, and bytes into the ack decoder.

Run from the repository root (the fuzz tox environment does this), with the
saved outputs as a read-only seed corpus after a scratch corpus directory::

    python -m tests.fuzz.fuzz_parser -max_total_time=60 /tmp/corpus tests/unit/data

Invariants, the same as tests/unit/test_fuzz_parser.py: strict mode raises
only ParseError, lenient mode never raises and agrees with a successful
strict parse, parse_stats/parse_count raise only ParseError, parse_summary
never raises, and no call takes a second.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports():
    from conntrack_lib import exceptions, netlink, parser
    from tests import fuzz

STREAMING: tuple[Callable[..., Any], ...] = (
    parser.parse_entries,
    lambda text, **kw: parser.iter_entries(text.splitlines(), **kw),
    parser.parse_events,
    parser.parse_xml,
)


def _text(fdp: Any) -> str:
    """Return the input as text: raw UTF-8 most of the time, else atheris' unicode."""
    if fdp.ConsumeBool():
        raw = fdp.ConsumeBytes(fdp.remaining_bytes())
        return bytes(raw).decode("utf-8", errors="replace")
    return str(fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes()))


def _check_streaming(func: Callable[..., Any], text: str) -> None:
    try:
        strict: list[Any] | None = list(fuzz.timed(func, text, strict=True))
    except exceptions.ParseError as err:
        assert err.lineno >= 1 and err.line in text
        strict = None
    stats = parser.ParseStats()
    lenient = list(fuzz.timed(func, text, stats=stats))
    assert stats.entries == len(lenient)
    if strict is not None:
        assert lenient == strict


def _check_single(text: str) -> None:
    try:
        fuzz.timed(parser.parse_stats, text)
    except exceptions.ParseError as err:
        assert err.line in text
    try:
        assert fuzz.timed(parser.parse_count, text) >= 0
    except exceptions.ParseError as err:
        assert err.line == text
    summary = fuzz.timed(parser.parse_summary, text)
    assert summary is None or summary[0] >= 0


def _check_acks(data: bytes) -> None:
    try:
        acks = fuzz.timed(netlink.decode_acks, data)
    except exceptions.ParseError:
        return
    assert len(acks) <= len(data) // 20


def test_one_input(data: bytes) -> None:
    """Check one input against every parser."""
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeIntInRange(0, 7) == 0:
        _check_acks(fdp.ConsumeBytes(fdp.remaining_bytes()))
        return
    text = _text(fdp)
    for func in STREAMING:
        _check_streaming(func, text)
    _check_single(text)


def main() -> None:
    """Run libFuzzer over :func:`test_one_input` with the command-line options."""
    # One WARNING per lenient call would flood the fuzzer's output.
    logging.disable(logging.WARNING)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
