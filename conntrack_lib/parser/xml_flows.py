"""Parse ``conntrack -o xml`` output: ``-L`` documents and the flows of ``-E`` lines.

Standard library XML only; the input is local conntrack output.  The XML
printer of conntrack 1.4.7 (libnetfilter_conntrack 1.0.9) has defects that
are undone here; :func:`~conntrack_lib.parser.parse_xml` lists them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from conntrack_lib import constants
from conntrack_lib.models import Counters, Entry, FlowTuple
from conntrack_lib.parser.base import (
    EMPTY,
    Addresses,
    LineError,
    ParseStats,
    drive,
    status,
    to_hex,
    to_int,
)

XML_FRAMING = ("<?xml", "<conntrack>", "</conntrack>")


def xml_int(element: ET.Element | None, name: str) -> int | None:
    """Return the integer text of a child element, or None when absent."""
    child = element.find(name) if element is not None else None
    if child is None or child.text is None:
        return None
    return _xml_number(child.text)


def _xml_number(text: str) -> int:
    """Convert an XML number: decimal, zero-padded (``<sec>01</sec>``) or GRE hex."""
    return to_hex(text) if text.startswith("0x") else to_int(text)


def _xml_direction(meta: ET.Element, addresses: Addresses) -> tuple[
        FlowTuple, int | None, tuple[int, int] | None]:
    """Read one ``<meta direction=...>``: the tuple, its zone and its counters."""
    layer3 = meta.find("layer3")
    layer4 = meta.find("layer4")
    if layer3 is None or layer4 is None:
        raise LineError("flow direction without layer3/layer4")
    src, dst = layer3.findtext("src"), layer3.findtext("dst")
    if not src or not dst:
        raise LineError("flow direction without addresses")
    flow = FlowTuple(
        addresses[src], addresses[dst],
        xml_int(layer4, "sport"), xml_int(layer4, "dport"),
        xml_int(layer4, "type"), xml_int(layer4, "code"), xml_int(layer4, "id"),
        xml_int(layer4, "srckey"), xml_int(layer4, "dstkey"),
    )
    counters = meta.find("counters")
    if counters is None:
        return flow, xml_int(meta, "zone"), None
    packets_bytes = (xml_int(counters, "packets") or 0, xml_int(counters, "bytes") or 0)
    return flow, xml_int(meta, "zone"), packets_bytes


def _fix_state(proto: str, state: str | None) -> str | None:
    """Undo the XML printer's use of TCP state names for SCTP and DCCP.

    libnetfilter_conntrack 1.0.9 looks the SCTP/DCCP state number up in the
    TCP name table, so SCTP ESTABLISHED (4) is printed as FIN_WAIT (TCP 4).
    """
    names = _XML_STATE_NAMES.get(proto)
    if names is None or state is None or state not in constants.TCP_STATES:
        return state
    number = constants.TCP_STATES.index(state)
    return names[number] if number < len(names) else state


_XML_STATE_NAMES: dict[str, tuple[str, ...]] = {
    "sctp": (*constants.SCTP_STATES, "HEARTBEAT_SENT", "HEARTBEAT_ACKED"),
    "dccp": constants.DCCP_STATES,
}
_XML_INDEPENDENT_INTS = {"timeout", "mark", "secmark", "use", "id", "zone", "deltatime"}


def _xml_independent(meta: ET.Element | None) -> tuple[dict[str, int], dict[str, str],
                                                        list[str], frozenset[str],
                                                        list[tuple[str, str]]]:
    """Read ``<meta direction="independent">`` into ints, strings, flags, labels, extra."""
    ints: dict[str, int] = {}
    strings: dict[str, str] = {}
    flags: list[str] = []
    labels: frozenset[str] = EMPTY
    extra: list[tuple[str, str]] = []
    for child in meta if meta is not None else ():
        tag = child.tag
        if tag in _XML_INDEPENDENT_INTS:
            ints[tag] = _xml_number(child.text or "")
        elif tag in ("state", "secctx"):
            strings[tag] = child.text or ""
        elif tag == "labels":
            labels = frozenset(label.text or "" for label in child.iter("label"))
        elif tag == "timestamp":
            extra.extend((part.tag, part.text or "") for part in child)
        elif len(child) == 0 and not (child.text or "").strip():
            flags.append(tag.upper())
        else:
            extra.append((tag, child.text or ""))
    return ints, strings, flags, labels, extra


def parse_xml_flow(flow: ET.Element, addresses: Addresses) -> Entry:
    """Build an Entry from one ``<flow>`` element."""
    metas = {meta.get("direction"): meta for meta in flow.findall("meta")}
    if "original" not in metas or "reply" not in metas:
        raise LineError("flow without original and reply directions")
    original, orig_zone, orig_counters = _xml_direction(metas["original"], addresses)
    reply, reply_zone, reply_counters = _xml_direction(metas["reply"], addresses)
    layer3 = metas["original"].find("layer3")
    layer4 = metas["original"].find("layer4")
    if layer3 is None or layer4 is None:
        raise LineError("flow direction without layer3/layer4")
    proto = layer4.get("protoname") or ""
    ints, strings, flags, labels, extra = _xml_independent(metas.get("independent"))
    counters = None
    if orig_counters is not None or reply_counters is not None:
        counters = Counters(*(orig_counters or (0, 0)), *(reply_counters or (0, 0)))
    return Entry(
        family=layer3.get("protoname") or "", proto=proto,
        protonum=to_int(layer4.get("protonum") or ""),
        original=original, reply=reply,
        state=_fix_state(proto, strings.get("state")), timeout=ints.get("timeout"),
        status=status(tuple(flags)) if flags else EMPTY, mark=ints.get("mark"),
        zone=ints.get("zone", 0), orig_zone=orig_zone, reply_zone=reply_zone,
        use=ints.get("use"), id=ints.get("id"), labels=labels, counters=counters,
        secctx=strings.get("secctx"), secmark=ints.get("secmark"),
        helper=flow.findtext("helper"), delta_time=ints.get("deltatime"),
        extra=tuple(sorted(extra)),
    )


def xml_flow_element(line: str) -> tuple[ET.Element, str]:
    """Parse one ``<flow>...</flow>`` line; return it and any text after it."""
    end = line.rfind("</flow>")
    if end < 0:
        raise LineError("unterminated <flow>")
    end += len("</flow>")
    element = ET.fromstring(line[:end])  # noqa: S314 - local conntrack output, not remote data
    if element.tag != "flow":
        raise LineError(f"unexpected element <{element.tag}>")
    return element, line[end:]


def parse_xml(text: str, *, strict: bool = False,
              stats: ParseStats | None = None) -> list[Entry]:
    """Return the entries of ``conntrack -L -o xml`` output (stdlib XML only).

    Known defects of conntrack 1.4.7's XML, handled here: ICMP/ICMPv6 flows
    carry no type/code/id (those fields stay None); SCTP/DCCP states are
    printed with TCP names (translated back); an empty table prints nothing
    (returns []); ``-D``/``-U`` print bare ``<flow>`` lines with no document
    around them (accepted); a ``[USERSPACE]`` tag may follow ``</flow>``
    (ignored).  ``<timestamp>`` start/stop (nanoseconds) go to ``extra``.

    :raises ParseError: in strict mode, for the first unreadable line.
    """
    addresses = Addresses()

    def parse_one(line: str) -> Entry | None:
        if line.startswith(XML_FRAMING):
            return None
        element, _ = xml_flow_element(line)
        return parse_xml_flow(element, addresses)

    return list(drive(text.splitlines(), parse_one, strict, stats, "XML"))

