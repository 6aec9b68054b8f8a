"""The documented API documents its parameters and return values.

Runs tools/docstring_coverage.py's check over the docs issue's scope.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOL = Path(__file__).resolve().parents[2] / "tools" / "docstring_coverage.py"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docstring_coverage", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules.
    sys.modules.setdefault("docstring_coverage", module)
    spec.loader.exec_module(module)
    return module


def test_every_callable_in_scope_is_documented() -> None:
    tool = _tool()
    findings = tool.check()
    assert len(findings) > 100
    missing = [f"{f.owner}.{f.name}: {', '.join(f.missing)}" for f in findings if not f.ok]
    assert missing == []


def test_check_finds_an_undocumented_parameter() -> None:
    tool = _tool()

    def documented(key: str) -> int:
        """Return the zone of ``key``.

        :param key: the owner.
        :returns: the zone.
        """
        return 1

    def undocumented(key: str, flush: bool = False) -> int:
        """Return the zone of ``key``."""
        return 1

    assert tool.check_callable("m", "documented", documented).ok
    assert tool.check_callable("m", "undocumented", undocumented).missing == (
        ":param key:", ":param flush:", ":returns:")


def test_report_counts_and_lists() -> None:
    tool = _tool()
    findings = [tool.Finding("A", "f", ()), tool.Finding("A", "g", (":returns:",))]
    assert tool.report(findings).splitlines() == [
        "A: 1/2", "documented: 1/2", "  A.g: missing :returns:"]
