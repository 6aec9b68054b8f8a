"""Unit tests of conntrack_lib.executor: exit codes, retries, chunking, wire format."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from oslo_config import cfg
from oslo_privsep import comm
from oslo_utils import importutils

from conntrack_lib import commands, executor, netns, opts, privileged, results
from conntrack_lib import exceptions as exc
from conntrack_lib.privileged import conntrack as priv
from conntrack_lib.privileged import streams as priv_streams

P = "conntrack v1.4.7 (conntrack-tools): "
CMD = ("/usr/sbin/conntrack", "-X")

LIST = commands.ListCommand()
GET = commands.GetCommand(proto="udp", src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2)
CREATE = commands.CreateCommand(proto="udp", src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2,
                                timeout=60)
UPDATE = commands.UpdateCommand(match={"src": "10.0.0.1"}, mark=5)
DELETE = commands.DeleteCommand(zone=7)
FLUSH = commands.FlushCommand()
COUNT = commands.CountCommand()
STATS = commands.StatsCommand()
EVENTS = commands.EventsCommand(duration=1)
BATCH = commands.BatchCommand([CREATE])

STATS_LINE = "cpu=0   \tfound=0 invalid=0 insert=3 insert_failed=0 drop=0 early_drop=0 error=0 \n"
EPERM = (f"{P}Operation failed: sorry, you must be root or get CAP_NET_ADMIN capability "
         "to do this\n")

# (command, exit code, stdout, stderr, expected count) from reference section 6.
SUCCESSES = [
    pytest.param(LIST, 0, "", f"{P}0 flow entries have been shown.\n", 0, id="list-empty"),
    pytest.param(LIST, 0, "x\ny\n", f"{P}2 flow entries have been shown.\n", 2, id="list"),
    pytest.param(GET, 0, "udp ...\n", f"{P}1 flow entries have been shown.\n", 1, id="get"),
    pytest.param(DELETE, 1, "", f"{P}0 flow entries have been deleted.\n", 0, id="delete-none"),
    pytest.param(DELETE, 0, "a\nb\nc\n", f"{P}3 flow entries have been deleted.\n", 3,
                 id="delete-three"),
    pytest.param(UPDATE, 1, "", f"{P}0 flow entries have been updated.\n", 0, id="update-none"),
    pytest.param(UPDATE, 1, "",
                 "Operation failed: No such file or directory\n"
                 f"{P}0 flow entries have been updated.\n", 0, id="update-zone-bug"),
    pytest.param(UPDATE, 0, "x\n", f"{P}4 flow entries have been updated.\n", 4, id="update"),
    pytest.param(CREATE, 0, "", f"{P}1 flow entries have been created.\n", 1, id="create"),
    pytest.param(CREATE, 0, "", f"{P}0 flow entries have been added.\n", 0, id="add-existing"),
    pytest.param(CREATE, 0, "", "", 1, id="create-silent"),
    pytest.param(COUNT, 0, "42\n", "", 42, id="count"),
    pytest.param(STATS, 0, STATS_LINE, "", None, id="stats"),
    pytest.param(FLUSH, 0, "", f"{P}connection tracking table has been emptied.\n", None,
                 id="flush"),
    pytest.param(BATCH, 0, "", "", None, id="batch-no-summary"),
    pytest.param(EVENTS, 0, "[NEW] udp ...\n", f"{P}7 flow events have been shown.\n", 7,
                 id="events"),
]

# (command, exit code, stdout, stderr, expected exception type)
FAILURES = [
    pytest.param(CREATE, 1, "", f"{P}Operation failed: Such conntrack exists, try -U to update\n",
                 exc.EntryExistsError, id="create-exists"),
    pytest.param(BATCH, 1, "",
                 f"{P}Operation failed: Such conntrack exists, try -U to update\n",
                 exc.EntryExistsError, id="batch-exists"),
    pytest.param(GET, 1, "", f"{P}Operation failed: such conntrack doesn't exist\n",
                 exc.EntryNotFoundError, id="get-missing"),
    pytest.param(GET, 1, "", f"{P}0 flow entries have been shown.\n",
                 exc.EntryNotFoundError, id="get-id-mismatch"),
    pytest.param(LIST, 1, "", EPERM, exc.PermissionDeniedError, id="list-eperm"),
    pytest.param(DELETE, 1, "", EPERM, exc.PermissionDeniedError, id="delete-eperm"),
    pytest.param(BATCH, 1, "", EPERM, exc.PermissionDeniedError, id="batch-eperm"),
    pytest.param(COUNT, 1, "1\n", EPERM, exc.PermissionDeniedError, id="count-eperm-with-data"),
    pytest.param(STATS, 1, STATS_LINE, EPERM, exc.PermissionDeniedError,
                 id="stats-eperm-with-data"),
    pytest.param(FLUSH, 1, "", f"{P}connection tracking table has been emptied.\n{EPERM}",
                 exc.PermissionDeniedError, id="flush-emptied-but-eperm"),
    pytest.param(EVENTS, 1, "",
                 f"mnl_socket_bind: Operation not permitted\n{P}Can't open netlink socket\n",
                 exc.PermissionDeniedError, id="events-eperm"),
    pytest.param(LIST, 139, "", "", exc.ConntrackUnavailableError, id="segfault"),
    pytest.param(LIST, 139, "",
                 f"mnl_socket_open: Protocol not supported\n{P}Can't open handler\n",
                 exc.ConntrackUnavailableError, id="no-nfnetlink"),
    pytest.param(LIST, 1, "", f"mnl_socket_open: Protocol not supported\n{P}Can't open handler\n",
                 exc.ConntrackUnavailableError, id="no-nfnetlink-exit-1"),
    pytest.param(LIST, 127, "",
                 "nsenter: failed to execute /usr/sbin/conntrack: No such file or directory\n",
                 exc.ConntrackUnavailableError, id="missing-binary-in-netns"),
    pytest.param(LIST, 126, "", "/usr/sbin/conntrack: Permission denied",
                 exc.ConntrackUnavailableError, id="binary-not-executable"),
    pytest.param(LIST, 1, "", "nsenter: cannot open /run/netns/gone: No such file or directory\n",
                 exc.NamespaceNotFoundError, id="netns-gone-nsenter"),
    pytest.param(LIST, 1, "",
                 'Cannot open network namespace "gone": No such file or directory\n',
                 exc.NamespaceNotFoundError, id="netns-gone-ip"),
    pytest.param(DELETE, 1, "", f"{P}Operation failed: invalid parameters\n",
                 exc.CommandError, id="delete-einval"),
    pytest.param(DELETE, 1, "", "", exc.CommandError, id="exit-1-without-summary"),
    pytest.param(DELETE, 1, "", f"{P}2 flow entries have been deleted.\n", exc.CommandError,
                 id="exit-1-nonzero-summary"),
    pytest.param(DELETE, 1, "", f"{P}0 flow entries have been updated.\n", exc.CommandError,
                 id="exit-1-summary-of-other-word"),
    pytest.param(UPDATE, 1, "", f"{P}Operation failed: No buffer space available\n",
                 exc.CommandError, id="update-enobufs"),
    pytest.param(UPDATE, 1, "", "Operation failed: Operation not supported\n"
                 f"{P}Operation failed: Operation not supported\n",
                 exc.CommandError, id="update-without-family"),
    pytest.param(FLUSH, 1, "", f"{P}connection tracking table has been emptied.\n"
                 f"{P}Operation failed: invalid parameters\n", exc.CommandError,
                 id="flush-emptied-but-failed"),
    pytest.param(LIST, 2, "", f"{P}Invalid IP address `1.2.3.999'\n"
                 "Try `conntrack -h' or 'conntrack --help' for more information.\n",
                 exc.CommandError, id="bad-parameter"),
]


@pytest.mark.parametrize(("command", "code", "stdout", "stderr", "count"), SUCCESSES)
def test_interpret_success(command: Any, code: int, stdout: str, stderr: str,
                           count: int | None) -> None:
    result = executor.interpret(CMD, code, stdout, stderr, command)
    assert result == executor.Result(code, stdout, stderr, count, CMD)


@pytest.mark.parametrize(("command", "code", "stdout", "stderr", "error"), FAILURES)
def test_interpret_failure(command: Any, code: int, stdout: str, stderr: str,
                           error: type[exc.CommandError]) -> None:
    with pytest.raises(exc.CommandError) as info:
        executor.interpret(list(CMD), code, stdout, stderr, command)
    assert type(info.value) is error
    assert (info.value.cmd, info.value.exit_code) == (CMD, code)
    assert (info.value.stdout, info.value.stderr) == (stdout, stderr)


def test_result_is_frozen() -> None:
    result = executor.Result(0, "", "", None, CMD)
    with pytest.raises(AttributeError):
        result.count = 3  # type: ignore[misc]


# --- retries -------------------------------------------------------------------------

def _transient(message: str = "Interrupted system call") -> exc.CommandError:
    return exc.CommandError(CMD, 1, "", f"{P}Operation failed: {message}\n")


class Flaky:
    """An attempt that fails ``failures`` times with ``error``, then succeeds."""

    def __init__(self, failures: int, error: exc.CommandError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> executor.Result:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return executor.Result(0, "", "", 5, CMD)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "_backoff", lambda _tries: None)


@pytest.mark.parametrize("message", executor.TRANSIENT_MESSAGES)
@pytest.mark.parametrize("command", [LIST, GET, COUNT, STATS, DELETE, FLUSH])
def test_transient_errors_of_idempotent_commands_are_retried(
        command: Any, message: str, caplog: pytest.LogCaptureFixture) -> None:
    attempt = Flaky(2, _transient(message))
    with caplog.at_level(logging.WARNING, logger="conntrack_lib"):
        result = executor.run_with_retries(command, 2, attempt)
    assert (result.count, attempt.calls) == (5, 3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert message in warnings[0].getMessage()


@pytest.mark.parametrize("command", [CREATE, UPDATE, BATCH, EVENTS])
def test_commands_that_could_apply_twice_are_never_retried(command: Any) -> None:
    attempt = Flaky(1, _transient())
    with pytest.raises(exc.CommandError):
        executor.run_with_retries(command, 5, attempt)
    assert attempt.calls == 1


def test_retries_are_bounded() -> None:
    attempt = Flaky(10, _transient("Device or resource busy"))
    with pytest.raises(exc.CommandError):
        executor.run_with_retries(DELETE, 2, attempt)
    assert attempt.calls == 3


@pytest.mark.parametrize("error", [
    exc.CommandError(CMD, 1, "", f"{P}Operation failed: invalid parameters\n"),
    exc.PermissionDeniedError(CMD, 1, "", EPERM + "Interrupted system call"),
])
def test_other_errors_are_not_retried(error: exc.CommandError) -> None:
    attempt = Flaky(1, error)
    with pytest.raises(type(error)):
        executor.run_with_retries(LIST, 3, attempt)
    assert attempt.calls == 1


# --- ProcessExecutor with a stand-in process runner ------------------------------------

@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> mock.Mock:
    run = mock.Mock(return_value=netns.ProcessOutput(0, "7\n", ""))
    monkeypatch.setattr(netns, "run", run)
    return run


def test_process_executor_runs_the_configured_binary(conf: cfg.ConfigOpts,
                                                     runner: mock.Mock) -> None:
    opts.register_opts(conf)
    conf.set_override("conntrack_binary", "/opt/ct/conntrack", group="conntrack_lib")
    result = executor.ProcessExecutor(conf=conf).execute(COUNT)
    assert result.count == 7
    runner.assert_called_once_with(("/opt/ct/conntrack", "-C"), timeout=60.0, stdin=None,
                                   duration=None)


def test_process_executor_sends_batch_text_on_stdin(conf: cfg.ConfigOpts,
                                                    runner: mock.Mock) -> None:
    executor.ProcessExecutor(conf=conf).execute(BATCH, timeout=3)
    assert runner.call_args.kwargs == {"timeout": 3.0, "stdin": BATCH.stdin(), "duration": None}
    assert runner.call_args.args[0][1:] == ("-R", "-")


def test_process_executor_bounds_events_by_duration(conf: cfg.ConfigOpts,
                                                    runner: mock.Mock) -> None:
    events = commands.EventsCommand(duration=90)
    executor.ProcessExecutor(conf=conf).execute(events)
    assert runner.call_args.kwargs["duration"] == 90.0
    assert runner.call_args.kwargs["timeout"] >= 90.0 + netns.EVENTS_GRACE


def test_process_executor_retries_through_execute(conf: cfg.ConfigOpts,
                                                  runner: mock.Mock) -> None:
    runner.side_effect = [
        netns.ProcessOutput(1, "", f"{P}Operation failed: No buffer space available\n"),
        netns.ProcessOutput(0, "", f"{P}4 flow entries have been deleted.\n"),
    ]
    assert executor.ProcessExecutor(conf=conf).execute(DELETE).count == 4
    assert runner.call_count == 2


@pytest.mark.parametrize("binary", ["conntrack", "sbin/conntrack", "/usr/sbin/../bin/sh",
                                    "/usr/sbin/conntrack -F", "", "/usr/sbin/conn\ntrack"])
def test_process_executor_refuses_bad_binary_paths(conf: cfg.ConfigOpts, binary: str) -> None:
    with pytest.raises(exc.InvalidArgumentError):
        executor.ProcessExecutor(binary=binary, conf=conf)


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "", "x" * 65, "ns\n", "ns;rm"])
def test_process_executor_refuses_bad_namespaces_before_running(
        conf: cfg.ConfigOpts, runner: mock.Mock, name: str) -> None:
    with pytest.raises(exc.InvalidArgumentError):
        executor.ProcessExecutor(conf=conf).execute(LIST, namespace=name)
    runner.assert_not_called()


def test_process_executor_refuses_missing_namespace(conf: cfg.ConfigOpts,
                                                    runner: mock.Mock) -> None:
    with pytest.raises(exc.NamespaceNotFoundError):
        executor.ProcessExecutor(conf=conf).execute(LIST, namespace="ctlt-surely-absent-0")
    runner.assert_not_called()


def test_iter_lines_needs_a_list_command(conf: cfg.ConfigOpts) -> None:
    with pytest.raises(exc.InvalidArgumentError):
        executor.ProcessExecutor(conf=conf).iter_lines(COUNT)


# --- PrivsepExecutor, entrypoints run in-process ---------------------------------------

@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run privileged entrypoints in this process (privsep's client mode off).

    No stream slot is free, so listings run spooled: nothing here may start
    a real conntrack (the functional tests stream real listings).
    """
    monkeypatch.setattr(privileged.default, "client_mode", False)
    monkeypatch.setattr(priv_streams._streams, "max_streams", 0)
    priv._spools.clear()
    yield
    priv._spools.clear()


LINES = [f"udp      17 99 src=10.0.{i // 250}.{i % 250} dst=10.9.0.1 sport=1 dport=2 use=1"
         for i in range(300)]


def test_privsep_executor_reassembles_output_from_tiny_chunks(
        in_process: None, conf: cfg.ConfigOpts, runner: mock.Mock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n".join(LINES) + "\n"
    runner.return_value = netns.ProcessOutput(0, text, f"{P}300 flow entries have been shown.\n")
    opts.register_opts(conf)
    conf.set_override("chunk_size", 97, group="conntrack_lib")
    reads = mock.Mock(wraps=priv.read_chunk)
    monkeypatch.setattr(priv, "read_chunk", reads)

    result = executor.PrivsepExecutor(conf=conf).execute(LIST)

    assert (result.stdout, result.count) == (text, 300)
    assert reads.call_count == -(-len(text) // 97) - 1
    assert len(priv._spools) == 0, "the daemon must release the output"


def test_privsep_executor_streams_lines_across_chunk_borders(
        in_process: None, conf: cfg.ConfigOpts, runner: mock.Mock) -> None:
    runner.return_value = netns.ProcessOutput(0, "\n".join(LINES) + "\n", "")
    opts.register_opts(conf)
    conf.set_override("chunk_size", 61, group="conntrack_lib")
    lines = list(executor.PrivsepExecutor(conf=conf).iter_lines(LIST))
    assert lines == LINES
    assert len(priv._spools) == 0


def test_privsep_executor_lists_spooled_when_every_stream_slot_is_taken(
        in_process: None, conf: cfg.ConfigOpts, runner: mock.Mock,
        caplog: pytest.LogCaptureFixture) -> None:
    runner.return_value = netns.ProcessOutput(0, "\n".join(LINES) + "\n", "")
    with caplog.at_level(logging.DEBUG, logger="conntrack_lib"):
        lines = executor.PrivsepExecutor(conf=conf).iter_lines(LIST)
    assert isinstance(lines, executor.SpooledLines)
    assert list(lines) == LINES
    assert runner.call_count == 1  # run to its end by run_query
    assert "every stream of the privsep daemon is taken" in caplog.text
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


def test_privsep_executor_releases_output_of_a_failed_list(
        in_process: None, conf: cfg.ConfigOpts, runner: mock.Mock) -> None:
    runner.return_value = netns.ProcessOutput(1, "x" * 500, EPERM)
    opts.register_opts(conf)
    conf.set_override("chunk_size", 10, group="conntrack_lib")
    with pytest.raises(exc.PermissionDeniedError):
        executor.PrivsepExecutor(conf=conf).iter_lines(LIST)
    assert len(priv._spools) == 0


def test_privsep_executor_interprets_like_every_executor(
        in_process: None, conf: cfg.ConfigOpts, runner: mock.Mock) -> None:
    runner.return_value = netns.ProcessOutput(
        1, "", f"{P}Operation failed: Such conntrack exists, try -U to update\n")
    with pytest.raises(exc.EntryExistsError) as info:
        executor.PrivsepExecutor(conf=conf).execute(CREATE)
    assert info.value.cmd[0] == "/usr/sbin/conntrack"
    assert info.value.cmd[1:] == CREATE.argv()


def test_privsep_executor_picks_the_entrypoint_of_the_kind(
        in_process: None, conf: cfg.ConfigOpts, runner: mock.Mock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    runner.return_value = netns.ProcessOutput(0, "", "")
    seen = []
    for name in ("run_query", "run_change", "run_batch", "run_events"):
        original = getattr(priv, name)
        monkeypatch.setattr(priv, name,
                            lambda *a, _n=name, _o=original, **k: seen.append(_n) or _o(*a, **k))
    run = executor.PrivsepExecutor(conf=conf)
    for command in (LIST, CREATE, BATCH, EVENTS, STATS, FLUSH):
        run.execute(command)
    assert seen == ["run_query", "run_change", "run_batch", "run_events", "run_query",
                    "run_change"]


def test_privsep_timeout_becomes_command_timeout(conf: cfg.ConfigOpts,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(privileged.default, "client_mode", False)
    monkeypatch.setattr(priv, "run_query", mock.Mock(side_effect=comm.PrivsepTimeout()))
    with caplog.at_level(logging.DEBUG, logger="conntrack_lib"), \
            pytest.raises(exc.CommandTimeoutError):
        executor.PrivsepExecutor(conf=conf).execute(COUNT)
    # Raised to the caller, so logged at DEBUG only.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    debug = [r for r in caplog.records if "CommandTimeoutError" in r.getMessage()]
    assert len(debug) == 1 and debug[0].levelno == logging.DEBUG


def test_every_command_is_logged_with_duration_and_exit_code(
        conf: cfg.ConfigOpts, runner: mock.Mock, caplog: pytest.LogCaptureFixture) -> None:
    runner.return_value = netns.ProcessOutput(1, "", f"{P}0 flow entries have been deleted.\n")
    with caplog.at_level(logging.DEBUG, logger="conntrack_lib.results"):
        executor.ProcessExecutor(conf=conf).execute(DELETE)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("-D -w 7: exit 1 in " in message and message.endswith(" s")
               for message in debug)


def test_failures_are_logged_at_debug_with_stderr(conf: cfg.ConfigOpts, runner: mock.Mock,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    runner.return_value = netns.ProcessOutput(1, "", EPERM)
    with caplog.at_level(logging.DEBUG, logger="conntrack_lib"), \
            pytest.raises(exc.PermissionDeniedError):
        executor.ProcessExecutor(conf=conf).execute(LIST)
    failed = [r for r in caplog.records if "PermissionDeniedError" in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.DEBUG]
    assert "CAP_NET_ADMIN" in failed[0].getMessage()
    assert "/usr/sbin/conntrack -L" in failed[0].getMessage()


def test_privsep_executor_resends_after_a_broken_pipe(
        conf: cfg.ConfigOpts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privileged.default, "client_mode", False)
    reply = (0, "3\n", "", ("/usr/sbin/conntrack", "-C"), None, 1)
    entry = mock.Mock(side_effect=[BrokenPipeError(), reply])
    monkeypatch.setattr(priv, "run_change", entry)
    monkeypatch.setattr(executor.PrivsepExecutor, "_restart", mock.Mock())
    # A create is not idempotent, but a request that never left is safe to resend.
    assert executor.PrivsepExecutor(conf=conf).execute(CREATE).exit_code == 0
    assert entry.call_count == 2


@pytest.mark.parametrize(("command", "calls"), [(CREATE, 1), (COUNT, 2)])
def test_daemon_death_mid_call_resends_only_idempotent_commands(
        conf: cfg.ConfigOpts, monkeypatch: pytest.MonkeyPatch, command: Any, calls: int) -> None:
    monkeypatch.setattr(privileged.default, "client_mode", False)
    died = OSError("Premature eof waiting for privileged process")
    entry = mock.Mock(side_effect=[died, died])
    monkeypatch.setattr(priv, "run_change", entry)
    monkeypatch.setattr(priv, "run_query", entry)
    monkeypatch.setattr(executor.PrivsepExecutor, "_restart", mock.Mock())
    with pytest.raises(exc.CommandError, match="died"):
        executor.PrivsepExecutor(conf=conf).execute(command)
    assert entry.call_count == calls


def test_importing_executor_builds_no_privsep_context() -> None:
    import subprocess
    import sys
    code = ("import sys, conntrack_lib.executor; "
            "print('conntrack_lib.privileged' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert out.stdout.strip() == "False"


# --- exceptions across the root boundary ----------------------------------------------

SAMPLES: dict[str, tuple[Any, ...]] = {
    "ConntrackError": ("boom",),
    "InvalidArgumentError": ("zone", 70000, "out of range"),
    "ZoneError": ("zones",),
    "InvalidZoneError": (0, "zone out of range"),
    "ZoneExhaustedError": (4097, 65535, "router-1"),
    "ZoneStoreError": ("/var/lib/x.json", "corrupt"),
    "UnsupportedReleaseError": ("1.4.4", "conntrack-tools 1.4.5 or newer is required"),
    "ParseError": ("tcp 6 garbage", 12, "unreadable line"),
}
COMMAND_ARGS = (CMD, 1, "out\n", f"{P}Operation failed: invalid parameters\n")


def _samples() -> list[BaseException]:
    instances = []
    for name in exc.__all__:
        cls = getattr(exc, name)
        args = COMMAND_ARGS if issubclass(cls, exc.CommandError) else SAMPLES[name]
        instances.append(cls(*args))
    return instances


def _same(left: BaseException, right: BaseException) -> bool:
    return type(left) is type(right) and left.args == right.args and str(left) == str(right)


@pytest.mark.parametrize("error", _samples(), ids=lambda e: type(e).__name__)
def test_every_exception_pickles(error: BaseException) -> None:
    assert _same(pickle.loads(pickle.dumps(error)), error)


@pytest.mark.parametrize("error", _samples(), ids=lambda e: type(e).__name__)
def test_every_exception_crosses_the_privsep_wire(error: BaseException) -> None:
    # Encode the reply exactly as the privsep daemon does (class path + args)
    # through its real serializer, then rebuild it as its client does.
    left, right = socket.socketpair()
    with left, right:
        cls = type(error)
        comm.Serializer(left).send(
            ("msgid", (comm.Message.ERR.value, f"{cls.__module__}.{cls.__name__}", error.args,
                       "traceback")))
        _msgid, reply = next(iter(comm.Deserializer(right)))
    rebuilt = importutils.import_class(reply[1])(*reply[2])
    assert _same(rebuilt, error)


def test_entrypoint_errors_cross_the_wire_with_fields(in_process: None) -> None:
    with pytest.raises(exc.InvalidArgumentError) as info:
        priv.run_query({"kind": "list"}, "../x", 5, 100)
    left, right = socket.socketpair()
    with left, right:
        comm.Serializer(left).send(("id", ("exc", info.value.args)))
        _msgid, (_tag, args) = next(iter(comm.Deserializer(right)))
    rebuilt = exc.InvalidArgumentError(*args)
    assert (rebuilt.field, rebuilt.value) == ("namespace", "../x")


# --- the shared process runner (real, harmless child processes) -------------------------

PY = sys.executable


def test_run_returns_exit_code_and_both_streams() -> None:
    out = netns.run([PY, "-c", "import sys; print('data'); sys.stderr.write('note'); "
                                "sys.exit(3)"], timeout=30)
    assert out == netns.ProcessOutput(3, "data\n", "note")


def test_run_feeds_stdin() -> None:
    out = netns.run([PY, "-c", "import sys; print(sys.stdin.read().upper())"], timeout=30,
                    stdin="-F\n")
    assert out.stdout == "-F\n\n"


def test_run_gives_the_child_a_fixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    out = netns.run([PY, "-c", "import os; print(sorted(os.environ))"], timeout=30)
    assert "LD_PRELOAD" not in out.stdout and "'PATH'" in out.stdout


def test_run_reports_a_missing_binary_as_exit_127() -> None:
    out = netns.run(["/nonexistent/conntrack", "-L"], timeout=30)
    assert out.exit_code == netns.EXIT_NOT_FOUND
    with pytest.raises(exc.ConntrackUnavailableError):
        executor.interpret(("/nonexistent/conntrack",), out.exit_code, out.stdout, out.stderr,
                           LIST)


def test_run_kills_a_hung_child() -> None:
    started = time.monotonic()
    with pytest.raises(exc.CommandTimeoutError) as info:
        netns.run([PY, "-c", "print('partial', flush=True); import time; time.sleep(60)"],
                  timeout=0.5)
    assert time.monotonic() - started < 10
    assert info.value.exit_code == -signal.SIGKILL
    assert info.value.stdout == "partial\n"


SUMMARY_ON_TERM = (
    "import signal, sys, time\n"
    "def stop(*_):\n"
    "    sys.stderr.write('0 flow events have been shown.\\n'); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_run_stops_a_bounded_capture_with_sigterm() -> None:
    started = time.monotonic()
    out = netns.run([PY, "-c", SUMMARY_ON_TERM], timeout=30, duration=1.0)
    assert 1.0 <= time.monotonic() - started < 10
    assert out == netns.ProcessOutput(0, "ready\n", "0 flow events have been shown.\n")


def test_run_kills_a_capture_that_ignores_sigterm() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    with pytest.raises(exc.CommandTimeoutError):
        netns.run([PY, "-c", code], timeout=1.5, duration=0.5)


def test_line_stream_yields_lines_then_status() -> None:
    stream = netns.LineStream([PY, "-c", "import sys; print('a'); print('b'); "
                                          "sys.stderr.write('2 shown'); sys.exit(1)"],
                              timeout=30)
    assert list(stream) == ["a", "b"]
    assert (stream.exit_code, stream.stderr) == (1, "2 shown")


def test_line_stream_times_out() -> None:
    stream = netns.LineStream([PY, "-c", "print('x', flush=True); import time; time.sleep(60)"],
                              timeout=0.5)
    lines = []
    with pytest.raises(exc.CommandTimeoutError):
        lines.extend(stream)
    assert lines == ["x"]


def test_abandoned_line_stream_kills_its_child() -> None:
    stream = netns.LineStream([PY, "-c", "import os, time; print(os.getpid(), flush=True); "
                                          "time.sleep(60)"], timeout=60)
    lines = iter(stream)
    pid = int(next(lines))
    lines.close()  # type: ignore[attr-defined]
    assert stream.exit_code is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_process_executor_iter_lines_checks_the_exit_status(conf: cfg.ConfigOpts,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Any) -> None:
    fake = tmp_path / "conntrack"
    fake.write_text(f"#!{PY}\nimport sys\nprint('line 1')\n"
                    f"sys.stderr.write({EPERM!r})\nsys.exit(1)\n")
    fake.chmod(0o755)
    lines = []
    with pytest.raises(exc.PermissionDeniedError):
        lines.extend(executor.ProcessExecutor(binary=str(fake), conf=conf).iter_lines(LIST))
    assert lines == ["line 1"]
