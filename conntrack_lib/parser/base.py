"""Pieces every output parser shares: statistics, value converters, the line driver.

Nothing here knows an output format.  :func:`drive` feeds lines to a
format's one-line parser and applies the strict/lenient policy; the
converters turn the fields every format has (decimal numbers, GRE keys,
addresses, status flags) into values, raising :class:`LineError` for text
that is not one.
"""

from __future__ import annotations

import dataclasses
import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import netaddr
from oslo_log import log as logging

from conntrack_lib.exceptions import ParseError
from conntrack_lib.parser import summary

LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Drop a per-call cache (addresses, small numbers) when it grows past this
#: many keys, so memory stays bounded on huge tables with few repeats.
ADDRESS_CACHE_SIZE = 65536
EMPTY: frozenset[str] = frozenset()

_IPV4_MAX_TEXT = len("255.255.255.255")
_STATUS_CACHE: dict[tuple[str, ...], frozenset[str]] = {}
# Bound once: Addresses.__missing__ runs once per distinct address.
_inet_aton = socket.inet_aton
_inet_pton = socket.inet_pton
_AF_INET6 = socket.AF_INET6
_from_bytes = int.from_bytes


class LineError(Exception):
    """Raised inside the parser for a line it cannot read (reason in args[0])."""


@dataclasses.dataclass(slots=True)
class ParseStats:
    """Count what a parse call saw; pass one in to read the figures afterwards.

    ``lines`` counts every line looked at, ``entries`` the ones that became
    values, ``skipped`` the unreadable ones (lenient mode) and ``summaries``
    the ``N flow entries have been ...`` lines.
    """

    lines: int = 0
    entries: int = 0
    skipped: int = 0
    summaries: int = 0


def _address_by_state(value: int, version: int) -> netaddr.IPAddress:
    """Build an IPAddress the way pickle does: a bare instance given its state.

    netaddr's pickle state of an address is ``(value, version)``; every
    release must keep accepting it to load older pickles.  Restoring it
    skips the argument checks of ``IPAddress.__init__``, three times faster
    (the value is already known good: it came out of inet_pton/inet_aton).
    """
    address: netaddr.IPAddress = object.__new__(netaddr.IPAddress)
    address.__setstate__((value, version))
    return address


def _pick_address_factory() -> Callable[[int, int], netaddr.IPAddress]:
    """Use the pickle-protocol build only if it makes what the constructor makes."""
    samples = ((0x0A000001, 4), (0x20010DB8 << 96 | 1, 6))
    try:
        if all(_address_by_state(v, n) == netaddr.IPAddress(v, n)
               and str(_address_by_state(v, n)) == str(netaddr.IPAddress(v, n))
               and _address_by_state(v, n).version == n for v, n in samples):
            return _address_by_state
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - other netaddr
        pass
    constructor: Callable[[int, int], netaddr.IPAddress] = netaddr.IPAddress
    return constructor  # pragma: no cover - another netaddr pickle format


_make_address = _pick_address_factory()


class Addresses(dict[str, netaddr.IPAddress]):
    """Map address text to a shared address object, converting on first use.

    A dump repeats addresses (the reply tuple mirrors the original, many
    flows share a server), so each distinct text is converted once per call:
    the C ``inet_pton``/``inet_aton`` gives the integer, netaddr's pickle
    protocol (see :func:`_address_by_state`) the object, eight times faster
    than netaddr parsing the text.  The objects are shared between the
    entries of one call: treat them as immutable.
    """

    def __missing__(self, text: str) -> netaddr.IPAddress:
        # Runs once per distinct address (once per line of a table of
        # distinct clients): the cheap IPv4 test comes first.
        try:
            if text.count(".") == 3 and len(text) <= _IPV4_MAX_TEXT and ":" not in text:
                # The count rules out what inet_aton also takes ("1.2.3",
                # "0x01020304"); conntrack never prints those.
                address = _make_address(_from_bytes(_inet_aton(text), "big"), 4)
            elif ":" in text:
                address = _make_address(_from_bytes(_inet_pton(_AF_INET6, text), "big"), 6)
            else:
                raise LineError(f"not an IP address: {text!r}")
        except OSError as exc:
            raise LineError(f"not an IP address: {text!r}") from exc
        if len(self) >= ADDRESS_CACHE_SIZE:
            self.clear()
        self[text] = address
        return address


class Numbers(dict[str | None, int | None]):
    """Map decimal text (or None) to its int; fields like use=1 repeat a lot.

    Only for text a pattern already matched as digits.
    """

    def __init__(self) -> None:
        super().__init__({None: None})

    def __missing__(self, text: str | None) -> int | None:
        value = int(text)  # type: ignore[arg-type]  # None is always present
        if len(self) >= ADDRESS_CACHE_SIZE:
            self.clear()
            self[None] = None
        self[text] = value
        return value


def status(flags: tuple[str, ...]) -> frozenset[str]:
    """Return one shared frozenset per combination of flags."""
    found = _STATUS_CACHE.get(flags)
    if found is None:
        found = frozenset(flags)
        if len(_STATUS_CACHE) < 1024:
            _STATUS_CACHE[flags] = found
    return found


def to_int(text: str) -> int:
    """Convert a decimal field; reject signs and spaces that int() allows."""
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise LineError(f"not a number: {text[:40]!r}")
    return int(text)


def to_hex(text: str) -> int:
    """Convert a GRE key as conntrack prints it (``0x1f``)."""
    digits = text[2:]
    if text[:2] != "0x" or not digits or digits.strip("0123456789abcdef"):
        raise LineError(f"not a hexadecimal key: {text!r}")
    return int(digits, 16)


#: What reading a bad line can raise: our own error, failed int()/address
#: conversions, a line that ends early, too large numbers, broken XML.
UNREADABLE = (LineError, ValueError, IndexError, KeyError, OverflowError, ET.ParseError)


def drive(lines: Iterable[str], parse_one: Callable[[str], _T | None], strict: bool,  # noqa: PLR0917
          stats: ParseStats | None, what: str | None, line_base: int = 0) -> Iterator[_T]:
    """Feed non-empty lines to ``parse_one`` with the strict/lenient policy.

    Counts in local variables and publishes them to ``stats`` when the
    iteration ends (also when the caller stops early): attribute updates per
    line would cost more than the parse of a short line.
    """
    lineno = line_base
    entries = skipped = summaries = 0
    try:
        for raw in lines:
            lineno += 1
            line = raw.strip()
            if not line:
                continue
            try:
                value = parse_one(line)
            except UNREADABLE as exc:
                if summary.is_summary_line(line):
                    summaries += 1
                    continue
                if strict:
                    raise ParseError(raw.rstrip("\n"), lineno, _reason(exc)) from None
                skipped += 1
                continue
            if value is not None:
                entries += 1
                yield value
    finally:
        if stats is not None:
            stats.lines += lineno - line_base
            stats.entries += entries
            stats.skipped += skipped
            stats.summaries += summaries
        if skipped and what:
            LOG.warning("Skipped %d unreadable line(s) of conntrack %s output", skipped, what)


def _reason(exc: Exception) -> str:
    """Return a short human reason for a parse failure."""
    if isinstance(exc, LineError):
        return str(exc.args[0])
    if isinstance(exc, IndexError):
        return "line ends too early"
    return f"{type(exc).__name__}: {exc}"
