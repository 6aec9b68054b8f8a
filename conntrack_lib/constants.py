"""Constants shared by every layer of conntrack_lib.

Names, numbers and allow-lists here are the single source of truth for
validation: a value that is not listed here never reaches an argv.
"""

from typing import Final

#: Zone 0 is the kernel's default zone; zones are 16-bit.
MIN_CONNTRACK_ZONE_ID: Final = 1
#: The highest zone: zones are 16-bit.
MAX_CONNTRACK_ZONE_ID: Final = 65535

#: Where Debian's ``conntrack`` package installs the binary.
CONNTRACK_BINARY: Final = "/usr/sbin/conntrack"
#: Where iproute2's ``ip`` may be installed, in the order they are tried:
#: Debian's ``/usr/sbin`` first, then older and other layouts.  Only the
#: throwaway namespaces of the tests, benchmarks and demo use it
#: (:func:`conntrack_lib.testing.namespaces.ip_binary`); the library itself
#: never runs ``ip``.
IP_BINARY_CANDIDATES: Final = ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip")
#: Fixed path of util-linux ``nsenter``; never looked up through ``PATH``.
NSENTER_BINARY: Final = "/usr/bin/nsenter"
#: Where iproute2 keeps named network namespaces.
NETNS_RUN_DIR: Final = "/run/netns"

IPV4: Final = "ipv4"
IPV6: Final = "ipv6"
FAMILIES: Final = (IPV4, IPV6)
FAMILY_NUMBERS: Final = {IPV4: 2, IPV6: 10}
FAMILY_BY_NUMBER: Final = {2: IPV4, 10: IPV6}

#: Protocols with a dedicated handler in conntrack-tools 1.4.x.
PROTOCOL_NUMBERS: Final = {
    "icmp": 1,
    "tcp": 6,
    "udp": 17,
    "dccp": 33,
    "gre": 47,
    "icmpv6": 58,
    "sctp": 132,
    "udplite": 136,
}
PROTOCOL_NAMES: Final = {num: name for name, num in PROTOCOL_NUMBERS.items()}

#: Every protocol name a Neutron security-group rule may carry (neutron-lib's
#: ``IP_PROTOCOL_MAP``), with its IANA number.  ``icmpv6`` and ``ipv6-icmp``
#: name the same protocol.  Names with a conntrack handler render as that
#: handler's name, the others as their number.
NEUTRON_PROTOCOL_NUMBERS: Final = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0,
    "icmp": 1, "igmp": 2, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44,
    "ipv6-icmp": 58, "icmpv6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60,
    "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132,
    "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}
#: Protocol values a security-group rule uses to mean "every protocol".
ANY_PROTOCOL_WORDS: Final = frozenset({"any"})
MAX_PROTOCOL: Final = 255

#: Protocols whose tuples carry ports.
PORT_PROTOCOLS: Final = frozenset({"tcp", "udp", "udplite", "sctp", "dccp"})
ICMP_PROTOCOLS: Final = frozenset({"icmp", "icmpv6"})
#: The reply type of each ICMP type the kernel tracks (echo, timestamp,
#: information, address mask; ICMPv6 echo and node information).  ICMP can
#: only track such request/reply pairs: the kernel refuses other types with
#: EINVAL ("invalid parameters").
ICMP_REPLY_TYPES: Final = {
    "icmp": {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17},
    "icmpv6": {128: 129, 129: 128, 139: 140, 140: 139},
}
#: Protocols whose ``-I`` requires ``--state``.
STATEFUL_PROTOCOLS: Final = frozenset({"tcp", "sctp", "dccp"})

TCP_STATES: Final = (
    "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
    "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2",
)
SCTP_STATES: Final = (
    "NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED",
    "SHUTDOWN_SENT", "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT",
)
DCCP_STATES: Final = (
    "NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING",
    "TIMEWAIT", "IGNORE", "INVALID",
)
STATES_BY_PROTOCOL: Final = {
    "tcp": TCP_STATES,
    "sctp": SCTP_STATES,
    "dccp": DCCP_STATES,
}
DCCP_ROLES: Final = ("client", "server")

#: Status words ``-u`` accepts, spelled in full (prefixes hit the
#: SRC_NAT/DST_NAT trap of 1.4.7).
STATUS_FLAGS: Final = (
    "ASSURED", "SEEN_REPLY", "UNSET", "FIXED_TIMEOUT", "EXPECTED",
    "OFFLOAD", "HW_OFFLOAD",
)

EVENT_MASKS: Final = ("ALL", "NEW", "UPDATES", "DESTROY")
EVENT_TYPES: Final = ("NEW", "UPDATE", "DESTROY")

#: ``-o`` keywords the library renders (``save`` and ``userspace`` are
#: deliberately absent: save drops marks, userspace is a no-op).
OUTPUT_FORMATS: Final = ("extended", "id", "xml", "timestamp", "ktimestamp", "labels")

MAX_PORT: Final = 65535
MAX_MARK: Final = 0xFFFFFFFF
MAX_ICMP_FIELD: Final = 255
MAX_ICMP_ID: Final = 65535
#: conntrack clamps larger timeouts anyway; 2**31-1 keeps atol() exact.
MAX_TIMEOUT: Final = 2**31 - 1

#: Exit codes of conntrack 1.4.7.
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
