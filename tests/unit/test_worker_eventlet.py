"""DeletionQueue under eventlet monkey-patching, in a child interpreter.

Monkey-patching cannot be undone, so the queue runs in a fresh Python
process that patches first, then imports conntrack_lib.  The child prints
one JSON report; these tests assert on it and on the exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent('''
    import eventlet
    eventlet.monkey_patch()

    import json
    import threading
    import time

    from eventlet import patcher

    os_thread_id = patcher.original("_thread").get_ident
    main_os_thread = os_thread_id()

    from conntrack_lib import exceptions as exc
    from conntrack_lib.executor import Result
    from conntrack_lib.helper import ConntrackHelper
    from conntrack_lib.planner import CostModel
    from conntrack_lib.worker import DeletionQueue, QueueFullError


    class SlowExecutor:
        """Record commands; yield to the hub as real process I/O would."""

        def __init__(self):
            self.lines = []
            self.threads = set()

        def execute(self, command, *, namespace=None, timeout=None):
            self.threads.add(os_thread_id())
            time.sleep(0.01)
            inner = list(command) if command.kind == "batch" else [command]
            if any(c.get("zone") == 99 for c in inner):
                raise exc.CommandError(("conntrack", "-R", "-"), 1, "", "Operation failed")
            self.lines.extend(" ".join(c.argv()) for c in inner)
            return Result(0, "x\\n" * len(inner), "",
                          None if command.kind == "batch" else 1, ("conntrack",))

        def iter_lines(self, command, *, namespace=None, timeout=None):
            return iter(())


    executor = SlowExecutor()
    errors = []
    cli_only = ConntrackHelper(executor=executor, cost_model=CostModel(dump_parse=1.0))
    queue = DeletionQueue(cli_only, maxsize=200, batch_max=100, linger=0.01,
                          on_error=lambda e, r: errors.append(len(r)))
    queue.start()


    def produce(worker):
        for i in range(300):
            # Agents repeat themselves: few zones and addresses, over and over.
            queue.delete_by_remote_ips(1 + (worker + i) % 4, ["10.0.%d.1" % (i % 7)])


    producers = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    flushed = queue.wait(timeout=30)

    full = None
    held = DeletionQueue(cli_only, maxsize=1, block=False)
    held.delete_entries(zone=1)
    started = time.monotonic()
    try:
        held.delete_entries(zone=2, block=True, timeout=0.2)
    except QueueFullError:
        full = time.monotonic() - started
    held.stop(drain=False)

    queue.delete_entries(zone=99)
    queue.delete_entries(zone=100)
    flushed_after_error = queue.wait(timeout=30)
    waited = queue.wait_for("10.0.3.1", timeout=30)
    dropped = queue.stop(drain=True, timeout=30)
    print(json.dumps({
        "patched": patcher.is_monkey_patched("thread"),
        "flushed": flushed,
        "flushed_after_error": flushed_after_error,
        "waited": waited,
        "dropped": dropped,
        "alive": queue.running,
        "stats": queue.stats(),
        "lines": sorted(set(executor.lines)),
        "line_count": len(executor.lines),
        "errors": errors,
        "full_after": full,
        "same_os_thread": executor.threads == {main_os_thread},
    }))
''')


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    data: dict[str, Any] = json.loads(last)
    return data


def test_child_ran_monkey_patched(report: dict[str, Any]) -> None:
    assert report["patched"] is True
    # The worker was a green thread: it ran in the main OS thread.
    assert report["same_os_thread"] is True


def test_everything_enqueued_is_done_and_merged(report: dict[str, Any]) -> None:
    stats = report["stats"]
    assert report["flushed"] is True
    assert stats["enqueued"] == 4 * 300 * 2 + 2
    assert stats["pending"] == 0
    expected = {f"-D -f ipv4 -{side} 10.0.{i}.1 -w {zone}"
                for zone in range(1, 5) for i in range(7) for side in "sd"}
    assert expected <= set(report["lines"])
    assert stats["coalesced"] > stats["enqueued"] // 3
    # Every request either ran or merged into one that ran (zone 99 failed).
    assert report["line_count"] + stats["coalesced"] + stats["failed"] == stats["enqueued"]
    assert stats["batches"] < stats["enqueued"] // 10


def test_backpressure_times_out_cooperatively(report: dict[str, Any]) -> None:
    assert report["full_after"] is not None
    assert 0.19 <= report["full_after"] < 5


def test_failure_delivered_and_worker_survives(report: dict[str, Any]) -> None:
    assert report["errors"] == [1]
    assert report["stats"]["failed"] == 1
    assert report["flushed_after_error"] is True
    assert "-D -w 100" in report["lines"]


def test_clean_stop(report: dict[str, Any]) -> None:
    assert report["waited"] is True
    assert report["dropped"] == 0
    assert report["alive"] is False
