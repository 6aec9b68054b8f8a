"""One actor of the stress test: random table and zone operations, modelled exactly.

An :class:`Actor` owns its zone keys (``a<index>-k<n>``) and an address block
(``10.<16+index>.0.0/16`` and ``fd00:0:0:<index>::/64``), so the flows it
expects in the table can be computed from what it asked for, whatever the
other actors do at the same time.  Every creation call uses a fresh source
address (a "group"), so a queued deletion naming that address can never
catch a flow created after it was queued.

The test process runs several actors as threads; it also runs this file as
a program (one actor per child process), which writes its report as JSON::

    python stress_worker.py NAMESPACE STORE_PATH INDEX SEED START_AT DURATION LOG_PATH
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import ipaddress
import itertools
import json
import random
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from conntrack_lib import exceptions as exc
from conntrack_lib.executor import ProcessExecutor
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Entry
from conntrack_lib.worker import DeletionQueue
from conntrack_lib.zones import SQLiteZoneStore

#: Zones shared by every actor: fewer than the actors may hold at once, so
#: zones are reused constantly and the range is exhausted now and then.
ZONE_RANGE = (200, 231)
#: Zone keys one actor holds at most.
MAX_KEYS = 4
#: Live flows one actor keeps at most, so every table dump stays cheap.
MAX_FLOWS = 400
#: Long enough that no flow expires during a run.
FLOW_TIMEOUT = 3600
DPORTS = (22, 80, 443, 5353)
#: Seconds an actor waits for its queued deletions before it calls it a failure.
SETTLE_TIMEOUT = 60.0

#: (zone, src, dst, sport, dport, proto) of one flow's original direction.
FlowKey = tuple[int, str, str, int, int, str]

#: Relative weights of the operations; creation is skipped at MAX_FLOWS.
WEIGHTS: Mapping[str, int] = {
    "allocate": 6,
    "release": 4,
    "create": 8,
    "create_batch": 10,
    "list": 6,
    "count": 6,
    "delete_filtered": 5,
    "delete_exact": 5,
    "delete_many": 3,
    "queue_filtered": 6,
    "queue_exact": 5,
}
CREATING = frozenset({"create", "create_batch"})
NEEDS_FLOWS = frozenset({"delete_filtered", "delete_exact", "delete_many", "queue_filtered",
                         "queue_exact"})


def address(text: str) -> str:
    """Return the canonical text of an IP address (IPv6 compressed, lower case)."""
    return ipaddress.ip_address(text).compressed


def entry_key(entry: Entry) -> FlowKey:
    """Return the model key of a listed entry."""
    orig = entry.original
    return (int(entry.zone or 0), address(str(orig.src)), address(str(orig.dst)),
            int(orig.sport or 0), int(orig.dport or 0), str(entry.proto))


def is_ipv6(flow: FlowKey) -> bool:
    """Tell whether a model flow is IPv6."""
    return ":" in flow[1]


@dataclasses.dataclass
class Holding:
    """A zone key the actor holds, with the flows it expects in that zone."""

    key: str
    zone: int
    interval: int
    flows: set[FlowKey] = dataclasses.field(default_factory=set)


class ModelMismatchError(AssertionError):
    """The table or the allocator disagreed with the actor's model."""


class Actor:
    """Run random operations on one namespace and keep the exact expected table.

    :param index: the actor's number; it picks the key prefix and address block.
    :param helper: the helper to use (may be shared with other actors).
    :param queue: the deletion queue to use (may be shared).
    :param seed: seed of this actor's random choices.
    :param deadline: ``time.monotonic()`` value after which no new operation starts.
    """

    def __init__(self, index: int, helper: ConntrackHelper, queue: DeletionQueue,
                 seed: int, deadline: float) -> None:
        self.index = index
        self.helper = helper
        self.queue = queue
        self.rng = random.Random(seed)
        self.deadline = deadline
        self.held: dict[str, Holding] = {}
        self.ops: collections.Counter[str] = collections.Counter()
        #: [key, zone, held_from, held_until or None], monotonic seconds.
        self.intervals: list[list[Any]] = []
        self.error: str | None = None
        self._keys = itertools.count()
        self._groups = itertools.count(1)
        self.blocks = (f"10.{16 + index}.0.0/16", f"fd00:0:0:{index:x}::/64")

    # -- driving ---------------------------------------------------------

    def run(self) -> None:
        """Run operations until the deadline; keep the traceback of a failure."""
        try:
            while time.monotonic() < self.deadline:
                self.step()
        except BaseException:  # reported to the test with its traceback
            self.error = traceback.format_exc()

    def step(self) -> None:
        """Run one operation chosen at random among those that make sense now."""
        names = self._choices()
        op = self.rng.choices(names, weights=[WEIGHTS[n] for n in names])[0]
        getattr(self, "_op_" + op)()
        self.ops[op] += 1

    def _choices(self) -> list[str]:
        if not self.held:
            return ["allocate"]
        total = sum(len(h.flows) for h in self.held.values())
        names = [n for n in WEIGHTS
                 if not (n in CREATING and total >= MAX_FLOWS)
                 and not (n in NEEDS_FLOWS and total == 0)
                 and not (n == "allocate" and len(self.held) >= MAX_KEYS)]
        return names

    def report(self) -> dict[str, Any]:
        """Return what the actor did and expects, as JSON-ready data."""
        return {
            "index": self.index,
            "ops": dict(self.ops),
            "intervals": self.intervals,
            "live": {h.key: {"zone": h.zone, "flows": sorted(map(list, h.flows))}
                     for h in self.held.values()},
            "error": self.error,
        }

    # -- helpers ---------------------------------------------------------

    def _expect(self, ok: bool, what: str) -> None:
        if not ok:
            raise ModelMismatchError(f"actor {self.index}: {what}")

    def _pick(self, with_flows: bool = False) -> Holding:
        pool = [h for h in self.held.values() if h.flows or not with_flows]
        return self.rng.choice(pool)

    def _settle(self) -> None:
        """Wait until no queued deletion of this actor can still run."""
        for block in self.blocks:
            self._expect(self.queue.wait_for(block, timeout=SETTLE_TIMEOUT),
                         f"queued deletions in {block} not done in {SETTLE_TIMEOUT}s")

    def _new_flows(self, holding: Holding, count: int) -> list[dict[str, Any]]:
        # IPv4 sources repeat only after 62,500 groups, hours of running.
        group = next(self._groups)
        if self.rng.random() < 0.5:
            src = f"10.{16 + self.index}.{group // 250 % 250}.{group % 250 + 1}"
            dst = f"10.{16 + self.index}.255.254"
        else:
            src = f"fd00:0:0:{self.index:x}:0:0:{group >> 16:x}:{group & 0xFFFF:x}"
            dst = f"fd00:0:0:{self.index:x}:1::1"
        flows = []
        for i in range(count):
            proto = self.rng.choice(("tcp", "udp"))
            flow: dict[str, Any] = dict(proto=proto, src=src, dst=dst, sport=1024 + i,
                                        dport=self.rng.choice(DPORTS), timeout=FLOW_TIMEOUT,
                                        zone=holding.zone)
            if proto == "tcp":
                flow["state"] = "ESTABLISHED"
            flows.append(flow)
        return flows

    @staticmethod
    def _key_of(flow: Mapping[str, Any]) -> FlowKey:
        return (int(flow["zone"]), address(flow["src"]), address(flow["dst"]),
                int(flow["sport"]), int(flow["dport"]), str(flow["proto"]))

    def _listed(self, holding: Holding) -> list[Entry]:
        entries = self.helper.list_entries(zone=holding.zone)
        got = [entry_key(e) for e in entries]
        self._expect(len(got) == len(set(got)), f"zone {holding.zone} listed a flow twice")
        self._expect(set(got) == holding.flows,
                     f"zone {holding.zone} ({holding.key}) holds {len(got)} flows, "
                     f"{len(holding.flows)} expected; unexpected "
                     f"{sorted(set(got) - holding.flows)[:3]}, missing "
                     f"{sorted(holding.flows - set(got))[:3]}")
        return entries

    # -- zone operations -------------------------------------------------

    def _op_allocate(self) -> None:
        key = f"a{self.index}-k{next(self._keys)}"
        try:
            zone = self.helper.allocate_zone(key)
        except exc.ZoneExhaustedError:
            self.ops["exhausted"] += 1
            time.sleep(0.01)  # let holders release rather than spin on the store
            return
        self.intervals.append([key, zone, time.monotonic(), None])
        self.held[key] = Holding(key, zone, len(self.intervals) - 1)
        self._expect(self.helper.allocate_zone(key) == zone, f"{key} changed zone")
        # The previous owner flushed before releasing: the zone must be empty.
        self._expect(self.helper.count(zone=zone) == 0, f"fresh zone {zone} is not empty")

    def _op_release(self) -> None:
        holding = self._pick()
        self._settle()
        self.intervals[holding.interval][3] = time.monotonic()
        zone = self.helper.release_zone(holding.key, flush=True)
        del self.held[holding.key]
        self._expect(zone == holding.zone, f"released {zone}, held {holding.zone}")
        self._expect(self.helper.get_zone(holding.key) is None, f"{holding.key} kept a zone")

    # -- creating --------------------------------------------------------

    def _op_create(self) -> None:
        holding = self._pick()
        flow = self._new_flows(holding, 1)[0]
        self.helper.create_entry(**flow)
        holding.flows.add(self._key_of(flow))

    def _op_create_batch(self) -> None:
        holding = self._pick()
        flows = self._new_flows(holding, self.rng.randint(10, 120))
        self._expect(self.helper.create_entries(flows) == len(flows), "batch count differs")
        holding.flows.update(self._key_of(f) for f in flows)

    # -- reading ---------------------------------------------------------

    def _op_list(self) -> None:
        holding = self._pick()
        self._settle()
        self._listed(holding)

    def _op_count(self) -> None:
        holding = self._pick()
        self._settle()
        family = self.rng.choice((None, "ipv4", "ipv6"))
        if family is None:
            got, want = self.helper.count(zone=holding.zone), len(holding.flows)
        else:
            got = self.helper.count(zone=holding.zone, family=family)
            want = sum(1 for f in holding.flows if is_ipv6(f) == (family == "ipv6"))
        self._expect(got == want, f"count zone {holding.zone} {family}: {got} != {want}")

    # -- deleting now ----------------------------------------------------

    def _filter(self, holding: Holding) -> tuple[dict[str, Any], Callable[[FlowKey], bool]]:
        """Return a random deletion filter for ``holding`` and its model predicate."""
        zone = holding.zone
        sample = self.rng.choice(sorted(holding.flows))
        kind = self.rng.randrange(4)
        if kind == 0:
            return ({"zone": zone, "proto": sample[5]}, lambda f: f[5] == sample[5])
        if kind == 1:
            return ({"zone": zone, "proto": sample[5], "dport": sample[4]},
                    lambda f: f[5] == sample[5] and f[4] == sample[4])
        if kind == 2:
            family = "ipv6" if is_ipv6(sample) else "ipv4"
            return ({"zone": zone, "family": family}, lambda f: is_ipv6(f) == is_ipv6(sample))
        return ({"zone": zone, "src": sample[1]}, lambda f: f[1] == sample[1])

    def _op_delete_filtered(self) -> None:
        holding = self._pick(with_flows=True)
        self._settle()
        filters, matches = self._filter(holding)
        doomed = {f for f in holding.flows if matches(f)}
        deleted = self.helper.delete_entries(**filters)
        self._expect(deleted == len(doomed), f"delete {filters}: {deleted} != {len(doomed)}")
        holding.flows -= doomed

    def _op_delete_exact(self) -> None:
        holding = self._pick(with_flows=True)
        self._settle()
        entries = self._listed(holding)
        chosen = self.rng.sample(entries, self.rng.randint(1, min(20, len(entries))))
        deleted = self.helper.delete_flows(chosen)
        self._expect(deleted == len(chosen), f"exact delete: {deleted} != {len(chosen)}")
        holding.flows -= {entry_key(e) for e in chosen}

    def _op_delete_many(self) -> None:
        holding = self._pick(with_flows=True)
        self._settle()
        requests, doomed = [], set()
        for _ in range(self.rng.randint(2, 4)):
            filters, matches = self._filter(holding)
            requests.append(filters)
            doomed |= {f for f in holding.flows if matches(f)}
        report = self.helper.delete_many(requests)
        self._expect(report.deleted == len(doomed),
                     f"delete_many {requests}: {report.deleted} != {len(doomed)}")
        holding.flows -= doomed

    # -- deleting through the queue --------------------------------------

    def _op_queue_filtered(self) -> None:
        # A source address names one creation group, which never grows, so
        # the request cannot catch flows created after it was queued.
        holding = self._pick(with_flows=True)
        sample = self.rng.choice(sorted(holding.flows))
        filters: dict[str, Any] = {"zone": holding.zone, "src": sample[1]}
        if self.rng.random() < 0.5:
            filters["proto"] = sample[5]
        doomed = {f for f in holding.flows
                  if f[1] == sample[1] and f[5] == filters.get("proto", f[5])}
        self._expect(self.queue.delete_entries(**filters) == 1, "queue refused a request")
        holding.flows -= doomed

    def _op_queue_exact(self) -> None:
        holding = self._pick(with_flows=True)
        self._settle()
        entries = self._listed(holding)
        chosen = self.rng.sample(entries, self.rng.randint(1, min(20, len(entries))))
        self._expect(self.queue.delete_flows(chosen) == len(chosen), "queue lost entries")
        holding.flows -= {entry_key(e) for e in chosen}


class ErrorLog:
    """Collect the errors a deletion queue reports from its worker thread."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, error: BaseException, requests: list[Any]) -> None:
        """Record ``error`` with the requests it hit."""
        text = "".join(traceback.format_exception(error))
        self.errors.append(f"{text}requests: {requests[:5]!r}")


def drain(queue: DeletionQueue, timeout: float) -> dict[str, Any]:
    """Flush and stop ``queue``; return whether it drained and its counters."""
    flushed = queue.wait(timeout=timeout)
    stats = queue.stats()
    queue.stop(drain=True, timeout=timeout)
    return {"flushed": flushed, "stats": stats}


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("namespace")
    parser.add_argument("store")
    parser.add_argument("index", type=int)
    parser.add_argument("seed", type=int)
    parser.add_argument("start_at", type=float, help="time.monotonic() to start at")
    parser.add_argument("duration", type=float)
    parser.add_argument("log")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """Run one actor in this process and write its JSON report; 0 if it succeeded."""
    args = _parse_args(argv)
    helper = ConntrackHelper(namespace=args.namespace, executor=ProcessExecutor(),
                             zone_range=ZONE_RANGE, zone_store=SQLiteZoneStore(args.store))
    errors = ErrorLog()
    queue = DeletionQueue(helper, on_error=errors)
    report: dict[str, Any] = {"index": args.index, "error": None}
    try:
        # Recover while the table is still empty, as the threads do.
        helper.recover()
        queue.start()
        report["late"] = time.monotonic() > args.start_at
        time.sleep(max(0.0, args.start_at - time.monotonic()))
        actor = Actor(args.index, helper, queue, args.seed, args.start_at + args.duration)
        actor.run()
        report.update(actor.report())
    except BaseException:  # written to the report for the test to show
        report["error"] = traceback.format_exc()
    finally:
        report["queue"] = drain(queue, SETTLE_TIMEOUT)
        report["queue_errors"] = errors.errors
        with open(args.log, "w", encoding="utf-8") as handle:
            json.dump(report, handle)
    return 0 if report["error"] is None and not errors.errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
