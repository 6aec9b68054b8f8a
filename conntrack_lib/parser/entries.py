"""Parse entry listings (``-L``/``-G``/``-D``/``-U`` text output) into Entry values.

Two ways in: :func:`~conntrack_lib.parser.iter_entries` streams line by line (memory does not
grow with the table); :func:`~conntrack_lib.parser.parse_entries` collects a whole table and is
faster, because it lets the fast pattern scan many lines of text at once
instead of being called once per line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from oslo_log import log as logging

from conntrack_lib.models import Entry
from conntrack_lib.parser.base import Addresses, LineError, Numbers, ParseStats, drive
from conntrack_lib.parser.fast import FAST_LINE_RE, fast_entry, fast_match
from conntrack_lib.parser.lines import parse_text

#: Characters joined into one text for the scan when parse_entries gets
#: lines: enough to amortise the call overhead, small enough to stay in
#: cache, and a piece of many lines that arrives whole is scanned at once
#: rather than held back until more arrive.
SCAN_BLOCK_CHARS = 256 * 1024

LOG = logging.getLogger(__name__)


def iter_entries(lines: Iterable[str], *, strict: bool = False,
                 stats: ParseStats | None = None) -> Iterator[Entry]:
    """Yield one Entry per entry line of ``conntrack -L/-G/-D/-U`` text output.

    Streams: lines are read one at a time, so a pipe or a file object works
    and memory does not grow with the table.  Summary lines are counted,
    blank lines ignored.  To collect a whole table into a list,
    :func:`~conntrack_lib.parser.parse_entries` (which also takes lines) is faster.

    :param lines: text lines (default format, ``-o extended``, ``id``,
        ``ktimestamp``, ``labels`` in any combination).
    :param strict: raise on an unreadable line instead of skipping it.
    :param stats: optional counters, added to when the iteration ends (or
        is closed early).
    :returns: an iterator of :class:`~conntrack_lib.models.Entry`.
    :raises ParseError: in strict mode, for the first unreadable line.
    """
    addresses = Addresses()
    nums = Numbers()

    def parse_one(line: str) -> Entry:
        match = fast_match(line)
        if match is not None:
            try:
                return fast_entry(match.groups(), addresses, nums)
            except (LineError, ValueError):
                pass  # the line parser decides, as in parse_entries
        if line[0] == "[" or line[0] == "<":
            raise LineError("not an entry line")
        return parse_text(line, addresses)

    return drive(lines, parse_one, strict, stats, "entry")


def parse_entries(text: str | Iterable[str], *, strict: bool = False,
                  stats: ParseStats | None = None) -> list[Entry]:
    """Return the entries of a whole ``conntrack -L``-style output.

    Same result as ``list(iter_entries(...))``, faster: the common line
    shape is matched over many lines of text in one scan (other lines go
    through the line-by-line parser).  Given lines, it joins them about
    :data:`~conntrack_lib.parser.entries.SCAN_BLOCK_CHARS` characters at a
    time for that scan.

    :param text: the whole output, or its lines (a pipe being read works);
        an item may also hold several whole lines (a piece of a stream cut
        after a newline), which spares the caller splitting it.
    :param strict: raise on an unreadable line instead of skipping it.
    :param stats: optional counters, added to when the parse ends.
    :returns: the entries, in output order.
    :raises ParseError: in strict mode, for the first unreadable line.
    """
    scanner = _Scanner(strict)
    if isinstance(text, str):
        scanner.scan(text)
    else:
        for block in _blocks(text):
            scanner.scan_joined(block)
    return scanner.finish(stats)


def _blocks(lines: Iterable[str]) -> Iterator[str]:
    """Join lines into texts of about SCAN_BLOCK_CHARS, one line per text line."""
    block: list[str] = []
    size = 0
    for line in lines:
        block.append(line)
        size += len(line)
        if size >= SCAN_BLOCK_CHARS:
            yield "\n".join([part.removesuffix("\n") for part in block])
            block = []
            size = 0
    if block:
        yield "\n".join([part.removesuffix("\n") for part in block])


class _Scanner:
    """Scan texts for the fast line shape; hand the gaps to the line parser."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.addresses = Addresses()
        self.nums = Numbers()
        self.slow = ParseStats()  # what the line parser saw, across every gap
        self.entries: list[Entry] = []

    def scan(self, text: str) -> None:
        """Parse every line of ``text`` (numbered after those scanned before)."""
        addresses, nums, entries = self.addresses, self.nums, self.entries
        append = entries.append
        pos = 0
        for match in FAST_LINE_RE.finditer(text):
            start = match.start()
            if start != pos:
                entries.extend(self._slow_lines(text[pos:start]))
            try:
                append(fast_entry(match.groups(), addresses, nums))
            except (LineError, ValueError):
                entries.extend(self._slow_lines(match.group()))
            pos = match.end() + 1  # past the newline
        if pos < len(text):
            entries.extend(self._slow_lines(text[pos:]))

    def scan_joined(self, text: str) -> None:
        """Scan lines joined by newlines, counting blank ones at the end too.

        Joined from ``["a", ""]``, ``"a\n"`` holds two lines; no scan or gap
        reaches the last, and line numbers after it would be one short.
        """
        before = self._seen()
        self.scan(text)
        self.slow.lines += text.count("\n") + 1 - (self._seen() - before)

    def _seen(self) -> int:
        """Return the number of lines read so far, by either path."""
        slow = self.slow
        return slow.lines + len(self.entries) - slow.entries

    def _slow_lines(self, text: str) -> Iterator[Entry]:
        """Parse the lines the fast scan left, numbering them after those before."""
        slow = self.slow
        line_base = self._seen()
        return drive(text.splitlines(), lambda line: parse_text(line, self.addresses),
                     self.strict, slow, None, line_base)

    def finish(self, stats: ParseStats | None) -> list[Entry]:
        """Publish the counts, warn once about skipped lines, return the entries."""
        slow, entries = self.slow, self.entries
        if stats is not None:
            stats.lines += slow.lines + len(entries) - slow.entries
            stats.entries += len(entries)
            stats.skipped += slow.skipped
            stats.summaries += slow.summaries
        if slow.skipped:
            LOG.warning("Skipped %d unreadable line(s) of conntrack entry output", slow.skipped)
        return entries
