"""Security properties that no other unit test pins down (see docs/security.rst).

Each test here guards one protection of the CWE review whose removal the
rest of the suite did not notice.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
from typing import Any

import pytest
from oslo_privsep import capabilities as caps

from conntrack_lib import exceptions as exc
from conntrack_lib import privileged
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.testing import FakeConntrack

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "conntrack_lib"

#: Calls that hand a string to a shell or replace the process image.
SHELL_CALLS = frozenset({
    "os.system", "os.popen", "os.execl", "os.execle", "os.execlp", "os.execlpe",
    "os.execv", "os.execve", "os.execvp", "os.execvpe", "os.spawnl", "os.spawnlp",
    "os.spawnv", "os.spawnvp", "subprocess.getoutput", "subprocess.getstatusoutput",
    "eval", "exec",
})


def _tcp(i: int, zone: int | None = None, proto: str = "tcp") -> dict[str, Any]:
    flow: dict[str, Any] = dict(proto=proto, src=f"10.0.0.{i}", dst="10.0.9.9",
                                sport=1000 + i, dport=22, timeout=600)
    if proto == "tcp":
        flow["state"] = "ESTABLISHED"
    if zone is not None:
        flow["zone"] = zone
    return flow


def _dotted(node: ast.expr) -> str:
    """Return ``a.b.c`` for a name or attribute chain, '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _shell_uses(source: str) -> list[str]:
    """Return every call in ``source`` that could reach a shell."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in SHELL_CALLS:
            found.append(f"{node.lineno}: {name}()")
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                found.append(f"{node.lineno}: {name}(shell=...)")
    return found


# --- CWE-284: the daemon keeps only what conntrack needs -----------------------------

def test_privileged_context_keeps_only_the_two_capabilities() -> None:
    # Every process the daemon starts inherits these; one more (for example
    # CAP_SYS_PTRACE or CAP_DAC_OVERRIDE) would widen the whole boundary.
    kept = sorted(privileged.default.conf.capabilities)
    assert kept == sorted([caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN])


# --- CWE-664: a zone must not be freed while its flows may remain ---------------------

def test_failed_flush_keeps_the_zone_allocated() -> None:
    fake = FakeConntrack()
    helper = ConntrackHelper(executor=fake, zone_range=(10, 11))
    zone = helper.allocate_zone("port-a")
    helper.create_entry(**_tcp(1, zone))
    fake.fail_next(exc.CommandError(("-D",), 1, "", "Operation failed: invalid parameters"))
    with pytest.raises(exc.CommandError):
        helper.release_zone("port-a", flush=True)
    # The flow is still in the table, so the zone must still be owned:
    # handing it to a new port would give that port the old flows.
    assert helper.get_zone("port-a") == zone
    assert helper.allocate_zone("port-b") != zone
    assert [e.zone for e in fake.entries()] == [zone]


def test_successful_flush_frees_the_zone_only_after_its_flows() -> None:
    fake = FakeConntrack()
    helper = ConntrackHelper(executor=fake, zone_range=(10, 10))
    zone = helper.allocate_zone("port-a")
    helper.create_entry(**_tcp(1, zone))
    assert helper.release_zone("port-a", flush=True) == zone
    assert fake.entries() == []
    assert helper.allocate_zone("port-b") == zone


# --- CWE-691: the delete planner must keep one of two equivalent requests -------------

def test_planner_keeps_one_of_two_requests_that_cover_each_other() -> None:
    helper = ConntrackHelper(executor=FakeConntrack())
    plan = helper.plan_deletes([{"proto": "tcp"}, {"proto": 6}])
    assert len(plan.requests) + len(plan.zone_wide) == 1
    assert plan.merged == 1  # one canonical request: tcp and 6 are the same
    plan = helper.plan_deletes([{"zone": 5, "src": "10.0.0.1"},
                                {"zone": 5, "src": "10.0.0.1/32"}])
    assert len(plan.requests) == 1
    assert plan.dropped == 1


def test_equivalent_delete_requests_still_delete_their_flows() -> None:
    fake = FakeConntrack()
    helper = ConntrackHelper(executor=fake)
    for i in range(1, 4):
        helper.create_entry(**_tcp(i))
    helper.create_entry(**_tcp(9, proto="udp"))
    report = helper.delete_many([{"src": "10.0.0.0/24", "proto": "tcp"},
                                 {"src": "10.0.0.7/24", "proto": 6}])
    assert report.deleted == 3
    assert [e.proto for e in fake.entries()] == ["udp"]


# --- CWE-710: coding standards that keep the root boundary reviewable -----------------

def test_shell_detector_finds_what_it_looks_for() -> None:
    # The detector itself must not be blind, or the next test proves nothing.
    sample = ("import os, subprocess\nos.system('id')\n"
              "subprocess.run(['id'], shell=True)\nsubprocess.run(['id'], shell=False)\n")
    assert _shell_uses(sample) == ["2: os.system()", "3: subprocess.run(shell=...)"]


def test_no_library_code_reaches_a_shell() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10
    found = {str(path.relative_to(PACKAGE)): _shell_uses(path.read_text())
             for path in sources}
    assert {name: uses for name, uses in found.items() if uses} == {}


def test_library_has_no_security_lint_findings() -> None:
    # S603 (subprocess with an argv) is the design; every other bandit-style
    # and bugbear rule must stay clean for the package.
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
         "--select", "S,B", "--ignore", "S603", str(PACKAGE)],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_library_type_checks_strictly(tmp_path: pathlib.Path) -> None:
    # --strict is given here too, so a config change cannot relax the check;
    # unused ignores stay allowed as in pyproject.toml (stubs differ by version).
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-warn-unused-ignores",
         "--cache-dir", str(tmp_path),
         "--config-file", str(PACKAGE.parent / "pyproject.toml"), str(PACKAGE)],
        capture_output=True, text=True, check=False, timeout=300, cwd=PACKAGE.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success" in out.stdout
