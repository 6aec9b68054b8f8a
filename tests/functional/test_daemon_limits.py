"""The real forked daemon: typed errors across the wire, spools that never leak.

Everything goes through oslo.privsep's channel, so what the client gets is
what msgpack carried back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from oslo_config import cfg

from conntrack_lib import ConntrackHelper, executor, opts
from conntrack_lib import exceptions as exc
from conntrack_lib.privileged import conntrack as priv


@pytest.fixture
def forked(forked_daemon: executor.PrivsepExecutor) -> Iterator[executor.PrivsepExecutor]:
    try:
        yield forked_daemon
    finally:
        cfg.CONF.clear_override("chunk_size", group=opts.GROUP)


def test_unpackable_daemon_error_arrives_typed(forked: executor.PrivsepExecutor) -> None:
    # The daemon's InvalidArgumentError names a command object, which
    # msgpack cannot carry: the client used to get a bare TypeError.
    hostile = {"kind": "batch", "commands": [[["kind", "list"]]]}
    with pytest.raises(exc.InvalidArgumentError) as info:
        forked._call(priv.run_batch, hostile, None, 5.0, 4096, idempotent=True)
    assert info.value.field == "commands"
    assert "ListCommand" in str(info.value.value)


def test_abandoned_listings_leave_no_spool_and_never_evict(
        forked: executor.PrivsepExecutor, ns: str) -> None:
    cfg.CONF.set_override("chunk_size", 200, group=opts.GROUP)
    helper = ConntrackHelper(namespace=ns, executor=forked)
    helper.create_entries([{"proto": "udp", "src": "10.6.0.1", "dst": "10.6.0.2",
                            "sport": 1000 + i, "dport": 53, "timeout": 600}
                           for i in range(50)])
    live = helper.iter_entries()
    first = next(live)
    for _ in range(3 * priv._spools.max_spools):
        abandoned = helper.iter_entries()
        next(abandoned)  # stopped inside the first chunk
        del abandoned
    assert len([first, *live]) == 50  # the live listing was never evicted
    # Nothing leaked: the daemon has room for MAX_SPOOLS listings at once
    # (abandoned ones are released from a background thread: allow a moment).
    assert _room_for_all(helper)


def _room_for_all(helper: ConntrackHelper) -> bool:
    deadline = time.monotonic() + 5
    while True:
        held = []
        try:
            for _ in range(priv._spools.max_spools):
                listing = helper.iter_entries()
                next(listing)
                held.append(listing)
            return True
        except exc.OutputUnavailableError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        finally:
            for listing in held:
                listing.close()  # type: ignore[attr-defined]
