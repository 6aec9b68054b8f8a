"""Listings streamed through the privsep daemon while conntrack prints.

``PrivsepExecutor.iter_lines`` starts ``conntrack -L`` with the daemon's
``start_listing`` and parses each piece as it arrives; these tests run the
real daemon (forked) against a real table, and the daemon's entrypoints in
this process with a script standing in for a conntrack that prints a long
listing.
"""

from __future__ import annotations

import fcntl
import pathlib
import sys
import time
from collections.abc import Callable

import pytest

from conntrack_lib import (
    ConntrackHelper,
    commands,
    event_streams,
    executor,
)
from conntrack_lib import exceptions as exc
from conntrack_lib.privileged import streams as priv_streams
from tests.functional import netns

FLOWS = 3000
#: A conntrack that prints a listing far longer than any pipe, then a summary
#: (one process, as conntrack is: killing it closes every pipe).
LONG_LISTING = """#!{python}
import sys
line = ("udp      17 30 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 [UNREPLIED] "
        "src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 use=1\\n")
for _ in range(200000):
    sys.stdout.write(line)
sys.stdout.flush()
sys.stderr.write("conntrack v1.4.7 (conntrack-tools): 200000 flow entries have been shown.\\n")
"""


def _seeded(ns: str) -> None:
    netns.seed(ns, [commands.CreateCommand(proto="udp", src=f"10.70.{n // 250}.{n % 250 + 1}",
                                           dst="10.71.0.1", sport=1000, dport=53, timeout=600)
                    for n in range(FLOWS)])


def test_a_listing_streams_and_equals_the_direct_one(forked_daemon: executor.PrivsepExecutor,
                                                     ns: str) -> None:
    _seeded(ns)
    lines = forked_daemon.iter_lines(commands.ListCommand(), namespace=ns)
    assert isinstance(lines, executor.StreamedLines)
    assert len([line for line in lines if line]) == FLOWS
    assert lines.result is not None and lines.result.count == FLOWS
    through_daemon = ConntrackHelper(namespace=ns, executor=forked_daemon).list_entries()
    direct = ConntrackHelper(namespace=ns, executor=executor.ProcessExecutor()).list_entries()
    assert sorted(map(repr, through_daemon)) == sorted(map(repr, direct))
    assert ConntrackHelper(namespace=ns, executor=forked_daemon).list_entries(src="10.70.0.1") == [
        e for e in direct if str(e.original.src) == "10.70.0.1"]


def test_a_listing_of_a_missing_namespace_fails_typed(
        forked_daemon: executor.PrivsepExecutor) -> None:
    helper = ConntrackHelper(namespace="ctlt-never-made", executor=forked_daemon)
    with pytest.raises(exc.NamespaceNotFoundError):
        helper.list_entries()


@pytest.fixture
def long_listing(entrypoints_here: Callable[[str], None]) -> None:
    """Run the daemon's entrypoints here, with a script in place of conntrack."""
    entrypoints_here(LONG_LISTING.format(python=sys.executable))


def test_conntrack_prints_a_listing_ahead_into_a_large_pipe(long_listing: None) -> None:
    handle, _argv = priv_streams.start_listing(commands.ListCommand().to_primitive(), None, 60)
    stream = priv_streams._streams[handle]
    assert stream.proc.stdout is not None
    pipe = fcntl.fcntl(stream.proc.stdout.fileno(), fcntl.F_GETPIPE_SZ)
    assert pipe == event_streams.LISTING_PIPE
    time.sleep(1.0)  # nobody reads: the child fills the whole pipe meanwhile
    text, finished, *_ = priv_streams.read_stream(handle, event_streams.MAX_READ)
    assert not finished and len(text) > event_streams.MAX_READ // 2
    pieces = [text]
    while not finished:
        text, finished, code, stderr, timed_out = priv_streams.read_stream(
            handle, event_streams.MAX_READ)
        pieces.append(text)
    assert (code, timed_out) == (0, False) and "200000 flow entries" in stderr
    assert "".join(pieces).count("\n") == 200000


def test_start_listing_refuses_every_other_kind(long_listing: None) -> None:
    for command in (commands.CountCommand(), commands.DeleteCommand(zone=3),
                    commands.EventsCommand(duration=1)):
        with pytest.raises(exc.InvalidArgumentError):
            priv_streams.start_listing(command.to_primitive(), None, 60)


def test_a_closed_listing_stops_its_conntrack(long_listing: None) -> None:
    lines = executor.PrivsepExecutor().iter_lines(commands.ListCommand())
    assert isinstance(lines, executor.StreamedLines)
    assert next(lines).startswith("udp")
    (handle,) = list(priv_streams._streams)
    proc = priv_streams._streams[handle].proc
    lines.close()
    assert len(priv_streams._streams) == 0
    assert proc.returncode is not None  # killed and reaped, not left printing
    with pytest.raises(StopIteration):
        next(lines)


def test_a_listing_outlives_the_idle_time_of_event_streams(
        long_listing: None, tmp_path: pathlib.Path) -> None:
    script = str(next(tmp_path.glob("conntrack")))
    streams = event_streams.Streams(idle=0.2)
    capture = streams.start((script,), 60, 30)
    listing = streams.start((script,), 60, None, idle=event_streams.LISTING_IDLE)
    try:
        time.sleep(0.5)  # both unread for longer than the streams' default idle time
        text, finished, *_ = streams.read(listing, event_streams.MAX_READ)
        assert text and not finished
        with pytest.raises(exc.OutputUnavailableError, match="not running"):
            streams.read(capture, 10)
    finally:
        for handle in list(streams):
            streams.stop(handle)
