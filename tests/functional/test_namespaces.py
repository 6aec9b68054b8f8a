"""The public throwaway-namespace helper against the real ``ip netns``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from types import FrameType

import pytest

from conntrack_lib.testing import namespaces, throwaway_namespace
from tests.functional import netns


def _exists(name: str) -> bool:
    listed = subprocess.run([netns.IP, "netns", "list"], capture_output=True, text=True,
                            check=True).stdout
    in_list = name in {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert in_list == os.path.exists(f"/run/netns/{name}")
    return in_list


def test_the_namespace_exists_in_the_block_and_is_gone_after() -> None:
    with throwaway_namespace("ctlt-func") as name:
        assert re.fullmatch(rf"ctlt-func-{os.getpid()}-\d+", name)
        assert _exists(name)
        # A namespace of its own: an empty conntrack table.
        done = netns.run(name, ["-C"], check=True)
        assert done.stdout.strip() == "0"
    assert not _exists(name)


def test_the_namespace_is_gone_after_an_exception() -> None:
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="body failed"), throwaway_namespace() as name:
        seen.append(name)
        assert _exists(name)
        raise RuntimeError("body failed")
    assert seen and not _exists(seen[0])


def test_the_namespace_is_gone_after_a_signal_handler_raised() -> None:
    class Stopped(BaseException):
        pass

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise Stopped

    seen: list[str] = []
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(Stopped), throwaway_namespace() as name:
            seen.append(name)
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("the handler did not raise")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen and not _exists(seen[0])


def test_an_existing_namespace_is_refused_and_kept() -> None:
    with throwaway_namespace() as name:
        with pytest.raises(namespaces.NamespaceError, match=name), \
                throwaway_namespace(name=name):
            pytest.fail("the body must not run")
        assert _exists(name)
    assert not _exists(name)
