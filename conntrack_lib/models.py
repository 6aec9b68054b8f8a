"""Frozen value types for conntrack entries, events and statistics.

Like :mod:`ipaddress`, every type is immutable, hashable, compares by value,
``str()`` gives a readable line and ``repr()`` could be pasted back as code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import netaddr


@dataclasses.dataclass(frozen=True, slots=True)
class FlowTuple:
    """One direction of a flow: addresses plus the layer-4 identifiers.

    Ports are set for tcp/udp/udplite/sctp/dccp, the ICMP fields for
    icmp/icmpv6 and the keys for gre; the others stay ``None``.
    """

    src: netaddr.IPAddress
    dst: netaddr.IPAddress
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    srckey: int | None = None
    dstkey: int | None = None

    def __str__(self) -> str:
        return f"{_endpoint(self.src, self.sport)} -> {_endpoint(self.dst, self.dport)}" + (
            _l4_suffix(self)
        )

    def inverted(self) -> FlowTuple:
        """Return the tuple seen from the other direction (no NAT)."""
        return FlowTuple(
            src=self.dst,
            dst=self.src,
            sport=self.dport,
            dport=self.sport,
            icmp_type=self.icmp_type,
            icmp_code=self.icmp_code,
            icmp_id=self.icmp_id,
            srckey=self.dstkey,
            dstkey=self.srckey,
        )


def _endpoint(addr: netaddr.IPAddress, port: int | None) -> str:
    text = f"[{addr}]" if addr.version == 6 and port is not None else str(addr)
    return text if port is None else f"{text}:{port}"


def _l4_suffix(flow: FlowTuple) -> str:
    parts = []
    if flow.icmp_type is not None:
        parts.append(f"type={flow.icmp_type} code={flow.icmp_code} id={flow.icmp_id}")
    if flow.srckey is not None:
        parts.append(f"srckey={flow.srckey:#x} dstkey={flow.dstkey or 0:#x}")
    return (" " + " ".join(parts)) if parts else ""


@dataclasses.dataclass(frozen=True, slots=True)
class Counters:
    """Packet and byte counters of both directions (nf_conntrack_acct=1)."""

    orig_packets: int
    orig_bytes: int
    reply_packets: int
    reply_bytes: int

    def __str__(self) -> str:
        return (
            f"orig {self.orig_packets}p/{self.orig_bytes}B "
            f"reply {self.reply_packets}p/{self.reply_bytes}B"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One conntrack entry, as listed by ``conntrack -L`` or ``-o xml``.

    ``zone`` is 0 for the kernel's default zone (conntrack prints nothing
    for it).  ``status`` holds the bracketed flags conntrack prints
    (``ASSURED``, ``UNREPLIED``, ``OFFLOAD``, ``HW_OFFLOAD``, ...).
    ``extra`` keeps every ``key=value`` the parser did not know, as sorted
    pairs so the entry stays hashable (``dict(entry.extra)`` for a mapping).
    """

    family: str
    proto: str
    protonum: int
    original: FlowTuple
    reply: FlowTuple
    state: str | None = None
    timeout: int | None = None
    status: frozenset[str] = frozenset()
    mark: int | None = None
    zone: int = 0
    orig_zone: int | None = None
    reply_zone: int | None = None
    use: int | None = None
    id: int | None = None
    labels: frozenset[str] = frozenset()
    counters: Counters | None = None
    secctx: str | None = None
    secmark: int | None = None
    helper: str | None = None
    delta_time: int | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        words = [f"{self.family} {self.proto}"]
        if self.state:
            words.append(self.state)
        words.append(str(self.original))
        if self.reply != self.original.inverted():
            words.append(f"(reply {self.reply})")
        if self.zone:
            words.append(f"zone={self.zone}")
        for name in ("orig_zone", "reply_zone", "mark", "timeout"):
            value = getattr(self, name)
            if value is not None:
                words.append(f"{name}={value}")
        if self.status:
            words.append("[" + ",".join(sorted(self.status)) + "]")
        return " ".join(words)

    @property
    def is_nat(self) -> bool:
        """Tell whether the reply tuple differs from the inverted original."""
        return self.reply != self.original.inverted()


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One line of ``conntrack -E``: an event type and the entry it carries."""

    type: str
    entry: Entry
    timestamp: float | None = None
    portid: int | None = None
    progname: str | None = None

    def __str__(self) -> str:
        origin = f" by {self.progname or self.portid}" if self.portid is not None else ""
        return f"[{self.type}] {self.entry}{origin}"


@dataclasses.dataclass(frozen=True, slots=True)
class CpuStats:
    """Per-CPU statistics of ``conntrack -S``.

    ``counters`` keeps the ``name=value`` pairs in the order printed, since
    the set of names depends on the kernel.
    """

    cpu: int
    counters: tuple[tuple[str, int], ...] = ()

    def __getitem__(self, name: str) -> int:
        for key, value in self.counters:
            if key == name:
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self.counters)

    def get(self, name: str, default: int | None = None) -> int | None:
        """Return one counter by name, or ``default``."""
        try:
            return self[name]
        except KeyError:
            return default

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict."""
        return dict(self.counters)

    def __str__(self) -> str:
        return f"cpu={self.cpu} " + " ".join(f"{k}={v}" for k, v in self.counters)


__all__ = ["Counters", "CpuStats", "Entry", "Event", "FlowTuple"]
