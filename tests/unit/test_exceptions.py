"""Every exception rebuilds from its args and pickles with its fields intact."""

from __future__ import annotations

import pickle

import pytest

from conntrack_lib import exceptions as exc

SAMPLES: list[exc.ConntrackError] = [
    exc.ConntrackError("plain"),
    exc.InvalidArgumentError("sport", 70000, "port outside 0..65535"),
    exc.ZoneError("zone trouble"),
    exc.InvalidZoneError(0, "zone outside 1..65535"),
    exc.ZoneExhaustedError(4097, 4100, "port-1"),
    exc.ZoneStoreError("/var/lib/zones.json", "truncated JSON"),
    exc.UnsupportedReleaseError("1.4.4", "conntrack-tools 1.4.5 or newer is required"),
    exc.CommandError(("/usr/sbin/conntrack", "-L"), 1, "out", "err"),
    exc.EntryExistsError(("conntrack", "-I"), 1, "", "Such conntrack exists"),
    exc.EntryNotFoundError(("conntrack", "-G"), 1, "", "such conntrack doesn't exist"),
    exc.PermissionDeniedError(("conntrack", "-L"), 1, "", "you must be root"),
    exc.NamespaceNotFoundError(("ip", "netns", "exec", "x"), 1, "", "No such file"),
    exc.ConntrackUnavailableError(("/nonexistent",), 127, "", "not found"),
    exc.CommandTimeoutError(("conntrack", "-E"), -9, "", "timed out after 1s"),
    exc.OutputUnavailableError(("read_chunk",), None, "", "output abc is not held"),
    exc.ParseError("garbage line", 7, "no protocol"),
]

FIELDS = ("field", "value", "reason", "zone", "low", "high", "key", "path", "cmd",
          "exit_code", "stdout", "stderr", "line", "lineno")


def _fields(err: BaseException) -> dict[str, object]:
    return {name: getattr(err, name) for name in FIELDS if hasattr(err, name)}


@pytest.mark.parametrize("err", SAMPLES, ids=lambda e: type(e).__name__)
def test_rebuilds_from_args(err: exc.ConntrackError) -> None:
    rebuilt = type(err)(*err.args)
    assert type(rebuilt) is type(err)
    assert rebuilt.args == err.args
    assert _fields(rebuilt) == _fields(err)
    assert str(rebuilt) == str(err)


@pytest.mark.parametrize("err", SAMPLES, ids=lambda e: type(e).__name__)
def test_pickles(err: exc.ConntrackError) -> None:
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert _fields(copy) == _fields(err)


def test_every_public_class_is_sampled() -> None:
    assert {type(e).__name__ for e in SAMPLES} == set(exc.__all__)


@pytest.mark.parametrize("cls", [exc.InvalidArgumentError, exc.InvalidZoneError])
def test_validation_errors_are_value_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, ValueError)
    assert issubclass(cls, exc.ConntrackError)


@pytest.mark.parametrize("cls", [exc.EntryExistsError, exc.EntryNotFoundError,
                                 exc.PermissionDeniedError, exc.NamespaceNotFoundError,
                                 exc.ConntrackUnavailableError, exc.CommandTimeoutError])
def test_runtime_errors_are_command_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, exc.CommandError)
    assert not issubclass(cls, ValueError)


def test_command_error_message_names_command_and_last_stderr_line() -> None:
    err = exc.CommandError(("conntrack", "-D"), 1, "", "first\nOperation failed: boom\n")
    assert "conntrack -D" in str(err)
    assert "exited 1" in str(err)
    assert str(err).endswith("Operation failed: boom")


def test_command_error_accepts_a_string_command() -> None:
    err = exc.CommandError("conntrack -L", 2)
    assert err.cmd == ("conntrack -L",)
