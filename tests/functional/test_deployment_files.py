"""The shipped sudoers rule and rootwrap filter admit the helper's argv, nothing else.

The argv under test is the one oslo.privsep's ``PrivContext.helper_command``
builds for ``conntrack_lib.privileged.default``.  The sudoers rule is
checked by Debian's real ``sudo`` (``sudo -l -U USER CMD...``, which
decides without running anything) for an unprivileged user made for the
test; the filter by oslo.rootwrap's own matching code.  Then every
argument is in turn removed, changed or followed by another: all refused.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
from oslo_config import cfg
from oslo_rootwrap import wrapper

from conntrack_lib import privileged

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUDOERS = ROOT / "etc" / "sudoers.d" / "conntrack-lib"
FILTERS = ROOT / "etc" / "conntrack_lib" / "rootwrap.d" / "conntrack-lib.filters"
ROOTWRAP_CONF = ROOT / "etc" / "conntrack_lib" / "rootwrap.conf"
SHIPPED_HELPER = "/usr/local/bin/conntrack-lib-privsep-helper"
CONFIG = "/etc/conntrack_lib/conntrack_lib.conf"
SUDO = shutil.which("sudo") or "/usr/bin/sudo"
EVIL = "/tmp/evil.conf"


def _helper() -> str:
    """Return the privsep-helper of this interpreter (an existing file)."""
    helper = pathlib.Path(sys.executable).parent / "conntrack-lib-privsep-helper"
    assert helper.is_file(), f"no conntrack-lib-privsep-helper next to {sys.executable}"
    return str(helper)


def _real_argv(helper: str) -> list[str]:
    """Return the argv oslo.privsep runs after ``sudo`` for ``helper``."""
    conf = cfg.CONF
    privileged.default.conf  # noqa: B018 - registers the context's options
    conf.set_override("helper_command", f"sudo {helper} --config-file {CONFIG}",
                      group=privileged.PRIVSEP_SECTION)
    # As RootwrapClientChannel does: a fresh private directory from mkdtemp().
    directory = tempfile.mkdtemp(dir="/tmp")
    try:
        argv = privileged.default.helper_command(os.path.join(directory, "privsep.sock"))
    finally:
        conf.clear_override("helper_command", group=privileged.PRIVSEP_SECTION)
        os.rmdir(directory)
    assert argv[0] == "sudo"
    return list(argv[1:])


def _mutations(argv: list[str]) -> Iterator[tuple[str, list[str]]]:
    """Yield (label, argv) for every removed, changed and appended argument."""
    for index in range(1, len(argv)):
        yield f"remove-{index}", argv[:index] + argv[index + 1:]
        yield f"change-{index}", [*argv[:index], argv[index] + "x", *argv[index + 1:]]
        yield f"newline-{index}", [*argv[:index], argv[index] + "\n", *argv[index + 1:]]
    for extra in (["--config-file", EVIL], ["--log-config-append", EVIL],
                  ["--config-dir", "/tmp"], ["x"]):
        yield f"append-{extra[0]}", [*argv, *extra]
        yield f"insert-{extra[0]}", [argv[0], *extra, *argv[1:]]
    yield "sock-elsewhere", [*argv[:-1], "/var/tmp/tmpabcdefgh/privsep.sock"]
    yield "sock-traversal", [*argv[:-1], "/tmp/tmpabcdefgh/../x/privsep.sock"]


@pytest.fixture(scope="module")
def agent_user() -> Iterator[str]:
    """Create an unprivileged system user; remove it afterwards."""
    if not os.access(SUDO, os.X_OK):
        pytest.fail(f"sudo is missing at {SUDO} (bindep.txt lists it)")
    name = f"ctlt{os.getpid()}"
    subprocess.run(["/usr/sbin/useradd", "--system", "--no-create-home", "--shell",
                    "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["/usr/sbin/userdel", name], check=False, capture_output=True)


@pytest.fixture(scope="module")
def installed_rule(agent_user: str) -> Iterator[str]:
    """Install the shipped sudoers rule for the test user and this venv's helper."""
    text = SUDOERS.read_text(encoding="utf-8")
    assert "= neutron\n" in text and f"PRIVSEP = {SHIPPED_HELPER} " in text
    text = text.replace("= neutron\n", f"= {agent_user}\n").replace(
        f"PRIVSEP = {SHIPPED_HELPER} ", f"PRIVSEP = {_helper()} ")
    path = pathlib.Path(f"/etc/sudoers.d/ctlt-{os.getpid()}")
    path.write_text(text, encoding="utf-8")
    try:
        path.chmod(0o440)
        checked = subprocess.run(["/usr/sbin/visudo", "-cf", str(path)], check=False,
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        yield agent_user
    finally:
        path.unlink()


def _sudo_admits(user: str, argv: list[str]) -> bool:
    done = subprocess.run([SUDO, "-n", "-l", "-U", user, "--", *argv],
                          check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


def test_sudoers_rule_admits_the_real_helper_call(installed_rule: str) -> None:
    assert _sudo_admits(installed_rule, [_helper(), *_real_argv(_helper())[1:]])


def test_sudoers_rule_refuses_every_changed_call(installed_rule: str) -> None:
    argv = [_helper(), *_real_argv(_helper())[1:]]
    admitted = [label for label, mutated in _mutations(argv)
                if _sudo_admits(installed_rule, mutated)]
    assert admitted == []


def test_sudoers_rule_gives_the_user_nothing_else(installed_rule: str) -> None:
    assert not _sudo_admits(installed_rule, ["/bin/sh", "-c", "id"])
    assert not _sudo_admits(installed_rule, [_helper()])


# -- oslo.rootwrap -----------------------------------------------------------

def _filters(tmp_path: pathlib.Path) -> list[object]:
    """Load the shipped filter with this venv's helper path, as rootwrap does."""
    directory = tmp_path / "rootwrap.d"
    directory.mkdir(exist_ok=True)
    text = FILTERS.read_text(encoding="utf-8").replace(SHIPPED_HELPER, _helper())
    (directory / "conntrack-lib.filters").write_text(text, encoding="utf-8")
    return list(wrapper.load_filters([str(directory)]))


def _exec_dirs() -> list[str]:
    parser = wrapper.configparser.RawConfigParser()
    parser.read(ROOTWRAP_CONF)
    return wrapper.RootwrapConfig(parser).exec_dirs


def _rootwrap_admits(filters: list[object], argv: list[str], exec_dirs: list[str]) -> bool:
    try:
        wrapper.match_filter(filters, argv, exec_dirs=exec_dirs)  # type: ignore[arg-type]
    except (wrapper.NoFilterMatched, wrapper.FilterMatchNotExecutable):
        return False
    return True


def test_rootwrap_filter_admits_the_real_helper_call(tmp_path: pathlib.Path) -> None:
    argv = _real_argv(_helper())
    assert _rootwrap_admits(_filters(tmp_path), argv, _exec_dirs())
    matched = wrapper.match_filter(_filters(tmp_path), argv, exec_dirs=_exec_dirs())
    assert matched.get_command(argv, _exec_dirs()) == argv  # runs that very helper


def test_rootwrap_filter_refuses_every_changed_call(tmp_path: pathlib.Path) -> None:
    filters, exec_dirs = _filters(tmp_path), _exec_dirs()
    argv = _real_argv(_helper())
    admitted = [label for label, mutated in _mutations(argv)
                if _rootwrap_admits(filters, mutated, exec_dirs)]
    admitted += [label for label, mutated in _mutations(["privsep-helper", *argv[1:]])
                 if _rootwrap_admits(filters, mutated, exec_dirs)]
    assert admitted == []


def test_shipped_exec_dirs_hold_no_privsep_helper() -> None:
    # oslo.rootwrap's built-in filter admits a privsep-helper found in
    # exec_dirs with any arguments; the shipped exec_dirs must have none.
    assert [d for d in _exec_dirs() if os.path.exists(os.path.join(d, "privsep-helper"))] == []


def test_a_helper_in_exec_dirs_would_admit_anything(tmp_path: pathlib.Path) -> None:
    # Why the warning in the filter file and docs/deployment.rst exists.
    hostile = ["privsep-helper", "--config-file", EVIL, "--privsep_context", "x",
               "--privsep_sock_path", "/tmp/s"]
    helper_dir = str(pathlib.Path(_helper()).parent)
    assert _rootwrap_admits(_filters(tmp_path), hostile, [helper_dir])
    assert not _rootwrap_admits(_filters(tmp_path), hostile, _exec_dirs())
