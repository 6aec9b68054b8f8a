"""Value validators for command fields.

Each function checks one caller-supplied value and returns it in the one
canonical form the command builders store and render, or raises
:class:`~conntrack_lib.exceptions.InvalidArgumentError` naming the field.
Only values that pass here can reach an argv or a load-file line, so the
checks are strict: exact types (a ``bool`` is not an ``int``), closed
allow-lists, and addresses parsed the way ``inet_pton`` would.
"""

from __future__ import annotations

import functools
import math
import re
import socket
from collections.abc import Collection, Sequence

import netaddr

from conntrack_lib import constants
from conntrack_lib.exceptions import InvalidArgumentError

#: Characters a rendered value may contain; anything else (whitespace,
#: quotes, backslashes, '#', NUL) could change how a load file is split.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:/,!\[\]]+")
_LABEL_NAME = re.compile(r"[A-Za-z0-9_]+")
_PREFIX = re.compile(r"0|[1-9][0-9]{0,2}")

Nat = bool | str | tuple[str, int]
Mark = int | tuple[int, int]


def check_token(field: str, token: str) -> str:
    """Return ``token`` if it is safe as one argv value, else raise.

    :raises InvalidArgumentError: if the token is empty, starts with '-' or
        contains a character outside the rendered alphabet.
    """
    if not _SAFE_VALUE.fullmatch(token) or token.startswith("-"):
        raise InvalidArgumentError(field, token, "unsafe value")
    return token


def integer(field: str, value: object, low: int, high: int) -> int:
    """Return ``value`` if it is a real int within ``low..high``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(field, value, "expected an integer")
    if not low <= value <= high:
        raise InvalidArgumentError(field, value, f"expected {low}..{high}")
    return int(value)


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(field, value, "expected a string")
    return value


def ip_address(field: str, value: object) -> str:
    """Return the canonical text of one IPv4 or IPv6 address.

    Lenient forms that ``inet_aton`` would take (``1.2.3``, ``0x01020304``,
    leading zeros) are refused.
    """
    if isinstance(value, netaddr.IPAddress):
        return str(value)
    canonical = _canonical_address(_text(field, value))
    if canonical is None:
        raise InvalidArgumentError(field, value, "expected an IP address")
    return canonical


@functools.lru_cache(maxsize=65536)
def _canonical_address(text: str) -> str | None:
    # Cached because batches repeat addresses and netaddr parsing dominates.
    if ":" not in text and _is_canonical_ipv4(text):
        return text
    try:
        return str(netaddr.IPAddress(text, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None


def address_version(address: str) -> int:
    """Return 4 or 6 for a canonical address, network or ``addr:port`` text."""
    return 6 if address.count(":") > 1 or address.startswith("[") else 4


def _is_canonical_ipv4(text: str) -> bool:
    """Tell whether ``text`` is a plain dotted quad that netaddr would print unchanged.

    A fast path for batches of distinct addresses: inet_pton (strict, no
    leading zeros) and inet_ntop in C cost a fraction of a netaddr parse.
    """
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text
    except (OSError, ValueError):
        return False


def ip_or_cidr(field: str, value: object) -> str:
    """Return a canonical address or ``address/prefix`` network."""
    if isinstance(value, netaddr.IPNetwork):
        value = str(value)
    if not isinstance(value, str) or "/" not in value:
        return ip_address(field, value)
    address, prefix = value.split("/", 1)
    canonical = ip_address(field, address)
    limit = 32 if address_version(canonical) == 4 else 128
    if not _PREFIX.fullmatch(prefix) or int(prefix) > limit:
        raise InvalidArgumentError(field, value, f"expected a prefix length 0..{limit}")
    return f"{canonical}/{int(prefix)}"


def netmask(field: str, value: object) -> str:
    """Return the canonical text of a contiguous netmask."""
    canonical = ip_address(field, value)
    if not netaddr.IPAddress(canonical).is_netmask():
        raise InvalidArgumentError(field, value, "expected a contiguous netmask")
    return canonical


def word(field: str, value: object, allowed: Collection[str], *, upper: bool = True) -> str:
    """Return one keyword from ``allowed``, matched case-insensitively."""
    text = _text(field, value)
    canonical = text.upper() if upper else text.lower()
    if canonical not in allowed:
        raise InvalidArgumentError(field, value, f"expected one of {', '.join(allowed)}")
    return canonical


def _listed(field: str, value: object, reason: str) -> Sequence[object]:
    """Return the items of a comma-separated string or a list/tuple."""
    if isinstance(value, str):
        return value.split(",")
    if isinstance(value, list | tuple):
        return value
    raise InvalidArgumentError(field, value, reason)


def words(field: str, value: object, allowed: Collection[str], *,
          upper: bool = True, nonempty: bool = True) -> tuple[str, ...]:
    """Return keywords from a comma-separated string or a sequence, deduplicated."""
    items = _listed(field, value, "expected a string or a list of strings")
    result: list[str] = []
    for item in items:
        canonical = word(field, item, allowed, upper=upper)
        if canonical not in result:
            result.append(canonical)
    if nonempty and not result:
        raise InvalidArgumentError(field, value, "expected at least one word")
    return tuple(result)


#: Most label names one value may hold: the kernel's connlabel set is 128
#: bits wide, so no flow can carry more distinct labels than this.
MAX_LABELS = 128


def label_names(field: str, value: object) -> tuple[str, ...]:
    """Return connlabel names from a comma-separated string or a sequence.

    Duplicates are dropped in one pass (first occurrence kept).

    :raises InvalidArgumentError: a bad name, none at all, or more than
        :data:`MAX_LABELS` names (duplicates included).
    """
    items = _listed(field, value, "expected label names")
    # Bounded before any per-item work: each name costs a regex match.
    if len(items) > MAX_LABELS:
        raise InvalidArgumentError(field, f"<{len(items)} labels>",
                                   f"at most {MAX_LABELS} label names")
    result: dict[str, None] = {}
    for item in items:
        if not isinstance(item, str) or not _LABEL_NAME.fullmatch(item):
            raise InvalidArgumentError(field, value, "label names are [A-Za-z0-9_]+")
        result[item] = None
    if not result:
        raise InvalidArgumentError(field, value, "expected at least one label")
    return tuple(result)


def family(field: str, value: object) -> str:
    """Return 'ipv4' or 'ipv6'."""
    return word(field, value, constants.FAMILIES, upper=False)


def protocol(field: str, value: object) -> str | int:
    """Return a protocol name with a dedicated handler, or a bare number.

    Accepts what Neutron sends: an int or a decimal string 0-255, or a name
    of neutron-lib's protocol list in any case (``ipv6-icmp``, ``icmpv6``
    and ``58`` are one protocol).  Numbers that have a handler (6, 17, ...)
    become their name so that equal protocols compare and render equally.

    :raises InvalidArgumentError: for anything else, naming the value.
    """
    number = protocol_number(field, value)
    return constants.PROTOCOL_NAMES.get(number, number)


def protocol_number(field: str, value: object) -> int:
    """Return the IANA number of a protocol given as Neutron may send it.

    :raises InvalidArgumentError: for a bool, an unknown name, or a number
        outside 0-255.
    """
    if isinstance(value, str):
        text = _text(field, value).lower()
        if text.isascii() and text.isdigit():
            if int(text) > constants.MAX_PROTOCOL:
                raise InvalidArgumentError(field, value, f"expected 0..{constants.MAX_PROTOCOL}")
            return int(text)
        number = constants.NEUTRON_PROTOCOL_NUMBERS.get(text)
        if number is None:
            raise InvalidArgumentError(
                field, value, "not a protocol name or number 0-255 (names: "
                + ", ".join(sorted(constants.NEUTRON_PROTOCOL_NUMBERS)) + ")")
        return number
    return integer(field, value, 0, constants.MAX_PROTOCOL)


def mark(field: str, value: object, *, mask_ok: bool = True) -> Mark:
    """Return a mark as an int, or as a ``(value, mask)`` tuple."""
    if isinstance(value, list | tuple):
        if not mask_ok:
            raise InvalidArgumentError(field, value, "a mask is not accepted here")
        if len(value) != 2:
            raise InvalidArgumentError(field, value, "expected (value, mask)")
        return (integer(field, value[0], 0, constants.MAX_MARK),
                integer(field, value[1], 0, constants.MAX_MARK))
    return integer(field, value, 0, constants.MAX_MARK)


def nat(field: str, value: object, *, flag_ok: bool) -> Nat:
    """Return ``True`` (bare flag), an address, or an ``(address, port)`` tuple."""
    if value is True:
        if not flag_ok:
            raise InvalidArgumentError(field, value, "an address is required here")
        return True
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise InvalidArgumentError(field, value, "expected (address, port)")
        return (ip_address(field, value[0]),
                integer(field, value[1], 0, constants.MAX_PORT))
    return ip_address(field, value)


def duration(field: str, value: object) -> float:
    """Return a bounded duration in seconds, rounded to milliseconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(field, value, "expected a number of seconds")
    if not math.isfinite(value) or not 0.001 <= value <= 3600:
        raise InvalidArgumentError(field, value, "expected 0.001..3600 seconds")
    return round(float(value), 3)


__all__ = [
    "MAX_LABELS",
    "address_version",
    "check_token",
    "duration",
    "family",
    "integer",
    "ip_address",
    "ip_or_cidr",
    "label_names",
    "mark",
    "nat",
    "netmask",
    "protocol",
    "word",
    "words",
]
