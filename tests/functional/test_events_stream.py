"""``ConntrackHelper.events``: typed events streamed in bounded daemon memory.

The first tests watch real flows created in a throwaway namespace, through
the forked privsep daemon and through ProcessExecutor.  The memory tests run
the daemon's entrypoints in this process with a script around ``yes``
standing in for a conntrack that prints events faster than anyone reads them.
"""

from __future__ import annotations

import pathlib
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from oslo_config import cfg

from conntrack_lib import (
    ConntrackHelper,
    commands,
    daemon,
    event_streams,
    executor,
    opts,
    privileged,
)
from conntrack_lib import exceptions as exc
from conntrack_lib.models import Event
from conntrack_lib.privileged import conntrack as priv
from conntrack_lib.privileged import streams as priv_streams

FLOOD = ("#!/bin/sh\n"
         "exec /usr/bin/yes '[NEW] udp      17 30 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2'\n")


def _create_later(helper: ConntrackHelper, count: int, delay: float) -> threading.Thread:
    def create() -> None:
        time.sleep(delay)
        for port in range(count):
            helper.create_entry(proto="udp", src="10.5.0.1", dst="10.5.0.2",
                                sport=4000 + port, dport=53, timeout=600)
    thread = threading.Thread(target=create, daemon=True)
    thread.start()
    return thread


@pytest.fixture(params=["fork", "process"])
def run(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Yield each executor; the forked daemon is stopped afterwards."""
    opts.register_opts(cfg.CONF)
    daemon.stop(privileged.default)
    try:
        yield (executor.PrivsepExecutor() if request.param == "fork"
               else executor.ProcessExecutor())
    finally:
        daemon.stop(privileged.default)


def test_events_of_new_flows_arrive_typed(run: Any, ns: str) -> None:
    helper = ConntrackHelper(namespace=ns, executor=run)
    started = time.monotonic()
    stream = helper.events(count=3, duration=30, event_mask=["NEW"], proto="udp")
    maker = _create_later(helper, 3, 0.5)
    got = list(stream)
    maker.join(10)
    assert time.monotonic() - started < 20  # stopped at the count, not the duration
    assert [type(event) for event in got] == [Event] * 3
    assert {event.type for event in got} == {"NEW"}
    assert sorted(event.entry.original.sport for event in got) == [4000, 4001, 4002]
    assert {str(event.entry.original.src) for event in got} == {"10.5.0.1"}


def test_closing_the_stream_stops_the_capture(ns: str) -> None:
    daemon.stop(privileged.default)
    helper = ConntrackHelper(namespace=ns, executor=executor.PrivsepExecutor())
    stream = helper.events(duration=600)
    _create_later(helper, 1, 0.3).join(10)
    assert next(stream).type == "NEW"
    stream.close()  # type: ignore[attr-defined]
    # The daemon holds no stream any more: a new one starts at once.
    again = helper.events(duration=0.5)
    assert list(again) == []
    daemon.stop(privileged.default)


# -- memory bound, with a child that never stops printing --------------------

@pytest.fixture
def flood(entrypoints_here: Callable[[str], None]) -> None:
    """Run entrypoints in-process with an endless event printer as conntrack."""
    entrypoints_here(FLOOD)


def _cpu_ticks(pid: int) -> int:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_daemon_memory_stays_bounded_while_the_client_lags(flood: None) -> None:
    watch = commands.EventsCommand(duration=60).to_primitive()
    tracemalloc.start()
    try:
        handle, _argv = priv_streams.start_events(watch, None, 120)
        stream = priv_streams._streams[handle]
        time.sleep(1.0)  # nobody reads: the child must block on the full pipe
        ticks = _cpu_ticks(stream.proc.pid)
        time.sleep(0.5)
        assert _cpu_ticks(stream.proc.pid) == ticks, "the child kept running unread"
        tracemalloc.reset_peak()
        sizes = [len(priv_streams.read_stream(handle, event_streams.MAX_READ)[0])
                 for _ in range(50)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert max(sizes) <= event_streams.MAX_READ and sum(sizes) > event_streams.MAX_READ
    # One piece in flight (bytes, then str) is all the daemon holds.
    assert peak < 3 * event_streams.MAX_READ + 256 * 1024, peak
    assert priv_streams.stop_stream(handle) is True
    with pytest.raises(exc.OutputUnavailableError, match="not running"):
        priv_streams.read_stream(handle, 10)


def test_stream_count_is_bounded(flood: None) -> None:
    watch = commands.EventsCommand(duration=60).to_primitive()
    handles = [priv_streams.start_events(watch, None, 120)[0]
               for _ in range(event_streams.MAX_STREAMS)]
    with pytest.raises(exc.OutputUnavailableError, match=r"streams \(limit"):
        priv_streams.start_events(watch, None, 120)
    assert all(priv_streams.stop_stream(h) for h in handles)


def test_whole_capture_is_capped(flood: None) -> None:
    watch = commands.EventsCommand(duration=30).to_primitive()
    started = time.monotonic()
    with pytest.raises(exc.OutputUnavailableError, match="more than"):
        priv.run_events(watch, None, 60, 4096)
    assert time.monotonic() - started < 25
