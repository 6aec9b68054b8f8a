"""Turn the output of the ``conntrack`` command into typed values.

Pure functions only: no process, no file, no clock, and no process-wide
state (the garbage collector and other packages' internals are left
alone).  The grammar is the one conntrack-tools 1.4.7 prints: text lines of
``-L``/``-G``/``-D``/``-U`` with ``-o extended/id/ktimestamp/labels``
(:mod:`~conntrack_lib.parser.entries`), ``-o xml``
(:mod:`~conntrack_lib.parser.xml_flows`), ``-E`` events
(:mod:`~conntrack_lib.parser.events`), ``-S`` and ``-C``
(:mod:`~conntrack_lib.parser.stats`) and the stderr summary line
(:mod:`~conntrack_lib.parser.summary`).

Lenient mode (the default) skips a line it cannot read, counts it in
:class:`ParseStats` and logs one WARNING per call; strict mode raises
:class:`~conntrack_lib.exceptions.ParseError` instead.  Unknown ``key=value``
pairs never fail: they land in ``Entry.extra``.

Speed matters because a dump can hold hundreds of thousands of lines:

* one regular expression reads the common line shape (ports or no layer-4
  fields, the usual metadata) in a single scan
  (:mod:`~conntrack_lib.parser.fast`); every other line goes through a
  general tokeniser built on :meth:`str.split`
  (:mod:`~conntrack_lib.parser.lines`);
* each distinct address and small number is converted once per call;
* models are filled without their dataclass ``__init__``
  (:mod:`~conntrack_lib.parser.builders`).

Address objects are therefore shared between the entries of one call: treat
them as immutable (``netaddr.IPAddress`` supports an in-place ``+=`` that
would change every entry holding the same object).
"""

from conntrack_lib.parser.base import ParseStats
from conntrack_lib.parser.entries import iter_entries, parse_entries
from conntrack_lib.parser.events import parse_events
from conntrack_lib.parser.stats import parse_count, parse_stats
from conntrack_lib.parser.summary import parse_summary, summary_count
from conntrack_lib.parser.xml_flows import parse_xml

__all__ = [
    "ParseStats",
    "iter_entries",
    "parse_count",
    "parse_entries",
    "parse_events",
    "parse_stats",
    "parse_summary",
    "parse_xml",
    "summary_count",
]
