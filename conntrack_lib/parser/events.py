"""Parse ``conntrack -E`` output (text or ``-o xml``) into Event values."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator

from conntrack_lib import constants
from conntrack_lib.models import Event
from conntrack_lib.parser.base import Addresses, LineError, ParseStats, drive, to_int
from conntrack_lib.parser.lines import parse_text
from conntrack_lib.parser.xml_flows import (
    XML_FRAMING,
    parse_xml_flow,
    xml_flow_element,
    xml_int,
)

_EVENT_TIMESTAMP_RE = re.compile(r"\[(\d+)\.(\d+) *\]\t?")
_EVENT_TYPES = {f"[{name}]": name for name in constants.EVENT_TYPES}
_XML_EVENT_TYPES = {name.lower(): name for name in constants.EVENT_TYPES}
_USERSPACE_TAG = " [USERSPACE]"


def _split_event_head(line: str) -> tuple[float | None, str, str]:
    """Split the optional ``-o timestamp`` prefix and the ``[TYPE]`` word off."""
    timestamp = None
    if line.startswith("[") and line[1:2].isdigit():
        match = _EVENT_TIMESTAMP_RE.match(line)
        if match is None:
            raise LineError("bad event timestamp")
        timestamp = int(match.group(1)) + int(match.group(2)) / 1_000_000
        line = line[match.end():].lstrip()
    word, _, rest = line.partition(" ")
    event_type = _EVENT_TYPES.get(word)
    if event_type is None:
        raise LineError(f"unknown event type {word!r}")
    return timestamp, event_type, rest


def split_userspace(line: str) -> tuple[str, int | None, str | None]:
    """Cut the ``[USERSPACE] portid=N progname=NAME`` tail off an event line."""
    body, tag, tail = line.partition(_USERSPACE_TAG)
    if not tag:
        return line, None, None
    portid = progname = None
    tail = tail.strip()
    name_at = tail.find("progname=")
    if name_at >= 0:
        progname = tail[name_at + len("progname="):]
        tail = tail[:name_at]
    for word in tail.split():
        key, _, value = word.partition("=")
        if key != "portid":
            raise LineError(f"unexpected {word!r} after [USERSPACE]")
        portid = to_int(value)
    return body, portid, progname


def _parse_event_line(line: str, addresses: Addresses) -> Event | None:
    """Parse one -E line (text or a one-line XML flow); None for XML framing."""
    if line[0] == "<":
        return _parse_xml_event(line, addresses)
    timestamp, event_type, rest = _split_event_head(line)
    body, portid, progname = split_userspace(rest)
    entry = parse_text(body, addresses)
    return Event(event_type, entry, timestamp, portid, progname)


def parse_events(source: str | Iterable[str], *, strict: bool = False,
                 stats: ParseStats | None = None) -> Iterator[Event]:
    """Yield one Event per line of ``conntrack -E`` output (text or ``-o xml``).

    Handles the ``-o timestamp`` prefix, ``-o extended/id/ktimestamp`` and
    the ``[USERSPACE] portid=N progname=NAME`` tail (also when it follows
    ``</flow>`` in XML mode).  ``source`` may be the whole text or any
    iterable of lines, such as a pipe being read.

    :raises ParseError: in strict mode, for the first unreadable line.
    """
    lines = source.splitlines() if isinstance(source, str) else source
    addresses = Addresses()
    return drive(lines, lambda line: _parse_event_line(line, addresses), strict, stats,
                  "event")

def _xml_when(flow: ET.Element) -> float | None:
    """Convert the ``<when>`` of ``-E -o xml,timestamp`` to seconds since the epoch.

    conntrack prints the receiving host's local time, to the second, so this
    reads it in this process' time zone (the same host).
    """
    when = flow.find("when")
    if when is None:
        return None
    year, month, day, hour, minute, second = (
        xml_int(when, name) or 0 for name in ("year", "month", "day", "hour", "min", "sec"))
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))


def _parse_xml_event(line: str, addresses: Addresses) -> Event | None:
    """Parse one XML event line; None for the document framing lines."""
    if line.startswith(XML_FRAMING):
        return None
    element, tail = xml_flow_element(line)
    event_type = _XML_EVENT_TYPES.get(element.get("type") or "")
    if event_type is None:
        raise LineError("XML event without a known type")
    _, portid, progname = split_userspace(tail)
    return Event(event_type, parse_xml_flow(element, addresses), _xml_when(element), portid,
                 progname)

