"""Unit tests of conntrack_lib.worker.DeletionQueue under plain threads.

The queue runs against a real ConntrackHelper whose executor records the
commands it is given; a gate lets a test hold the worker inside a command.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import netaddr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conntrack_lib import commands
from conntrack_lib import exceptions as exc
from conntrack_lib.executor import Result
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Entry, FlowTuple
from conntrack_lib.planner import CostModel
from conntrack_lib.worker import DeletionQueue, QueueClosedError, QueueFullError

WAIT = 5.0  # generous upper bound for anything that should happen at once


class RecordingExecutor:
    """Record every command; optionally hold inside one or fail some."""

    def __init__(self, fail: Callable[[Any], bool] | None = None,
                 deleted_per_line: int = 1) -> None:
        self.commands: list[Any] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = fail
        self.deleted_per_line = deleted_per_line

    def execute(self, command: Any, *, namespace: str | None = None,
                timeout: float | None = None) -> Result:
        self.commands.append(command)
        self.entered.set()
        assert self.gate.wait(WAIT), "test never opened the gate"
        if self.fail is not None and self.fail(command):
            raise exc.CommandError(("conntrack", *command.argv()), 1, "",
                                   "conntrack v1.4.7 (conntrack-tools): Operation failed\n")
        lines = len(command) if command.kind == "batch" else 1
        stdout = "".join("deleted line\n" for _ in range(lines * self.deleted_per_line))
        count = None if command.kind == "batch" else self.deleted_per_line
        return Result(0, stdout, "", count, ("conntrack", *command.argv()))

    def iter_lines(self, command: Any, *, namespace: str | None = None,
                   timeout: float | None = None) -> Iterator[str]:
        return iter(())

    def lines(self) -> list[tuple[str, ...]]:
        """Return the argv of every deletion run, batch lines flattened."""
        out: list[tuple[str, ...]] = []
        for command in self.commands:
            inner = list(command) if command.kind == "batch" else [command]
            out.extend(c.argv() for c in inner)
        return out


class NetlinkExecutor(RecordingExecutor):
    """Also offer exact deletes, as an executor with netlink does."""

    def __init__(self) -> None:
        super().__init__()
        self.flow_calls: list[list[Entry]] = []

    def delete_flows(self, flows: Sequence[Entry], *,
                     namespace: str | None = None) -> list[int]:
        self.flow_calls.append(list(flows))
        return [0] * len(flows)


#: A cost model under which every plan is conntrack -D lines: these tests
#: watch the queue, not the planner's choice of strategy.
CLI_ONLY = CostModel(dump_parse=1.0)


def make_queue(executor: Any, **kwargs: Any) -> DeletionQueue:
    kwargs.setdefault("linger", 0.0)
    return DeletionQueue(ConntrackHelper(executor=executor, cost_model=CLI_ONLY), **kwargs)


@pytest.fixture
def executor() -> RecordingExecutor:
    return RecordingExecutor()


@pytest.fixture
def queues() -> Iterator[list[DeletionQueue]]:
    made: list[DeletionQueue] = []
    yield made
    for queue in made:
        queue.stop(drain=False, timeout=WAIT)


def entry(src: str, dst: str, sport: int, zone: int = 0) -> Entry:
    original = FlowTuple(netaddr.IPAddress(src), netaddr.IPAddress(dst), sport, 80)
    return Entry(family="ipv4", proto="tcp", protonum=6, original=original,
                 reply=original.inverted(), state="ESTABLISHED", zone=zone)


def argv_of(**filters: Any) -> tuple[str, ...]:
    return commands.DeleteCommand(**filters).argv()


# -- coalescing and batching -------------------------------------------------

def test_identical_requests_run_once(executor: RecordingExecutor,
                                     queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor)
    queues.append(queue)
    for _ in range(500):
        queue.delete_by_remote_ips(5, ["10.0.0.1"])
    queue.start()
    assert queue.wait(WAIT)
    assert sorted(executor.lines()) == sorted([
        argv_of(family="ipv4", zone=5, src="10.0.0.1"),
        argv_of(family="ipv4", zone=5, dst="10.0.0.1")])
    stats = queue.stats()
    assert stats["enqueued"] == 1000
    assert stats["coalesced"] == 998
    assert stats["batches"] == 1
    assert stats["processes"] == 1
    assert len(executor.commands) == 1
    assert stats["deleted"] == 2
    assert stats["pending"] == 0


def test_zone_wide_request_covers_narrower_ones(executor: RecordingExecutor,
                                                queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor)
    queues.append(queue)
    queue.delete_entries(zone=7, src="10.0.0.1")
    queue.delete_entries(zone=7)
    queue.delete_entries(zone=7, dst="10.0.0.0/24", proto="tcp")
    queue.delete_entries(zone=8, dst="10.0.0.2")
    queue.start()
    assert queue.wait(WAIT)
    assert sorted(executor.lines()) == sorted([argv_of(zone=7),
                                               argv_of(zone=8, dst="10.0.0.2")])
    assert queue.stats()["coalesced"] == 2


def test_batches_hold_at_most_batch_max(executor: RecordingExecutor,
                                        queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor, batch_max=10)
    queues.append(queue)
    for i in range(25):
        queue.delete_entries(zone=100 + i)
    queue.start()
    assert queue.wait(WAIT)
    sizes = [len(c) if c.kind == "batch" else 1 for c in executor.commands]
    assert sizes == [10, 10, 5]
    assert queue.stats()["batches"] == 3
    assert queue.stats()["processes"] == 3


def test_duplicates_ride_along_beyond_batch_max(executor: RecordingExecutor,
                                                queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor, batch_max=2)
    queues.append(queue)
    for zone in (1, 2, 1, 2, 1, 2, 2, 3, 1):
        queue.delete_entries(zone=zone)
    queue.start()
    assert queue.wait(WAIT)
    sizes = [len(c) if c.kind == "batch" else 1 for c in executor.commands]
    assert sizes == [2, 2]  # {1, 2} with its five duplicates, then {3, 1}
    lines = executor.lines()
    assert set(lines[:2]) == {argv_of(zone=1), argv_of(zone=2)}
    assert set(lines[2:]) == {argv_of(zone=3), argv_of(zone=1)}
    assert queue.stats()["coalesced"] == 5


def test_a_call_larger_than_a_batch_stays_whole(executor: RecordingExecutor,
                                                queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor, batch_max=3)
    queues.append(queue)
    ips = [f"10.0.1.{i}" for i in range(1, 6)]
    assert queue.delete_by_remote_ips(9, ips) == 10
    queue.start()
    assert queue.wait(WAIT)
    assert queue.stats()["batches"] == 1
    assert len(executor.lines()) == 10


def test_linger_gathers_requests_into_one_batch(executor: RecordingExecutor,
                                                queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor, linger=0.5)
    queues.append(queue)
    queue.start()
    queue.delete_entries(zone=1)
    time.sleep(0.05)
    queue.delete_entries(zone=2)
    assert queue.wait(WAIT)
    assert queue.stats()["batches"] == 1
    assert len(executor.commands) == 1


def test_batches_run_in_enqueue_order(executor: RecordingExecutor,
                                      queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor, batch_max=1)
    queues.append(queue)
    zones = [30, 10, 20, 5, 40]
    for zone in zones:
        queue.delete_entries(zone=zone)
    queue.start()
    assert queue.wait(WAIT)
    assert executor.lines() == [argv_of(zone=z) for z in zones]


def test_exact_entries_go_in_one_call() -> None:
    executor = NetlinkExecutor()
    queue = make_queue(executor)
    flows = [entry("10.0.0.1", "10.0.0.2", 1000 + i, zone=3) for i in range(50)]
    queue.delete_flows(flows[:30])
    queue.delete_flows(flows[20:])
    queue.start()
    try:
        assert queue.wait(WAIT)
    finally:
        queue.stop(timeout=WAIT)
    assert len(executor.flow_calls) == 1
    assert sorted(executor.flow_calls[0], key=lambda e: e.original.sport) == flows
    stats = queue.stats()
    assert stats["enqueued"] == 60
    assert stats["coalesced"] == 10
    assert stats["deleted"] == 50
    assert executor.commands == []


# -- validation ---------------------------------------------------------------

@pytest.mark.parametrize("filters", [{"bogus": 1}, {"src": "not-an-ip"}, {"zone": 70000},
                                     {"sport": 80}])
def test_invalid_filters_raise_at_enqueue(executor: RecordingExecutor,
                                          filters: dict[str, Any]) -> None:
    queue = make_queue(executor)
    with pytest.raises(exc.InvalidArgumentError):
        queue.delete_entries(**filters)
    assert queue.stats()["enqueued"] == 0
    assert queue.pending() == 0


def test_remembered_validation_still_tells_types_apart(executor: RecordingExecutor) -> None:
    queue = make_queue(executor)
    queue.delete_entries(zone=1)
    queue.delete_entries(zone=1)
    for lookalike in (True, "1", 1.0):
        with pytest.raises(exc.InvalidArgumentError):
            queue.delete_entries(zone=lookalike)
    assert queue.stats()["enqueued"] == 2


def test_invalid_entries_and_rules_raise_at_enqueue(executor: RecordingExecutor) -> None:
    queue = make_queue(executor)
    with pytest.raises(exc.InvalidArgumentError):
        queue.delete_flows([entry("10.0.0.1", "10.0.0.2", 1), "10.0.0.3"])  # type: ignore[list-item]
    with pytest.raises(exc.InvalidArgumentError):
        queue.delete_by_remote_ips(5, ["10.0.0.300"])
    with pytest.raises(exc.InvalidArgumentError):
        queue.delete_by_rule(5, "sideways", "IPv4", "tcp", 22, 22, None, ["10.0.0.1"])
    with pytest.raises(exc.InvalidArgumentError):
        queue.delete_by_remote_ips(70000, ["10.0.0.1"])
    assert queue.pending() == 0


def test_delete_rule_expands_like_the_helper(executor: RecordingExecutor,
                                             queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor)
    queues.append(queue)
    assert queue.delete_by_rule(4, "ingress", "IPv4", "tcp", 22, 23, None,
                             ["10.0.0.5", "fd00::5"]) == 2
    queue.start()
    assert queue.wait(WAIT)
    assert sorted(executor.lines()) == sorted([
        argv_of(family="ipv4", zone=4, proto="tcp", dst="10.0.0.5", dport=22),
        argv_of(family="ipv4", zone=4, proto="tcp", dst="10.0.0.5", dport=23)])


@pytest.mark.parametrize("kwargs", [{"maxsize": 0}, {"batch_max": -1}, {"linger": -0.5},
                                    {"maxsize": True}])
def test_bad_settings_are_refused(executor: RecordingExecutor, kwargs: dict[str, Any]) -> None:
    with pytest.raises(exc.InvalidArgumentError):
        make_queue(executor, **kwargs)


# -- backpressure -------------------------------------------------------------

def test_full_queue_raises_when_not_blocking(executor: RecordingExecutor) -> None:
    queue = make_queue(executor, maxsize=3, block=False)
    for zone in (1, 2, 3):
        queue.delete_entries(zone=zone)
    with pytest.raises(QueueFullError) as caught:
        queue.delete_entries(zone=4)
    assert caught.value.maxsize == 3
    assert caught.value.pending == 3
    assert queue.stats()["enqueued"] == 3


def test_full_queue_blocks_then_times_out(executor: RecordingExecutor) -> None:
    queue = make_queue(executor, maxsize=2, block=False)
    queue.delete_entries(zone=1)
    queue.delete_entries(zone=2)
    started = time.monotonic()
    with pytest.raises(QueueFullError) as caught:
        queue.delete_entries(zone=3, block=True, timeout=0.2)
    assert time.monotonic() - started >= 0.19
    assert caught.value.timeout == 0.2


def test_per_call_block_false_overrides_a_blocking_queue(executor: RecordingExecutor) -> None:
    queue = make_queue(executor, maxsize=1)
    queue.delete_entries(zone=1)
    started = time.monotonic()
    with pytest.raises(QueueFullError):
        queue.delete_entries(zone=2, block=False)
    assert time.monotonic() - started < 1.0


def test_blocked_producer_resumes_when_the_worker_takes_a_batch(
        executor: RecordingExecutor, queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor, maxsize=2)
    queues.append(queue)
    queue.delete_entries(zone=1)
    queue.delete_entries(zone=2)
    done = threading.Event()

    def produce() -> None:
        queue.delete_entries(zone=3)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert not done.wait(0.2)  # blocked: the queue is full and nothing drains it
    queue.start()
    assert done.wait(WAIT)
    producer.join(WAIT)
    assert queue.wait(WAIT)
    assert sorted(executor.lines()) == sorted(argv_of(zone=z) for z in (1, 2, 3))


def test_queue_full_error_rebuilds_from_args() -> None:
    error = QueueFullError(10, 10, 0.5)
    rebuilt = type(error)(*error.args)
    assert (rebuilt.maxsize, rebuilt.pending, rebuilt.timeout) == (10, 10, 0.5)
    assert str(rebuilt) == str(error)
    unpickled = pickle.loads(pickle.dumps(error))
    assert isinstance(unpickled, exc.ConntrackError)
    assert unpickled.args == error.args
    closed = QueueClosedError("gone")
    assert str(type(closed)(*closed.args)) == "gone"


# -- flush, stop, wait_for ---------------------------------------------------

def test_flush_times_out_while_work_is_held(executor: RecordingExecutor,
                                            queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor)
    queues.append(queue)
    executor.gate.clear()
    queue.delete_entries(zone=1)
    queue.start()
    assert executor.entered.wait(WAIT)
    assert queue.wait(timeout=0.1) is False
    assert queue.pending() == 1
    executor.gate.set()
    assert queue.wait(WAIT) is True
    assert queue.pending() == 0


def test_stop_with_drain_runs_everything(executor: RecordingExecutor) -> None:
    queue = make_queue(executor, batch_max=2)
    for zone in range(1, 6):
        queue.delete_entries(zone=zone)
    queue.start()
    assert queue.stop(drain=True, timeout=WAIT) == 0
    assert not queue.running
    assert sorted(executor.lines()) == sorted(argv_of(zone=z) for z in range(1, 6))
    with pytest.raises(QueueClosedError):
        queue.delete_entries(zone=9)
    with pytest.raises(QueueClosedError):
        queue.start()


def test_stop_with_drain_runs_work_of_a_queue_never_started(
        executor: RecordingExecutor) -> None:
    queue = make_queue(executor)
    queue.delete_entries(zone=8)
    assert queue.stop(drain=True, timeout=WAIT) == 0
    assert executor.lines() == [argv_of(zone=8)]
    assert queue.wait(timeout=0) is True
    assert not queue.running


def test_stop_without_drain_drops_pending(executor: RecordingExecutor) -> None:
    queue = make_queue(executor, batch_max=1)
    executor.gate.clear()
    queue.delete_entries(zone=1)
    queue.start()
    assert executor.entered.wait(WAIT)
    for zone in range(2, 7):
        queue.delete_entries(zone=zone)
    assert queue.stop(drain=False, timeout=0.1) == 5
    assert queue.running  # the running batch is not interrupted
    assert queue.wait_for("10.9.9.9", timeout=0.1) is False  # zone 1 still runs
    executor.gate.set()
    assert queue.wait(WAIT)
    queue.stop(timeout=WAIT)
    assert not queue.running
    assert executor.lines() == [argv_of(zone=1)]
    assert queue.stats()["dropped"] == 5


def test_stop_wakes_blocked_producers(executor: RecordingExecutor) -> None:
    queue = make_queue(executor, maxsize=1)
    queue.delete_entries(zone=1)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            queue.delete_entries(zone=2)
        except QueueClosedError as err:
            errors.append(err)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.1)
    assert queue.stop(drain=False) == 1
    producer.join(WAIT)
    assert not producer.is_alive()
    assert len(errors) == 1


def test_wait_for_tracks_addresses_and_containment(executor: RecordingExecutor,
                                                   queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor, batch_max=1)
    queues.append(queue)
    executor.gate.clear()
    queue.delete_entries(src="10.0.0.1")             # running, held at the gate
    queue.delete_entries(dst="10.0.1.0/24")          # pending
    queue.delete_entries(reply_dst="10.0.3.3")       # pending
    queue.delete_entries(family="ipv6", zone=3)      # no address: every IPv6 address
    queue.delete_flows([entry("192.0.2.1", "192.0.2.2", 5555)])
    queue.start()
    assert executor.entered.wait(WAIT)
    for busy in ("10.0.0.1", "10.0.1.7", "10.0.0.0/8", "10.0.3.3", "fd00::1", "192.0.2.2"):
        assert queue.wait_for(busy, timeout=0.05) is False, busy
    for idle in ("10.0.0.2", "10.0.2.1", "198.51.100.1"):
        assert queue.wait_for(idle, timeout=0) is True, idle
    executor.gate.set()
    assert queue.wait_for("10.0.1.7", timeout=WAIT) is True
    assert queue.wait_for("fd00::1", timeout=WAIT) is True
    with pytest.raises(exc.InvalidArgumentError):
        queue.wait_for("not an address")


def test_wait_for_returns_when_its_deletion_is_done_despite_later_work(
        executor: RecordingExecutor, queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor, batch_max=1)
    queues.append(queue)
    queue.delete_entries(src="10.0.0.1")
    queue.start()
    assert queue.wait_for("10.0.0.1", timeout=WAIT)
    assert executor.lines()[0] == argv_of(src="10.0.0.1")


# -- failures ----------------------------------------------------------------

def _mentions(address: str) -> Callable[[Any], bool]:
    def check(command: Any) -> bool:
        text = command.stdin() if command.kind == "batch" else " ".join(command.argv())
        return address in text
    return check


def test_failures_are_isolated_logged_counted_delivered_and_survived(
        caplog: pytest.LogCaptureFixture, queues: list[DeletionQueue]) -> None:
    executor = RecordingExecutor(fail=_mentions("10.6.6.6"))
    seen: list[tuple[BaseException, list[Any]]] = []
    queue = make_queue(executor, on_error=lambda err, reqs: seen.append((err, reqs)))
    queues.append(queue)
    queue.delete_by_remote_ips(2, ["10.6.6.6"])
    queue.delete_entries(zone=4)
    caplog.set_level(logging.DEBUG, logger="conntrack_lib.worker_loop")
    queue.start()
    assert queue.wait(WAIT)
    # The batch failed as a whole, then each command ran alone.
    assert len(seen) == 2
    assert all(isinstance(err, exc.CommandError) and len(reqs) == 1 for err, reqs in seen)
    assert sorted(r.get("src") or r.get("dst") for _, reqs in seen for r in reqs) == [
        "10.6.6.6", "10.6.6.6"]
    stats = queue.stats()
    assert stats["failed"] == 2
    assert stats["deleted"] == 1  # zone 4 ran despite its batch failing
    assert stats["processes"] == 4  # the batch, then three alone
    assert argv_of(zone=4) in executor.lines()[-3:]
    # on_error gets the failures, so they are logged at DEBUG; the split of
    # the batch is a workaround the caller does not see: one WARNING.
    failed = [r for r in caplog.records if "deletion of" in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.DEBUG, logging.DEBUG]
    assert all("10.6.6.6" in r.getMessage() and "Operation failed" in r.getMessage()
               for r in failed)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "running them one by one" in warnings[0]
    queue.delete_entries(zone=5)
    assert queue.wait(WAIT)
    assert executor.lines()[-1] == argv_of(zone=5)


def test_systemic_failures_are_reported_whole(queues: list[DeletionQueue]) -> None:
    class GoneExecutor(RecordingExecutor):
        def execute(self, command: Any, *, namespace: str | None = None,
                    timeout: float | None = None) -> Result:
            self.commands.append(command)
            raise exc.NamespaceNotFoundError(("ip", "netns", "exec", "gone"), 1, "",
                                             "Cannot open network namespace")

    executor = GoneExecutor()
    seen: list[list[Any]] = []
    queue = make_queue(executor, on_error=lambda err, reqs: seen.append(reqs))
    queues.append(queue)
    for zone in (1, 2, 3, 1, 2):
        queue.delete_entries(zone=zone)
    queue.start()
    assert queue.wait(WAIT)
    assert len(executor.commands) == 1
    # The merged requests are reported, each once.
    assert [sorted(r["zone"] for r in reqs) for reqs in seen] == [[1, 2, 3]]
    stats = queue.stats()
    assert (stats["failed"], stats["coalesced"], stats["enqueued"]) == (3, 2, 5)


def test_failed_exact_deletes_report_the_distinct_flows(queues: list[DeletionQueue]) -> None:
    class BrokenNetlink(NetlinkExecutor):
        def delete_flows(self, flows: Sequence[Entry], *,
                         namespace: str | None = None) -> list[int]:
            raise exc.CommandError(("netlink", "delete"), 105, "", "No buffer space available")

    seen: list[list[Any]] = []
    queue = make_queue(BrokenNetlink(), on_error=lambda err, reqs: seen.append(reqs))
    queues.append(queue)
    flows = [entry("10.0.0.1", "10.0.0.2", 4000 + i) for i in range(3)]
    queue.delete_flows(flows)
    queue.delete_flows(flows[:1])
    queue.start()
    assert queue.wait(WAIT)
    assert seen == [flows]
    stats = queue.stats()
    assert (stats["failed"], stats["coalesced"], stats["deleted"]) == (3, 1, 0)
    assert queue.running


def test_a_raising_callback_does_not_kill_the_worker(queues: list[DeletionQueue]) -> None:
    executor = RecordingExecutor(fail=lambda command: command.get("zone") == 1)

    def explode(error: BaseException, requests: list[Any]) -> None:
        raise RuntimeError("callback bug")

    queue = make_queue(executor, batch_max=1, on_error=explode)
    queues.append(queue)
    queue.delete_entries(zone=1)
    queue.delete_entries(zone=2)
    queue.start()
    assert queue.wait(WAIT)
    assert queue.running
    assert queue.stats()["failed"] == 1
    assert executor.lines() == [argv_of(zone=1), argv_of(zone=2)]


def test_concurrent_producers_lose_nothing(executor: RecordingExecutor,
                                           queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor, maxsize=50, batch_max=40)
    queues.append(queue)
    queue.start()

    def produce(worker: int) -> None:
        for i in range(250):
            queue.delete_entries(zone=1 + (worker * 250 + i) % 300)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 4)
    assert queue.wait(WAIT)
    stats = queue.stats()
    assert stats["enqueued"] == 1000
    assert set(executor.lines()) == {argv_of(zone=z) for z in range(1, 301)}
    assert stats["coalesced"] + len(executor.lines()) == 1000


# -- against the in-memory conntrack -----------------------------------------

def test_queue_empties_the_matching_flows_of_a_fake_table(queues: list[DeletionQueue]) -> None:
    from conntrack_lib.testing import FakeConntrack

    fake = FakeConntrack()
    helper = ConntrackHelper(executor=fake)
    helper.create_entries(
        {"proto": "tcp", "src": f"10.1.0.{i % 10 + 1}", "dst": "10.2.0.1", "sport": 1000 + i,
         "dport": 80, "state": "ESTABLISHED", "timeout": 600, "zone": 1 + i % 4}
        for i in range(200))
    before = fake.entries()
    processes_before = fake.processes
    queue = DeletionQueue(helper, linger=0.0)
    queues.append(queue)
    for _ in range(100):
        queue.delete_by_remote_ips(2, ["10.1.0.2"])
        queue.delete_entries(zone=3)
    queue.start()
    assert queue.wait(WAIT)
    after = fake.entries()
    doomed = [e for e in before
              if e.zone == 3 or (e.zone == 2 and str(e.original.src) == "10.1.0.2")]
    assert len(doomed) == 60
    # Compare identities: the fake's clock is real time, so timeouts tick down.
    gone = {_flow_key(e) for e in doomed}
    assert {_flow_key(e) for e in after} == {_flow_key(e) for e in before} - gone
    assert len(after) == len(before) - 60
    assert fake.processes - processes_before == 1
    assert queue.stats()["deleted"] == 60


_IPS = ("10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2")


def _fake_helper() -> tuple[Any, ConntrackHelper]:
    from conntrack_lib.testing import FakeConntrack

    fake = FakeConntrack()
    helper = ConntrackHelper(executor=fake)
    helper.create_entries(
        {"proto": ("tcp", "udp")[i % 2], "src": _IPS[i % 2], "dst": _IPS[2 + i % 4 // 2],
         "sport": 1000 + i, "dport": 80, "timeout": 600, "zone": 1 + i % 3,
         **({"state": "ESTABLISHED"} if i % 2 == 0 else {})}
        for i in range(48))
    return fake, helper


_requests = st.lists(st.fixed_dictionaries(
    {"zone": st.integers(1, 3)},
    optional={"src": st.sampled_from((*_IPS, "10.1.0.0/24")), "dst": st.sampled_from(_IPS),
              "proto": st.sampled_from(("tcp", "udp")), "family": st.just("ipv4")}),
    min_size=1, max_size=25)


@given(requests=_requests, batch_max=st.integers(1, 6))
def test_queue_leaves_the_table_one_by_one_deletes_leave(requests: list[dict[str, Any]],
                                                         batch_max: int) -> None:
    sync_fake, sync_helper = _fake_helper()
    for request in requests:
        sync_helper.delete_entries(**request)
    queued_fake, queued_helper = _fake_helper()
    queue = DeletionQueue(queued_helper, batch_max=batch_max, linger=0.0)
    for request in requests:
        queue.delete_entries(**request)
    queue.start()
    try:
        assert queue.wait(WAIT)
    finally:
        queue.stop(timeout=WAIT)
    assert ({_flow_key(e) for e in queued_fake.entries()}
            == {_flow_key(e) for e in sync_fake.entries()})
    stats = queue.stats()
    assert stats["failed"] == 0
    assert stats["deleted"] == 48 - len(sync_fake.entries())


def test_flush_on_a_never_started_queue_starts_it(executor: RecordingExecutor,
                                                  queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor)
    queues.append(queue)
    queue.delete_entries(zone=5)
    assert not queue.running
    assert queue.wait(timeout=WAIT)
    assert executor.lines() == [("-D", "-w", "5")]


def test_wait_for_on_a_never_started_queue_starts_it(executor: RecordingExecutor,
                                                     queues: list[DeletionQueue]) -> None:
    queue = make_queue(executor)
    queues.append(queue)
    queue.delete_entries(zone=5, src="10.0.0.1")
    assert queue.wait_for("10.0.0.1", timeout=WAIT)
    assert queue.pending() == 0


def _flow_key(entry: Entry) -> tuple[str, int, object, int]:
    """Return what names a flow in the kernel: family, protocol, original tuple, zone."""
    return (entry.family, entry.protonum, entry.original, entry.zone)
