"""Unit tests of the privileged entrypoints: hostile input never reaches a process."""

from __future__ import annotations

import functools
import importlib
import inspect
import pathlib
import threading
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from oslo_config import cfg
from oslo_privsep import comm, priv_context

from conntrack_lib import commands, daemon, event_streams, netns, opts, privileged, spool
from conntrack_lib import exceptions as exc
from conntrack_lib.privileged import conntrack as priv

ENTRYPOINTS = [priv.run_query, priv.run_change, priv.run_batch, priv.run_events]
LIST = commands.ListCommand().to_primitive()
CREATE = commands.CreateCommand(proto="udp", src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2,
                                timeout=60).to_primitive()
GOOD = {
    priv.run_query: LIST,
    priv.run_change: CREATE,
    priv.run_batch: commands.BatchCommand([commands.FlushCommand()]).to_primitive(),
    priv.run_events: commands.EventsCommand(duration=1).to_primitive(),
}


@pytest.fixture(autouse=True)
def in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Call entrypoints directly, as the daemon does (privsep's client mode off)."""
    monkeypatch.setattr(privileged.default, "client_mode", False)
    priv._spools.clear()
    yield
    priv._spools.clear()


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> mock.Mock:
    run = mock.Mock(return_value=netns.ProcessOutput(0, "", ""))
    monkeypatch.setattr(netns, "run", run)
    return run


@pytest.fixture
def namespaces(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Pretend the namespaces in the returned set exist under /run/netns."""
    present: set[str] = set()
    monkeypatch.setattr(netns, "exists", lambda name: netns.validate_name(name) in present)
    return present


def test_every_task_function_is_a_privsep_entrypoint() -> None:
    for func in (*ENTRYPOINTS, priv.read_chunk, priv.release):
        assert privileged.default.is_entrypoint(func)


def test_no_entrypoint_takes_an_argv_a_path_or_a_shell_string() -> None:
    for func in ENTRYPOINTS:
        params = list(inspect.signature(func.args[0]).parameters)
        assert params == ["command", "namespace", "timeout", "chunk_size"]


@pytest.mark.parametrize("entry", ENTRYPOINTS, ids=lambda f: f.args[0].__name__)
def test_valid_call_runs_the_rendered_argv(entry: Any, runner: mock.Mock) -> None:
    reply = entry(GOOD[entry], None, 5, 1024)
    argv = runner.call_args.args[0]
    rebuilt = commands.from_primitive(GOOD[entry])
    assert argv == ("/usr/sbin/conntrack", *rebuilt.argv())
    assert reply == (0, "", "", argv, None, 1)


def test_namespace_wraps_with_a_fixed_nsenter(runner: mock.Mock, namespaces: set[str]) -> None:
    namespaces.add("router-1")
    priv.run_query(LIST, "router-1", 5, 1024)
    assert runner.call_args.args[0] == (netns.NSENTER, "--net=/run/netns/router-1", "--",
                                        "/usr/sbin/conntrack", "-L")


def test_missing_namespace_is_never_created(runner: mock.Mock, namespaces: set[str]) -> None:
    with pytest.raises(exc.NamespaceNotFoundError):
        priv.run_query(LIST, "absent", 5, 1024)
    runner.assert_not_called()
    assert namespaces == set()


def test_batch_text_goes_to_stdin(runner: mock.Mock) -> None:
    batch = commands.BatchCommand([commands.FlushCommand(), commands.DeleteCommand(zone=4)])
    priv.run_batch(batch.to_primitive(), None, 5, 1024)
    assert runner.call_args.kwargs["stdin"] == "-F\n-D -w 4\n"


def test_events_get_their_duration(runner: mock.Mock) -> None:
    priv.run_events(commands.EventsCommand(duration=2.5).to_primitive(), None, 5, 1024)
    assert runner.call_args.kwargs == {"timeout": 5.0, "stdin": None, "duration": 2.5,
                                       "max_stdout": priv.MAX_CAPTURE}


HOSTILE_COMMANDS = [
    pytest.param(["-L"], id="argv-list"),
    pytest.param("-L; reboot", id="shell-string"),
    pytest.param(None, id="none"),
    pytest.param({"kind": "list", "argv": ["-F"]}, id="unknown-key-argv"),
    pytest.param({"kind": "list", "binary": "/bin/sh"}, id="unknown-key-binary"),
    pytest.param({"kind": "list", "src": "10.0.0.1 -F"}, id="argv-in-value"),
    pytest.param({"kind": "list", "src": "--flush"}, id="option-as-value"),
    pytest.param({"kind": "list", "src": "/usr/sbin/conntrack"}, id="path-as-address"),
    pytest.param({"kind": "list", "src": "10.0.0.1\n-F"}, id="newline-in-address"),
    pytest.param({"kind": "list", "zone": "5\n"}, id="newline-in-zone"),
    pytest.param({"kind": "list", "labels": ["a\n-F"]}, id="newline-in-label"),
    pytest.param({"kind": "list", "zone": "$(reboot)"}, id="substitution"),
    pytest.param({"kind": "list", "output": ["save"]}, id="forbidden-output"),
    pytest.param({"kind": "shell", "cmd": "id"}, id="unknown-kind"),
    pytest.param({"kind": "list", 5: "x"}, id="non-string-key"),
    pytest.param({"kind": "batch", "commands": [[["kind", "list"]]]}, id="batch-of-list"),
    pytest.param({"kind": "batch", "commands": [[["kind", "flush"], ["family", "ipv4\n-L"]]]},
                 id="batch-newline"),
    pytest.param({"kind": "batch", "commands": "-F\n-L\n"}, id="batch-raw-text"),
    pytest.param({"kind": "events", "duration_ms": 10**9}, id="events-unbounded"),
    pytest.param({"kind": "events", "duration": 5}, id="events-duration-key"),
]


@pytest.mark.parametrize("entry", ENTRYPOINTS, ids=lambda f: f.args[0].__name__)
@pytest.mark.parametrize("data", HOSTILE_COMMANDS)
def test_hostile_commands_are_refused_before_any_process(
        entry: Any, data: Any, runner: mock.Mock) -> None:
    with pytest.raises((exc.InvalidArgumentError, TypeError)):
        entry(data, None, 5, 1024)
    runner.assert_not_called()


@pytest.mark.parametrize(("entry", "data"), [
    (priv.run_query, CREATE),
    (priv.run_query, commands.DeleteCommand().to_primitive()),
    (priv.run_change, LIST),
    (priv.run_change, commands.BatchCommand([commands.FlushCommand()]).to_primitive()),
    (priv.run_batch, commands.FlushCommand().to_primitive()),
    (priv.run_events, LIST),
    (priv.run_query, commands.EventsCommand(duration=1).to_primitive()),
], ids=lambda v: v.args[0].__name__ if hasattr(v, "args") else v["kind"])
def test_entrypoints_serve_only_their_own_kinds(entry: Any, data: Any, runner: mock.Mock) -> None:
    with pytest.raises(exc.InvalidArgumentError, match="kind"):
        entry(data, None, 5, 1024)
    runner.assert_not_called()


@pytest.mark.parametrize("name", ["../../x", "..", ".", "a/b", "/run/netns/x", "", "x" * 65,
                                  "ns\n", "ns;reboot", "ns x", "n\x00s", 5, b"ns", ["ns"]])
def test_hostile_namespaces_are_refused(name: Any, runner: mock.Mock,
                                        namespaces: set[str]) -> None:
    namespaces.update({"x", "ns"})
    with pytest.raises(exc.InvalidArgumentError):
        priv.run_query(LIST, name, 5, 1024)
    runner.assert_not_called()


@pytest.mark.parametrize("timeout", [0, -1, "5", True, None, float("nan"), float("inf"), 1e9])
def test_hostile_timeouts_are_refused(timeout: Any, runner: mock.Mock) -> None:
    with pytest.raises(exc.InvalidArgumentError):
        priv.run_query(LIST, None, timeout, 1024)
    runner.assert_not_called()


@pytest.mark.parametrize("size", [0, -1, opts.MAX_CHUNK_SIZE + 1, "4096", True, 1.5])
def test_hostile_chunk_sizes_are_refused(size: Any, runner: mock.Mock) -> None:
    with pytest.raises(exc.InvalidArgumentError):
        priv.run_query(LIST, None, 5, size)
    runner.assert_not_called()


def test_extra_arguments_are_refused(runner: mock.Mock) -> None:
    with pytest.raises(TypeError):
        priv.run_query(LIST, None, 5, 1024, argv=["-F"])
    runner.assert_not_called()


@pytest.mark.parametrize("binary", ["conntrack", "./conntrack", "/usr/sbin/../../bin/sh",
                                    "/usr/sbin/conntrack -F"])
def test_configured_binary_must_be_absolute(binary: str, runner: mock.Mock,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    opts.register_opts(cfg.CONF)
    cfg.CONF.set_override("conntrack_binary", binary, group=opts.GROUP)
    try:
        with pytest.raises(exc.InvalidArgumentError, match="conntrack_binary"):
            priv.run_query(LIST, None, 5, 1024)
    finally:
        cfg.CONF.clear_override("conntrack_binary", group=opts.GROUP)
    runner.assert_not_called()


def test_command_words_are_checked_against_the_kind(runner: mock.Mock,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Even if a command object rendered the wrong conntrack command, the
    # entrypoint refuses to run it.
    monkeypatch.setattr(commands.ListCommand, "argv", lambda self: ("-F",))
    with pytest.raises(exc.InvalidArgumentError, match="argv"):
        priv.run_query(LIST, None, 5, 1024)
    runner.assert_not_called()


def test_batch_lines_must_be_loadable_commands(runner: mock.Mock,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands.BatchCommand, "stdin", lambda self: "-F\n-U -m 1\n")
    with pytest.raises(exc.InvalidArgumentError, match="batch"):
        priv.run_batch(GOOD[priv.run_batch], None, 5, 1024)
    runner.assert_not_called()


# --- chunked output --------------------------------------------------------------------

def _spooled(runner: mock.Mock, text: str, chunk: int) -> tuple[Any, ...]:
    runner.return_value = netns.ProcessOutput(0, text, "")
    reply: tuple[Any, ...] = priv.run_query(LIST, None, 5, chunk)
    return reply


def test_long_output_stays_in_the_daemon(runner: mock.Mock) -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    code, head, _err, _argv, handle, chunks = _spooled(runner, text, 64)
    assert (code, head, chunks) == (0, text[:64], -(-len(text) // 64))
    assert isinstance(handle, str)
    pieces = [head] + [priv.read_chunk(handle, i) for i in range(1, chunks)]
    assert "".join(pieces) == text
    assert priv.release(handle) is True
    assert priv.release(handle) is False


def test_short_output_has_no_handle(runner: mock.Mock) -> None:
    assert _spooled(runner, "abc\n", 64)[4:] == (None, 1)
    assert len(priv._spools) == 0


@pytest.mark.parametrize("handle", ["../x", 5, None, "A" * 32, "0" * 31, "0" * 32 + "\n"])
def test_read_chunk_refuses_bad_handles(handle: Any) -> None:
    with pytest.raises(exc.InvalidArgumentError):
        priv.read_chunk(handle, 0)


def test_read_chunk_refuses_bad_indexes(runner: mock.Mock) -> None:
    handle = _spooled(runner, "x" * 100, 10)[4]
    for index in (-1, 10, True, "1", 1.0):
        with pytest.raises(exc.InvalidArgumentError):
            priv.read_chunk(handle, index)


def test_spools_expire(runner: mock.Mock, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(spool.time, "monotonic", lambda: clock[0])
    handle = _spooled(runner, "x" * 100, 10)[4]
    assert priv.read_chunk(handle, 1) == "x" * 10
    clock[0] += spool.SPOOL_TTL - 1
    assert priv.read_chunk(handle, 2) == "x" * 10  # a read restarts the clock
    clock[0] += spool.SPOOL_TTL - 1
    assert priv.read_chunk(handle, 3) == "x" * 10
    clock[0] += spool.SPOOL_TTL + 1
    with pytest.raises(exc.OutputUnavailableError, match="unread for more than"):
        priv.read_chunk(handle, 1)


def test_spools_are_bounded_and_none_is_evicted(runner: mock.Mock) -> None:
    handles = [_spooled(runner, "y" * 50, 10)[4] for _ in range(priv._spools.max_spools)]
    with pytest.raises(exc.OutputUnavailableError, match="already holds 32 long outputs"):
        _spooled(runner, "y" * 50, 10)
    assert len(priv._spools) == priv._spools.max_spools
    assert all(priv.read_chunk(handle, 1) == "y" * 10 for handle in handles)
    priv.release(handles[0])
    assert _spooled(runner, "y" * 50, 10)[4] is not None  # room again


def test_spools_are_bounded_by_size(runner: mock.Mock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(priv._spools, "max_chars", 120)
    first = _spooled(runner, "y" * 100, 10)[4]
    with pytest.raises(exc.OutputUnavailableError, match="characters"):
        _spooled(runner, "y" * 50, 10)
    assert priv.read_chunk(first, 9) == "y" * 10


def test_handles_are_unguessable(runner: mock.Mock) -> None:
    handles = {_spooled(runner, "z" * 50, 10)[4] for _ in range(5)}
    assert len(handles) == 5
    assert all(len(h) == 32 for h in handles)


# --- the privsep context -----------------------------------------------------------------

class _ReaderThatResets:
    """Stands in for oslo.privsep's client channel whose socket got ECONNRESET."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outstanding_msgs: dict[str, comm.Future] = {}
        self.running = True

    def _reader_main(self, reader: object) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")


class _GuardedChannel(daemon._FailPendingOnReset, _ReaderThatResets):
    pass


def test_a_reset_channel_fails_pending_calls_instead_of_hanging() -> None:
    channel = _GuardedChannel()
    pending = comm.Future(channel.lock)
    channel.outstanding_msgs["call-1"] = pending
    channel._reader_main(None)
    assert channel.running is False
    assert isinstance(pending.error, OSError)
    # Not a ConnectionError: the request may have reached the daemon, so the
    # executor must not resend a create or an update.
    assert not isinstance(pending.error, ConnectionError)


@pytest.mark.parametrize(("euid", "helper", "method"), [
    (0, None, priv_context.Method.FORK),
    (0, "sudo privsep-helper", priv_context.Method.ROOTWRAP),
    (1000, None, priv_context.Method.ROOTWRAP),
])
def test_start_method_follows_root_and_helper_command(
        monkeypatch: pytest.MonkeyPatch, euid: int, helper: str | None, method: Any) -> None:
    monkeypatch.setattr(daemon.os, "geteuid", lambda: euid)
    cfg.CONF.set_override("helper_command", helper, group=opts.PRIVSEP_SECTION)
    try:
        assert privileged.default.default_method() is method
    finally:
        cfg.CONF.clear_override("helper_command", group=opts.PRIVSEP_SECTION)


def test_start_keeps_a_running_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = object()
    monkeypatch.setattr(privileged.default, "channel", sentinel)
    privileged.default.start()
    assert privileged.default.channel is sentinel


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "not-executable"])
def test_an_events_binary_that_cannot_start_is_a_typed_error(tmp_path: Any,
                                                             exists: bool) -> None:
    # The stream path shares the one launcher: a binary that exists but
    # cannot run is the same typed error, never a raw PermissionError.
    binary = tmp_path / "no-conntrack"
    if exists:
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o644)
    with pytest.raises(exc.ConntrackUnavailableError) as caught:
        event_streams.spawn((str(binary), "-E"), 5.0, 1.0)
    expected = netns.EXIT_CANNOT_EXECUTE if exists else netns.EXIT_NOT_FOUND
    assert caught.value.exit_code == expected
    assert str(binary) in caught.value.stderr


def test_events_start_through_the_one_launcher() -> None:
    source = inspect.getsource(event_streams)
    assert "subprocess.Popen(" not in source and "netns.launch(" in source


def test_the_privileged_package_stays_small_and_exports_only_entrypoints() -> None:
    # Privilege lives in one small room: the context, the entrypoints and the
    # few lines of root-only work; checks and bookkeeping live outside.
    package = pathlib.Path(privileged.__file__).parent
    assert sum(len(path.read_text().splitlines()) for path in package.glob("*.py")) < 400
    for name in ("conntrack", "streams", "netlink"):
        module = importlib.import_module(f"conntrack_lib.privileged.{name}")
        public = [value for key, value in vars(module).items()
                  if not key.startswith("_") and _defined_in(value, module.__name__)]
        assert public, name
        assert all(privileged.default.is_entrypoint(func) for func in public), name


def _defined_in(value: object, module: str) -> bool:
    """Tell whether ``value`` is a function of ``module`` (an entrypoint wraps one)."""
    if isinstance(value, functools.partial) and value.args:
        value = value.args[0]
    return inspect.isfunction(value) and value.__module__ == module
