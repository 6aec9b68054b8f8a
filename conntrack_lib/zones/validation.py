"""Validation of zone allocation keys, zones and ranges (pure)."""

from __future__ import annotations

from conntrack_lib import exceptions
from conntrack_lib.constants import MAX_CONNTRACK_ZONE_ID, MIN_CONNTRACK_ZONE_ID

#: Longest key accepted, in characters.
MAX_KEY_LENGTH = 255


def validate_key(key: object) -> str:
    """Return ``key`` when it is a usable allocation key.

    :param key: the candidate key.
    :returns: the key, unchanged.
    :raises exceptions.InvalidArgumentError: when it is not a non-empty
        str of at most :data:`~conntrack_lib.zones.validation.MAX_KEY_LENGTH`
        characters without NUL or newline.
    """
    if not isinstance(key, str):
        raise exceptions.InvalidArgumentError("key", key, "must be a str")
    if not key:
        raise exceptions.InvalidArgumentError("key", key, "must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise exceptions.InvalidArgumentError(
            "key", key, f"longer than {MAX_KEY_LENGTH} characters"
        )
    if "\x00" in key or "\n" in key:
        raise exceptions.InvalidArgumentError("key", key, "contains NUL or newline")
    return key


def validate_zone(zone: object) -> int:
    """Return ``zone`` when it is an int in 1..MAX_CONNTRACK_ZONE_ID.

    :param zone: the candidate zone.
    :returns: the zone, unchanged.
    :raises exceptions.InvalidZoneError: otherwise (bools are refused too).
    """
    if not isinstance(zone, int) or isinstance(zone, bool):
        raise exceptions.InvalidZoneError(zone, "zone must be an int")
    if not MIN_CONNTRACK_ZONE_ID <= zone <= MAX_CONNTRACK_ZONE_ID:
        raise exceptions.InvalidZoneError(
            zone, f"outside {MIN_CONNTRACK_ZONE_ID}..{MAX_CONNTRACK_ZONE_ID}"
        )
    return zone


def validate_range(zone_range: object) -> tuple[int, int]:
    """Return ``zone_range`` as a ``(low, high)`` tuple of valid zones.

    :param zone_range: a pair of ints, both ends included.
    :returns: the pair as a tuple.
    :raises exceptions.InvalidZoneError: when it is not a pair, an end is
        not a valid zone or ``low > high``.
    """
    if not isinstance(zone_range, tuple | list) or len(zone_range) != 2:
        raise exceptions.InvalidZoneError(zone_range, "zone range must be a (low, high) pair")
    low, high = validate_zone(zone_range[0]), validate_zone(zone_range[1])
    if low > high:
        raise exceptions.InvalidZoneError(zone_range, "zone range low end is above its high end")
    return low, high

