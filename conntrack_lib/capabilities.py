"""What each conntrack-tools release can do: one table, as data.

Agents meet conntrack-tools 1.4.5 to 1.4.9.  The releases differ in
options they accept and in what some options do; the library asks the
binary its version once (``conntrack --version``) and routes every
operation by :func:`for_release`, so it never sends a command the running
release refuses or misreads.

:data:`ROWS` is the table the documentation shows (docs/capabilities.rst):
every row was measured on a build of each release, with the command line
given, and the functional suite checks the row of the release under test
against the real binary (tests/functional/test_release_capabilities.py).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from conntrack_lib import exceptions as exc

#: A release as ``(major, minor, patch)``.
Release = tuple[int, int, int]

#: The oldest release the library drives.
OLDEST: Final[Release] = (1, 4, 5)
#: The releases the table was measured on.
MEASURED: Final[tuple[Release, ...]] = ((1, 4, 5), (1, 4, 6), (1, 4, 7), (1, 4, 8), (1, 4, 9))
#: The first release with ``-R``, ``-E -f`` and negated ``-u`` words.
_LOAD_FILE_SINCE: Final[Release] = (1, 4, 7)
#: 1.4.7 alone gives up a bulk ``-U`` when the kernel's replies overflow.
_BULK_UPDATE_ABORTS: Final[frozenset[Release]] = frozenset({(1, 4, 7)})
#: Flows one ``-U`` updates before 1.4.7 aborts it (ENOBUFS).
BULK_UPDATE_ABORT_AT: Final = 256
#: The first release whose ``-s ADDR/LEN`` (and ``-d``, ``-r``, ``-q``) is a prefix.
_PREFIX_SINCE: Final[Release] = (1, 4, 6)
#: The first release whose ``-L``/``-D`` keep to the family ``-f`` names.
_FAMILY_FILTER_SINCE: Final[Release] = (1, 4, 6)
#: Releases whose ``-L``/``-D`` without ``-f`` (and without an address)
#: cover IPv4 flows only.
_IPV4_BY_DEFAULT: Final[frozenset[Release]] = frozenset({(1, 4, 6)})

_VERSION = re.compile(r"conntrack v(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b")


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    """The behaviours of one release the library routes on.

    :ivar release: the release, ``(1, 4, 7)`` for 1.4.7.
    :ivar load_file: ``-R`` (load a file of commands) exists.
    :ivar events_family: ``-E`` accepts ``-f``/``--family``.
    :ivar negated_status: ``-u`` accepts negated words such as ``!SEEN_REPLY``.
    :ivar flush_family: ``-F`` accepts ``-f`` (it still empties every family).
    :ivar bulk_update_limit: most flows one ``-U`` may change before the
        release aborts it; None when it does not.
    :ivar prefix_filters: ``-s 10.8.0.0/30`` (and ``-d``, ``-r``, ``-q``)
        means the prefix; before, it matches nothing (``--mask-src`` and
        ``--mask-dst`` work on every release).
    :ivar family_filter: ``-L``/``-D -f FAMILY`` keep to that family;
        before, they take every family unless an address pins one.
    :ivar default_family: the only family a ``-L``/``-D`` without ``-f``
        and without an address covers; None when it covers every family.
    :ivar mark_ipv4_only: a ``-L``/``-D -m MARK`` without ``-f`` and without
        an address covers IPv4 only (1.4.5 honours ``-f`` with ``-m``).
    :ivar icmp_reply_create: ``-I -p icmp`` naming the reply addresses (as
        ``CreateCommand.from_entry`` does) works; before, "invalid
        parameters".
    """

    release: Release
    load_file: bool
    events_family: bool
    negated_status: bool
    flush_family: bool
    bulk_update_limit: int | None
    prefix_filters: bool = True
    family_filter: bool = True
    default_family: str | None = None
    icmp_reply_create: bool = True
    mark_ipv4_only: bool = False

    @property
    def version(self) -> str:
        """Return the release as text, ``"1.4.7"``."""
        return ".".join(map(str, self.release))


def parse_version(text: str) -> Release:
    """Return the release ``conntrack --version`` printed.

    :param text: the output, e.g. ``conntrack v1.4.7 (conntrack-tools)``.
    :returns: the release as ``(major, minor, patch)``.
    :raises UnsupportedReleaseError: for text that names no release.
    """
    found = _VERSION.search(text)
    if found is None:
        raise exc.UnsupportedReleaseError(text.strip()[:200], "no conntrack version in it")
    major, minor, patch = (int(part) for part in found.groups())
    return (major, minor, patch)


def for_release(release: Release) -> Capabilities:
    """Return the capabilities of ``release``.

    A release newer than the newest measured one is taken to behave like
    it (upstream has only added options since 1.4.5).

    :raises UnsupportedReleaseError: for a release older than 1.4.5.
    """
    if release < OLDEST:
        raise exc.UnsupportedReleaseError(
            ".".join(map(str, release)), "conntrack-tools 1.4.5 or newer is required")
    modern = release >= _LOAD_FILE_SINCE
    return Capabilities(
        release=release,
        load_file=modern,
        events_family=modern,
        negated_status=modern,
        flush_family=modern,
        bulk_update_limit=BULK_UPDATE_ABORT_AT if release in _BULK_UPDATE_ABORTS else None,
        prefix_filters=release >= _PREFIX_SINCE,
        family_filter=release >= _FAMILY_FILTER_SINCE,
        default_family="ipv4" if release in _IPV4_BY_DEFAULT else None,
        icmp_reply_create=modern,
        mark_ipv4_only=not modern,
    )


#: The newest behaviour, for executors that run no binary (the fake).
LATEST: Final[Capabilities] = for_release(MEASURED[-1])


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One measured behaviour: what each release did with a command line.

    :ivar behaviour: what is compared.
    :ivar command: the command line that shows it.
    :ivar results: what each measured release did, in :data:`MEASURED` order.
    :ivar library: what the library does about it.
    """

    behaviour: str
    command: str
    results: tuple[str, str, str, str, str]
    library: str


_NO_R = "refused: unknown option"
_ILLEGAL = "refused: Illegal option (exit 2)"
_BAD = "refused: Bad parameter (exit 2)"

#: The capability table (measured on the builds of tools/build_conntrack.sh).
ROWS: Final[tuple[Row, ...]] = (
    Row("load file of commands", "conntrack -R -",
        (_NO_R, _NO_R, "ok", "ok", "ok"),
        "batches go by -R from 1.4.7; before, creates go by one netlink batch "
        "and deletes by netlink exact deletes or one -D per request"),
    Row("family filter on events", "conntrack -E -f ipv4",
        (_ILLEGAL, _ILLEGAL, "ok", "ok", "ok"),
        "before 1.4.7 the family is matched on each event instead"),
    Row("negated status words", "conntrack -D -u '!SEEN_REPLY'",
        (_BAD, _BAD, "ok", "ok", "ok"),
        "before 1.4.7 the status is matched on a dump, flows deleted exactly"),
    Row("family with flush", "conntrack -F -f ipv6",
        (_ILLEGAL, _ILLEGAL, "empties every family", "empties every family",
         "empties every family"),
        "refused everywhere: delete by family instead"),
    Row("bulk update of 300 flows", "conntrack -U -p udp -m 5",
        ("300 updated", "300 updated", "aborts after 256 (ENOBUFS, exit 1)", "300 updated",
         "300 updated"),
        "more than 200 matches are updated one flow at a time on every release"),
    Row("update filtered by zone", "conntrack -U -w 7 -m 8",
        (_ILLEGAL, _ILLEGAL, _ILLEGAL, _ILLEGAL, _ILLEGAL),
        "zoned flows are refused by update_entries: delete and re-create them"),
    Row("delete by timeout", "conntrack -D -t 100",
        ("deletes every flow", "deletes every flow", "deletes every flow",
         "deletes every flow", "deletes every flow"),
        "-t is no delete filter of the library"),
    Row("count with a filter", "conntrack -C -p udp",
        (_ILLEGAL, _ILLEGAL, _ILLEGAL, _ILLEGAL, _ILLEGAL),
        "a filtered count lists and counts the matching flows"),
    Row("output formats", "conntrack -L -o extended,id,labels,timestamp; -L -o xml",
        ("ok", "ok", "ok", "ok", "ok"),
        "every format on every release; xml is refused by list_entries"),
    Row("summary line", "conntrack -L (stderr)",
        ("N flow entries have been shown.",) * 5,
        "-R prints no summary: a batch's deletions are counted from stdout"),
    Row("exit codes", "conntrack -D/-U/-G of no flow; -L --bogus",
        ("1 with a zero summary; 2 for a bad option",) * 5,
        "one interpreter for every release"),
    Row("zone above 65535", "conntrack -L -w 70000",
        ("accepted", "accepted", "accepted", "accepted", "refused (exit 1)"),
        "zones are checked to be 0..65535 before any process"),
    Row("address prefix filter", "conntrack -L -s 10.8.0.0/30",
        ("matches nothing (\"0 flow entries\")", "the flows in the prefix",
         "the flows in the prefix", "the flows in the prefix", "the flows in the prefix"),
        "on 1.4.5 prefixes go as the network address plus --mask-src/--mask-dst"),
    Row("listing or deleting without a family", "conntrack -L; conntrack -D -w 7",
        ("every family", "IPv4 flows only", "every family", "every family", "every family"),
        "on 1.4.6 a request with no family and no address lists (and deletes "
        "from) each family's dump"),
    Row("GRE key filter", "conntrack -L -p gre --srckey 18",
        ("every GRE flow",) * 5,
        "GRE key filters are matched on the dump, never sent to conntrack"),
    Row("ICMP create naming the reply addresses",
        "conntrack -I -p icmp -s A -d B -r B -q A --icmp-type 8 --icmp-code 0 --icmp-id 4 -t 30",
        ("refused: invalid parameters (exit 1)", "refused: invalid parameters (exit 1)",
         "ok", "ok", "ok"),
        "before 1.4.7 every create that netlink encodes goes by netlink create"),
    Row("family filter", "conntrack -L -f ipv6; conntrack -D -f ipv4",
        ("every family (that family with -m)", "that family", "that family", "that family",
         "that family"),
        "on 1.4.5 the family is matched on the dump unless an address or a mark "
        "filter goes with it"),
    Row("mark filter without a family", "conntrack -L -m 0",
        ("IPv4 flows only", "IPv4 flows only", "every family", "every family",
         "every family"),
        "before 1.4.7 a mark request with no family and no address goes once per family"),
)


__all__ = [
    "BULK_UPDATE_ABORT_AT",
    "LATEST",
    "MEASURED",
    "OLDEST",
    "ROWS",
    "Capabilities",
    "Release",
    "Row",
    "for_release",
    "parse_version",
]
