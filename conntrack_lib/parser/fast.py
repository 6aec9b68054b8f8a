"""The fast path: the common shape of a dump line, read by one regular expression.

Most lines of a large table are TCP/UDP-like flows (ports or no layer-4
fields) with the usual metadata.  One pattern reads such a line in a single
scan and ``fast_entry`` fills the models from its groups; any line the
pattern misses, or whose groups do not add up, goes to the general parser
in :mod:`conntrack_lib.parser.lines`, which decides.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from conntrack_lib import constants
from conntrack_lib.models import Counters, Entry, FlowTuple
from conntrack_lib.parser.base import EMPTY, Addresses, LineError, Numbers, status
from conntrack_lib.parser.builders import EntryShell, FlowShell, new

# Possessive quantifiers (++, *+) never give characters back: no field can
# end inside a run of digits or address characters, and not backtracking
# makes the scan about 15% faster.  Python 3.10's re has no possessive
# quantifiers; there the greedy form matches the same lines, only slower.
_FAST_PATTERN = (
    r"(?:(ipv4 ++2|ipv6 ++10) ++)?"
    r"([a-z]++) ++(\d++) ++(?:(\d++) )?(?:([A-Z][A-Z0-9_]*+) )?"
    r"src=([0-9a-f.:]++) dst=([0-9a-f.:]++) (?:sport=(\d++) dport=(\d++) )?"
    r"(?:packets=(\d++) bytes=(\d++) )?(\[UNREPLIED\] )?"
    r"src=([0-9a-f.:]++) dst=([0-9a-f.:]++) (?:sport=(\d++) dport=(\d++) )?"
    r"(?:packets=(\d++) bytes=(\d++) )?(?:\[(ASSURED|OFFLOAD|HW_OFFLOAD)\] )?"
    r"(?:mark=(\d++) )?(?:zone=(\d++) )?(?:delta-time=(\d++) )?use=(\d++)(?: id=(\d++))?"
)
if sys.version_info < (3, 11):  # 3.10 has no possessive quantifiers
    _FAST_PATTERN = _FAST_PATTERN.replace("++", "+").replace("*+", "*")
_FAST_RE = re.compile(_FAST_PATTERN, re.ASCII)
#: Match one stripped line of the common shape (or return None).
fast_match = _FAST_RE.fullmatch
#: The same shape as whole lines of a text (no leading or trailing blanks).
FAST_LINE_RE = re.compile(r"^" + _FAST_RE.pattern + r"$", re.ASCII | re.MULTILINE)
_UNREPLIED = frozenset({"UNREPLIED"})
#: (name, number text) of each protocol the fast path reads -> the shared
#: name and the number; ICMP and GRE tuples hold other fields and "unknown"
#: takes any number.
_FAST_PROTOCOLS: dict[tuple[str, str], tuple[str, int]] = {
    (name, str(number)): (name, number) for name, number in constants.PROTOCOL_NUMBERS.items()
    if name not in ("icmp", "icmpv6", "gre")
}
#: One shared object per state name: the text a match returns is a new
#: string per line, which would cost each entry 50 bytes more and the
#: collector's walks a visit to scattered memory.
_STATES = {state: state for names in constants.STATES_BY_PROTOCOL.values() for state in names}


def fast_entry(groups: tuple[str | None, ...], addresses: Addresses,
               nums: Numbers) -> Entry:
    """Build an Entry from the groups of the fast pattern (ports-or-nothing protocols).

    Fills the shells inline (see :mod:`conntrack_lib.parser.builders`):
    this runs once per dump line.
    """
    (family, proto, protonum, timeout, state, osrc, odst, osport, odport, opk, oby, unreplied,
     rsrc, rdst, rsport, rdport, rpk, rby, flag, mark, zone, delta, use, id_) = groups
    known: tuple[str, int | None] | None = _FAST_PROTOCOLS.get(
        (proto, protonum))  # type: ignore[arg-type]
    if known is None:
        if proto != "unknown":
            raise LineError("protocol does not match its fields")
        known = ("unknown", nums[protonum])
    derived = "ipv6" if ":" in osrc else "ipv4"  # type: ignore[operator]
    if family is not None and family[:4] != derived:
        raise LineError("address family does not match the ipv4/ipv6 prefix")
    # Ports go through the digit-text cache too: a dict hit costs a fifth
    # of int(), and a table repeats its service ports and mirrors each
    # tuple in its reply.
    osp, odp, rsp, rdp = nums[osport], nums[odport], nums[rsport], nums[rdport]
    entry: Any = new(EntryShell)
    flow: Any
    entry.family = derived
    entry.proto, entry.protonum = known
    entry.original = flow = new(FlowShell)
    flow.src, flow.dst = addresses[osrc], addresses[odst]  # type: ignore[index]
    flow.sport, flow.dport = osp, odp
    flow.icmp_type = flow.icmp_code = flow.icmp_id = flow.srckey = flow.dstkey = None
    flow.__class__ = FlowTuple
    entry.reply = flow = new(FlowShell)
    flow.src, flow.dst = addresses[rsrc], addresses[rdst]  # type: ignore[index]
    flow.sport, flow.dport = rsp, rdp
    flow.icmp_type = flow.icmp_code = flow.icmp_id = flow.srckey = flow.dstkey = None
    flow.__class__ = FlowTuple
    entry.state = _STATES.get(state, state)  # type: ignore[arg-type]
    entry.timeout = nums[timeout]
    if flag is None:
        entry.status = _UNREPLIED if unreplied else EMPTY
    else:
        entry.status = status(("UNREPLIED", flag) if unreplied else (flag,))
    entry.mark = nums[mark]
    entry.zone = nums[zone] or 0
    entry.orig_zone = entry.reply_zone = entry.secctx = entry.secmark = entry.helper = None
    entry.use = nums[use]
    entry.id = None if id_ is None else int(id_)
    entry.labels = EMPTY
    entry.counters = None
    if opk is not None or rpk is not None:
        entry.counters = Counters(int(opk or 0), int(oby or 0), int(rpk or 0), int(rby or 0))
    entry.delta_time = nums[delta]
    entry.extra = ()
    entry.__class__ = Entry
    return entry  # type: ignore[no-any-return]  # an Entry now (see builders)
