"""The Executor protocol and the behaviour the command classes carry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conntrack_lib import capabilities, commands, executing, executor, results
from conntrack_lib import exceptions as exc
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.testing import FakeConntrack

UDP = {"proto": "udp", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1, "dport": 2,
       "timeout": 30}


class Runner:
    """Only execute and iter_lines: the least an executor must do."""

    def execute(self, command: Any, *, namespace: str | None = None,
                timeout: float | None = None) -> results.Result:
        return results.Result(0, "", "", 0, command.argv())

    def iter_lines(self, command: Any, *, namespace: str | None = None,
                   timeout: float | None = None) -> Iterator[str]:
        return iter(())


class NoCreates(FakeConntrack):
    """A fake whose netlink create is switched off the way callers do it."""

    create_flows = None  # type: ignore[assignment]


def test_the_shipped_executors_are_whole_executors() -> None:
    assert isinstance(FakeConntrack(), executing.Executor)
    for cls in (executor.ProcessExecutor, executor.PrivsepExecutor):
        for name in ("execute", "iter_lines", "iter_events", "release", "delete_flows",
                     "create_flows"):
            assert callable(getattr(cls, name)), (cls, name)


def test_executor_keeps_its_old_import_path() -> None:
    assert executor.Executor is executing.Executor


def test_a_runner_is_no_more_than_a_runner() -> None:
    runner = Runner()
    for part in (executing.ExactDeleter, executing.FlowCreator, executing.EventStreamer,
                 executing.ReleaseReporter, executing.Executor):
        assert not isinstance(runner, part)


def test_an_attribute_set_to_none_reads_as_missing() -> None:
    assert not isinstance(NoCreates(), executing.FlowCreator)
    assert isinstance(NoCreates(), executing.ExactDeleter)


def test_helper_with_a_runner_uses_the_cli_and_the_newest_release() -> None:
    helper = ConntrackHelper(executor=Runner(), exact_delete_backend="auto")
    assert helper.conntrack_version == capabilities.LATEST.release
    assert not helper._netlink_usable()
    with pytest.raises(exc.ConntrackUnavailableError):
        ConntrackHelper(executor=Runner(), exact_delete_backend="netlink").delete_flows(
            [_entry()])


def _entry() -> Any:
    fake = FakeConntrack()
    ConntrackHelper(executor=fake).create_entry(**UDP)
    return fake.entries()[0]


def test_fake_streams_events() -> None:
    fake = FakeConntrack()
    helper = ConntrackHelper(executor=fake)
    helper.create_entry(**UDP)
    events = list(helper.events(duration=1))
    assert [e.type for e in events] == ["NEW"]
    with pytest.raises(exc.InvalidArgumentError):
        fake.iter_events(commands.ListCommand())  # type: ignore[arg-type]


def test_retryable_kinds_come_from_the_classes() -> None:
    assert {"list", "get", "count", "stats", "delete", "flush"} == results.RETRYABLE_KINDS
    assert {c.kind for c in commands.COMMAND_CLASSES} == {
        "list", "get", "create", "update", "delete", "flush", "count", "stats", "version",
        "events", "batch"}


@pytest.mark.parametrize(("command", "stdout", "stderr", "count"), [
    (commands.CountCommand(), "42\n", "", 42),
    (commands.CountCommand(), "no\n", "", None),
    (commands.CreateCommand(timeout=30, **{k: v for k, v in UDP.items() if k != "timeout"}),
     "", "", 1),
    (commands.DeleteCommand(zone=3), "", "conntrack v1.4.7 (conntrack-tools): "
     "5 flow entries have been deleted.\n", 5),
    (commands.FlushCommand(), "", "", None),
    (commands.EventsCommand(duration=1), "", "conntrack v1.4.7 (conntrack-tools): "
     "2 flow events have been shown.\n", 2),
])
def test_reported_count(command: commands.Command, stdout: str, stderr: str,
                        count: int | None) -> None:
    assert command.reported_count(stdout, stderr) == count


def test_from_fields_validates_and_names_a_missing_timeout() -> None:
    assert commands.ListCommand.from_fields({"zone": 3}) == commands.ListCommand(zone=3)
    with pytest.raises(exc.InvalidArgumentError) as info:
        commands.CreateCommand.from_fields({k: v for k, v in UDP.items() if k != "timeout"})
    assert info.value.field == "timeout"
    with pytest.raises(exc.InvalidArgumentError):
        ConntrackHelper(executor=FakeConntrack()).create_entries(
            [{k: v for k, v in UDP.items() if k != "timeout"}])


def test_get_int() -> None:
    assert commands.DeleteCommand(zone=3).get_int("zone") == 3
    assert commands.DeleteCommand().get_int("zone") is None
    with pytest.raises(exc.InvalidArgumentError):
        commands.DeleteCommand(mark=(1, 3)).get_int("mark")


def test_batch_equality_and_repr_hold_its_commands() -> None:
    one = commands.BatchCommand([commands.DeleteCommand(zone=1)])
    assert one == commands.BatchCommand([commands.DeleteCommand(zone=1)])
    assert one != commands.BatchCommand([commands.DeleteCommand(zone=2)])
    assert hash(one) == hash(commands.BatchCommand([commands.DeleteCommand(zone=1)]))
    assert "zone=1" in repr(one)
    assert commands.from_primitive(one.to_primitive()) == one
