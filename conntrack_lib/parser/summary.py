"""Read conntrack's "N flow entries have been <word>." summary lines.

conntrack prints them on stderr after ``-L``, ``-D``, ``-U``, ``-G``,
``-E`` and ``-I``.  Every part of the library that wants the number reads
it here, with one pattern that hostile input cannot slow down: a count
starts after a non-digit and has at most 20 digits, so a run of thousands
of digits costs a linear scan, not a quadratic one.
"""

from __future__ import annotations

import re

#: The nouns conntrack prints before "have been".
NOUNS = ("flow entries", "flow events", "expectations", "expectation events")

_SUMMARY_RE = re.compile(
    r"(?<![0-9])([0-9]{1,20}) (flow entries|flow events|expectations|expectation events) "
    r"have been (\w+)\.",
    re.ASCII,
)


def parse_summary(text: str) -> tuple[int, str] | None:
    """Return ``(N, word)`` from the last "N flow entries have been <word>." line.

    The summary goes to stderr.  Also matches the "flow events" and
    "expectations" forms.  Returns None when there is no summary (``-R``,
    ``-C``, ``-S``, ``-F`` print none).

    :param text: conntrack's stderr (or any text holding the line).
    :returns: the count and the word, or None.
    """
    found = None
    for match in _SUMMARY_RE.finditer(text):
        found = (int(match.group(1)), match.group(3))
    return found


def summary_count(text: str, word: str, noun: str = "flow entries") -> int | None:
    """Return N from the last "N <noun> have been <word>." line of ``text``.

    :param text: conntrack's stderr.
    :param word: the verb conntrack prints (``deleted``, ``shown``, ...).
    :param noun: one of :data:`~conntrack_lib.parser.summary.NOUNS`.
    :returns: the count, or None when no such line is there.
    """
    found = None
    for match in _SUMMARY_RE.finditer(text):
        if match.group(2) == noun and match.group(3) == word:
            found = int(match.group(1))
    return found


def is_summary_line(line: str) -> bool:
    """Tell whether a line is one of conntrack's "N ... have been ..." summaries."""
    return "have been" in line and _SUMMARY_RE.search(line) is not None
