"""Parse the output of ``conntrack -S`` (per-CPU statistics) and ``-C`` (the count)."""

from __future__ import annotations

from conntrack_lib.exceptions import ParseError
from conntrack_lib.models import CpuStats
from conntrack_lib.parser.base import LineError, drive, to_int


def _parse_stats_line(line: str) -> CpuStats:
    """Parse ``cpu=N<TAB>name=value ...`` into CpuStats."""
    words = line.split()
    key, _, cpu = words[0].partition("=")
    if key != "cpu":
        raise LineError("statistics line does not start with cpu=")
    counters = []
    for word in words[1:]:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise LineError(f"unexpected word {word!r}")
        counters.append((name, to_int(value)))
    return CpuStats(to_int(cpu), tuple(counters))


def parse_stats(text: str) -> list[CpuStats]:
    """Return one CpuStats per CPU line of ``conntrack -S`` output.

    Works for the netlink form and for the ``/proc`` fallback (other names).

    :param text: the whole output.
    :returns: the statistics, one per CPU, in the order printed.
    :raises ParseError: for a line that is not a statistics line.
    """
    return list(drive(text.splitlines(), _parse_stats_line, True, None, "statistics"))


def parse_count(text: str) -> int:
    """Return the number printed by ``conntrack -C``.

    :param text: the whole output.
    :returns: the count.
    :raises ParseError: when the output is not a single non-negative integer.
    """
    words = text.split()
    if len(words) != 1:
        raise ParseError(text, 1, "expected a single integer")
    try:
        return to_int(words[0])
    except LineError:
        raise ParseError(text, 1, "expected a single integer") from None
