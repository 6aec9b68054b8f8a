"""The throwaway-namespace helper, with ``ip`` and root mocked out."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from conntrack_lib import constants, testing
from conntrack_lib import exceptions as exc
from conntrack_lib.testing import namespaces

IP = "/usr/sbin/ip"


class FakeIp:
    """Record ``ip netns`` calls and keep the namespaces they made."""

    def __init__(self, refuse_add: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.existing: set[str] = set()
        self.refuse_add = refuse_add

    def run(self, argv: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        verb, name = argv[2], argv[3]
        if verb == "add":
            if self.refuse_add or name in self.existing:
                return subprocess.CompletedProcess(argv, 1, "", f'Cannot create "{name}"\n')
            self.existing.add(name)
        elif verb == "delete":
            self.existing.discard(name)
        return subprocess.CompletedProcess(argv, 0, "", "")

    def exists(self, path: str) -> bool:
        return os.path.basename(path) in self.existing

    def verbs(self) -> list[tuple[str, str]]:
        return [(argv[2], argv[3]) for argv in self.calls]


@pytest.fixture
def fake_ip() -> Iterator[FakeIp]:
    ip = FakeIp()
    with mock.patch.object(namespaces.os, "geteuid", return_value=0), \
            mock.patch.object(namespaces, "ip_binary", return_value=IP), \
            mock.patch.object(namespaces.subprocess, "run", side_effect=ip.run), \
            mock.patch.object(namespaces.os.path, "exists", side_effect=ip.exists):
        yield ip


def test_names_are_prefix_pid_counter_and_valid() -> None:
    first, second = namespaces.unique_name("ctx"), namespaces.unique_name("ctx")
    pattern = rf"ctx-{os.getpid()}-(\d+)"
    match_1, match_2 = re.fullmatch(pattern, first), re.fullmatch(pattern, second)
    assert match_1 and match_2
    assert int(match_2.group(1)) == int(match_1.group(1)) + 1
    assert re.fullmatch(rf"ctlt-{os.getpid()}-\d+", namespaces.unique_name())


@pytest.mark.parametrize("prefix", ["bad/prefix", "a b", "x" * 60])
def test_a_prefix_that_makes_an_invalid_name_is_refused(prefix: str) -> None:
    with pytest.raises(exc.InvalidArgumentError):
        namespaces.unique_name(prefix)


def test_the_namespace_exists_in_the_block_and_is_removed_after(fake_ip: FakeIp) -> None:
    with namespaces.throwaway_namespace("ctunit") as name:
        assert re.fullmatch(rf"ctunit-{os.getpid()}-\d+", name)
        assert fake_ip.existing == {name}
    assert fake_ip.existing == set()
    assert fake_ip.calls == [[IP, "netns", "add", name], [IP, "netns", "delete", name]]


def test_the_namespace_is_removed_when_the_body_raises(fake_ip: FakeIp) -> None:
    with pytest.raises(ZeroDivisionError), namespaces.throwaway_namespace() as name:
        assert name in fake_ip.existing
        1 / 0  # noqa: B018
    assert fake_ip.verbs() == [("add", name), ("delete", name)]
    assert fake_ip.existing == set()


def test_a_base_exception_from_a_signal_handler_is_covered(fake_ip: FakeIp) -> None:
    class Stopped(BaseException):
        pass

    with pytest.raises(Stopped), namespaces.throwaway_namespace() as name:
        raise Stopped
    assert fake_ip.verbs() == [("add", name), ("delete", name)]


def test_an_interrupted_add_is_still_cleaned_up(fake_ip: FakeIp) -> None:
    # The signal arrives after `ip` made the namespace, before run() returned.
    def interrupted(argv: list[str], **kw: Any) -> Any:
        fake_ip.run(argv, **kw)
        if argv[2] == "add":
            raise KeyboardInterrupt
        return subprocess.CompletedProcess(argv, 0, "", "")

    with mock.patch.object(namespaces.subprocess, "run", side_effect=interrupted), \
            pytest.raises(KeyboardInterrupt), namespaces.throwaway_namespace():
        pytest.fail("the body must not run")
    assert [verb for verb, _ in fake_ip.verbs()] == ["add", "delete"]
    assert fake_ip.existing == set()


def test_a_namespace_ip_refused_to_create_is_left_alone(fake_ip: FakeIp) -> None:
    fake_ip.existing.add("someone-elses")
    with pytest.raises(namespaces.NamespaceError, match="someone-elses"), \
            namespaces.throwaway_namespace(name="someone-elses"):
        pytest.fail("the body must not run")
    assert fake_ip.verbs() == [("add", "someone-elses")]
    assert fake_ip.existing == {"someone-elses"}


def test_a_given_name_is_validated_before_anything_runs(fake_ip: FakeIp) -> None:
    with pytest.raises(exc.InvalidArgumentError), namespaces.throwaway_namespace(name="../x"):
        pytest.fail("the body must not run")
    assert fake_ip.calls == []


def test_without_root_a_clear_error_and_no_ip_call() -> None:
    with mock.patch.object(namespaces.os, "geteuid", return_value=1000), \
            mock.patch.object(namespaces.subprocess, "run") as run, \
            pytest.raises(PermissionError, match="needs root"), \
            namespaces.throwaway_namespace():
        pytest.fail("the body must not run")
    run.assert_not_called()


def test_without_ip_a_clear_error_and_no_call() -> None:
    with mock.patch.object(namespaces.os, "geteuid", return_value=0), \
            mock.patch.object(namespaces, "ip_binary", return_value=None), \
            mock.patch.object(namespaces.subprocess, "run") as run, \
            pytest.raises(FileNotFoundError, match="iproute2"), \
            namespaces.throwaway_namespace():
        pytest.fail("the body must not run")
    run.assert_not_called()


def test_removal_holds_back_sigint_and_sigterm(fake_ip: FakeIp) -> None:
    seen: list[set[signal.Signals]] = []

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        if argv[2] == "delete":
            seen.append(signal.pthread_sigmask(signal.SIG_BLOCK, set()))
        return fake_ip.run(argv, **kw)

    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with mock.patch.object(namespaces.subprocess, "run", side_effect=run), \
            namespaces.throwaway_namespace():
        pass
    assert {signal.SIGINT, signal.SIGTERM} <= seen[0]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before


def test_delete_skips_a_namespace_that_is_gone(fake_ip: FakeIp) -> None:
    namespaces.delete_namespace("never-made")
    assert fake_ip.calls == []


@pytest.mark.parametrize("error", [FileNotFoundError("ip"),
                                   subprocess.TimeoutExpired(["ip"], 60.0)])
def test_a_failing_removal_does_not_hide_the_bodys_error(fake_ip: FakeIp,
                                                         error: Exception) -> None:
    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        if argv[2] == "delete":
            raise error
        return fake_ip.run(argv, **kw)

    with mock.patch.object(namespaces.subprocess, "run", side_effect=run), \
            pytest.raises(ZeroDivisionError), namespaces.throwaway_namespace():
        1 / 0  # noqa: B018


def test_ip_binary_tries_the_candidates_in_order() -> None:
    last = constants.IP_BINARY_CANDIDATES[-1]
    with mock.patch.object(namespaces.os, "access", side_effect=lambda p, _m: p == last):
        assert namespaces.ip_binary() == last
    with mock.patch.object(namespaces.os, "access", return_value=False), \
            mock.patch.object(namespaces.shutil, "which", return_value=None):
        assert namespaces.ip_binary() is None


def test_the_package_exports_the_helper() -> None:
    assert testing.throwaway_namespace is namespaces.throwaway_namespace
    assert testing.unique_name is namespaces.unique_name
