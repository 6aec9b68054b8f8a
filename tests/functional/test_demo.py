"""The demo against the real kernel: it never leaves its namespace behind.

Each test starts the demo as its own process with a namespace name chosen
here (``--netns``), waits until the namespace holds flows, stops the demo
with a signal and checks that the namespace is gone, that one line says so
and that no traceback was printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.functional import netns


def _exists(name: str) -> bool:
    return os.path.exists(os.path.join("/run/netns", name))


def _start(name: str, *, new_group: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    # 250 ports: ~25,000 flows, so the demo is still busy when the signal comes.
    return subprocess.Popen(
        [sys.executable, "-m", "conntrack_lib.demo", "--ports", "250", "--netns", name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=new_group)


def _wait_for_flows(name: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if _exists(name) and netns.run(name, ["-C"]).stdout.strip() not in ("", "0"):
            return
        time.sleep(0.05)
    pytest.fail("the demo created no flow within 60 s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_removes_the_namespace(signum: signal.Signals) -> None:
    name = f"ctlib-demo-t{uuid.uuid4().hex[:8]}"
    # SIGINT goes to the whole process group, as Ctrl-C on a terminal does:
    # the privsep daemon the demo forked receives it too.
    proc = _start(name, new_group=signum == signal.SIGINT)
    try:
        _wait_for_flows(name, proc)
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if _exists(name):
            subprocess.run([netns.IP, "netns", "delete", name], check=False)
    assert not _exists(name)
    assert proc.returncode == 128 + signum
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"conntrack_lib demo: stopped by {signum.name}; namespace {name} removed"]


def test_netns_option_refuses_a_bad_name() -> None:
    result = subprocess.run([sys.executable, "-m", "conntrack_lib.demo", "--netns", "-bad"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--netns" in result.stderr
