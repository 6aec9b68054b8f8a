"""One meaning for every filter on every path, checked on the real kernel.

Generated tables (every protocol the CLI creates, IPv4 and IPv6, zones
including 0 and per-direction zones, marks, ids, labels, statuses, NAT) and
generated request sets over the filter keywords.  For each set, the table left
by ``delete_many`` with the ``auto`` backend, with ``cli``, and in
FakeConntrack are equal, equal what :mod:`conntrack_lib.matching` says of the
XML dump taken before (the documented meaning: per-direction zones, ids and
labels as the kernel reports them, with the status bits no dump shows taken
from what the test created), and the returned counts equal what went.
``list_entries``/``count`` filters are checked the same way.  Runs under the
release at /usr/sbin/conntrack (see the brief on bind-mounting another).

Labels need a connlabel.conf and a ruleset that uses labels (the kernel keeps
no label storage otherwise): see the ``labelled`` fixture in conftest.py.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import netaddr
import pytest

from conntrack_lib import constants, matching, parser
from conntrack_lib.executor import ProcessExecutor
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Entry
from conntrack_lib.testing import FakeConntrack
from tests.functional import netns

V4 = ("10.60.0.1", "10.60.0.2", "10.60.1.3")
V6 = ("fd00:60::1", "fd00:60::2", "fd00:61::3")
ZONES: tuple[dict[str, int], ...] = ({}, {"zone": 0}, {"zone": 7}, {"zone": 9},
                                     {"orig_zone": 7}, {"reply_zone": 7}, {"orig_zone": 3})
#: Statuses a create may set (the kernel refuses EXPECTED with EBUSY);
#: FIXED_TIMEOUT is in no dump.
STATUSES = (None, ("ASSURED", "SEEN_REPLY"), ("SEEN_REPLY",), ("FIXED_TIMEOUT",),
            ("FIXED_TIMEOUT", "SEEN_REPLY"))
Key = tuple[Any, ...]


def _flow(rnd: random.Random, n: int) -> dict[str, Any]:
    """Return the create fields of flow ``n``: unique tuple, random extras."""
    v6 = n % 3 == 2
    pool = V6 if v6 else V4
    proto = rnd.choice(("tcp", "udp", "udplite", "sctp", "gre", "icmp", 89))
    if proto == "icmp" and v6:
        proto = "icmpv6"
    fields: dict[str, Any] = {"proto": proto, "src": pool[n % 3], "dst": pool[(n + 1) % 3],
                              "timeout": 600}
    if proto in ("tcp", "udp", "udplite", "sctp"):
        fields.update(sport=1000 + n, dport=rnd.choice((22, 53, 80)))
    if proto in ("tcp", "sctp"):
        fields["state"] = "ESTABLISHED"
    if proto == "sctp":
        fields.update(orig_vtag=n + 1, reply_vtag=n + 2)
    if proto == "gre":
        fields.update(srckey=n, dstkey=n + 1)
    if proto in ("icmp", "icmpv6"):
        fields.update(icmp_type=8 if proto == "icmp" else 128, icmp_code=0, icmp_id=n)
    if proto == 89:
        fields["src"] = pool[n % 3].replace("::", f"::{n:x}:") if v6 else f"10.62.{n}.1"
    fields.update(rnd.choice(ZONES))
    status = rnd.choice(STATUSES)
    if status:
        fields["status"] = status
    if rnd.random() < 0.5:
        fields["mark"] = rnd.choice((1, 5, 0x15))
    if rnd.random() < 0.4:
        fields["label_add"] = rnd.choice(("red", "green", ("red", "green"), "blue"))
    if proto in ("udp", "tcp") and not v6 and rnd.random() < 0.3:
        fields["dst_nat"] = "10.63.0.9"
    elif proto == "udp" and v6 and rnd.random() < 0.4:
        fields["dst_nat"] = rnd.choice(("fd00:63::5", "fd00:63::6"))
    return fields


def _table_spec(seed: int, size: int = 36) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    return [_flow(rnd, n) for n in range(size)]


def _request(rnd: random.Random, *, listing: bool = False) -> dict[str, Any]:
    """Return one request over the filter keywords (a deletion's unless ``listing``)."""
    choices: list[Callable[[], dict[str, Any]]] = [
        lambda: {"zone": rnd.choice((0, 7, 9))},
        lambda: {"orig_zone": rnd.choice((0, 3, 7))},
        lambda: {"reply_zone": rnd.choice((0, 7))},
        lambda: {"family": "ipv6", "zone": 0},
        lambda: {"proto": rnd.choice(("tcp", "udp", "gre", "sctp", "udplite", 89))},
        lambda: {"proto": "udp", "dport": rnd.choice((22, 53, 80)), "zone": 7},
        lambda: {"src": rnd.choice(V4 + V6)},
        lambda: {"dst": rnd.choice(("10.60.0.0/24", "fd00:60::/64"))},
        lambda: {"mark": rnd.choice((1, 5, (1, 1)))},
        lambda: {"status": rnd.choice(("ASSURED", "FIXED_TIMEOUT", "EXPECTED"))},
        lambda: {"status": "SEEN_REPLY", "orig_zone": 7},
        lambda: {"status": "FIXED_TIMEOUT", "reply_zone": 0},
        lambda: {"proto": "udp", "dst_nat": rnd.choice(("fd00:63::5", "10.63.0.9"))},
        lambda: {"dst_nat": True},
        lambda: {"proto": "icmp", "icmp_type": 8},
        lambda: {"id": ("flow", rnd.randrange(36))},
        lambda: {"proto": "tcp", "sport": 1000 + rnd.randrange(36)},
        lambda: {"reply_src": rnd.choice((*V4, *V6, "10.63.0.9"))},
        lambda: {"reply_dst": rnd.choice(V4 + V6)},
        lambda: {"proto": "udp", "reply_sport": rnd.choice((22, 53, 80))},
        lambda: {"proto": "tcp", "reply_dport": 1000 + rnd.randrange(36)},
        lambda: {"src": "10.60.0.0", "mask_src": "255.255.255.0"},
        lambda: {"dst": "fd00:60::", "mask_dst": "ffff:ffff:ffff:ffff::"},
        lambda: {"proto": rnd.choice(("tcp", "sctp")), "state": "ESTABLISHED"},
        lambda: {"src_nat": True},
        lambda: {"proto": "icmpv6", "icmp_code": 0, "icmp_id": rnd.randrange(36)},
        lambda: {"proto": "gre", "srckey": rnd.randrange(36)},
        lambda: {"proto": "gre", "dstkey": rnd.randrange(1, 37)},
        lambda: {"proto": "gre", "reply_srckey": rnd.randrange(1, 37)},
        lambda: {"proto": "gre", "reply_dstkey": rnd.randrange(36)},
        lambda: {"family": "ipv4", "proto": "udp", "zone": 7},
        lambda: {"labels": rnd.choice(("red", "green", ("red", "green"), "blue"))},
        lambda: {"labels": "green", "proto": rnd.choice(("udp", "tcp"))},
    ]
    if listing:  # -L only
        choices.append(lambda: {"any_nat": rnd.choice((True, "10.63.0.9"))})
    return rnd.choice(choices)()


#: Filter keywords the generated requests leave out, and why.
NOT_GENERATED = {
    # The kernel reports no secmark without an LSM labelling flows: every
    # flow would match or none.
    "secmark",
}
def test_requests_cover_every_filter_keyword() -> None:
    rnd = random.Random(0)
    seen = {key for _ in range(3000) for key in _request(rnd, listing=True)}
    keywords = set(matching.SUPPORTED)
    assert seen == keywords - NOT_GENERATED, (sorted(keywords - NOT_GENERATED - seen),
                                              sorted(seen - keywords))


def _key(entry: Entry) -> Key:
    orig, reply = matching.direction_zones(entry)
    return (entry.family, entry.protonum, entry.original, entry.reply, orig, reply,
            entry.mark or 0, "ASSURED" in entry.status, "UNREPLIED" in entry.status)


def _labelled_fake() -> FakeConntrack:
    """Return a FakeConntrack whose table keeps labels, like ``labelled``'s."""
    fake = FakeConntrack()
    fake.use_labels()
    return fake


def _seed(helper: ConntrackHelper, spec: list[dict[str, Any]]) -> None:
    # One create per flow: releases without -R (1.4.5, 1.4.6) seed the same way.
    for fields in spec:
        helper.create_entry(**fields)


def _resolve(requests: list[dict[str, Any]], ids: list[int | None]) -> list[dict[str, Any]]:
    return [{k: (ids[v[1]] if k == "id" else v) for k, v in r.items()} for r in requests]


def _protonum(proto: object) -> int:
    return proto if isinstance(proto, int) else constants.PROTOCOL_NUMBERS[str(proto)]


def _identity(protonum: int, src: object, l4: int | None) -> tuple[int, str, int | None]:
    return protonum, str(netaddr.IPAddress(str(src))), l4


def _spec_identity(fields: dict[str, Any]) -> tuple[int, str, int | None]:
    """Return the identity of the flow ``fields`` created (see :func:`_entry_identity`)."""
    l4 = fields.get("sport", fields.get("icmp_id", fields.get("srckey")))
    return _identity(_protonum(fields["proto"]), fields["src"], l4)


def _created_status(spec: list[dict[str, Any]]) -> dict[tuple[int, str, int | None], set[str]]:
    """Return the status bits each flow was created with, by its original tuple.

    No dump shows FIXED_TIMEOUT (nor EXPECTED): what the test asked for is
    the truth the expected meaning starts from, not the kernel's own filter.
    """
    bits = {}
    for fields in spec:
        bits[_spec_identity(fields)] = set(
            fields.get("status", ()))
    return bits


def _entry_identity(entry: Entry) -> tuple[int, str, int | None]:
    flow = entry.original
    l4 = next((v for v in (flow.sport, flow.icmp_id, flow.srckey) if v is not None), None)
    return _identity(entry.protonum, flow.src, l4)


def _dump(ns: str, output: str) -> str:
    # Family by family: -L without -f lists IPv4 only on 1.4.6.
    return "".join(netns.run(ns, ["-L", "-o", output, "-f", family], check=True).stdout
                   for family in ("ipv4", "ipv6"))


def _documented_table(ns: str, spec: list[dict[str, Any]]) -> list[Entry]:
    """Return the flows of ``ns`` as the raw binary's extended and XML dumps show them.

    The extended dump gives full tuples, ids, per-direction zones and labels;
    the XML dump must agree with it on every field both print (XML leaves
    out the ICMP and GRE identifiers), and the created status bits no dump
    shows are added from ``spec``.
    """
    extended = {e.id: e for e in parser.parse_entries(_dump(ns, "extended,id,labels"),
                                                      strict=True)}
    xml = {e.id: e for e in parser.parse_xml(_dump(ns, "xml,id,labels"), strict=True)}
    assert xml.keys() == extended.keys()
    for flow_id, entry in extended.items():
        other = xml[flow_id]
        assert (matching.direction_zones(other), other.labels, other.mark or 0) == (
            matching.direction_zones(entry), entry.labels, entry.mark or 0), entry
    created = _created_status(spec)
    return [dataclasses.replace(e, status=e.status | frozenset(created[_entry_identity(e)]))
            for e in extended.values()]


def _expected(entries: list[Entry], requests: list[dict[str, Any]]) -> set[Key]:
    """Return the keys the documented meaning selects from ``entries``."""
    predicates = [matching.compile_filters(r, full_status=True) for r in requests]
    return {_key(entry) for entry in entries if any(p(entry) for p in predicates)}


def _flush(helper: ConntrackHelper) -> None:
    helper.delete_entries()


def _check_labels_kept(table: list[Entry], spec: list[dict[str, Any]]) -> None:
    """Fail unless the kernel kept the labels the test created (else label
    requests would match nothing and prove nothing)."""
    wanted = {_entry_identity(e): e.labels for e in table}
    for fields in spec:
        names = fields.get("label_add", ())
        assert wanted[_spec_identity(fields)] == frozenset(
            names.split(",") if isinstance(names, str) else names), fields


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_delete_many_means_the_same_on_every_path(labelled: str, seed: int) -> None:
    spec = _table_spec(seed)
    rnd = random.Random(seed * 101)
    request_sets = [[_request(rnd) for _ in range(rnd.choice((1, 2, 3, 8)))] for _ in range(6)]
    # Labels in every run: the draws above may leave them out.
    request_sets.append([{"labels": ("red", "green")}, {"labels": "blue", "proto": "udp"}])
    documented: list[Entry] = []
    doomed: set[Key] = set()
    for raw in request_sets:
        tables: dict[str, set[Key]] = {}
        for backend in ("auto", "cli", "fake"):  # the fake last: it is checked against the kernel
            if backend == "fake":
                helper = ConntrackHelper(executor=_labelled_fake())
            else:
                helper = ConntrackHelper(namespace=labelled, executor=ProcessExecutor(),
                                         exact_delete_backend=backend)
                _flush(helper)
            _seed(helper, spec)
            before = helper.list_entries(output=("id",))
            assert len(before) == len(spec)
            # The same flow on every path: ids are picked in a stable order.
            requests = _resolve(raw, [e.id for e in sorted(before, key=lambda e: repr(_key(e)))])
            if backend == "fake":
                # The fake must hold what the kernel held, labels included,
                # and lose what the kernel's documented meaning says.
                labels = {_key(e): e.labels for e in documented}
                assert {_key(e): e.labels for e in helper.list_entries(
                    output=("labels",))} == labels
            else:
                documented = _documented_table(labelled, spec)
                _check_labels_kept(documented, spec)
                doomed = _expected(documented, requests)
            report = helper.delete_many(requests)
            after = {_key(e) for e in helper.list_entries()}
            assert after == {_key(e) for e in before} - doomed, (backend, requests)
            assert report.deleted == len(before) - len(after), (backend, requests)
            tables[backend] = after
        assert tables["auto"] == tables["cli"] == tables["fake"], raw


@pytest.mark.parametrize("seed", [4, 5])
def test_list_and_count_filters_mean_the_same_on_every_path(labelled: str, seed: int) -> None:
    spec = _table_spec(seed)
    real = ConntrackHelper(namespace=labelled, executor=ProcessExecutor())
    fake = ConntrackHelper(executor=_labelled_fake())
    _seed(real, spec)
    _seed(fake, spec)
    documented = _documented_table(labelled, spec)
    _check_labels_kept(documented, spec)
    rnd = random.Random(seed)
    for _ in range(40):
        filters = _request(rnd, listing=True)
        if "id" in filters:
            continue  # -L takes no id filter
        expected = _expected(documented, [filters])
        listed = {_key(e) for e in real.list_entries(**filters)}
        assert listed == expected, filters
        assert {_key(e) for e in fake.list_entries(**filters)} == expected, filters
        assert real.count(**filters) == fake.count(**filters) == len(expected), filters


@pytest.mark.parametrize("flows", [200, 2000])
def test_update_by_id_changes_exactly_one_flow(ns: str, flows: int) -> None:
    helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    helper.create_entries({"proto": "udp", "src": f"10.64.{n // 250}.{n % 250 + 1}",
                           "dst": "10.65.0.1", "sport": 1000, "dport": 53, "timeout": 600}
                          for n in range(flows))
    target = helper.list_entries(output=("id",))[flows // 2]
    changed = helper.update_entries({"proto": "udp", "dst": "10.65.0.1", "id": target.id},
                                    mark=77)
    assert changed == 1
    marked = helper.list_entries(mark=77, output=("id",))
    assert [e.id for e in marked] == [target.id]
