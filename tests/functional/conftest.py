"""Fixtures of the functional tests: root, the real binary, a namespace.

Without root these tests skip with a loud reason.  Under
``CONNTRACK_LIB_REQUIRE_FUNCTIONAL=1`` (set by tools/test.sh as root, so in
CI) a test that cannot run fails instead of skipping.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest
from oslo_config import cfg

from conntrack_lib import daemon, opts, privileged
from conntrack_lib.executor import PrivsepExecutor
from conntrack_lib.privileged import conntrack as priv
from conntrack_lib.privileged import streams as priv_streams
from conntrack_lib.testing import namespaces
from tests.functional import mounts, netns


def pytest_configure(config: pytest.Config) -> None:
    """Run the functional tests in a mount namespace of their own (as root).

    Tests that need files under /etc (label names) mount them there for
    their duration; nothing they mount may reach the host.  Entered here,
    before any thread starts, since the kernel refuses it afterwards.
    """
    if os.geteuid() == 0:
        mounts.enter_private_mount_namespace()


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "functional tests need root (CAP_NET_ADMIN, ip netns)"
    if not os.access(netns.CONNTRACK, os.X_OK):
        return f"functional tests need the conntrack binary at {netns.CONNTRACK}"
    if namespaces.ip_binary() is None:
        return "functional tests need iproute2 (ip netns)"
    return None


@pytest.fixture(autouse=True)
def _require_functional_environment() -> None:
    reason = _missing()
    if reason is not None:
        _cannot_run(reason)


def _cannot_run(reason: str) -> NoReturn:
    """Fail under CONNTRACK_LIB_REQUIRE_FUNCTIONAL=1 (CI), else skip loudly."""
    if os.environ.get("CONNTRACK_LIB_REQUIRE_FUNCTIONAL") == "1":
        pytest.fail(f"CANNOT RUN FUNCTIONAL TEST: {reason}")
    pytest.skip(f"SKIPPED, NOT RUN: {reason}")


@pytest.fixture
def ns() -> Iterator[str]:
    """Yield a fresh network namespace's name; remove it after the test."""
    with netns.namespace() as name:
        yield name


#: Label names the tests' connlabel.conf defines (bit, name).
CONNLABEL_CONF = "0 blue\n1 red\n5 green\n"
#: A ruleset that makes the kernel keep label storage on new flows: any rule
#: that sets a label does; a chain no hook calls never sees a packet.
LABEL_RULESET = "table inet ctlt_labels {\n  chain never {\n    ct label set red\n  }\n}\n"


def _nft() -> str:
    found = shutil.which("nft") or ("/usr/sbin/nft" if os.access("/usr/sbin/nft", os.X_OK)
                                    else None)
    if found is None:
        _cannot_run("labels need nft (Debian package nftables; tools/test.sh installs it)")
    return found


@pytest.fixture
def labelled(ns: str) -> Iterator[str]:
    """Yield a namespace whose new flows keep labels named blue, red, green.

    conntrack and nft find label names only under /etc, so the names are
    laid over /etc in this test process's own mount namespace; the kernel
    keeps labels only while a ruleset uses them, so one is loaded in ``ns``.
    """
    nft = _nft()
    conf = {"xtables/connlabel.conf": CONNLABEL_CONF, "connlabel.conf": CONNLABEL_CONF}
    with mounts.etc_overlay(conf):
        subprocess.run([netns.IP, "netns", "exec", ns, nft, "-f", "-"], input=LABEL_RULESET,
                       text=True, check=True, capture_output=True, timeout=60)
        yield ns


@pytest.fixture
def forked_daemon() -> Iterator[PrivsepExecutor]:
    """Yield a PrivsepExecutor whose daemon is forked here and stopped afterwards."""
    opts.register_opts(cfg.CONF)
    daemon.stop(privileged.default)
    try:
        yield PrivsepExecutor()
    finally:
        daemon.stop(privileged.default)


@pytest.fixture
def entrypoints_here(tmp_path: pathlib.Path,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Yield a function that runs the daemon's entrypoints in this process with a script
    (its text) in place of conntrack; every stream they started is stopped afterwards."""
    def install(text: str) -> None:
        script = tmp_path / "conntrack"
        script.write_text(text, encoding="ascii")
        script.chmod(0o755)
        monkeypatch.setattr(privileged.default, "client_mode", False)
        cfg.CONF.set_override("conntrack_binary", str(script), group=opts.GROUP)
        priv._opts_registered = True

    opts.register_opts(cfg.CONF)
    try:
        yield install
    finally:
        for handle in list(priv_streams._streams):
            priv_streams.stop_stream(handle)
        cfg.CONF.clear_override("conntrack_binary", group=opts.GROUP)
