"""Unit tests of the hardening against an adversarial review.

Each test names the defect it guards; docs/security.rst lists the mutation
that turns it red.
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Iterator
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from conntrack_lib import (
    ConntrackHelper,
    commands,
    executor,
    netns,
    privsep_executor,
    validators,
    worker,
)
from conntrack_lib import exceptions as exc
from conntrack_lib import wire_errors as errors
from conntrack_lib.testing import FakeConntrack

LIST = commands.ListCommand()


# -- timeout errors carry a bounded output ---------------------------------

def test_timeout_error_keeps_head_tail_and_total_size() -> None:
    big = "h" * 100_000 + "m" * 10_000_000 + "t" * 100_000
    err = exc.CommandTimeoutError(("conntrack", "-L"), -9, big, "e" * 5_000_000 + "killed\n")
    assert len(err.stdout) < exc.CLIP_HEAD + exc.CLIP_TAIL + 200
    assert err.stdout.startswith("h" * exc.CLIP_HEAD)
    assert err.stdout.endswith("t" * exc.CLIP_TAIL)
    assert f"of {len(big)} characters omitted" in err.stdout
    assert err.stderr.endswith("killed\n") and len(err.stderr) < 70_000


def test_clipped_timeout_error_rebuilds_equal() -> None:
    err = exc.CommandTimeoutError(("conntrack",), None, "x" * 1_000_000, "")
    again = type(err)(*err.args)
    assert again.args == err.args
    assert pickle.loads(pickle.dumps(err)).args == err.args


def test_timed_out_child_reports_clipped_stdout() -> None:
    # A child that prints 8 MB and then hangs: the error stays small.
    script = "import sys,time; sys.stdout.write('x'*8_000_000); sys.stdout.flush(); time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(exc.CommandTimeoutError) as info:
        netns.run([sys.executable, "-c", script], timeout=2.0)
    assert time.monotonic() - started < 30
    assert len(info.value.stdout) < 70_000
    assert "of 8000000 characters omitted" in info.value.stdout


# -- wait_for reports a failed deletion --------------------------------------

class _FailingHelper(ConntrackHelper):
    def execute_plan(self, plan: Any) -> Any:
        raise exc.CommandError(("conntrack", "-D"), 1, "", "Operation failed: boom\n")


def test_wait_for_raises_after_failed_deletion() -> None:
    ct = FakeConntrack()
    queue = worker.DeletionQueue(_FailingHelper(executor=ct), linger=0)
    queue.delete_entries(src="10.0.0.1")
    with pytest.raises(worker.DeletionFailedError) as info:
        queue.wait_for("10.0.0.1", timeout=10)
    assert "boom" in str(info.value)
    queue.stop()


def test_wait_for_other_address_unaffected_by_failure() -> None:
    ct = FakeConntrack()
    queue = worker.DeletionQueue(_FailingHelper(executor=ct), linger=0)
    queue.delete_entries(src="10.0.0.1")
    assert queue.wait_for("10.9.9.9", timeout=10) is True
    queue.stop()


def test_wait_for_true_after_successful_deletion() -> None:
    queue = worker.DeletionQueue(ConntrackHelper(executor=FakeConntrack()), linger=0)
    queue.delete_entries(src="10.0.0.1")
    assert queue.wait_for("10.0.0.1", timeout=10) is True
    queue.stop()


def test_deletion_failed_error_rebuilds() -> None:
    err = worker.DeletionFailedError("10.0.0.1", "CommandError: x")
    assert type(err)(*err.args).args == err.args


# -- xml listings are refused, not counted as empty --------------------------

@pytest.mark.parametrize("call", ["list_entries", "count", "iter_entries"])
def test_xml_listing_refused(call: str) -> None:
    helper = ConntrackHelper(executor=FakeConntrack())
    with pytest.raises(exc.InvalidArgumentError) as info:
        list(getattr(helper, call)(output=["xml"]))
    assert info.value.field == "output"


# -- labels: linear de-duplication and a bound -------------------------------

def test_label_count_bounded() -> None:
    names = [f"l{i}" for i in range(40_000)]
    started = time.monotonic()
    with pytest.raises(exc.InvalidArgumentError) as info:
        commands.ListCommand(labels=names)
    assert time.monotonic() - started < 0.5
    assert "at most 128" in str(info.value)


def test_label_bound_counts_duplicates_and_accepts_the_maximum() -> None:
    assert len(validators.label_names("labels", [f"l{i}" for i in range(128)])) == 128
    assert validators.label_names("labels", ["a", "b", "a", "c", "b"]) == ("a", "b", "c")
    with pytest.raises(exc.InvalidArgumentError):
        validators.label_names("labels", ["a"] * 129)


# -- daemon errors that cannot be packed; children killed by a signal --------

def _raises(error: Exception) -> Any:
    def entry(*_args: Any) -> None:
        raise error
    return errors.wire_safe(entry)


def test_unpackable_conntrack_error_keeps_its_class() -> None:
    with pytest.raises(exc.InvalidArgumentError) as info:
        _raises(exc.InvalidArgumentError("commands", commands.ListCommand(), "bad"))()
    err = info.value
    assert err.field == "commands" and err.value == "ListCommand()"
    msgpack.packb(list(err.args), use_bin_type=True)  # crosses the wire now


def test_unpackable_foreign_error_becomes_command_error_naming_it() -> None:
    with pytest.raises(exc.CommandError) as info:
        _raises(LookupError({1, 2}))()
    err = info.value
    assert type(err) is exc.CommandError
    assert "builtins.LookupError" in err.stderr and "{1, 2}" in err.stderr
    msgpack.packb(list(err.args), use_bin_type=True)


def test_packable_error_passes_unchanged() -> None:
    original = exc.InvalidArgumentError("index", 7, "bad")
    with pytest.raises(exc.InvalidArgumentError) as info:
        _raises(original)()
    assert info.value is original


def test_wire_safe_keeps_the_exported_name() -> None:
    from conntrack_lib.privileged import conntrack as priv

    # oslo.privsep sends module.function of what @entrypoint wrapped.
    assert privsep_executor._name(priv.release) == "release"
    assert privsep_executor._name(priv.run_query) == "run_query"


@pytest.mark.parametrize(("code", "error", "name"), [
    (-11, exc.ConntrackUnavailableError, "SIGSEGV"),
    (-9, exc.CommandError, "SIGKILL"),
    (-6, exc.CommandError, "SIGABRT"),
])
def test_child_killed_by_signal_maps_like_shell_exit(
        code: int, error: type[exc.CommandError], name: str) -> None:
    with pytest.raises(exc.CommandError) as info:
        executor.interpret(("conntrack", "-L"), code, "", "", LIST)
    assert type(info.value) is error
    assert info.value.exit_code == 128 - code
    assert name in str(info.value)


def test_signal_exit_leaves_normal_codes() -> None:
    assert executor.signal_exit(1, "x") == (1, "x")
    assert executor.signal_exit(-11, "boom")[0] == 139


# -- the capability bounding set ----------------------------------------------

def test_helper_refuses_to_start_when_the_bounding_set_cannot_shrink(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from oslo_privsep import daemon

    from conntrack_lib.privileged import bounding

    def refuse(*_args: Any) -> None:
        raise OSError(1, "Operation not permitted")

    started: list[bool] = []
    monkeypatch.setattr(bounding, "drop_bounding_set", refuse)
    monkeypatch.setattr(daemon, "helper_main", lambda: started.append(True))
    with pytest.raises(SystemExit) as info:
        bounding.helper_main()
    assert "Operation not permitted" in str(info.value.code)
    assert started == []


# -- spools: released when the listing is closed or collected ----------------

@pytest.fixture
def daemon_in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run entrypoints in-process; every listing prints 300 lines."""
    from oslo_config import cfg

    from conntrack_lib import opts, privileged
    from conntrack_lib.privileged import conntrack as priv
    from conntrack_lib.privileged import streams

    monkeypatch.setattr(privileged.default, "client_mode", False)
    # No stream slot: listings run spooled, the path these tests are about.
    monkeypatch.setattr(streams._streams, "max_streams", 0)
    text = "".join(f"udp      17 99 src=10.0.{i // 250}.{i % 250} dst=10.9.0.1 sport=1 "
                   f"dport=2 use=1\n" for i in range(300))
    monkeypatch.setattr(netns, "run", lambda *a, **k: netns.ProcessOutput(0, text, ""))
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf.set_override("chunk_size", 100, group="conntrack_lib")
    priv._spools.clear()
    yield executor.PrivsepExecutor(conf=conf), priv
    priv._spools.clear()


def _wait_empty(spools: Any) -> bool:
    deadline = time.monotonic() + 5
    while spools and time.monotonic() < deadline:
        time.sleep(0.01)
    return not spools


def test_closed_listing_releases_its_spool_at_once(daemon_in_process: Any) -> None:
    run, priv = daemon_in_process
    lines = run.iter_lines(LIST)
    assert next(lines).startswith("udp")  # still inside the first chunk
    assert len(priv._spools) == 1
    lines.close()
    assert len(priv._spools) == 0


def test_collected_listing_releases_its_spool(daemon_in_process: Any) -> None:
    run, priv = daemon_in_process
    lines = run.iter_lines(LIST)
    next(lines)
    del lines
    assert _wait_empty(priv._spools)
    never_started = run.iter_lines(LIST)
    del never_started
    assert _wait_empty(priv._spools)


def test_abandoned_listings_never_break_a_live_one(daemon_in_process: Any) -> None:
    run, priv = daemon_in_process
    live = run.iter_lines(LIST)
    first = next(live)
    for _ in range(3 * priv._spools.max_spools):  # listings abandoned in their first chunk
        abandoned = run.iter_lines(LIST)
        next(abandoned)
        del abandoned
        assert _wait_empty_but(priv._spools, 1)
    rest = list(live)
    assert len([first, *rest]) == 300
    assert _wait_empty(priv._spools)


def _wait_empty_but(spools: Any, keep: int) -> bool:
    deadline = time.monotonic() + 5
    while len(spools) > keep and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(spools) == keep


def test_too_many_live_listings_is_a_typed_refusal(daemon_in_process: Any) -> None:
    run, priv = daemon_in_process
    live = [run.iter_lines(LIST) for _ in range(priv._spools.max_spools)]
    with pytest.raises(exc.OutputUnavailableError) as info:
        run.iter_lines(LIST)
    assert "already holds" in str(info.value)
    assert all(len(list(lines)) == 300 for lines in live)  # none was evicted
