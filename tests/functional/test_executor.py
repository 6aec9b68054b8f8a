"""Functional tests of the executors against the real conntrack and kernel.

Every executor runs the same operations inside throwaway namespaces:
``ProcessExecutor``, ``PrivsepExecutor`` with a daemon started by fork, and
``PrivsepExecutor`` with a real ``privsep-helper`` process started through
``helper_command`` (the production path).
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from oslo_config import cfg

import conntrack_lib
from conntrack_lib import commands, daemon, executor, opts, privileged
from conntrack_lib import exceptions as exc
from tests.functional import netns

ROOT = pathlib.Path(conntrack_lib.__file__).resolve().parents[1]
# The helper next to this interpreter: a venv's bin directory is not on
# sudo's secure_path, so production configs name it absolutely as well.
PRIVSEP_HELPER = os.path.join(os.path.dirname(sys.executable), "privsep-helper")
MISSING_BINARY = "/nonexistent/sbin/conntrack"


def udp(src: str, sport: int = 1000, **extra: Any) -> commands.CreateCommand:
    """Return a create command for one UDP flow from ``src``."""
    return commands.CreateCommand(proto="udp", src=src, dst="10.250.0.1", sport=sport,
                                  dport=53, timeout=600, **extra)


class Setup:
    """One way of running commands, plus the means to repoint its binary."""

    def __init__(self, kind: str, tmp_path: pathlib.Path) -> None:
        self.kind = kind
        self.config = tmp_path / "conntrack_lib.conf"
        self.executor: Any = None
        self.use_binary(conntrack_binary())

    def use_binary(self, binary: str) -> None:
        """Point the executor (and its daemon's configuration) at ``binary``."""
        if self.kind == "process":
            self.executor = executor.ProcessExecutor(binary=binary)
            return
        stop_daemon()
        if self.kind == "fork":
            cfg.CONF.set_override("conntrack_binary", binary, group=opts.GROUP)
        else:
            self.config.write_text(f"[{opts.GROUP}]\nconntrack_binary = {binary}\n")
        self.executor = executor.PrivsepExecutor()


def conntrack_binary() -> str:
    return netns.CONNTRACK


def stop_daemon() -> None:
    daemon.stop(privileged.default)


def daemon_pid() -> int:
    """Return the pid of the running privsep daemon of our context."""
    channel = privileged.default.channel
    assert channel is not None and channel.running
    sockname = channel.writer.writesock.getsockname()
    me = pathlib.Path("/proc/self/cmdline").read_bytes()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if sockname:  # helper: the daemon was told our socket's path
            if sockname.encode() in cmdline.split(b"\0"):
                return int(entry.name)
        elif f"PPid:\t{os.getpid()}\n" in status and cmdline == me:  # fork: our child
            return int(entry.name)
    raise AssertionError("privsep daemon not found")


def gone(pid: int) -> bool:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def kill_daemon() -> int:
    """SIGKILL the daemon and wait until it is dead; return its pid."""
    pid = daemon_pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not gone(pid):
        assert time.monotonic() < deadline, "daemon survived SIGKILL"
        time.sleep(0.01)
    if f"PPid:\t{os.getpid()}\n" in _status(pid):
        os.waitpid(pid, 0)  # reap our forked child
    # The thread-group leader turns zombie before the last thread has closed
    # the socket: wait until the client sees the loss, as it would between
    # two calls (a death during a call is covered by the unit tests).
    while daemon.alive(privileged.default.channel):
        assert time.monotonic() < deadline, "client did not notice the daemon's death"
        time.sleep(0.01)
    return pid


def _status(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return ""


def processes_in(ns: str) -> list[str]:
    """Return the command names of processes living in namespace ``ns``."""
    inode = os.stat(f"/run/netns/{ns}").st_ino
    names = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.stat(entry / "ns" / "net").st_ino == inode:
                names.append((entry / "comm").read_text().strip())
        except OSError:
            continue
    return names


@pytest.fixture(params=["process", "fork", "helper"])
def setup(request: pytest.FixtureRequest, tmp_path: pathlib.Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """Yield each way of running commands in turn."""
    yield from _configure(request.param, tmp_path, monkeypatch)


@pytest.fixture(params=["fork", "helper"])
def daemon_setup(request: pytest.FixtureRequest, tmp_path: pathlib.Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """Yield each way of starting the privsep daemon in turn."""
    yield from _configure(request.param, tmp_path, monkeypatch)


def _configure(kind: str, tmp_path: pathlib.Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    opts.register_opts(cfg.CONF)
    stop_daemon()
    if kind == "helper":
        # privsep-helper is a fresh interpreter: it must find conntrack_lib.
        monkeypatch.setenv("PYTHONPATH", str(ROOT))
        cfg.CONF.set_override(
            "helper_command", f"{PRIVSEP_HELPER} --config-file {tmp_path / 'conntrack_lib.conf'}",
            group=opts.PRIVSEP_SECTION)
    try:
        yield Setup(kind, tmp_path)
    finally:
        stop_daemon()
        cfg.CONF.clear_override("helper_command", group=opts.PRIVSEP_SECTION)
        cfg.CONF.clear_override("conntrack_binary", group=opts.GROUP)


def test_operations(setup: Setup, ns: str) -> None:
    run = setup.executor
    assert run.execute(udp("10.1.0.1"), namespace=ns).count == 1
    assert run.execute(udp("10.1.0.2"), namespace=ns).count == 1
    with pytest.raises(exc.EntryExistsError):
        run.execute(udp("10.1.0.1"), namespace=ns)

    get = commands.GetCommand(proto="udp", src="10.1.0.1", dst="10.250.0.1", sport=1000,
                              dport=53)
    found = run.execute(get, namespace=ns)
    assert found.count == 1 and "src=10.1.0.1 " in found.stdout
    with pytest.raises(exc.EntryNotFoundError):
        run.execute(commands.GetCommand(proto="udp", src="10.1.0.9", dst="10.250.0.1",
                                        sport=1000, dport=53), namespace=ns)

    assert run.execute(commands.CountCommand(), namespace=ns).count == 2
    listed = run.execute(commands.ListCommand(), namespace=ns)
    assert listed.count == 2
    lines = sorted(run.iter_lines(commands.ListCommand(), namespace=ns))
    assert lines == sorted(listed.stdout.splitlines())
    assert ["src=10.1.0.1" in lines[0], "src=10.1.0.2" in lines[1]] == [True, True]

    mark = commands.UpdateCommand(match={"src": "10.1.0.1"}, mark=7)
    assert run.execute(mark, namespace=ns).count == 1
    assert run.execute(mark, namespace=ns).count == 0, "unchanged: exit 1 means zero"
    assert run.execute(commands.ListCommand(mark=7), namespace=ns).count == 1

    creates = [udp(f"10.2.0.{i}", zone=5) for i in range(1, 51)]
    if netns.has_load_file():
        assert run.execute(commands.BatchCommand(creates), namespace=ns).count is None
    else:
        # The release has no -R: a typed error, nothing created.
        with pytest.raises(exc.CommandError):
            run.execute(commands.BatchCommand(creates), namespace=ns)
        assert run.execute(commands.CountCommand(), namespace=ns).count == 2
        netns.seed(ns, creates)
    assert run.execute(commands.CountCommand(), namespace=ns).count == 52
    assert run.execute(commands.DeleteCommand(zone=5), namespace=ns).count == 50
    assert run.execute(commands.DeleteCommand(zone=5), namespace=ns).count == 0

    assert run.execute(commands.StatsCommand(), namespace=ns).stdout.startswith("cpu=")
    events = run.execute(commands.EventsCommand(duration=0.5), namespace=ns)
    assert events.exit_code == 0 and events.count == 0
    assert run.execute(commands.FlushCommand(), namespace=ns).count is None
    assert run.execute(commands.CountCommand(), namespace=ns).count == 0


def test_missing_namespace(setup: Setup, ns: str) -> None:
    absent = netns.unique_name("ctlt-absent")
    with pytest.raises(exc.NamespaceNotFoundError):
        setup.executor.execute(commands.CountCommand(), namespace=absent)
    assert not os.path.exists(f"/run/netns/{absent}"), "a namespace must never be created"
    assert setup.executor.execute(commands.CountCommand(), namespace=ns).count == 0


def test_hung_command_is_killed(setup: Setup, ns: str) -> None:
    started = time.monotonic()
    with pytest.raises(exc.CommandTimeoutError):
        setup.executor.execute(commands.EventsCommand(duration=60), namespace=ns, timeout=1)
    assert time.monotonic() - started < 10
    assert "conntrack" not in processes_in(ns), "the timed-out child must be dead"
    assert setup.executor.execute(udp("10.3.0.1"), namespace=ns).count == 1


def test_missing_binary(setup: Setup, ns: str) -> None:
    setup.use_binary(MISSING_BINARY)
    for namespace in (ns, None):
        with pytest.raises(exc.ConntrackUnavailableError):
            setup.executor.execute(commands.CountCommand(), namespace=namespace)
    setup.use_binary(conntrack_binary())
    assert setup.executor.execute(commands.CountCommand(), namespace=ns).count == 0


def test_killed_daemon_is_restarted(daemon_setup: Setup, ns: str) -> None:
    run = daemon_setup.executor
    assert run.execute(udp("10.4.0.1"), namespace=ns).count == 1
    first = kill_daemon()
    # A create right after the kill: delivered exactly once by the new daemon.
    assert run.execute(udp("10.4.0.2"), namespace=ns).count == 1
    assert run.execute(commands.CountCommand(), namespace=ns).count == 2
    second = daemon_pid()
    assert second != first
    kill_daemon()
    assert run.execute(commands.CountCommand(), namespace=ns).count == 2


FLOWS = 200_000


def _fill(ns: str, total: int) -> None:
    netns.seed(ns, [
        commands.CreateCommand(proto="udp", src=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                               dst="10.250.0.1", sport=1000, dport=53, timeout=3600)
        for i in range(total)])


def test_full_table_through_the_forked_daemon(ns: str) -> None:
    opts.register_opts(cfg.CONF)
    stop_daemon()
    try:
        _fill(ns, FLOWS)
        run = executor.PrivsepExecutor()
        result = run.execute(commands.ListCommand(), namespace=ns)
        assert result.count == FLOWS
        assert len(result.stdout) > 4 * cfg.CONF[opts.GROUP].chunk_size, "must span chunks"
        lines = result.stdout.splitlines()
        assert len(lines) == len(set(lines)) == FLOWS
        streamed = sum(1 for line in run.iter_lines(commands.ListCommand(), namespace=ns)
                       if line.startswith("udp "))
        assert streamed == FLOWS
        assert run.execute(commands.CountCommand(), namespace=ns).count == FLOWS
    finally:
        stop_daemon()
