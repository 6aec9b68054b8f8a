"""The logging policy: DEBUG for what the library did, WARNING for what it worked around.

An error raised to the caller is the caller's to log: the library leaves
only a DEBUG record of it (command and stderr), never a WARNING or an ERROR.
"""

from __future__ import annotations

import ast
import importlib
import logging
import pathlib
import pkgutil
from collections.abc import Iterator
from typing import Any
from unittest import mock

import msgpack
import netaddr
import pytest
from oslo_config import cfg
from oslo_log import log as oslo_logging
from oslo_privsep import daemon

import conntrack_lib
from conntrack_lib import commands, executor, netns, privileged
from conntrack_lib import exceptions as exc
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Entry, FlowTuple
from conntrack_lib.privileged import conntrack as priv
from conntrack_lib.results import Result
from conntrack_lib.worker import DeletionQueue

NSENTER_GONE = "nsenter: cannot open /run/netns/gone: No such file or directory\n"
EPERM = ("conntrack v1.4.7 (conntrack-tools): Operation failed: sorry, you must be root "
         "or get CAP_NET_ADMIN capability to do this\n")
WAIT = 10.0
PACKAGE = pathlib.Path(conntrack_lib.__file__).parent


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every record of the library, DEBUG included."""
    caplog.set_level(logging.DEBUG, logger="conntrack_lib")
    return caplog


def _loud(records: list[logging.LogRecord]) -> list[str]:
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in records
            if r.levelno >= logging.WARNING]


def _entry(n: int) -> Entry:
    orig = FlowTuple(netaddr.IPAddress(f"10.0.0.{n}"), netaddr.IPAddress("10.0.9.9"), 1, 22)
    return Entry("ipv4", "tcp", 6, orig, orig.inverted(), state="ESTABLISHED", zone=5)


# -- errors raised to the caller ------------------------------------------------

@pytest.mark.parametrize(("stderr", "error"), [
    pytest.param(NSENTER_GONE, exc.NamespaceNotFoundError, id="namespace-gone"),
    pytest.param(EPERM, exc.PermissionDeniedError, id="permission"),
])
def test_a_raised_failure_leaves_no_warning_or_error(
        conf: cfg.ConfigOpts, monkeypatch: pytest.MonkeyPatch,
        log: pytest.LogCaptureFixture, stderr: str, error: type[exc.CommandError]) -> None:
    monkeypatch.setattr(netns, "run", mock.Mock(return_value=netns.ProcessOutput(1, "", stderr)))
    with pytest.raises(error) as caught:
        executor.ProcessExecutor(conf=conf).execute(commands.ListCommand())
    assert _loud(log.records) == []
    # The error itself tells the caller what ran and what it said.
    assert caught.value.cmd == ("/usr/sbin/conntrack", "-L")
    assert caught.value.stderr == stderr
    # An operator who turns on debug sees the command and its stderr.
    failed = [r for r in log.records if error.__name__ in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.DEBUG]
    assert "/usr/sbin/conntrack -L" in failed[0].getMessage()
    assert stderr.strip() in failed[0].getMessage()


def test_a_namespace_missing_before_the_run_leaves_no_warning_or_error(
        conf: cfg.ConfigOpts, monkeypatch: pytest.MonkeyPatch,
        log: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(netns, "run", mock.Mock(side_effect=AssertionError("ran")))
    with pytest.raises(exc.NamespaceNotFoundError) as caught:
        executor.ProcessExecutor(conf=conf).execute(commands.ListCommand(),
                                                    namespace="gone-for-good")
    assert _loud(log.records) == []
    assert "gone-for-good" in caught.value.stderr


def test_a_failure_raised_in_the_daemon_leaves_no_warning_or_error(
        conf: cfg.ConfigOpts, monkeypatch: pytest.MonkeyPatch,
        log: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(privileged.default, "client_mode", False)
    gone = exc.NamespaceNotFoundError(("run_query",), None, "", "namespace gone vanished\n")
    monkeypatch.setattr(priv, "run_query", mock.Mock(side_effect=gone))
    with pytest.raises(exc.NamespaceNotFoundError):
        executor.PrivsepExecutor(conf=conf).execute(commands.CountCommand(), namespace="gone")
    assert _loud(log.records) == []
    assert any("namespace gone vanished" in r.getMessage() for r in log.records)


def test_the_exception_a_deletion_raises_is_not_logged_loudly(
        log: pytest.LogCaptureFixture) -> None:
    class Gone:
        def execute(self, command: Any, *, namespace: str | None = None,
                    timeout: float | None = None) -> Result:
            raise exc.NamespaceNotFoundError(("ip", "netns", "exec", "r1"), 1, "",
                                             "Cannot open network namespace")

    helper = ConntrackHelper(executor=Gone(), exact_delete_backend="cli")
    with pytest.raises(exc.NamespaceNotFoundError):
        helper.delete_entries(zone=4)
    assert _loud(log.records) == []


# -- workarounds the caller does not see ------------------------------------------

class _NetlinkRefused:
    """An executor whose netlink deletes are refused and whose -D lines work."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def execute(self, command: Any, *, namespace: str | None = None,
                timeout: float | None = None) -> Result:
        self.calls.append(command)
        stdout = "".join(f"deleted {i}\n" for i, _ in enumerate(command)) if (
            command.kind == "batch") else ""
        return Result(0, stdout, "", 1, command.argv())

    def delete_flows(self, entries: Any, *, namespace: str | None = None) -> list[int]:
        raise exc.ConntrackUnavailableError(("netlink",), None, "", "refused")


def test_the_netlink_fallback_logs_one_warning(log: pytest.LogCaptureFixture) -> None:
    helper = ConntrackHelper(executor=_NetlinkRefused(), namespace="r1")
    assert helper.delete_flows([_entry(1), _entry(2)]) == 2
    loud = [r for r in log.records if r.levelno >= logging.WARNING]
    assert [(r.levelno, r.name) for r in loud] == [(logging.WARNING, "conntrack_lib.deleting")]
    assert "falling back to conntrack -D batches" in loud[0].getMessage()
    assert "r1" in loud[0].getMessage()


def test_a_retry_of_a_transient_error_logs_a_warning(
        conf: cfg.ConfigOpts, monkeypatch: pytest.MonkeyPatch,
        log: pytest.LogCaptureFixture) -> None:
    busy = netns.ProcessOutput(1, "", "Operation failed: Device or resource busy\n")
    monkeypatch.setattr(netns, "run", mock.Mock(side_effect=[busy, netns.ProcessOutput(
        0, "3\n", "")]))
    monkeypatch.setattr("conntrack_lib.results._backoff", lambda _tries: None)
    assert executor.ProcessExecutor(conf=conf).execute(commands.CountCommand()).count == 3
    assert [r.split(":")[0] for r in _loud(log.records)] == ["WARNING conntrack_lib.results"]


# -- the deletion queue ---------------------------------------------------------

class _Failing:
    def execute(self, command: Any, *, namespace: str | None = None,
                timeout: float | None = None) -> Result:
        raise exc.CommandError(command.argv(), 1, "", "Operation failed: invalid parameters\n")


def _run_queue(**kwargs: Any) -> DeletionQueue:
    queue = DeletionQueue(ConntrackHelper(executor=_Failing(), exact_delete_backend="cli"),
                          linger=0.0, **kwargs)
    queue.delete_entries(zone=4)
    queue.start()
    assert queue.wait(WAIT)
    queue.stop(timeout=WAIT)
    return queue


def test_a_failure_handed_to_on_error_is_logged_at_debug(
        log: pytest.LogCaptureFixture) -> None:
    seen: list[BaseException] = []
    queue = _run_queue(on_error=lambda err, reqs: seen.append(err))
    assert len(seen) == 1 and queue.stats()["failed"] == 1
    assert _loud(log.records) == []
    assert any("deletion of 1 requests failed" in r.getMessage() for r in log.records)


def test_a_failure_nobody_hears_of_is_a_warning(log: pytest.LogCaptureFixture) -> None:
    _run_queue()
    loud = _loud(log.records)
    assert len(loud) == 1
    assert "no on_error callback" in loud[0] and "invalid parameters" in loud[0]


def test_a_raising_callback_is_a_warning_with_its_traceback(
        log: pytest.LogCaptureFixture) -> None:
    def broken(err: BaseException, reqs: Any) -> None:
        raise RuntimeError("agent bug")

    _run_queue(on_error=broken)
    loud = [r for r in log.records if r.levelno >= logging.WARNING]
    assert [r.levelno for r in loud] == [logging.WARNING]
    assert "ignored" in loud[0].getMessage()
    assert loud[0].exc_info is not None and "agent bug" in str(loud[0].exc_info[1])


# -- one hierarchy ------------------------------------------------------------------

def _modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages([str(PACKAGE)], "conntrack_lib.")]


@pytest.mark.parametrize("name", _modules())
def test_every_logger_is_an_oslo_log_logger_named_after_its_module(name: str) -> None:
    module = importlib.import_module(name)
    log = getattr(module, "LOG", None)
    if log is None:
        return
    assert isinstance(log, oslo_logging.KeywordArgumentAdapter), name
    assert log.logger.name == name


def _log_calls() -> Iterator[tuple[str, int, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "LOG"):
                yield path.relative_to(PACKAGE).as_posix(), node.lineno, node.func.attr


def test_the_library_logs_at_debug_or_warning_only() -> None:
    calls = list(_log_calls())
    assert calls, "no LOG calls found"
    louder = [call for call in calls if call[2] not in ("debug", "warning", "log")]
    assert louder == []


def test_the_agent_guide_lists_every_module_that_logs() -> None:
    guide = (PACKAGE.parent / "docs" / "agent-guide.rst").read_text()
    section = guide[guide.index("Logger names\n"):guide.index("Debug for the library only")]
    listed = {line.split("``")[1] for line in section.splitlines()
              if line.startswith("``conntrack_lib.")}
    logging_modules = {name for name in _modules()
                       if getattr(importlib.import_module(name), "LOG", None) is not None}
    assert listed == logging_modules


def test_a_daemon_record_reaches_the_agent_under_its_own_name(
        log: pytest.LogCaptureFixture) -> None:
    sent: list[bytes] = []
    channel = mock.Mock(send=lambda msg: sent.append(
        msgpack.packb(msg, use_bin_type=True, unicode_errors="surrogateescape")))
    # The daemon: oslo.privsep's handler on the root logger, an oslo.log logger.
    handler = daemon.PrivsepLogHandler(channel)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        priv.LOG.warning("children may gain %d capabilities", 3)
    finally:
        root.removeHandler(handler)
    # The agent: the channel hands the record to the context's logger.
    client = object.__new__(daemon._ClientChannel)
    client.log = oslo_logging.getLogger(privileged.default.conf.logger_name)
    (wire,) = sent
    _, message = msgpack.unpackb(wire, raw=False, use_list=False, strict_map_key=False)
    log.clear()
    client.out_of_band(message)
    assert [(r.name, r.levelno, r.getMessage()) for r in log.records] == [
        ("conntrack_lib.privileged.conntrack", logging.WARNING,
         "children may gain 3 capabilities")]
