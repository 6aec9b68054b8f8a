"""Security-group rules and remote addresses, as Neutron sends them, to requests.

Pure: validates Neutron's values once and expands them into
:class:`~conntrack_lib.planner.Request` objects for the planner.

* Protocols: an int or decimal string 0-255, or a name of neutron-lib's
  list in any case (``icmpv6``, ``ipv6-icmp`` and ``58`` are one);
  ``None``, ``"any"``, ``0`` and ``"0"`` mean every protocol, as in
  Neutron's firewall drivers.  ``icmp`` in an IPv6 rule means ICMPv6.
* For ICMP rules the port range carries the ICMP type (min) and code (max).
* A local address of the other family is not the rule's (a dual-stack port
  has both); a remote prefix of the other family is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from conntrack_lib import constants
from conntrack_lib import validators as val
from conntrack_lib.exceptions import InvalidArgumentError
from conntrack_lib.planner import Request
from conntrack_lib.values import FilterValue

#: A port range wider than this is deleted without a port filter (a
#: superset: the flows still allowed re-establish) rather than one request
#: per port.
MAX_EXPANDED_PORTS = 64
_ETHERTYPES = {"ipv4": constants.IPV4, "ipv6": constants.IPV6}
_ANY = (None, 0, "0")
_VERSION = {constants.IPV4: 4, constants.IPV6: 6}


@dataclasses.dataclass(frozen=True)
class SecurityGroupRule:
    """One security-group rule, validated (a frozen value).

    :ivar direction: ``"ingress"`` (flows towards the port) or ``"egress"``.
    :ivar ethertype: ``"IPv4"`` or ``"IPv6"`` (case-insensitive on input).
    :ivar protocol: a conntrack protocol name or number, None for any.
    :ivar port_range_min: first destination port, or the ICMP type.
    :ivar port_range_max: last destination port, or the ICMP code.
    :ivar remote_ip_prefix: the remote address or CIDR, None for any.
    """

    direction: str
    ethertype: str
    protocol: str | int | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None

    def __post_init__(self) -> None:
        """Validate every field and store it in its canonical form.

        :raises InvalidArgumentError: naming the first bad value.
        """
        if self.direction not in ("ingress", "egress"):
            raise InvalidArgumentError("direction", self.direction, "must be ingress or egress")
        family = _ETHERTYPES.get(str(self.ethertype).lower())
        if family is None:
            raise InvalidArgumentError("ethertype", self.ethertype, "must be IPv4 or IPv6")
        object.__setattr__(self, "ethertype", "IPv4" if family == constants.IPV4 else "IPv6")
        object.__setattr__(self, "protocol", _protocol(self.protocol, family))
        self._check_ports()
        if self.remote_ip_prefix is not None:
            prefix = val.ip_or_cidr("remote_ip_prefix", self.remote_ip_prefix)
            if val.address_version(prefix.split("/")[0]) != _VERSION[family]:
                raise InvalidArgumentError("remote_ip_prefix", self.remote_ip_prefix,
                                           f"is not an {self.ethertype} prefix")
            object.__setattr__(self, "remote_ip_prefix", prefix)

    def _check_ports(self) -> None:
        low, high = self.port_range_min, self.port_range_max
        proto = self.protocol
        limit = constants.MAX_ICMP_FIELD if proto in constants.ICMP_PROTOCOLS else (
            constants.MAX_PORT)
        for name, value in (("port_range_min", low), ("port_range_max", high)):
            if value is not None:
                val.integer(name, value, 0, limit)
        if (low is None and high is None) or proto in constants.ICMP_PROTOCOLS:
            if proto in constants.ICMP_PROTOCOLS and low is None and high is not None:
                raise InvalidArgumentError("port_range_max", high,
                                           "an ICMP code needs an ICMP type (port_range_min)")
            return
        if proto not in constants.PORT_PROTOCOLS:
            raise InvalidArgumentError("port_range_min", low,
                                       f"protocol {proto!r} has no ports")
        if low is None or (high is not None and high < low):
            raise InvalidArgumentError("port_range_max", high,
                                       f"is not a range end for port_range_min={low}")

    @classmethod
    def from_neutron(cls, rule: Mapping[str, object]) -> SecurityGroupRule:
        """Build a rule from a Neutron security-group rule dict.

        :param rule: a mapping with ``direction``, ``ethertype`` and
            optionally ``protocol``, ``port_range_min``, ``port_range_max``
            and ``remote_ip_prefix`` (other keys are ignored).
        :returns: the validated rule.
        :raises InvalidArgumentError: for a bad or missing value.
        """
        for key in ("direction", "ethertype"):
            if key not in rule:
                raise InvalidArgumentError(key, None, "missing from the rule")
        # The values are Neutron's, unchecked: __post_init__ checks each one.
        build: Callable[..., SecurityGroupRule] = cls
        return build(rule["direction"], rule["ethertype"], rule.get("protocol"),
                     rule.get("port_range_min"), rule.get("port_range_max"),
                     rule.get("remote_ip_prefix"))

    @property
    def family(self) -> str:
        """Return ``"ipv4"`` or ``"ipv6"``."""
        return _ETHERTYPES[self.ethertype.lower()]

    def requests(self, zone: int | None, local_ips: Iterable[str]) -> list[Request]:
        """Expand the rule into deletion requests for one port.

        :param zone: the port's zone, or None for every zone.
        :param local_ips: the port's addresses; those of the other family
            are not this rule's and are skipped.
        :returns: one request per local address and port (or ICMP type).
        :raises InvalidArgumentError: for a bad zone or address.
        """
        local_key, remote_key = ("dst", "src") if self.direction == "ingress" else ("src", "dst")
        base: dict[str, FilterValue] = {"family": self.family, "zone": zone}
        if self.protocol is not None:
            base["proto"] = self.protocol
        if self.remote_ip_prefix:
            base[remote_key] = self.remote_ip_prefix
        version = _VERSION[self.family]
        requests = []
        for ip in dict.fromkeys(local_ips):
            address = val.ip_address("local_ips", ip)
            if val.address_version(address) != version:
                continue
            for extra in self._l4_filters():
                requests.append(Request.build({**base, local_key: address, **extra}))
        return requests

    def _l4_filters(self) -> list[dict[str, FilterValue]]:
        low, high = self.port_range_min, self.port_range_max
        if self.protocol in constants.ICMP_PROTOCOLS:
            return [{"icmp_type": low, "icmp_code": high}]
        if low is None:
            return [{}]
        high = low if high is None else high
        if high - low + 1 > MAX_EXPANDED_PORTS:
            return [{}]
        return [{"dport": port} for port in range(low, high + 1)]


def _protocol(value: object, family: str) -> str | int | None:
    if isinstance(value, bool):
        raise InvalidArgumentError("protocol", value, "not a protocol")
    if value in _ANY or (isinstance(value, str)
                         and value.lower() in constants.ANY_PROTOCOL_WORDS):
        return None
    proto = val.protocol("protocol", value)
    if proto == "icmp" and family == constants.IPV6:
        return "icmpv6"  # Neutron's IPv6 rules say icmp for ICMPv6
    if proto == "icmpv6" and family == constants.IPV4:
        raise InvalidArgumentError("protocol", value, "is ICMPv6 in an IPv4 rule")
    return proto


def remote_ip_requests(
    zone: int | None,
    remote_ips: Iterable[str],
    mark: int | None = None,
    local_ips: Iterable[str] = (),
) -> list[Request]:
    """Expand remote addresses into deletes of the flows to and from them.

    :param zone: the zone, or None for every zone.
    :param remote_ips: remote addresses or CIDRs.
    :param mark: only flows with this mark, if given.
    :param local_ips: the port's own addresses: only flows between them and
        the remotes go; with no remotes, every flow of these addresses.
    :returns: the requests.
    :raises InvalidArgumentError: for no remote and no local address, a bad
        address, or a remote whose family no local address has.
    """
    remotes = [val.ip_or_cidr("remote_ips", ip) for ip in dict.fromkeys(remote_ips)]
    locals_ = [val.ip_address("local_ips", ip) for ip in dict.fromkeys(local_ips)]
    if not remotes and not locals_:
        raise InvalidArgumentError("remote_ips", [], "empty, and no local_ips to delete all "
                                   "flows of")
    base = {"zone": zone, "mark": mark}
    if not locals_:
        return [Request.build({**base, "family": _family_of(ip), side: ip})
                for ip in remotes for side in ("src", "dst")]
    if not remotes:
        return [Request.build({**base, "family": _family_of(ip), side: ip})
                for ip in locals_ for side in ("src", "dst")]
    requests = []
    for remote in remotes:
        family = _family_of(remote)
        peers = [ip for ip in locals_ if _family_of(ip) == family]
        if not peers:
            raise InvalidArgumentError("remote_ips", remote,
                                       f"is {family} but no local address is")
        for local in peers:
            requests.append(Request.build({**base, "family": family, "src": remote,
                                           "dst": local}))
            requests.append(Request.build({**base, "family": family, "src": local,
                                           "dst": remote}))
    return requests


def _family_of(address: str) -> str:
    version = val.address_version(address.split("/", maxsplit=1)[0])
    return constants.IPV4 if version == 4 else constants.IPV6


def neutron_rule(rule: SecurityGroupRule | Mapping[str, object]) -> SecurityGroupRule:
    """Return ``rule`` as a :class:`SecurityGroupRule`.

    :param rule: a rule, or a Neutron rule dict.
    :returns: the validated rule.
    :raises InvalidArgumentError: for a bad rule.
    """
    if isinstance(rule, SecurityGroupRule):
        return rule
    if isinstance(rule, Mapping):
        return SecurityGroupRule.from_neutron(rule)
    raise InvalidArgumentError("rule", rule, "expected a SecurityGroupRule or a rule dict")


def rule_requests(rule: SecurityGroupRule | Mapping[str, object],
                  ports: Iterable[tuple[int | None, Iterable[str]]]) -> list[Request]:
    """Return the deletion requests of a removed rule over the ports it applied to.

    :param rule: a rule, or a Neutron rule dict.
    :param ports: ``(zone, addresses)`` of each port.
    :returns: the requests of every port, in order.
    :raises InvalidArgumentError: for a bad rule, zone or address.
    """
    checked = neutron_rule(rule)
    return [r for zone, ips in ports for r in checked.requests(zone, ips)]


__all__ = ["MAX_EXPANDED_PORTS", "SecurityGroupRule", "neutron_rule", "remote_ip_requests",
           "rule_requests"]
