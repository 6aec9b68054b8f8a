"""Fault injection against the real conntrack, kernel and privsep daemon.

Each test breaks one thing (the binary, the namespace, the daemon, the
clock, the kernel's answers, the disk) and checks three things: the caller
gets a typed error or the documented recovery; nothing leaks (child
processes, zombies, namespaces, file descriptors, see
:mod:`tests.functional.leaks`); and no zone allocation or queued deletion
is lost.

Namespaces are named ``ctlt-fault-<pid>-<n>`` so the leak check can watch
exactly the ones this process makes.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import pathlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from oslo_config import cfg

from conntrack_lib import commands, executor, netlink_socket, opts, privileged
from conntrack_lib import exceptions as exc
from conntrack_lib import netns as lib_netns
from conntrack_lib.daemon import alive as daemon_alive
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.worker import DeletionQueue
from conntrack_lib.zones import FileZoneStore, ZoneAllocator
from tests.functional import leaks, netns
from tests.functional.test_executor import (
    MISSING_BINARY,
    daemon_pid,
    processes_in,
    stop_daemon,
    udp,
)
from tests.functional.test_netlink_delete import fill, make_flow

# FileZoneStore is deprecated; its disk faults stay covered until it goes.
pytestmark = [pytest.mark.functional,
              pytest.mark.filterwarnings("ignore:FileZoneStore is deprecated:DeprecationWarning")]

PREFIX = "ctlt-fault"
#: Only this process's namespaces: parallel runs use other pids.
WATCHED = f"{PREFIX}-{os.getpid()}-"
WAIT = 60.0
MOUNT = "/usr/bin/mount"
UMOUNT = "/usr/bin/umount"


# --------------------------------------------------------------------------
# Fixtures and small helpers
# --------------------------------------------------------------------------


class Watch:
    """A leak check: a snapshot now, compared with the state at the end."""

    def __init__(self) -> None:
        self.before = leaks.snapshot(WATCHED)

    def assert_clean(self, *, daemon: bool = False) -> None:
        """Fail unless nothing leaked; with ``daemon`` allow the live privsep daemon."""
        # A caught exception's traceback forms a cycle with the frames (and
        # the sockets they reference): what garbage collection frees is
        # not a leak.
        gc.collect()
        pids: set[int] = set()
        fds: set[int] = set()
        if daemon:
            pids.add(daemon_pid())
            fds.add(privileged.default.channel.writer.writesock.fileno())
        found = leaks.settle(self.before, WATCHED, allowed_pids=pids, allowed_fds=fds)
        assert found == [], "leaked: " + "; ".join(found)


@pytest.fixture
def fns() -> Iterator[str]:
    """Yield a fresh namespace with the watched prefix; remove it afterwards."""
    with netns.namespace(PREFIX) as name:
        yield name


@pytest.fixture
def daemon() -> Iterator[None]:
    """Run the test with no privsep daemon before or after it, started by fork."""
    opts.register_opts(cfg.CONF)
    stop_and_reap_daemon()
    try:
        yield
    finally:
        stop_and_reap_daemon()
        cfg.CONF.clear_override("conntrack_binary", group=opts.GROUP)


@pytest.fixture
def watch() -> Watch:
    """Return a leak check whose snapshot is taken now (after the other fixtures)."""
    return Watch()


def stop_and_reap_daemon() -> None:
    """Stop the privsep daemon and reap it if this process forked it.

    oslo.privsep never waits for a forked daemon, so a stopped one stays a
    zombie of this process: reaping it here keeps tests independent.
    """
    channel = privileged.default.channel
    pid = daemon_pid() if daemon_alive(channel) else None
    stop_daemon()
    if pid is not None:
        reap(pid)


def reap(pid: int, timeout: float = 10.0) -> None:
    """Wait for ``pid`` to exit and reap it if it is a child of this process."""
    deadline = time.monotonic() + timeout
    while leaks.process_state(pid) not in (None, leaks.ZOMBIE):
        assert time.monotonic() < deadline, f"process {pid} did not exit"
        time.sleep(0.01)
    if pid in leaks.child_processes():
        os.waitpid(pid, 0)


def private_conf(**overrides: Any) -> cfg.ConfigOpts:
    """Return a fresh oslo.config object with ``[conntrack_lib]`` overrides."""
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    for name, value in overrides.items():
        conf.set_override(name, value, group=opts.GROUP)
    return conf


def count(ns: str) -> int:
    """Return the number of flows in ``ns``, read with the real binary."""
    return int(netns.run(ns, ["-C"], check=True).stdout)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def no_conntrack_in(ns: str) -> bool:
    """Return whether no conntrack process runs in namespace ``ns``."""
    return "conntrack" not in processes_in(ns)


def flow(n: int, zone: int = 0) -> dict[str, Any]:
    """Return the create fields of UDP flow number ``n``."""
    return {"proto": "udp", "src": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
            "dst": "10.250.0.1", "sport": 1000, "dport": 53, "timeout": 600, "zone": zone}


# --------------------------------------------------------------------------
# 1. The conntrack binary is missing
# --------------------------------------------------------------------------


def test_missing_binary_through_a_process_executor(fns: str, watch: Watch) -> None:
    broken = executor.ProcessExecutor(conf=private_conf(conntrack_binary=MISSING_BINARY))
    for namespace in (fns, None):
        with pytest.raises(exc.ConntrackUnavailableError) as caught:
            broken.execute(commands.CountCommand(), namespace=namespace)
        assert caught.value.exit_code == lib_netns.EXIT_NOT_FOUND
        assert MISSING_BINARY in caught.value.stderr
    healthy = executor.ProcessExecutor(conf=private_conf())
    assert healthy.execute(commands.CountCommand(), namespace=fns).count == 0
    watch.assert_clean()


def test_missing_binary_through_the_privsep_daemon(fns: str, daemon: None,
                                                   watch: Watch) -> None:
    # The daemon reads the global configuration when it is forked.
    cfg.CONF.set_override("conntrack_binary", MISSING_BINARY, group=opts.GROUP)
    run = executor.PrivsepExecutor()
    with pytest.raises(exc.ConntrackUnavailableError) as caught:
        run.execute(commands.CountCommand(), namespace=fns)
    assert MISSING_BINARY in caught.value.stderr
    stop_and_reap_daemon()
    cfg.CONF.clear_override("conntrack_binary", group=opts.GROUP)
    assert run.execute(commands.CountCommand(), namespace=fns).count == 0
    stop_and_reap_daemon()
    watch.assert_clean()


# --------------------------------------------------------------------------
# 2. The namespace is deleted between two calls
# --------------------------------------------------------------------------


def test_namespace_deleted_between_calls(daemon: None, watch: Watch) -> None:
    name = netns.unique_name(PREFIX)
    netns.add(name)
    try:
        helper = ConntrackHelper(namespace=name, executor=executor.ProcessExecutor(),
                                 zone_range=(100, 199))
        zones = {"port-a": helper.allocate_zone("port-a"),
                 "port-b": helper.allocate_zone("port-b")}
        helper.create_entry(**flow(1, zone=zones["port-a"]))
        entries = helper.list_entries()
        assert len(entries) == 1
        netns.delete(name)

        calls: list[Callable[[], object]] = [
            helper.count,
            lambda: helper.create_entry(**flow(2)),
            lambda: helper.delete_flows(entries),
            lambda: helper.delete_entries(zone=zones["port-a"]),
            lambda: helper.release_zone("port-a", flush=True),
            lambda: executor.PrivsepExecutor().execute(commands.CountCommand(),
                                                       namespace=name),
        ]
        for call in calls:
            assert_namespace_error(call, name)
        # A failed flush keeps the zone; nothing was lost from the allocator.
        assert helper.zones() == zones
        assert not os.path.exists(f"/run/netns/{name}"), "a namespace must not be recreated"
    finally:
        netns.delete(name)
    stop_and_reap_daemon()
    watch.assert_clean()


def assert_namespace_error(call: Callable[[], object], name: str) -> None:
    """Assert that ``call`` raises NamespaceNotFoundError naming ``name``."""
    with pytest.raises(exc.NamespaceNotFoundError) as caught:
        call()
    err = caught.value
    assert name in " ".join(err.cmd) + err.stderr


# --------------------------------------------------------------------------
# 3. The privsep daemon is killed in the middle of a batch
# --------------------------------------------------------------------------

BATCH_FLOWS = 30_000


def test_daemon_killed_mid_batch(fns: str, daemon: None, watch: Watch,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest keeps every log record of a test, and a warning's arguments
    # include the OSError whose traceback holds the dead channel's socket:
    # silence the executor's log so that only the library can keep it open.
    monkeypatch.setattr(logging.getLogger("conntrack_lib.privsep_executor"), "disabled", True)
    run = executor.PrivsepExecutor()
    assert run.execute(commands.CountCommand(), namespace=fns).count == 0
    first = daemon_pid()
    # A release without -R has no batch: a long -E is the call the daemon dies in.
    batch: commands.Command = (
        commands.BatchCommand([udp(flow(n)["src"]) for n in range(BATCH_FLOWS)])
        if netns.has_load_file() else commands.EventsCommand(duration=60))
    outcome: dict[str, Any] = {}

    def create() -> None:
        try:
            outcome["result"] = run.execute(batch, namespace=fns)
        except exc.ConntrackError as err:
            outcome["error"] = err

    worker = threading.Thread(target=create)
    worker.start()
    # Kill while conntrack -R is running under the daemon: truly mid-batch.
    wait_until(lambda: not no_conntrack_in(fns) or not worker.is_alive(),
               "conntrack -R to start", timeout=WAIT)
    assert worker.is_alive(), "the batch finished before the daemon could be killed"
    os.kill(first, 9)
    worker.join(WAIT)
    assert not worker.is_alive()

    error = outcome.get("error")
    assert isinstance(error, exc.CommandError), outcome
    assert "privsep daemon died during the call" in error.stderr
    # A batch (or a capture) is not idempotent: it is reported, never re-sent.
    assert error.cmd == ("run_batch",) if batch.kind == "batch" else ("run_events",)
    # The error's traceback reaches the dead channel, whose socket
    # oslo.privsep leaves to the garbage collector: drop it as a caller would.
    outcome.clear()
    del error
    wait_until(lambda: no_conntrack_in(fns), "the orphaned conntrack to end")
    created = count(fns)
    assert 0 <= created <= BATCH_FLOWS

    # The next call starts a new daemon and works.
    assert run.execute(commands.CountCommand(), namespace=fns).count == created
    assert daemon_pid() != first
    state = leaks.process_state(first)
    try:
        assert state is None, f"the killed daemon {first} was left as a zombie (state {state})"
    finally:
        reap(first)
    watch.assert_clean(daemon=True)


def test_daemon_killed_mid_capture_leaves_no_conntrack_behind(fns: str, daemon: None,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    # conntrack -E never ends by itself: without PR_SET_PDEATHSIG it would
    # run as root for ever after the daemon died, pinning the namespace.
    monkeypatch.setattr(logging.getLogger("conntrack_lib.privsep_executor"), "disabled", True)
    run = executor.PrivsepExecutor()
    assert run.execute(commands.CountCommand(), namespace=fns).count == 0
    first = daemon_pid()
    outcome: dict[str, Any] = {}

    def capture() -> None:
        try:
            outcome["lines"] = list(run.iter_events(commands.EventsCommand(duration=60),
                                                    namespace=fns))
        except exc.ConntrackError as err:
            outcome["error"] = err

    worker = threading.Thread(target=capture)
    worker.start()
    wait_until(lambda: not no_conntrack_in(fns), "conntrack -E to start", timeout=WAIT)
    os.kill(first, 9)
    worker.join(WAIT)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), exc.CommandError), outcome
    outcome.clear()
    wait_until(lambda: no_conntrack_in(fns), "the capture's conntrack to die with the daemon",
               timeout=5)
    # The next call starts a new daemon and works.
    assert run.execute(commands.CountCommand(), namespace=fns).count == 0
    reap(first)


# --------------------------------------------------------------------------
# 4. A command runs past its timeout
# --------------------------------------------------------------------------

SLOW_LIST_FLOWS = 60_000


def test_list_past_its_timeout_is_killed(fns: str, watch: Watch) -> None:
    fill(fns, (make_flow("ipv4", 17, n, 0) for n in range(SLOW_LIST_FLOWS)))
    hasty = executor.ProcessExecutor(conf=private_conf(command_timeout=0.1))
    started = time.monotonic()
    with pytest.raises(exc.CommandTimeoutError) as caught:
        hasty.execute(commands.ListCommand(), namespace=fns)
    assert time.monotonic() - started < 5
    assert "killed after the 0.1 s timeout" in caught.value.stderr
    with pytest.raises(exc.CommandTimeoutError):
        sum(1 for _ in hasty.iter_lines(commands.ListCommand(), namespace=fns))
    assert no_conntrack_in(fns), "the timed-out child must be dead"
    healthy = executor.ProcessExecutor(conf=private_conf())
    assert healthy.execute(commands.CountCommand(), namespace=fns).count == SLOW_LIST_FLOWS
    watch.assert_clean()


def test_events_past_their_timeout_in_the_daemon(fns: str, daemon: None,
                                                 watch: Watch) -> None:
    run = executor.PrivsepExecutor()
    started = time.monotonic()
    with pytest.raises(exc.CommandTimeoutError) as caught:
        run.execute(commands.EventsCommand(duration=30), namespace=fns, timeout=1)
    assert time.monotonic() - started < 10
    assert "killed after the 1 s timeout" in caught.value.stderr
    wait_until(lambda: no_conntrack_in(fns), "the timed-out conntrack to die")
    assert run.execute(udp("10.9.0.1"), namespace=fns).count == 1
    assert run.execute(commands.CountCommand(), namespace=fns).count == 1
    watch.assert_clean(daemon=True)


# --------------------------------------------------------------------------
# 5. The kernel refuses entries
# --------------------------------------------------------------------------


def test_full_table_refuses_a_batch_create_with_a_typed_error(fns: str,
                                                              watch: Watch) -> None:
    # nf_conntrack_max is read-only inside a namespace, but the count it is
    # compared with is the namespace's own: filling this namespace up to the
    # limit makes its table full without touching the host's.  ASSURED
    # entries cannot be early-dropped, so the kernel has to refuse.
    limit = read_sysctl(fns, "net.netfilter.nf_conntrack_max")
    netns.seed(fns, [
        commands.CreateCommand(proto="udp", src=f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}",
                               dst="10.250.0.1", sport=1, dport=53, timeout=600,
                               status=["ASSURED"])
        for k in range(limit)])
    assert count(fns) == limit
    helper = ConntrackHelper(namespace=fns, executor=executor.ProcessExecutor(),
                             zone_range=(10, 20))
    zone = helper.allocate_zone("port-a")
    flows = [flow(n, zone) for n in range(500)]
    with pytest.raises(exc.CommandError) as caught:
        helper.create_entries(flows)
    assert "Operation failed: not enough memory" in caught.value.stderr
    assert caught.value.exit_code == 1
    assert count(fns) == limit
    # Recovery: once flows go, the same batch goes in; the zone was kept.
    assert helper.delete_entries(family="ipv4", src="10.0.0.0/16") == 65_536
    assert helper.create_entries(flows) == 500
    assert helper.get_zone("port-a") == zone
    assert helper.count(zone=zone) == 500
    watch.assert_clean()


def read_sysctl(ns: str, key: str) -> int:
    """Return the integer value of sysctl ``key`` as seen inside ``ns``."""
    done = subprocess.run([netns.IP, "netns", "exec", ns, "sysctl", "-n", key],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_kernel_refusal_mid_batch_stops_it_with_a_typed_error(fns: str,
                                                              watch: Watch) -> None:
    # The refusal this kernel lets us stage: a create the kernel rejects
    # (EEXIST) in the middle of a 500-line -R batch.
    helper = ConntrackHelper(namespace=fns, executor=executor.ProcessExecutor())
    flows = [flow(n) for n in range(500)]
    flows[250] = flows[0]
    with pytest.raises(exc.EntryExistsError) as caught:
        helper.create_entries(flows)
    assert "Operation failed: Such conntrack exists" in caught.value.stderr
    assert caught.value.exit_code == 1
    if netns.has_load_file():
        # conntrack -R aborts at the first refused line: the lines before it stay.
        assert count(fns) == 250
    else:
        # Without -R the batch goes by netlink create, where every flow is
        # tried (create_entries' documented difference): all but the duplicate.
        assert count(fns) == 499
    watch.assert_clean()


# --------------------------------------------------------------------------
# 6. ENOBUFS during a large exact delete
# --------------------------------------------------------------------------

EXACT_FLOWS = 50_000
#: What SO_RCVBUFFORCE is given; the kernel doubles it.  Far below one
#: window of acknowledgements, so the kernel must drop some.
TINY_RCVBUF = 4096


def test_enobufs_during_a_large_exact_delete(fns: str, watch: Watch,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # The recovery itself is tested on a raw socket in test_netlink_delete
    # (test_recovers_when_the_kernel_drops_acks); here it runs end to end
    # through the helper, with a leak check around it.
    fill(fns, (make_flow("ipv4", 17, n, 1 + n % 10) for n in range(EXACT_FLOWS)))
    helper = ConntrackHelper(namespace=fns, executor=executor.ProcessExecutor(),
                             exact_delete_backend="netlink")
    entries = helper.list_entries()
    assert len(entries) == EXACT_FLOWS

    grow = netlink_socket._grow_buffer
    overruns = []
    read_acks = netlink_socket.read_acks

    def tiny_receive_buffer(sock: socket.socket, force: int, option: int) -> None:
        if option == socket.SO_RCVBUF:
            sock.setsockopt(socket.SOL_SOCKET, force, TINY_RCVBUF)
        else:
            grow(sock, force, option)

    def counting_read_acks(sock: socket.socket, expected: int) -> list[Any]:
        acks = read_acks(sock, expected)
        if len(acks) < expected:
            overruns.append(expected - len(acks))
        return acks

    monkeypatch.setattr(netlink_socket, "_grow_buffer", tiny_receive_buffer)
    # A window sized as if acknowledgements were free overruns the buffer.
    monkeypatch.setattr(netlink_socket, "ACK_TRUESIZE", 1)
    monkeypatch.setattr(netlink_socket, "read_acks", counting_read_acks)
    deleted = helper.delete_flows(entries)

    assert overruns, "the kernel never dropped an acknowledgement: no ENOBUFS was staged"
    assert count(fns) == 0, "every flow must be gone after the recovery"
    # Flows whose acknowledgement was lost answer ENOENT when re-sent, so
    # they are not counted as deleted by this call.
    assert 0 < deleted <= EXACT_FLOWS
    watch.assert_clean()


# --------------------------------------------------------------------------
# 7. The zone store's disk is full or read-only
# --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a directory on a fresh 64 KiB tmpfs; unmount it afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run([MOUNT, "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                   check=True, capture_output=True)
    try:
        yield mount
    finally:
        subprocess.run([UMOUNT, str(mount)], check=True, capture_output=True)


def fill_disk(directory: pathlib.Path) -> None:
    """Write zeros into ``directory`` until its file system refuses."""
    with open(directory / "filler", "wb", buffering=0) as handle, \
            pytest.raises(OSError) as caught:
        while True:
            handle.write(b"\0" * 4096)
    assert caught.value.errno == errno.ENOSPC


def remount(directory: pathlib.Path, mode: str) -> None:
    """Remount the tmpfs at ``directory`` with ``mode`` (``ro`` or ``rw``)."""
    subprocess.run([MOUNT, "-o", f"remount,{mode}", str(directory)], check=True,
                   capture_output=True)


def test_full_disk_refuses_allocation_and_keeps_state(small_disk: pathlib.Path,
                                                      watch: Watch) -> None:
    path = small_disk / "zones.json"
    allocator = ZoneAllocator((4097, 4196), store=FileZoneStore(path))
    assert allocator.allocate("port-a") == 4097
    stored = path.read_bytes()
    fill_disk(small_disk)

    with pytest.raises(exc.ZoneStoreError) as caught:
        allocator.allocate("port-b")
    assert "No space left on device" in caught.value.reason
    with pytest.raises(exc.ZoneStoreError):
        allocator.release("port-a")
    assert allocator.items() == {"port-a": 4097}
    assert path.read_bytes() == stored
    assert ZoneAllocator((4097, 4196), store=FileZoneStore(path)).items() == {"port-a": 4097}
    assert sorted(p.name for p in small_disk.iterdir() if p.name.endswith(".tmp")) == []

    (small_disk / "filler").unlink()
    assert allocator.allocate("port-b") == 4098, "the failed allocation must not burn a zone"
    watch.assert_clean()


def test_read_only_disk_refuses_changes_and_keeps_state(small_disk: pathlib.Path,
                                                        tmp_path: pathlib.Path,
                                                        watch: Watch) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    path = small_disk / "zones.json"
    allocator = ZoneAllocator((10, 20), store=FileZoneStore(path, lock_path=str(locks)))
    assert allocator.allocate("router-1") == 10
    stored = path.read_bytes()
    remount(small_disk, "ro")
    try:
        for change in (lambda: allocator.allocate("router-2"),
                       lambda: allocator.release("router-1"),
                       lambda: allocator.hold([15])):
            with pytest.raises(exc.ZoneStoreError) as caught:
                change()
            assert "Read-only file system" in caught.value.reason
        assert allocator.items() == {"router-1": 10}
        assert allocator.held() == frozenset()
        assert path.read_bytes() == stored
    finally:
        remount(small_disk, "rw")
    assert allocator.allocate("router-2") == 11
    watch.assert_clean()


def test_read_only_disk_with_the_lock_beside_the_file(small_disk: pathlib.Path,
                                                      watch: Watch) -> None:
    # The default lock_path is the store's own directory: taking the lock
    # is then the first write that fails.
    path = small_disk / "zones.json"
    allocator = ZoneAllocator((10, 20), store=FileZoneStore(path))
    assert allocator.allocate("router-1") == 10
    remount(small_disk, "ro")
    try:
        with pytest.raises(exc.ZoneStoreError):
            allocator.allocate("router-2")
        assert allocator.items() == {"router-1": 10}
    finally:
        remount(small_disk, "rw")
    watch.assert_clean()


# --------------------------------------------------------------------------
# 8. The zone file is truncated
# --------------------------------------------------------------------------


def test_truncated_zone_file_is_refused_never_reset(tmp_path: pathlib.Path,
                                                    watch: Watch) -> None:
    path = tmp_path / "zones.json"
    allocator = ZoneAllocator((1, 50), store=FileZoneStore(path))
    for n in range(5):
        allocator.allocate(f"net-{n}")
    half = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(half)

    with pytest.raises(exc.ZoneStoreError) as caught:
        ConntrackHelper(executor=executor.ProcessExecutor(), zone_range=(1, 50),
                        zone_store=FileZoneStore(path))
    assert caught.value.path == str(path)
    for call in (lambda: allocator.allocate("net-9"), lambda: allocator.get("net-0"),
                 allocator.items):
        with pytest.raises(exc.ZoneStoreError):
            call()
    assert path.read_bytes() == half, "a damaged file is left for the operator"
    watch.assert_clean()


# --------------------------------------------------------------------------
# 9. The deletion queue survives failures
# --------------------------------------------------------------------------


def zone_flows(zones: range, per_zone: int) -> list[dict[str, Any]]:
    """Return ``per_zone`` distinct flows in each of ``zones``."""
    return [flow(n, zone=z) for z in zones for n in range(per_zone)]


def test_deletion_queue_survives_a_vanished_namespace(fns: str, watch: Watch) -> None:
    doomed_ns = netns.unique_name(PREFIX)
    netns.add(doomed_ns)
    errors: list[tuple[BaseException, list[Any]]] = []
    doomed = ConntrackHelper(namespace=doomed_ns, executor=executor.ProcessExecutor())
    healthy = ConntrackHelper(namespace=fns, executor=executor.ProcessExecutor())
    doomed_queue = DeletionQueue(doomed, linger=0.01,
                                 on_error=lambda e, r: errors.append((e, r)))
    healthy_queue = DeletionQueue(healthy, linger=0.01)
    try:
        doomed.create_entries(zone_flows(range(1, 4), 20))
        healthy.create_entries(zone_flows(range(1, 11), 20))
        exact = [e for e in doomed.list_entries() if e.zone == 3]
        doomed_queue.start()
        healthy_queue.start()

        doomed_queue.delete_entries(zone=1)
        assert doomed_queue.wait(WAIT)
        assert count(doomed_ns) == 40
        for zone in range(1, 6):
            healthy_queue.delete_entries(zone=zone)
        netns.delete(doomed_ns)  # vanishes while both queues work
        doomed_queue.delete_entries(zone=2)
        doomed_queue.delete_flows(exact)
        for zone in range(6, 11):
            healthy_queue.delete_entries(zone=zone)

        assert doomed_queue.wait(WAIT) and healthy_queue.wait(WAIT)
        assert doomed_queue.running and healthy_queue.running
        assert {type(e) for e, _ in errors} == {exc.NamespaceNotFoundError}
        failed = [r for _, requests in errors for r in requests]
        assert {"zone": 2} in failed and all(e in failed for e in exact)
        stats = doomed_queue.stats()
        assert stats["failed"] == 1 + len(exact)
        assert stats["enqueued"] == 2 + len(exact)
        assert stats["deleted"] == 20, "only zone 1, deleted before the namespace went"
        assert stats["pending"] == 0 and stats["dropped"] == 0
        # Not one deletion queued for the healthy namespace was lost.
        assert healthy_queue.stats()["failed"] == 0
        assert healthy_queue.stats()["deleted"] == 200
        assert count(fns) == 0

        # The namespace comes back: the same queue carries on with it.
        netns.add(doomed_ns)
        doomed.create_entries(zone_flows(range(7, 8), 10))
        doomed_queue.delete_entries(zone=7)
        assert doomed_queue.wait(WAIT)
        assert count(doomed_ns) == 0
        assert doomed_queue.stats()["failed"] == 1 + len(exact)
    finally:
        doomed_queue.stop(drain=False, timeout=WAIT)
        healthy_queue.stop(drain=False, timeout=WAIT)
        netns.delete(doomed_ns)
    assert not doomed_queue.running and not healthy_queue.running
    watch.assert_clean()


# --------------------------------------------------------------------------
# The leak check itself
# --------------------------------------------------------------------------


def test_leak_check_sees_children_zombies_namespaces_and_fds() -> None:
    before = leaks.snapshot(WATCHED)
    child = subprocess.Popen(["/bin/sleep", "30"])
    handle = open(os.devnull, "rb")  # noqa: SIM115 - left open on purpose
    name = netns.unique_name(PREFIX)
    netns.add(name)
    try:
        # Right after the exec the child still runs (state R), longer on a
        # loaded machine; once in its 30 s sleep it stays in S, so the
        # snapshot below sees one known state.
        wait_until(lambda: leaks.process_state(child.pid) == "S", "the child asleep")
        found = leaks.leaks(before, leaks.snapshot(WATCHED))
        assert f"child process {child.pid} (state S) appeared" in found
        assert f"namespace {name} was left behind" in found
        assert f"fd {handle.fileno()} -> /dev/null stayed open" in found
        assert leaks.leaks(before, leaks.snapshot(WATCHED), allowed_pids={child.pid},
                           allowed_fds={handle.fileno()}) == [
            f"namespace {name} was left behind"]
        child.kill()
        wait_until(lambda: leaks.process_state(child.pid) == leaks.ZOMBIE, "a zombie")
        assert child.pid in leaks.snapshot(WATCHED).zombies()
    finally:
        handle.close()
        child.wait()
        netns.delete(name)
    assert leaks.settle(before, WATCHED) == []
